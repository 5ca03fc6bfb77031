"""Load benchmark for ``eusdx serve`` (not a test): sustained concurrent associations, then a
backlog burst of studies. Prints a table; ``--json`` also writes the numbers.

Phase 1 (sustained): ``--concurrency`` client threads (default 50), each in a loop: associate,
send one study of ``--instances`` small US images, release, for ``--duration`` seconds. The node
runs with ``max_associations = --limit`` (default 60), so every refusal below the limit is a
fault. Reported: C-STOREs, p50/p95/p99 store latency (client side: request sent -> response),
associations refused, and the server's RSS sampled every ``--sample`` seconds.

Phase 2 (backlog burst): ``--burst`` studies (default 500) sent as fast as the same threads can,
then the time until every one is in the analysis queue (embedded queue, ``--no-worker``: what
is measured is ingest + study assembly + enqueue, not inference).

The client threads share one Python process with the GIL: on a small machine the client, not
the node, may be the bottleneck; the report prints the client's CPU time next to the node's.
Usage: ``python bench/load.py [--duration 600] [--concurrency 50] [--burst 500]``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pydicom.uid import generate_uid  # noqa: E402
from pynetdicom import AE  # noqa: E402

from tests.conftest import free_port  # noqa: E402
from tests.dicom_node.dicomfiles import us_instance  # noqa: E402
from tests.dicom_node.peers import wait_listening  # noqa: E402

EUSDX = str(Path(sys.executable).with_name("eusdx"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: list[float] = []
        self.refused = 0
        self.failed = 0
        self.statuses: dict[int, int] = {}
        self.studies: list[str] = []

    def add(self, lat: list[float], statuses: list[int], study: str | None) -> None:
        with self.lock:
            self.latency += lat
            for s in statuses:
                self.statuses[s] = self.statuses.get(s, 0) + 1
            if study:
                self.studies.append(study)


def send_study(port: int, n: int, rows: int, stats: Stats) -> None:
    study, series = generate_uid(), generate_uid()
    items = [us_instance(study_uid=study, series_uid=series, pixel_value=i, rows=rows)
             for i in range(n)]
    ae = AE(ae_title="LOADSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context(str(items[0].SOPClassUID), str(items[0].file_meta.TransferSyntaxUID))
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="EUSDX")
    except Exception:  # noqa: BLE001
        with stats.lock:
            stats.failed += 1
        return
    if not assoc.is_established:
        with stats.lock:
            stats.refused += 1
        return
    lat, statuses = [], []
    for ds in items:
        t0 = time.perf_counter()
        rsp = assoc.send_c_store(ds)
        lat.append(time.perf_counter() - t0)
        statuses.append(int(rsp.Status) if "Status" in rsp else -1)
    assoc.release()
    stats.add(lat, statuses, study if statuses == [0] * n else None)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run(args: argparse.Namespace) -> dict[str, Any]:
    var = Path(tempfile.mkdtemp(prefix="eusdx-load-"))
    port = free_port()
    env = dict(os.environ, EUSDX_SPOOL_DIR=str(var / "spool"),
               EUSDX_DATABASE_URL=f"sqlite:///{var}/audit.db", EUSDX_QUEUE_DIR=str(var / "queue"),
               EUSDX_DICOM_HOST="127.0.0.1", EUSDX_DICOM_PORT=str(port),
               EUSDX_MAX_ASSOCIATIONS=str(args.limit), EUSDX_STUDY_QUIET_SECONDS=str(args.quiet),
               EUSDX_LOG_LEVEL="WARNING",
               # a random per-run audit key: serve refuses the built-in one (issue 20)
               EUSDX_AUDIT_HMAC_SECRET=os.environ.get("EUSDX_AUDIT_HMAC_SECRET") or secrets.token_hex(32))
    log = open(var / "serve.log", "wb")
    proc = subprocess.Popen([EUSDX, "serve", "--no-worker", "--no-http"], env=env, stdout=log,
                            stderr=log)
    wait_listening(port, timeout=60)
    rss: list[tuple[float, int]] = []
    stop_sampler = threading.Event()
    t_start = time.monotonic()

    def sampler() -> None:
        while not stop_sampler.is_set():
            rss.append((time.monotonic() - t_start, rss_kib(proc.pid)))
            stop_sampler.wait(args.sample)

    threading.Thread(target=sampler, daemon=True).start()
    out: dict[str, Any] = {"concurrency": args.concurrency, "limit": args.limit,
                           "duration_s": args.duration, "instances_per_study": args.instances}
    try:
        # phase 1: sustained
        sustained = Stats()
        deadline = time.monotonic() + args.duration
        cpu0 = (cpu_seconds(proc.pid), resource.getrusage(resource.RUSAGE_SELF))

        def loop() -> None:
            while time.monotonic() < deadline:
                send_study(port, args.instances, args.rows, sustained)

        threads = [threading.Thread(target=loop, daemon=True) for _ in range(args.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        out["sustained"] = {
            "c_stores": len(sustained.latency), "studies": len(sustained.studies),
            "per_s": len(sustained.latency) / args.duration,
            "p50_ms": 1000 * pct(sustained.latency, 50), "p95_ms": 1000 * pct(sustained.latency, 95),
            "p99_ms": 1000 * pct(sustained.latency, 99), "refused": sustained.refused,
            "failed": sustained.failed, "statuses": sustained.statuses,
            "node_cpu_s": cpu_seconds(proc.pid) - cpu0[0],
            "client_cpu_s": (ru.ru_utime + ru.ru_stime) - (cpu0[1].ru_utime + cpu0[1].ru_stime),
        }
        # phase 2: backlog burst
        burst = Stats()
        todo = list(range(args.burst))
        lock = threading.Lock()
        t_burst = time.monotonic()

        def drain() -> None:
            while True:
                with lock:
                    if not todo:
                        return
                    todo.pop()
                send_study(port, args.instances, args.rows, burst)

        threads = [threading.Thread(target=drain, daemon=True) for _ in range(args.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sent_s = time.monotonic() - t_burst
        pending = var / "queue" / "pending"
        wanted = set(sustained.studies) | set(burst.studies)
        queue_deadline = time.monotonic() + args.quiet + 300
        while time.monotonic() < queue_deadline:
            if {p.stem for p in pending.glob("*.json")} >= wanted:
                break
            time.sleep(0.2)
        queued = {p.stem for p in pending.glob("*.json")}
        out["burst"] = {
            "studies": args.burst, "sent_ok": len(burst.studies), "send_s": sent_s,
            "all_queued_s": time.monotonic() - t_burst, "missing_from_queue": len(wanted - queued),
            "p95_ms": 1000 * pct(burst.latency, 95), "refused": burst.refused,
            "failed": burst.failed,
        }
    finally:
        stop_sampler.set()
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    out["rss_kib"] = rss
    mid = [k for t, k in rss if t >= min(30.0, args.duration / 4)]
    out["rss_summary"] = {"first": rss[0][1], "max": max(k for _, k in rss), "last": rss[-1][1],
                          "sustained_min": min(mid) if mid else None,
                          "sustained_max": max(mid) if mid else None}
    out["var"] = str(var)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=600)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--limit", type=int, default=60, help="node max_associations")
    p.add_argument("--instances", type=int, default=5, help="instances per study")
    p.add_argument("--rows", type=int, default=64, help="image rows (16 columns, RGB)")
    p.add_argument("--burst", type=int, default=500)
    p.add_argument("--quiet", type=float, default=2.0, help="study quiet seconds")
    p.add_argument("--sample", type=float, default=5.0, help="RSS sampling period, s")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    out = run(args)
    s, b, r = out["sustained"], out["burst"], out["rss_summary"]
    print(f"{'phase':<10}{'C-STOREs':>10}{'per s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
          f"{'refused':>9}{'failed':>8}")
    print(f"{'sustained':<10}{s['c_stores']:>10}{s['per_s']:>8.1f}{s['p50_ms']:>9.1f}"
          f"{s['p95_ms']:>9.1f}{s['p99_ms']:>9.1f}{s['refused']:>9}{s['failed']:>8}")
    print(f"{'burst':<10}{b['studies']:>10}{'':>8}{'':>9}{b['p95_ms']:>9.1f}{'':>9}"
          f"{b['refused']:>9}{b['failed']:>8}")
    print(f"burst: {b['sent_ok']}/{b['studies']} studies sent in {b['send_s']:.1f} s, all queued "
          f"after {b['all_queued_s']:.1f} s, missing from queue: {b['missing_from_queue']}")
    print(f"statuses: {s['statuses']}; node CPU {s['node_cpu_s']:.0f} s, client CPU "
          f"{s['client_cpu_s']:.0f} s over {args.duration:.0f} s")
    print(f"node RSS KiB: first {r['first']}, max {r['max']}, last {r['last']}, "
          f"steady-state min/max {r['sustained_min']}/{r['sustained_max']}")
    print("RSS over time (s: KiB): " + ", ".join(f"{t:.0f}:{k}" for t, k in out["rss_kib"]))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
