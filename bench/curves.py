"""Cost curves: does the cost of one unit of work stay flat as the work grows? (not a test)

    .venv/bin/python bench/curves.py --bundle var/bundles/current \
        [--sizes 1,10,50,200] [--concurrency 1,4,16] [--history 1000,10000,30000] [--png bench/curves.png]

A. study-to-SR latency for studies of 1, 10, 50 and 200 images: ``worker.pipeline.analyze_study``
   (spool -> frames -> bundle -> SR in the export outbox, audit rows written), the bundle warm,
   in this process; seconds per study and per image.
B. throughput with 1, 4 and 16 studies arriving at once (10 images each): the deployment default
   end to end (DCMTK ``storescu`` senders, one per study, all at once -> ``Node`` -> embedded queue
   and worker -> SR at a DCMTK ``storescp`` PACS); studies per minute from the first C-STORE to the
   last SR, quiet period excluded. Peer: the same studies straight to ``storescp`` (transfer floor).
C. audit queries and the radiology worklist over histories of 10,000 ... studies, loaded by the one
   history generator (``bench/history.py``) into a fresh SQLite audit database: QA ``studies``,
   ``stats``, the worklist's first and last page, one study's ``show`` and one durable append.

Prints one table per part and draws them into one PNG. Phantom data: speed only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))  # after the repo: bench/audit.py must not shadow `audit`


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def latency_by_size(bundle: Any, cohort: Path, work: Path, sizes: list[int], repeat: int) -> list[dict[str, Any]]:
    """Part A."""
    from pipeline import make_study

    from audit import AuditLog
    from dicom_node.export import submit
    from eusdx.config import load_settings
    from worker.pipeline import analyze_study

    base = work / "sizes"
    settings = load_settings(spool_dir=base / "spool", outbox_dir=base / "outbox", queue_dir=base / "q",
                             database_url=f"sqlite:///{base / 'audit.db'}", device="cpu")
    base.mkdir(parents=True)
    audit = AuditLog.from_settings(settings)
    audit.ensure_schema()
    rows = []
    try:
        def once(n: int) -> tuple[float, Any]:
            uid = make_study(cohort, settings.spool_dir, n)
            t = time.perf_counter()
            out = analyze_study(uid, settings=settings, bundle=bundle, audit=audit,
                                export=lambda ds, u: submit(settings, ds, u), device="cpu")
            if out.status != "reported":
                raise RuntimeError(f"{n}-image study not reported: {out.status} {out.reason}")
            return time.perf_counter() - t, out

        once(2)  # warm: first SR build, first audit rows
        for n in sizes:
            reps = repeat if n <= 50 else 1
            times = []
            out = None
            for _ in range(reps):
                seconds, out = once(n)
                times.append(seconds)
            med = statistics.median(times)
            predict = out.timings.get("predict", float("nan")) if out else float("nan")
            rows.append({"images": n, "runs": reps, "seconds": med, "per_image": med / n,
                         "predict_s": predict, "load": os.getloadavg()[0]})
            print(f"  {n:4d} images: {med:7.2f} s ({med / n:.3f} s/image, predict {predict:.2f} s), "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        audit.close()
    return rows


def throughput(bundle_path: Path, cohort: Path, work: Path, concurrency: list[int], quiet: float,
               images: int) -> list[dict[str, Any]]:
    """Part B."""
    from pipeline import deployment, make_study

    from demo.peers import free_port, wait_listening

    rows = []
    with deployment(bundle_path, work, quiet) as (settings, pacs_dir):
        for k in concurrency:
            folders = []
            for _ in range(k):
                sent = work / f"sent-{k}-{len(folders)}"
                uid = make_study(cohort, sent, images)
                folders.append(sent / uid)
            before = set(pacs_dir.iterdir())
            # peer: the same studies straight to a storescp (transfer floor), all at once
            peer_dir = work / f"peer-{k}"
            peer_dir.mkdir()
            peer_port = free_port()
            peer = subprocess.Popen(["/usr/bin/storescp", "-od", str(peer_dir), "+xa", str(peer_port)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_listening(peer_port, proc=peer)
            t = time.monotonic()
            _send_all(peer_port, "ANY-SCP", folders)
            peer_s = time.monotonic() - t
            peer.terminate()
            peer.wait(10)
            t0 = time.monotonic()
            _send_all(settings.dicom_port, settings.ae_title, folders)
            sent_s = time.monotonic() - t0
            deadline = time.monotonic() + 3600
            while len(set(pacs_dir.iterdir()) - before) < k and time.monotonic() < deadline:
                time.sleep(0.1)
            done = len(set(pacs_dir.iterdir()) - before)
            if done < k:
                raise RuntimeError(f"only {done} of {k} SRs arrived")
            total = time.monotonic() - t0 - quiet
            rows.append({"studies": k, "images": images, "seconds": total, "per_study": total / k,
                         "studies_per_min": 60 * k / total, "send_s": sent_s, "peer_send_s": peer_s,
                         "load": os.getloadavg()[0]})
            print(f"  {k:3d} studies at once: {total:7.1f} s -> {60 * k / total:5.2f} studies/min "
                  f"({total / k:.2f} s/study; sending took {sent_s:.1f} s, peer {peer_s:.1f} s), "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    return rows


def _send_all(port: int, aet: str, folders: list[Path]) -> None:
    from pipeline import _storescu
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(folders)) as ex:
        list(ex.map(lambda f: _storescu(port, aet, f), folders))


def audit_at_scale(work: Path, histories: list[int]) -> list[dict[str, Any]]:
    """Part C."""
    import sqlalchemy as sa

    from audit import AuditLog
    from audit.queries import Filters, show, stats, studies, worklist
    from history import START, STUDY_SPACING, load_history

    rows = []
    for n in histories:
        db = work / f"history-{n}.db"
        log = AuditLog(f"sqlite:///{db}", "bench-secret")
        log.ensure_schema()
        t = time.perf_counter()
        last = load_history(log.engine, n)
        load_s = time.perf_counter() - t
        with log.engine.connect() as conn:
            last_seq = conn.execute(sa.text("SELECT max(seq) FROM analyses")).scalar_one()
        mid = START + STUDY_SPACING * (n // 2)

        def best(fn: Any, reps: int = 5) -> float:
            times = []
            for _ in range(reps):
                with log.engine.connect() as conn:
                    t = time.perf_counter()
                    fn(conn)
                    times.append(time.perf_counter() - t)
            return min(times) * 1000

        cases = {
            "studies (1000 newest)": lambda c: studies(c, Filters()),
            "studies --ae --status --since": lambda c: studies(c, Filters(ae="PACS_2", status="exported",
                                                                         since=mid)),
            "stats (all)": lambda c: stats(c, Filters()),
            "worklist first page": lambda c: worklist(c, cursor=0, limit=100),
            "worklist last page": lambda c: worklist(c, cursor=max(0, last_seq - 2000), limit=100),
            "show one study": lambda c: show(c, f"1.2.826.0.1.3680043.10.99.{n // 2}"),
        }
        result: dict[str, Any] = {"studies": n, "rows": last.seq, "load_s": load_s,
                                  "size_mb": db.stat().st_size / 1e6}
        for name, fn in cases.items():
            result[name] = best(fn, 3 if name.startswith("stats") else 5)
        appends = []
        for k in range(20):
            t = time.perf_counter()
            log.instance(association_id=None, study_uid="1.2.3", series_uid="1.2.3.1", sop_uid=f"1.2.3.1.{k}",
                         sop_class_uid="1.2.840.10008.5.1.4.1.1.6.1", transfer_syntax="1.2.840.10008.1.2.1",
                         size=1, digest="0" * 64, status="stored", calling_ae="PACS_1", patient_id="P")
            appends.append(time.perf_counter() - t)
        result["durable append"] = statistics.median(appends) * 1000
        result["load"] = os.getloadavg()[0]
        log.close()
        rows.append(result)
        print(f"  {n:>9,} studies ({last.seq:,} rows, {result['size_mb']:.0f} MB, loaded in {load_s:.0f} s): "
              + ", ".join(f"{k} {v:.1f} ms" for k, v in result.items()
                          if isinstance(v, float) and k not in ("load_s", "size_mb", "load")), flush=True)
        db.unlink()
    return rows


def plot(png: Path, sizes: list[dict[str, Any]], tput: list[dict[str, Any]], hist: list[dict[str, Any]],
         title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [name for name, rows in (("A", sizes), ("B", tput), ("C", hist)) if rows]
    fig, axes_list = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 4.5), squeeze=False)
    axes = dict(zip(panels, axes_list[0]))
    if sizes:
        ax = axes["A"]
        x = [r["images"] for r in sizes]
        ax.plot(x, [r["per_image"] for r in sizes], "o-", label="s per image")
        ax.set_xscale("log")
        ax.set_xlabel("images in the study")
        ax.set_ylabel("study-to-SR seconds per image")
        ax2 = ax.twinx()
        ax2.plot(x, [r["seconds"] for r in sizes], "s--", color="grey", label="s per study")
        ax2.set_yscale("log")
        ax2.set_ylabel("seconds per study (grey)")
        ax.set_title("A. latency vs study size")
        ax.set_ylim(bottom=0)
    if tput:
        ax = axes["B"]
        x = [r["studies"] for r in tput]
        ax.plot(x, [r["studies_per_min"] for r in tput], "o-")
        ax.set_xscale("log")
        ax.set_xlabel(f"studies arriving at once ({tput[0]['images']} images each)")
        ax.set_ylabel("studies per minute")
        ax.set_ylim(bottom=0)
        ax.set_title("B. throughput vs concurrent studies")
    if hist:
        ax = axes["C"]
        x = [r["studies"] for r in hist]
        for name in ("studies (1000 newest)", "studies --ae --status --since", "stats (all)",
                     "worklist first page", "worklist last page", "show one study", "durable append"):
            ax.plot(x, [r[name] for r in hist], "o-", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("studies in the audit history")
        ax.set_ylabel("ms (best of 5)")
        ax.legend(fontsize=7)
        ax.set_title("C. audit queries vs history size (SQLite)")
    from matplotlib.ticker import ScalarFormatter

    for ax in axes.values():
        ax.xaxis.set_major_formatter(ScalarFormatter())
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, help="trained bundle (parts A and B)")
    ap.add_argument("--sizes", type=_ints, default=[1, 10, 50, 200])
    ap.add_argument("--repeat", type=int, default=3, help="part A runs per size (200 images: 1)")
    ap.add_argument("--concurrency", type=_ints, default=[1, 4, 16])
    ap.add_argument("--images", type=int, default=10, help="images per study in part B")
    ap.add_argument("--quiet", type=float, default=2.0, help="study quiet period in part B, s")
    ap.add_argument("--history", type=_ints, default=[1_000, 10_000, 30_000],
                    help="studies in each audit history (1,000,000 is ~15 M rows, 8 GB: ~11 min to build here)")
    ap.add_argument("--parts", default="ABC")
    ap.add_argument("--png", type=Path, default=ROOT / "bench" / "curves.png")
    args = ap.parse_args(argv)
    title = (f"eusdx cost curves, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.1f}; phantom data")
    print(f"# {title}", flush=True)
    sizes: list[dict[str, Any]] = []
    tput: list[dict[str, Any]] = []
    hist: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="eusdx-curves-"))
    try:
        if ("A" in args.parts or "B" in args.parts) and not args.bundle:
            raise SystemExit("parts A and B need --bundle")
        if "A" in args.parts or "B" in args.parts:
            from phantom import generate_cohort

            generate_cohort(work / "cohort", 4, 5)
        if "A" in args.parts:
            from models.bundle import load_bundle
            from worker.model_cache import warm_up

            print("\n## A. study-to-SR latency by study size (in process, bundle warm)", flush=True)
            bundle = load_bundle(args.bundle)
            warm_up(bundle, "cpu")
            sizes = latency_by_size(bundle, work / "cohort", work, args.sizes, args.repeat)
            bundle.close()
        if "B" in args.parts:
            print(f"\n## B. throughput, studies of {args.images} images arriving at once (end to end)",
                  flush=True)
            tput = throughput(args.bundle, work / "cohort", work, args.concurrency, args.quiet, args.images)
        if "C" in args.parts:
            print("\n## C. audit queries and worklist by history size (SQLite, ms, best of 5)", flush=True)
            hist = audit_at_scale(work, args.history)
        plot(args.png, sizes, tput, hist, title)
        print(f"\nplot: {args.png}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
