"""``eusdx serve`` as a real subprocess: durability under SIGKILL, graceful SIGTERM, HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pydicom
import pytest

from tests.conftest import free_port
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
        "EUSDX_STUDY_QUIET_SECONDS": "600", **env_extra,
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
        rc = proc.wait(timeout=30)
    assert rc == 0
    log = proc.stderr.read() if proc.stderr else ""
    assert "DICOM node stopped" in log
    assert "PHANTOM-1" not in log and "Phantom^Test" not in log  # no patient identifiers
