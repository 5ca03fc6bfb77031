"""Study revisions: a re-queued study settles again, late images make an amended SR that names the one
it replaces, a no-analysis SR and a later result never share a UID, our own SR forwarded back makes no
revision, and the worklist shows the current revision only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
from sqlalchemy import select

from audit import AuditLog
from audit.queries import worklist
from audit.schema import StudyEvent
from eusdx.config import Settings
from tests.worker.conftest import FakeBundle, RecordingExport, cohort_studies, copy_study
from worker.pipeline import analyze_study
from worker.revisions import revision_of, study_revision


def _run(settings: Settings, bundle: FakeBundle, audit: AuditLog, export: RecordingExport, uid: str):
    return analyze_study(uid, settings=settings, bundle=bundle, audit=audit, export=export, device="cpu")


def _states(audit: AuditLog, uid: str) -> list[tuple[str, dict]]:
    with audit.engine.connect() as conn:
        rows = conn.execute(select(StudyEvent.state, StudyEvent.details)
                            .where(StudyEvent.study_uid == uid).order_by(StudyEvent.seq)).all()
    return [(r.state, json.loads(r.details) if r.details else {}) for r in rows]


def _images(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.glob("*.dcm"))
            if pydicom.dcmread(p, stop_before_pixels=True).Modality == "US"]


def _predecessor(sr: pydicom.Dataset) -> str | None:
    seq = sr.get("PredecessorDocumentsSequence")
    if not seq:
        return None
    return str(seq[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)


def test_revision_is_the_instance_set_and_ignores_our_own_sr(
    settings: Settings, phantom_cohort: Path, fake_bundle: FakeBundle, audit_log: AuditLog,
    exporter: RecordingExport,
) -> None:
    assert revision_of(["2", "1", "1"]) == revision_of(["1", "2"])
    assert revision_of(["1"]).digest != revision_of(["1", "2"]).digest
    uid = cohort_studies(phantom_cohort)[0]
    folder = copy_study(phantom_cohort, uid, settings.spool_dir)
    before = study_revision(settings.spool_dir, uid)
    outcome = _run(settings, fake_bundle, audit_log, exporter, uid)
    # The PACS forwards our SR back with the study: same revision, nothing to do, no loop.
    shutil.copy(exporter.folder / f"{outcome.sr_sop_uid}.dcm", folder / f"{outcome.sr_sop_uid}.dcm")
    assert study_revision(settings.spool_dir, uid) == before


def test_a_requeued_revision_settles_again_instead_of_staying_queued(
    settings: Settings, phantom_cohort: Path, fake_bundle: FakeBundle, audit_log: AuditLog,
    exporter: RecordingExport,
) -> None:
    uid = cohort_studies(phantom_cohort)[0]
    copy_study(phantom_cohort, uid, settings.spool_dir)
    first = _run(settings, fake_bundle, audit_log, exporter, uid)
    audit_log.study_state(study_uid=uid, state="exported")  # the runner confirmed the SR
    audit_log.study_state(study_uid=uid, state="queued")  # the node re-queued it (a re-sent image)
    again = _run(settings, fake_bundle, audit_log, exporter, uid)
    assert again.status == "duplicate" and again.sr_sop_uid == first.sr_sop_uid
    state, details = _states(audit_log, uid)[-1]
    assert state == "exported" and details["requeued"] is True
    assert audit_log.study_current_state(uid) == "exported"
    assert exporter.calls == 1 and len(fake_bundle.calls) == 1


def test_late_images_make_an_amended_sr_that_names_its_predecessor(
    settings: Settings, phantom_cohort: Path, fake_bundle: FakeBundle, audit_log: AuditLog,
    exporter: RecordingExport, tmp_path: Path,
) -> None:
    uid = cohort_studies(phantom_cohort)[0]
    folder = copy_study(phantom_cohort, uid, settings.spool_dir)
    late = _images(folder)[-1]
    held = tmp_path / late.name
    shutil.move(late, held)  # the PACS forwards the study in two jobs
    first = _run(settings, fake_bundle, audit_log, exporter, uid)
    assert first.status == "reported"
    shutil.move(held, late)
    second = _run(settings, fake_bundle, audit_log, exporter, uid)
    assert second.status == "reported" and second.sr_sop_uid != first.sr_sop_uid
    amended = exporter.items[second.sr_sop_uid]
    assert _predecessor(amended) == first.sr_sop_uid
    assert _predecessor(exporter.items[first.sr_sop_uid]) is None
    assert amended.SeriesInstanceUID != exporter.items[first.sr_sop_uid].SeriesInstanceUID
    reported = [d for s, d in _states(audit_log, uid) if s == "reported"]
    assert [d["replaces_sr"] for d in reported] == [None, first.sr_sop_uid]
    assert reported[0]["revision"] != reported[1]["revision"]
    # The worklist shows the current revision's result only.
    with audit_log.engine.connect() as conn:
        items = worklist(conn)["items"]
    assert [i["sr_sop_uid"] for i in items if i["study_uid"] == uid] == [second.sr_sop_uid]


def test_no_analysis_sr_then_the_real_result_get_different_uids(
    settings: Settings, phantom_cohort: Path, fake_bundle: FakeBundle, audit_log: AuditLog,
    exporter: RecordingExport, tmp_path: Path,
) -> None:
    settings = settings.model_copy(update={"sr_on_no_analysis": True})
    uid = cohort_studies(phantom_cohort)[1]
    folder = copy_study(phantom_cohort, uid, settings.spool_dir)
    held = tmp_path / "held"
    held.mkdir()
    images = _images(folder)
    blank = pydicom.dcmread(images[0])
    for p in images:
        shutil.move(p, held / p.name)
    blank.PixelData = np.zeros((blank.Rows, blank.Columns, 3), np.uint8).tobytes()
    blank.PhotometricInterpretation, blank.SamplesPerPixel, blank.PlanarConfiguration = "RGB", 3, 0
    blank.BitsAllocated, blank.BitsStored, blank.HighBit = 8, 8, 7
    blank.pop("NumberOfFrames", None)
    blank.SOPClassUID = pydicom.uid.UltrasoundImageStorage
    blank.file_meta.MediaStorageSOPClassUID = blank.SOPClassUID
    blank.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    blank.SOPInstanceUID = blank.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    blank.save_as(folder / f"{blank.SOPInstanceUID}.dcm", enforce_file_format=True)
    short = _run(settings, fake_bundle, audit_log, exporter, uid)
    assert short.status == "no-analysis" and short.sr_sop_uid is not None
    for p in held.iterdir():  # the real images arrive late
        shutil.move(p, folder / p.name)
    real = _run(settings, fake_bundle, audit_log, exporter, uid)
    assert real.status == "reported"
    assert real.sr_sop_uid != short.sr_sop_uid
    assert set(exporter.items) == {short.sr_sop_uid, real.sr_sop_uid}
    assert _predecessor(exporter.items[real.sr_sop_uid]) == short.sr_sop_uid
    assert audit_log.study_current_state(uid) == "reported"
