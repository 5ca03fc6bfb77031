"""Crash safety: SIGKILL ``eusdx serve`` at random points during concurrent C-STORE streams.

Promise under test: an instance answered Success is in the spool byte for byte and in the audit
log, whatever happens to the process afterwards; no half-written file survives a restart; every
completed study reaches the analysis queue exactly once (one queue record, never both pending
and running).

A Celery pool process SIGKILLed mid-study is covered by
``tests/worker/test_end_to_end.py::test_sigkilled_worker_yields_exactly_one_sr_after_redelivery``.

Knobs: ``EUSDX_REL_CRASH_REPEATS`` (default 3; the hand run used 20), ``EUSDX_REL_CRASH_STREAMS`` (20),
``EUSDX_REL_CRASH_SEED``.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.dicom_node.dicomfiles import dataset_bytes, encode, us_instance
from tests.reliability.conftest import (
    Serve,
    StreamResult,
    knob,
    send_concurrently,
    send_stream,
    wait_for,
)

pytestmark = [pytest.mark.slow]

INSTANCES_PER_STUDY = 6


def _study(rows: int = 64) -> list[pydicom.Dataset]:
    study, series = generate_uid(), generate_uid()
    return [us_instance(study_uid=study, series_uid=series, pixel_value=i, rows=rows)
            for i in range(INSTANCES_PER_STUDY)]


def _check_acked(serve: Serve, results: list[StreamResult]) -> tuple[int, int]:
    """Every Success is in the spool (byte-identical data set) and audited as stored.
    Returns (instances at risk = sent or in flight, instances acknowledged)."""
    spool = serve.var / "spool"
    stored = {r[0] for r in serve.audit_rows(
        "select sop_uid from instances where status in ('stored','overwritten','duplicate-ignored')")}
    acked = 0
    for res in results:
        for ds, status in res.acked:
            if status != 0:
                continue
            acked += 1
            path = spool / str(ds.StudyInstanceUID) / f"{ds.SOPInstanceUID}.dcm"
            assert path.is_file(), f"acknowledged instance lost: {path}"
            assert dataset_bytes(path) == encode(ds), f"acknowledged instance altered: {path}"
            assert str(ds.SOPInstanceUID) in stored, "acknowledged instance not audited"
    at_risk = sum(len(r.acked) + (1 if r.error else 0) for r in results)
    return at_risk, acked


def _no_half_written(spool: Path) -> None:
    tmp = spool / ".tmp"
    leftovers = [p.name for p in tmp.iterdir()] if tmp.exists() else []
    assert leftovers == [], f"temp files survived the restart: {leftovers[:5]}"
    for path in spool.rglob("*.dcm"):
        pydicom.dcmread(path, stop_before_pixels=True)  # every kept file is readable


def test_sigkill_during_concurrent_streams_loses_nothing(serve_factory) -> None:
    repeats, n_streams = knob("CRASH_REPEATS", 3), knob("CRASH_STREAMS", 20)
    rng = random.Random(knob("CRASH_SEED", 20261126))
    serve = serve_factory(EUSDX_STUDY_QUIET_SECONDS="1").start()
    all_studies: list[list[pydicom.Dataset]] = []
    totals = {"at_risk": 0, "acked": 0, "kills": 0}
    for _ in range(repeats):
        streams = [_study() for _ in range(n_streams)]
        all_studies += streams
        holder: list[list[StreamResult]] = []
        sender = threading.Thread(target=lambda: holder.append(
            send_concurrently(serve.dicom_port, streams, timeout=15)), daemon=True)
        sender.start()
        time.sleep(rng.uniform(0.05, 1.5))
        serve.kill()
        totals["kills"] += 1
        sender.join(timeout=120)
        assert holder, "senders hung after the kill"
        serve.start()
        _no_half_written(serve.var / "spool")
        at_risk, acked = _check_acked(serve, holder[0])
        totals["at_risk"] += at_risk
        totals["acked"] += acked
    print(f"\nSIGKILL repeats={totals['kills']} streams={n_streams} at_risk={totals['at_risk']} "
          f"acked={totals['acked']} lost=0")
    # The PACS re-sends what was not acknowledged (keep-first ignores what we hold already).
    flat = [ds for study in all_studies for ds in study]
    for i in range(0, len(flat), 60):
        res = send_stream(serve.dicom_port, flat[i:i + 60])
        assert res.error is None and [s for _, s in res.acked] == [0] * len(flat[i:i + 60])
    uids = {str(s[0].StudyInstanceUID) for s in all_studies}
    queue = serve.var / "queue"

    def queued() -> bool:
        names = {p.stem for p in (queue / "pending").glob("*.json")}
        return names >= uids and not list((serve.var / "outbox" / "enqueue").glob("*.json"))

    wait_for(queued, 60, "every study in the analysis queue")
    pending = sorted(p.stem for p in (queue / "pending").glob("*.json"))
    running = list((queue / "running").glob("*.json"))
    assert set(pending) == uids and running == []  # one record per study, none stuck running
    for path in (queue / "pending").glob("*.json"):
        assert json.loads(path.read_text())["deliveries"] == 0
    states = serve.audit_rows("select study_uid, state from study_events")
    assert {u for u, s in states if s == "queued"} == uids
    assert serve.terminate() == 0
    log = serve.log()
    assert "PHANTOM-1" not in log and "Phantom^Test" not in log, "patient identifier logged"
