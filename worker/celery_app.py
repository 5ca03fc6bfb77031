"""The Celery application, built from ``Settings`` (nothing is configured at import time).

Reliability settings, and why:

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a study whose worker dies (OOM, SIGKILL, hard time
  limit) goes back to the queue instead of vanishing. Because that can loop, every delivery is counted
  (``worker.deliveries``) and a study delivered more than ``task_max_deliveries`` times is dead-lettered.
* ``worker_prefetch_multiplier = 1``: a worker holds one study at a time, so a long inference never
  sits on messages another worker could run.
* ``task_time_limit`` from ``task_time_limit_seconds`` (soft limit at 90 %, recorded as a failure).
* Redis ``visibility_timeout`` well above the slowest task: otherwise Redis re-delivers a study that is
  still running.
* ``worker_proc_alive_timeout`` long enough for a pool process to load and warm the bundle.
* Two queues: ``analysis`` (GPU/CPU workers) and ``export`` (lightweight), routed by task name, so slow
  inference never delays sending finished reports.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from kombu.entity import Exchange, Queue

from eusdx.config import Settings
from eusdx.errors import ConfigError
from worker.runtime import EXPORT_TASK_NAME, TASK_NAME

__all__ = ["ANALYSIS_QUEUE", "EXPORT_QUEUE", "make_app", "visibility_timeout"]

log = logging.getLogger(__name__)

ANALYSIS_QUEUE = "analysis"
EXPORT_QUEUE = "export"
#: Seconds a new pool process may take to load and warm the bundle before Celery gives up on it.
BUNDLE_LOAD_TIMEOUT = 600.0


def visibility_timeout(settings: Settings) -> int:
    """Seconds Redis waits before re-delivering an unacknowledged message.

    Twice the hard time limit plus ten minutes: a task is killed long before Redis would hand its
    message to a second worker.
    """
    return int(2 * settings.task_time_limit_seconds + 600)


def make_app(settings: Settings, *, preload_bundle: bool = True) -> Celery:
    """Build the Celery app for these settings and register the eusdx tasks.

    Parameters
    ----------
    settings
        ``broker_url`` must be set (the embedded default runs without Celery: ``worker.embedded``).
    preload_bundle
        Load the bundle in each pool process at start (analysis workers); export-only workers skip it.

    Returns
    -------
    celery.Celery

    Raises
    ------
    ConfigError
        No broker is configured.
    """
    if not settings.broker_url:
        raise ConfigError("no broker configured (EUSDX_BROKER_URL is empty): use the embedded worker")
    app = Celery("eusdx", broker=settings.broker_url, set_as_current=False)
    # kombu ships no type hints: its constructors are untyped calls (three ignores here)
    exchange = Exchange("eusdx", type="direct")  # type: ignore[no-untyped-call]
    hard = float(settings.task_time_limit_seconds)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=hard,
        task_soft_time_limit=0.9 * hard,
        broker_transport_options={"visibility_timeout": visibility_timeout(settings)},
        task_queues=(
            Queue(ANALYSIS_QUEUE, exchange, routing_key=ANALYSIS_QUEUE),  # type: ignore[no-untyped-call]
            Queue(EXPORT_QUEUE, exchange, routing_key=EXPORT_QUEUE),  # type: ignore[no-untyped-call]
        ),
        task_default_queue=ANALYSIS_QUEUE,
        task_default_exchange="eusdx",
        task_default_routing_key=ANALYSIS_QUEUE,
        task_routes={
            TASK_NAME: {"queue": ANALYSIS_QUEUE, "routing_key": ANALYSIS_QUEUE},
            EXPORT_TASK_NAME: {"queue": EXPORT_QUEUE, "routing_key": EXPORT_QUEUE},
        },
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # results live in the audit log, not in a result backend
        # A pool process loads, verifies and warms the bundle in worker_process_init before it reports
        # "up"; Celery's default 4 s would kill it mid-load and retry forever.
        worker_proc_alive_timeout=BUNDLE_LOAD_TIMEOUT,
        worker_pool_restarts=True,  # lets `eusdx worker reload` restart pool processes (new bundle)
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,  # eusdx.logs configures JSON logging
        # our stderr handler follows sys.stderr; a redirected stderr would feed records back into
        # logging, where Celery drops them: task-time log lines would vanish
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        enable_utc=True,
        timezone="UTC",
    )
    app.eusdx_settings = settings

    from worker.tasks import connect_signals, register_tasks

    register_tasks(app, settings)
    connect_signals(app, settings, preload_bundle=preload_bundle)
    return app


def describe(app: Celery) -> dict[str, Any]:
    """The reliability-relevant configuration, for logs and ``eusdx worker --describe``."""
    conf = app.conf
    return {
        "broker": conf.broker_url.split("@")[-1],
        "acks_late": conf.task_acks_late,
        "reject_on_worker_lost": conf.task_reject_on_worker_lost,
        "prefetch_multiplier": conf.worker_prefetch_multiplier,
        "time_limit": conf.task_time_limit,
        "visibility_timeout": conf.broker_transport_options.get("visibility_timeout"),
        "queues": [q.name for q in conf.task_queues],
    }
