"""History benchmark: ``/healthz``, ``/metrics`` and one export-runner pass with 100,000 historic studies.

    .venv/bin/python bench/node_history.py [--studies 100000] [--pending 20] [--repeat 200]

Builds a var/ as a node has it after a long life: ``--studies`` settled studies in the audit projection
(exported, failed, not-routed...) and as many delivered SRs in the export outbox (item folders and the
``done`` index, as if retention had not pruned them yet), plus ``--pending`` studies with work still to
do (queued, an SR waiting for its destination). A real ``Node`` is started (DICOM listener on a free
port) and its FastAPI routes are called in-process (``fastapi.testclient``), so the times are the
handlers' own, without a network hop.

The peer is the same node doing what the code did before the outbox got its state index: reading every
item of the outbox (``Outbox.items()``) for the depth, as ``/healthz`` and each ``/metrics`` gauge did.
The ratio is ours over the peer; the issue asks for ``/healthz`` and ``/metrics`` under 50 ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit import AuditLog  # noqa: E402
from audit.schema import StudyProjection  # noqa: E402
from dicom_node.outbox import ITEM_DONE, SENT, Outbox, item_id_for  # noqa: E402
from eusdx.config import load_settings  # noqa: E402
from eusdx.durable import atomic_write_json  # noqa: E402
from tests.conftest import free_port  # noqa: E402

SR = "1.2.840.10008.5.1.4.1.1.88.33"
SETTLED = ("exported", "exported", "exported", "exported", "failed", "not-routed", "export-failed")


def _uid(n: int) -> str:
    return f"1.2.826.0.1.3680043.8.498.{10_000_000 + n}"


def build(var: Path, n_studies: int, n_pending: int) -> Any:
    settings = load_settings(spool_dir=var / "spool", queue_dir=var / "queue", outbox_dir=var / "outbox",
                             database_url=f"sqlite:///{var / 'audit.db'}", dicom_host="127.0.0.1",
                             dicom_port=free_port(), export_destinations=["PACS@127.0.0.1:9"],
                             # the history stays (as if retention were long): the bench measures its cost
                             outbox_sent_retention_days=1e6, spool_retention_days=1e6, retention_days=10**6,
                             log_level="WARNING", log_format="text")
    (var / "spool").mkdir(parents=True)
    audit = AuditLog.from_settings(settings)
    audit.ensure_schema()
    now = dt.datetime.now(dt.timezone.utc)
    rows = [{"study_uid": _uid(i), "state": SETTLED[i % len(SETTLED)], "first_seen": now, "updated_at": now,
             "last_seq": 0, "instances": 3, "sr_sop_uid": _uid(i) + ".9"} for i in range(n_studies)]
    with audit.engine.begin() as conn:
        conn.execute(sa.insert(StudyProjection.__table__), rows)
    # history in the export outbox: delivered SRs, indexed as done (written fast: no fsync for the bench)
    root = settings.outbox_path / "export"
    Outbox(root)  # creates the index folders
    for i in range(n_studies):
        iid = item_id_for(_uid(i) + ".9")
        (root / iid).mkdir()
        (root / iid / "object.dcm").write_bytes(b"DICM")
        record = {"id": iid, "study_uid": _uid(i), "sop_uid": _uid(i) + ".9", "sop_class_uid": SR,
                  "created": 0.0, "queued_audited": True,
                  "destinations": {"PACS@127.0.0.1:9": {"state": SENT, "attempts": 1, "next_due": 0,
                                                         "last_error": None, "sent_at": 1.0}}}
        (root / iid / "item.json").write_text(json.dumps(record))
        (root / ".state" / ITEM_DONE / iid).write_text("1.0")
    outbox = Outbox(root)
    for j in range(n_pending):
        uid = _uid(n_studies + j)
        for state in ("received", "complete", "queued", "analysing", "reported"):
            audit.study_state(study_uid=uid, state=state,
                              details={"sr_sop_uid": uid + ".9", "revision": "r"} if state == "reported" else None)
        outbox.add(sop_uid=uid + ".9", sop_class_uid=SR, study_uid=uid,
                   write_object=lambda p: p.write_bytes(b"DICM"), destinations=list(settings.export_destinations),
                   now=time.time() + 3600)  # due in an hour: the pass finds nothing to send
    atomic_write_json(var / "built.json", {"studies": n_studies, "pending": n_pending})
    return settings, audit


def timed(fn: Any, repeat: int) -> tuple[float, float]:
    values = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        values.append((time.perf_counter() - t0) * 1000)
    values.sort()
    return statistics.median(values), values[int(0.95 * (len(values) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=100_000)
    ap.add_argument("--pending", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from dicom_node.app import Node
    from dicom_node.export import ExportRunner
    from dicom_node.http import node_router

    with tempfile.TemporaryDirectory(prefix="eusdx-history-") as tmp:
        t0 = time.perf_counter()
        settings, audit = build(Path(tmp), args.studies, args.pending)
        print(f"built {args.studies} historic studies + {args.pending} pending in {time.perf_counter() - t0:.0f} s")

        class Quiet:
            def enqueue(self, study_uid: str) -> None:
                pass

            def holds(self, study_uid: str) -> bool:
                return True

        node = Node(settings, audit, Quiet(), export=False)
        node.start()
        node._count_terminal()  # what the assembler thread does every minute
        try:
            app = FastAPI()
            app.include_router(node_router(node))
            app.add_api_route("/noop", lambda: {}, methods=["GET"])
            client = TestClient(app)
            assert client.get("/healthz").status_code == 200
            body = client.get("/metrics").text
            assert 'eusdx_outbox_depth{state="pending"} %d.0' % args.pending in body, body[-2000:]
            runner = ExportRunner(settings, audit, outbox=node.outbox)
            rows = []
            time.sleep(2.0)  # let the node's start-up jobs (reconcile, counts, cleaning) finish
            for name, fn, peer in (
                ("GET /noop (HTTP stack)", lambda: client.get("/noop"), lambda: None),
                ("GET /healthz", lambda: client.get("/healthz"), lambda: node.outbox.items()),
                ("GET /metrics", lambda: client.get("/metrics"), lambda: node.outbox.items()),
                ("export runner pass", runner.run_once, lambda: [node.outbox.get(i) for i in node.outbox.ids()]),
            ):
                repeat = args.repeat if name != "export runner pass" else max(10, args.repeat // 10)
                p50, p95 = timed(fn, repeat)
                peer_p50, _ = timed(peer, 3)
                rows.append((name, p50, p95, peer_p50))
        finally:
            node.stop()
            audit.close()
    print(f"\n{args.studies} historic studies, {args.pending} pending (SQLite audit, local disk)")
    print(f"{'operation':22} {'p50 ms':>9} {'p95 ms':>9} {'peer p50 ms':>12} {'ratio':>8}")
    for name, p50, p95, peer in rows:
        ratio = f"{p50 / peer:8.4f}" if peer > 0.01 else f"{'-':>8}"
        print(f"{name:22} {p50:9.2f} {p95:9.2f} {peer:12.1f} {ratio}")
    print("peer: reading every outbox item, as the depth scan did before the state index "
          "(/healthz once, /metrics three times per scrape)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
