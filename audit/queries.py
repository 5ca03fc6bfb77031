"""QA queries over the audit log. Every filter value reaches SQL as a bound parameter.

Each query is a plain function ``(conn, Filters) -> rows`` (rows are dicts); :class:`QaReader`
wraps them so that every read is itself recorded as a ``qa_event`` before it runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import Connection, and_, cast, func, select, true
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from audit.chain import VerifyResult, verify_chain
from audit.errors import AuditUnavailable, QueryError
from audit.projections import ProjectionMismatch
from audit.log import EXPORT_STATUSES, STUDY_STATES, AuditLog
from audit.schema import (
    AnalysisEvent,
    AssociationEvent,
    ExportEvent,
    InstanceEvent,
    QaEvent,
    StudyEvent,
    StudyExportProjection,
    StudyProjection,
)

T = TypeVar("T")

__all__ = [
    "Filters",
    "parse_when",
    "studies",
    "failures",
    "timings",
    "exports",
    "show",
    "stats",
    "worklist",
    "QaReader",
    "AuditCheck",
    "QUERIES",
]

_MAX_LIMIT = 100_000


def parse_when(text: str | None, *, name: str = "date") -> dt.datetime | None:
    """Parse an ISO date or date-time; naive values are UTC. Returns an aware UTC datetime.

    Raises
    ------
    QueryError
        The text is not an ISO 8601 date or date-time.
    """
    if text is None or text == "":
        return None
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise QueryError(f"{name} {text!r} is not an ISO date (YYYY-MM-DD[THH:MM[:SS]])") from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


@dataclasses.dataclass(frozen=True)
class Filters:
    """Filters shared by the QA queries (``None`` = no filter)."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    ae: str | None = None
    status: str | None = None
    label: str | None = None
    bundle: str | None = None
    accession: str | None = None
    limit: int = 1000

    def __post_init__(self) -> None:
        if not 0 <= self.limit <= _MAX_LIMIT:
            raise QueryError(f"limit must lie in 0..{_MAX_LIMIT} (0 = no limit), got {self.limit}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                object.__setattr__(self, name, value.replace(tzinfo=dt.timezone.utc))
        if self.since and self.until and self.since > self.until:
            raise QueryError("--since is after --until")

    @classmethod
    def from_text(cls, *, since: str | None = None, until: str | None = None,
                  ae: str | None = None, status: str | None = None, label: str | None = None,
                  bundle: str | None = None, accession: str | None = None,
                  limit: int = 1000) -> Filters:
        """Build from user text (CLI options, HTTP query parameters)."""
        return cls(since=parse_when(since, name="--since"), until=parse_when(until, name="--until"),
                   ae=ae or None, status=status or None, label=label or None,
                   bundle=bundle or None, accession=accession or None, limit=limit)

    def as_params(self) -> dict[str, Any]:
        """The filters as JSON-able values (what the qa_event records)."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            out[field.name] = value.isoformat() if isinstance(value, dt.datetime) else value
        return out


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite stores DateTime as naive UTC text: bind the same (PostgreSQL is told it is UTC).
    if value is None:
        return None
    return value.astimezone(dt.timezone.utc)


def _time_range(column: Any, f: Filters) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    if f.since is not None:
        out.append(column >= _utc(f.since))
    if f.until is not None:
        out.append(column < _utc(f.until))
    return out


def _iso(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")
    return value


#: Every DateTime column of the schema.
_STAMP_COLUMNS = frozenset({"ts", "first_seen", "updated_at"})


def _rows(result: Any) -> list[dict[str, Any]]:
    keys = list(result.keys())
    out = [dict(zip(keys, row)) for row in result]
    # Only the timestamp columns need converting (checking every cell costs more than the query).
    stamp_keys = _STAMP_COLUMNS.intersection(keys)
    for row in out:
        for key in stamp_keys:
            row[key] = _iso(row[key])
    return out


def _limit(stmt: Any, f: Filters) -> Any:
    return stmt.limit(f.limit) if f.limit else stmt


def _study_filters(f: Filters, *, ae: bool = True) -> list[ColumnElement[bool]]:
    """The study-level filters on ``studies``: sending AE (when ``ae``), accession, label, bundle."""
    s = StudyProjection
    cond: list[ColumnElement[bool]] = []
    if ae and f.ae:
        cond.append(s.calling_ae == f.ae)
    if f.accession:
        cond.append(s.accession == f.accession)
    if f.label:
        cond.append(s.label == f.label)
    if f.bundle:
        cond.append(s.bundle_version == f.bundle)
    return cond


def _study_conditions(f: Filters, *, status: bool = True) -> list[ColumnElement[bool]]:
    s = StudyProjection
    cond = _time_range(s.first_seen, f) + _study_filters(f)
    if status and f.status:
        cond.append(s.state == f.status)
    return cond


_STUDY_COLUMNS = (
    StudyProjection.study_uid, StudyProjection.accession, StudyProjection.calling_ae,
    StudyProjection.state, StudyProjection.reason, StudyProjection.first_seen,
    StudyProjection.updated_at, StudyProjection.instances, StudyProjection.label,
    StudyProjection.probability, StudyProjection.bundle_version, StudyProjection.sr_sop_uid,
    StudyProjection.analysis_seconds,
)


def studies(conn: Connection, f: Filters) -> list[dict[str, Any]]:
    """Studies (current state), newest first; ``--since/--until`` apply to first arrival."""
    if f.status and f.status not in STUDY_STATES:
        raise QueryError(f"--status {f.status!r} is not a study state ({', '.join(STUDY_STATES)})")
    stmt = select(*_STUDY_COLUMNS).where(and_(True, *_study_conditions(f))).order_by(
        StudyProjection.first_seen.desc(), StudyProjection.study_uid)
    return _rows(conn.execute(_limit(stmt, f)))


_FAILURE_STATUSES = ("rejected", "failed", "error", "dead-letter")


def _through_study(stmt: Any, uid_col: Any, f: Filters, *, ae: bool) -> Any:
    """Apply the study-level filters (and the sending AE when ``ae``) through a join."""
    cond = _study_filters(f, ae=ae)
    if cond:
        stmt = stmt.join(StudyProjection, StudyProjection.study_uid == uid_col).where(*cond)
    return stmt


def failures(conn: Connection, f: Filters) -> list[dict[str, Any]]:
    """Everything that went wrong, newest first: rejected associations and instances, failed
    studies, analysis errors, failed or dead-lettered exports.

    ``--status`` narrows to ``rejected``, ``failed``, ``error`` or ``dead-letter``.
    """
    if f.status and f.status not in _FAILURE_STATUSES:
        raise QueryError(f"--status for failures is one of {', '.join(_FAILURE_STATUSES)}")
    want = set(_FAILURE_STATUSES) if f.status is None else {f.status}
    parts: list[tuple[str, Any]] = []
    stmt: Any

    a = AssociationEvent
    if "rejected" in want and not (f.accession or f.label or f.bundle):
        stmt = select(a.seq, a.ts, a.peer_ae.label("ae"), a.reason).where(
            a.event == "open", a.accepted.is_(False), *_time_range(a.ts, f))
        if f.ae:
            stmt = stmt.where(a.peer_ae == f.ae)
        parts.append(("association-rejected", stmt.order_by(a.seq.desc())))

    i = InstanceEvent
    if "rejected" in want:
        stmt = select(i.seq, i.ts, i.calling_ae.label("ae"), i.reason, i.study_uid,
                      i.sop_uid).where(i.status == "rejected", *_time_range(i.ts, f))
        if f.ae:
            stmt = stmt.where(i.calling_ae == f.ae)
        parts.append(("instance-rejected",
                      _through_study(stmt, i.study_uid, f, ae=False).order_by(i.seq.desc())))

    s = StudyEvent
    if "failed" in want:
        stmt = select(s.seq, s.ts, s.reason, s.study_uid).where(
            s.state == "failed", *_time_range(s.ts, f))
        parts.append(("study-failed",
                      _through_study(stmt, s.study_uid, f, ae=True).order_by(s.seq.desc())))

    an = AnalysisEvent
    if want & {"failed", "error"}:
        stmt = select(an.seq, an.ts, an.error.label("reason"), an.study_uid,
                      an.bundle_version).where(an.error.is_not(None), *_time_range(an.ts, f))
        parts.append(("analysis-error",
                      _through_study(stmt, an.study_uid, f, ae=True).order_by(an.seq.desc())))

    e = ExportEvent
    export_want = sorted(want & {"failed", "dead-letter"})
    if export_want:
        stmt = select(e.seq, e.ts, e.error.label("reason"), e.study_uid, e.destination,
                      e.status.label("export_status")).where(
            e.status.in_(export_want), *_time_range(e.ts, f))
        parts.append(("export",
                      _through_study(stmt, e.study_uid, f, ae=True).order_by(e.seq.desc())))

    rows: list[dict[str, Any]] = []
    for kind, stmt in parts:
        for row in _rows(conn.execute(_limit(stmt, f))):
            if kind == "export":
                kind_row = "export-" + row.pop("export_status")
            else:
                kind_row = kind
            rows.append({"seq": row.pop("seq"), "ts": row.pop("ts"), "kind": kind_row,
                         "study_uid": row.pop("study_uid", None), "ae": row.pop("ae", None),
                         "reason": row.pop("reason", None), **row})
    rows.sort(key=lambda r: r["seq"], reverse=True)
    return rows[: f.limit] if f.limit else rows


def _analysis_conditions(f: Filters) -> tuple[list[ColumnElement[bool]], bool]:
    an = AnalysisEvent
    cond = _time_range(an.ts, f)
    if f.bundle:
        cond.append(an.bundle_version == f.bundle)
    if f.label:
        cond.append(an.label == f.label)
    needs_study = False
    if f.ae:
        cond.append(StudyProjection.calling_ae == f.ae)
        needs_study = True
    if f.accession:
        cond.append(StudyProjection.accession == f.accession)
        needs_study = True
    if f.status == "error":
        cond.append(an.error.is_not(None))
    elif f.status == "ok":
        cond.append(an.error.is_(None))
    elif f.status:
        raise QueryError("--status for timings is 'ok' or 'error'")
    return cond, needs_study


def timings(conn: Connection, f: Filters) -> list[dict[str, Any]]:
    """One row per analysis with its per-stage seconds, newest first."""
    an = AnalysisEvent
    cond, needs_study = _analysis_conditions(f)
    stmt = select(an.seq, an.ts, an.study_uid, an.bundle_version, an.device, an.label,
                  an.probability, an.total_seconds, an.timings, an.error)
    if needs_study:
        stmt = stmt.join(StudyProjection, StudyProjection.study_uid == an.study_uid)
    stmt = _limit(stmt.where(*cond).order_by(an.seq.desc()), f)
    rows = _rows(conn.execute(stmt))
    for row in rows:
        stages = json.loads(row.pop("timings") or "{}")
        for stage, seconds in sorted(stages.items()):
            row[f"t_{stage}"] = seconds
    return rows


def exports(conn: Connection, f: Filters) -> list[dict[str, Any]]:
    """The outbox: latest status per (study, destination), most recently changed first."""
    if f.status and f.status not in EXPORT_STATUSES:
        raise QueryError(f"--status {f.status!r} is not an export status "
                         f"({', '.join(EXPORT_STATUSES)})")
    x = StudyExportProjection
    stmt = select(x.study_uid, StudyProjection.accession, x.destination, x.status, x.attempts,
                  x.sr_sop_uid, x.error, x.updated_at).outerjoin(
        StudyProjection, StudyProjection.study_uid == x.study_uid)
    cond = _time_range(x.updated_at, f) + _study_filters(f)
    if f.status:
        cond.append(x.status == f.status)
    stmt = _limit(stmt.where(*cond).order_by(x.updated_at.desc(), x.study_uid), f)
    return _rows(conn.execute(stmt))


def show(conn: Connection, study_uid: str) -> dict[str, Any] | None:
    """One study: its current state and every event that names it, in chain order."""
    study = conn.execute(select(StudyProjection).where(
        StudyProjection.study_uid == study_uid)).mappings().first()
    events: list[dict[str, Any]] = []
    for model, kind in ((InstanceEvent, "instance"), (StudyEvent, "state"),
                        (AnalysisEvent, "analysis"), (ExportEvent, "export")):
        table = model.__table__
        cols = [c for c in table.c if c.name not in ("prev_hash", "row_hash", "study_uid")]
        for row in _rows(conn.execute(select(*cols).where(table.c.study_uid == study_uid))):
            events.append({"kind": kind, **{k: v for k, v in row.items() if v is not None}})
    from audit.feedback import feedback_history

    for row in feedback_history(conn, study_uid):
        row["feedback"] = row.pop("kind")  # verdict | pathology; "kind" names the event table
        events.append({"kind": "feedback", **{k: v for k, v in row.items() if v is not None}})
    if study is None and not events:
        return None
    events.sort(key=lambda r: r["seq"])
    return {"study": {k: _iso(v) for k, v in study.items()} if study else None, "events": events}


def _percentiles(values: np.ndarray) -> tuple[float | None, float | None]:
    if not values.size:
        return None, None
    p50, p95 = np.percentile(values, [50, 95])
    return float(p50), float(p95)


def _analyses(stmt: Any, cond: list[ColumnElement[bool]], needs_study: bool) -> Any:
    if needs_study:
        stmt = stmt.join(StudyProjection, StudyProjection.study_uid == AnalysisEvent.study_uid)
    return stmt.where(*cond)


def _analysis_errors(conn: Connection, cond: list[ColumnElement[bool]],
                     needs_study: bool) -> tuple[int, dict[str, int]]:
    """Analyses in range and error counts by reason (an error's first line, 80 characters),
    counted by the database: one row per distinct error text reaches Python."""
    an = AnalysisEvent
    total = 0
    errors: dict[str, int] = {}
    stmt = select(an.error, func.count().label("n")).select_from(an)
    for row in conn.execute(_analyses(stmt, cond, needs_study).group_by(an.error)):
        total += int(row.n)
        if row.error is not None:
            key = row.error.splitlines()[0][:80] if row.error else ""
            errors[key] = errors.get(key, 0) + int(row.n)
    return total, errors


def _stage_seconds(conn: Connection, cond: list[ColumnElement[bool]],
                   needs_study: bool) -> dict[str, np.ndarray]:
    """Seconds per stage of every successful analysis in range, as float arrays.

    The database takes the numbers out of the ``timings`` JSON (SQLite ``json_extract``,
    PostgreSQL ``->>``), one column per stage, so Python never parses a row's JSON; the stages
    are the keys that occur (one ``SELECT DISTINCT`` over ``json_each`` / ``jsonb_object_keys``).
    ``total`` is the ``total`` stage where the worker timed it, else ``total_seconds`` (the sum
    of the stages). JSON ``null`` values are left out. Percentiles stay ``numpy.percentile``
    (linear interpolation) over these arrays, so the output is unchanged. Cost: still one pass
    over the analyses in range and one small tuple per analysis (bench/RESULTS.md "Cost curves").
    """
    an = AnalysisEvent
    ok = [*cond, an.error.is_(None)]
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:
        each = func.json_each(an.timings).table_valued("key").alias("j")
        keys_stmt = select(each.c.key).select_from(an).join(each, true())
    else:
        keys_stmt = select(func.jsonb_object_keys(cast(an.timings, JSONB)).label("key")) \
            .select_from(an)
    keys = sorted({str(row.key) for row in conn.execute(
        _analyses(keys_stmt, ok, needs_study).distinct())})
    # a SQLite JSON path cannot quote '"' or '\': such a stage (never written) is read in Python
    odd = [k for k in keys if '"' in k or "\\" in k] if sqlite else []
    plain = [k for k in keys if k not in odd]
    columns = [func.json_extract(an.timings, f'$."{key}"') if sqlite
               else cast(an.timings, JSONB).op("->>")(key) for key in plain]
    has_total = (func.json_type(an.timings, "$.total").is_not(None) if sqlite
                 else func.jsonb_exists(cast(an.timings, JSONB), "total"))
    stmt = select(an.total_seconds, has_total, *columns, *([an.timings] if odd else []))
    rows = conn.execute(_analyses(stmt.select_from(an), ok, needs_study)).all()
    out: dict[str, np.ndarray] = {}
    by_column = list(zip(*rows))
    for k, key in enumerate(plain, start=2):
        values = [float(v) for v in by_column[k] if v is not None] if rows else []
        if values:
            out[key] = np.asarray(values, dtype=float)
    for key in odd:
        values = [float(v) for r in rows if (v := json.loads(r[-1]).get(key)) is not None]
        if values:
            out[key] = np.asarray(values, dtype=float)
    extra = [float(r[0]) for r in rows if not r[1] and r[0] is not None]
    if extra:
        out["total"] = np.concatenate([out.get("total", np.empty(0)), np.asarray(extra)])
    return out


def stats(conn: Connection, f: Filters) -> dict[str, Any]:
    """Volumes, failure rate by reason, p50/p95 seconds per stage, outbox depth."""
    s = StudyProjection
    study_cond = _study_conditions(f, status=False)
    by_state = {row.state: int(row.n) for row in conn.execute(
        select(s.state, func.count().label("n")).where(*study_cond).group_by(s.state))}

    i = InstanceEvent
    inst_cond = _time_range(i.ts, f) + ([i.calling_ae == f.ae] if f.ae else [])
    by_status = {row.status: int(row.n) for row in conn.execute(
        select(i.status, func.count().label("n")).where(*inst_cond).group_by(i.status))}

    a = AssociationEvent
    assoc_cond = [a.event == "open", *_time_range(a.ts, f)] + ([a.peer_ae == f.ae] if f.ae else [])
    assoc = {bool(row.accepted): int(row.n) for row in conn.execute(
        select(a.accepted, func.count().label("n")).where(*assoc_cond).group_by(a.accepted))}

    failure_rows: list[dict[str, Any]] = []

    def add(kind: str, total: int, grouped: Any) -> None:
        for row in grouped:
            failure_rows.append({"kind": kind, "reason": row.reason, "count": int(row.n),
                                 "of": total, "rate": (int(row.n) / total) if total else None})

    add("association-rejected", sum(assoc.values()), conn.execute(
        select(a.reason, func.count().label("n")).where(*assoc_cond, a.accepted.is_(False))
        .group_by(a.reason)))
    add("instance-rejected", sum(by_status.values()), conn.execute(
        select(i.reason, func.count().label("n")).where(*inst_cond, i.status == "rejected")
        .group_by(i.reason)))
    add("study-failed", sum(by_state.values()), conn.execute(
        select(s.reason, func.count().label("n")).where(*study_cond, s.state == "failed")
        .group_by(s.reason)))

    cond, needs_study = _analysis_conditions(dataclasses.replace(f, status=None))
    analyses_total, errors = _analysis_errors(conn, cond, needs_study)
    for reason, n in sorted(errors.items()):
        failure_rows.append({"kind": "analysis-error", "reason": reason, "count": n,
                             "of": analyses_total, "rate": n / analyses_total})
    stage_values = _stage_seconds(conn, cond, needs_study)

    e = ExportEvent
    exp_cond = _time_range(e.ts, f)
    exp_total = int(conn.execute(select(func.count()).select_from(e).where(*exp_cond))
                    .scalar_one())
    add("export-failed", exp_total, conn.execute(
        select(e.error.label("reason"), func.count().label("n")).where(
            *exp_cond, e.status.in_(("failed", "dead-letter"))).group_by(e.error)))

    latency = []
    for stage, values in sorted(stage_values.items()):
        p50, p95 = _percentiles(values)
        latency.append({"stage": stage, "n": int(values.size), "p50_s": p50, "p95_s": p95})

    x = StudyExportProjection
    outbox = {row.status: int(row.n) for row in conn.execute(
        select(x.status, func.count().label("n")).where(x.status.in_(("queued", "failed")))
        .group_by(x.status))}
    dead = int(conn.execute(select(func.count()).select_from(x).where(
        x.status == "dead-letter")).scalar_one())

    return {
        "volumes": {
            "studies": sum(by_state.values()),
            "studies_by_state": by_state,
            "instances_by_status": by_status,
            "associations_accepted": assoc.get(True, 0),
            "associations_rejected": assoc.get(False, 0),
            "analyses": analyses_total,
        },
        "failures": sorted(failure_rows, key=lambda r: (-r["count"], r["kind"])),
        "latency": latency,
        "outbox": {"depth": sum(outbox.values()), "queued": outbox.get("queued", 0),
                   "failed": outbox.get("failed", 0), "dead_letter": dead},
    }


def worklist(conn: Connection, *, cursor: int = 0, limit: int = 100,
             threshold: float = 0.7) -> dict[str, Any]:
    """Analysis results after ``cursor`` (a chain ``seq``), oldest first, for the radiology feed.

    Only each study's current result appears: when late images made a new revision, the result of the
    earlier revision (whose SR the amended SR replaces) leaves the feed. ``priority`` is true when the
    GIST probability exceeds ``threshold``; ``verdict`` and ``pathology`` carry the study's latest
    feedback of each kind (or ``None``).
    """
    if cursor < 0 or not 1 <= limit <= 1000:
        raise QueryError("cursor must be >= 0 and limit in 1..1000")
    an = AnalysisEvent
    stmt = (
        select(an.seq, an.ts, an.study_uid, StudyProjection.accession, an.label, an.probability,
               an.bundle_version, an.sr_sop_uid, an.roi_source,
               StudyProjection.state.label("status"))
        .join(StudyProjection, (StudyProjection.study_uid == an.study_uid)
              & (StudyProjection.sr_sop_uid == an.sr_sop_uid))
        .where(an.seq > cursor, an.error.is_(None))
        .order_by(an.seq)
        .limit(limit)
    )
    items = _rows(conn.execute(stmt))
    from audit.feedback import latest_feedback

    feedback = latest_feedback(conn, (i["study_uid"] for i in items))
    for item in items:
        p = item["probability"]
        item["priority"] = bool(p is not None and item["label"] is not None and p > threshold)
        # The latest verdict and pathology at the time of reading (``null`` when none yet).
        given = feedback.get(item["study_uid"], {})
        verdict, pathology = given.get("verdict"), given.get("pathology")
        item["verdict"] = None if verdict is None else {
            k: verdict[k] for k in ("verdict", "corrected_label", "comment", "recorded_by", "ts")}
        item["pathology"] = None if pathology is None else {
            k: pathology[k] for k in ("truth", "diagnosed_on", "source", "recorded_by", "ts")}
    next_cursor = items[-1]["seq"] if items else cursor
    return {"items": items, "next_cursor": next_cursor}


#: name -> query function taking (conn, Filters)
QUERIES: dict[str, Callable[[Connection, Filters], Any]] = {
    "studies": studies,
    "failures": failures,
    "timings": timings,
    "exports": exports,
    "stats": stats,
}


@dataclasses.dataclass(frozen=True)
class AuditCheck:
    """What ``audit verify`` found: the chain, and projection values the events do not support."""

    chain: VerifyResult
    projections: list[ProjectionMismatch]

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.projections


class QaReader:
    """Runs QA queries for one actor, recording each read as a ``qa_event`` first.

    The event is written before the read so that even a read that fails half-way is on record;
    if it cannot be written the read does not happen (:class:`AuditUnavailable`).
    """

    def __init__(self, log: AuditLog, actor: str) -> None:
        self.log = log
        self.actor = actor

    def _audit(self, action: str, params: dict[str, Any]) -> None:
        self.log.qa_event(actor=self.actor, action=action, params=params)

    def _read(self, fn: Callable[[Connection], T]) -> T:
        try:
            with self.log.engine.connect() as conn:
                return fn(conn)
        except SQLAlchemyError as exc:
            raise AuditUnavailable(f"audit read failed: {type(exc).__name__}") from exc

    def query(self, name: str, f: Filters) -> Any:
        """Run the named query (``studies``, ``failures``, ``timings``, ``exports``, ``stats``)."""
        if name not in QUERIES:
            raise QueryError(f"unknown query {name!r}; one of {', '.join(QUERIES)}")
        self._audit(name, f.as_params())
        return self._read(lambda conn: QUERIES[name](conn, f))

    def show(self, study_uid: str) -> dict[str, Any] | None:
        """One study's state and timeline (``None`` if unknown)."""
        self._audit("show", {"study_uid": study_uid})
        return self._read(lambda conn: show(conn, study_uid))

    def verify(self, anchors: Mapping[int, str] | None = None) -> AuditCheck:
        """Recompute the hash chain (against ``{seq: row_hash}`` anchors when given), then check
        the projections against the events."""
        from audit.atna.events import VERIFY_FAILED_ACTION
        from audit.projections import check_projections

        self._audit("verify", {"anchors": len(anchors or {})})
        check = self._read(lambda conn: AuditCheck(verify_chain(conn, anchors),
                                                   check_projections(conn)))
        if not check.ok:
            # A failed check is a security event of its own (an ATNA Security Alert).
            problem = (f"audit chain broken at {check.chain.broken}" if check.chain.broken
                       else f"projection disagrees with the events: {check.projections[0]}")
            self._audit(VERIFY_FAILED_ACTION, {"problem": problem[:1000],
                                               "rows_verified": check.chain.rows})
        return check

    def worklist(self, *, cursor: int, limit: int, threshold: float) -> dict[str, Any]:
        """The worklist feed (its reads are audited like any other)."""
        self._audit("worklist", {"cursor": cursor, "limit": limit})
        return self._read(lambda conn: worklist(conn, cursor=cursor, limit=limit,
                                                threshold=threshold))

    def performance(self, f: Filters, *, threshold: float | None = None) -> list[dict[str, Any]]:
        """Live performance per bundle version (see :mod:`audit.performance`); ``threshold``
        ``None``: each bundle's recorded operating threshold."""
        from audit.performance import performance

        self._audit("performance", {**f.as_params(), "threshold": threshold})
        return self._read(lambda conn: performance(conn, f, threshold=threshold))

    def studies_page(self, f: Filters, *, cursor: str | None = None, size: int = 50) -> Any:
        """One keyset page of studies (:func:`audit.browse.studies_page`)."""
        from audit.browse import studies_page

        self._audit("studies-page", {**f.as_params(), "cursor": cursor, "size": size})
        return self._read(lambda conn: studies_page(conn, f, cursor=cursor, size=size))

    def analyses(self, f: Filters) -> dict[str, Any]:
        """Every analysis in ``f``'s range with the reference truths and latest verdicts:
        ``{"analyses": [...], "truths": {uid: label}, "verdicts": {uid: row}}``."""
        from audit.browse import analysis_rows
        from audit.feedback import latest_verdicts, reference_truths

        self._audit("analyses", f.as_params())

        def read(conn: Connection) -> Any:
            return {"analyses": analysis_rows(conn, f), "truths": reference_truths(conn),
                    "verdicts": latest_verdicts(conn)}

        return self._read(read)

    def failures_overview(self, f: Filters) -> dict[str, Any]:
        """Failures (:func:`failures`), dead-lettered exports (:func:`exports`) and, per study on
        them, how many times analysis started (``attempts``) - one audited read."""
        from audit.browse import analysis_attempts

        self._audit("failures-overview", f.as_params())

        def read(conn: Connection) -> dict[str, Any]:
            rows = failures(conn, f)
            dead = exports(conn, dataclasses.replace(f, status="dead-letter"))
            uids = {r["study_uid"] for r in rows if r.get("study_uid")}
            return {"failures": rows, "dead_letters": dead,
                    "attempts": analysis_attempts(conn, uids)}

        return self._read(read)

    def qa_events(self, f: Filters) -> list[dict[str, Any]]:
        """Who read what (itself audited)."""
        self._audit("qa-events", f.as_params())
        q = QaEvent
        stmt = select(q.seq, q.ts, q.actor, q.action, q.params).where(*_time_range(q.ts, f))
        stmt = _limit(stmt.order_by(q.seq.desc()), f)
        return self._read(lambda conn: _rows(conn.execute(stmt)))
