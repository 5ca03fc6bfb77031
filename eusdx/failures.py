"""One failure classification for the whole product.

Every failure eusdx records (a study that could not be analysed, an SR that could not be delivered, a task that
crashed) is put in exactly one of six classes. The Celery task, the embedded consumer, the export runner, the SR's
"no analysis" reason, the audit, the CLI and the dashboard all use this classification and the same sentence.

========================  ==========  ===============================================================
class                     retried?    examples
========================  ==========  ===============================================================
``input``                 no          no decodable frame, no B-mode sector, no lesion, conflicting calibration
``model``                 no          the bundle cannot be loaded or gives a non-finite probability
``configuration``         no          a setting is invalid, the spool is not writable (permission)
``delivery``              by kind     a destination refused (permanent) or could not be reached (transient)
``transient-io``          yes         a network file system hiccup, the audit DB or the broker is down
``programming-error``     no          any other exception: logged with its traceback (no patient data)
========================  ==========  ===============================================================

Reasons are plain sentences that name the real cause. A library's message is never used as the reason
unless the library's exception is one of ours (``EusdxError``), whose messages are written to be read.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from enum import StrEnum

from eusdx.errors import ConfigError, DataError, EusdxError

__all__ = [
    "DeliveryError",
    "Failure",
    "FailureClass",
    "ModelError",
    "TransientIOError",
    "classify",
    "register",
]


class FailureClass(StrEnum):
    """The six failure classes (values are what the audit, metrics and SR reasons carry)."""

    INPUT = "input"
    MODEL = "model"
    CONFIGURATION = "configuration"
    DELIVERY = "delivery"
    TRANSIENT_IO = "transient-io"
    PROGRAMMING = "programming-error"


class TransientIOError(EusdxError):
    """An I/O operation failed for a reason that may pass (retry with back-off)."""

    exit_code = 75  # EX_TEMPFAIL


class ModelError(EusdxError):
    """The model bundle cannot be used, or produced something that cannot be a result."""

    exit_code = 70  # EX_SOFTWARE


class DeliveryError(EusdxError):
    """A result could not be delivered to a destination.

    ``permanent`` is True when retrying cannot help (the peer refused the SOP class, answered a failure status,
    or an HTTP 4xx other than 408/429): the item goes to dead-letter at once.
    """

    exit_code = 69  # EX_UNAVAILABLE

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Failure:
    """A classified failure.

    Attributes
    ----------
    failure_class
        One of :class:`FailureClass`.
    reason
        A plain sentence for people (the SR, the audit, the dashboard); no patient data, no library template.
    retryable
        Whether a retry with back-off may succeed.
    exc_type
        Name of the exception type, for logs and metrics.
    """

    failure_class: FailureClass
    reason: str
    retryable: bool
    exc_type: str = ""

    def as_text(self) -> str:
        """``"<class>: <reason>"``, the form stored as a study's failure reason."""
        return f"{self.failure_class.value}: {self.reason}"


# Errno values that mean "try again later" (network file systems, resource exhaustion, interrupted calls).
_TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name) for name in (
        "EAGAIN", "EBUSY", "EINTR", "EIO", "ENOSPC", "ESTALE", "ETIMEDOUT", "ECONNRESET", "ECONNREFUSED",
        "ECONNABORTED", "ENETDOWN", "ENETUNREACH", "EHOSTUNREACH", "ENOLCK", "EMFILE", "ENFILE", "ENOMEM",
        "EREMOTEIO", "ENOTCONN", "EPIPE",
    ) if hasattr(errno, name)
)
_CONFIG_ERRNOS = frozenset(getattr(errno, n) for n in ("EACCES", "EPERM", "EROFS") if hasattr(errno, n))
_INPUT_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOENT", "EISDIR", "ENOTDIR") if hasattr(errno, n))

_registry: list[tuple[type[BaseException], FailureClass, bool]] = []


def register(exc_type: type[BaseException], failure_class: FailureClass, *, retryable: bool) -> None:
    """Declare the class of an exception type defined in a package the ground floor cannot import.

    Example: the audit package registers ``AuditUnavailable`` as transient I/O. The first registered type an
    exception is an instance of wins over the built-in rules below.
    """
    if not any(t is exc_type for t, _, _ in _registry):
        _registry.append((exc_type, failure_class, retryable))


def _os_error(exc: OSError) -> Failure:
    name = type(exc).__name__
    code = exc.errno
    what = errno.errorcode.get(code, "unknown") if code is not None else "no error number"
    if code in _CONFIG_ERRNOS:
        return Failure(FailureClass.CONFIGURATION,
                       f"eusdx may not read or write a file it needs ({what}); check the folder's permissions",
                       False, name)
    if code in _INPUT_ERRNOS:
        return Failure(FailureClass.INPUT,
                       f"a file of the study is no longer where it was received ({what})", False, name)
    if code in _TRANSIENT_ERRNOS or isinstance(exc, (ConnectionError, TimeoutError)):
        return Failure(FailureClass.TRANSIENT_IO,
                       f"a storage or network operation failed and may succeed later ({what})", True, name)
    return Failure(FailureClass.TRANSIENT_IO,
                   f"an operating-system call failed ({what}); it is retried in case it passes", True, name)


def classify(exc: BaseException) -> Failure:
    """Put ``exc`` in its failure class with a plain-sentence reason.

    Parameters
    ----------
    exc
        Any exception caught at a boundary.

    Returns
    -------
    Failure
        Never raises; unknown exceptions are programming errors (not retried).
    """
    name = type(exc).__name__
    for exc_type, failure_class, retryable in _registry:
        if isinstance(exc, exc_type):
            return Failure(failure_class, _own_message(exc), retryable, name)
    if isinstance(exc, DeliveryError):
        return Failure(FailureClass.DELIVERY, _own_message(exc), not exc.permanent, name)
    if isinstance(exc, TransientIOError):
        return Failure(FailureClass.TRANSIENT_IO, _own_message(exc), True, name)
    if isinstance(exc, ModelError):
        return Failure(FailureClass.MODEL, _own_message(exc), False, name)
    if isinstance(exc, ConfigError):
        return Failure(FailureClass.CONFIGURATION, _own_message(exc), False, name)
    if isinstance(exc, DataError):
        return Failure(FailureClass.INPUT, _own_message(exc), False, name)
    if isinstance(exc, OSError):
        return _os_error(exc)
    if isinstance(exc, EusdxError):
        return Failure(FailureClass.PROGRAMMING, _own_message(exc), False, name)
    return Failure(FailureClass.PROGRAMMING,
                   f"an internal error ({name}) stopped the analysis; the traceback is in the log", False, name)


def _own_message(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or f"{type(exc).__name__} without a message"
