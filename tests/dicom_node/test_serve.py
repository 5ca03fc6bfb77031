"""``eusdx serve`` as a real subprocess: durability under SIGKILL, graceful SIGTERM, HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pydicom
import pytest

from tests.conftest import TEST_AUDIT_SECRET, free_port
from tests.dicom_node import scu
from tests.dicom_node.dicomfiles import dataset_bytes, encode, us_instance
from tests.dicom_node.peers import wait_listening

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]

EUSDX = str(Path(sys.executable).with_name("eusdx"))


def start_serve(var: Path, **env_extra: str) -> tuple[subprocess.Popen[str], int, int]:
    dicom_port, http_port = free_port(), free_port()
    env = dict(os.environ)
    env.update({
        "EUSDX_SPOOL_DIR": str(var / "spool"), "EUSDX_DATABASE_URL": f"sqlite:///{var}/audit.db",
        "EUSDX_QUEUE_DIR": str(var / "queue"), "EUSDX_DICOM_HOST": "127.0.0.1",
        "EUSDX_DICOM_PORT": str(dicom_port), "EUSDX_HTTP_PORT": str(http_port),
        "EUSDX_STUDY_QUIET_SECONDS": "600", "EUSDX_AUDIT_HMAC_SECRET": TEST_AUDIT_SECRET,
        "EUSDX_AUDIT_ANCHOR_SYSLOG": "", **env_extra,
    })
    proc = subprocess.Popen([EUSDX, "serve", "--no-worker"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_listening(dicom_port, timeout=60)
        wait_listening(http_port, timeout=30)
    except TimeoutError:
        proc.kill()
        raise AssertionError(proc.stderr.read() if proc.stderr else "serve did not start")
    return proc, dicom_port, http_port


def test_sigkill_right_after_success_leaves_instance_readable(tmp_var):
    proc, port, _ = start_serve(tmp_var)
    ds = us_instance(rows=256)
    try:
        assert scu.send(port, ds) == [0]
    finally:
        proc.kill()  # SIGKILL: no cleanup, no flush beyond what was done before Success
        proc.wait(timeout=10)
    path = tmp_var / "spool" / str(ds.StudyInstanceUID) / f"{ds.SOPInstanceUID}.dcm"
    back = pydicom.dcmread(path)
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert dataset_bytes(path) == encode(ds)
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{tmp_var}/audit.db")
    with engine.connect() as conn:
        assert list(conn.execute(sa.text("select status, sop_uid from instances"))) == [
            ("stored", str(ds.SOPInstanceUID))]
    engine.dispose()


def test_health_metrics_and_graceful_sigterm(tmp_var):
    proc, port, http_port = start_serve(tmp_var)
    try:
        assert scu.send(port, us_instance(), us_instance()) == [0, 0]
        health = httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.json()["open_studies"] == 2
        metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=10).text
        assert 'eusdx_instances_received_total{status="stored"} 2.0' in metrics
        assert "eusdx_store_seconds_bucket" in metrics
        assert 'eusdx_associations_total{outcome="accepted"} 1.0' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("no exit after SIGTERM: " + proc.communicate()[1][-3000:])
    log = proc.stderr.read() if proc.stderr else ""
    assert rc == 0, log[-3000:]
    assert "DICOM node stopped" in log
    assert "PHANTOM-1" not in log and "Phantom^Test" not in log  # no patient identifiers
    # the shutdown anchored the audit chain head outside the database (audit.anchor)
    anchors = sorted((tmp_var / "anchors").glob("anchor-*.json"))
    assert anchors and json.loads(anchors[-1].read_text())["reason"] == "shutdown"


def test_sigterm_lets_the_inflight_association_finish(tmp_var, tmp_path):
    """SIGTERM while a 60 MB cine is on the wire: the listener stops accepting, the running
    association completes with Success, then the process exits 0."""
    from tests.conftest import require_tool

    cine = us_instance(rows=480)
    cine.Columns = 640
    cine.NumberOfFrames = 65
    cine.SOPClassUID = cine.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    cine.PixelData = bytes(range(256)) * (480 * 640 * 3 * 65 // 256)
    path = tmp_path / "cine.dcm"
    cine.save_as(path, enforce_file_format=True)
    proc, port, http_port = start_serve(tmp_var)
    sender = subprocess.Popen([require_tool("/usr/bin/storescu"), "-aec", "EUSDX", "127.0.0.1",
                               str(port), str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=5).text
            if "eusdx_associations_active 1.0" in m:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        assert sender.wait(timeout=60) == 0, sender.stderr.read() if sender.stderr else ""
        assert proc.wait(timeout=60) == 0
    finally:
        for p in (sender, proc):
            if p.poll() is None:
                p.kill()
    stored = tmp_var / "spool" / str(cine.StudyInstanceUID) / f"{cine.SOPInstanceUID}.dcm"
    assert dataset_bytes(stored) == encode(cine)
