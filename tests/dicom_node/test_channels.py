"""Result channels against real peers started here: permanent refusals go to dead-letter at once
with a reason naming what was refused, transient ones are retried; SR class per destination;
Storage Commitment; webhooks."""

from __future__ import annotations

import json
import time

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_node import export
from dicom_node.channels.events import notify
from dicom_node.channels.sr_class import blockers, convert
from dicom_node.export import ExportRunner
from eusdx.failures import DeliveryError
from tests.conftest import free_port
from tests.dicom_node.conftest import rows
from tests.dicom_node.httpnode import WebhookReceiver
from tests.dicom_node.peers import wait_for
from tests.dicom_node.scps import BASIC_TEXT_SR, COMPREHENSIVE_SR, ENHANCED_SR, Consumer
from tests.dicom_node.test_export import make_sr


def sr_with_lesion(study: str, probability: float) -> Dataset:
    """A Comprehensive SR whose content tree holds a lesion-level result (the shape eusdx writes)."""
    ds = make_sr(study)
    ds.AccessionNumber = "ACC-7"
    ds.PatientName = "Phantom^Secret"
    ds.PatientID = "PID-SECRET"

    def code(value: str, scheme: str, meaning: str) -> Dataset:
        c = Dataset()
        c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
        return c

    level = Dataset()
    level.ValueType = "CODE"
    level.ConceptNameCodeSequence = [code("EUSDX-0007", "99EUSDX", "Analysis result level")]
    level.ConceptCodeSequence = [code("EUSDX-0009", "99EUSDX", "Lesion-level result")]
    prob = Dataset()
    prob.ValueType = "NUM"
    prob.ConceptNameCodeSequence = [code("122157", "DCM", "Probability")]
    mv = Dataset()
    mv.NumericValue = f"{probability:.3f}"
    mv.MeasurementUnitsCodeSequence = [code("1", "UCUM", "no units")]
    prob.MeasuredValueSequence = [mv]
    finding = Dataset()
    finding.ValueType = "CODE"
    finding.ConceptNameCodeSequence = [code("121071", "DCM", "Finding")]
    finding.ConceptCodeSequence = [code("EUSDX-0001", "99EUSDX", "Gastrointestinal stromal tumor")]
    group = Dataset()
    group.ValueType = "CONTAINER"
    group.ConceptNameCodeSequence = [code("C0034375", "UMLS", "Qualitative Evaluations")]
    group.ContentSequence = [level, prob, finding]
    ds.ContentSequence = [group]
    return ds


@pytest.fixture
def settings_with(make_settings):
    def make(destinations, **kw):
        kw.setdefault("export_backoff_seconds", 0.1)
        kw.setdefault("export_backoff_max_seconds", 0.2)
        return make_settings(destinations=destinations, **kw)
    return make


def _state(settings, item, name):
    return export.outbox_for(settings).get(item)["destinations"][name]


# --- permanent refusals ------------------------------------------------------------------------


def test_consumer_without_comprehensive_sr_dead_letters_at_once_naming_the_refusal(
        settings_with, audit_for):
    with Consumer([BASIC_TEXT_SR, ENHANCED_SR]) as consumer:
        settings = settings_with([{"name": "viewer", "kind": "cstore",
                                   "address": consumer.address}], export_max_attempts=10)
        audit = audit_for(settings)
        study = generate_uid()
        item = export.submit(settings, make_sr(study), study, audit=audit)
        assert ExportRunner(settings, audit).run_once() == [(item, "viewer", "dead-letter")]
        state = _state(settings, item, "viewer")
        assert state["attempts"] == 1 and state["permanent"] is True
        assert "accepted no presentation context for Comprehensive SR Storage" in state["last_error"]
        assert "abstract syntax not supported" in state["last_error"]
        assert state["last_error"].startswith("delivery: ")
        assert consumer.received == []
    (row,) = rows(audit, "select attempt, error from exports where status = 'dead-letter'")
    assert row[0] == 1 and "Comprehensive SR Storage" in row[1]


def test_same_consumer_gets_enhanced_sr_when_the_destination_asks_for_it(settings_with, audit_for):
    with Consumer([BASIC_TEXT_SR, ENHANCED_SR]) as consumer:
        settings = settings_with([{"name": "viewer", "kind": "cstore",
                                   "address": consumer.address, "sr_class": "enhanced"}])
        audit = audit_for(settings)
        study = generate_uid()
        sr = make_sr(study)
        item = export.submit(settings, sr, study, audit=audit)
        assert ExportRunner(settings, audit).run_once() == [(item, "viewer", "sent")]
        (got,) = consumer.received
        assert got.SOPClassUID == ENHANCED_SR
        # a new SOP instance (another class), derived from ours: the same on every attempt
        assert got.SOPInstanceUID != sr.SOPInstanceUID
        assert got.SOPInstanceUID == convert(sr, "enhanced").SOPInstanceUID
        assert got.StudyInstanceUID == study


@pytest.mark.parametrize("status, outcome", [
    (0xA900, "dead-letter"), (0xC000, "dead-letter"), (0xC123, "dead-letter"),
    (0x0122, "dead-letter"), (0x0124, "dead-letter"), (0x0117, "dead-letter"),
    (0xA700, "pending"), (0xA7FF, "pending"), (0x0213, "pending"),
    (0xB000, "sent"), (0xB007, "sent"), (0x0000, "sent"),
])
def test_store_status_kinds(settings_with, audit_for, status, outcome):
    with Consumer([COMPREHENSIVE_SR], status=status) as consumer:
        settings = settings_with([{"name": "pacs", "kind": "cstore", "address": consumer.address}])
        audit = audit_for(settings)
        study = generate_uid()
        item = export.submit(settings, make_sr(study), study)
        assert ExportRunner(settings, audit).run_once() == [(item, "pacs", outcome)]
        state = _state(settings, item, "pacs")
        if outcome != "sent":
            assert f"status 0x{status:04X}" in state["last_error"]
            assert "Comprehensive SR Storage" in state["last_error"]


def test_association_rejected_permanently_is_dead_letter_and_unreachable_is_retried(
        start_node, settings_with, audit_for):
    node, _, _ = start_node(allowed_aes=["SOMEONE"])  # our AE "EUSDX" is not allowed there
    settings = settings_with([
        {"name": "strict", "kind": "cstore", "address": f"EUSDX@127.0.0.1:{node.port}"},
        {"name": "down", "kind": "cstore", "address": f"PACS@127.0.0.1:{free_port()}",
         "timeout_seconds": 2}])
    audit = audit_for(settings)
    study = generate_uid()
    item = export.submit(settings, make_sr(study), study)
    outcome = dict((d, s) for _, d, s in ExportRunner(settings, audit).run_once())
    assert outcome == {"strict": "dead-letter", "down": "pending"}
    assert "rejected the association (Rejected Permanent, Service User: Calling AE" in _state(
        settings, item, "strict")["last_error"]
    assert "cannot associate" in _state(settings, item, "down")["last_error"]


def test_sr_class_conversion_refuses_content_the_class_cannot_carry():
    ds = make_sr(generate_uid())
    item = Dataset()
    item.ValueType = "SCOORD3D"
    ref = Dataset()
    ref.ValueType = "TEXT"
    ref.ReferencedContentItemIdentifier = [1, 1]
    ds.ContentSequence = [item, ref]
    assert blockers(ds, "comprehensive-3d") == []
    assert blockers(ds, "comprehensive") == ["SCOORD3D content items"]
    assert blockers(ds, "enhanced") == ["SCOORD3D content items", "by-reference relationships"]
    with pytest.raises(DeliveryError, match="Enhanced SR Storage cannot carry") as err:
        convert(ds, "enhanced")
    assert err.value.permanent
    assert convert(ds, "comprehensive-3d").SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
    assert convert(ds, "as-built") is ds


def test_sr_class_conversion_derives_the_new_uid_under_the_installation_root():
    ds = make_sr(generate_uid())
    root = "1.2.826.0.1.3680043.10.999"
    first = convert(ds, "comprehensive-3d", root).SOPInstanceUID
    assert first.startswith(root + ".") and len(first) <= 64
    assert convert(ds, "comprehensive-3d", root).SOPInstanceUID == first  # a retry: the same UID
    assert convert(ds, "comprehensive-3d").SOPInstanceUID.startswith("2.25.")


# --- Storage Commitment ------------------------------------------------------------------------


@pytest.mark.parametrize("answer, final", [("answer", "committed"), ("refuse", "dead-letter")])
def test_commitment_answer_on_a_new_association_decides_the_state(start_node, settings_with,
                                                                  audit_for, answer, final):
    """The archive answers on a new association to our listener (taking the SCP role), as
    Orthanc does: committed when it lists the SR, dead-letter naming the Failure Reason if not."""
    node, _, _ = start_node()
    with Consumer([COMPREHENSIVE_SR], commit=answer,
                  report_to=("EUSDX", "127.0.0.1", node.port)) as archive:
        settings = settings_with([{"name": "archive", "kind": "cstore-commit",
                                   "address": archive.address}],
                                 spool_dir=node.settings.spool_dir)
        audit = audit_for(settings)
        study = generate_uid()
        sr = make_sr(study)
        item = export.submit(settings, sr, study, audit=audit)
        runner = ExportRunner(settings, audit)
        wait_for(lambda: (runner.run_once() or True)
                 and _state(settings, item, "archive")["state"] == final)
        (request,) = archive.commit_requests
        assert request.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == sr.SOPInstanceUID
    statuses = [r[0] for r in rows(audit, "select status from exports order by seq")]
    # "commit-pending" is audited only when the answer came after the association closed
    assert statuses in (["queued", "commit-pending", final], ["queued", final])
    if final == "dead-letter":
        assert "no such object instance (Failure Reason 0x0112)" in _state(
            settings, item, "archive")["last_error"]


def test_commitment_timeout_is_audited_and_retried_then_dead_letter(settings_with, audit_for):
    with Consumer([COMPREHENSIVE_SR], commit="silent") as archive:
        settings = settings_with([{"name": "archive", "kind": "cstore-commit",
                                   "address": archive.address, "commit_timeout_seconds": 0.3}],
                                 export_max_attempts=2)
        audit = audit_for(settings)
        study = generate_uid()
        item = export.submit(settings, make_sr(study), study, audit=audit)
        runner = ExportRunner(settings, audit)
        wait_for(lambda: (runner.run_once() or True)
                 and _state(settings, item, "archive")["state"] == "dead-letter", timeout=30)
        assert len(archive.commit_requests) == 2  # asked again after the first timeout
        assert len(archive.received) == 2
    got = rows(audit, "select status, attempt, error from exports order by seq")
    assert [(s, a) for s, a, _ in got] == [("queued", 0), ("commit-pending", 1), ("failed", 1),
                                           ("commit-pending", 2), ("dead-letter", 2)]
    assert "sent no Storage Commitment answer within 0.3 s" in got[2][2]


# --- webhooks ----------------------------------------------------------------------------------


def test_webhook_result_carries_no_patient_identifiers_beyond_accession(settings_with, audit_for):
    hook = WebhookReceiver()
    try:
        settings = settings_with([{"name": "hook", "kind": "webhook", "address": hook.url,
                                   "bearer_token": "hook-secret"}], gist_priority_threshold=0.7)
        audit = audit_for(settings)
        study = generate_uid()
        item = export.submit(settings, sr_with_lesion(study, 0.91), study)
        assert ExportRunner(settings, audit).run_once() == [(item, "hook", "sent")]
        (message,) = hook.messages
        assert message["event"] == "high-gist" and message["probability"] == pytest.approx(0.91)
        assert message["accession"] == "ACC-7" and message["study_uid"] == study
        assert message["label"] == "Gastrointestinal stromal tumor"
        text = json.dumps(message)
        assert "SECRET" not in text and "patient" not in message
        assert hook.headers[0]["Authorization"] == "Bearer hook-secret"
    finally:
        hook.stop()


def test_webhook_patient_only_when_configured_and_only_subscribed_events(settings_with,
                                                                          audit_for):
    hook = WebhookReceiver()
    try:
        settings = settings_with([
            {"name": "ward", "kind": "webhook", "address": hook.url, "include_patient": True},
            {"name": "urgent", "kind": "webhook", "address": hook.url,
             "events": ["high-gist"]}], gist_priority_threshold=0.7)
        audit = audit_for(settings)
        low, high = generate_uid(), generate_uid()
        low_item = export.submit(settings, sr_with_lesion(low, 0.2), low)
        high_item = export.submit(settings, sr_with_lesion(high, 0.8), high)
        assert set(export.outbox_for(settings).get(low_item)["destinations"]) == {"ward"}
        assert set(export.outbox_for(settings).get(high_item)["destinations"]) == {"ward",
                                                                                    "urgent"}
        ExportRunner(settings, audit).run_once()
        assert len(hook.messages) == 3
        with_patient = [m for m in hook.messages if "patient" in m]
        assert len(with_patient) == 2
        assert with_patient[0]["patient"] == {"name": "Phantom^Secret", "id": "PID-SECRET"}
    finally:
        hook.stop()


@pytest.mark.parametrize("code, outcome", [
    (400, "dead-letter"), (401, "dead-letter"), (403, "dead-letter"), (404, "dead-letter"),
    (410, "dead-letter"), (422, "dead-letter"),
    (408, "pending"), (429, "pending"), (500, "pending"), (503, "pending"),
])
def test_webhook_http_refusal_kinds(settings_with, audit_for, code, outcome):
    hook = WebhookReceiver(answer=lambda m: code)
    try:
        settings = settings_with([{"name": "hook", "kind": "webhook", "address": hook.url}])
        audit = audit_for(settings)
        study = generate_uid()
        item = export.submit(settings, sr_with_lesion(study, 0.5), study)
        assert ExportRunner(settings, audit).run_once() == [(item, "hook", outcome)]
        assert f"HTTP {code}" in _state(settings, item, "hook")["last_error"]
    finally:
        hook.stop()


def test_dead_letter_and_failure_are_announced_to_webhooks(settings_with, audit_for):
    hook = WebhookReceiver()
    try:
        settings = settings_with([
            {"name": "pacs", "kind": "cstore", "address": f"PACS@127.0.0.1:{free_port()}",
             "timeout_seconds": 1},
            {"name": "hook", "kind": "webhook", "address": hook.url,
             "events": ["failure", "dead-letter"]}], export_max_attempts=1)
        audit = audit_for(settings)
        study = generate_uid()
        sr = sr_with_lesion(study, 0.4)
        item = export.submit(settings, sr, study, audit=audit)
        assert set(export.outbox_for(settings).get(item)["destinations"]) == {"pacs"}
        runner = ExportRunner(settings, audit)
        runner.run_once()
        wait_for(lambda: (runner.run_once() or True) and len(hook.messages) == 1)
        (dead,) = hook.messages
        assert dead["event"] == "dead-letter" and dead["destination"] == "pacs"
        assert dead["sr_sop_uid"] == sr.SOPInstanceUID and dead["accession"] == "ACC-7"
        assert "cannot associate" in dead["reason"]
        other = generate_uid()
        assert notify(settings, "failure", other, reason="input: no decodable frame",
                      accession="ACC-9", audit=audit) is not None
        runner.run_once()
        assert hook.messages[-1]["event"] == "failure"
        assert hook.messages[-1]["reason"] == "input: no decodable frame"
    finally:
        hook.stop()


def test_webhook_receiver_outage_loses_nothing(settings_with, audit_for):
    hook = WebhookReceiver()
    url = hook.url
    hook.stop()  # down
    settings = settings_with([{"name": "hook", "kind": "webhook", "address": url,
                               "timeout_seconds": 1}])
    audit = audit_for(settings)
    study = generate_uid()
    item = export.submit(settings, sr_with_lesion(study, 0.3), study)
    runner = ExportRunner(settings, audit)
    assert runner.run_once() == [(item, "hook", "pending")]
    back = WebhookReceiver(port=int(url.split(":")[2].split("/")[0]))
    try:
        wait_for(lambda: (runner.run_once() or True)
                 and _state(settings, item, "hook")["state"] == "sent")
        assert len(back.messages) == 1
    finally:
        back.stop()


@pytest.fixture(scope="module")
def server_cert(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (subjectAltName IP), its own CA."""
    import subprocess

    from tests.conftest import require_tool

    d = tmp_path_factory.mktemp("https")
    subprocess.run([require_tool("/usr/bin/openssl"), "req", "-x509", "-newkey", "rsa:2048",
                    "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   cwd=d, check=True, capture_output=True, timeout=60)
    return d / "cert.pem", d / "key.pem"


def test_https_certificates_are_checked_and_basic_auth_sent(settings_with, audit_for,
                                                            server_cert):
    import base64

    hook = WebhookReceiver(tls=server_cert)
    try:
        settings = settings_with([
            {"name": "pinned", "kind": "webhook", "address": hook.url,
             "tls_ca": str(server_cert[0]), "username": "eusdx", "password": "pw"},
            {"name": "unknown-ca", "kind": "webhook", "address": hook.url}])
        audit = audit_for(settings)
        study = generate_uid()
        item = export.submit(settings, sr_with_lesion(study, 0.5), study)
        outcome = {d: s for _, d, s in ExportRunner(settings, audit).run_once()}
        assert outcome == {"pinned": "sent", "unknown-ca": "pending"}
        assert "TLS check failed" in _state(settings, item, "unknown-ca")["last_error"]
        assert hook.headers[0]["Authorization"] == "Basic " + base64.b64encode(
            b"eusdx:pw").decode()
    finally:
        hook.stop()


def test_a_destination_removed_from_the_configuration_is_kept_not_attempted(settings_with,
                                                                             audit_for,
                                                                             make_settings):
    with Consumer([COMPREHENSIVE_SR]) as consumer:
        before = settings_with([{"name": "old", "kind": "cstore", "address": consumer.address}])
        study = generate_uid()
        item = export.submit(before, make_sr(study), study)
        after = make_settings(spool_dir=before.spool_dir, database_url=before.database_url)
        audit = audit_for(after)
        assert ExportRunner(after, audit).run_once() == [(item, "old", "pending")]
        state = _state(after, item, "old")
        assert state["attempts"] == 0 and consumer.received == []
        assert state["last_error"] == "destination is no longer configured"
        assert ExportRunner(before, audit, clock=lambda: time.time() + 10_000).run_once() == [
            (item, "old", "sent")]
