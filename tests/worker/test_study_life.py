"""One study, one life, end to end across both halves with DCMTK storescp as the PACS.

* late images after the study was reported: an amended SR (new UID, Predecessor Documents Sequence
  naming the first) reaches the PACS;
* a "no analysis possible" SR, then the real images: both SRs reach the PACS, under different UIDs;
* ``eusdx serve`` SIGKILLed between the node's enqueue and the queue's record (and with both records
  left behind): after the restart, exactly one SR per revision;
* every study ends in a terminal state (``exported``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest

from audit import TERMINAL_STATES, AuditLog
from eusdx.config import Settings
from tests.conftest import bundle_trust_env
from tests.reliability.conftest import Serve
from tests.worker.conftest import SECRET, cohort_studies
from tests.worker.test_end_to_end import _received_srs, _settings, _wait, pacs, send_study  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]


@pytest.fixture
def embedded(tmp_var: Path, tiny_bundle: Path, pacs: tuple[str, Path]) -> Iterator[tuple[Settings, AuditLog]]:
    """Node + embedded worker in this process (the embedded default of ``eusdx serve``)."""
    from dicom_node.app import Node
    from worker.embedded import start_embedded

    settings = _settings(tmp_var, tiny_bundle, pacs[0], sr_on_no_analysis=True)
    audit = AuditLog(settings.database_url, SECRET)
    audit.ensure_schema()
    service = start_embedded(settings)
    node = Node(settings, audit, service.enqueuer)
    node.start()
    try:
        yield settings, audit
    finally:
        node.stop()
        service.stop()
        audit.close()


def _images(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.glob("*.dcm")) if pydicom.dcmread(p, stop_before_pixels=True).Modality == "US"]


def _exported(audit: AuditLog, uid: str, sr_uid: str) -> bool:
    report = audit.last_report(uid)
    return audit.study_current_state(uid) == "exported" and report is not None and report["sr_sop_uid"] == sr_uid


def _predecessor(ds: pydicom.Dataset) -> str | None:
    seq = ds.get("PredecessorDocumentsSequence")
    return str(seq[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID) if seq else None


def _sr_uids(folder: Path) -> list[str]:
    return sorted(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in _received_srs(folder))


def test_late_images_give_an_amended_sr_at_the_pacs(
    embedded: tuple[Settings, AuditLog], phantom_cohort: Path, pacs: tuple[str, Path], tmp_path: Path
) -> None:
    settings, audit = embedded
    received = pacs[1]
    uid = cohort_studies(phantom_cohort)[0]
    first_job, late_job = tmp_path / "first", tmp_path / "late"
    shutil.copytree(phantom_cohort / "studies" / uid, first_job)
    late_job.mkdir()
    late = _images(first_job)[-1]
    shutil.move(late, late_job / late.name)  # the PACS forwards the study in two jobs
    send_study(settings.dicom_port, settings.ae_title, first_job)
    [first] = _wait(lambda: _sr_uids(received), 240, "the first SR at the PACS")
    _wait(lambda: _exported(audit, uid, first), 60, "the study exported")
    send_study(settings.dicom_port, settings.ae_title, late_job)
    both = _wait(lambda: _sr_uids(received) if len(_sr_uids(received)) == 2 else None, 240, "the amended SR")
    [amended] = [u for u in both if u != first]
    _wait(lambda: _exported(audit, uid, amended), 60, "the amended SR confirmed")
    sr = next(pydicom.dcmread(p) for p in _received_srs(received)
              if pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID == amended)
    assert _predecessor(sr) == first
    assert audit.study_current_state(uid) in TERMINAL_STATES


def _blank_copy(source: Path, target: Path) -> None:
    ds = pydicom.dcmread(source)
    ds.PixelData = np.zeros((ds.Rows, ds.Columns, 3), np.uint8).tobytes()
    ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.PlanarConfiguration = "RGB", 3, 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.pop("NumberOfFrames", None)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.UltrasoundImageStorage
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(target / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)


def test_no_analysis_sr_then_the_real_result_both_reach_the_pacs(
    embedded: tuple[Settings, AuditLog], phantom_cohort: Path, pacs: tuple[str, Path], tmp_path: Path
) -> None:
    settings, audit = embedded
    received = pacs[1]
    uid = cohort_studies(phantom_cohort)[1]
    study = phantom_cohort / "studies" / uid
    screenshot = tmp_path / "screenshot"
    screenshot.mkdir()
    _blank_copy(_images(study)[0], screenshot)  # a frame without a B-mode sector, sent first
    send_study(settings.dicom_port, settings.ae_title, screenshot)
    [short] = _wait(lambda: _sr_uids(received), 240, "the no-analysis SR at the PACS")
    _wait(lambda: audit.study_current_state(uid) == "failed", 60, "the study failed with a reason")
    send_study(settings.dicom_port, settings.ae_title, study)  # the real images follow
    both = _wait(lambda: _sr_uids(received) if len(_sr_uids(received)) == 2 else None, 240, "the result SR")
    [result] = [u for u in both if u != short]
    assert result != short
    _wait(lambda: _exported(audit, uid, result), 60, "the result SR confirmed")
    with audit.engine.connect() as conn:
        import sqlalchemy as sa

        sent = conn.execute(sa.text("select sr_sop_uid from exports where study_uid=:u and status='sent'"),
                            {"u": uid}).scalars().all()
    assert sorted(sent) == sorted([short, result])


def _serve(var: Path, bundle: Path, dest: str, *, worker: bool) -> Serve:
    return Serve(var, worker=worker, EUSDX_BUNDLE=str(bundle), EUSDX_DEVICE="cpu",
                 EUSDX_EXPORT_DESTINATIONS=dest, EUSDX_EXPORT_BACKOFF_SECONDS="1",
                 EUSDX_STUDY_QUIET_SECONDS="1", EUSDX_AUDIT_HMAC_SECRET=SECRET,
                 EUSDX_OUTBOX_DIR=str(var / "outbox"), **bundle_trust_env(bundle))


def test_sigkill_between_enqueue_and_queue_gives_one_sr_per_revision(
    tmp_var: Path, tiny_bundle: Path, phantom_cohort: Path, pacs: tuple[str, Path]
) -> None:
    from dicom_node.pending import PendingStudies

    dest, received = pacs
    uid = cohort_studies(phantom_cohort)[2]
    node_record = tmp_var / "outbox" / "enqueue" / f"{uid}.json"
    queue_record = tmp_var / "queue" / "pending" / f"{uid}.json"
    # Phase 1: the node alone (no consumer); SIGKILL as soon as the hand-off to the queue has begun.
    serve = _serve(tmp_var, tiny_bundle, dest, worker=False).start()
    try:
        send_study(serve.dicom_port, "EUSDX", phantom_cohort / "studies" / uid)
        _wait(lambda: node_record.exists() or queue_record.exists(), 60, "the enqueue hand-off")
        serve.kill()
    finally:
        serve.kill()
    assert node_record.exists() or queue_record.exists()  # durable on one side at least
    if not node_record.exists():
        # The kill came after the queue's record: put the node's back, as a SIGKILL between the
        # queue's write and the node's delete leaves it, so both halves hold the study.
        PendingStudies(tmp_var / "outbox" / "enqueue").put(uid, 4)
    # Phase 2: restart with the worker; the reconciler and the enqueue outbox drive the study on.
    serve = _serve(tmp_var, tiny_bundle, dest, worker=True).start()  # same var/, fresh ports
    try:
        [sr_uid] = _wait(lambda: _sr_uids(received), 300, "the SR at the PACS")
        log = AuditLog(f"sqlite:///{tmp_var}/audit.db", SECRET)
        try:
            _wait(lambda: _exported(log, uid, sr_uid), 60, "the study exported")
            time.sleep(3)  # a second delivery, if any, has had its chance to send a second SR
            assert _sr_uids(received) == [sr_uid]
            states = [s for s, _ in log._study_events(uid, ("reported",))]
            assert len(states) == 1
            assert log.study_current_state(uid) in TERMINAL_STATES
        finally:
            log.close()
    finally:
        serve.kill()
    assert not node_record.exists() and not queue_record.exists()
