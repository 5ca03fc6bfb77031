"""The per-study pipeline on phantom studies: SR content, audit trail, idempotency, failure kinds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from sqlalchemy import select

from audit import AuditLog
from audit.schema import AnalysisEvent, StudyEvent
from eusdx.config import Settings
from eusdx.errors import DataError
from tests.worker._helpers import dciodvfy_errors, dsrdump
from tests.worker.conftest import (
    FakeBundle, RecordingExport, cohort_studies, copy_study, expected_frame_keys,
)
from worker.frames import load_study, sample_indices
from worker.pipeline import TransientError, analyze_study
from worker.sr.reader import summarize_report
from worker.revisions import study_revision
from worker.sr.uids import report_uids


def _rev(settings: Settings, uid: str) -> str:
    """The study's revision in the spool (it enters the SR UIDs)."""
    return study_revision(settings.spool_dir, uid).digest


def _states(audit: AuditLog, study_uid: str) -> list[tuple[str, str | None, dict]]:
    with audit.engine.connect() as conn:
        rows = conn.execute(
            select(StudyEvent.state, StudyEvent.reason, StudyEvent.details)
            .where(StudyEvent.study_uid == study_uid)
            .order_by(StudyEvent.seq)
        ).all()
    return [(r.state, r.reason, json.loads(r.details) if r.details else {}) for r in rows]


def _analyses(audit: AuditLog, study_uid: str) -> list[dict]:
    with audit.engine.connect() as conn:
        rows = conn.execute(select(AnalysisEvent).where(AnalysisEvent.study_uid == study_uid)).mappings().all()
    return [dict(r) for r in rows]


def _run(settings: Settings, bundle: FakeBundle, audit: AuditLog, export: RecordingExport, uid: str):
    return analyze_study(uid, settings=settings, bundle=bundle, audit=audit, export=export, device="cpu")


def test_phantom_study_is_reported_once_with_the_bundle_probabilities(
    settings: Settings, phantom_cohort: Path, fake_bundle: FakeBundle, audit_log: AuditLog,
    exporter: RecordingExport,
) -> None:
    uid = cohort_studies(phantom_cohort)[0]
    study_dir = copy_study(phantom_cohort, uid, settings.spool_dir)
    outcome = _run(settings, fake_bundle, audit_log, exporter, uid)

    assert outcome.status == "reported"
    keys = fake_bundle.calls[0]
    # every sampled frame of the study's images, as one batch
    assert len(keys) == expected_frame_keys(study_dir, settings.cine_max_frames)
    expected = [FakeBundle.probability_of(k) for k in keys]
    assert outcome.probability == pytest.approx(np.mean(expected))
    assert outcome.label == ("GIST" if np.mean(expected) >= 0.5 else "leiomyoma")
    assert outcome.bundle_version == FakeBundle.version
    for stage in ("load", "predict", "sr_build", "export", "total"):
        assert outcome.timings[stage] >= 0.0

    [sr] = exporter.items.values()
    assert sr.SOPInstanceUID == outcome.sr_sop_uid
    summary = summarize_report(sr)
    assert sorted(summary.image_probabilities) == pytest.approx(sorted(expected), abs=1e-6)
    assert summary.probability == pytest.approx(float(np.mean(expected)), abs=1e-6)
    evidence = {
        i.ReferencedSOPInstanceUID
        for s in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        for i in s.ReferencedSOPSequence
    }
    image_uids = {k.split("#")[0] for k in keys}
    assert image_uids <= evidence
    assert len(evidence) == len(list(study_dir.glob("*.dcm")))  # the images and the SEGs that gave the ROIs
    path = exporter.folder / f"{sr.SOPInstanceUID}.dcm"
    assert dciodvfy_errors(path) == []
    tree = dsrdump(path)
    assert "Lesion outline from DICOM Segmentation in study" in tree  # the phantom's SEG gave the ROI

    states = [s for s, _, _ in _states(audit_log, uid)]
    assert states[-2:] == ["analysing", "reported"]
    [analysis] = _analyses(audit_log, uid)
    assert analysis["error"] is None
    assert analysis["sr_sop_uid"] == sr.SOPInstanceUID
    assert analysis["probability"] == pytest.approx(outcome.probability)
    assert analysis["roi_source"] == "SEG"
    # the operating threshold the label used, for `eusdx audit performance`
    assert json.loads(analysis["lesions"])[0]["threshold"] == fake_bundle.threshold

    # A redelivered or re-sent study never yields a second SR or analysis.
    again = _run(settings, fake_bundle, audit_log, exporter, uid)
    assert again.status == "duplicate"
    assert exporter.calls == 1 and len(fake_bundle.calls) == 1
    assert len(_analyses(audit_log, uid)) == 1


def _single_frame_images(study: Path) -> list[Path]:
    return [p for p in sorted(study.glob("*.dcm"))
            if pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID == pydicom.uid.UltrasoundImageStorage]


def _rgb(ds: pydicom.Dataset) -> np.ndarray:
    arr = ds.pixel_array
    if ds.PhotometricInterpretation.startswith("YBR"):
        arr = pydicom.pixels.convert_color_space(arr, ds.PhotometricInterpretation, "RGB")
    if ds.SamplesPerPixel == 1:
        arr = np.stack([arr] * 3, axis=-1)
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _set_rgb(ds: pydicom.Dataset, rgb: np.ndarray) -> None:
    """Replace the pixels by uncompressed RGB frames ((R, C, 3) or (N, R, C, 3))."""
    ds.PixelData = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if rgb.ndim == 4:
        ds.NumberOfFrames = rgb.shape[0]
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian


def _add_doppler_copy(study: Path) -> str:
    """Add a colour-Doppler-like copy of the first image (new SOP UID): it has no B-mode sector."""
    ds = pydicom.dcmread(_single_frame_images(study)[0])
    rgb = _rgb(ds).copy()
    rows, cols = rgb.shape[:2]
    rgb[rows // 4: rows // 2, cols // 3: 2 * cols // 3] = [220, 30, 30]
    _set_rgb(ds, rgb)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = 99
    ds.save_as(study / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def test_frames_without_sector_are_skipped_and_said_so(
    settings: Settings, phantom_cohort: Path, fake_bundle: FakeBundle, audit_log: AuditLog,
    exporter: RecordingExport,
) -> None:
    uid = cohort_studies(phantom_cohort)[1]
    study = copy_study(phantom_cohort, uid, settings.spool_dir)
    doppler = _add_doppler_copy(study)
    outcome = _run(settings, fake_bundle, audit_log, exporter, uid)
    assert outcome.status == "reported"
    assert all(not k.startswith(doppler) for k in fake_bundle.calls[0])
    _, _, details = _states(audit_log, uid)[-1]
    assert {"key": f"{doppler}#1", "reason": "no B-mode sector (Doppler or screenshot)"} in details["skipped"]
    sr = exporter.items[outcome.sr_sop_uid]
    texts = [i.TextValue for i in sr.ContentSequence[-1].ContentSequence if "TextValue" in i]
    assert "1 frame skipped: no B-mode sector (Doppler or screenshot)" in texts


@pytest.mark.parametrize("short_sr", [False, True])
def test_study_without_usable_frame_fails_clearly(
    settings: Settings, phantom_cohort: Path, fake_bundle: FakeBundle, audit_log: AuditLog,
    exporter: RecordingExport, short_sr: bool,
) -> None:
    uid = cohort_studies(phantom_cohort)[2]
    study = copy_study(phantom_cohort, uid, settings.spool_dir)
    for p in study.glob("*.dcm"):  # every image becomes a blank frame (no sector anywhere)
        if pydicom.dcmread(p, stop_before_pixels=True).Modality == "US":
            ds = pydicom.dcmread(p)
            n = int(ds.get("NumberOfFrames", 1) or 1)
            shape = (n, ds.Rows, ds.Columns, 3) if "NumberOfFrames" in ds else (ds.Rows, ds.Columns, 3)
            _set_rgb(ds, np.zeros(shape, np.uint8))
            ds.save_as(p, enforce_file_format=True)
    settings = settings.model_copy(update={"sr_on_no_analysis": short_sr})
    outcome = _run(settings, fake_bundle, audit_log, exporter, uid)
    assert outcome.status == "no-analysis"
    assert fake_bundle.calls == []
    state, reason, details = _states(audit_log, uid)[-1]
    assert state == "failed"
    assert reason is not None and reason.startswith(
        "input: no frame of the study shows a B-mode ultrasound sector (")
    assert "skipped: no B-mode sector (Doppler or screenshot)" in reason
    assert "decoded" not in reason
    assert details["no_analysis_kind"] == "no-sector"
    [analysis] = _analyses(audit_log, uid)
    assert analysis["error"] == outcome.reason
    if short_sr:
        [sr] = exporter.items.values()
        assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"
        assert sr.SOPInstanceUID == report_uids(uid, FakeBundle.version, "no-sector", revision=_rev(settings, uid)).sr_sop
        assert analysis["sr_sop_uid"] == sr.SOPInstanceUID
        assert dciodvfy_errors(exporter.folder / f"{sr.SOPInstanceUID}.dcm") == []
    else:
        assert exporter.items == {}


def test_no_lesion_is_a_recorded_failure_not_a_retry(
    settings: Settings, phantom_cohort: Path, audit_log: AuditLog, exporter: RecordingExport
) -> None:
    from models.bundle import NoLesionError

    uid = cohort_studies(phantom_cohort)[0]
    study_dir = copy_study(phantom_cohort, uid, settings.spool_dir)
    bundle = FakeBundle(error=NoLesionError("no lesion found on any frame"))
    outcome = _run(settings, bundle, audit_log, exporter, uid)
    n = expected_frame_keys(study_dir, settings.cine_max_frames)
    assert outcome.status == "no-analysis"
    assert outcome.reason is not None and outcome.reason.startswith(
        f"input: the model found no lesion in any analysable frame ({n} frames skipped: no lesion found by the model")
    state, reason, _ = _states(audit_log, uid)[-1]
    assert (state, reason) == ("failed", outcome.reason)
    assert exporter.items == {}
    assert audit_log.analysis_exists(uid, bundle.version) is False


@pytest.mark.parametrize("kind", ["no-lesion", "no-sector"])
def test_sr_on_no_analysis_covers_model_refusals_with_own_uid(
    settings: Settings, phantom_cohort: Path, audit_log: AuditLog, exporter: RecordingExport, kind: str,
) -> None:
    from models.preprocess import NoSectorError
    from models.roi import NoLesionError

    uid = cohort_studies(phantom_cohort)[0]
    copy_study(phantom_cohort, uid, settings.spool_dir)
    settings = settings.model_copy(update={"sr_on_no_analysis": True, "sr_sop_class": "comprehensive-3d"})
    error = NoLesionError("none") if kind == "no-lesion" else NoSectorError("none")
    outcome = _run(settings, FakeBundle(error=error), audit_log, exporter, uid)
    assert outcome.status == "no-analysis"
    [sr] = exporter.items.values()
    assert sr.SOPInstanceUID == outcome.sr_sop_uid == report_uids(
        uid, FakeBundle.version, kind, "comprehensive-3d", _rev(settings, uid)).sr_sop
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
    assert dciodvfy_errors(exporter.folder / f"{sr.SOPInstanceUID}.dcm") == []
    texts = [i.TextValue for i in sr.ContentSequence[-1].ContentSequence if i.ValueType == "TEXT"]
    assert texts[0].startswith("No analysis was possible: ")


def test_undecodable_study_gets_its_own_short_sr(
    settings: Settings, phantom_cohort: Path, fake_bundle: FakeBundle, audit_log: AuditLog,
    exporter: RecordingExport,
) -> None:
    uid = cohort_studies(phantom_cohort)[1]
    study = copy_study(phantom_cohort, uid, settings.spool_dir)
    for p in study.glob("*.dcm"):  # pixel data cut short: headers readable, nothing decodable
        ds = pydicom.dcmread(p)
        if ds.Modality == "US":
            ds.PixelData = ds.PixelData[:100]
            ds.save_as(p, enforce_file_format=True)
    settings = settings.model_copy(update={"sr_on_no_analysis": True})
    outcome = _run(settings, fake_bundle, audit_log, exporter, uid)
    assert outcome.status == "no-analysis"
    assert outcome.reason is not None and outcome.reason.startswith("input: no image of the study could be decoded (")
    [sr] = exporter.items.values()
    assert sr.SOPInstanceUID == report_uids(uid, FakeBundle.version, "undecodable", revision=_rev(settings, uid)).sr_sop
    assert dciodvfy_errors(exporter.folder / f"{sr.SOPInstanceUID}.dcm") == []


def test_export_failure_is_transient_and_the_retry_gives_the_same_sr(
    settings: Settings, phantom_cohort: Path, fake_bundle: FakeBundle, audit_log: AuditLog,
    exporter: RecordingExport,
) -> None:
    uid = cohort_studies(phantom_cohort)[0]
    copy_study(phantom_cohort, uid, settings.spool_dir)
    exporter.fail_next = 1
    with pytest.raises(OSError, match="outbox disk unavailable"):
        _run(settings, fake_bundle, audit_log, exporter, uid)
    assert _analyses(audit_log, uid) == []  # nothing claims a result that was not handed off
    outcome = _run(settings, fake_bundle, audit_log, exporter, uid)
    assert outcome.status == "reported"
    assert list(exporter.items) == [outcome.sr_sop_uid]


def test_export_error_of_eusdx_type_becomes_transient(
    settings: Settings, phantom_cohort: Path, fake_bundle: FakeBundle, audit_log: AuditLog,
) -> None:
    from eusdx.errors import EusdxError

    uid = cohort_studies(phantom_cohort)[0]
    copy_study(phantom_cohort, uid, settings.spool_dir)

    def refuse(dataset: pydicom.Dataset, study_uid: str) -> str:
        raise EusdxError("outbox database locked")

    with pytest.raises(TransientError, match="export hand-off failed: outbox database locked"):
        _run(settings, fake_bundle, audit_log, refuse, uid)  # type: ignore[arg-type]


def test_missing_study_and_bad_uid(
    settings: Settings, fake_bundle: FakeBundle, audit_log: AuditLog, exporter: RecordingExport
) -> None:
    outcome = _run(settings, fake_bundle, audit_log, exporter, "1.2.3.4")
    assert outcome.status == "failed"
    assert outcome.reason is not None and "not in the spool" in outcome.reason
    with pytest.raises(DataError, match="invalid StudyInstanceUID"):
        load_study(settings.spool_dir, "../etc", cine_max_frames=4, has_sector=lambda _: True)


def test_cine_frames_are_sampled_evenly(settings: Settings, phantom_cohort: Path) -> None:
    assert sample_indices(100, 5) == [0, 25, 50, 74, 99]
    assert sample_indices(3, 8) == [0, 1, 2]
    assert sample_indices(9, 1) == [4]
    with pytest.raises(ValueError, match="max_frames must be >= 1"):
        sample_indices(5, 0)
    uid = cohort_studies(phantom_cohort)[0]
    study = copy_study(phantom_cohort, uid, settings.spool_dir)
    src = _single_frame_images(study)[0]
    ds = pydicom.dcmread(src)
    frame = _rgb(ds)
    ds.FrameTime = 33.3
    ds.FrameIncrementPointer = 0x00181063
    ds.SOPClassUID = pydicom.uid.UltrasoundMultiFrameImageStorage
    _set_rgb(ds, np.stack([frame] * 10))
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.save_as(src, enforce_file_format=True)
    loaded = load_study(settings.spool_dir, uid, cine_max_frames=4, has_sector=lambda _: True)
    cine = [f for f in loaded.frames if f.source.SOPInstanceUID == ds.SOPInstanceUID]
    assert [f.frame_number for f in cine] == [1, 4, 7, 10]
    assert all(f.pixels.shape == frame.shape for f in cine)


def test_phantom_cine_frames_are_sampled_masked_by_seg_and_referenced_by_frame(
    settings: Settings, phantom_cohort: Path, fake_bundle: FakeBundle, audit_log: AuditLog,
    exporter: RecordingExport,
) -> None:
    cine_study = None
    for uid in cohort_studies(phantom_cohort):
        folder = phantom_cohort / "studies" / uid
        if any(pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID
               == pydicom.uid.UltrasoundMultiFrameImageStorage for p in folder.glob("*.dcm")):
            cine_study = uid
            break
    assert cine_study is not None, "the seed-7 phantom cohort has a cine loop"
    copy_study(phantom_cohort, cine_study, settings.spool_dir)
    settings = settings.model_copy(update={"cine_max_frames": 3})
    outcome = _run(settings, fake_bundle, audit_log, exporter, cine_study)
    assert outcome.status == "reported"
    cine_keys = [k for k in fake_bundle.calls[0] if not k.endswith("#1")]
    assert len(cine_keys) == 2  # frames 1 (ends with #1), middle and last of the loop: 3 sampled
    sr = exporter.items[outcome.sr_sop_uid]
    path = exporter.folder / f"{sr.SOPInstanceUID}.dcm"
    assert dciodvfy_errors(path) == []
    tree = dsrdump(path)
    assert "(8359006,SCT,\"Automated\")" not in tree  # every frame, cine included, got its ROI from the SEG
    frames = []

    def walk(items: pydicom.Sequence) -> None:
        for item in items:
            if item.get("GraphicType") == "POLYLINE":
                ref = item.ContentSequence[0].ReferencedSOPSequence[0]
                frames.append(ref.get("ReferencedFrameNumber"))
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(sr.ContentSequence)
    assert sorted(int(f) for f in frames if f is not None) == sorted(
        int(k.split("#")[1]) for k in fake_bundle.calls[0]
        if k.split("#")[0] in {k2.split("#")[0] for k2 in cine_keys}
    )


def test_secondary_capture_is_exported_with_the_sr_when_configured(
    settings: Settings, phantom_cohort: Path, fake_bundle: FakeBundle, audit_log: AuditLog,
    exporter: RecordingExport,
) -> None:
    uid = cohort_studies(phantom_cohort)[0]
    copy_study(phantom_cohort, uid, settings.spool_dir)
    settings = settings.model_copy(update={"secondary_capture": True})
    outcome = _run(settings, fake_bundle, audit_log, exporter, uid)
    assert outcome.status == "reported"
    assert len(outcome.export_ids) == 2
    sc = next(ds for ds in exporter.items.values() if ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage)
    assert sc.StudyInstanceUID == uid and sc.BurnedInAnnotation == "YES"
    assert dciodvfy_errors(exporter.folder / f"{sc.SOPInstanceUID}.dcm") == []


def _rewrite_images(folder: Path, change: Any) -> None:
    for p in folder.glob("*.dcm"):
        ds = pydicom.dcmread(p)
        if ds.Modality == "US":
            change(ds)
            with pydicom.config.disable_value_validation():
                ds.save_as(p, enforce_file_format=True)


def test_legacy_dotted_study_date_keeps_the_analysis_and_notes_the_change(
    settings: Settings, phantom_cohort: Path, fake_bundle: FakeBundle, audit_log: AuditLog,
    exporter: RecordingExport,
) -> None:
    """Older GE machines write 2023.01.18 / 16:03:46: the result must survive and the SR carry DICOM forms."""
    from pydicom.dataelem import DataElement

    uid = cohort_studies(phantom_cohort)[0]
    study = copy_study(phantom_cohort, uid, settings.spool_dir)

    def legacy(ds: pydicom.Dataset) -> None:
        ds.add(DataElement("StudyDate", "DA", b"2023.01.18"))
        ds.add(DataElement("StudyTime", "TM", b"16:03:46"))
        ds.add(DataElement("SpecificCharacterSet", "CS", ["", "ISO 2022 IR 87"]))
        ds.add(DataElement("AccessionNumber", "SH", b"ACC-0000000000000042"))  # 20 > 16 characters

    _rewrite_images(study, legacy)
    outcome = _run(settings, fake_bundle, audit_log, exporter, uid)
    assert outcome.status == "reported", outcome.reason
    sr = exporter.items[outcome.sr_sop_uid]
    assert (sr.StudyDate, sr.StudyTime) == ("20230118", "160346")
    assert sr.AccessionNumber in (None, "")
    path = exporter.folder / f"{sr.SOPInstanceUID}.dcm"
    assert dciodvfy_errors(path) == []
    state, _, details = _states(audit_log, uid)[-1]
    assert state == "reported"
    notes = details["header_changes"]
    assert any(n.startswith("StudyDate normalised") for n in notes)
    assert any(n.startswith("StudyTime normalised") for n in notes)
    assert any(n.startswith("AccessionNumber left out") for n in notes)
    assert not any("2023" in n or "ACC-" in n for n in notes)


def test_cine_declaring_zero_frames_fails_as_input_in_plain_words(
    settings: Settings, phantom_cohort: Path, fake_bundle: FakeBundle, audit_log: AuditLog,
    exporter: RecordingExport,
) -> None:
    uid = cohort_studies(phantom_cohort)[0]
    study = copy_study(phantom_cohort, uid, settings.spool_dir)
    first = sorted(p for p in study.glob("*.dcm") if pydicom.dcmread(p, stop_before_pixels=True).Modality == "US")[0]
    ds = pydicom.dcmread(first)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.UltrasoundMultiFrameImageStorage
    ds.NumberOfFrames = 0
    ds.FrameIncrementPointer = 0x00181063
    ds.save_as(first, enforce_file_format=True)
    outcome = _run(settings, fake_bundle, audit_log, exporter, uid)
    assert outcome.status == "failed"
    assert outcome.reason == (
        f"input: the multi-frame image {ds.SOPInstanceUID} declares no valid number of frames, so its "
        "analysed frame 1 cannot be referenced in the report")
    assert exporter.items == {}
