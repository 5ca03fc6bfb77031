"""The audit schema: append-only event tables (hash-chained) and updatable projections.

Every event table shares the chain columns ``seq`` (global, gap-free, the primary key), ``ts``
(UTC), ``prev_hash`` and ``row_hash``; the chain runs across all event tables in ``seq`` order.
Triggers installed by the migrations reject UPDATE and DELETE on event tables. The projection
tables (``chain_head``, ``studies``, ``study_exports``) hold current state; they are derived from
the events in the same transaction and may be updated.

Patient identifiers are only stored as a keyed hash (``patient_hash``); accession numbers and DICOM
UIDs are kept in clear so QA can find a study.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base",
    "ChainColumns",
    "AssociationEvent",
    "InstanceEvent",
    "StudyEvent",
    "AnalysisEvent",
    "ExportEvent",
    "QaEvent",
    "OutcomeEvent",
    "FeedbackEvent",
    "ChainHead",
    "StudyProjection",
    "StudyExportProjection",
    "EVENT_MODELS",
    "EVENT_TABLE_NAMES",
    "GENESIS_HASH",
]

#: ``prev_hash`` of the first row of the chain.
GENESIS_HASH = "0" * 64

UID = String(64)  # DICOM UIDs are at most 64 characters
AE = String(16)
# SQLite only makes INTEGER PRIMARY KEY a rowid alias; PostgreSQL gets 64-bit integers.
BigInt = BigInteger().with_variant(Integer, "sqlite")

_NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with a naming convention so migrations name constraints the same way."""

    metadata = MetaData(naming_convention=_NAMING)


class ChainColumns:
    """Columns every event table carries; together they form the global hash chain."""

    seq: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=False)
    ts: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    row_hash: Mapped[str] = mapped_column(String(64))


class AssociationEvent(ChainColumns, Base):
    """A DICOM association opened (accepted or rejected) or closed.

    ``association_id`` is the ``seq`` of the ``open`` row; the ``close`` row repeats it.
    """

    __tablename__ = "associations"

    event: Mapped[str] = mapped_column(String(8))  # "open" | "close"
    association_id: Mapped[int] = mapped_column(BigInt, index=True)
    peer_ae: Mapped[str | None] = mapped_column(AE, index=True)
    peer_host: Mapped[str | None] = mapped_column(String(255))
    peer_port: Mapped[int | None] = mapped_column(Integer)
    called_ae: Mapped[str | None] = mapped_column(AE)
    tls: Mapped[bool | None] = mapped_column(Boolean)
    accepted: Mapped[bool | None] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(String(255))
    instances: Mapped[int | None] = mapped_column(Integer)


class InstanceEvent(ChainColumns, Base):
    """One C-STORE request: what arrived and what we did with it."""

    __tablename__ = "instances"

    association_id: Mapped[int | None] = mapped_column(BigInt, index=True)
    study_uid: Mapped[str | None] = mapped_column(UID, index=True)
    series_uid: Mapped[str | None] = mapped_column(UID)
    sop_uid: Mapped[str | None] = mapped_column(UID, index=True)
    sop_class_uid: Mapped[str | None] = mapped_column(UID)
    transfer_syntax: Mapped[str | None] = mapped_column(UID)
    size: Mapped[int] = mapped_column(BigInt)
    digest: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(32), index=True)
    reason: Mapped[str | None] = mapped_column(String(255))
    calling_ae: Mapped[str | None] = mapped_column(AE)
    patient_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    accession: Mapped[str | None] = mapped_column(String(64))
    modality: Mapped[str | None] = mapped_column(String(16))
    body_part: Mapped[str | None] = mapped_column(String(64))


class StudyEvent(ChainColumns, Base):
    """A study state transition (``from_state`` -> ``state``)."""

    __tablename__ = "study_events"

    study_uid: Mapped[str] = mapped_column(UID, index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    from_state: Mapped[str | None] = mapped_column(String(16))
    regular: Mapped[bool] = mapped_column(Boolean)  # False: not an allowed transition
    reason: Mapped[str | None] = mapped_column(String(255))
    accession: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[str | None] = mapped_column(Text)  # canonical JSON


class AnalysisEvent(ChainColumns, Base):
    """One analysis of a study by one model bundle (success or error)."""

    __tablename__ = "analyses"
    __table_args__ = (Index("ix_analyses_study_uid_bundle_version", "study_uid", "bundle_version"),)

    study_uid: Mapped[str] = mapped_column(UID)
    bundle_version: Mapped[str] = mapped_column(String(128), index=True)
    bundle_sha256: Mapped[str] = mapped_column(String(64))
    device: Mapped[str] = mapped_column(String(64))
    timings: Mapped[str] = mapped_column(Text)  # canonical JSON {stage: seconds}
    total_seconds: Mapped[float | None] = mapped_column(Float)
    lesions: Mapped[str] = mapped_column(Text)  # canonical JSON list
    probability: Mapped[float | None] = mapped_column(Float)
    label: Mapped[str | None] = mapped_column(String(32), index=True)
    roi_source: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    sr_sop_uid: Mapped[str | None] = mapped_column(UID)


class ExportEvent(ChainColumns, Base):
    """One export attempt (or outbox transition) of an SR to one destination."""

    __tablename__ = "exports"

    study_uid: Mapped[str] = mapped_column(UID, index=True)
    destination: Mapped[str] = mapped_column(String(300))
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    sr_sop_uid: Mapped[str | None] = mapped_column(UID)
    error: Mapped[str | None] = mapped_column(Text)


class QaEvent(ChainColumns, Base):
    """Who read what from the audit log (CLI or HTTP)."""

    __tablename__ = "qa_events"

    actor: Mapped[str] = mapped_column(String(128), index=True)
    action: Mapped[str] = mapped_column(String(64))
    params: Mapped[str] = mapped_column(Text)  # canonical JSON


class OutcomeEvent(ChainColumns, Base):
    """The reference diagnosis of a study (pathology, surgery...), entered by QA for live performance."""

    __tablename__ = "outcomes"

    study_uid: Mapped[str] = mapped_column(UID, index=True)
    truth: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(32))
    recorded_by: Mapped[str] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(Text)


class FeedbackEvent(ChainColumns, Base):
    """A radiologist's or QA person's feedback on a study's result, appended (never edited).

    ``kind`` is ``verdict`` (``verdict`` = accept / reject / correct, with ``corrected_label`` for
    correct) or ``pathology`` (``truth`` = GIST / leiomyoma / other, ``diagnosed_on`` an ISO date,
    ``source`` e.g. surgery, biopsy). A later row of the same kind supersedes an earlier one; the
    earlier row stays in the chain. ``bundle_version`` names the result that was judged.
    """

    __tablename__ = "feedback"

    study_uid: Mapped[str] = mapped_column(UID, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    verdict: Mapped[str | None] = mapped_column(String(16))
    corrected_label: Mapped[str | None] = mapped_column(String(32))
    truth: Mapped[str | None] = mapped_column(String(32))
    diagnosed_on: Mapped[str | None] = mapped_column(String(10))
    source: Mapped[str | None] = mapped_column(String(32))
    comment: Mapped[str | None] = mapped_column(Text)
    bundle_version: Mapped[str | None] = mapped_column(String(128))
    recorded_by: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))


class ChainHead(Base):
    """The last link of the chain (one row, ``id`` = 1); locked to serialise appends."""

    __tablename__ = "chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInt)
    row_hash: Mapped[str] = mapped_column(String(64))


class StudyProjection(Base):
    """Current state of each study, kept in step with the events (rebuildable from them)."""

    __tablename__ = "studies"
    # Serve the dashboard's keyset paging (newest first, then UID) and the filtered lists (by state, by
    # sending AE and state) in index order (migrations 0003, 0004).
    __table_args__ = (Index("ix_studies_first_seen_study_uid", "first_seen", "study_uid"),
                      Index("ix_studies_state_first_seen_study_uid", "state", "first_seen", "study_uid"),
                      Index("ix_studies_calling_ae_state_first_seen", "calling_ae", "state", "first_seen",
                            "study_uid"))

    study_uid: Mapped[str] = mapped_column(UID, primary_key=True)
    accession: Mapped[str | None] = mapped_column(String(64), index=True)
    patient_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    calling_ae: Mapped[str | None] = mapped_column(AE, index=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    body_part: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(String(255))
    first_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    last_seq: Mapped[int] = mapped_column(BigInt, index=True)
    instances: Mapped[int] = mapped_column(Integer)
    bundle_version: Mapped[str | None] = mapped_column(String(128), index=True)
    label: Mapped[str | None] = mapped_column(String(32), index=True)
    probability: Mapped[float | None] = mapped_column(Float)
    sr_sop_uid: Mapped[str | None] = mapped_column(UID)
    analysis_seconds: Mapped[float | None] = mapped_column(Float)


class StudyExportProjection(Base):
    """Latest export status per (study, destination): the outbox view."""

    __tablename__ = "study_exports"

    study_uid: Mapped[str] = mapped_column(UID, primary_key=True)
    destination: Mapped[str] = mapped_column(String(300), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer)
    sr_sop_uid: Mapped[str | None] = mapped_column(UID)
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


#: Event models in a fixed order (the order only matters for listings; the chain uses ``seq``).
EVENT_MODELS: tuple[type[ChainColumns], ...] = (
    AssociationEvent,
    InstanceEvent,
    StudyEvent,
    AnalysisEvent,
    ExportEvent,
    QaEvent,
    OutcomeEvent,
    FeedbackEvent,
)
# __tablename__ is declared on each mapped class, not on the Base type EVENT_MODELS is typed with
EVENT_TABLE_NAMES: tuple[str, ...] = tuple(m.__tablename__ for m in EVENT_MODELS)  # type: ignore[attr-defined]
