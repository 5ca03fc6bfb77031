"""A phantom study through the node and its result plus amendment through the HL7 channel, then the
audit trail of it all as ATNA messages to a syslog-over-TLS receiver started here (issue 19)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from audit.atna.sender import AtnaConfig, AtnaSender
from dicom_node import export
from dicom_node.export import ExportRunner
from tests.audit.test_atna import TlsSyslogReceiver, _event, _make_ca, _types, parse_syslog
from tests.dicom_node import scu
from tests.dicom_node.conftest import rows
from tests.dicom_node.mllp import MllpListener
from tests.dicom_node.test_channels import settings_with  # noqa: F401 (fixture)
from tests.dicom_node.test_hl7 import phantom_sr, ris, source, with_orders  # noqa: F401
from tests.worker._helpers import us_image


def test_phantom_result_and_amendment_arrive_as_valid_atna_messages(
        settings_with, start_node, source: Dataset, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "pki").mkdir()
    pki = _make_ca(tmp_path / "pki")
    receiver = TlsSyslogReceiver(pki).start()
    with MllpListener() as listener:
        settings = settings_with(
            ris(listener.address), allowed_aes=["PYSCU"],
            atna_repository=f"tls://127.0.0.1:{receiver.port}", atna_tls_ca=pki["ca"],
            atna_tls_cert=pki["client_cert"], atna_tls_key=pki["client_key"])
        node, audit, _ = start_node(settings)
        sop_uid = str(source.SOPInstanceUID)  # phantom_sr's shallow copies change it later
        assert scu.send(node.port, source) == [0]
        with pytest.raises(Exception):  # noqa: B017 - the refused association surfaces variously
            scu.send(node.port, us_image(), aet="INTRUDER")
        study = str(source.StudyInstanceUID)
        first = with_orders(phantom_sr(source, [0.9, 0.8], "2026.11.01-aaaa1111"))
        export.submit(settings, first, study, audit=audit)
        ExportRunner(settings, audit).run_once()
        amended = with_orders(phantom_sr(source, [0.3, 0.2], "2026.11.20-bbbb2222"))
        export.submit(settings, amended, study, audit=audit, amends=str(first.SOPInstanceUID))
        deadline = time.monotonic() + 30  # the node runs its own export runner too
        while len(listener.messages) < 2 and time.monotonic() < deadline:
            ExportRunner(settings, audit).run_once()
            time.sleep(0.1)
        assert len(listener.messages) == 2

    sent_rows = "select count(*) from exports where destination = 'ris' and status = 'sent'"
    while rows(audit, sent_rows)[0][0] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the ACK arrived; its audit row follows
    config = AtnaConfig.from_settings(settings)
    assert config is not None
    sender = AtnaSender(audit.engine, config)
    _, sent = sender.run_once()
    raw = receiver.wait_for(sent)
    receiver.stop()
    sender.stop(flush=False)
    assert b"PHANTOM-7" not in b"".join(raw)  # the patient ID never leaves in clear
    roots = [parse_syslog(m) for m in raw]  # every message schema-valid
    received = [r for r in roots if _event(r) == ("110104", "C", "0")]
    assert [i.get("UID") for r in received for i in r.iter("Instance")] == [sop_uid]
    alert = [r for r in roots if _event(r)[0] == "110113"]
    assert len(alert) == 1 and _types(alert[0]) == ["110126"]
    results = [r for r in roots if r.find("ActiveParticipant[@UserID='ris']") is not None]
    assert [_event(r) for r in results] == [("110104", "R", "0")] * 2  # result, then amendment
    for r in results:
        ris_ = r.find("ActiveParticipant[@UserID='ris']")
        assert ris_.get("NetworkAccessPointID") == listener.address
        assert ris_.get("NetworkAccessPointTypeCode") == "5"
        assert ris_.find("RoleIDCode").get("csd-code") == "110152"
        study_obj = r.find("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='3']")
        assert study_obj.get("ParticipantObjectID") == study
        assert study_obj.find("Accession").get("Number") == "ACC-42"
        patient = r.find("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='1']")
        assert patient.get("ParticipantObjectID") == audit.pseudonym("PHANTOM-7")
    assert len(roots) == sent == 4
