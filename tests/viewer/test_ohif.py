"""The SR eusdx sends back opens in a real viewer: OHIF 3.13.2 in headless Chromium shows class and probability.

End to end: a phantom study goes over DICOM (DCMTK storescu) into ``eusdx serve`` (embedded worker, a real
bundle), the SR comes back to a PACS stand-in (DCMTK storescp), and the study plus that SR is opened in the
prebuilt OHIF Viewer (``scripts/install-ohif.sh``, pinned ``@ohif/app``) through its ``dicomjson`` data source.
The test fails on an error boundary or an uncaught exception in the browser console, and checks that the
annotation label naming the class and P(GIST) is drawn. The screenshot is kept under ``test-artifacts/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pydicom
import pytest

from demo.peers import PacsReceiver, send_study, terminate, wait_listening
from tests.conftest import REQUIRE_TOOLS, TEST_AUDIT_SECRET, bundle_trust_env, free_port, require_tool
from tests.viewer.ohif import OHIF_VERSION, ViewerServer, ohif_dist, open_in_chromium, write_index
from tests.worker.conftest import cohort_studies
from worker.sr.reader import summarize_report

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
EUSDX = str(Path(sys.executable).with_name("eusdx"))
SR_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.34"}


def _dist() -> Path:
    dist = ohif_dist()
    if dist is None:
        message = f"OHIF {OHIF_VERSION} is not installed (run scripts/install-ohif.sh)"
        if REQUIRE_TOOLS:
            pytest.fail(message)
        pytest.skip(message)
    return dist


def _received_sr(folder: Path) -> Path | None:
    for path in sorted(folder.iterdir()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - storescp may still be writing it
            continue
        if str(ds.SOPClassUID) in SR_CLASSES:
            return path
    return None


def _serve(var: Path, bundle: Path, pacs: PacsReceiver, sop_class: str) -> tuple[subprocess.Popen[bytes], int]:
    dicom_port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EUSDX_")}
    env.update({
        "EUSDX_DICOM_HOST": "127.0.0.1", "EUSDX_DICOM_PORT": str(dicom_port), "EUSDX_HTTP_PORT": str(http_port),
        "EUSDX_SPOOL_DIR": str(var / "spool"), "EUSDX_QUEUE_DIR": str(var / "queue"),
        "EUSDX_DATABASE_URL": f"sqlite:///{var / 'audit.db'}", "EUSDX_BUNDLE": str(bundle),
        "EUSDX_DEVICE": "cpu", "EUSDX_EXPORT_DESTINATIONS": f"{pacs.ae_title}@127.0.0.1:{pacs.port}",
        "EUSDX_EXPORT_BACKOFF_SECONDS": "1", "EUSDX_STUDY_QUIET_SECONDS": "1", "EUSDX_SR_SOP_CLASS": sop_class,
        "EUSDX_AUDIT_HMAC_SECRET": TEST_AUDIT_SECRET, **bundle_trust_env(bundle),
    })
    var.mkdir(parents=True, exist_ok=True)
    log = (var / "serve.log").open("wb")
    proc = subprocess.Popen([EUSDX, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_listening(dicom_port, timeout=120, proc=proc)
    return proc, dicom_port


@pytest.mark.parametrize("sop_class", ["comprehensive", "comprehensive-3d"])
def test_ohif_shows_class_and_probability_of_the_sr_from_eusdx_serve(
    tmp_path: Path, tiny_bundle: Path, phantom_cohort: Path, sop_class: str
) -> None:
    dist = _dist()
    require_tool("/usr/bin/chromium")
    require_tool("/usr/bin/chromedriver")
    require_tool("/usr/bin/storescu")
    pacs = PacsReceiver(tmp_path / "pacs")
    pacs.start()
    uid = cohort_studies(phantom_cohort)[0]
    study_dir = phantom_cohort / "studies" / uid
    serve, dicom_port = _serve(tmp_path / "var", tiny_bundle, pacs, sop_class)
    try:
        send_study(study_dir, "127.0.0.1", dicom_port, calling_ae="ENDOSCOPE")
        deadline = time.monotonic() + 300
        sr_path = None
        while sr_path is None and time.monotonic() < deadline:
            assert serve.poll() is None, (tmp_path / "var" / "serve.log").read_text()[-4000:]
            sr_path = _received_sr(pacs.out_dir)
            time.sleep(0.5)
        assert sr_path is not None, (tmp_path / "var" / "serve.log").read_text()[-4000:]
    finally:
        terminate([serve])
        pacs.stop()
    sr = pydicom.dcmread(sr_path)
    summary = summarize_report(sr)
    assert summary.label in ("GIST", "leiomyoma") and summary.probability is not None
    expected = f"Lesion: {summary.label}, probability of GIST: {100 * summary.probability:.2f} %"

    data = tmp_path / "viewer-data"
    data.mkdir()
    files = [shutil.copy(sr_path, data / "sr.dcm")]
    for path in sorted(study_dir.glob("*.dcm")):  # the study's images (its SEGs are not what is tested)
        if pydicom.dcmread(path, stop_before_pixels=True).Modality == "US":
            files.append(shutil.copy(path, data / path.name))
    with ViewerServer(dist, data, free_port()) as server:
        write_index([Path(f) for f in files], data, f"{server.base}/eusdx-data")
        query = urllib.parse.urlencode({
            "url": f"{server.base}/eusdx-data/index.json", "StudyInstanceUIDs": uid,
            "initialSeriesInstanceUID": str(sr.SeriesInstanceUID),
        })
        shot = ARTIFACTS / f"ohif-{OHIF_VERSION}-{sop_class}.png"
        page = open_in_chromium(f"{server.base}/viewer/dicomjson?{query}", shot, wait_for="probability of GIST")
    lines = [f"{c['level']} {c['message']}" for c in page.console]
    (ARTIFACTS / f"ohif-{OHIF_VERSION}-{sop_class}-console.txt").write_text("\n".join(lines) + "\n")
    fatal = [line for line in lines if "Error Boundary" in line or "Uncaught" in line]
    assert fatal == [], "\n".join(fatal)
    assert "Something went wrong" not in page.body_text
    assert any(expected in text for text in page.svg_text), (expected, page.svg_text)
    assert shot.is_file() and shot.stat().st_size > 10_000
