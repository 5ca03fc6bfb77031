"""A study that fails in the worker is announced to the webhooks that asked for ``failure``,
through the export outbox (durable, retried, audited like every result)."""

from __future__ import annotations

from pathlib import Path

from audit import AuditLog
from dicom_node.export import ExportRunner, outbox_for
from eusdx.config import load_settings
from tests.dicom_node.httpnode import WebhookReceiver
from tests.worker.conftest import SECRET, FakeBundle, RecordingExport
from worker.model_cache import ModelCache
from worker.runtime import WorkerRuntime

UID = "1.2.826.0.1.3680043.8.498.78"


def test_dead_lettered_study_is_announced_to_failure_webhooks(tmp_var: Path) -> None:
    hook = WebhookReceiver()
    try:
        settings = load_settings(
            spool_dir=tmp_var / "spool", queue_dir=tmp_var / "queue",
            database_url=f"sqlite:///{tmp_var / 'audit.db'}", bundle=tmp_var / "bundle",
            device="cpu", audit_hmac_secret=SECRET,
            destinations=[{"name": "hook", "kind": "webhook", "address": hook.url,
                           "events": ["failure"]},
                          {"name": "results-only", "kind": "webhook", "address": hook.url,
                           "events": ["result"]}])
        audit = AuditLog(settings.database_url, SECRET)
        audit.ensure_schema()
        bundle = FakeBundle()
        cache = ModelCache(settings.bundle, "cpu", loader=lambda _: bundle, warm=False)
        runtime = WorkerRuntime(settings, cache=cache, audit=audit, export=RecordingExport(tmp_var / "exported"))
        outcome = runtime.process(UID, delivery=settings.task_max_deliveries + 1)
        assert outcome.status == "dead-letter"
        (item,) = outbox_for(settings).items()
        assert set(item["destinations"]) == {"hook"} and item["kind"] == "event"
        assert ExportRunner(settings, audit).run_once() == [(item["id"], "hook", "sent")]
        (message,) = hook.messages
        assert message["event"] == "failure" and message["study_uid"] == UID
        assert "delivered 4 times without its analysis finishing" in message["reason"]
        audit.close()
    finally:
        hook.stop()
