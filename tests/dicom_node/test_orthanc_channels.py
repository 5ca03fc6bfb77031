"""Result channels against a real Orthanc started here (DICOMweb plugin): Orthanc sends a study
to eusdx over STOW-RS, takes the SR back over STOW-RS into the same study and over C-STORE with
Storage Commitment; an Orthanc outage loses nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from pydicom.uid import generate_uid

from dicom_node import export
from dicom_node.export import ExportRunner
from tests.conftest import free_port
from tests.dicom_node.conftest import rows
from tests.dicom_node.dicomfiles import us_instance
from tests.dicom_node.httpnode import SENDER_TOKEN, HttpServing, tokens
from tests.dicom_node.orthanc import Orthanc
from tests.dicom_node.peers import wait_for
from tests.dicom_node.test_export import make_sr

pytestmark = pytest.mark.orthanc

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


def _destinations(orthanc: Orthanc, commit_timeout: float = 20.0) -> list[dict]:
    return [{"name": "orthanc-stow", "kind": "stowrs", "address": orthanc.dicomweb,
             "timeout_seconds": 5},
            {"name": "orthanc-commit", "kind": "cstore-commit", "address": orthanc.address,
             "commit_timeout_seconds": commit_timeout, "timeout_seconds": 5}]


def _states(settings, item) -> dict[str, str]:
    record = export.outbox_for(settings).get(item)
    return {name: d["state"] for name, d in record["destinations"].items()}


@pytest.fixture
def orthanc_and_node(tmp_path, make_settings, start_node):
    """A node (DICOM + STOW-RS over HTTP) and an Orthanc that knows it both as DICOM modality
    (for N-EVENT-REPORT) and as DICOMweb server (for its STOW-RS sender)."""
    port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", modalities={"eusdx": ["EUSDX", "127.0.0.1", port]})
    settings = make_settings(dicom_port=port, api_tokens=tokens(),
                             destinations=_destinations(orthanc), export_backoff_seconds=0.2,
                             export_backoff_max_seconds=0.5)
    node, audit, enq = start_node(settings)
    serving = HttpServing(node)
    orthanc.dicomweb_servers = {"eusdx": {"Url": f"{serving.url}/dicom-web/",
                                          "HttpHeaders": {"Authorization": f"Bearer {SENDER_TOKEN}"}}}
    orthanc.start()
    try:
        yield orthanc, node, audit, enq, settings
    finally:
        orthanc.stop()
        serving.stop()


def test_study_in_by_stow_from_orthanc_result_back_by_stow_and_committed_c_store(
        orthanc_and_node, tmp_path):
    orthanc, node, audit, enq, settings = orthanc_and_node
    study = generate_uid()
    for i in range(3):
        path = tmp_path / f"us{i}.dcm"
        us_instance(study_uid=study, pixel_value=i).save_as(path, enforce_file_format=True)
        orthanc.upload(path)
    orthanc_study = orthanc.rest("POST", "/tools/lookup", data=study)[0]["ID"]
    orthanc.rest("POST", "/dicom-web/servers/eusdx/stow",
                 json={"Resources": [orthanc_study], "Synchronous": True})
    assert len(list(Path(settings.spool_dir).rglob("*.dcm"))) == 3
    wait_for(lambda: enq.studies == [study])
    sr = make_sr(study)
    item = export.submit(settings, sr, study, audit=audit)
    wait_for(lambda: set(_states(settings, item).values()) == {"committed"}, timeout=60)
    held = orthanc.sop_classes(study)
    assert held[str(sr.SOPInstanceUID)] == COMPREHENSIVE_SR  # same study, next to the images
    assert len(held) == 4
    statuses = {tuple(r) for r in rows(audit, "select destination, status from exports")}
    assert ("orthanc-stow", "committed") in statuses and ("orthanc-commit", "committed") in statuses


def test_orthanc_outage_loses_nothing(tmp_path, make_settings, audit_for, start_node):
    port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", modalities={"eusdx": ["EUSDX", "127.0.0.1", port]})
    settings = make_settings(dicom_port=port, destinations=_destinations(orthanc, 5.0),
                             export_backoff_seconds=0.2, export_backoff_max_seconds=0.5,
                             export_max_attempts=100)
    start_node(settings, export=False)  # the listener takes the N-EVENT-REPORTs
    audit = audit_for(settings)
    study = generate_uid()
    srs = [make_sr(study) for _ in range(3)]
    items = [export.submit(settings, sr, study, audit=audit) for sr in srs]
    runner = ExportRunner(settings, audit)
    runner.run_once()  # Orthanc is down: nothing delivered, everything kept
    assert all(set(_states(settings, i).values()) == {"pending"} for i in items)
    with orthanc:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not all(
                set(_states(settings, i).values()) == {"committed"} for i in items):
            runner.run_once()
            time.sleep(0.2)
        held = orthanc.sop_classes(study)
    assert all(set(_states(settings, i).values()) == {"committed"} for i in items)
    assert set(held) == {str(sr.SOPInstanceUID) for sr in srs}


def test_stow_refusal_by_orthanc_keeps_the_per_instance_reason(tmp_path):
    from dicomweb_client.api import DICOMwebClient

    from dicom_node.channels.stowrs import refusal_of

    with Orthanc(tmp_path / "orthanc") as orthanc:
        client = DICOMwebClient(orthanc.dicomweb)
        client.set_http_retry_params(retry=False)
        sr = make_sr(generate_uid())
        # posted under another study's URL: Orthanc refuses the instance (409, Failed SOP Sequence)
        with pytest.raises(requests.HTTPError) as http_error:
            client.store_instances([sr], study_instance_uid=generate_uid())
        err = refusal_of("STOW-RS at orthanc", http_error.value.response)
    assert err.permanent
    assert str(err).startswith("STOW-RS at orthanc answered HTTP 409")
    assert f"instance {sr.SOPInstanceUID}: Failure Reason 0x0110" in str(err)
