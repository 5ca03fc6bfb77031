"""Celery configuration and the task body's failure classification (no worker process needed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded

from eusdx.config import Settings, load_settings
from eusdx.errors import ConfigError, DataError
from worker.celery_app import make_app, visibility_timeout
from worker.deliveries import FileDeliveryCounter, RedisDeliveryCounter, counter_for
from worker.pipeline import Outcome
from worker.policy import MAX_TRANSIENT_RETRIES, retry_delay
from worker.runtime import TASK_NAME
from worker.tasks import StudyEnvelope, run_task

UID = "1.2.826.0.1.3680043.8.498.1"


def _settings(tmp_path: Path, **extra: Any) -> Settings:
    return load_settings(broker_url="redis://127.0.0.1:6379/15", queue_dir=tmp_path / "queue",
                         task_time_limit_seconds=120, **extra)


def test_reliability_settings_come_from_configuration(tmp_path: Path) -> None:
    app = make_app(_settings(tmp_path))
    conf = app.conf
    assert conf.broker_url == "redis://127.0.0.1:6379/15"
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_time_limit == 120
    assert 0 < conf.task_soft_time_limit < conf.task_time_limit
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    assert conf.task_ignore_result is True
    assert conf.worker_proc_alive_timeout >= 120  # bundle load + warm-up in worker_process_init
    assert conf.accept_content == ["json"]
    assert {q.name for q in conf.task_queues} == {"analysis", "export"}
    assert conf.task_routes[TASK_NAME]["queue"] == "analysis"
    task = app.tasks[TASK_NAME]
    assert task.acks_late is True and task.reject_on_worker_lost is True
    assert task.max_retries is None  # worker.policy bounds the retries, for Celery and embedded alike


def test_visibility_timeout_outlives_the_slowest_task(tmp_path: Path) -> None:
    for limit in (30, 900, 3600):
        s = _settings(tmp_path).model_copy(update={"task_time_limit_seconds": limit})
        assert visibility_timeout(s) > 2 * limit


def test_no_broker_means_no_celery_app(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no broker configured"):
        make_app(load_settings(queue_dir=tmp_path / "q"))


def test_node_and_worker_agree_on_the_task_name_and_queue() -> None:
    from dicom_node.enqueue import ANALYSIS_QUEUE, ANALYZE_TASK

    assert ANALYZE_TASK == TASK_NAME
    assert ANALYSIS_QUEUE == "analysis"


def test_envelope_forbids_extra_fields_and_bad_uids() -> None:
    assert StudyEnvelope(study_uid=UID).study_uid == UID
    with pytest.raises(ValueError, match="pattern"):
        StudyEnvelope(study_uid="../../etc/passwd")
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        StudyEnvelope(study_uid=UID, patient_name="X")  # type: ignore[call-arg]


# --- the task body -------------------------------------------------------------------------------


@dataclass
class _Request:
    id: str = "task-1"
    retries: int = 0


@dataclass
class FakeTask:
    request: _Request = field(default_factory=_Request)
    retried: list[dict[str, Any]] = field(default_factory=list)

    def retry(self, *, exc: BaseException, countdown: float) -> Retry:
        self.retried.append({"exc": exc, "countdown": countdown})
        return Retry(exc=exc, when=countdown)


@dataclass
class FakeRuntime:
    settings: Settings
    raises: BaseException | None = None
    failures: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    deliveries: list[int] = field(default_factory=list)
    record_error: BaseException | None = None

    def process(self, study_uid: str, *, delivery: int = 1) -> Outcome:
        self.deliveries.append(delivery)
        if self.raises is not None:
            raise self.raises
        return Outcome(study_uid, "reported", "v1", 0.7, "GIST", "1.2.3")

    def record_failure(self, study_uid: str, reason: str, details: dict | None = None) -> None:
        if self.record_error is not None:
            raise self.record_error
        self.failures.append(reason)
        self.classes.append((details or {})["failure_class"])


@pytest.fixture
def counter(tmp_path: Path) -> FileDeliveryCounter:
    return FileDeliveryCounter(tmp_path / "deliveries")


def test_success_returns_the_outcome_and_clears_the_delivery_count(tmp_path: Path, counter) -> None:
    runtime = FakeRuntime(_settings(tmp_path))
    result = run_task(FakeTask(), runtime, counter, UID)  # type: ignore[arg-type]
    assert result["status"] == "reported" and result["bundle_version"] == "v1"
    assert runtime.deliveries == [1]
    assert counter.incr("task-1") == 1  # cleared: the next delivery of this id is a first one


def test_transient_error_retries_with_backoff_then_gives_up(tmp_path: Path, counter) -> None:
    runtime = FakeRuntime(_settings(tmp_path), raises=OSError("spool on NFS went away"))
    task = FakeTask()
    with pytest.raises(Retry):
        run_task(task, runtime, counter, UID)  # type: ignore[arg-type]
    assert task.retried[0]["countdown"] == retry_delay(0) == 5.0
    assert retry_delay(3) == 40.0 and retry_delay(20) == 300.0
    assert runtime.failures == []
    exhausted = FakeTask(_Request(retries=MAX_TRANSIENT_RETRIES))
    result = run_task(exhausted, runtime, counter, UID)  # type: ignore[arg-type]
    assert result["status"] == "failed"
    [reason] = runtime.failures
    assert reason.startswith("transient-io: ") and reason.endswith(f"(gave up after {MAX_TRANSIENT_RETRIES} retries)")
    assert runtime.classes == ["transient-io"]
    assert exhausted.retried == []


def test_audit_outage_is_transient_for_the_task(tmp_path: Path, counter) -> None:
    from audit import AuditUnavailable

    runtime = FakeRuntime(_settings(tmp_path), raises=AuditUnavailable("audit database unavailable"))
    task = FakeTask()
    with pytest.raises(Retry):
        run_task(task, runtime, counter, UID)  # type: ignore[arg-type]
    assert runtime.failures == []


def test_a_final_failure_that_cannot_be_recorded_is_retried_not_dropped(tmp_path: Path, counter) -> None:
    from audit import AuditUnavailable

    runtime = FakeRuntime(_settings(tmp_path), raises=DataError("bad image"),
                          record_error=AuditUnavailable("audit write failed"))
    task = FakeTask()
    with pytest.raises(Retry):
        run_task(task, runtime, counter, UID)  # type: ignore[arg-type]
    assert len(task.retried) == 1


def test_deterministic_errors_are_recorded_never_retried(tmp_path: Path, counter) -> None:
    runtime = FakeRuntime(_settings(tmp_path), raises=DataError("bad image"))
    task = FakeTask()
    result = run_task(task, runtime, counter, UID)  # type: ignore[arg-type]
    assert result == {"study_uid": UID, "status": "failed", "reason": "input: bad image"}
    assert runtime.classes == ["input"]
    assert task.retried == []


def test_soft_time_limit_is_a_recorded_failure(tmp_path: Path, counter) -> None:
    runtime = FakeRuntime(_settings(tmp_path), raises=SoftTimeLimitExceeded())
    result = run_task(FakeTask(), runtime, counter, UID)  # type: ignore[arg-type]
    assert result["reason"].startswith("input: the analysis took longer than the time limit (120 s)")
    assert runtime.failures == [result["reason"]]


def test_bugs_are_recorded_and_reraised(tmp_path: Path, counter, caplog: pytest.LogCaptureFixture) -> None:
    runtime = FakeRuntime(_settings(tmp_path), raises=KeyError("oops"))
    with pytest.raises(KeyError, match="oops"):
        run_task(FakeTask(), runtime, counter, UID)  # type: ignore[arg-type]
    assert runtime.classes == ["programming-error"]
    assert runtime.failures == ["programming-error: an internal error (KeyError) stopped the analysis; "
                                "the traceback is in the log"]
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)


def test_invalid_envelope_is_rejected_without_requeue(tmp_path: Path, counter) -> None:
    runtime = FakeRuntime(_settings(tmp_path))
    with pytest.raises(Reject, match="invalid envelope") as info:
        run_task(FakeTask(), runtime, counter, "1.2.x; rm -rf /")  # type: ignore[arg-type]
    assert info.value.requeue is False
    assert runtime.deliveries == []


def test_lost_deliveries_accumulate_until_a_task_finishes(tmp_path: Path, counter) -> None:
    # A worker killed mid-task never reaches clear(): the next delivery of the same message counts 2.
    assert counter.incr("task-9") == 1
    runtime = FakeRuntime(_settings(tmp_path))
    run_task(FakeTask(_Request(id="task-9")), runtime, counter, UID)  # type: ignore[arg-type]
    assert runtime.deliveries == [2]


def test_redis_delivery_counter(redis_url: str) -> None:
    counter = counter_for(redis_url, Path("/nonexistent"))
    assert isinstance(counter, RedisDeliveryCounter)
    assert [counter.incr("abc"), counter.incr("abc")] == [1, 2]
    counter.clear("abc")
    assert counter.incr("abc") == 1
    counter.clear("abc")


def test_only_analysis_workers_preload_the_bundle(tmp_path: Path) -> None:
    # export-only workers never run the model: no bundle load (and no bundle mount) for them
    from celery.signals import worker_process_init

    def preloads(app: Any) -> bool:
        return any(key[0] == f"eusdx-preload-{id(app)}" for key, _ in worker_process_init.receivers)

    analysis = make_app(_settings(tmp_path))
    export_only = make_app(_settings(tmp_path), preload_bundle=False)
    assert preloads(analysis)
    assert not preloads(export_only)
