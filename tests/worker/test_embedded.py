"""The embedded queue and consumer (no broker), and the bundle cache's load-once/hot-reload rules."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from audit import AuditLog
from eusdx.config import Settings
from eusdx.errors import DataError
from tests.worker.conftest import FakeBundle, RecordingExport, cohort_studies, copy_study
from worker.embedded import EmbeddedQueue, start_embedded
from worker.model_cache import ModelCache
from worker.runtime import WorkerRuntime

UID = "1.2.826.0.1.3680043.8.498.77"


def _wait(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_queue_is_durable_deduplicated_and_counts_deliveries(tmp_path: Path) -> None:
    queue = EmbeddedQueue(tmp_path / "q")
    queue.enqueue(UID)
    queue.enqueue(UID)
    assert queue.depth() == {"pending": 1, "running": 0}
    first = queue.claim(timeout=0)
    assert first is not None and (first.study_uid, first.delivery) == (UID, 1)
    assert queue.claim(timeout=0) is None
    # The process dies mid-task; a new one puts the study back and counts the second delivery.
    reborn = EmbeddedQueue(tmp_path / "q")
    assert reborn.recover() == 1
    second = reborn.claim(timeout=0)
    assert second is not None and second.delivery == 2
    reborn.retry_later(second, delay=3600)
    assert reborn.claim(timeout=0) is None  # not due yet
    record = json.loads((tmp_path / "q" / "pending" / f"{UID}.json").read_text())
    assert (record["deliveries"], record["retries"]) == (0, 1)
    with pytest.raises(DataError, match="invalid StudyInstanceUID"):
        queue.enqueue("1.2/../3")


def test_claim_wakes_up_on_enqueue(tmp_path: Path) -> None:
    import threading

    queue = EmbeddedQueue(tmp_path / "q")
    threading.Timer(0.2, queue.enqueue, args=(UID,)).start()
    start = time.monotonic()
    claim = queue.claim(timeout=10)
    assert claim is not None and time.monotonic() - start < 5


def _runtime(settings: Settings, bundle: FakeBundle, audit: AuditLog, export: RecordingExport) -> WorkerRuntime:
    cache = ModelCache(settings.bundle, "cpu", loader=lambda _: bundle, warm=False)
    return WorkerRuntime(settings, cache=cache, audit=audit, export=export)


def test_embedded_worker_reports_a_study_through_the_same_task_body(
    settings: Settings, phantom_cohort: Path, fake_bundle: FakeBundle, audit_log: AuditLog,
    exporter: RecordingExport,
) -> None:
    uid = cohort_studies(phantom_cohort)[0]
    copy_study(phantom_cohort, uid, settings.spool_dir)
    service = start_embedded(settings, runtime=_runtime(settings, fake_bundle, audit_log, exporter))
    try:
        service.enqueuer.enqueue(uid)
        _wait(lambda: service.worker.processed == 1)
        assert service.worker.last_outcome is not None
        assert service.worker.last_outcome["status"] == "reported"
        assert len(exporter.items) == 1
        service.enqueuer.enqueue(uid)  # re-sent study: no second SR
        _wait(lambda: service.worker.processed == 2)
        assert service.worker.last_outcome["status"] == "duplicate"
        assert exporter.calls == 1
        assert service.queue.depth() == {"pending": 0, "running": 0}
    finally:
        service.stop()
    assert not service.worker.is_alive()


def test_poison_study_is_dead_lettered_after_the_delivery_cap(
    settings: Settings, fake_bundle: FakeBundle, audit_log: AuditLog, exporter: RecordingExport
) -> None:
    queue = EmbeddedQueue(settings.queue_dir)
    queue.enqueue(UID)
    path = settings.queue_dir / "pending" / f"{UID}.json"
    record = json.loads(path.read_text())
    record["deliveries"] = settings.task_max_deliveries  # it already killed the worker that often
    path.write_text(json.dumps(record))
    service = start_embedded(settings, runtime=_runtime(settings, fake_bundle, audit_log, exporter))
    try:
        _wait(lambda: service.worker.last_outcome is not None)
    finally:
        service.stop()
    assert service.worker.last_outcome["status"] == "dead-letter"
    assert audit_log.study_current_state(UID) == "dead-letter"
    assert fake_bundle.calls == []
    assert queue.depth() == {"pending": 0, "running": 0}


def test_bundle_is_loaded_once_and_reloaded_when_it_changes(tmp_path: Path) -> None:
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "manifest.json").write_text("{}")
    loads: list[int] = []

    def loader(path: Path) -> Any:
        loads.append(1)
        bundle = FakeBundle()
        bundle.version = f"v{len(loads)}"  # type: ignore[misc]
        return bundle

    cache = ModelCache(folder, "cpu", loader=loader, warm=False)
    assert cache.get().version == "v1"
    assert cache.get().version == "v1" and len(loads) == 1
    (folder / "manifest.json").write_text('{"version": 2}')  # a new bundle was installed
    assert cache.get().version == "v2"
    cache.request_reload()  # SIGHUP / eusdx worker reload
    assert cache.get().version == "v3"


def test_a_bad_new_bundle_keeps_the_old_one_in_service(tmp_path: Path) -> None:
    from models.bundle import BundleError

    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "manifest.json").write_text("{}")
    good = FakeBundle()
    state = {"fail": False}

    def loader(path: Path) -> Any:
        if state["fail"]:
            raise BundleError("bundle: models.joblib SHA-256 mismatch")
        return good

    cache = ModelCache(folder, "cpu", loader=loader, warm=False)
    assert cache.get() is good
    state["fail"] = True
    (folder / "models.joblib").write_text("tampered")
    assert cache.get() is good
    fresh = ModelCache(folder, "cpu", loader=loader, warm=False)
    with pytest.raises(BundleError, match="SHA-256 mismatch"):
        fresh.get()


# --- the one failure policy in the embedded consumer ------------------------------------------------


class _Raising:
    """A runtime stand-in whose ``process`` raises or blocks, recording what the policy records."""

    def __init__(self, settings: Settings, action: Any) -> None:
        self.settings = settings
        self.action = action
        self.failures: list[tuple[str, dict[str, Any]]] = []

    def process(self, study_uid: str, *, delivery: int = 1) -> Any:
        return self.action()

    def record_failure(self, study_uid: str, reason: str, details: dict[str, Any] | None = None) -> None:
        self.failures.append((reason, dict(details or {})))


def _handle_one(settings: Settings, runtime: Any) -> tuple[EmbeddedQueue, Any]:
    from worker.embedded import EmbeddedWorker

    queue = EmbeddedQueue(settings.queue_dir)
    queue.enqueue(UID)
    claim = queue.claim(timeout=0)
    assert claim is not None
    worker = EmbeddedWorker(runtime, queue)
    worker.handle(claim)
    return queue, worker


def test_embedded_programming_error_is_logged_with_traceback_and_audited(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    def bug() -> None:
        raise TypeError("unsupported operand")

    runtime = _Raising(settings, bug)
    queue, worker = _handle_one(settings, runtime)
    [(reason, details)] = runtime.failures
    assert details["failure_class"] == "programming-error" and "TypeError" in reason
    assert worker.last_outcome["failure_class"] == "programming-error"
    assert any(r.exc_info and r.exc_info[0] is TypeError for r in caplog.records)
    assert queue.depth() == {"pending": 0, "running": 0}


def test_embedded_transient_error_goes_back_with_backoff(settings: Settings) -> None:
    import errno

    def hiccup() -> None:
        raise OSError(errno.ESTALE, "stale NFS file handle")

    runtime = _Raising(settings, hiccup)
    queue, _ = _handle_one(settings, runtime)
    assert runtime.failures == []
    record = json.loads((settings.queue_dir / "pending" / f"{UID}.json").read_text())
    assert record["retries"] == 1 and record["not_before"] > time.time()
    assert queue.depth() == {"pending": 1, "running": 0}


def test_embedded_consumer_enforces_the_task_time_limit(settings: Settings) -> None:
    settings = settings.model_copy(update={"task_time_limit_seconds": 0.5})

    def slow() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # Python-level work: the soft limit lands here
            time.sleep(0.01)

    runtime = _Raising(settings, slow)
    start = time.monotonic()
    queue, _ = _handle_one(settings, runtime)
    assert time.monotonic() - start < 5
    [(reason, details)] = runtime.failures
    assert reason.startswith("input: the analysis took longer than the time limit (0.5 s)")
    assert details["failure_class"] == "input"
    assert queue.depth() == {"pending": 0, "running": 0}


def test_a_storage_error_while_loading_is_transient_not_a_skipped_frame(
    settings: Settings, phantom_cohort: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import pydicom

    from eusdx.failures import FailureClass, classify
    from worker import frames
    from worker.frames import load_study

    uid = cohort_studies(phantom_cohort)[0]
    copy_study(phantom_cohort, uid, settings.spool_dir)
    real = pydicom.dcmread

    def flaky(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).endswith(".dcm"):
            with open(path, "rb") as fh:  # an open() inside the reader fails, as on a lost NFS mount
                fh.close()
                raise OSError(errno.EIO, "Input/output error")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(frames.pydicom, "dcmread", flaky)
    with pytest.raises(OSError, match="Input/output error") as info:
        load_study(settings.spool_dir, uid, cine_max_frames=4, has_sector=lambda _: True)
    assert classify(info.value).failure_class is FailureClass.TRANSIENT_IO


def test_queue_and_delivery_counter_fsync_their_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The enqueue promises durability: the record's directory entry is fsynced before enqueue returns
    (the node deletes its own record right after), and so is every delivery count."""
    import eusdx.durable as durable
    from worker.deliveries import FileDeliveryCounter

    synced: list[Path] = []
    real = durable.fsync_dir
    monkeypatch.setattr(durable, "fsync_dir", lambda p: (synced.append(Path(p)), real(p)))
    queue = EmbeddedQueue(tmp_path / "q")
    queue.enqueue(UID)
    assert queue.pending in synced
    synced.clear()
    counter = FileDeliveryCounter(tmp_path / "deliveries")
    counter.incr("task-1")
    assert tmp_path / "deliveries" in synced


def test_the_worker_refuses_a_cuda_device_it_does_not_have(settings: Settings) -> None:
    """One ``resolve_device`` (models.deep_features): ``device = "cuda"`` on a machine without a
    GPU stops the worker at start-up with a configuration error (exit 78), instead of handing
    ``cuda`` to every analysis; ``auto`` picks what is there."""
    import torch

    from eusdx.errors import ConfigError
    from worker.runtime import inference_device

    if torch.cuda.is_available():
        assert inference_device("cuda") == "cuda" and inference_device("auto") == "cuda"
        return
    assert inference_device("auto") == "cpu"
    with pytest.raises(ConfigError, match="no GPU"):
        WorkerRuntime(settings.model_copy(update={"device": "cuda"}))
