"""The TID 1500 SR and the Secondary Capture: structure, codes, UIDs, and validation by dciodvfy/dsrdump."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dicom_codes
from pydicom.sr.coding import Code
from pydicom.uid import UltrasoundMultiFrameImageStorage, generate_uid

from eusdx.uids import derived_uid
from tests.worker._helpers import SHA, FakeResult, dciodvfy_errors, dsrdump, us_image
from worker.sr import codes
from eusdx.failures import FailureClass, classify
from worker.sr.builder import (
    UID_ROOT,
    AlgorithmInfo,
    AnalysedImage,
    ReportKind,
    ResultError,
    SrSopClass,
    StudyResult,
    build_no_analysis_report,
    build_report,
    key_image_index,
    report_uids,
)
from worker.sr.header import SourceHeaderError
from worker.sr.secondary_capture import build_secondary_capture

POLYGON = [(100.0, 100.0), (200.0, 110.0), (180.0, 220.0), (90.0, 200.0)]


def _algorithm(synthetic: bool = True, version: str = "2026.11.26-ab12cd34") -> AlgorithmInfo:
    return AlgorithmInfo(
        name="combined-svm (deit_tiny_patch16_224 + radiomics)",
        version=version,
        sha256=SHA,
        synthetic=synthetic,
        threshold=0.5,
    )


def _second_instance(ds: Dataset) -> Dataset:
    other = copy.deepcopy(ds)
    other.SOPInstanceUID = generate_uid()
    return other


def _study(
    sources: list[Dataset], probs: list[float], *, synthetic: bool = True, roi_source: str = "automatic"
) -> StudyResult:
    images = [
        AnalysedImage(
            source=ds,
            result=FakeResult(ds.SOPInstanceUID, p, "GIST" if p >= 0.5 else "leiomyoma", POLYGON, roi_source),
        )
        for ds, p in zip(sources, probs)
    ]
    mean = float(np.mean(probs))
    return StudyResult(
        study_uid=sources[0].StudyInstanceUID,
        images=images,
        probability=mean,
        label="GIST" if mean >= 0.5 else "leiomyoma",
        algorithm=_algorithm(synthetic),
        notes=["1 frame skipped: no B-mode sector (Doppler or screenshot)"],
    )


def _walk(items: pydicom.Sequence) -> list[Dataset]:
    found = []
    for item in items:
        found.append(item)
        if "ContentSequence" in item:
            found.extend(_walk(item.ContentSequence))
    return found


def _named(sr: Dataset, code: Code) -> list[Dataset]:
    return [
        item
        for item in _walk(sr.ContentSequence)
        if "ConceptNameCodeSequence" in item
        and item.ConceptNameCodeSequence[0].CodeValue == code.value
        and item.ConceptNameCodeSequence[0].CodingSchemeDesignator == code.scheme_designator
    ]


def _save(ds: Dataset, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path


def test_report_validates_with_dciodvfy_and_dsrdump(tmp_path: Path) -> None:
    src = us_image()
    sr = build_report(_study([src, _second_instance(src)], [0.9, 0.7]))
    path = _save(sr, tmp_path, "sr.dcm")
    assert dciodvfy_errors(path) == []
    tree = dsrdump(path)
    assert "Comprehensive SR Document" in tree
    assert '"Imaging Measurement Report"' in tree
    assert "(EUSDX-0001,99EUSDX,\"Gastrointestinal stromal tumor\")" in tree
    assert "(69695003,SCT,\"Stomach\")" in tree
    assert "SCOORD:(,,\"Image Region\")=(POLYLINE" in tree


def test_report_is_in_source_study_with_patient_copied_and_flags(tmp_path: Path) -> None:
    src = us_image()
    sr = build_report(_study([src], [0.8]))
    assert sr.StudyInstanceUID == src.StudyInstanceUID
    assert sr.SeriesInstanceUID != src.SeriesInstanceUID
    assert sr.PatientID == src.PatientID and sr.PatientName == src.PatientName
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert sr.VerificationFlag == "UNVERIFIED"
    assert sr.PreliminaryFlag == "PRELIMINARY"
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == src.StudyInstanceUID
    refs = [i.ReferencedSOPInstanceUID for s in evidence.ReferencedSeriesSequence for i in s.ReferencedSOPSequence]
    assert refs == [src.SOPInstanceUID]
    scheme = sr.CodingSchemeIdentificationSequence[0]
    assert scheme.CodingSchemeDesignator == "99EUSDX"


def test_probabilities_labels_and_roi_are_in_the_tree() -> None:
    src = us_image()
    other = _second_instance(src)
    sr = build_report(_study([src, other], [0.9, 0.3], roi_source="SEG"))
    nums = _named(sr, codes.PROBABILITY)
    values = sorted(float(n.MeasuredValueSequence[0].NumericValue) for n in nums)
    # image 2 (0.3) is the key image (its 0.3 lies nearest the mean 0.6 in floating point): the lesion
    # group sits on it, image 1 has its own group
    assert key_image_index(_study([src, other], [0.9, 0.3])) == 1
    assert values == pytest.approx(sorted([60.0, 90.0]))  # P(GIST) in percent: the lesion, image 1
    assert {n.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue for n in nums} == {"%"}
    findings = [
        i.ConceptCodeSequence[0].CodeValue for i in _named(sr, codes.FINDING) if "ConceptCodeSequence" in i
    ]
    assert findings.count(codes.GIST.value) == 2  # the lesion and image 1
    assert findings.count(codes.LEIOMYOMA.value) == 0  # image 2's label is in its NUM on the lesion group
    image_nums = [i.ConceptNameCodeSequence[0].CodeMeaning for i in _walk(sr.ContentSequence)
                  if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeValue in ("EUSDX-0013", "EUSDX-0014")]
    assert sorted(image_nums) == ["Image: GIST, probability of GIST", "Image: leiomyoma, probability of GIST"]
    regions = _named(sr, dicom_codes.DCM.ImageRegion)
    assert len(regions) == 2  # the lesion on its key image, and the other image
    data = np.asarray(regions[0].GraphicData, dtype=float).reshape(-1, 2)
    assert data[0].tolist() == data[-1].tolist()  # closed polygon
    assert data[:-1].tolist() == [list(p) for p in POLYGON]
    referenced = {r.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID for r in regions}
    assert referenced == {src.SOPInstanceUID, other.SOPInstanceUID}
    sources = {i.ConceptCodeSequence[0].CodeValue for i in _named(sr, codes.ROI_SOURCE)}
    assert sources == {codes.ROI_FROM_SEG.value}
    algo = [i.TextValue for i in _named(sr, dicom_codes.DCM.AlgorithmParameters)]
    assert f"sha256={SHA}" in algo


@pytest.mark.parametrize("synthetic", [True, False])
def test_notice_always_and_not_for_clinical_use_only_when_synthetic(synthetic: bool) -> None:
    sr = build_report(_study([us_image()], [0.8], synthetic=synthetic))
    texts = [i.TextValue for i in _named(sr, codes.NOTICE)]
    assert any("not a diagnosis" in t for t in texts)
    assert any("NOT FOR CLINICAL USE" in t for t in texts) is synthetic
    assert any("skipped" in t for t in texts)


def test_uids_are_deterministic_in_study_and_bundle_version() -> None:
    src = us_image()
    first = build_report(_study([src], [0.8]))
    again = build_report(_study([src], [0.8]))
    assert first.SOPInstanceUID == again.SOPInstanceUID
    assert first.SeriesInstanceUID == again.SeriesInstanceUID
    expected = derived_uid(UID_ROOT, src.StudyInstanceUID, "2026.11.26-ab12cd34", "", "result",
                           "comprehensive", "sr")
    assert first.SOPInstanceUID == expected
    other_version = report_uids(src.StudyInstanceUID, "2026.11.27-ffffffff")
    assert other_version.sr_sop != first.SOPInstanceUID


def test_uids_differ_per_kind_sop_class_and_revision() -> None:
    study, version = "1.2.826.0.1.3680043.8.498.1", "v1"
    combos = [(kind, sop, rev) for kind in ReportKind for sop in SrSopClass for rev in ("", "rev-2")]
    sops = {report_uids(study, version, k, c, r).sr_sop for k, c, r in combos}
    series = {report_uids(study, version, k, c, r).sr_series for k, c, r in combos}
    assert len(sops) == len(combos) and len(series) == len(combos)
    assert report_uids(study, version, "no-lesion", "comprehensive-3d", "rev-2") == report_uids(
        study, version, ReportKind.NO_LESION, SrSopClass.COMPREHENSIVE_3D, "rev-2")
    with pytest.raises(ValueError, match="is not a valid ReportKind"):
        report_uids(study, version, "maybe")


def _groups(sr: Dataset) -> list[Dataset]:
    [measurements] = _named(sr, dicom_codes.DCM.ImagingMeasurements)
    return list(measurements.ContentSequence)


@pytest.mark.parametrize("sop_class", list(SrSopClass))
def test_every_group_has_its_outline_and_a_readable_first_num(sop_class: SrSopClass, tmp_path: Path) -> None:
    """What OHIF 3.x reads: a SCOORD in every measurement group, labels from NUM concept meanings + unit."""
    src = us_image()
    sr = build_report(_study([src, _second_instance(src), _second_instance(src)], [0.91, 0.74, 0.6]),
                      sop_class=sop_class)
    assert sr.SOPClassUID == sop_class.uid
    groups = _groups(sr)
    assert len(groups) == 3  # the lesion on the key image (image 2: 0.74 is nearest the mean 0.75), images 1, 3
    for group in groups:
        items = list(group.ContentSequence)
        scoords = [i for i in items if i.ValueType == "SCOORD"]
        assert len(scoords) == 1 and scoords[0].ContentSequence[0].ReferencedSOPSequence
        assert any(i.ValueType == "UIDREF" for i in items)  # Tracking Unique Identifier
    labels = []
    for group in groups:
        for num in [i for i in group.ContentSequence if i.ValueType == "NUM"][:2]:
            mv = num.MeasuredValueSequence[0]
            labels.append(f"{num.ConceptNameCodeSequence[0].CodeMeaning}: {float(mv.NumericValue):.2f} "
                          f"{mv.MeasurementUnitsCodeSequence[0].CodeValue}")
    assert labels == ["Lesion: GIST, probability of GIST: 75.00 %", "Image: GIST, probability of GIST: 74.00 %",
                      "Image: GIST, probability of GIST: 91.00 %", "Probability: 91.00 %",
                      "Image: GIST, probability of GIST: 60.00 %", "Probability: 60.00 %"]
    path = _save(sr, tmp_path, "sr.dcm")
    assert dciodvfy_errors(path) == []
    dsrdump(path)


def test_lesion_group_outlines_the_key_image_and_leiomyoma_reads_as_such() -> None:
    src, other, third = us_image(), _second_instance(us_image()), _second_instance(us_image())
    result = _study([src, other, third], [0.05, 0.1, 0.3])  # mean 0.15: leiomyoma; image 2 is closest
    assert key_image_index(result) == 1
    sr = build_report(result)
    lesion = _groups(sr)[0]
    region = next(i for i in lesion.ContentSequence if i.ValueType == "SCOORD")
    assert region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == other.SOPInstanceUID
    first = next(i for i in lesion.ContentSequence if i.ValueType == "NUM")
    assert first.ConceptNameCodeSequence[0].CodeMeaning == "Lesion: leiomyoma, probability of GIST"
    assert float(first.MeasuredValueSequence[0].NumericValue) == pytest.approx(15.0)


def test_air_contributing_equipment_matches_observer_and_algorithm(tmp_path: Path) -> None:
    src = us_image()
    sr = build_report(_study([src], [0.8]))
    [item] = [e for e in sr.ContributingEquipmentSequence
              if e.PurposeOfReferenceCodeSequence[0].CodingSchemeDesignator == "99IHE"]
    purpose = item.PurposeOfReferenceCodeSequence[0]
    assert (purpose.CodeValue, purpose.CodeMeaning) == ("Newcode1", "Processing Algorithm")
    algo = _algorithm()
    assert item.Manufacturer == "eusdx"
    assert item.ManufacturerModelName == algo.name
    assert item.SoftwareVersions == algo.version
    [observer_uid] = [i.UID for i in _named(sr, dicom_codes.DCM.DeviceObserverUID)]
    assert item.DeviceUID == observer_uid == algo.device_uid
    assert {i.TextValue for i in _named(sr, dicom_codes.DCM.AlgorithmVersion)} == {algo.version}
    assert {i.TextValue for i in _named(sr, dicom_codes.DCM.AlgorithmName)} == {algo.name}
    schemes = {s.CodingSchemeDesignator for s in sr.CodingSchemeIdentificationSequence}
    assert {"99EUSDX", "99IHE"} <= schemes
    # a new bundle (other content, same version string) is a new device
    other = AlgorithmInfo(name=algo.name, version=algo.version, sha256="f" * 64, synthetic=True, threshold=0.5)
    assert other.device_uid != algo.device_uid
    tracking = [i.UID for i in _named(sr, dicom_codes.DCM.TrackingUniqueIdentifier)]
    assert len(tracking) == len(set(tracking)) == 1  # one image: the lesion group on it


def test_multiframe_source_references_the_frame(tmp_path: Path) -> None:
    src = us_image()
    cine = copy.deepcopy(src)
    cine.SOPClassUID = UltrasoundMultiFrameImageStorage
    cine.file_meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    cine.NumberOfFrames = 2
    cine.FrameIncrementPointer = 0x00181063
    cine.FrameTime = 33.3
    cine.PixelData = src.PixelData * 2
    result = FakeResult("cine#2", 0.7, "GIST", POLYGON)
    study = StudyResult(
        cine.StudyInstanceUID, [AnalysedImage(cine, result, frame_number=2)], 0.7, "GIST", _algorithm()
    )
    sr = build_report(study)
    region = _named(sr, dicom_codes.DCM.ImageRegion)[0]
    assert region.PixelOriginInterpretation == "FRAME"
    assert region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedFrameNumber == 2
    path = _save(sr, tmp_path, "sr.dcm")
    assert dciodvfy_errors(path) == []
    dsrdump(path)
    with pytest.raises(ValueError, match="frame_number is required"):
        build_report(StudyResult(cine.StudyInstanceUID, [AnalysedImage(cine, result)], 0.7, "GIST", _algorithm()))


def test_no_analysis_report_validates(tmp_path: Path) -> None:
    src = us_image()
    sr = build_no_analysis_report(src.StudyInstanceUID, [src], _algorithm(), "no frame with a B-mode sector")
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # the configured class, no coordinates
    path = _save(sr, tmp_path, "none.dcm")
    assert dciodvfy_errors(path) == []
    tree = dsrdump(path)
    assert "(111245,DCM,\"No algorithms succeeded; without findings\")" in tree
    texts = [i.TextValue for i in _named(sr, codes.NOTICE)]
    assert texts[0] == "No analysis was possible: no frame with a B-mode sector"
    assert _named(sr, codes.PROBABILITY) == []
    with pytest.raises(ValueError, match='"reason" must not be empty'):
        build_no_analysis_report(src.StudyInstanceUID, [src], _algorithm(), "  ")
    with pytest.raises(ValueError, match='not "result"'):
        build_no_analysis_report(src.StudyInstanceUID, [src], _algorithm(), "x", kind="result")


@pytest.mark.parametrize("kind", [k for k in ReportKind if k is not ReportKind.RESULT])
@pytest.mark.parametrize("sop_class", list(SrSopClass))
def test_every_no_analysis_kind_validates_with_its_own_uid(
    kind: ReportKind, sop_class: SrSopClass, tmp_path: Path
) -> None:
    src = us_image()
    sr = build_no_analysis_report(src.StudyInstanceUID, [src], _algorithm(), f"reason {kind}", kind=kind,
                                  sop_class=sop_class)
    assert sr.SOPInstanceUID == report_uids(src.StudyInstanceUID, _algorithm().version, kind, sop_class).sr_sop
    assert sr.SOPClassUID == sop_class.uid
    path = _save(sr, tmp_path, "none.dcm")
    assert dciodvfy_errors(path) == []
    assert len(sr.ContributingEquipmentSequence) >= 1


def _one(result: FakeResult, study_uid: str | None = None) -> StudyResult:
    src = us_image()
    return StudyResult(
        study_uid or src.StudyInstanceUID, [AnalysedImage(src, result)], 0.5, "GIST", _algorithm()
    )


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (FakeResult("a", 1.5, "GIST", POLYGON), r"probability of image 'a' must lie in \[0, 1\]"),
        (FakeResult("b", 0.5, "benign", POLYGON), "neither \"GIST\" nor \"leiomyoma\""),
        (FakeResult("c", 0.5, "GIST", POLYGON[:2]), "at least 3"),
        (FakeResult("d", 0.5, "GIST", [(0, 0), (700, 0), (0, 10)]), "outside the 640x480 image"),
        (FakeResult("e", 0.5, "GIST", POLYGON, roi_source="manual"), "neither \"SEG\" nor \"automatic\""),
    ],
)
def test_bad_results_are_rejected_naming_the_problem(result: FakeResult, message: str) -> None:
    with pytest.raises(ResultError, match=message) as info:
        build_report(_one(result))
    assert classify(info.value).failure_class is FailureClass.MODEL


def test_cine_declaring_zero_frames_is_an_input_failure_in_plain_words() -> None:
    src = us_image()
    cine = copy.deepcopy(src)
    cine.SOPClassUID = UltrasoundMultiFrameImageStorage
    cine.NumberOfFrames = 0
    study = StudyResult(cine.StudyInstanceUID, [AnalysedImage(cine, FakeResult("c#1", 0.7, "GIST", POLYGON), 1)],
                        0.7, "GIST", _algorithm())
    with pytest.raises(SourceHeaderError) as info:
        build_report(study)
    failure = classify(info.value)
    assert failure.failure_class is FailureClass.INPUT
    assert failure.as_text() == (
        f"input: the multi-frame image {cine.SOPInstanceUID} declares no valid number of frames, so its "
        "analysed frame 1 cannot be referenced in the report")
    assert "{" not in failure.reason


def test_sources_from_another_study_and_empty_input_are_rejected() -> None:
    with pytest.raises(ValueError, match="belongs to study"):
        build_report(_one(FakeResult("a", 0.5, "GIST", POLYGON), study_uid="1.2.3"))
    with pytest.raises(ValueError, match="no analysed images"):
        build_report(StudyResult("1.2.3", [], 0.5, "GIST", _algorithm()))
    with pytest.raises(TypeError, match='"result" must have type StudyResult'):
        build_report({"study_uid": "1.2.3"})  # type: ignore[arg-type]


def test_algorithm_info_validates() -> None:
    with pytest.raises(ValueError, match="not a SHA-256"):
        AlgorithmInfo(name="m", version="v", sha256="xyz", synthetic=False, threshold=0.5)
    with pytest.raises(ValueError, match="threshold"):
        AlgorithmInfo(name="m", version="v", sha256=SHA, synthetic=False, threshold=2.0)


def test_every_standard_code_is_the_published_one() -> None:
    """No invented SCT/DCM value: every standard code in codes.py matches pydicom's dictionary."""
    published = {}
    for scheme in ("SCT", "DCM", "UCUM"):
        cd = getattr(dicom_codes, scheme)
        for name in dir(cd):
            if name.startswith("_") and not name[1:2].isdigit():
                continue
            try:
                code = getattr(cd, name)
            except AttributeError:
                continue
            if not isinstance(code, Code):
                continue
            published[(scheme, code.value)] = code.meaning
    checked = 0
    for name in codes.__all__:
        value = getattr(codes, name)
        if isinstance(value, Code) and value.scheme_designator in ("SCT", "DCM", "UCUM"):
            assert (value.scheme_designator, value.value) in published, name
            checked += 1
        elif isinstance(value, Code):
            assert value.scheme_designator in ("99EUSDX", "UMLS", "99IHE"), name
    assert checked >= 10
    assert codes.LEIOMYOMA.value == "1162890002"
    assert codes.label_code("gist") == codes.GIST
    with pytest.raises(ValueError, match="neither"):
        codes.label_code("lipoma")


def test_secondary_capture_validates_and_burns_in(tmp_path: Path) -> None:
    src = us_image()
    uids = report_uids(src.StudyInstanceUID, "v1")
    sc = build_secondary_capture(
        src, src.pixel_array, POLYGON, probability=0.81, label="GIST", algorithm=_algorithm(), uids=uids
    )
    path = _save(sc, tmp_path, "sc.dcm")
    assert dciodvfy_errors(path) == []
    back = pydicom.dcmread(path)
    assert back.StudyInstanceUID == src.StudyInstanceUID
    assert back.SOPInstanceUID == uids.sc_sop(1)
    assert back.BurnedInAnnotation == "YES"
    pixels = back.pixel_array
    assert pixels.shape == (480, 640, 3)
    # the outline is drawn in yellow along the polygon's first edge
    assert (pixels[100, 100] == [255, 255, 0]).all()
    assert not np.array_equal(pixels, src.pixel_array)
    with pytest.raises(ValueError, match="probability"):
        build_secondary_capture(
            src, src.pixel_array, POLYGON, probability=-0.1, label="GIST", algorithm=_algorithm(), uids=uids
        )
