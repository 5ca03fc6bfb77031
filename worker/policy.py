"""The one failure policy of the analysis task, shared by the Celery task and the embedded consumer.

Both consumers run ``WorkerRuntime.process`` and hand any exception it raises to :func:`settle`, which
classifies it with :func:`eusdx.failures.classify` and decides:

=======================  =====================================================================
class                    what happens
=======================  =====================================================================
``transient-io``         retried with exponential back-off (:func:`retry_delay`) up to
                         ``MAX_TRANSIENT_RETRIES`` times, then recorded ``failed``
``delivery`` (transient) same as transient I/O
``input``, ``model``,    recorded ``failed`` with the reason, never retried
``configuration``
``programming-error``    logged with its traceback (no patient data: only the study UID and the
                         exception), recorded ``failed``; the Celery task re-raises it
=======================  =====================================================================

A final failure that cannot be recorded (the audit store is away) is retried instead: a study is never
dropped without a terminal state. The time limit of one analysis is :class:`AnalysisTimeLimit`
(Celery's ``SoftTimeLimitExceeded`` is classified the same way); :func:`call_with_time_limit` enforces
it in the embedded consumer, where no process can be killed.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from celery.exceptions import SoftTimeLimitExceeded

from eusdx.failures import Failure, FailureClass, classify, register

__all__ = [
    "MAX_TRANSIENT_RETRIES",
    "AnalysisTimeLimit",
    "Decision",
    "call_with_time_limit",
    "decide",
    "retry_delay",
    "settle",
]

log = logging.getLogger(__name__)

#: Retries of one delivery for transient errors before the study is recorded as failed.
MAX_TRANSIENT_RETRIES = 5

T = TypeVar("T")


class AnalysisTimeLimit(BaseException):
    """One analysis ran past ``Settings.task_time_limit_seconds``.

    A ``BaseException`` (like ``asyncio.CancelledError``): it is raised asynchronously inside the
    analysis thread, and no ``except Exception`` of a library on the way may swallow it.
    """


register(AnalysisTimeLimit, FailureClass.INPUT, retryable=False)
# Celery's soft limit is the same event in the Celery worker
register(SoftTimeLimitExceeded, FailureClass.INPUT, retryable=False)


def retry_delay(retries: int, base: float = 5.0, cap: float = 300.0) -> float:
    """Exponential back-off in seconds after ``retries`` earlier retries: base, 2*base, ... capped."""
    return float(min(cap, base * (2 ** max(0, retries))))


@dataclass(frozen=True)
class Decision:
    """What to do with a study whose analysis raised.

    Attributes
    ----------
    failure
        The classified failure.
    retry
        True: put the study back after ``delay`` seconds. False: the failure is final.
    delay
        Back-off in seconds (0 when not retried).
    reason
        The sentence recorded as the study's failure reason (``failure.as_text()`` plus the retry count).
    """

    failure: Failure
    retry: bool
    delay: float
    reason: str

    @property
    def programming_error(self) -> bool:
        return self.failure.failure_class is FailureClass.PROGRAMMING


def _time_limit_failure(exc: BaseException, limit: float | None) -> Failure:
    what = f" ({limit:g} s)" if limit else ""
    return Failure(FailureClass.INPUT,
                   f"the analysis took longer than the time limit{what}; a study that slow is not retried",
                   False, type(exc).__name__)


def decide(exc: BaseException, *, retries: int, time_limit: float | None = None,
           max_retries: int = MAX_TRANSIENT_RETRIES) -> Decision:
    """Classify ``exc`` and decide between a retry and a final failure.

    Parameters
    ----------
    exc
        What ``WorkerRuntime.process`` raised.
    retries
        Transient retries this study already had.
    time_limit
        The configured limit in seconds (named in the reason of a time-limit failure).
    max_retries
        Transient retries allowed before the failure is final.
    """
    failure = classify(exc)
    if failure.failure_class is FailureClass.INPUT and failure.exc_type in (
            "AnalysisTimeLimit", "SoftTimeLimitExceeded"):
        failure = _time_limit_failure(exc, time_limit)
    if failure.retryable and retries < max_retries:
        return Decision(failure, True, retry_delay(retries), failure.as_text())
    reason = failure.as_text()
    if failure.retryable:
        reason = f"{reason} (gave up after {retries} retries)"
    return Decision(failure, False, 0.0, reason)


class _Recorder(Protocol):
    def record_failure(self, study_uid: str, reason: str, details: dict[str, Any] | None = None) -> None: ...


def settle(runtime: _Recorder, study_uid: str, exc: BaseException, *, retries: int,
           delivery: int = 1, time_limit: float | None = None) -> Decision:
    """Apply the policy to one failed delivery: log it, record a final failure, or ask for a retry.

    Parameters
    ----------
    runtime
        ``WorkerRuntime`` (its ``record_failure`` writes the audit row and the ``failed`` state).
    study_uid, exc, retries, delivery, time_limit
        The study, what was raised, transient retries so far, the delivery number, the time limit.

    Returns
    -------
    Decision
        ``retry`` is also True when a final failure could not be recorded (transient audit error):
        the study must come back rather than vanish without a terminal state.
    """
    decision = decide(exc, retries=retries, time_limit=time_limit)
    f = decision.failure
    if decision.programming_error:
        # The traceback names code, not patients: the exception text is not logged on its own.
        log.error("study %s: programming error %s", study_uid, f.exc_type, exc_info=exc)
    elif decision.retry:
        log.warning("study %s: %s; retry %d in %.0f s", study_uid, f.as_text(), retries + 1,
                    decision.delay)
        return decision
    else:
        log.warning("study %s: failed: %s", study_uid, decision.reason)
    details = {"failure_class": f.failure_class.value, "exc_type": f.exc_type, "delivery": delivery,
               "retries": retries}
    try:
        runtime.record_failure(study_uid, decision.reason, details)
    except Exception as record_exc:  # noqa: BLE001 - classified right below
        again = classify(record_exc)
        if not again.retryable:
            raise
        log.error("study %s: failure could not be recorded (%s); the study is retried", study_uid,
                  again.as_text())
        return Decision(f, True, retry_delay(retries), decision.reason)
    return decision


def _raise_in_thread(thread: threading.Thread, exc_type: type[BaseException]) -> bool:
    """Raise ``exc_type`` in ``thread`` at its next bytecode (CPython ``PyThreadState_SetAsyncExc``)."""
    if thread.ident is None:
        return False
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type))
    if done > 1:  # more than one thread state touched: undo (documented CPython contract)
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), None)
        return False
    return bool(done)


def call_with_time_limit(fn: Callable[[], T], limit: float, *, soft_fraction: float = 0.9,
                         name: str = "eusdx-analysis") -> T:
    """Run ``fn`` in a thread of its own and enforce a time limit the way Celery does.

    At ``soft_fraction * limit`` seconds :class:`AnalysisTimeLimit` is raised inside ``fn``'s thread (it
    lands at the next Python bytecode, i.e. after the running C call returns); if ``fn`` still runs at
    ``limit`` seconds, the thread is abandoned (it is a daemon) and the limit is raised here. Either way
    the caller gets :class:`AnalysisTimeLimit` and the consumer moves on.

    Raises
    ------
    AnalysisTimeLimit
        The limit was reached.
    BaseException
        Whatever ``fn`` raised.
    """
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    if not done.wait(soft_fraction * limit):
        _raise_in_thread(thread, AnalysisTimeLimit)
        if not done.wait(max(0.0, (1.0 - soft_fraction) * limit)):
            log.critical("analysis thread ignored the soft time limit; abandoned after %.0f s", limit)
            raise AnalysisTimeLimit(f"time limit {limit:g} s reached; the analysis thread was abandoned")
    if "error" in box:
        error = box["error"]
        if isinstance(error, AnalysisTimeLimit):
            raise AnalysisTimeLimit(f"time limit {limit:g} s reached") from None
        raise error
    return box["value"]  # type: ignore[no-any-return]  # box holds the T that fn returned
