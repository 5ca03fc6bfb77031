"""Header quirks never cost a finished analysis: property tests over generated source headers.

A fixed analysis result (one image, one outline, P(GIST) = 0.87) goes with a generated quirky source header
through the header normalisation and the SR builder; the SR must be built, read back with the same answer,
carry only conformant copied values, and pass dciodvfy without errors. The quirks are the kinds archives
send: legacy dotted/colon dates and times, ISO 8601 forms, impossible dates, person names with too many
components or groups, over-long identifiers and descriptions, control characters and value separators,
several values where one is allowed, non-ASCII text in several encodings, and SpecificCharacterSet values
that are misspelt, multi-valued with ISO 2022 code extensions, or start with an empty value.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import subprocess
import tempfile
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import config as pydicom_config
from pydicom.dataelem import DataElement

from tests.worker._helpers import SHA, FakeResult, us_image
from tests.conftest import require_tool
from worker.sr.builder import AlgorithmInfo, AnalysedImage, StudyResult, build_report
from worker.sr.header import normalise_da, normalise_dt, normalise_header, normalise_tm
from worker.sr.reader import summarize_report

POLYGON = [(100.0, 100.0), (200.0, 110.0), (180.0, 220.0), (90.0, 200.0)]
ALGORITHM = AlgorithmInfo(name="combined-svm (tests)", version="2026.11.30-quirks", sha256=SHA, synthetic=True,
                          threshold=0.5)
_TM_OUT = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")

# --- generators of header values -----------------------------------------------------------------
_dates = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2099, 12, 31))
_times = st.times()
_junk = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=90)
_ascii_junk = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=90)


def _da_forms(d: dt.date) -> list[str]:
    return [d.strftime("%Y%m%d"), d.strftime("%Y.%m.%d"), d.strftime("%Y-%m-%d"), d.strftime("%Y/%m/%d"),
            d.strftime("%Y%m%d") + " "]


def _tm_forms(t: dt.time) -> list[str]:
    return [t.strftime("%H%M%S"), t.strftime("%H:%M:%S"), t.strftime("%H:%M"), t.strftime("%H%M%S.%f"),
            t.strftime("%H:%M:%S.%f")[:-3], t.strftime("%H")]


date_values = st.one_of(
    _dates.flatmap(lambda d: st.sampled_from(_da_forms(d))),
    st.sampled_from(["20230231", "2023.13.01", "00000000", "2023", "20230101-20231231", "unknown", ""]),
    _ascii_junk,
)
time_values = st.one_of(
    _times.flatmap(lambda t: st.sampled_from(_tm_forms(t))),
    st.sampled_from(["25:00:00", "12:61", "126060", "16:03:46 PM", "1603461234567", ""]),
    _ascii_junk,
)
name_values = st.one_of(
    st.sampled_from(["Doe^John", "Doe^John^Q^Dr^Jr^Extra^More", "Yamada^Tarou=山田^太郎=やまだ^たろう",
                     "Müller^Jürgen", "A" * 80 + "^" + "B" * 10, "x=y=z=w", "Doe\\Smith", "Doe^John\x00"]),
    _junk,
)
id_values = st.one_of(st.sampled_from(["12345", "ID\\2", "A" * 70, "ABC\x07", " 42 "]), _junk)
charsets = st.sampled_from([
    None, "ISO_IR 100", "ISO_IR 192", "ISO_IR 6", "GB18030", "ISO_IR 13", "ISO_IR100", "UTF-8", "latin1",
    ["", "ISO 2022 IR 87"], ["ISO 2022 IR 6", "ISO 2022 IR 87"], ["", "ISO 2022 IR 149"],
    ["ISO 2022 IR 100", "ISO 2022 IR 100"], ["", ""], "",
])
sex_values = st.one_of(st.sampled_from(["M", "F", "O", "m", "female", "X", ""]), _ascii_junk)


def _encode(text: str) -> bytes:
    """Bytes as a quirky sender might write them: UTF-8, or Latin-1 where it fits."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


@st.composite
def quirky_sources(draw: st.DrawFn) -> pydicom.Dataset:
    """The pydicom-data ultrasound header with generated quirky values, written and read back as bytes."""
    ds = us_image()
    del ds.PixelData  # the header is what the SR reads; pixels do not matter here
    values = {
        ("StudyDate", "DA"): draw(date_values), ("PatientBirthDate", "DA"): draw(date_values),
        ("StudyTime", "TM"): draw(time_values),
        ("PatientName", "PN"): draw(name_values), ("ReferringPhysicianName", "PN"): draw(name_values),
        ("PatientID", "LO"): draw(id_values), ("AccessionNumber", "SH"): draw(id_values),
        ("StudyID", "SH"): draw(id_values), ("IssuerOfPatientID", "LO"): draw(id_values),
        ("StudyDescription", "LO"): draw(_junk), ("PatientSex", "CS"): draw(sex_values),
    }
    for (keyword, vr), text in values.items():
        ds.add(DataElement(keyword, vr, _encode(text)))
    charset = draw(charsets)
    if charset is None:
        ds.pop("SpecificCharacterSet", None)
    else:
        ds.add(DataElement("SpecificCharacterSet", "CS", charset))
    buffer = io.BytesIO()
    with pydicom_config.disable_value_validation():
        ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def _study(source: pydicom.Dataset) -> StudyResult:
    image = AnalysedImage(source, FakeResult(str(source.SOPInstanceUID), 0.87, "GIST", POLYGON))
    return StudyResult(str(source.StudyInstanceUID), [image], 0.87, "GIST", ALGORITHM)


def _conformant(sr: pydicom.Dataset) -> None:
    date = sr.get("StudyDate") or ""
    assert date == "" or normalise_da(str(date)) == str(date)
    time = str(sr.get("StudyTime") or "")
    assert time == "" or _TM_OUT.match(time)
    for keyword, limit in (("PatientID", 64), ("StudyDescription", 64), ("AccessionNumber", 16), ("StudyID", 16)):
        value = str(sr.get(keyword) or "")
        assert len(value.encode()) <= limit and not re.search(r"[\x00-\x1f\\]", value), keyword
    for keyword in ("PatientName", "ReferringPhysicianName"):
        for group in str(sr.get(keyword) or "").split("="):
            assert len(group.encode()) <= 64 and group.count("^") <= 4, keyword
    assert sr.get("SpecificCharacterSet") in (None, "ISO_IR 192")


@pytest.mark.slow  # 200 SRs built by highdicom and checked by dciodvfy: about a second each
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=quirky_sources())
def test_no_header_quirk_loses_the_analysis_and_every_sr_is_valid(source: pydicom.Dataset) -> None:
    tool = require_tool("/usr/bin/dciodvfy")
    header = normalise_header(source)
    notes = " ".join(c.as_text() for c in header.changes)
    for keyword in ("PatientName", "PatientID", "StudyDate", "StudyTime", "AccessionNumber", "StudyDescription"):
        raw = str(source.get(keyword, "") or "").strip()
        assert len(raw) < 6 or raw not in notes, f"the audit note repeats the value of {keyword}"
    sr = build_report(_study(source))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sr.dcm"
        sr.save_as(path, enforce_file_format=True)
        back = pydicom.dcmread(path)
        out = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
    assert errors == []
    summary = summarize_report(back)
    assert (summary.label, summary.probability) == ("GIST", pytest.approx(0.87))
    _conformant(back)


@given(d=_dates)
def test_legacy_and_standard_dates_become_the_standard_form(d: dt.date) -> None:
    for form in _da_forms(d):
        assert normalise_da(form) == d.strftime("%Y%m%d")


@given(t=_times)
def test_legacy_and_standard_times_become_the_standard_form(t: dt.time) -> None:
    assert normalise_tm(t.strftime("%H:%M:%S")) == t.strftime("%H%M%S")
    assert normalise_tm(t.strftime("%H:%M:%S.%f")) == t.strftime("%H%M%S.%f")
    assert normalise_tm(t.strftime("%H%M")) == t.strftime("%H%M")


@given(moment=st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2099, 12, 31)))
def test_iso_and_dotted_datetimes_become_dt(moment: dt.datetime) -> None:
    canonical = moment.strftime("%Y%m%d%H%M%S")
    assert normalise_dt(moment.strftime("%Y-%m-%dT%H:%M:%S")) == canonical
    assert normalise_dt(moment.strftime("%Y.%m.%d %H:%M:%S")) == canonical
    assert normalise_dt(canonical + "+0100") == canonical + "+0100"


@given(text=_junk)
def test_any_text_gives_a_conformant_value_or_none(text: str) -> None:
    da, tm, dtv = normalise_da(text), normalise_tm(text), normalise_dt(text)
    assert da is None or re.fullmatch(r"\d{8}", da)
    assert tm is None or _TM_OUT.match(tm)
    assert dtv is None or re.fullmatch(r"\d{4,14}(\.\d{1,6})?([+-]\d{4})?", dtv)


def test_dotted_study_date_and_colon_time_are_normalised_and_noted() -> None:
    src = us_image()
    src.add(DataElement("StudyDate", "DA", b"2023.01.18"))
    src.add(DataElement("StudyTime", "TM", b"16:03:46"))
    src.add(DataElement("PatientID", "LO", b"P" * 70))
    header = normalise_header(src)
    assert (header.dataset.StudyDate, header.dataset.StudyTime) == ("20230118", "160346")
    assert header.dataset.PatientID in (None, "")  # an identifier is never cut
    notes = [c.as_text() for c in header.changes]
    assert any(n.startswith("StudyDate normalised: rewritten in the YYYYMMDD form") for n in notes)
    assert any(n.startswith("StudyTime normalised") for n in notes)
    assert any(n.startswith("PatientID left out") for n in notes)
    assert not any("2023" in n or "16:03" in n or "PPPP" in n for n in notes)  # no values in the audit
    sr = build_report(_study(src))
    assert (sr.StudyDate, sr.StudyTime) == ("20230118", "160346")


def test_secondary_capture_copies_the_normalised_values(tmp_path: Path) -> None:
    from tests.worker._helpers import dciodvfy_errors
    from worker.sr.builder import report_uids
    from worker.sr.secondary_capture import build_secondary_capture

    src = us_image()
    src.add(DataElement("StudyDate", "DA", b"2023.01.18"))
    src.add(DataElement("StudyTime", "TM", b"16:03:46"))
    src.add(DataElement("SpecificCharacterSet", "CS", "ISO_IR100"))
    src.add(DataElement("PatientName", "PN", "Müller^Jürgen".encode("latin-1")))
    sc = build_secondary_capture(src, src.pixel_array, POLYGON, probability=0.87, label="GIST", algorithm=ALGORITHM,
                                 uids=report_uids(src.StudyInstanceUID, ALGORITHM.version))
    path = tmp_path / "sc.dcm"
    sc.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    back = pydicom.dcmread(path)
    assert (back.StudyDate, back.StudyTime, back.SpecificCharacterSet) == ("20230118", "160346", "ISO_IR 192")
    assert str(back.PatientName) == "Müller^Jürgen"
