"""The bench history loader (bench/history.py) and ``stats`` over a generated history.

The bulk loader bypasses the write path, so the chain verifier and the projection check must accept
what it wrote, and its fast SQLite path must write the same rows as SQLAlchemy Core. ``stats`` takes
the stage seconds out of the timings JSON in SQL; it must agree exactly with the straightforward
reading (every row's JSON parsed in Python, ``numpy.percentile`` per stage).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from audit import AuditLog
from audit.chain import verify_chain
from audit.projections import check_projections
from audit.queries import Filters, _analysis_conditions, stats
from audit.schema import AnalysisEvent, StudyProjection
from bench.history import START, STUDY_SPACING, _load_core, history_chunks, load_history

SECRET = "test-secret"

# The chain head of 300 studies (seed 0) as the loader before the DB-API rewrite wrote it
# (SQLAlchemy Core inserts of ``normalise_row`` dicts hashed by ``row_hash``).
HEAD_300 = (4598, "10f12756b3f5282f68fed267b0f67bdb4ed8d84828b1f542b67f5c30f743143a")


def _dump(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows with each value's SQLite storage class, in a fixed order."""
    out = {}
    with engine.connect() as conn:
        for (name,) in conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all():
            cols = [r[1] for r in conn.exec_driver_sql(f"PRAGMA table_info({name})").all()]
            sql = ", ".join(f"{c}, typeof({c})" for c in cols)
            out[name] = [tuple(r) for r in conn.exec_driver_sql(
                f"SELECT {sql} FROM {name} ORDER BY {', '.join(str(2 * k + 1) for k in range(len(cols)))}")]
    return out


def test_bulk_load_verifies_and_matches_the_core_loader(tmp_path: Path) -> None:
    fast = AuditLog(f"sqlite:///{tmp_path / 'fast.db'}", SECRET)
    core = AuditLog(f"sqlite:///{tmp_path / 'core.db'}", SECRET)
    try:
        for log in (fast, core):
            log.ensure_schema()
        last = load_history(fast.engine, 300, chunk=120)  # indexes dropped and rebuilt around it
        for bulk in history_chunks(300, chunk=120):
            _load_core(core.engine, bulk)
        assert (last.seq, last.hash) == HEAD_300
        with fast.engine.connect() as conn:
            result = verify_chain(conn)
            assert result.ok, result.broken
            assert result.rows == HEAD_300[0]
            assert check_projections(conn) == []
            # the same indexes as a migrated database, and the connection's pragmas put back
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2  # FULL
        fast_rows, core_rows = _dump(fast.engine), _dump(core.engine)
        assert fast_rows.keys() == core_rows.keys()
        for name in fast_rows:
            assert fast_rows[name] == core_rows[name], name
        with fast.engine.connect() as a, core.engine.connect() as b:
            schema = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
            assert a.exec_driver_sql(schema).all() == b.exec_driver_sql(schema).all()
        # the loaded log takes ordinary appends
        fast.qa_event(actor="test", action="studies", params={})
        with fast.engine.connect() as conn:
            assert verify_chain(conn).ok
    finally:
        fast.close()
        core.close()


def _reference_stats_latency(conn: sa.Connection, f: Filters) -> tuple[int, dict[str, int],
                                                                       list[dict[str, Any]]]:
    """What ``stats`` computed before: every analysis row read, its JSON parsed in Python."""
    an = AnalysisEvent
    cond, needs_study = _analysis_conditions(dataclasses.replace(f, status=None))
    stmt = sa.select(an.timings, an.total_seconds, an.error)
    if needs_study:
        stmt = stmt.join(StudyProjection, StudyProjection.study_uid == an.study_uid)
    values: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    total = 0
    for row in conn.execute(stmt.where(*cond)):
        total += 1
        if row.error is not None:
            key = row.error.splitlines()[0][:80] if row.error else ""
            errors[key] = errors.get(key, 0) + 1
            continue
        stages = json.loads(row.timings)
        for stage, seconds in stages.items():
            if seconds is not None:
                values.setdefault(stage, []).append(float(seconds))
        if "total" not in stages and row.total_seconds is not None:
            values.setdefault("total", []).append(float(row.total_seconds))
    latency = []
    for stage, v in sorted(values.items()):
        p50, p95 = np.percentile(np.asarray(v, dtype=float), [50, 95])
        latency.append({"stage": stage, "n": len(v), "p50_s": float(p50), "p95_s": float(p95)})
    return total, errors, latency


def test_stats_matches_the_python_reference(audit_log: AuditLog) -> None:
    load_history(audit_log.engine, 400, seed=3)
    # the branches the generator never takes: a timed total, a null stage, an error with lines
    for k, (timings, error) in enumerate([
            ({"load": 0.5, "total": 9.25, "predict.deep": 1.0, 'q"uote': 2.0}, None),
            ({"load": None, "sr": 0.125}, None),
            ({"load": 3.0}, "decode failed\nTraceback ..."),
            ({}, None)]):
        audit_log.analysis(study_uid=f"1.2.3.{k}", bundle_version="9.9.9", bundle_sha256="b" * 64,
                           device="cpu", timings=timings, lesions=[], probability=None,
                           label=None, roi_source=None, error=error)
    mid = START + STUDY_SPACING * 200
    with audit_log.engine.connect() as conn:
        for f in (Filters(), Filters(ae="PACS_2"), Filters(since=mid, bundle="1.0.0"),
                  Filters(label="GIST", until=mid), Filters(accession="ACC0000007"),
                  Filters(bundle="9.9.9"), Filters(since=dt.datetime(2100, 1, 1))):
            got = stats(conn, f)
            total, errors, latency = _reference_stats_latency(conn, f)
            assert got["latency"] == latency, f
            assert got["volumes"]["analyses"] == total, f
            assert {r["reason"]: r["count"] for r in got["failures"]
                    if r["kind"] == "analysis-error"} == errors, f
        everything = stats(conn, Filters())
    stages = {r["stage"]: r for r in everything["latency"]}
    assert {"load", "sr", "total", "predict.deep"} <= stages.keys()
    assert stages["predict.deep"]["n"] == 1 and stages['q"uote']["p50_s"] == 2.0
    assert any(r["reason"] == "decode failed" for r in everything["failures"])
