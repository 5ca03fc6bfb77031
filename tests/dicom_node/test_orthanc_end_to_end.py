"""The issue's "done when": a phantom study sent over STOW-RS into eusdx (by Orthanc's DICOMweb
sender) comes back as an SR over STOW-RS into the same Orthanc study, and over C-STORE with Storage
Commitment as ``committed``. Real analysis (embedded worker, the session's tiny phantom bundle).

Run with ``-s`` to see the timings; they are phantom figures, not a clinical claim.
"""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
import pytest

from audit import AuditLog
from dicom_node import export
from eusdx.config import load_settings
from tests.conftest import TEST_AUDIT_SECRET, bundle_public_key, free_port
from tests.dicom_node.conftest import rows
from tests.dicom_node.httpnode import SENDER_TOKEN, HttpServing, tokens
from tests.dicom_node.orthanc import Orthanc
from tests.dicom_node.peers import wait_for
from tests.worker.conftest import cohort_studies

pytestmark = [pytest.mark.slow, pytest.mark.orthanc]

SR_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.33",
              "1.2.840.10008.5.1.4.1.1.88.34"}


def test_phantom_study_in_by_stow_sr_back_by_stow_and_committed_c_store(
        tmp_var: Path, tmp_path: Path, tiny_bundle: Path, phantom_cohort: Path) -> None:
    from dicom_node.app import Node
    from worker.embedded import start_embedded

    port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", modalities={"eusdx": ["EUSDX", "127.0.0.1", port]})
    settings = load_settings(
        ae_title="EUSDX", dicom_host="127.0.0.1", dicom_port=port,
        spool_dir=tmp_var / "spool", queue_dir=tmp_var / "queue", outbox_dir=tmp_var / "outbox",
        database_url=f"sqlite:///{tmp_var / 'audit.db'}", bundle=tiny_bundle, device="cpu",
        bundle_trusted_keys=[str(bundle_public_key(tiny_bundle))], audit_hmac_secret=TEST_AUDIT_SECRET,
        study_quiet_seconds=1.0, export_backoff_seconds=0.5, api_tokens=tokens(),
        destinations=[
            {"name": "orthanc-stow", "kind": "stowrs", "address": orthanc.dicomweb},
            {"name": "orthanc-commit", "kind": "cstore-commit", "address": orthanc.address,
             "commit_timeout_seconds": 30}],
        log_format="text")
    audit = AuditLog.from_settings(settings)
    audit.ensure_schema()
    service = start_embedded(settings)
    node = Node(settings, audit, service.enqueuer)
    node.start()
    serving = HttpServing(node)
    orthanc.dicomweb_servers = {"eusdx": {"Url": f"{serving.url}/dicom-web/",
                                          "HttpHeaders": {"Authorization": f"Bearer {SENDER_TOKEN}"}}}
    orthanc.start()
    try:
        study = cohort_studies(phantom_cohort)[0]
        files = sorted((phantom_cohort / "studies" / study).glob("*.dcm"))
        for path in files:
            orthanc.upload(path)
        orthanc_study = orthanc.rest("POST", "/tools/lookup", data=study)[0]["ID"]
        t0 = time.monotonic()
        orthanc.rest("POST", "/dicom-web/servers/eusdx/stow",
                     json={"Resources": [orthanc_study], "Synchronous": True})
        t_in = time.monotonic() - t0
        assert len(list((Path(settings.spool_dir) / study).glob("*.dcm"))) == len(files)

        def sr_at_orthanc() -> str | None:
            found = [uid for uid, cls in orthanc.sop_classes(study).items() if cls in SR_CLASSES]
            return found[0] if found else None

        wait_for(lambda: sr_at_orthanc() is not None, timeout=300)
        t_stow = time.monotonic() - t0
        sr_uid = sr_at_orthanc()
        item = export.outbox_for(settings).ids()[0]

        def states() -> dict[str, str]:
            record = export.outbox_for(settings).get(item)
            return {n: d["state"] for n, d in record["destinations"].items()}

        wait_for(lambda: states() == {"orthanc-stow": "committed",
                                      "orthanc-commit": "committed"}, timeout=120)
        t_commit = time.monotonic() - t0
        sr = pydicom.dcmread(export.outbox_for(settings).object_path(item))
        assert str(sr.SOPInstanceUID) == sr_uid and str(sr.StudyInstanceUID) == study
        held = orthanc.instances_of_study(study)
        assert len(held) == len(files) + 1  # the images, their SEGs and our SR, in one study
        exports = rows(audit, "select destination, status, attempt from exports order by seq")
        print(f"\nphantom study {study}: {len(files)} instances in by STOW-RS from Orthanc in "
              f"{t_in:.2f} s; SR at Orthanc over STOW-RS after {t_stow:.1f} s; both destinations "
              f"'committed' after {t_commit:.1f} s; export rows {exports}")
        assert ("orthanc-stow", "committed", 1) in exports
        assert ("orthanc-commit", "committed", 1) in exports
    finally:
        orthanc.stop()
        serving.stop()
        node.stop()
        service.stop()
        audit.close()
