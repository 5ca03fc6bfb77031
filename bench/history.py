"""The one generator of historic studies for every large-history bench (audit, worklist, cost curves).

A history is the audit trail a node would have written: per study an association, 3-8 instances
(3 % rejected), received/complete/queued/analysing, an analysis (4 % failed), reported, one export
(a few retried or dead-lettered) and exported, plus a QA read every 50 studies; a valid hash chain
and the projections, exactly as the write path builds them (``row_hash``, ``normalise_row``).

Bulk loading bypasses the per-row API (one transaction per chunk, ``executemany``). Histories of any
size stream in chunks of ``chunk`` studies, so a million studies never sit in memory at once.

    from history import load_history
    load_history(engine, studies=10_000)          # into a migrated, empty audit database
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import random
import uuid
from collections.abc import Iterator
from typing import Any, cast

import sqlalchemy as sa

from audit.chain import canonical_json, normalise_row
from audit.schema import (
    GENESIS_HASH,
    AnalysisEvent,
    AssociationEvent,
    ChainHead,
    ExportEvent,
    InstanceEvent,
    QaEvent,
    StudyEvent,
    StudyExportProjection,
    StudyProjection,
)

__all__ = ["AES", "STAGES", "START", "Bulk", "build_history", "history_chunks", "load", "load_history"]

AES = ["PACS_1", "PACS_2", "PACS_3", "MODALITY_4", "ARCHIVE_5"]
STAGES = ["load", "preprocess", "roi", "features", "classify", "sr"]
START = dt.datetime(2026, 8, 1, tzinfo=dt.timezone.utc)
STUDY_SPACING = dt.timedelta(minutes=20)


class _Spec:
    """What adding a row to one event table needs, computed once per table."""

    def __init__(self, model: Any) -> None:
        table = cast(sa.Table, model.__table__)
        self.table = table
        self.name = table.name
        chain = ("seq", "ts", "prev_hash", "row_hash")
        self.rest = tuple(c for c in table.c.keys() if c not in chain)
        self.columns = chain + self.rest  # the order of a row tuple (and of the INSERT)
        self.known = frozenset(self.columns)
        # (position, length) of every text column: NUL escaped, clipped (``normalise_row``)
        self.texts = tuple((k, table.c[c].type.length) for k, c in enumerate(self.columns)
                           if isinstance(table.c[c].type, sa.String))
        # the hashed body's keys in column order (``canonical`` sorts them when encoding)
        self.body_keys = ("_table", "seq", "ts", "prev_hash") + self.rest
        self.insert = (f"INSERT INTO {self.name} ({', '.join(self.columns)}) "
                       f"VALUES ({', '.join('?' * len(self.columns))})")


_SPECS: dict[Any, _Spec] = {}


def _spec(model: Any) -> _Spec:
    spec = _SPECS.get(model)
    if spec is None:
        spec = _SPECS[model] = _Spec(model)
    return spec


def _utc_text(ts: dt.datetime) -> str:
    """``ts`` as the chain hashes it (``audit.chain``: UTC ISO text, microseconds)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.timezone.utc)
    return ts.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")


class Bulk:
    """Builds a chained history in memory, in ``seq`` order, plus the projections.

    ``rows[model]`` holds tuples ``(seq, ts, prev_hash, row_hash, the other columns in table order)``,
    exactly what ``normalise_row`` makes of the values, hashed as ``row_hash`` hashes them (the
    canonical JSON is built from the same parts without the per-row dict and column walk).
    """

    def __init__(self) -> None:
        self.seq = 0
        self.hash = GENESIS_HASH
        self.rows: dict[Any, list[tuple[Any, ...]]] = {}
        self.studies: dict[str, dict[str, Any]] = {}
        self.exports: dict[tuple[str, str], dict[str, Any]] = {}
        self.total_studies = 0
        self._ts: dt.datetime | None = None
        self._ts_text = ""

    def add(self, model: Any, ts: dt.datetime, **values: Any) -> dict[str, Any]:
        """Append one event row; returns it as a dict (``seq``, ``row_hash``...).

        Raises ``KeyError`` for a column the table does not have, like ``normalise_row``.
        """
        spec = _spec(model)
        if not spec.known.issuperset(values):
            raise KeyError(f"{spec.name} has no column(s) {sorted(set(values) - spec.known)}")
        self.seq += 1
        row = [self.seq, ts, self.hash, ""]
        row += [values.get(c) for c in spec.rest]
        for k, length in spec.texts:
            v = row[k]
            if v.__class__ is str and ("\x00" in v or (length is not None and len(v) > length)):
                # rare: let the write path's normaliser escape and clip (the generator never does)
                clean = normalise_row(spec.table, dict(zip(spec.columns, row)))
                row = [clean[c] for c in spec.columns]
                break
        if ts is not self._ts:  # consecutive rows often share a timestamp
            self._ts, self._ts_text = ts, _utc_text(ts)
        body = dict(zip(spec.body_keys, [spec.name, row[0], self._ts_text, row[2], *row[4:]]))
        digest = hashlib.sha256(self.hash.encode("ascii"))
        digest.update(canonical_json(body).encode("utf-8"))
        self.hash = row[3] = digest.hexdigest()
        rows = self.rows.get(model)
        if rows is None:
            rows = self.rows[model] = []
        rows.append(tuple(row))
        return {"seq": self.seq, "row_hash": self.hash}

    def state(self, uid: str, state: str, ts: dt.datetime, reason: str | None = None) -> None:
        study = self.studies[uid]
        row = self.add(StudyEvent, ts, study_uid=uid, state=state, from_state=study.get("state"),
                       regular=True, reason=reason, accession=study["accession"])
        study.update(state=state, reason=reason, updated_at=ts, last_seq=row["seq"])

    def clear(self) -> None:
        """Forget the rows already loaded; the chain (seq, hash) goes on."""
        self.rows, self.studies, self.exports = {}, {}, {}


def _add_study(bulk: Bulk, rng: random.Random, i: int) -> None:
    uid = f"1.2.826.0.1.3680043.10.99.{i}"
    ae = AES[i % len(AES)]
    t = START + STUDY_SPACING * i
    bundle = "1.0.0" if i % 2 else "1.1.0"
    bulk.total_studies += 1
    assoc = bulk.add(AssociationEvent, t, event="open", association_id=bulk.seq + 1,
                     peer_ae=ae, peer_host="10.1.0.1", peer_port=104, called_ae="EUSDX",
                     tls=False, accepted=True)["seq"]
    n = rng.randint(3, 8)
    for k in range(n):
        t += dt.timedelta(seconds=1)
        if rng.random() < 0.03:
            bulk.add(InstanceEvent, t, association_id=assoc, study_uid=uid, sop_uid="x",
                     size=10, status="rejected", reason="invalid-uid", calling_ae=ae)
            continue
        size = rng.randint(10**5, 10**6)  # the draws in this order: size, digest, patient
        digest = uuid.UUID(int=rng.getrandbits(128)).hex * 2
        patient_hash = f"{rng.getrandbits(256):064x}"
        bulk.add(InstanceEvent, t, association_id=assoc, study_uid=uid,
                 series_uid=uid + ".1", sop_uid=f"{uid}.1.{k}",
                 sop_class_uid="1.2.840.10008.5.1.4.1.1.6.1",
                 transfer_syntax="1.2.840.10008.1.2.1", size=size, digest=digest,
                 status="stored", calling_ae=ae, patient_hash=patient_hash,
                 accession=f"ACC{i:07d}", modality="US", body_part="STOMACH")
        if uid not in bulk.studies:
            bulk.studies[uid] = dict(study_uid=uid, accession=f"ACC{i:07d}",
                                     patient_hash=patient_hash, calling_ae=ae,
                                     modality="US", body_part="STOMACH", first_seen=t,
                                     instances=0)
            bulk.state(uid, "received", t, "first instance")
        bulk.studies[uid]["instances"] += 1
    bulk.add(AssociationEvent, t, event="close", association_id=assoc, instances=n)
    if uid not in bulk.studies:
        return
    t += dt.timedelta(seconds=30)
    bulk.state(uid, "complete", t)
    if rng.random() < 0.05:
        bulk.state(uid, "not-routed", t, "body-part")
        return
    bulk.state(uid, "queued", t)
    t += dt.timedelta(seconds=2)
    bulk.state(uid, "analysing", t)
    timings = {s: round(rng.lognormvariate(0, 0.5), 4) for s in STAGES}
    t += dt.timedelta(seconds=sum(timings.values()))
    if rng.random() < 0.04:
        bulk.add(AnalysisEvent, t, study_uid=uid, bundle_version=bundle,
                 bundle_sha256="a" * 64, device="cpu", timings=canonical_json(timings),
                 total_seconds=sum(timings.values()), lesions="[]",
                 error="no-usable-frames")
        bulk.state(uid, "failed", t, "no-usable-frames")
        return
    p = rng.random()
    label = "GIST" if p >= 0.5 else "leiomyoma"
    sr = uid + ".99"
    bulk.add(AnalysisEvent, t, study_uid=uid, bundle_version=bundle, bundle_sha256="a" * 64,
             device="cpu", timings=canonical_json(timings),
             total_seconds=sum(timings.values()),
             lesions=canonical_json([{"probability": p}]), probability=p, label=label,
             roi_source="seg", sr_sop_uid=sr)
    bulk.studies[uid].update(bundle_version=bundle, label=label, probability=p,
                             sr_sop_uid=sr, analysis_seconds=sum(timings.values()))
    bulk.state(uid, "reported", t)
    dest = f"{ae}@10.1.0.1:104"
    r = rng.random()
    attempts = [("sent", None)] if r < 0.88 else \
        [("failed", "refused"), ("sent", None)] if r < 0.95 else \
        [("failed", "refused")] * 3 + [("dead-letter", "refused")] if r < 0.98 else \
        [("queued", None)]
    for a, (status, error) in enumerate(attempts, start=1):
        t += dt.timedelta(seconds=5 * a)
        bulk.add(ExportEvent, t, study_uid=uid, destination=dest, attempt=a, status=status,
                 sr_sop_uid=sr, error=error)
        bulk.exports[(uid, dest)] = dict(study_uid=uid, destination=dest, status=status,
                                         attempts=a, sr_sop_uid=sr, error=error,
                                         updated_at=t)
    if attempts[-1][0] == "sent":
        bulk.state(uid, "exported", t)
    if i % 50 == 0:
        bulk.add(QaEvent, t, actor="cli:qa", action="studies", params='{"limit":1000}')


def build_history(target_rows: int, seed: int = 0) -> Bulk:
    """A history of at least ``target_rows`` event rows, in memory (bench/audit.py's size unit)."""
    rng = random.Random(seed)
    bulk = Bulk()
    i = 0
    while bulk.seq < target_rows:
        i += 1
        _add_study(bulk, rng, i)
    return bulk


def history_chunks(studies: int, seed: int = 0, chunk: int = 5000) -> Iterator[Bulk]:
    """A history of ``studies`` studies as successive chunks (the same ``Bulk``, cleared after
    each is consumed: load it before asking for the next)."""
    rng = random.Random(seed)
    bulk = Bulk()
    for i in range(1, studies + 1):
        _add_study(bulk, rng, i)
        if i % chunk == 0 or i == studies:
            yield bulk
            bulk.clear()


def _sqlite_ts(value: Any) -> Any:
    """A datetime as SQLAlchemy's SQLite dialect stores it (naive UTC, microseconds)."""
    if isinstance(value, dt.datetime):
        return _utc_text(value)[:26].replace("T", " ")
    return value


def _projection_rows(table: sa.Table, rows: Any) -> tuple[str, list[tuple[Any, ...]]]:
    cols = tuple(table.c.keys())
    sql = f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    return sql, [tuple(_sqlite_ts(v) for v in normalise_row(table, r).values()) for r in rows]


def _load_sqlite(raw: Any, bulk: Bulk) -> None:
    """One chunk in one transaction, through the DB-API (``executemany`` of prepared tuples)."""
    cur = raw.cursor()
    cur.execute("BEGIN IMMEDIATE")
    try:
        last: Any = None
        text = ""
        for model, rows in bulk.rows.items():
            tuples = []
            for r in rows:
                if r[1] is not last:
                    last, text = r[1], _sqlite_ts(r[1])
                tuples.append((r[0], text, *r[2:]))
            cur.executemany(_spec(model).insert, tuples)
        for table, rows in ((StudyProjection.__table__, bulk.studies.values()),
                            (StudyExportProjection.__table__, bulk.exports.values())):
            sql, tuples = _projection_rows(cast(sa.Table, table), rows)
            if tuples:
                cur.executemany(sql, tuples)
        cur.execute("UPDATE chain_head SET seq = ?, row_hash = ? WHERE id = 1", (bulk.seq, bulk.hash))
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    finally:
        cur.close()


def _load_core(engine: sa.Engine, bulk: Bulk) -> None:
    """Any database: SQLAlchemy Core inserts, one transaction."""
    with engine.begin() as conn:
        for model, rows in bulk.rows.items():
            cols = _spec(model).columns
            for k in range(0, len(rows), 5000):
                conn.execute(sa.insert(model.__table__), [dict(zip(cols, r)) for r in rows[k:k + 5000]])
        studies_table = cast(sa.Table, StudyProjection.__table__)
        studies_rows = [normalise_row(studies_table, s) for s in bulk.studies.values()]
        if studies_rows:
            conn.execute(sa.insert(studies_table), studies_rows)
        if bulk.exports:
            conn.execute(sa.insert(cast(sa.Table, StudyExportProjection.__table__)),
                         list(bulk.exports.values()))
        conn.execute(sa.update(ChainHead).where(ChainHead.id == 1)
                     .values(seq=bulk.seq, row_hash=bulk.hash))


@contextlib.contextmanager
def _sqlite_bulk(engine: sa.Engine, *, defer_indexes: bool) -> Iterator[Any]:
    """A raw SQLite connection set up for a bench load: ``synchronous=OFF`` and a 1 GiB page cache
    (a crash mid-load loses the fixture, never a product row: the product's engine keeps FULL),
    and with ``defer_indexes`` the secondary indexes dropped for the load and built again after
    it (the same DDL, read from ``sqlite_master``: the schema the queries see is unchanged). The
    connection's settings are put back before it returns to the pool.
    """
    raw = engine.raw_connection()
    cur = raw.cursor()
    try:
        sync = cur.execute("PRAGMA synchronous").fetchone()[0]
        cache = cur.execute("PRAGMA cache_size").fetchone()[0]
        cur.execute("PRAGMA synchronous=OFF")
        cur.execute("PRAGMA cache_size=-1048576")
        indexes: list[tuple[str, str]] = []
        if defer_indexes:
            indexes = cur.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                                  "AND sql IS NOT NULL ORDER BY name").fetchall()
            for name, _ in indexes:
                cur.execute(f'DROP INDEX "{name}"')
        try:
            yield raw
        finally:
            for _, sql in indexes:
                cur.execute(sql)
            cur.execute(f"PRAGMA synchronous={int(sync)}")
            cur.execute(f"PRAGMA cache_size={int(cache)}")
    finally:
        cur.close()
        raw.close()


def load(engine: sa.Engine, bulk: Bulk) -> None:
    """Insert a built history (or one chunk of it) and move the chain head to its end.

    SQLite: DB-API ``executemany`` with ``synchronous=OFF`` for the load; other databases:
    SQLAlchemy Core. Both write the same rows.
    """
    if engine.dialect.name == "sqlite":
        with _sqlite_bulk(engine, defer_indexes=False) as raw:
            _load_sqlite(raw, bulk)
    else:
        _load_core(engine, bulk)


def load_history(engine: sa.Engine, studies: int, seed: int = 0, chunk: int = 5000) -> Bulk:
    """Stream a history of ``studies`` studies into an empty, migrated audit database; returns the
    last (cleared) chunk, whose ``seq`` is the number of event rows written.

    On SQLite the secondary indexes are built once after the rows are in (see ``_sqlite_bulk``).
    """
    last = Bulk()
    if engine.dialect.name != "sqlite":
        for bulk in history_chunks(studies, seed, chunk):
            _load_core(engine, bulk)
            last = bulk
        return last
    with _sqlite_bulk(engine, defer_indexes=True) as raw:
        for bulk in history_chunks(studies, seed, chunk):
            _load_sqlite(raw, bulk)
            last = bulk
    return last
