"""Validation of audit messages against the DICOM audit message schema (PS3.15 A.5.1).

The schema is ``dicom-audit-message.rng`` next to this module (RELAX NG XML syntax of the compact
schema the standard prints); lxml's RELAX NG validator (libxml2) checks each message.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from lxml import etree

from audit.errors import AuditError

__all__ = ["SCHEMA_PATH", "InvalidAuditMessage", "validate"]

SCHEMA_PATH = Path(__file__).with_name("dicom-audit-message.rng")


class InvalidAuditMessage(AuditError):
    """An audit message does not conform to the DICOM audit message schema."""

    exit_code = 65  # EX_DATAERR


@functools.lru_cache(maxsize=1)
def _schema() -> Any:
    return etree.RelaxNG(etree.parse(str(SCHEMA_PATH)))


def validate(message: bytes) -> None:
    """Parse ``message`` (UTF-8 XML, optionally after a BOM) and validate it.

    Raises
    ------
    InvalidAuditMessage
        Not well-formed XML, or not valid against PS3.15 A.5.1; the message names the first error.
    """
    if message.startswith(b"\xef\xbb\xbf"):
        message = message[3:]
    try:
        doc = etree.fromstring(message, parser=etree.XMLParser(resolve_entities=False,
                                                               no_network=True))
    except etree.XMLSyntaxError as exc:
        raise InvalidAuditMessage(f"audit message is not well-formed XML: {exc}") from exc
    schema = _schema()
    if not schema.validate(doc):
        error = schema.error_log.last_error
        raise InvalidAuditMessage(f"audit message does not conform to PS3.15 A.5.1: line "
                                  f"{error.line}: {error.message}")
