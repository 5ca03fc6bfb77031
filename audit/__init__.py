"""Audit log: append-only, hash-chained SQL records of everything eusdx received, decided and sent.

The write API (``AuditLog``) is what the DICOM node and the worker call; ``audit.queries`` answers
QA questions and ``audit.http`` serves them (and the worklist) over HTTP.
"""

from __future__ import annotations

from audit.errors import AuditError, AuditUnavailable, ChainBroken, QueryError
from audit.log import (
    EXPORT_STATUSES,
    INSTANCE_STATUSES,
    SETTLED_STATES,
    STUDY_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    FEEDBACK_KINDS,
    TRUTH_LABELS,
    VERDICTS,
    AuditLog,
)

__all__ = [
    "AuditLog",
    "AuditError",
    "AuditUnavailable",
    "ChainBroken",
    "QueryError",
    "STUDY_STATES",
    "TERMINAL_STATES",
    "SETTLED_STATES",
    "INSTANCE_STATUSES",
    "EXPORT_STATUSES",
    "TRANSITIONS",
    "TRUTH_LABELS",
    "VERDICTS",
    "FEEDBACK_KINDS",
]
