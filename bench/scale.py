"""Scale-out: one DICOM node and N separate ``eusdx worker`` processes sharing only Redis, PostgreSQL
and a spool; studies/min for N = 1, 2, 3 workers.

    .venv/bin/python bench/scale.py --bundle var/bundles/current [--studies 30] [--workers 1,2,3]

Each worker is its own process with its own Celery node name and its own log file, as it would be on
its own host. The node (``eusdx serve --no-worker``) hands studies to Celery and its export runner sends
the SRs to a DCMTK storescp (the PACS). The clock runs from the first C-STORE to the last SR at the PACS.
How many studies each worker analysed is asked over the broker (Celery ``inspect stats``, per task
name): the audit records the device, not the worker, and a Celery worker's own log loses the task
log lines (see the report of issue 8). On a 2-core machine the gain flattens at 2 workers (the node, the
sender and the workers share those cores).

``Cluster`` is also what ``tests/scale/test_scale_out.py`` drives.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom

from eusdx.durable import sha256_file

REPO = Path(__file__).resolve().parents[1]
EUSDX = str(Path(sys.executable).with_name("eusdx"))
SR_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.22"}
SECRET = "scale-out-secret"


class Cluster:
    """Node + N analysis workers + a DCMTK PACS, all subprocesses over one shared ``var/``.

    Parameters
    ----------
    var
        Folder for the shared spool, outbox and queue dirs and the logs (on separate hosts: a shared mount).
    bundle, broker_url, database_url
        What every process gets (``EUSDX_BUNDLE``, ``EUSDX_BROKER_URL``, ``EUSDX_DATABASE_URL``).
    workers
        Number of ``eusdx worker -Q analysis -P solo --concurrency 1`` processes, each named ``w<i>@scale``.
    """

    def __init__(self, var: Path, bundle: Path, broker_url: str, database_url: str, workers: int) -> None:
        from demo.peers import PacsReceiver, free_port

        self.var = Path(var)
        self.var.mkdir(parents=True, exist_ok=True)
        self.n_workers = workers
        self.pacs = PacsReceiver(self.var / "pacs", ae_title="PACS")
        self.dicom_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EUSDX_")}
        self.env.update({
            "EUSDX_SPOOL_DIR": str(self.var / "spool"), "EUSDX_OUTBOX_DIR": str(self.var / "outbox"),
            "EUSDX_QUEUE_DIR": str(self.var / "queue"), "EUSDX_DATABASE_URL": database_url,
            "EUSDX_BUNDLE": str(bundle), "EUSDX_BROKER_URL": broker_url, "EUSDX_DEVICE": "cpu",
            "EUSDX_AUDIT_HMAC_SECRET": SECRET, "EUSDX_AE_TITLE": "EUSDX", "EUSDX_DICOM_HOST": "127.0.0.1",
            "EUSDX_DICOM_PORT": str(self.dicom_port), "EUSDX_STUDY_QUIET_SECONDS": "1",
            "EUSDX_EXPORT_DESTINATIONS": f"PACS@127.0.0.1:{self.pacs.port}",
            "EUSDX_EXPORT_BACKOFF_SECONDS": "1", "EUSDX_LOG_LEVEL": "INFO",
            # The caller named this bundle, so its manifest digest is pinned (models.signing):
            # the workers load exactly it and nothing else.
            "EUSDX_BUNDLE_SHA256": sha256_file(Path(bundle) / "manifest.json"),
        })
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        # A file, not a pipe: nobody reads a pipe while we wait, and a full pipe blocks the process.
        with open(self.var / f"{name}.log", "ab") as log:
            proc = subprocess.Popen([EUSDX, *args], env=self.env, cwd=self.var, stdout=log,
                                    stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.var / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, timeout: float = 180.0) -> None:
        """Migrate the audit DB, start the PACS, the workers (bundle loaded) and the node."""
        from demo.peers import wait_listening

        up = subprocess.run([EUSDX, "db", "upgrade"], env=self.env, capture_output=True, text=True,
                            timeout=120)
        if up.returncode != 0:
            raise RuntimeError(f"eusdx db upgrade failed: {up.stderr[-2000:]}")
        self.pacs.start()
        for i in range(1, self.n_workers + 1):
            self._spawn(f"w{i}", ["worker", "-Q", "analysis", "--concurrency", "1", "-P", "solo", "-n", f"w{i}@scale"])
        serve = self._spawn("serve", ["serve", "--no-worker", "--no-http"])
        wait_listening(self.dicom_port, timeout=timeout, proc=serve)
        # Ready = the bundle is loaded and the worker consumes: otherwise the first worker up takes
        # the first studies while the others still load, and the spread says nothing.
        self._wait(self._all_answer, timeout, "every worker to answer a ping")

    def _control(self) -> Any:
        from celery import Celery

        return Celery("eusdx-scale", broker=self.env["EUSDX_BROKER_URL"], set_as_current=False)

    @property
    def worker_names(self) -> list[str]:
        return [f"w{i}@scale" for i in range(1, self.n_workers + 1)]

    def _all_answer(self) -> bool:
        app = self._control()
        try:
            replies = app.control.ping(destination=self.worker_names, timeout=1.0)
        finally:
            app.close()
        return {name for reply in replies for name in reply} >= set(self.worker_names)

    def _wait(self, predicate: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited {proc.returncode} while waiting for {what}:\n"
                                       f"{self.log(name)[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.2)

    def send(self, folders: list[Path], parallel: int = 2) -> None:
        """C-STORE the studies with DCMTK storescu, ``parallel`` associations at a time."""
        from demo.peers import send_study

        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(lambda f: send_study(f, "127.0.0.1", self.dicom_port, calling_ae="ENDOSCOPE",
                                               called_ae="EUSDX"), folders))

    def srs_at_pacs(self) -> dict[str, list[str]]:
        """Study UID -> SOP Instance UIDs of the SRs the PACS has received (complete files only)."""
        found: dict[str, list[str]] = {}
        for path in self.pacs.received():
            if path.name.startswith("."):
                continue
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:  # noqa: BLE001  # a file storescp is still writing
                continue
            if str(ds.SOPClassUID) in SR_CLASSES:
                found.setdefault(str(ds.StudyInstanceUID), []).append(str(ds.SOPInstanceUID))
        return found

    def wait_srs(self, study_uids: set[str], timeout: float) -> dict[str, list[str]]:
        def complete() -> dict[str, list[str]] | None:
            found = self.srs_at_pacs()
            return found if study_uids <= set(found) else None

        return self._wait(complete, timeout, f"{len(study_uids)} SRs at the PACS")

    def analysed_by(self) -> dict[str, int]:
        """Worker node name -> ``eusdx.analyze_study`` tasks it ran, asked over the broker
        (Celery remote control ``stats``: each worker counts its own tasks)."""
        app = self._control()
        names = self.worker_names
        try:
            stats = app.control.inspect(destination=names, timeout=10).stats() or {}
        finally:
            app.close()
        missing = sorted(set(names) - set(stats))
        if missing:
            raise RuntimeError(f"no stats from {missing}")
        return {name.split("@")[0]: int(stats[name].get("total", {}).get("eusdx.analyze_study", 0))
                for name in names}

    def analyses(self) -> dict[str, list[str | None]]:
        """Study UID -> the ``error`` of each audit analysis row (None = success)."""
        import sqlalchemy as sa

        engine = sa.create_engine(self.env["EUSDX_DATABASE_URL"])
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT study_uid, error FROM analyses")).all()
        finally:
            engine.dispose()
        out: dict[str, list[str | None]] = {}
        for uid, error in rows:
            out.setdefault(uid, []).append(error)
        return out

    def stop(self) -> None:
        """SIGTERM everything (workers finish their study), SIGKILL what hangs."""
        from demo.peers import terminate

        terminate(list(self.procs.values()), timeout=60)
        self.pacs.stop()


def study_folders(cohort: Path) -> list[Path]:
    """Study folders of a phantom cohort (``<cohort>/studies/<uid>/``), sorted."""
    return sorted(p for p in (cohort / "studies").iterdir() if p.is_dir())


def _fresh_schema(admin_url: str) -> tuple[str, Any]:
    import sqlalchemy as sa

    schema = f"scale_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(admin_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    return f"{admin_url}?options=-csearch_path%3D{schema}", (engine, schema)


def _drop_schema(handle: Any) -> None:
    import sqlalchemy as sa

    engine, schema = handle
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def run_once(n_workers: int, folders: list[Path], bundle: Path, redis_url: str, postgres_url: str,
             work: Path) -> dict[str, Any]:
    """One measurement: fresh schema, flushed Redis DB, N workers; returns rate and spread."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    db_url, handle = _fresh_schema(postgres_url)
    cluster = Cluster(work / f"n{n_workers}", bundle, redis_url, db_url, n_workers)
    try:
        cluster.start()
        uids = {f.name for f in folders}
        t0 = time.monotonic()
        cluster.send(folders)
        srs = cluster.wait_srs(uids, timeout=60 + 30 * len(folders))
        elapsed = time.monotonic() - t0
        spread = cluster.analysed_by()
        analyses = cluster.analyses()
    finally:
        cluster.stop()
        _drop_schema(handle)
    duplicates = sum(len(v) - 1 for v in srs.values())
    once = sum(1 for u in uids if [e is None for e in analyses.get(u, [])] == [True])
    return {"analysed_once": once, "workers": n_workers, "studies": len(folders), "seconds": elapsed,
            "per_min": 60 * len(folders) / elapsed, "spread": spread, "duplicate_srs": duplicates}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True, help="trained bundle (version dir or current)")
    parser.add_argument("--studies", type=int, default=30, help="phantom studies per run")
    parser.add_argument("--workers", default="1,2,3", help="comma list of worker counts")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15", help="Redis DB (flushed!)")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--keep", type=Path, default=None, help="keep logs and files in this folder")
    args = parser.parse_args(argv)
    from phantom import generate_cohort

    counts = [int(n) for n in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="eusdx-scale-") as tmp:
        work = args.keep or Path(tmp)
        generate_cohort(work / "cohort", args.studies, 5)
        folders = study_folders(work / "cohort")
        rows = []
        for n in counts:
            row = run_once(n, folders, args.bundle, args.redis, args.postgres, work)
            rows.append(row)
            print(f"  {n} worker(s): {row['seconds']:.1f} s, spread {row['spread']}", file=sys.stderr, flush=True)
    base = rows[0]["per_min"]
    print(f"scale-out on {os.cpu_count()} CPU cores, {len(folders)} phantom studies per run, CPU inference")
    print(f"{'workers':>7} {'seconds':>8} {'studies/min':>12} {'vs 1st':>7} {'dup SRs':>7} {'once':>5}  tasks per worker")
    for r in rows:
        spread = " ".join(f"{w}={c}" for w, c in sorted(r["spread"].items()))
        print(f"{r['workers']:>7} {r['seconds']:>8.1f} {r['per_min']:>12.1f} {r['per_min'] / base:>7.2f} "
              f"{r['duplicate_srs']:>7} {r['analysed_once']:>5}  {spread}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
