"""The embedded default: a durable queue folder and an in-process consumer, no broker, no server.

Why not kombu's ``filesystem://`` transport: it deletes a message file when it hands the message out,
not when the task acknowledges it, so a crash mid-task loses the study (no ``acks_late``), and it has no
delivery count. This queue keeps a claimed study in ``running/`` until the task finishes, puts it back on
start-up after a crash, and counts deliveries in the file itself, so the embedded worker has the same
guarantees as Celery with Redis: at-least-once delivery, a dead-letter cap, idempotent results.

Layout under ``Settings.queue_dir``::

    pending/<StudyInstanceUID>.json   waiting (one file per study: enqueueing twice is one job)
    running/<StudyInstanceUID>.json   claimed by a consumer
    reload                            touched by ``eusdx worker reload``: reload the bundle

Failures follow ``worker.policy``, the one policy the Celery task uses too; the task time limit is
enforced by ``worker.policy.call_with_time_limit`` (soft limit raised inside the analysis thread at 90 %,
the thread abandoned at 100 %). Every record is written with ``eusdx.durable`` (file and directory
fsync), so a study the queue accepted survives a power cut.

Limits (README): one consumer thread per process, and one host (the folder must be local: rename is the
lock); throughput is one study at a time; use Redis + Celery workers to scale out.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eusdx.config import Settings
from eusdx.durable import atomic_write_json, fsync_dir, read_json_object, remove_durably, sweep_temporaries
from eusdx.errors import DataError
from worker.policy import call_with_time_limit, settle
from worker.runtime import WorkerRuntime, validate_study_uid

__all__ = [
    "Claim",
    "EmbeddedEnqueuer",
    "EmbeddedQueue",
    "EmbeddedService",
    "EmbeddedWorker",
    "start_embedded",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """A study taken from the queue: its delivery number and retries so far."""

    study_uid: str
    delivery: int
    retries: int
    path: Path


class EmbeddedQueue:
    """Durable FIFO of study UIDs in a folder (atomic renames; files fsynced before they count)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.pending = self.root / "pending"
        self.running = self.root / "running"
        self.pending.mkdir(parents=True, exist_ok=True)
        self.running.mkdir(parents=True, exist_ok=True)
        for folder in (self.pending, self.running):
            sweep_temporaries(folder)
        self._wake = threading.Condition()

    @staticmethod
    def _write(path: Path, record: dict[str, Any]) -> None:
        atomic_write_json(path, record)  # file fsync, rename, directory fsync

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        return read_json_object(path)

    def enqueue(self, study_uid: str) -> None:
        """Add a study (validated UID); a study already pending stays one job."""
        validate_study_uid(study_uid)
        path = self.pending / f"{study_uid}.json"
        if not path.exists():
            self._write(path, {"study_uid": study_uid, "deliveries": 0, "retries": 0,
                               "not_before": 0.0, "enqueued_at": time.time()})
        with self._wake:
            self._wake.notify_all()

    def recover(self) -> int:
        """Put studies left in ``running/`` by a crashed process back in ``pending/``; return how many."""
        count = 0
        for path in sorted(self.running.glob("*.json")):
            target = self.pending / path.name
            if target.exists():  # re-enqueued meanwhile: keep the delivery count of the crashed run
                target.unlink()
            os.replace(path, target)
            count += 1
        if count:
            fsync_dir(self.pending)
            fsync_dir(self.running)
            log.warning("embedded queue: %d interrupted studies put back", count)
        return count

    def _candidates(self) -> list[tuple[float, Path, dict[str, Any]]]:
        now = time.time()
        found = []
        for path in self.pending.glob("*.json"):
            try:
                record = self._read(path)
            except (OSError, ValueError):
                continue  # being replaced right now, or vanished
            if float(record.get("not_before", 0.0)) <= now:
                found.append((float(record.get("enqueued_at", 0.0)), path, record))
        return sorted(found, key=lambda item: item[0])

    def claim(self, timeout: float = 1.0) -> Claim | None:
        """Take the oldest due study, or wait up to ``timeout`` seconds for one."""
        deadline = time.monotonic() + timeout
        while True:
            for _, path, record in self._candidates():
                target = self.running / path.name
                try:
                    os.replace(path, target)  # the rename is the lock: one consumer wins
                except FileNotFoundError:
                    continue
                record["deliveries"] = int(record.get("deliveries", 0)) + 1
                self._write(target, record)  # counted before the task runs, so a crash counts too
                fsync_dir(self.pending)  # the claim left pending/ for good
                return Claim(str(record["study_uid"]), record["deliveries"], int(record.get("retries", 0)),
                             target)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with self._wake:
                self._wake.wait(min(remaining, 0.5))

    def done(self, claim: Claim) -> None:
        """The task finished (reported, recorded failure, dead letter): forget the study."""
        remove_durably(claim.path)

    def retry_later(self, claim: Claim, delay: float) -> None:
        """Transient failure: back to pending after ``delay`` s (delivery count reset, retries + 1)."""
        record = {"study_uid": claim.study_uid, "deliveries": 0, "retries": claim.retries + 1,
                  "not_before": time.time() + delay, "enqueued_at": time.time()}
        self._write(self.pending / claim.path.name, record)
        remove_durably(claim.path)

    def holds(self, study_uid: str) -> bool:
        """Whether the study is pending or running."""
        name = f"{validate_study_uid(study_uid)}.json"
        return (self.pending / name).exists() or (self.running / name).exists()

    def depth(self) -> dict[str, int]:
        """How many studies are pending and running."""
        return {"pending": len(list(self.pending.glob("*.json"))),
                "running": len(list(self.running.glob("*.json")))}


class EmbeddedEnqueuer:
    """The ``Enqueuer`` the DICOM node calls in embedded mode: ``enqueue(study_uid) -> None``."""

    def __init__(self, queue: EmbeddedQueue) -> None:
        self.queue = queue

    def enqueue(self, study_uid: str) -> None:
        """Queue the study for analysis (durable once this returns: the node then deletes its own record,
        so the hand-off is one durable hop)."""
        self.queue.enqueue(study_uid)

    def holds(self, study_uid: str) -> bool:
        """Whether the queue has the study (waiting or running): the reconciler asks before re-queueing."""
        return self.queue.holds(study_uid)


class EmbeddedWorker(threading.Thread):
    """Consumer thread: claims studies and runs the same task body as the Celery task."""

    def __init__(self, runtime: WorkerRuntime, queue: EmbeddedQueue, *, poll: float = 0.5) -> None:
        super().__init__(name="eusdx-embedded-worker", daemon=True)
        self.runtime = runtime
        self.queue = queue
        self.poll = poll
        self._stop_event = threading.Event()
        self._reload_mtime = self._reload_stamp()
        self.processed = 0
        self.last_outcome: dict[str, Any] | None = None

    def _reload_stamp(self) -> float:
        try:
            return (self.queue.root / "reload").stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def stop(self, timeout: float | None = 30.0) -> None:
        """Finish the current study, then stop."""
        self._stop_event.set()
        with self.queue._wake:
            self.queue._wake.notify_all()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        self.queue.recover()
        try:
            self.runtime.bundle()  # load, verify and warm up before the first study arrives
        except DataError as exc:
            log.error("bundle cannot be loaded at start-up: %s", exc)
        while not self._stop_event.is_set():
            claim = self.queue.claim(timeout=self.poll)
            # Checked after the claim, right before the study runs: a reload requested while we
            # waited applies to this study already.
            stamp = self._reload_stamp()
            if stamp != self._reload_mtime:
                self._reload_mtime = stamp
                self.runtime.cache.request_reload()
            if claim is None:
                continue
            self.handle(claim)

    def handle(self, claim: Claim) -> None:
        """Run one claimed study under the task time limit, with the Celery task's failure policy."""
        uid = claim.study_uid
        limit = float(self.runtime.settings.task_time_limit_seconds)
        try:
            outcome = call_with_time_limit(lambda: self.runtime.process(uid, delivery=claim.delivery), limit)
        except BaseException as exc:  # noqa: BLE001 - the one failure policy decides (worker.policy)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            decision = settle(self.runtime, uid, exc, retries=claim.retries, delivery=claim.delivery,
                              time_limit=limit)
            if decision.retry:
                self.queue.retry_later(claim, decision.delay)
                return
            self.last_outcome = {"study_uid": uid, "status": "failed", "reason": decision.reason,
                                 "failure_class": decision.failure.failure_class.value}
            self.queue.done(claim)
            return
        self.last_outcome = outcome.as_dict()
        self.processed += 1
        self.queue.done(claim)


@dataclass
class EmbeddedService:
    """What ``eusdx serve`` holds in embedded mode: inject ``enqueuer`` into the node, stop at exit."""

    queue: EmbeddedQueue
    enqueuer: EmbeddedEnqueuer
    worker: EmbeddedWorker
    runtime: WorkerRuntime

    def stop(self, timeout: float | None = 30.0) -> None:
        """Let the current study finish, stop the consumer, close the audit engine."""
        self.worker.stop(timeout)
        self.runtime.close()

    def request_reload(self) -> None:
        """Reload the bundle before the next study (call from a SIGHUP handler)."""
        self.runtime.cache.request_reload()


def start_embedded(settings: Settings, *, runtime: WorkerRuntime | None = None) -> EmbeddedService:
    """Start the in-process consumer on ``Settings.queue_dir``.

    Parameters
    ----------
    settings
        The configuration (``broker_url`` empty).
    runtime
        Injected runtime (tests); built from the settings otherwise.

    Returns
    -------
    EmbeddedService
        ``service.enqueuer`` is the node's ``Enqueuer``; ``service.stop()`` at shutdown.
    """
    queue = EmbeddedQueue(settings.queue_dir)
    runtime = runtime or WorkerRuntime(settings)
    worker = EmbeddedWorker(runtime, queue)
    worker.start()
    return EmbeddedService(queue, EmbeddedEnqueuer(queue), worker, runtime)
