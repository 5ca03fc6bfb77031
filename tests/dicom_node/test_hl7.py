"""HL7 v2 ORU^R01 channel against a local MLLP listener started here: a phantom study's result and
its correction arrive and are parsed back field by field with hl7apy; ACK AA/AE/AR, a hung or
absent receiver, a foreign control ID and TLS each end in the state the channel documents."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hl7apy.parser import parse_message
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_node import export
from dicom_node.channels.hl7_message import build_oru, control_id, parse_ack, unescape
from dicom_node.channels.sr_result import SrResult, read_result
from dicom_node.export import ExportRunner
from eusdx.config import Destination
from tests.dicom_node.conftest import rows
from tests.dicom_node.mllp import MllpListener, ack_for
from tests.dicom_node.test_channels import server_cert, settings_with  # noqa: F401 (fixtures)
from tests.worker._helpers import SHA, FakeResult, us_image
from worker.sr import codes
from worker.sr.builder import AlgorithmInfo, AnalysedImage, StudyResult, build_report

POLYGON = [(100.0, 100.0), (200.0, 110.0), (180.0, 220.0), (90.0, 200.0)]
ALGORITHM = "combined-svm (deit_tiny_patch16_224 + radiomics)"


def phantom_sr(source: Dataset, probabilities: list[float], version: str) -> Dataset:
    """The SR the worker writes for a phantom (synthetic) bundle of ``version``."""
    sources = [source]
    for _ in probabilities[1:]:
        other = source.copy()
        other.SOPInstanceUID = generate_uid()
        sources.append(other)
    images = [AnalysedImage(source=ds, result=FakeResult(ds.SOPInstanceUID, p,
                                                          "GIST" if p >= 0.5 else "leiomyoma",
                                                          POLYGON, "automatic"))
              for ds, p in zip(sources, probabilities)]
    mean = float(np.mean(probabilities))
    return build_report(StudyResult(
        study_uid=source.StudyInstanceUID, images=images, probability=mean,
        label="GIST" if mean >= 0.5 else "leiomyoma",
        algorithm=AlgorithmInfo(name=ALGORITHM, version=version, sha256=SHA, synthetic=True,
                                threshold=0.5)))


def with_orders(sr: Dataset, placer: str = "PL-100", filler: str = "FI-200") -> Dataset:
    """The SR of a study whose request carried placer/filler order numbers (PS3.3 C.17.2)."""
    request = Dataset()
    request.AccessionNumber = sr.AccessionNumber
    request.PlacerOrderNumberImagingServiceRequest = placer
    request.FillerOrderNumberImagingServiceRequest = filler
    sr.ReferencedRequestSequence = [request]
    return sr


@pytest.fixture
def source() -> Dataset:
    ds = us_image()
    ds.AccessionNumber = "ACC-42"
    ds.PatientID = "PHANTOM-7"
    ds.PatientName = "Phantom^Seven"
    return ds


def ris(address: str, **kw) -> list[dict]:
    return [{"name": "ris", "kind": "hl7", "address": address, "timeout_seconds": 2,
             "receiving_application": "RIS", "receiving_facility": "HOSP", **kw}]


def _state(settings, item):
    return export.outbox_for(settings).get(item)["destinations"]["ris"]


def _segments(msg, name):
    return [s for s in msg.children if s.name == name]


def _obx(msg) -> dict[str, list]:
    """OBX by OBX-3 identifier: ``[(OBX-2, OBX-5, OBX-6, OBX-11), ...]``."""
    found: dict[str, list] = {}
    for seg in _segments(msg, "OBX"):
        found.setdefault(seg.obx_3.obx_3_1.to_er7(), []).append(
            (seg.obx_2.to_er7(), seg.obx_5.to_er7(), seg.obx_6.to_er7(), seg.obx_11.to_er7()))
    return found


def test_phantom_result_and_its_correction_arrive_field_by_field(settings_with, audit_for,
                                                                 source):
    with MllpListener() as listener:
        settings = settings_with(ris(listener.address))
        audit = audit_for(settings)
        study = source.StudyInstanceUID
        first = with_orders(phantom_sr(source, [0.9, 0.8], "2026.11.01-aaaa1111"))
        item = export.submit(settings, first, study, audit=audit)
        assert ExportRunner(settings, audit).run_once() == [(item, "ris", "sent")]
        amended = with_orders(phantom_sr(source, [0.3, 0.2], "2026.11.20-bbbb2222"))
        assert amended.SOPInstanceUID != first.SOPInstanceUID
        item2 = export.submit(settings, amended, study, audit=audit,
                              amends=str(first.SOPInstanceUID))
        assert ExportRunner(settings, audit).run_once() == [(item2, "ris", "sent")]
        assert len(listener.messages) == 2

    original, correction = (parse_message(m, find_groups=False) for m in listener.messages)
    for msg, sr, status in ((original, first, "F"), (correction, amended, "C")):
        msh = msg.msh
        assert msh.msh_3.to_er7() == "EUSDX" and msh.msh_4.to_er7() == settings.ae_title
        assert (msh.msh_5.to_er7(), msh.msh_6.to_er7()) == ("RIS", "HOSP")
        assert msh.msh_9.to_er7() == "ORU^R01^ORU_R01"
        assert msh.msh_10.to_er7() == control_id(str(sr.SOPInstanceUID))
        assert msh.msh_12.to_er7() == "2.5.1"
        (pid,) = _segments(msg, "PID")
        assert pid.pid_3.to_er7() == "PHANTOM-7" and pid.pid_5.to_er7() == "Phantom^Seven"
        (orc,) = _segments(msg, "ORC")
        assert (orc.orc_1.to_er7(), orc.orc_2.to_er7(), orc.orc_3.to_er7()) == (
            "RE", "PL-100", "FI-200")
        (obr,) = _segments(msg, "OBR")
        assert (obr.obr_2.to_er7(), obr.obr_3.to_er7()) == ("PL-100", "FI-200")
        assert obr.obr_18.to_er7() == "ACC-42"
        assert obr.obr_25.to_er7() == status
        assert obr.obr_4.to_er7() == "126000^Imaging Measurement Report^DCM"
        obx = _obx(msg)
        assert all(row[3] == status for rows_ in obx.values() for row in rows_)
        assert obx["110180"] == [("ST", str(sr.StudyInstanceUID), "", status)]
        assert obx["111001"] == [("ST", ALGORITHM, "", status)]
        assert obx["111003"][0][1] == read_result(sr).algorithm_version
        notices = [unescape(row[1]) for row in obx["EUSDX-0005"]]
        assert any("decision support" in n.lower() for n in notices)
        assert any("not for clinical use" in n.lower() for n in notices), notices
    # the result as the SR codes it: GIST (99EUSDX) first, then SCT Leiomyoma in the correction
    gist, leio = codes.GIST, codes.LEIOMYOMA
    assert _obx(original)["121071"] == [
        ("CWE", f"{gist.value}^{gist.meaning}^{gist.scheme_designator}", "", "F")]
    assert _obx(correction)["121071"] == [
        ("CWE", f"{leio.value}^{leio.meaning}^{leio.scheme_designator}", "", "C")]
    assert _obx(original)["122157"] == [("NM", "85.0", "%^percent^UCUM", "F")]
    assert _obx(correction)["122157"] == [("NM", "25.0", "%^percent^UCUM", "C")]
    assert _obx(original)["111003"][0][1] == "2026.11.01-aaaa1111"
    assert _obx(correction)["111003"][0][1] == "2026.11.20-bbbb2222"

    state = _state(settings, item2)
    assert state["result_status"] == "C" and state["control_id"] == control_id(
        str(amended.SOPInstanceUID))
    assert "corrected result accepted (ACK AA" in state["detail"]
    statuses = rows(audit, "select status from exports where destination = 'ris' order by seq")
    assert [r[0] for r in statuses] == ["queued", "sent", "queued", "sent"]


def test_the_sr_itself_marks_a_correction_by_its_predecessor(settings_with, audit_for, source):
    sr = phantom_sr(source, [0.7], "v2")
    predecessor = Dataset()
    predecessor.StudyInstanceUID = sr.StudyInstanceUID
    sr.PredecessorDocumentsSequence = [predecessor]
    with MllpListener() as listener:
        settings = settings_with(ris(listener.address))
        audit = audit_for(settings)
        item = export.submit(settings, sr, sr.StudyInstanceUID, audit=audit)
        assert ExportRunner(settings, audit).run_once() == [(item, "ris", "sent")]
    (obr,) = _segments(parse_message(listener.messages[0], find_groups=False), "OBR")
    assert obr.obr_25.to_er7() == "C"
    # no order numbers in the study: ORC/OBR-2/3 stay empty, the accession identifies the order
    assert obr.obr_2.to_er7() == "" and obr.obr_3.to_er7() == "" and obr.obr_18.to_er7()


def test_application_error_is_retried_and_then_delivered(settings_with, audit_for, source):
    answers = iter([("AE", "database busy", "try later"), ("AA", "", "")])
    with MllpListener(lambda m: next(answers)) as listener:
        settings = settings_with(ris(listener.address))
        audit = audit_for(settings)
        sr = phantom_sr(source, [0.8], "v1")
        item = export.submit(settings, sr, sr.StudyInstanceUID, audit=audit)
        runner = ExportRunner(settings, audit)
        assert runner.run_once() == [(item, "ris", "pending")]
        state = _state(settings, item)
        assert state["last_error"].startswith("delivery: ")
        assert "application error (ACK AE): database busy; try later" in state["last_error"]
        assert "error 207 Application internal error HL70357" in state["last_error"]
        time.sleep(0.25)  # the back-off (export_backoff_seconds = 0.1)
        assert runner.run_once() == [(item, "ris", "sent")]
        sent = [parse_message(m, find_groups=False).msh.msh_10.to_er7() for m in listener.messages]
        assert sent == [control_id(str(sr.SOPInstanceUID))] * 2  # the same message, sent again
    (row,) = rows(audit, "select attempt, error from exports where status = 'failed'")
    assert row[0] == 1 and "database busy" in row[1]


def test_application_reject_dead_letters_at_once_with_the_ack_text(settings_with, audit_for,
                                                                   source):
    with MllpListener(lambda m: ("AR", "unknown order", "Placer order PL-100 not found")) as lis:
        settings = settings_with(ris(lis.address), export_max_attempts=10)
        audit = audit_for(settings)
        sr = with_orders(phantom_sr(source, [0.8], "v1"))
        item = export.submit(settings, sr, sr.StudyInstanceUID, audit=audit)
        assert ExportRunner(settings, audit).run_once() == [(item, "ris", "dead-letter")]
    state = _state(settings, item)
    assert state["permanent"] is True and state["attempts"] == 1
    assert "rejected the ORU^R01 (ACK AR): unknown order; Placer order PL-100 not found" in (
        state["last_error"])
    (row,) = rows(audit, "select error from exports where status = 'dead-letter'")
    assert "Placer order PL-100 not found" in row[0]


@pytest.mark.parametrize("answer, reason", [
    (("silent", "", ""), "no ACK from"),
    ((None, "", ""), "closed the connection without a whole ACK"),
    (("AA-other", "", ""), "acknowledged control ID 'not-yours'"),
])
def test_hung_closing_or_foreign_ack_is_transient(settings_with, audit_for, source, answer,
                                                 reason):
    with MllpListener(lambda m: answer) as listener:
        settings = settings_with(ris(listener.address, timeout_seconds=0.5))
        audit = audit_for(settings)
        sr = phantom_sr(source, [0.8], "v1")
        item = export.submit(settings, sr, sr.StudyInstanceUID, audit=audit)
        assert ExportRunner(settings, audit).run_once() == [(item, "ris", "pending")]
        assert reason in _state(settings, item)["last_error"]
        assert len(listener.messages) == 1


def test_receiver_outage_loses_nothing(settings_with, audit_for, source):
    listener = MllpListener()
    settings = settings_with(ris(listener.address), export_max_attempts=20)
    audit = audit_for(settings)
    runner = ExportRunner(settings, audit)
    srs = [phantom_sr(source, [p], f"v{i}") for i, p in enumerate((0.9, 0.2, 0.6))]
    items = [export.submit(settings, sr, sr.StudyInstanceUID, audit=audit) for sr in srs]
    for _ in range(3):  # the RIS is down: every attempt fails, nothing is given up
        assert {s for _, _, s in runner.run_once()} <= {"pending"}
        time.sleep(0.25)
    assert all("cannot connect to" in _state(settings, i)["last_error"] for i in items)
    with listener:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
                _state(settings, i)["state"] != "sent" for i in items):
            runner.run_once()
            time.sleep(0.05)
    assert [_state(settings, i)["state"] for i in items] == ["sent"] * 3
    got = sorted(parse_message(m, find_groups=False).msh.msh_10.to_er7()
                 for m in listener.messages)
    assert got == sorted(control_id(str(sr.SOPInstanceUID)) for sr in srs)


def test_mllp_over_tls_checks_the_receiver_certificate(settings_with, audit_for, source,
                                                       server_cert):  # noqa: F811
    cert, key = server_cert
    with MllpListener(tls=(cert, key)) as listener:
        settings = settings_with(ris(listener.address, tls=True, tls_ca=str(cert)) + [
            {"name": "ris-untrusted", "kind": "hl7", "address": listener.address, "tls": True,
             "timeout_seconds": 2}])
        audit = audit_for(settings)
        sr = phantom_sr(source, [0.8], "v1")
        item = export.submit(settings, sr, sr.StudyInstanceUID, audit=audit)
        result = dict(((d, s) for _, d, s in ExportRunner(settings, audit).run_once()))
        assert result == {"ris": "sent", "ris-untrusted": "pending"}
        record = export.outbox_for(settings).get(item)["destinations"]["ris-untrusted"]
        assert "CERTIFICATE_VERIFY_FAILED" in record["last_error"]
        assert len(listener.messages) == 1


def test_hl7_address_must_be_mllp():
    assert Destination(name="r", kind="hl7", address="mllp://ris.example:2575").mllp == (
        "ris.example", 2575)
    for bad in ("http://ris:2575", "mllp://ris", "mllp://ris:0", "ris:2575"):
        with pytest.raises(ValueError, match="mllp://host:port"):
            Destination(name="r", kind="hl7", address=bad)
    with pytest.raises(ValueError):
        Destination(name="r", kind="hl7", address="mllp://r:1", receiving_application="A^B")


_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(accession=_text, placer=_text, notice=_text, name=_text)
def test_any_text_round_trips_through_the_message(accession, placer, notice, name):
    """HL7 delimiters (| ^ & ~ \\) in any field come back as written (HL7 v2.5.1 2.7.4)."""
    result = SrResult(study_uid="1.2.3", sop_uid="1.2.3.4", accession=accession,
                      patient_id=name, patient_name="", placer_order=placer, filler_order="",
                      title=("126000", "DCM", "Imaging Measurement Report"), observed="",
                      finding=("EUSDX-0001", "99EUSDX", notice), probability=0.5, status=None,
                      algorithm_name=name, algorithm_version="v", notices=(notice,))
    msg = parse_message(build_oru(result, corrected=False, sending_facility="EUSDX"),
                        find_groups=False)
    (obr,) = _segments(msg, "OBR")
    (pid,) = _segments(msg, "PID")
    assert unescape(obr.obr_18.to_er7()) == accession.strip()
    assert unescape(obr.obr_2.to_er7()) == placer.strip()
    assert unescape(pid.pid_3.to_er7()) == name.strip()
    obx = _obx(msg)
    assert unescape(obx["EUSDX-0005"][0][1]) == notice.strip()
    assert unescape(obx["121071"][0][1].split("^")[1]) == notice.strip()
    assert unescape(obx["111001"][0][1]) == name.strip()


def test_ack_reader_takes_older_versions_and_enhanced_codes():
    oru = ("MSH|^~\\&|EUSDX|EUSDX|||20260101||ORU^R01^ORU_R01|abc|P|2.5.1\r"
           "PID|1||X||Y\r")
    assert parse_ack(ack_for(oru, "CA")).code == "CA"
    legacy = "MSH|^~\\&|RIS||||20260101||ACK|1|P|2.3\rMSA|AR|abc|bad\rERR|PID^1^3^101\r"
    ack = parse_ack(legacy)
    assert (ack.code, ack.control_id) == ("AR", "abc") and "PID 1 3 101" in ack.text
    with pytest.raises(ValueError):
        parse_ack("HTTP/1.1 400 Bad Request\r\n")


def test_a_study_without_analysis_reports_status_and_reason_but_no_finding(source):
    from worker.sr.builder import build_no_analysis_report

    sr = build_no_analysis_report(
        source.StudyInstanceUID, [source],
        AlgorithmInfo(name=ALGORITHM, version="v1", sha256=SHA, synthetic=True, threshold=0.5),
        "no B-mode sector in any frame")
    msg = parse_message(build_oru(read_result(sr), corrected=False, sending_facility="EUSDX"),
                        find_groups=False)
    obx = _obx(msg)
    assert "121071" not in obx and "122157" not in obx
    status = codes.NONE_SUCCEEDED
    assert obx["EUSDX-0010"] == [
        ("CWE", f"{status.value}^{status.meaning}^{status.scheme_designator}", "", "F")]
    notices = [unescape(row[1]) for row in obx["EUSDX-0005"]]
    assert any("no B-mode sector in any frame" in n for n in notices), notices
