"""Crash safety end to end with a real (tiny, phantom-trained) bundle: ``eusdx serve`` with its
embedded worker is SIGKILLed during ingest and again during analysis; after the PACS re-sends,
exactly one SR per study reaches the DCMTK storescp, and the logs name no patient.

The bundle is the session's ``tiny_bundle`` (tests/worker/conftest.py; ``EUSDX_TEST_BUNDLE``
reuses a trained one).
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pydicom
import pytest

from tests.conftest import bundle_trust_env, free_port
from tests.reliability.conftest import (
    dcmtk_storescp,
    knob,
    send_concurrently,
    send_stream,
    wait_for,
)
from tests.worker.conftest import cohort_studies

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]

SR_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.22",
              "1.2.840.10008.5.1.4.1.1.88.34"}


def _srs(folder: Path) -> list[pydicom.Dataset]:
    out = []
    for p in sorted(folder.iterdir()):
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:  # noqa: BLE001  # storescp may be writing it right now
            continue
        if str(ds.SOPClassUID) in SR_CLASSES:
            out.append(ds)
    return out


def test_sigkill_during_ingest_and_analysis_one_sr_per_study(
        serve_factory, tiny_bundle: Path, phantom_cohort: Path, tmp_path: Path) -> None:
    rng = random.Random(knob("CRASH_SEED", 20261126))
    pacs_port = free_port()
    received = tmp_path / "pacs"
    pacs = dcmtk_storescp(received, pacs_port)
    serve = serve_factory(worker=True, EUSDX_BUNDLE=str(tiny_bundle), EUSDX_DEVICE="cpu",
                          **bundle_trust_env(tiny_bundle),
                          EUSDX_STUDY_QUIET_SECONDS="1",
                          EUSDX_EXPORT_DESTINATIONS=f"PACS@127.0.0.1:{pacs_port}",
                          EUSDX_EXPORT_BACKOFF_SECONDS="0.5",
                          EUSDX_EXPORT_BACKOFF_MAX_SECONDS="2")
    uids = cohort_studies(phantom_cohort)
    studies = [[pydicom.dcmread(p) for p in sorted((phantom_cohort / "studies" / u).glob("*.dcm"))]
               for u in uids]
    patients = {(str(s[0].PatientName), str(s[0].PatientID)) for s in studies}
    try:
        serve.start()
        # 1. killed while the studies arrive
        holder: list = []
        sender = threading.Thread(target=lambda: holder.append(
            send_concurrently(serve.dicom_port, studies, timeout=15)), daemon=True)
        sender.start()
        time.sleep(rng.uniform(0.1, 0.6))
        serve.kill()
        sender.join(timeout=60)
        serve.start()
        # 2. the PACS re-sends everything (keep-first: what we hold is ignored)
        for study in studies:
            res = send_stream(serve.dicom_port, study)
            assert res.error is None and {s for _, s in res.acked} == {0}
        # 3. killed in the middle of an analysis
        wait_for(lambda: serve.audit_rows(
            "select 1 from study_events where state='analysing'"), 240, "an analysis to start")
        serve.kill()
        serve.start()
        wait_for(lambda: len(_srs(received)) >= len(uids), 300, "one SR per study")
        time.sleep(3)  # a second SR would have been sent by now
        srs = _srs(received)
    finally:
        serve.kill()
        pacs.kill()
        pacs.wait(timeout=10)
    per_study = sorted(str(s.StudyInstanceUID) for s in srs)
    assert per_study == sorted(uids), per_study
    sent = serve.audit_rows("select study_uid, count(*) from exports where status='sent' "
                            "group by study_uid")
    assert sorted(sent) == sorted((u, 1) for u in uids)
    log = serve.log()
    for name, pid in patients:
        assert name not in log and pid not in log, "patient identifier in the service log"
