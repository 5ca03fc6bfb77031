"""``AuditLog``: the one write path of the audit log, and the reads the pipeline needs.

Every public write method goes through :meth:`AuditLog.record`, which, in one transaction, locks
the chain head (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: ``SELECT ... FOR UPDATE`` on the
``chain_head`` row), appends one or more hash-chained event rows, updates the projections and moves
the head. A failure anywhere raises :class:`AuditUnavailable` and nothing is written, so the caller
can refuse the operation it was about to confirm (the DICOM node answers Out of Resources).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import Connection, Engine, Table, bindparam, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from audit._engine import WRITE_OPTION, create_audit_engine
from audit.chain import canonical_json, normalise_row, row_hash
from audit.errors import AuditUnavailable
from audit.group_commit import GroupCommit
from audit.projections import fills
from audit.schema import (
    AnalysisEvent,
    AssociationEvent,
    ChainHead,
    ExportEvent,
    FeedbackEvent,
    InstanceEvent,
    OutcomeEvent,
    QaEvent,
    StudyEvent,
    StudyExportProjection,
    StudyProjection,
)
from eusdx.keys import key_id, load_keyring

if TYPE_CHECKING:
    from eusdx.config import Settings

__all__ = [
    "AuditLog",
    "Appender",
    "STUDY_STATES",
    "TERMINAL_STATES",
    "SETTLED_STATES",
    "INSTANCE_STATUSES",
    "EXPORT_STATUSES",
    "TRANSITIONS",
    "TRUTH_LABELS",
    "VERDICTS",
    "FEEDBACK_KINDS",
    "utcnow",
]

log = logging.getLogger(__name__)

_STUDIES = cast(Table, StudyProjection.__table__)
_STUDY_EXPORTS = cast(Table, StudyExportProjection.__table__)

# Hot-path statements, built once: the node appends before answering every C-STORE, and building
# SQLAlchemy constructs per call costs more CPU than executing them.
_HEAD_FOR_UPDATE = (select(ChainHead.seq, ChainHead.row_hash).where(ChainHead.id == 1)
                    .with_for_update())
_HEAD_MOVE = update(ChainHead).where(ChainHead.id == 1).values(
    seq=bindparam("head_seq"), row_hash=bindparam("head_hash"))
_FILL_COLUMNS = ("accession", "patient_hash", "calling_ae", "modality", "body_part")
_STUDY_FOR_INSTANCE = select(
    StudyProjection.instances, *(getattr(StudyProjection, c) for c in _FILL_COLUMNS)
).where(StudyProjection.study_uid == bindparam("uid"))
_STUDY_STATE = select(StudyProjection.state).where(StudyProjection.study_uid == bindparam("uid"))
# No .values(): the SET clause follows the keys passed at execution.
_STUDY_UPDATE = update(StudyProjection).where(StudyProjection.study_uid == bindparam("b_uid"))

T = TypeVar("T")

STUDY_STATES = ("received", "complete", "queued", "analysing", "reported", "exported", "committed",
                "export-failed", "failed", "dead-letter", "not-routed")
#: Where a study's life ends (until late instances open a new revision). ``exported``: every
#: destination confirmed the current revision's SR; ``committed``: the archive also took
#: responsibility (Storage Commitment); ``export-failed``: a destination dead-lettered it;
#: ``failed``: no result, reason = a failure class and sentence; ``dead-letter``: the study killed its
#: worker too often; ``not-routed``: not an EUS study.
TERMINAL_STATES = ("exported", "committed", "export-failed", "failed", "dead-letter", "not-routed")
#: States in which nothing waits on eusdx's own queues; ``reported`` waits only on the export outbox.
SETTLED_STATES = ("reported", *TERMINAL_STATES)
INSTANCE_STATUSES = ("stored", "duplicate-ignored", "overwritten", "rejected")
EXPORT_STATUSES = ("queued", "sent", "failed", "dead-letter", "replayed", "commit-pending",
                   "committed")
#: Reference diagnoses QA may record; "other" (e.g. schwannoma) is left out of GIST-vs-leiomyoma
#: performance.
TRUTH_LABELS = ("GIST", "leiomyoma", "other")
#: What a radiologist or QA person says of a result ("correct" names the label they would give).
VERDICTS = ("accept", "reject", "correct")
FEEDBACK_KINDS = ("verdict", "pathology")
_MODEL_LABELS = ("GIST", "leiomyoma")
#: Instance statuses that mean we hold the object (and so the study exists for us).
_HELD = ("stored", "duplicate-ignored", "overwritten")

#: Allowed transitions. Others are still recorded (the audit never refuses to say what happened)
#: but carry ``regular = False`` so QA can find them.
_REOPEN = frozenset({"received", "queued"})  # late instances (new revision) or a re-queue
TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({"received"}),
    "received": frozenset({"received", "complete", "not-routed", "failed"}),
    "complete": frozenset({"complete", "queued", "not-routed", "failed", "received"}),
    # a re-queued revision that was already answered goes back to where it had settled
    "queued": frozenset({"queued", "analysing", "failed", "dead-letter", *SETTLED_STATES}),
    "analysing": frozenset({"analysing", "reported", "failed", "dead-letter", "queued"}),
    "reported": frozenset({"reported", "exported", "export-failed", "failed"}) | _REOPEN,
    "exported": frozenset({"exported", "committed", "export-failed"}) | _REOPEN,
    "committed": frozenset({"committed"}) | _REOPEN,
    "export-failed": frozenset({"export-failed", "exported"}) | _REOPEN,
    "failed": frozenset({"failed", "exported", "export-failed"}) | _REOPEN,
    "dead-letter": frozenset({"dead-letter"}) | _REOPEN,
    "not-routed": frozenset({"not-routed", "received"}),
}


def utcnow() -> dt.datetime:
    """Timezone-aware UTC now."""
    return dt.datetime.now(dt.timezone.utc)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} {value!r} is not one of {', '.join(allowed)}")
    return value


def _finite(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


class Appender:
    """The open write transaction handed to a :meth:`AuditLog.record` callback.

    ``append`` adds one chained row; ``conn`` is there for projection updates in the same
    transaction.
    """

    def __init__(self, conn: Connection, head_seq: int, head_hash: str, now: dt.datetime) -> None:
        self.conn = conn
        self.seq = head_seq
        self.hash = head_hash
        self.now = now
        self.appended = 0

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next appended row will get."""
        return self.seq + 1

    def append(self, model: type[Any], values: Mapping[str, Any]) -> dict[str, Any]:
        """Append one event row of ``model``; return the row as written (with its hash)."""
        table = model.__table__
        row = normalise_row(table, {**values, "seq": self.next_seq, "ts": self.now,
                                    "prev_hash": self.hash, "row_hash": ""})
        row["row_hash"] = row_hash(self.hash, table.name, row)
        self.conn.execute(_insert_for(table), [row])
        self.seq = row["seq"]
        self.hash = row["row_hash"]
        self.appended += 1
        return row


class AuditLog:
    """The audit log of one process: thread-safe, one engine, one write path.

    Parameters
    ----------
    database_url
        SQLAlchemy URL (SQLite file or PostgreSQL).
    hmac_secret
        Key of the HMAC-SHA256 that pseudonymises patient identifiers.
    sqlite_synchronous
        SQLite durability (``FULL``: every acknowledged row is on disk). Leave it; benchmarks
        compare ``NORMAL``.
    """

    def __init__(self, database_url: str, hmac_secret: str | bytes, *,
                 sqlite_synchronous: str = "FULL") -> None:
        if not hmac_secret:
            raise ValueError("hmac_secret must not be empty")
        self.database_url = database_url
        self._secret = hmac_secret.encode("utf-8") if isinstance(hmac_secret, str) else bytes(hmac_secret)
        #: Id of the pseudonymisation key (``eusdx.keys.key_id``), for the operator's records.
        self.hmac_key_id = key_id(self._secret)
        self._fork_lock = threading.Lock()
        self._pid = os.getpid()
        self._engine = create_audit_engine(database_url, sqlite_synchronous=sqlite_synchronous)
        self._writer = self._engine.execution_options(**{WRITE_OPTION: True})
        # Concurrent writers of this process share transactions (one fsync per group, no lock
        # convoy on the database); see audit/group_commit.py.
        self._group: GroupCommit[Callable[[Appender], Any]] = GroupCommit(self._record_many)

    @classmethod
    def from_settings(cls, settings: Settings) -> AuditLog:
        """Build from ``Settings.database_url`` and the audit key ring (``eusdx.keys``:
        ``audit_hmac_secret``, else the per-installation key file, else the development key)."""
        return cls(settings.database_url, load_keyring(settings).secret)

    # --- plumbing -------------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The engine (for queries); forked children get fresh connections."""
        self._after_fork()
        return self._engine

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def _after_fork(self) -> None:
        # A pooled connection must never be shared across fork(): Celery's prefork children
        # inherit this object, so each child starts its own pool on first use.
        if os.getpid() != self._pid:
            with self._fork_lock:
                if os.getpid() != self._pid:
                    self._engine.dispose(close=False)
                    self._writer = self._engine.execution_options(**{WRITE_OPTION: True})
                    self._group = GroupCommit(self._record_many)  # its lock may be held by a lost thread
                    self._pid = os.getpid()

    def ensure_schema(self) -> None:
        """Run the Alembic migrations up to head (creates the SQLite file and its directory)."""
        from audit.migrate import upgrade

        self._after_fork()
        try:
            upgrade(self._engine)
        except SQLAlchemyError as exc:
            raise AuditUnavailable(f"cannot migrate the audit database: {_brief(exc)}") from exc

    def ping(self) -> None:
        """Check that the database can be written (takes and releases the write lock).

        Raises
        ------
        AuditUnavailable
            The database cannot be reached, is read-only, or has no audit schema.
        """
        self._after_fork()
        try:
            with self._writer.begin() as conn:
                conn.execute(_HEAD_FOR_UPDATE).one()
        except SQLAlchemyError as exc:
            raise AuditUnavailable(f"audit database unavailable: {_brief(exc)}") from exc

    def close(self) -> None:
        """Release every pooled connection."""
        self._engine.dispose()

    def pseudonym(self, value: str | None) -> str | None:
        """HMAC-SHA256 (hex) of a patient identifier; ``None`` for a missing or empty one."""
        if value is None:
            return None
        value = value.strip()
        if not value:
            return None
        return hmac.new(self._secret, value.encode("utf-8"), hashlib.sha256).hexdigest()

    def record(self, build: Callable[[Appender], T]) -> T:
        """The one write path: run ``build`` inside a locked, chained write transaction.

        Parameters
        ----------
        build
            Called with an :class:`Appender`; appends rows and updates projections. Its return
            value is returned.

        Raises
        ------
        AuditUnavailable
            The database could not be written; nothing of this call was committed.
        """
        self._after_fork()
        return cast(T, self._group.submit(build))

    def _record_many(self, builds: Sequence[Callable[[Appender], Any]]) -> list[Any]:
        """Run ``builds`` in order in ONE write transaction (the group commit's unit)."""
        try:
            with self._writer.begin() as conn:
                head = conn.execute(_HEAD_FOR_UPDATE).one()
                appender = Appender(conn, int(head.seq), head.row_hash, utcnow())
                results = [build(appender) for build in builds]
                if appender.appended:
                    conn.execute(_HEAD_MOVE, {"head_seq": appender.seq,
                                              "head_hash": appender.hash})
            return results
        except SQLAlchemyError as exc:
            log.error("audit write failed: %s", _brief(exc))
            raise AuditUnavailable(f"audit write failed: {_brief(exc)}") from exc

    # --- events ---------------------------------------------------------------------------------

    def association(self, *, peer_ae: str, peer_host: str, peer_port: int, called_ae: str,
                    tls: bool, accepted: bool, reason: str | None = None) -> int:
        """Record an association request; return its id (the ``seq`` of this row)."""

        def build(tx: Appender) -> int:
            association_id = tx.next_seq
            tx.append(AssociationEvent, dict(
                event="open", association_id=association_id, peer_ae=peer_ae,
                peer_host=peer_host, peer_port=int(peer_port), called_ae=called_ae,
                tls=bool(tls), accepted=bool(accepted), reason=reason))
            return association_id

        return self.record(build)

    def association_closed(self, *, association_id: int, instances: int,
                           reason: str | None = None) -> None:
        """Record the end of an association (released, aborted, timed out...)."""
        self.record(lambda tx: tx.append(AssociationEvent, dict(
            event="close", association_id=int(association_id), instances=int(instances),
            reason=reason)))

    def instance(self, *, association_id: int | None, study_uid: str | None,
                 series_uid: str | None, sop_uid: str | None, sop_class_uid: str | None,
                 transfer_syntax: str | None, size: int, digest: str | None, status: str,
                 reason: str | None = None, calling_ae: str | None = None,
                 patient_id: str | None = None, accession: str | None = None,
                 modality: str | None = None, body_part: str | None = None) -> None:
        """Record one C-STORE outcome; the first held instance of a study opens it (``received``).

        ``patient_id`` is pseudonymised here and never stored in clear.
        """
        _choice("instance status", status, INSTANCE_STATUSES)
        patient_hash = self.pseudonym(patient_id)
        values = dict(
            association_id=association_id, study_uid=study_uid, series_uid=series_uid,
            sop_uid=sop_uid, sop_class_uid=sop_class_uid, transfer_syntax=transfer_syntax,
            size=int(size), digest=digest, status=status, reason=reason, calling_ae=calling_ae,
            patient_hash=patient_hash, accession=accession, modality=modality,
            body_part=body_part)

        def build(tx: Appender) -> None:
            row = tx.append(InstanceEvent, values)
            if study_uid and status in _HELD:
                self._project_instance(tx, row)

        self.record(build)

    def study_state(self, *, study_uid: str, state: str, reason: str | None = None,
                    accession: str | None = None, details: dict[str, Any] | None = None) -> None:
        """Record a study state transition (irregular transitions are kept, flagged)."""
        _choice("study state", state, STUDY_STATES)
        details_text = canonical_json(details) if details is not None else None

        def build(tx: Appender) -> None:
            self._transition(tx, study_uid, state, reason=reason, accession=accession,
                             details=details_text)

        self.record(build)

    def analysis(self, *, study_uid: str, bundle_version: str, bundle_sha256: str, device: str,
                 timings: dict[str, float], lesions: list[dict[str, Any]],
                 probability: float | None, label: str | None, roi_source: str | None,
                 error: str | None = None, sr_sop_uid: str | None = None) -> None:
        """Record one analysis (result or error). Does not change the study state."""
        clean_timings = {str(k): _finite(f"timing {k!r}", v) for k, v in timings.items()}
        probability = _finite("probability", probability)
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must lie in [0, 1], got {probability}")
        total = clean_timings.get("total")
        if total is None and clean_timings:
            total = sum(v for v in clean_timings.values() if v is not None)
        values = dict(
            study_uid=study_uid, bundle_version=bundle_version, bundle_sha256=bundle_sha256,
            device=device, timings=canonical_json(clean_timings), total_seconds=total,
            lesions=canonical_json(list(lesions)), probability=probability, label=label,
            roi_source=roi_source, error=error, sr_sop_uid=sr_sop_uid)

        def build(tx: Appender) -> None:
            row = tx.append(AnalysisEvent, values)
            if error is None:
                self._project(tx, study_uid, {
                    "bundle_version": row["bundle_version"], "label": row["label"],
                    "probability": row["probability"], "sr_sop_uid": row["sr_sop_uid"],
                    "analysis_seconds": row["total_seconds"]}, row["seq"])

        self.record(build)

    def export(self, *, study_uid: str, destination: str, attempt: int, status: str,
               sr_sop_uid: str | None, error: str | None = None) -> None:
        """Record an outbox transition or export attempt of an SR to one destination."""
        _choice("export status", status, EXPORT_STATUSES)

        def build(tx: Appender) -> None:
            row = tx.append(ExportEvent, dict(
                study_uid=study_uid, destination=destination, attempt=int(attempt),
                status=status, sr_sop_uid=sr_sop_uid, error=error))
            key = (StudyExportProjection.study_uid == row["study_uid"]) & (
                StudyExportProjection.destination == row["destination"])
            current = tx.conn.execute(
                select(StudyExportProjection.attempts).where(key)).first()
            fields = {"status": row["status"], "sr_sop_uid": row["sr_sop_uid"],
                      "error": row["error"], "updated_at": tx.now}
            if current is None:
                tx.conn.execute(insert(_STUDY_EXPORTS), [{
                    "study_uid": row["study_uid"], "destination": row["destination"],
                    "attempts": row["attempt"], **fields}])
            else:
                tx.conn.execute(update(StudyExportProjection).where(key).values(
                    attempts=max(int(current.attempts), row["attempt"]), **fields))

        self.record(build)

    def qa_event(self, *, actor: str, action: str, params: dict[str, Any]) -> None:
        """Record that ``actor`` read ``action`` with ``params`` from the audit log."""
        self.record(lambda tx: tx.append(QaEvent, dict(
            actor=actor, action=action, params=canonical_json(params))))

    def outcome(self, *, study_uid: str, truth: str, source: str, recorded_by: str,
                note: str | None = None) -> None:
        """Record a study's reference diagnosis (the latest one counts for live performance)."""
        _choice("truth", truth, TRUTH_LABELS)
        if not source:
            raise ValueError("source must name where the diagnosis comes from (e.g. pathology)")
        self.record(lambda tx: tx.append(OutcomeEvent, dict(
            study_uid=study_uid, truth=truth, source=source, recorded_by=recorded_by,
            note=note)))

    def feedback(self, *, study_uid: str, kind: str, recorded_by: str, role: str,
                 verdict: str | None = None, corrected_label: str | None = None,
                 truth: str | None = None, diagnosed_on: str | dt.date | None = None,
                 source: str | None = None, comment: str | None = None,
                 bundle_version: str | None = None) -> int:
        """Append a verdict or a pathology result on a study; returns the row's ``seq``.

        Feedback is never edited: a later row of the same ``kind`` supersedes the earlier one,
        which stays in the chain. A pathology row counts for live performance like an outcome.

        Raises
        ------
        ValueError
            ``kind`` / ``verdict`` / ``truth`` not one of the allowed values, ``correct`` without
            a ``corrected_label`` (GIST or leiomyoma), a pathology row without ``truth`` or
            ``source``, or ``diagnosed_on`` not an ISO date in the past.
        AuditUnavailable
            Nothing was written.
        """
        _choice("feedback kind", kind, FEEDBACK_KINDS)
        if not study_uid:
            raise ValueError("feedback needs a study UID")
        values: dict[str, Any] = dict(study_uid=study_uid, kind=kind, recorded_by=recorded_by,
                                      role=role, comment=(comment or "").strip() or None,
                                      bundle_version=bundle_version)
        if kind == "verdict":
            _choice("verdict", verdict or "", VERDICTS)
            if verdict == "correct":
                _choice("corrected label", corrected_label or "", _MODEL_LABELS)
            elif corrected_label:
                raise ValueError("a corrected label goes with the verdict 'correct' only")
            values.update(verdict=verdict, corrected_label=corrected_label)
        else:
            _choice("truth", truth or "", TRUTH_LABELS)
            if not source or not source.strip():
                raise ValueError("a pathology result needs its source (e.g. surgery, biopsy)")
            day = diagnosed_on
            if isinstance(day, str):
                try:
                    day = dt.date.fromisoformat(day.strip()) if day.strip() else None
                except ValueError as exc:
                    raise ValueError(f"diagnosis date {diagnosed_on!r} is not YYYY-MM-DD") from exc
            if isinstance(day, dt.datetime):
                day = day.date()
            if day is not None and day > utcnow().date():
                raise ValueError(f"diagnosis date {day.isoformat()} lies in the future")
            values.update(truth=truth, source=source.strip(),
                          diagnosed_on=day.isoformat() if day is not None else None)
        return self.record(lambda tx: int(tx.append(FeedbackEvent, values)["seq"]))

    # --- reads the pipeline needs ---------------------------------------------------------------

    def study_current_state(self, study_uid: str) -> str | None:
        """Current state of a study, or ``None`` if the log has never seen it."""
        try:
            with self.engine.connect() as conn:
                return conn.execute(select(StudyProjection.state).where(
                    StudyProjection.study_uid == study_uid)).scalar_one_or_none()
        except SQLAlchemyError as exc:
            raise AuditUnavailable(f"audit read failed: {_brief(exc)}") from exc

    def _study_events(self, study_uid: str, states: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
        """``(state, details)`` of the study's events in ``states``, newest first."""
        import json

        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(StudyEvent.state, StudyEvent.details, StudyEvent.reason)
                    .where(StudyEvent.study_uid == study_uid, StudyEvent.state.in_(states))
                    .order_by(StudyEvent.seq.desc())
                ).all()
        except SQLAlchemyError as exc:
            raise AuditUnavailable(f"audit read failed: {_brief(exc)}") from exc
        out = []
        for state, details, reason in rows:
            try:
                parsed = json.loads(details) if details else {}
            except ValueError:
                parsed = {}
            out.append((state, {**(parsed if isinstance(parsed, dict) else {}), "_reason": reason}))
        return out

    def revision_reported(self, study_uid: str, revision: str, bundle_version: str) -> bool:
        """Whether this revision of the study was reported by this bundle version (the idempotency key
        of the analysis: (study, revision, bundle version))."""
        return any(d.get("revision") == revision and d.get("bundle_version") == bundle_version
                   for _, d in self._study_events(study_uid, ("reported",)))

    def last_report(self, study_uid: str) -> dict[str, Any] | None:
        """Details of the study's latest SR (result or no-analysis): ``sr_sop_uid``, ``sr_series_uid``,
        ``sr_sop_class``, ``revision``; ``None`` when no SR was ever made for it."""
        for _, details in self._study_events(study_uid, ("reported", "failed")):
            if details.get("sr_sop_uid"):
                return details
        return None

    def last_settled(self, study_uid: str) -> tuple[str, str | None, dict[str, Any]] | None:
        """``(state, reason, details)`` of the study's latest settled state (``SETTLED_STATES``)."""
        found = self._study_events(study_uid, SETTLED_STATES)
        if not found:
            return None
        state, details = found[0]
        return state, details.pop("_reason", None), details

    def studies_in(self, states: tuple[str, ...], *, limit: int = 10_000) -> list[dict[str, Any]]:
        """Studies whose current state is one of ``states`` (index on the state: O(matching studies))."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(StudyProjection.study_uid, StudyProjection.state, StudyProjection.updated_at,
                           StudyProjection.sr_sop_uid)
                    .where(StudyProjection.state.in_(states)).order_by(StudyProjection.updated_at)
                    .limit(limit)
                ).all()
        except SQLAlchemyError as exc:
            raise AuditUnavailable(f"audit read failed: {_brief(exc)}") from exc
        return [dict(r._mapping) for r in rows]

    def study_row(self, study_uid: str) -> dict[str, Any] | None:
        """``{"state", "updated_at", "sr_sop_uid"}`` of one study's projection, or ``None``."""
        try:
            with self.engine.connect() as conn:
                row = conn.execute(
                    select(StudyProjection.state, StudyProjection.updated_at, StudyProjection.sr_sop_uid)
                    .where(StudyProjection.study_uid == study_uid)
                ).first()
        except SQLAlchemyError as exc:
            raise AuditUnavailable(f"audit read failed: {_brief(exc)}") from exc
        return dict(row._mapping) if row is not None else None

    def count_by_state(self, states: tuple[str, ...]) -> dict[str, int]:
        """Number of studies per current state, for ``states`` only (index range scans)."""
        from sqlalchemy import func

        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(StudyProjection.state, func.count()).where(StudyProjection.state.in_(states))
                    .group_by(StudyProjection.state)
                ).all()
        except SQLAlchemyError as exc:
            raise AuditUnavailable(f"audit read failed: {_brief(exc)}") from exc
        return {str(state): int(n) for state, n in rows}

    def analysis_exists(self, study_uid: str, bundle_version: str) -> bool:
        """Whether a successful analysis (no error) of this study by this bundle is recorded."""
        try:
            with self.engine.connect() as conn:
                found = conn.execute(
                    select(AnalysisEvent.seq).where(
                        AnalysisEvent.study_uid == study_uid,
                        AnalysisEvent.bundle_version == bundle_version,
                        AnalysisEvent.error.is_(None),
                    ).limit(1)
                ).first()
        except SQLAlchemyError as exc:
            raise AuditUnavailable(f"audit read failed: {_brief(exc)}") from exc
        return found is not None

    # --- projections ----------------------------------------------------------------------------

    def _project(self, tx: Appender, study_uid: str, fields: dict[str, Any], seq: int,
                 *, create_state: str = "received") -> None:
        """Update (or create) the study's projection row with ``fields``."""
        exists = tx.conn.execute(_STUDY_STATE, {"uid": study_uid}).first()
        if exists is None:
            row = normalise_row(_STUDIES, {
                "study_uid": study_uid, "state": create_state, "first_seen": tx.now,
                "updated_at": tx.now, "last_seq": seq, "instances": 0, **fields})
            tx.conn.execute(insert(_STUDIES), [row])
        else:
            values = normalise_row(_STUDIES, fields)
            tx.conn.execute(_STUDY_UPDATE, {"b_uid": study_uid, "updated_at": tx.now,
                                            "last_seq": seq, **{k: values[k] for k in fields}})

    def _transition(self, tx: Appender, study_uid: str, state: str, *, reason: str | None,
                    accession: str | None, details: str | None) -> None:
        current = tx.conn.execute(_STUDY_STATE, {"uid": study_uid}).scalar_one_or_none()
        regular = state in TRANSITIONS.get(current, frozenset())
        if not regular:
            log.warning("irregular study transition %s -> %s for study %s", current, state,
                        study_uid)
        row = tx.append(StudyEvent, dict(
            study_uid=study_uid, state=state, from_state=current, regular=regular,
            reason=reason, accession=accession, details=details))
        fields: dict[str, Any] = {"state": row["state"], "reason": row["reason"]}
        if accession:
            fields["accession"] = row["accession"]
        self._project(tx, study_uid, fields, row["seq"], create_state=state)

    def _project_instance(self, tx: Appender, row: dict[str, Any]) -> None:
        study_uid = row["study_uid"]
        current = tx.conn.execute(_STUDY_FOR_INSTANCE, {"uid": study_uid}).first()
        if current is None:
            self._transition(tx, study_uid, "received", reason="first instance",
                             accession=row["accession"], details=None)
            current = tx.conn.execute(_STUDY_FOR_INSTANCE, {"uid": study_uid}).one()
        fields: dict[str, Any] = {}
        if row["status"] == "stored":
            fields["instances"] = int(current.instances) + 1
        # Fill what the study projection does not know yet (audit.projections.fills: the first
        # value seen wins, but an image's modality replaces a SEG's or SR's)
        for name in _FILL_COLUMNS:
            if fills(name, getattr(current, name), row[name]):
                fields[name] = row[name]
        if fields:
            tx.conn.execute(_STUDY_UPDATE, {"b_uid": study_uid, "updated_at": tx.now,
                                            "last_seq": row["seq"], **fields})


_INSERTS: dict[str, Any] = {}


def _insert_for(table: Table) -> Any:
    stmt = _INSERTS.get(table.name)
    if stmt is None:
        stmt = _INSERTS[table.name] = insert(table)
    return stmt


def _brief(exc: BaseException) -> str:
    """One line about a database error, without the SQL statement or its parameters."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return f"{type(orig).__name__}: {text[:200]}"
