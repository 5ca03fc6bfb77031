"""End to end over the network: DCMTK storescu -> node -> queue -> worker -> SR -> DCMTK storescp (PACS).

Three paths: the embedded default (no broker), Celery with the real Redis, and a Celery pool process
SIGKILLed in the middle of a study (the study comes back once and yields exactly one SR). All use a real
bundle trained once per session (``tiny_bundle``) and check the SR against what that bundle computes
for the same images directly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from sqlalchemy import select

from audit import AuditLog
from audit.schema import AnalysisEvent, ExportEvent, StudyEvent
from eusdx.config import Settings, load_settings
from tests.conftest import bundle_public_key, free_port, require_tool
from tests.worker._helpers import dciodvfy_errors, dsrdump
from tests.worker.conftest import SECRET, cohort_studies
from worker.sr.reader import summarize_report

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]

REPO = Path(__file__).resolve().parents[2]
SR_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.88.22"}


def _wait(predicate: Any, timeout: float, what: str, proc: subprocess.Popen | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode}\n{_log_tail(proc)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{_log_tail(proc)}")
        time.sleep(0.2)


def _log_tail(proc: subprocess.Popen | None) -> str:
    path = getattr(proc, "log_path", None)
    return path.read_text(errors="replace")[-6000:] if path is not None and path.exists() else ""


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """DCMTK storescp acting as the PACS: (AE@host:port, folder of received files)."""
    tool = require_tool("/usr/bin/storescp")
    folder = tmp_path / "pacs"
    folder.mkdir()
    port = free_port()
    proc = subprocess.Popen([tool, "-aet", "PACS", "-od", str(folder), "+xa", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import socket

    def listening() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    try:
        _wait(listening, 20, "storescp to listen", proc)
        yield f"PACS@127.0.0.1:{port}", folder
    finally:
        proc.terminate()
        proc.wait(10)


def _settings(tmp_var: Path, bundle: Path, pacs_dest: str, **extra: Any) -> Settings:
    return load_settings(
        ae_title="EUSDX",
        dicom_host="127.0.0.1",
        dicom_port=free_port(),
        spool_dir=tmp_var / "spool",
        queue_dir=tmp_var / "queue",
        outbox_dir=tmp_var / "outbox",
        database_url=f"sqlite:///{tmp_var / 'audit.db'}",
        audit_hmac_secret=SECRET,
        bundle=bundle,
        bundle_trusted_keys=[str(bundle_public_key(bundle))],
        device="cpu",
        study_quiet_seconds=1.0,
        export_destinations=[pacs_dest],
        export_backoff_seconds=1.0,
        **extra,
    )


def _env(settings: Settings) -> dict[str, str]:
    """The settings as EUSDX_* variables for a worker subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EUSDX_")}
    keys = ("broker_url", "spool_dir", "queue_dir", "outbox_dir", "database_url", "bundle", "device",
            "task_max_deliveries", "log_format")
    for key in keys:
        env[f"EUSDX_{key.upper()}"] = str(getattr(settings, key))
    env["EUSDX_AUDIT_HMAC_SECRET"] = settings.audit_hmac_secret.get_secret_value()
    env["EUSDX_BUNDLE_TRUSTED_KEYS"] = ",".join(settings.bundle_trusted_keys)
    env["EUSDX_EXPORT_DESTINATIONS"] = ",".join(settings.export_destinations)
    env["EUSDX_EXPORT_BACKOFF_SECONDS"] = "1"
    env["EUSDX_LOG_LEVEL"] = "INFO"
    return env


#: storescu option that proposes a file's compressed transfer syntax (uncompressed needs none).
_PROPOSE = {
    "1.2.840.10008.1.2.4.50": "-xy",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": "-xx",  # JPEG Extended
    "1.2.840.10008.1.2.4.70": "-xs",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": "-xt",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": "-xu",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90": "-xv",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": "-xw",  # JPEG 2000
    "1.2.840.10008.1.2.5": "-xr",  # RLE Lossless
}


def send_study(port: int, called_ae: str, folder: Path) -> list[str]:
    """storescu a study's files (one association per transfer syntax, each proposing it exactly).

    Returns the SOP Instance UIDs of the study's images.
    """
    tool = require_tool("/usr/bin/storescu")
    groups: dict[str, list[str]] = {}
    images = []
    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        groups.setdefault(str(ds.file_meta.TransferSyntaxUID), []).append(str(f))
        if ds.Modality == "US":
            images.append(str(ds.SOPInstanceUID))
    for ts, files in sorted(groups.items()):
        option = [_PROPOSE[ts]] if ts in _PROPOSE else []
        out = subprocess.run([tool, "-aet", "ENDOSCOPE", "-aec", called_ae, "-R", *option,
                              "127.0.0.1", str(port), *files], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "E:" not in out.stderr, out.stderr
    return images


def _send(settings: Settings, folder: Path) -> list[str]:
    return send_study(settings.dicom_port, settings.ae_title, folder)


def _received_srs(folder: Path) -> list[Path]:
    found = []
    for path in folder.iterdir():
        if path.is_file():
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:
                continue  # a file storescp is still writing
            if str(ds.SOPClassUID) in SR_CLASSES:
                found.append(path)
    return found


def _lesion_probability(sr: pydicom.Dataset) -> float:
    """The lesion-level P(GIST) as a PACS-side reader gets it."""
    probability = summarize_report(sr).probability
    assert probability is not None, "no lesion-level probability in the SR"
    return probability


def _direct_probability(bundle_path: Path, settings: Settings, study_uid: str) -> tuple[float, set[str]]:
    """What the bundle computes for the study's images when called directly (no worker)."""
    from models.bundle import Frame, load_bundle
    from models.dicom_io import mm_per_pixel_from_dataset
    from worker.frames import load_study

    bundle = load_bundle(bundle_path)
    study = load_study(settings.spool_dir, study_uid, cine_max_frames=settings.cine_max_frames,
                       has_sector=bundle.has_sector)
    frames = [Frame(pixels=f.pixels, seg_mask=f.seg_mask, key=f.key,
                    mm_per_pixel=mm_per_pixel_from_dataset(f.source)) for f in study.frames]
    results = bundle.predict(frames, device="cpu")
    return bundle.lesion_probability(results), {r.key.split("#")[0] for r in results}


def _check_sr(path: Path, settings: Settings, bundle: Path, study_uid: str, sent_images: list[str]) -> None:
    assert dciodvfy_errors(path) == []
    tree = dsrdump(path)
    assert "Imaging Measurement Report" in tree
    sr = pydicom.dcmread(path)
    assert sr.StudyInstanceUID == study_uid
    evidence = {i.ReferencedSOPInstanceUID
                for s in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
                for i in s.ReferencedSOPSequence}
    expected, analysed = _direct_probability(bundle, settings, study_uid)
    assert analysed and analysed <= set(sent_images) and analysed <= evidence
    assert _lesion_probability(sr) == pytest.approx(expected, abs=1e-5)


def _audit_rows(settings: Settings, study_uid: str) -> tuple[list[Any], list[Any], list[Any]]:
    log = AuditLog(settings.database_url, SECRET)
    try:
        with log.engine.connect() as conn:
            states = conn.execute(select(StudyEvent.state, StudyEvent.details)
                                  .where(StudyEvent.study_uid == study_uid).order_by(StudyEvent.seq)).all()
            analyses = conn.execute(select(AnalysisEvent.error, AnalysisEvent.sr_sop_uid)
                                    .where(AnalysisEvent.study_uid == study_uid)).all()
            exports = conn.execute(select(ExportEvent.status)
                                   .where(ExportEvent.study_uid == study_uid)).all()
    finally:
        log.close()
    return list(states), list(analyses), list(exports)


def _study(cohort: Path) -> tuple[str, Path]:
    uid = cohort_studies(cohort)[0]
    return uid, cohort / "studies" / uid


def test_embedded_default_end_to_end(tmp_var: Path, tiny_bundle: Path, phantom_cohort: Path,
                                     pacs: tuple[str, Path]) -> None:
    from dicom_node.app import Node
    from worker.embedded import start_embedded

    dest, received = pacs
    settings = _settings(tmp_var, tiny_bundle, dest)
    audit = AuditLog(settings.database_url, SECRET)
    audit.ensure_schema()
    service = start_embedded(settings)
    node = Node(settings, audit, service.enqueuer)
    node.start()
    try:
        uid, folder = _study(phantom_cohort)
        images = _send(settings, folder)
        [sr_path] = _wait(lambda: _received_srs(received), 240, "the SR at the PACS")
        _check_sr(sr_path, settings, tiny_bundle, uid, images)
        _wait(lambda: audit.study_current_state(uid) == "exported", 60, "the study exported")
    finally:
        node.stop()
        service.stop()
        audit.close()
    states, analyses, exports = _audit_rows(settings, uid)
    assert [s.state for s in states][-3:] == ["analysing", "reported", "exported"]
    assert len(analyses) == 1 and analyses[0].error is None
    assert [e.status for e in exports].count("sent") == 1


def _celery_worker(settings: Settings, tmp_path: Path, *extra: str, script: list[str] | None = None,
                   env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**_env(settings), **(env_extra or {})}
    cmd = script or [str(REPO / ".venv" / "bin" / "eusdx"), "worker"]
    log_path = tmp_path / "worker.log"
    # A file, not a pipe: nobody reads a pipe while the test waits, and a full pipe blocks the worker.
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([*cmd, "--concurrency", "1", "-Q", "analysis,export", *extra], cwd=tmp_path, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.mark.redis
def test_celery_with_redis_end_to_end(tmp_var: Path, tmp_path: Path, tiny_bundle: Path,
                                      phantom_cohort: Path, pacs: tuple[str, Path], redis_url: str) -> None:
    from dicom_node.app import Node
    from dicom_node.enqueue import CeleryEnqueuer

    dest, received = pacs
    settings = _settings(tmp_var, tiny_bundle, dest, broker_url=redis_url)
    audit = AuditLog(settings.database_url, SECRET)
    audit.ensure_schema()
    worker = _celery_worker(settings, tmp_path)
    enqueuer = CeleryEnqueuer(redis_url)
    node = Node(settings, audit, enqueuer, export=False)  # the export queue's worker sends the SR
    node.start()
    try:
        uid, folder = _study(phantom_cohort)
        images = _send(settings, folder)
        [sr_path] = _wait(lambda: _received_srs(received), 300, "the SR at the PACS", worker)
        _check_sr(sr_path, settings, tiny_bundle, uid, images)
        _wait(lambda: audit.study_current_state(uid) == "exported", 60, "the study exported", worker)
        # `eusdx worker reload` reaches the running worker over the broker (pool restart: new pool
        # processes load the bundle again in worker_process_init).
        reload = subprocess.run([str(REPO / ".venv" / "bin" / "eusdx"), "worker", "reload", "--timeout", "10"],
                                env=_env(settings), capture_output=True, text=True, timeout=120)
        assert reload.returncode == 0, reload.stderr
        assert "reload started" in reload.stdout
    finally:
        node.stop()
        enqueuer.close()
        _stop(worker)
        audit.close()
    states, analyses, exports = _audit_rows(settings, uid)
    assert "queued" in [s.state for s in states]
    assert [s.state for s in states][-1] == "exported"
    assert len(analyses) == 1
    assert [e.status for e in exports].count("sent") == 1


@pytest.mark.redis
def test_sigkilled_worker_yields_exactly_one_sr_after_redelivery(
    tmp_var: Path, tmp_path: Path, tiny_bundle: Path, phantom_cohort: Path, pacs: tuple[str, Path],
    redis_url: str,
) -> None:
    from dicom_node.app import Node
    from dicom_node.enqueue import CeleryEnqueuer

    dest, received = pacs
    settings = _settings(tmp_var, tiny_bundle, dest, broker_url=redis_url)
    audit = AuditLog(settings.database_url, SECRET)
    audit.ensure_schema()
    marker = tmp_path / "slow-marker"
    script = [sys.executable, str(Path(__file__).with_name("_slow_worker.py"))]
    worker = _celery_worker(settings, tmp_path, script=script,
                            env_extra={"EUSDX_TEST_SLOW_MARKER": str(marker)})
    enqueuer = CeleryEnqueuer(redis_url)
    node = Node(settings, audit, enqueuer, export=False)
    node.start()
    try:
        uid, folder = _study(phantom_cohort)
        images = _send(settings, folder)
        _wait(marker.exists, 240, "the first delivery to reach the model", worker)
        child = int(_wait(lambda: marker.read_text().strip(), 10, "the pool process id"))
        os.kill(child, signal.SIGKILL)  # the pool process dies in the middle of the study
        [sr_path] = _wait(lambda: _received_srs(received), 300, "the SR after redelivery", worker)
        _check_sr(sr_path, settings, tiny_bundle, uid, images)
        _wait(lambda: audit.study_current_state(uid) == "exported", 60, "the study exported", worker)
        time.sleep(3)  # anything that would send a second SR has had its chance
        assert len(_received_srs(received)) == 1
    finally:
        node.stop()
        enqueuer.close()
        _stop(worker)
        audit.close()
    states, analyses, exports = _audit_rows(settings, uid)
    import json

    deliveries = [json.loads(s.details)["delivery"] for s in states if s.state == "analysing"]
    assert deliveries == [1, 2], [(s.state, s.details) for s in states]
    assert len(analyses) == 1 and analyses[0].error is None
    assert [e.status for e in exports].count("sent") == 1
