"""Durable list of complete studies the queue has not accepted yet (the enqueue outbox).

Layout: ``<outbox_dir>/enqueue/<StudyInstanceUID>.json``, one fsynced file per study, written
before the first enqueue attempt and removed only after the :class:`~dicom_node.enqueue.Enqueuer`
returned. A study therefore reaches the queue at least once even across broker outages and
restarts; the worker's idempotency check (``AuditLog.analysis_exists``) makes a second delivery
harmless.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from dicom_node.spool import fsync_dir
from dicom_node.uids import check_uid

__all__ = ["PendingStudies", "write_json_atomic", "read_json"]


def write_json_atomic(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` as JSON durably: temp file, fsync, rename, directory fsync."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(record, fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object written by :func:`write_json_atomic`."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


class PendingStudies:
    """The enqueue outbox under ``root`` (created if missing)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    def _path(self, study_uid: str) -> Path:
        return self.root / f"{check_uid(study_uid, 'StudyInstanceUID')}.json"

    def put(self, study_uid: str, instances: int) -> None:
        """Record a complete study durably (idempotent: a second put refreshes the record)."""
        path = self._path(study_uid)
        record = {"study_uid": study_uid, "instances": instances, "since": time.time(),
                  "queued_audited": False, "attempts": 0}
        if path.exists():
            old = read_json(path)
            record["since"] = old.get("since", record["since"])
        write_json_atomic(path, record)

    def get(self, study_uid: str) -> dict[str, Any] | None:
        path = self._path(study_uid)
        return read_json(path) if path.exists() else None

    def update(self, study_uid: str, **fields: Any) -> None:
        """Change fields of a pending record (e.g. ``queued_audited=True``)."""
        path = self._path(study_uid)
        record = read_json(path)
        record.update(fields)
        write_json_atomic(path, record)

    def done(self, study_uid: str) -> None:
        """The queue has the study: forget it."""
        path = self._path(study_uid)
        path.unlink(missing_ok=True)
        fsync_dir(self.root)

    def studies(self) -> list[str]:
        """Pending study UIDs, oldest first."""
        records = []
        for path in self.root.glob("*.json"):
            try:
                rec = read_json(path)
                records.append((float(rec.get("since", 0.0)), str(rec["study_uid"])))
            except (OSError, ValueError, KeyError):
                continue
        return [uid for _, uid in sorted(records)]

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*.json"))
