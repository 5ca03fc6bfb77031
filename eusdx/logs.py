"""Structured logging: one JSON object per line, never a patient identifier.

Code logs UIDs, accession numbers and AE titles in clear (they are not patient identifiers in our
threat model, and QA needs them); patient name, ID and birth date are never passed to a logger.
As a second line of defence the formatter drops any ``extra`` key that names one.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

__all__ = ["QUIET_LIBRARIES", "configure_logging", "JsonFormatter"]

#: Libraries whose INFO lines are about their own mechanics, not about a study (pynetdicom: every
#: PDU and data set summary; alembic: "Context impl SQLiteImpl." on every audit command; httpx and
#: dicomweb_client: one line per HTTP request of an export; timm: weight loading; highdicom and
#: pyradiomics: per-object chatter). They log at WARNING and above, whatever ``log_level`` says.
QUIET_LIBRARIES: tuple[str, ...] = ("pynetdicom", "alembic", "httpx", "httpcore", "urllib3",
                                    "dicomweb_client", "timm", "highdicom", "radiomics", "pykwalify", "PIL",
                                    "matplotlib", "multipart")

_FORBIDDEN_KEYS = frozenset(
    {"PatientName", "PatientID", "PatientBirthDate", "patient_name", "patient_id", "birth_date"}
)
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line with its ``extra`` fields as top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key in _STANDARD_ATTRS or key.startswith("_") or key in _FORBIDDEN_KEYS:
                continue
            payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not when logging was set up:
    a process that redirects stderr later (test capture, a daemon wrapper) never writes to a closed
    stream."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(level: str = "INFO", fmt: str = "json", stream: Any = None) -> None:
    """Install one handler on the root logger (idempotent)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_eusdx", False):
            root.removeHandler(old)
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    setattr(handler, "_eusdx", True)  # our mark: configure_logging replaces only its own handler
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
