"""What one worker process holds (bundle cache, audit log, export function) and the task body.

``WorkerRuntime.process`` is the single task body: the Celery task and the embedded consumer both call
it with the delivery count of the message, so both paths share the dead-letter rule, the idempotency
check and the pipeline.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any, Protocol

from pydicom.dataset import Dataset

from dicom_node.ports import ExportAudit
from eusdx.config import Settings
from eusdx.errors import ConfigError, DataError, UsageError
from eusdx.uids import check_uid
from worker.model_cache import ModelCache, trusted_loader
from worker.pipeline import AuditLike, Exporter, Outcome, TransientError, analyze_study, short_reason
from worker.policy import MAX_TRANSIENT_RETRIES, retry_delay

__all__ = [
    "TASK_NAME",
    "EXPORT_TASK_NAME",
    "MAX_TRANSIENT_RETRIES",
    "WorkerAudit",
    "WorkerRuntime",
    "default_export",
    "inference_device",
    "retry_delay",
    "runtime_for",
    "validate_study_uid",
]

log = logging.getLogger(__name__)

#: The name the DICOM node enqueues by (it never imports the worker).
TASK_NAME = "eusdx.analyze_study"
EXPORT_TASK_NAME = "eusdx.export_pending"


def validate_study_uid(study_uid: object) -> str:
    """Return the UID if it is digits and dots (<= 64 chars).

    Raises
    ------
    eusdx.uids.InvalidUID
        (a ``DataError``) otherwise.
    """
    return check_uid(study_uid, "StudyInstanceUID")


class WorkerAudit(AuditLike, ExportAudit, Protocol):
    """What a worker process uses of ``audit.AuditLog``: the pipeline's rows, the outbox's export rows
    (``dicom_node.export``), the schema check of the embedded default and the engine's release."""

    def ensure_schema(self) -> None: ...

    def close(self) -> None: ...


def inference_device(setting: str) -> str:
    """The torch device for ``Settings.device`` (``models.deep_features.resolve_device``: ``auto``
    picks ``cuda`` when a GPU is present).

    Raises
    ------
    ConfigError
        ``cuda`` is configured but no GPU is present: the worker refuses to start instead of
        failing every analysis later.
    """
    from models.deep_features import resolve_device

    try:
        return resolve_device(setting)
    except UsageError as exc:
        raise ConfigError(f"device = {setting!r}: {exc}") from exc


def default_export(settings: Settings, audit: Callable[[], ExportAudit] | None = None) -> Exporter:
    """``dicom_node.export.submit`` bound to the settings (durable outbox, dedup by SOP Instance UID).

    ``audit`` returns the audit log, so the outbox's ``queued`` rows are written at hand-off.
    """

    def export(dataset: Dataset, study_uid: str) -> str:
        from dicom_node import export as outbox

        return str(outbox.submit(settings, dataset, study_uid, audit=audit() if audit else None))

    return export


class WorkerRuntime:
    """Per-process state of a worker.

    Parameters
    ----------
    settings
        The configuration read at start-up.
    cache
        Bundle cache; built from ``settings.bundle`` and ``settings.device`` when omitted.
    audit
        ``audit.AuditLog``; built from the settings (lazily, after any fork) when omitted.
    export
        Export hand-off; ``dicom_node.export.submit`` when omitted.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        cache: ModelCache | None = None,
        audit: WorkerAudit | None = None,
        export: Exporter | None = None,
    ) -> None:
        self.settings = settings
        self.device = inference_device(settings.device)
        self.cache = cache or ModelCache(settings.bundle, self.device, loader=trusted_loader(settings),
                                         processes=settings.analysis_processes)
        self._audit = audit
        self._audit_lock = threading.Lock()
        self.export = export or default_export(settings, lambda: self.audit)

    @property
    def audit(self) -> WorkerAudit:
        """The audit log (one engine per process, created on first use)."""
        with self._audit_lock:
            if self._audit is None:
                from audit import AuditLog

                self._audit = AuditLog.from_settings(self.settings)
            return self._audit

    def close(self) -> None:
        """Release the audit engine (pool process exit, embedded shutdown)."""
        with self._audit_lock:
            if self._audit is not None:
                self._audit.close()
                self._audit = None

    def bundle(self) -> Any:
        """The process's bundle (loaded, verified and warmed on first use; reloaded when changed)."""
        return self.cache.get()

    def record_failure(self, study_uid: str, reason: str, details: dict[str, Any] | None = None) -> None:
        """Put the study in ``failed`` with a reason (retries exhausted, input error, programming error).

        ``reason`` is a ``Failure.as_text()``; ``details`` carry ``failure_class`` (see ``worker.policy``).
        """
        self.audit.study_state(study_uid=study_uid, state="failed", reason=short_reason(reason),
                               details={**(details or {}), "error": reason})
        self._announce(Outcome(study_uid, "failed", "", reason=reason))

    def process(
        self, study_uid: str, *, delivery: int = 1, on_bundle: Callable[[Any], None] | None = None
    ) -> Outcome:
        """Run one delivery of a study.

        Parameters
        ----------
        study_uid
            Validated before use.
        delivery
            1 for the first delivery; higher after a worker was lost mid-task. Above
            ``Settings.task_max_deliveries`` the study is dead-lettered (state ``dead-letter``, not run).
        on_bundle
            Called with the bundle before the pipeline runs (tests, benchmarks).

        Returns
        -------
        Outcome

        Raises
        ------
        DataError
            The UID is invalid (deterministic; the caller drops the message).
        OSError, TransientError, audit.AuditUnavailable
            Transient: the caller retries with back-off.
        """
        validate_study_uid(study_uid)
        cap = self.settings.task_max_deliveries
        if delivery > cap:
            reason = (f"the study was delivered {delivery} times without its analysis finishing "
                      f"(cap {cap}); it stopped the worker each time")
            log.error("study %s dead-lettered: %s", study_uid, reason)
            self.audit.study_state(study_uid=study_uid, state="dead-letter", reason=short_reason(reason),
                                   details={"delivery": delivery, "cap": cap, "error": reason})
            return self._announce(Outcome(study_uid, "dead-letter", "", reason=reason))
        try:
            bundle = self.bundle()
        except DataError as exc:  # missing or tampered bundle: the operator's problem, not the study's
            raise TransientError(f"bundle unavailable: {exc}") from exc
        if on_bundle is not None:
            on_bundle(bundle)
        return self._announce(analyze_study(
            study_uid,
            settings=self.settings,
            bundle=bundle,
            audit=self.audit,
            export=self.export,
            device=self.device,
            delivery=delivery,
        ))

    def _announce(self, outcome: Outcome) -> Outcome:
        """Tell the webhooks that asked for ``failure`` events that a study failed (durably, through
        the export outbox; ``dicom_node.channels.events``)."""
        if outcome.status not in ("failed", "dead-letter"):
            return outcome
        from dicom_node.channels.events import notify

        try:
            notify(self.settings, "failure", outcome.study_uid, reason=outcome.reason,
                   audit=self.audit)
        except OSError as exc:  # the failure itself is recorded; only the notice is lost
            log.error("failure of study %s not announced to webhooks: %s", outcome.study_uid, exc)
        return outcome


_RUNTIMES: dict[tuple[int, int], WorkerRuntime] = {}
_RUNTIMES_LOCK = threading.Lock()


def runtime_for(settings: Settings) -> WorkerRuntime:
    """The runtime of this process for these settings (new after a fork: engines are not shared)."""
    key = (os.getpid(), id(settings))
    with _RUNTIMES_LOCK:
        runtime = _RUNTIMES.get(key)
        if runtime is None:
            runtime = WorkerRuntime(settings)
            _RUNTIMES[key] = runtime
        return runtime
