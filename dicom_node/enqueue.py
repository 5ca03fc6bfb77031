"""Hand-off of a complete study to the analysis queue, by task *name* (the node never imports
the worker).

An :class:`Enqueuer` is anything with ``enqueue(study_uid: str) -> None`` that either makes the
request durable in the queue or raises :class:`BrokerUnavailable`. ``eusdx serve`` injects one:
:class:`CeleryEnqueuer` when ``Settings.broker_url`` is set, the worker's in-process embedded
enqueuer otherwise. Until a study is accepted by the queue it stays in the node's durable
enqueue outbox (:mod:`dicom_node.pending`), so a broker outage never loses a completed study.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

from eusdx.errors import EusdxError
from eusdx.failures import FailureClass, register

__all__ = [
    "ANALYZE_TASK",
    "ANALYSIS_QUEUE",
    "BrokerUnavailable",
    "CeleryEnqueuer",
    "Enqueuer",
]

log = logging.getLogger(__name__)

#: The task the worker registers; the node refers to it only by this name.
ANALYZE_TASK = "eusdx.analyze_study"
#: The Celery queue the analysis workers consume.
ANALYSIS_QUEUE = "analysis"


class BrokerUnavailable(EusdxError):
    """The queue cannot take the study now; the node keeps it and retries."""

    exit_code = 69  # EX_UNAVAILABLE


register(BrokerUnavailable, FailureClass.TRANSIENT_IO, retryable=True)


@runtime_checkable
class Enqueuer(Protocol):
    """Anything the node can hand a complete study to."""

    def enqueue(self, study_uid: str) -> None:
        """Durably queue ``study_uid`` for analysis.

        Raises
        ------
        BrokerUnavailable
            The queue is unreachable; the caller keeps the study and retries later.
        """


class CeleryEnqueuer:
    """Send ``eusdx.analyze_study`` to a Celery broker by name.

    Parameters
    ----------
    broker_url
        The Celery broker (``redis://...``).
    queue
        Target queue name.
    timeout
        Seconds to wait for the broker before giving up (raised as :class:`BrokerUnavailable`).
    """

    def __init__(self, broker_url: str, *, queue: str = ANALYSIS_QUEUE, timeout: float = 5.0) -> None:
        import celery  # heavy: imported only when used

        self.broker_url = broker_url
        self.queue = queue
        self.timeout = timeout
        self._app = celery.Celery("eusdx-node", broker=broker_url, set_as_current=False)
        # Fail fast instead of retrying forever: the outbox is our retry loop.
        self._app.conf.broker_connection_retry_on_startup = False
        self._app.conf.broker_transport_options = {
            "socket_connect_timeout": timeout,
            "socket_timeout": timeout,
            "max_retries": 0,
        }
        self._app.conf.task_publish_retry = False

    def enqueue(self, study_uid: str) -> None:
        """Publish one task message; raise :class:`BrokerUnavailable` when the broker is down."""
        try:
            self._app.send_task(
                ANALYZE_TASK,
                kwargs={"study_uid": study_uid},
                queue=self.queue,
                retry=False,
            )
        except Exception as exc:  # kombu raises OperationalError, redis errors, OSError...
            raise BrokerUnavailable(f"broker {self._safe_url()} unavailable: {exc}") from exc

    def _safe_url(self) -> str:
        # never log a broker password
        url: Any = self.broker_url
        if "@" in url:
            scheme, _, rest = url.partition("://")
            return f"{scheme}://***@{rest.split('@', 1)[1]}"
        return str(url)

    def close(self) -> None:
        self._app.close()
