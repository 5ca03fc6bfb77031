"""Phantom cohorts as DICOM: validity (dciodvfy), pixel round trips, SEG, manifest, determinism, no leaks."""

from __future__ import annotations

import csv
import io
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    SegmentationStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

from phantom.dicom import ENCODINGS, Encoding, StudyInfo, image_dataset, phantom_uid, to_display_array
from phantom import MANIFEST_COLUMNS, LesionSpec, generate_cohort, render_cine, render_image
from tests.conftest import require_tool

PATIENTS = 5  # with seed 0 this covers every encoding for stills and two cines


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantom")
    generate_cohort(out, PATIENTS, seed=0)
    return out


@pytest.fixture(scope="module")
def rows(cohort: Path) -> list[dict[str, str]]:
    with (cohort / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _files(root: Path) -> list[Path]:
    return sorted((root / "studies").rglob("*.dcm"))


def test_manifest_columns_and_layout(cohort: Path, rows: list[dict[str, str]]) -> None:
    header = (cohort / "manifest.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.split(",") == list(MANIFEST_COLUMNS)
    assert {r["label"] for r in rows} <= {"GIST", "leiomyoma"}
    assert len({r["patient_id"] for r in rows}) == PATIENTS
    for pid in {r["patient_id"] for r in rows}:
        mine = [r for r in rows if r["patient_id"] == pid]
        assert len({r["lesion_id"] for r in mine}) == 1  # one lesion per patient
        assert len({r["label"] for r in mine}) == 1
        assert len({r["study_uid"] for r in mine}) == 1
        assert 3 <= len(mine) <= 8 + 10
    for r in rows:
        assert not Path(r["image_path"]).is_absolute()
        img = cohort / r["image_path"]
        assert img.parent == cohort / "studies" / r["study_uid"]
        assert img.name == f"{r['sop_uid']}.dcm"
        assert (cohort / r["seg_path"]).parent == img.parent
        assert r["centre"] == "internal"
        assert float(r["size_mm"]) >= 3.0
    # Cine frames: one row each, numbered from 0.
    by_sop: dict[str, list[int]] = {}
    for r in rows:
        by_sop.setdefault(r["sop_uid"], []).append(int(r["frame"]))
    assert any(len(f) > 1 for f in by_sop.values())
    for frames in by_sop.values():
        assert frames == list(range(len(frames)))


def test_cohort_covers_every_encoding_and_a_seg(cohort: Path) -> None:
    seen = set()
    classes = set()
    for path in _files(cohort):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert path.name == f"{ds.SOPInstanceUID}.dcm"
        assert path.parent.name == ds.StudyInstanceUID
        classes.add(ds.SOPClassUID)
        if ds.SOPClassUID != SegmentationStorage:
            seen.add((ds.file_meta.TransferSyntaxUID, ds.PhotometricInterpretation))
    assert {(e.transfer_syntax, e.photometric) for e in ENCODINGS} <= seen
    assert {UltrasoundImageStorage, UltrasoundMultiFrameImageStorage, SegmentationStorage} <= classes


def test_every_file_passes_dciodvfy(cohort: Path) -> None:
    tool = require_tool("dciodvfy")
    errors = []
    for path in _files(cohort):
        res = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
        lines = (res.stdout + res.stderr).splitlines()
        errors += [f"{path.name}: {line}" for line in lines if line.startswith("Error")]
    assert errors == []


def test_study_modules_are_realistic_and_fake(cohort: Path, rows: list[dict[str, str]]) -> None:
    ds = pydicom.dcmread(cohort / rows[0]["image_path"], stop_before_pixels=True)
    assert ds.Modality == "US"
    assert ds.BodyPartExamined == "STOMACH"
    assert str(ds.PatientName) == f"PHANTOM^{rows[0]['patient_id']}"
    assert ds.PatientID == rows[0]["patient_id"]
    assert ds.AccessionNumber and ds.StationName and ds.Manufacturer and ds.ReferringPhysicianName
    assert "Phantom" in ds.InstitutionName
    assert ds.SeriesDescription.startswith("EUS stomach")
    region = ds.SequenceOfUltrasoundRegions[0]
    assert region.RegionSpatialFormat == 1 and region.PhysicalUnitsXDirection == 3


def test_seg_masks_and_pixel_size_recover_the_lesion_size(cohort: Path, rows: list[dict[str, str]]) -> None:
    for r in rows:
        img = pydicom.dcmread(cohort / r["image_path"], stop_before_pixels=True)
        region = img.SequenceOfUltrasoundRegions[0]
        assert region.PhysicalDeltaX == pytest.approx(region.PhysicalDeltaY)
        mm_per_px = float(region.PhysicalDeltaX) * 10.0
        seg = hd.seg.segread(cohort / r["seg_path"])
        if int(getattr(img, "NumberOfFrames", 1)) > 1:
            mask = seg.get_pixels_by_source_frame(
                source_sop_instance_uid=r["sop_uid"], source_frame_numbers=[int(r["frame"]) + 1]
            )[0, :, :, 0]
        else:
            mask = seg.get_pixels_by_source_instance(source_sop_instance_uids=[r["sop_uid"]])[0, :, :, 0]
        assert seg.SegmentSequence[0].SegmentLabel == "Lesion"
        ys, xs = np.nonzero(mask)
        extent_mm = (max(np.ptp(xs), np.ptp(ys)) + 1) * mm_per_px
        size = float(r["size_mm"])
        # Off-centre cut planes show 85-100 % of the long axis; lobulation adds up to ~15 %.
        assert 0.7 * size <= extent_mm <= 1.3 * size, (r["sop_uid"], extent_mm, size)


def test_plan_header_fields_equal_what_the_dicom_header_says(cohort: Path, rows: list[dict[str, str]]) -> None:
    from models.baselines import header_fields_from_dataset
    from phantom import plan_cohort

    plans = {p.patient_id: p for p in plan_cohort(PATIENTS, 0)}
    for pid, plan in plans.items():
        sops = list(dict.fromkeys(r["image_path"] for r in rows if r["patient_id"] == pid))
        read = [header_fields_from_dataset(pydicom.dcmread(cohort / s, stop_before_pixels=True)) for s in sops]
        planned = plan.header_fields()
        assert len(read) == len(planned)
        for got, want in zip(read, planned):
            assert got.keys() == want.keys()
            for k, v in want.items():  # pixel size goes through the calibration reader's rounding
                assert got[k] == (pytest.approx(v, rel=1e-6) if isinstance(v, float) else v), k
        assert {r["device"] for r in rows if r["patient_id"] == pid} == {plan.device.model}


def _info() -> StudyInfo:
    return StudyInfo(
        patient_name="PHANTOM^T0001", patient_id="T0001", birth_date="19600101", sex="F", age="064Y",
        study_uid=phantom_uid("t", "study"), study_date="20240102", study_time="101500", accession="ACC1",
        study_id="1", referring="REFERRER^PHANTOM", operator="ENDOSCOPIST^PHANTOM",
        institution="Phantom General Hospital", station="EUS01", manufacturer="eusdx phantom", model="PHANTOM-EUS",
        serial="PH1", software="test",
    )


@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda e: f"{e.transfer_syntax.name}-{e.photometric}")
@pytest.mark.parametrize("n_frames", [1, 3])
def test_every_encoding_round_trips(encoding: Encoding, n_frames: int) -> None:
    spec = LesionSpec("GIST", 18.0, "muscularis_propria", "heterogeneous", True, True, False, heterogeneity_db=6.0)
    rng = np.random.default_rng(0)
    frames = render_cine(rng, spec, n_frames) if n_frames > 1 else [render_image(rng, spec)]
    ds, encoded = image_dataset(
        _info(), frames, encoding=encoding, sop_uid=phantom_uid("t", n_frames), series_uid=phantom_uid("t", "s"),
        series_number=1, instance_number=1, acquisition_time="101501",
    )
    expected = np.stack([to_display_array(f, encoding.photometric) for f in frames])
    assert np.array_equal(encoded.reshape(expected.shape), expected)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    back = pydicom.dcmread(io.BytesIO(buf.getvalue()))
    assert back.file_meta.TransferSyntaxUID == encoding.transfer_syntax
    assert back.PhotometricInterpretation == encoding.photometric
    decoded = back.pixel_array.reshape(expected.shape)  # pydicom converts YBR to RGB
    if encoding.transfer_syntax == JPEGBaseline8Bit:
        assert back.LossyImageCompression == "01"
        err = np.abs(decoded.astype(int) - expected.astype(int))
        assert err.mean() < 2.0
        assert np.percentile(err, 99) < 20
    else:
        assert encoding.transfer_syntax in (ExplicitVRLittleEndian, RLELossless)
        assert np.array_equal(decoded, expected)
    # The grey content survives: colour channels of colour images hold the same B-mode image.
    if encoding.samples == 3:
        grey = np.stack([f.pixels for f in frames])
        assert np.abs(decoded[..., 0].astype(int) - grey).mean() < 2.0


def _tree(root: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        yield path.relative_to(root).as_posix(), path.read_bytes()


def test_same_seed_same_bytes_different_seed_differs(tmp_path: Path) -> None:
    a = dict(_tree(generate_cohort(tmp_path / "a", 2, seed=5).parent))
    b = dict(_tree(generate_cohort(tmp_path / "b", 2, seed=5).parent))
    c = dict(_tree(generate_cohort(tmp_path / "c", 2, seed=6).parent))
    assert a == b
    assert a["manifest.csv"] != c["manifest.csv"]
    assert set(a) & set(c) == {"manifest.csv"}  # no UID shared between seeds


def test_no_label_or_lesion_id_in_dicom(cohort: Path, rows: list[dict[str, str]]) -> None:
    words = {"gist", "leiomyoma", "stromal"} | {r["lesion_id"].lower() for r in rows}
    pattern = re.compile("|".join(re.escape(w) for w in words).encode(), re.IGNORECASE)
    for path in _files(cohort):
        raw = path.read_bytes()
        ds = pydicom.dcmread(path)
        raw = raw.replace(ds.PixelData, b"")  # compressed pixels may hold any byte sequence
        assert pattern.search(raw) is None, path.name
        assert ds.PatientName and ds.PatientID  # the rest of the header was kept for the search


def test_external_centre_is_marked(tmp_path: Path) -> None:
    manifest = generate_cohort(tmp_path / "ext", 1, seed=0, centre="site-B")
    with manifest.open(newline="", encoding="utf-8") as fh:
        ext = list(csv.DictReader(fh))
    assert {r["centre"] for r in ext} == {"site-B"}
    ds = pydicom.dcmread(manifest.parent / ext[0]["image_path"], stop_before_pixels=True)
    assert ds.PatientID.startswith("SITEBP")
    assert "site-B" in ds.InstitutionName


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patients": 0}, "patients must be >= 1"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"difficulty": 1.2}, "difficulty must be in"),
        ({"gist_fraction": -0.1}, "gist_fraction must be in"),
        ({"centre": "no spaces"}, "centre must be"),
    ],
)
def test_generate_cohort_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"patients": 1, "seed": 0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        generate_cohort(tmp_path, args.pop("patients"), args.pop("seed"), **args)  # type: ignore[arg-type]
