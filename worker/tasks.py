"""Thin Celery tasks: validate the envelope, count the delivery, call ``WorkerRuntime.process``.

Every exception of the analysis goes to ``worker.policy.settle``, the failure policy the embedded
consumer uses too: transient I/O is retried with back-off (``task.retry``), input/model/configuration
errors are recorded as final failures with their reason, Celery's soft time limit is a final input
failure, and programming errors are logged with the traceback, recorded, then re-raised so Celery marks
the task failed. An invalid envelope is rejected without requeue.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject
from celery.signals import worker_process_init, worker_process_shutdown
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eusdx.config import Settings
from eusdx.errors import DataError
from worker.deliveries import DeliveryCounter, counter_for
from worker.policy import settle
from worker.runtime import EXPORT_TASK_NAME, TASK_NAME, WorkerRuntime, runtime_for

__all__ = ["StudyEnvelope", "connect_signals", "register_tasks", "run_export", "run_task"]

log = logging.getLogger(__name__)


class StudyEnvelope(BaseModel):
    """The only thing a message carries: which study (everything else is re-read from the spool)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    study_uid: str = Field(pattern=r"^[0-9]+(\.[0-9]+)*$", max_length=64)


def run_task(
    task: Task, runtime: WorkerRuntime, counter: DeliveryCounter, study_uid: Any
) -> dict[str, Any]:
    """Body of ``eusdx.analyze_study`` (separate from the decorator so tests can drive it directly).

    Parameters
    ----------
    task
        The bound Celery task (``request.id``, ``request.retries``, ``retry``).
    runtime
        This process's ``WorkerRuntime``.
    counter
        Delivery counter (Redis or files).
    study_uid
        As the message carried it.

    Returns
    -------
    dict
        ``Outcome.as_dict()``, or a failure summary.

    Raises
    ------
    celery.exceptions.Reject
        The envelope is invalid (not requeued).
    celery.exceptions.Retry
        A transient error; Celery re-publishes the message after the back-off.
    """
    try:
        envelope = StudyEnvelope(study_uid=study_uid)
    except ValidationError as exc:
        log.error("rejecting message with invalid study uid %r", study_uid)
        raise Reject(f"invalid envelope: {exc.errors()[0]['msg']}", requeue=False) from exc
    uid = envelope.study_uid
    key = str(task.request.id or uid)
    delivery = counter.incr(key)
    try:
        outcome = runtime.process(uid, delivery=delivery)
    except Exception as exc:  # noqa: BLE001 - the one failure policy decides (worker.policy)
        counter.clear(key)
        retries = int(task.request.retries or 0)
        decision = settle(runtime, uid, exc, retries=retries, delivery=delivery,
                          time_limit=runtime.settings.task_time_limit_seconds)
        if decision.retry:
            # The policy bounds transient retries itself (MAX_TRANSIENT_RETRIES); beyond that it only
            # retries when the final failure could not be recorded, until the audit store is back.
            raise task.retry(exc=exc, countdown=decision.delay) from exc
        if decision.programming_error:
            raise
        return {"study_uid": uid, "status": "failed", "reason": decision.reason}
    counter.clear(key)
    return outcome.as_dict()


def run_export(runtime: WorkerRuntime) -> dict[str, Any]:
    """One pass of the export outbox (``dicom_node.export.ExportRunner.run_once``) under a file lock.

    Only one export worker drains the outbox at a time; a second one finds the lock taken and returns
    ``{"status": "busy"}``. ``next_due_in`` says when an item waiting for back-off is due (or None).
    """
    from dicom_node.export import ExportRunner, outbox_for

    outbox = outbox_for(runtime.settings)
    results = ExportRunner(runtime.settings, runtime.audit, outbox=outbox).try_run_once()
    if results is None:
        return {"status": "busy", "next_due_in": None}
    nxt = outbox.next_due()
    now = time.time()
    return {
        "status": "ran",
        "attempts": [list(r) for r in results],
        "next_due_in": None if nxt is None else max(0.0, nxt - now),
    }


def register_tasks(app: Celery, settings: Settings) -> None:
    """Register ``eusdx.analyze_study`` (queue ``analysis``) and ``eusdx.export_pending`` (queue ``export``).

    Queues come from ``task_routes``.
    """
    counters: dict[str, DeliveryCounter] = {}

    def counter() -> DeliveryCounter:
        if "c" not in counters:
            counters["c"] = counter_for(settings.broker_url, settings.queue_dir)
        return counters["c"]

    # celery ships no type hints: app.task is an untyped decorator (here and below)
    @app.task(name=EXPORT_TASK_NAME, bind=True, acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def export_pending(self: Task, study_uid: str | None = None) -> dict[str, Any]:
        """Send due outbox items now (queue ``export``); re-run itself while items wait for back-off."""
        result = run_export(runtime_for(settings))
        wait = result.get("next_due_in")
        if wait is not None:
            self.apply_async(kwargs={"study_uid": study_uid}, countdown=max(1.0, float(wait)))
        return result

    @app.task(
        name=TASK_NAME,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        max_retries=None,  # bounded by worker.policy (MAX_TRANSIENT_RETRIES), not by Celery
    )  # type: ignore[untyped-decorator]
    def analyze_study(self: Task, study_uid: str) -> dict[str, Any]:
        """Analyse one study (kwargs ``{"study_uid": ...}``, as the DICOM node sends)."""
        result = run_task(self, runtime_for(settings), counter(), study_uid)
        if result.get("export_ids"):
            # Sending is the export queue's job: a lightweight worker does it while this one
            # analyses the next study. The SR is already durable in the outbox, so a failed
            # publish only delays it until the node's runner (or the next trigger) sends it.
            try:
                self.app.send_task(EXPORT_TASK_NAME, kwargs={"study_uid": result["study_uid"]},
                                   queue="export", retry=False)
            except Exception as exc:  # kombu/redis raise many types
                log.warning("study %s: export trigger not published (%s); the outbox keeps the SR",
                            result["study_uid"], exc)
        return result


def connect_signals(app: Celery, settings: Settings, *, preload_bundle: bool = True) -> None:
    """Load, verify and warm the bundle in every pool process as it starts; close the audit at exit.

    ``preload_bundle=False`` for export-only workers: they never run the model, so they neither pay
    its memory nor need a bundle mounted.
    """

    def preload(**_: Any) -> None:
        runtime = runtime_for(settings)
        try:
            bundle = runtime.bundle()
        except DataError as exc:
            # The process stays up; each task retries until an operator fixes the bundle.
            log.error("bundle cannot be loaded at start-up: %s", exc)
            return
        log.info("pool process ready with bundle %s on %s (warm-up %.2fs)", bundle.version,
                 runtime.device, runtime.cache.warm_seconds or 0.0)

    def shutdown(**_: Any) -> None:
        runtime_for(settings).close()

    if preload_bundle:
        worker_process_init.connect(preload, weak=False, dispatch_uid=f"eusdx-preload-{id(app)}")
    worker_process_shutdown.connect(shutdown, weak=False, dispatch_uid=f"eusdx-shutdown-{id(app)}")
