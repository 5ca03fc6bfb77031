"""The start-up reconciler: every study a crash left half-way is driven on, with an audit row."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from audit import AuditLog
from dicom_node.export import settle_study
from dicom_node.outbox import SENT, Outbox
from dicom_node.pending import PendingStudies
from dicom_node.reconcile import Reconciler
from dicom_node.spool import Spool
from eusdx.config import Settings

A, B, C, D, E = (f"1.2.826.0.1.3680043.8.498.9{i}" for i in range(5))
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"


class HoldingEnqueuer:
    def __init__(self, held: set[str]) -> None:
        self.held = held

    def enqueue(self, study_uid: str) -> None:
        self.held.add(study_uid)

    def holds(self, study_uid: str) -> bool:
        return study_uid in self.held


def _walk(audit: AuditLog, study: str, *states: str, **details: Any) -> None:
    for state in states:
        audit.study_state(study_uid=study, state=state, details=details or None)


def test_unsettled_studies_are_driven_on_and_audited(
    make_settings: Callable[..., Settings], audit_for: Callable[[Settings], AuditLog], tmp_path: Path
) -> None:
    settings = make_settings(export_destinations=["PACS@127.0.0.1:1"])
    audit = audit_for(settings)
    spool, pending = Spool(settings.spool_dir), PendingStudies(settings.outbox_path / "enqueue")
    outbox = Outbox(settings.outbox_path / "export")
    (settings.spool_dir / A).mkdir()
    (settings.spool_dir / A / "1.2.3.dcm").write_bytes(b"x")
    (settings.spool_dir / B).mkdir()
    (settings.spool_dir / B / "1.2.4.dcm").write_bytes(b"x")
    _walk(audit, A, "received", "complete", "queued")  # the queue lost it (power cut)
    _walk(audit, B, "received", "complete", "queued", "analysing")  # the queue still holds it
    _walk(audit, C, "received", "complete")  # its files are gone
    _walk(audit, D, "received")  # a crash before completion
    (settings.spool_dir / D).mkdir()
    (settings.spool_dir / D / "1.2.5.dcm").write_bytes(b"x")
    # E was reported and its SR confirmed, but the process died before "exported" was written.
    _walk(audit, E, "received", "complete", "queued", "analysing")
    audit.study_state(study_uid=E, state="reported", details={
        "sr_sop_uid": "1.2.9.1", "sr_series_uid": "1.2.9", "sr_sop_class": SR_CLASS, "revision": "r1"})
    iid, _ = outbox.add(sop_uid="1.2.9.1", sop_class_uid=SR_CLASS, study_uid=E,
                        write_object=lambda p: p.write_bytes(b"DICM"), destinations=list(settings.export_destinations))
    outbox.update_destination(iid, settings.export_destinations[0], state=SENT, sent_at=time.time())
    reopened: list[str] = []
    reconciler = Reconciler(settings, audit, HoldingEnqueuer({B}), pending, outbox, spool,
                            is_open=lambda s: False, reopen=reopened.append)
    actions = {study: action for study, _, action in reconciler.run_once()}
    assert actions == {A: "re-queued", C: "failed: instances gone", D: "re-opened from the spool",
                       E: "settled: exported"}
    assert pending.studies() == [A] and pending.get(A)["queued_audited"] is True
    assert reopened == [D]
    assert audit.study_current_state(A) == "queued"
    assert audit.study_current_state(B) == "analysing"
    assert audit.study_current_state(C) == "failed"
    assert audit.study_current_state(E) == "exported"
    assert reconciler.run_once() == [(D, "received", "re-opened from the spool")]  # idempotent


def test_export_failed_names_the_destination(
    make_settings: Callable[..., Settings], audit_for: Callable[[Settings], AuditLog]
) -> None:
    settings = make_settings(export_destinations=["PACS@127.0.0.1:1", "ARCH@127.0.0.1:2"])
    audit = audit_for(settings)
    outbox = Outbox(settings.outbox_path / "export")
    _walk(audit, A, "received", "complete", "queued", "analysing")
    audit.study_state(study_uid=A, state="reported", details={"sr_sop_uid": "1.2.9.2", "revision": "r1"})
    iid, _ = outbox.add(sop_uid="1.2.9.2", sop_class_uid=SR_CLASS, study_uid=A,
                        write_object=lambda p: p.write_bytes(b"DICM"), destinations=list(settings.export_destinations))
    outbox.update_destination(iid, "PACS@127.0.0.1:1", state=SENT, sent_at=time.time())
    assert settle_study(audit, outbox.get(iid)) is None  # ARCH still pending
    outbox.update_destination(iid, "ARCH@127.0.0.1:2", state="dead-letter", last_error="association rejected")
    assert settle_study(audit, outbox.get(iid)) == "export-failed"
    row = audit.last_settled(A)
    assert row is not None and row[0] == "export-failed"
    assert row[1] == "delivery: the SR was dead-lettered by ARCH@127.0.0.1:2: association rejected"
    assert row[2]["destinations"]["PACS@127.0.0.1:1"]["state"] == SENT
