"""The SR's Referenced Request Sequence (PS3.3 C.17.2): the order a study answers reaches the SR, and from
the SR the HL7 ORC/OBR order numbers (issue 19: "placer/filler order numbers when the study carries them")."""

from __future__ import annotations

import copy
import re
from pathlib import Path

from hl7apy.parser import parse_message
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_node.channels.hl7_message import build_oru, unescape
from dicom_node.channels.sr_result import read_result
from tests.worker._helpers import FakeResult, dciodvfy_errors, us_image
from worker.sr.builder import AlgorithmInfo, AnalysedImage, StudyResult, build_no_analysis_report, build_report
from worker.sr.header import normalise_header

SHA = "0" * 64
POLYGON = [(100.0, 100.0), (200.0, 110.0), (180.0, 220.0), (90.0, 200.0)]
ALGORITHM = AlgorithmInfo(name="combined-svm", version="v1", sha256=SHA, synthetic=True, threshold=0.5)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _request(placer: str, filler: str, rp_id: str = "RP-7", accession: str | None = None) -> Dataset:
    item = Dataset()
    item.PlacerOrderNumberImagingServiceRequest = placer
    item.FillerOrderNumberImagingServiceRequest = filler
    item.RequestedProcedureID = rp_id
    item.RequestedProcedureDescription = "EUS upper GI"
    item.RequestedProcedureCodeSequence = [_code("EUS01", "99HOSP", "Endoscopic ultrasound, stomach")]
    if accession is not None:
        item.AccessionNumber = accession
    return item


def _result(sources: list[Dataset]) -> StudyResult:
    images = [AnalysedImage(source=ds, result=FakeResult(ds.SOPInstanceUID, 0.8, "GIST", POLYGON))
              for ds in sources]
    return StudyResult(study_uid=sources[0].StudyInstanceUID, images=images, probability=0.8, label="GIST",
                       algorithm=ALGORITHM, notes=[])


def _oru_orders(sr: Dataset) -> tuple[str, str, str, str]:
    msg = parse_message(build_oru(read_result(sr), corrected=False, sending_facility="EUSDX"), find_groups=False)
    orc = next(s for s in msg.children if s.name == "ORC")
    obr = next(s for s in msg.children if s.name == "OBR")
    return (unescape(orc.orc_2.to_er7()), unescape(orc.orc_3.to_er7()),
            unescape(obr.obr_2.to_er7()), unescape(obr.obr_3.to_er7()))


def test_the_order_of_the_images_reaches_the_sr_and_the_oru(tmp_path: Path) -> None:
    source = us_image()
    source.AccessionNumber = "ACC-42"
    source.RequestAttributesSequence = [_request("PL-1001", "FI-2002")]
    second = copy.deepcopy(source)
    second.SOPInstanceUID = generate_uid()
    sr = build_report(_result([source, second]))
    (item,) = sr.ReferencedRequestSequence  # both images answer one request: one item
    assert item.StudyInstanceUID == source.StudyInstanceUID
    assert item.AccessionNumber == "ACC-42"  # from the top level when the request item has none
    assert (item.PlacerOrderNumberImagingServiceRequest, item.FillerOrderNumberImagingServiceRequest) == (
        "PL-1001", "FI-2002")
    assert item.RequestedProcedureID == "RP-7"
    assert item.RequestedProcedureCodeSequence[0].CodeValue == "EUS01"
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    assert _oru_orders(sr) == ("PL-1001", "FI-2002", "PL-1001", "FI-2002")


def test_top_level_order_numbers_and_no_request_at_all(tmp_path: Path) -> None:
    source = us_image()
    source.PlacerOrderNumberImagingServiceRequest = "PL-9"
    sr = build_no_analysis_report(source.StudyInstanceUID, [source], ALGORITHM, "no B-mode sector")
    (item,) = sr.ReferencedRequestSequence
    assert item.PlacerOrderNumberImagingServiceRequest == "PL-9"
    assert item.FillerOrderNumberImagingServiceRequest in ("", None)
    path = tmp_path / "short.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []

    plain = us_image()
    for keyword in ("PlacerOrderNumberImagingServiceRequest", "FillerOrderNumberImagingServiceRequest",
                    "RequestAttributesSequence"):
        if keyword in plain:
            delattr(plain, keyword)
    assert "ReferencedRequestSequence" not in build_report(_result([plain]))


def test_two_requests_in_one_study_give_two_items() -> None:
    source = us_image()
    source.RequestAttributesSequence = [_request("PL-1", "FI-1", "RP-1"), _request("PL-2", "FI-2", "RP-2")]
    sr = build_report(_result([source]))
    assert [i.PlacerOrderNumberImagingServiceRequest for i in sr.ReferencedRequestSequence] == ["PL-1", "PL-2"]


def _clean(text: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f]", " ", text.split("\\")[0]).strip()


_value = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(placer=_value, filler=_value, rp_id=_value, meaning=_value)
def test_any_request_text_gives_a_valid_item_and_never_a_cut_identifier(
        placer: str, filler: str, rp_id: str, meaning: str) -> None:
    """Whatever a modality writes, the SR is built; an identifier is copied whole (cleaned) or left out."""
    source = us_image()
    source.RequestAttributesSequence = [_request(placer, filler, rp_id)]
    source.RequestAttributesSequence[0].RequestedProcedureCodeSequence = [_code("X1", "99HOSP", meaning)]
    header = normalise_header(source)
    (item,) = header.requests
    for keyword, given_value, limit in (("PlacerOrderNumberImagingServiceRequest", placer, 64),
                                        ("FillerOrderNumberImagingServiceRequest", filler, 64),
                                        ("RequestedProcedureID", rp_id, 16)):
        # the spec: a backslash separates values and the first is kept (pydicom, PS3.5 6.4); control
        # characters become spaces, the ends are trimmed; the result is copied whole when it is ASCII
        # within the VR length, else left out (never cut)
        cleaned = _clean(given_value)
        wanted = cleaned if cleaned.isascii() and len(cleaned.encode()) <= limit else ""
        assert (item.get(keyword) or "") == wanted, (keyword, given_value)
    code_items = item.RequestedProcedureCodeSequence
    clean_meaning = _clean(meaning)
    assert len(code_items) == (1 if clean_meaning and clean_meaning.isascii() else 0)
    if code_items:
        assert code_items[0].CodeMeaning == clean_meaning[:64].rstrip()
    build_report(_result([source]))  # never raises for a request value
