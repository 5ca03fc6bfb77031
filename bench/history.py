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

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from typing import Any, cast

import sqlalchemy as sa

from audit.chain import canonical_json, normalise_row, row_hash
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


class Bulk:
    """Builds a chained history in memory, in ``seq`` order, plus the projections."""

    def __init__(self) -> None:
        self.seq = 0
        self.hash = GENESIS_HASH
        self.rows: dict[Any, list[dict[str, Any]]] = {}
        self.studies: dict[str, dict[str, Any]] = {}
        self.exports: dict[tuple[str, str], dict[str, Any]] = {}
        self.total_studies = 0

    def add(self, model: Any, ts: dt.datetime, **values: Any) -> dict[str, Any]:
        table = model.__table__
        self.seq += 1
        row = normalise_row(table, {**values, "seq": self.seq, "ts": ts, "prev_hash": self.hash,
                                    "row_hash": ""})
        row["row_hash"] = row_hash(self.hash, table.name, row)
        self.hash = row["row_hash"]
        self.rows.setdefault(model, []).append(row)
        return row

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
        row = bulk.add(InstanceEvent, t, association_id=assoc, study_uid=uid,
                       series_uid=uid + ".1", sop_uid=f"{uid}.1.{k}",
                       sop_class_uid="1.2.840.10008.5.1.4.1.1.6.1",
                       transfer_syntax="1.2.840.10008.1.2.1", size=rng.randint(10**5, 10**6),
                       digest=uuid.UUID(int=rng.getrandbits(128)).hex * 2, status="stored",
                       calling_ae=ae, patient_hash=f"{rng.getrandbits(256):064x}",
                       accession=f"ACC{i:07d}", modality="US", body_part="STOMACH")
        if uid not in bulk.studies:
            bulk.studies[uid] = dict(study_uid=uid, accession=f"ACC{i:07d}",
                                     patient_hash=row["patient_hash"], calling_ae=ae,
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


def load(engine: sa.Engine, bulk: Bulk) -> None:
    """Insert a built history (or one chunk of it) and move the chain head to its end."""
    with engine.begin() as conn:
        for model, rows in bulk.rows.items():
            for k in range(0, len(rows), 5000):
                conn.execute(sa.insert(model.__table__), rows[k:k + 5000])
        studies_table = cast(sa.Table, StudyProjection.__table__)
        studies_rows = [normalise_row(studies_table, s) for s in bulk.studies.values()]
        if studies_rows:
            conn.execute(sa.insert(studies_table), studies_rows)
        if bulk.exports:
            conn.execute(sa.insert(cast(sa.Table, StudyExportProjection.__table__)),
                         list(bulk.exports.values()))
        conn.execute(sa.update(ChainHead).where(ChainHead.id == 1)
                     .values(seq=bulk.seq, row_hash=bulk.hash))


def load_history(engine: sa.Engine, studies: int, seed: int = 0, chunk: int = 5000) -> Bulk:
    """Stream a history of ``studies`` studies into an empty, migrated audit database; returns the
    last (cleared) chunk, whose ``seq`` is the number of event rows written."""
    last = Bulk()
    for bulk in history_chunks(studies, seed, chunk):
        load(engine, bulk)
        last = bulk
    return last
