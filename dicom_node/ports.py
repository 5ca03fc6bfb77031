"""The node's hand-offs, typed: what each part of ``dicom_node`` uses of the audit log.

``audit.AuditLog`` satisfies every protocol here (mypy checks it where the CLI wires the node:
``cli/serve_cmd.py``, ``cli/spool_cmd.py``, ``cli/outbox_cmd.py``, and the worker's runtime); tests may pass
it or anything else with these methods. Each part names the smallest protocol it needs, so a reader
sees from the signature which audit rows a module can write:

=================  ==========================================================  =====================
protocol           methods                                                     used by
=================  ==========================================================  =====================
ReceiveAudit       association, association_closed, instance                   handlers, stow
StudyAudit         study_state                                                 assembler
ExportAudit        + export, study_current_state, last_report                  export, channels
ReconcileAudit     ExportAudit + studies_in                                    reconcile
CleanerAudit       + qa_event, study_row                                       cleaner
NodeAudit          all of the above + count_by_state, ping                     app, http
=================  ==========================================================  =====================

The other two hand-offs are :class:`dicom_node.enqueue.Enqueuer` (node -> queue, by task name) and
``worker.pipeline.Exporter`` (worker -> :func:`dicom_node.export.submit`).

Errors: every method may raise ``audit.AuditUnavailable`` (the store cannot be written or read).
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["ReceiveAudit", "StudyAudit", "ExportAudit", "ReconcileAudit", "CleanerAudit", "NodeAudit"]


class ReceiveAudit(Protocol):
    """Rows of the receiving side: one per association, one per instance (C-STORE or STOW-RS)."""

    def association(self, *, peer_ae: str, peer_host: str, peer_port: int, called_ae: str,
                    tls: bool, accepted: bool, reason: str | None = None) -> int: ...

    def association_closed(self, *, association_id: int, instances: int,
                           reason: str | None = None) -> None: ...

    def instance(self, *, association_id: int | None, study_uid: str | None,
                 series_uid: str | None, sop_uid: str | None, sop_class_uid: str | None,
                 transfer_syntax: str | None, size: int, digest: str | None, status: str,
                 reason: str | None = None, calling_ae: str | None = None,
                 patient_id: str | None = None, accession: str | None = None,
                 modality: str | None = None, body_part: str | None = None) -> None: ...


class StudyAudit(Protocol):
    """A study's state transitions (``audit.STUDY_STATES``)."""

    def study_state(self, *, study_uid: str, state: str, reason: str | None = None,
                    accession: str | None = None, details: dict[str, Any] | None = None) -> None: ...


class ExportAudit(StudyAudit, Protocol):
    """Export attempts per destination and the study's ``exported`` / ``export-failed`` states."""

    def export(self, *, study_uid: str, destination: str, attempt: int, status: str,
               sr_sop_uid: str | None, error: str | None = None) -> None: ...

    def study_current_state(self, study_uid: str) -> str | None: ...

    def last_report(self, study_uid: str) -> dict[str, Any] | None: ...


class ReconcileAudit(ExportAudit, Protocol):
    """What the reconciler reads to find studies stuck between states (and settles their exports)."""

    def studies_in(self, states: tuple[str, ...], *, limit: int = 10_000) -> list[dict[str, Any]]: ...


class CleanerAudit(StudyAudit, Protocol):
    """What the spool cleaner reads and records (its deletions are QA events)."""

    def qa_event(self, *, actor: str, action: str, params: dict[str, Any]) -> None: ...

    def study_row(self, study_uid: str) -> dict[str, Any] | None: ...


class NodeAudit(ReceiveAudit, ReconcileAudit, CleanerAudit, Protocol):
    """Everything the node application passes down, plus its health check and study counts."""

    def count_by_state(self, states: tuple[str, ...]) -> dict[str, int]: ...

    def ping(self) -> None: ...
