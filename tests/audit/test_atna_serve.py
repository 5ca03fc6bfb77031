"""``eusdx serve`` with an ATNA audit repository: a real subprocess, a syslog-over-TLS receiver
started by the test, C-STOREs from an allowed and a refused AE."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.audit.test_atna import TlsSyslogReceiver, _make_ca, _event, _types, parse_syslog
from tests.dicom_node import scu
from tests.dicom_node.dicomfiles import us_instance
from tests.dicom_node.test_serve import start_serve

pytestmark = [pytest.mark.slow]


def test_serve_sends_its_audit_trail_to_the_repository(tmp_var: Path, tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    pki = _make_ca(tmp_path / "pki")
    receiver = TlsSyslogReceiver(pki).start()
    proc, port, _ = start_serve(
        tmp_var, EUSDX_ATNA_REPOSITORY=f"tls://127.0.0.1:{receiver.port}",
        EUSDX_ATNA_TLS_CA=str(pki["ca"]), EUSDX_ATNA_TLS_CERT=str(pki["client_cert"]),
        EUSDX_ATNA_TLS_KEY=str(pki["client_key"]), EUSDX_ATNA_INTERVAL_SECONDS="0.2",
        EUSDX_ALLOWED_AES="PYSCU")
    try:
        first, second = us_instance(), us_instance()
        assert scu.send(port, first, second) == [0, 0]
        with pytest.raises(Exception):  # noqa: B017 - pynetdicom's refusal surfaces variously
            scu.send(port, us_instance(), aet="INTRUDER")
        got = [parse_syslog(m) for m in receiver.wait_for(4, timeout=30)]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0
    roots = [parse_syslog(m) for m in receiver.wait_for(5, timeout=10)]
    receiver.stop()
    assert len(got) >= 4
    events = [(_event(r), _types(r)) for r in roots]
    assert events[0] == (("110100", "E", "0"), ["110120"])  # Application Start
    assert events[-1] == (("110100", "E", "0"), ["110121"])  # Application Stop, sent at shutdown
    transferred = [r for r in roots if _event(r) == ("110104", "C", "0")]
    assert sorted(i.get("UID") for r in transferred for i in r.iter("Instance")) == sorted(
        [str(first.SOPInstanceUID), str(second.SOPInstanceUID)])
    alert = [r for r in roots if _event(r)[0] == "110113"]
    assert len(alert) == 1 and alert[0].find(
        "ActiveParticipant[@UserIsRequestor='true']").get("AlternativeUserID") == "AETITLES=INTRUDER"
    # the patient appears only as its pseudonym
    patient = transferred[0].find(
        "ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='1']")
    assert patient is not None and patient.get("ParticipantObjectID") != str(first.PatientID)
    assert str(first.PatientID).encode() not in b"".join(receiver.messages)
    assert len(roots) == 5
