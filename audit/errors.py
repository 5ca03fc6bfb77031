"""Exception types of the audit package."""

from __future__ import annotations

from eusdx.errors import EusdxError, UsageError
from eusdx.failures import FailureClass, register

__all__ = ["AuditError", "AuditUnavailable", "ChainBroken", "QueryError"]


class AuditError(EusdxError):
    """Base of the audit package's errors."""


class AuditUnavailable(AuditError):
    """The audit database cannot be reached or written; the operation must not go ahead.

    The DICOM node answers 0xA700 (Out of Resources) when it sees this.
    """

    exit_code = 69  # EX_UNAVAILABLE


register(AuditUnavailable, FailureClass.TRANSIENT_IO, retryable=True)


class ChainBroken(AuditError):
    """``audit verify`` found a row whose hash does not hold."""

    exit_code = 65  # EX_DATAERR


class QueryError(UsageError):
    """A QA query was asked with invalid filters (bad date, unknown status...)."""
