"""Audit benchmark: per-append latency, and QA queries over ~100k audit rows, against raw-SQL peers.

    .venv/bin/python bench/audit.py [--rows 100000] [--appends 300] [--db sqlite|postgres|both]

Prints two tables per database:

* append latency of ``AuditLog.instance`` (one chained, durable row + projection update, SQLite
  with WAL and ``synchronous=FULL``) next to a bare durable ``INSERT`` + ``COMMIT`` of the same
  row through the raw driver (sqlite3 / psycopg) — the ratio is what the chain, the lock and the
  projection cost;
* QA queries over a bulk-loaded history (``--rows`` event rows, a valid chain: checked with
  ``verify_chain``) through our layer (``QaReader``: records a qa_event, then queries) and through
  the query function alone, next to the same SQL run by the raw driver.

Bulk loading bypasses the per-row API (one transaction, ``executemany``) but computes every
``row_hash`` exactly as the write path does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # after the repo: bench/audit.py is not `audit`

from audit import AuditLog  # noqa: E402
from audit.chain import verify_chain  # noqa: E402
from audit.queries import Filters, QaReader, stats, studies  # noqa: E402

from history import build_history, history_chunks, load  # noqa: E402  (the one generator of histories)

PG_BASE = os.environ.get("EUSDX_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SECRET = "bench-secret"


# --- raw-SQL peers -------------------------------------------------------------------------------

class Raw:
    """The raw driver (sqlite3 / psycopg) with the same pragmas/search_path as our engine."""

    def __init__(self, url: str, schema: str | None) -> None:
        self.sqlite = url.startswith("sqlite")
        if self.sqlite:
            self.conn: Any = sqlite3.connect(url.split("///", 1)[1], isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.ph = "?"
        else:
            import psycopg

            self.conn = psycopg.connect("postgresql://postgres@127.0.0.1:5432/test",
                                        options=f"-csearch_path={schema}", autocommit=True)
            self.ph = "%s"

    def q(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        sql = sql.replace("?", self.ph)
        cur = self.conn.execute(sql, params)
        return list(cur.fetchall())

    def ts(self, value: dt.datetime) -> Any:
        # SQLite holds naive UTC text in SQLAlchemy's format; PostgreSQL takes the datetime.
        return value.strftime("%Y-%m-%d %H:%M:%S.%f") if self.sqlite else value

    def close(self) -> None:
        self.conn.close()


STUDIES_SQL = ("SELECT study_uid, accession, calling_ae, state, reason, first_seen, updated_at, "
               "instances, label, probability, bundle_version, sr_sop_uid, analysis_seconds "
               "FROM studies {where} ORDER BY first_seen DESC, study_uid LIMIT 1000")


def raw_studies(raw: Raw, ae: str | None = None, state: str | None = None,
                since: dt.datetime | None = None) -> list[Any]:
    where, params = [], []
    if since is not None:
        where.append("first_seen >= ?")
        params.append(raw.ts(since))
    if ae:
        where.append("calling_ae = ?")
        params.append(ae)
    if state:
        where.append("state = ?")
        params.append(state)
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    return raw.q(STUDIES_SQL.format(where=clause), tuple(params))


def raw_stats(raw: Raw) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["by_state"] = raw.q("SELECT state, count(*) FROM studies GROUP BY state")
    out["by_status"] = raw.q("SELECT status, count(*) FROM instances GROUP BY status")
    out["assoc"] = raw.q("SELECT accepted, count(*) FROM associations WHERE event = 'open' "
                         "GROUP BY accepted")
    out["f1"] = raw.q("SELECT reason, count(*) FROM associations WHERE event = 'open' AND "
                      "accepted = ? GROUP BY reason", (False,))
    out["f2"] = raw.q("SELECT reason, count(*) FROM instances WHERE status = 'rejected' "
                      "GROUP BY reason")
    out["f3"] = raw.q("SELECT reason, count(*) FROM studies WHERE state = 'failed' GROUP BY reason")
    stages: dict[str, list[float]] = {}
    for timings, _total, error in raw.q("SELECT timings, total_seconds, error FROM analyses"):
        if error is None:
            for k, v in json.loads(timings).items():
                stages.setdefault(k, []).append(v)
    out["latency"] = {k: np.percentile(np.asarray(v), [50, 95]) for k, v in stages.items()}
    out["exports"] = raw.q("SELECT count(*) FROM exports")
    out["f4"] = raw.q("SELECT error, count(*) FROM exports WHERE status IN ('failed', "
                      "'dead-letter') GROUP BY error")
    out["outbox"] = raw.q("SELECT status, count(*) FROM study_exports WHERE status IN "
                          "('queued', 'failed') GROUP BY status")
    out["dead"] = raw.q("SELECT count(*) FROM study_exports WHERE status = 'dead-letter'")
    return out


# --- measuring -----------------------------------------------------------------------------------

def best_of(fn: Callable[[], Any], n: int = 5) -> tuple[float, Any]:
    """Median wall time (ms) of ``n`` runs after one warm-up, and the last result."""
    result = fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), result


def append_latency(log: AuditLog, raw: Raw, n: int,
                   offset: int = 0) -> list[tuple[str, float, float, float]]:
    ours = []
    for k in range(offset, offset + n):
        t0 = time.perf_counter()
        log.instance(association_id=None, study_uid="1.2.3.4.5", series_uid="1.2.3.4.5.1",
                     sop_uid=f"1.2.3.4.5.1.{k}", sop_class_uid="1.2.840.10008.5.1.4.1.1.6.1",
                     transfer_syntax="1.2.840.10008.1.2.1", size=123456, digest="ab" * 32,
                     status="stored", calling_ae="PACS_1", patient_id="P", accession="A1",
                     modality="US", body_part="STOMACH")
        ours.append((time.perf_counter() - t0) * 1000)
    peer = []
    sql = ("INSERT INTO instances (seq, ts, prev_hash, row_hash, size, status, sop_uid) "
           "VALUES (?, ?, ?, ?, ?, ?, ?)")
    base = 10_000_000
    for k in range(offset, offset + n):
        t0 = time.perf_counter()
        if raw.sqlite:
            raw.conn.execute("BEGIN IMMEDIATE")
            raw.conn.execute(sql, (base + k, "2026-01-01 00:00:00.000000", "0", "0", 1, "stored",
                                   str(k)))
            raw.conn.execute("COMMIT")
        else:  # autocommit: each INSERT is its own durable transaction
            raw.conn.execute(sql.replace("?", "%s"), (base + k, dt.datetime.now(dt.timezone.utc),
                                                      "0", "0", 1, "stored", str(k)))
        peer.append((time.perf_counter() - t0) * 1000)

    def row(name: str, xs: list[float]) -> tuple[str, float, float, float]:
        return (name, statistics.mean(xs), float(np.percentile(xs, 50)),
                float(np.percentile(xs, 95)))

    return [row("AuditLog.instance (chain + lock + projection)", ours),
            row("raw INSERT + COMMIT (same durability)", peer)]


def run(kind: str, rows: int, appends: int) -> None:
    schema = None
    tmp = None
    if kind == "sqlite":
        tmp = tempfile.mkdtemp(prefix="eusdx-bench-")
        url = f"sqlite:///{tmp}/audit.db"
    else:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(PG_BASE)
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        url = f"{PG_BASE}?options=-csearch_path%3D{schema}"
    log = AuditLog(url, SECRET)
    log.ensure_schema()
    try:
        raw = Raw(url, schema)
        print(f"\n== {kind}: per-append latency ({appends} appends, ms; "
              f"{'WAL, synchronous=FULL' if kind == 'sqlite' else 'synchronous_commit=on'}) ==")
        lat = append_latency(log, raw, appends)
        print(f"{'writer':48} {'mean':>8} {'p50':>8} {'p95':>8}")
        for name, mean, p50, p95 in lat:
            print(f"{name:48} {mean:8.3f} {p50:8.3f} {p95:8.3f}")
        print(f"{'ratio ours/raw (mean)':48} {lat[0][1] / lat[1][1]:8.2f}")
        if kind == "sqlite":
            # For comparison only: NORMAL may lose the last commits on power loss.
            fast = AuditLog(url, SECRET, sqlite_synchronous="NORMAL")
            raw.conn.execute("PRAGMA synchronous=NORMAL")
            lat_n = append_latency(fast, raw, appends, offset=appends)
            fast.close()
            raw.conn.execute("PRAGMA synchronous=FULL")
            print("synchronous=NORMAL (not used in production):")
            for name, mean, p50, p95 in lat_n:
                print(f"{name:48} {mean:8.3f} {p50:8.3f} {p95:8.3f}")
            print(f"{'ratio ours/raw (mean)':48} {lat_n[0][1] / lat_n[1][1]:8.2f}")
        # Start the query part from an empty log, so the chain is exactly the bulk history.
        log.close()
        from audit.migrate import downgrade, upgrade

        downgrade(log.engine, "base")
        upgrade(log.engine)
        raw.close()
        raw = Raw(url, schema)

        t0 = time.perf_counter()
        bulk = build_history(rows)
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        load(log.engine, bulk)
        t_load = time.perf_counter() - t0
        with log.engine.connect() as conn:
            t0 = time.perf_counter()
            result = verify_chain(conn)
            t_verify = time.perf_counter() - t0
        assert result.ok, result.broken
        from audit.projections import check_projections

        with log.engine.connect() as conn:
            t0 = time.perf_counter()
            mismatches = check_projections(conn)
            t_proj = time.perf_counter() - t0
        assert not mismatches, mismatches[:3]
        print(f"\n== {kind}: {bulk.seq} event rows, {len(bulk.studies)} studies "
              f"(built {t_build:.1f} s, loaded {t_load:.1f} s, verify_chain {t_verify:.2f} s: ok, "
              f"projection check {t_proj:.2f} s: ok) ==")

        reader = QaReader(log, "bench")
        mid = dt.datetime(2026, 8, 1, tzinfo=dt.timezone.utc) + dt.timedelta(
            minutes=20 * len(bulk.studies) // 2)
        f_all = Filters()
        f_some = Filters(ae="PACS_2", status="exported", since=mid)

        def fn_only(fn: Callable[..., Any], f: Filters) -> Callable[[], Any]:
            def call() -> Any:
                with log.engine.connect() as conn:
                    return fn(conn, f)
            return call

        cases = [
            ("studies (1000 newest)", lambda: reader.query("studies", f_all),
             fn_only(studies, f_all), lambda: raw_studies(raw)),
            ("studies --ae --status --since", lambda: reader.query("studies", f_some),
             fn_only(studies, f_some), lambda: raw_studies(raw, "PACS_2", "exported", mid)),
            ("stats (all)", lambda: reader.query("stats", f_all), fn_only(stats, f_all),
             lambda: raw_stats(raw)),
        ]
        print(f"{'query':32} {'QaReader ms':>12} {'query fn ms':>12} {'raw SQL ms':>11} "
              f"{'ratio':>6} {'rows':>6}")
        for name, ours, fn, peer in cases:
            t_ours, res = best_of(ours)
            t_fn, _ = best_of(fn)
            t_raw, raw_res = best_of(peer)
            n = len(res) if isinstance(res, list) else res["volumes"]["studies"]
            if isinstance(res, list):
                assert len(res) == len(raw_res), (name, len(res), len(raw_res))
            print(f"{name:32} {t_ours:12.1f} {t_fn:12.1f} {t_raw:11.1f} {t_ours / t_raw:6.2f} "
                  f"{n:6d}")
        print("(QaReader = query + one audited qa_event append; ratio = QaReader / raw SQL)")
        raw.close()
    finally:
        log.close()
        if schema is not None:
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
        if tmp is not None:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--appends", type=int, default=300)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, sqlalchemy {sa.__version__}, "
          f"sqlite {sqlite3.sqlite_version}, cpus {os.cpu_count()}")
    for kind in (["sqlite", "postgres"] if args.db == "both" else [args.db]):
        run(kind, args.rows, args.appends)


if __name__ == "__main__":
    main()
