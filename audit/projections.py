"""Check the projection tables against the events they are derived from.

The projections (``studies``, ``study_exports``) may be updated, so the chain does not protect
them; replaying the event tables in ``seq`` order and comparing catches an edited projection (a
changed label or state shown to QA) or a write path that drifted from its events. Timestamps and
``last_seq`` are bookkeeping and not compared.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Iterator
from typing import Any, cast

from sqlalchemy import Connection, Table, select

from audit.schema import (
    AnalysisEvent,
    ExportEvent,
    InstanceEvent,
    StudyEvent,
    StudyExportProjection,
    StudyProjection,
)

__all__ = ["DERIVED_MODALITIES", "ProjectionMismatch", "check_projections", "fills", "replay"]

_HELD = ("stored", "duplicate-ignored", "overwritten")
_FILL = ("accession", "patient_hash", "calling_ae", "modality", "body_part")
#: Modalities of objects made from images (PS3.3 C.7.3.1.1.1): a SEG, SR, KO or PR that arrives
#: first does not name the study's modality; the first image that follows does.
DERIVED_MODALITIES = frozenset({"SEG", "SR", "KO", "PR", "REG", "RTSTRUCT", "DOC", "PLAN"})


def fills(name: str, current: Any, new: Any) -> bool:
    """Whether an instance's ``new`` value of study column ``name`` replaces ``current``.

    The first value seen wins, except that an image's modality replaces the modality of a derived
    object (``audit show`` gives an EUS study whose SEG arrived first as US, not SEG). The write
    path (``audit.log``) and the projection check apply this same rule.
    """
    if new is None:
        return False
    if current is None:
        return True
    return (name == "modality" and str(current).upper() in DERIVED_MODALITIES
            and str(new).upper() not in DERIVED_MODALITIES)
STUDY_FIELDS = ("state", "reason", "accession", "patient_hash", "calling_ae", "modality",
                "body_part", "instances", "bundle_version", "label", "probability", "sr_sop_uid",
                "analysis_seconds")
EXPORT_FIELDS = ("status", "attempts", "sr_sop_uid", "error")


@dataclasses.dataclass(frozen=True)
class ProjectionMismatch:
    """One projection value that the events do not support."""

    table: str
    key: str
    column: str
    stored: Any
    expected: Any

    def __str__(self) -> str:
        return (f"{self.table} {self.key}: {self.column} is {self.stored!r} but the events say "
                f"{self.expected!r}")


def _events(conn: Connection) -> Iterator[tuple[int, str, Any]]:
    streams = []
    for model, cols in (
        (InstanceEvent, ("study_uid", "status", *_FILL)),
        (StudyEvent, ("study_uid", "state", "reason", "accession")),
        (AnalysisEvent, ("study_uid", "error", "bundle_version", "label", "probability",
                         "sr_sop_uid", "total_seconds")),
        (ExportEvent, ("study_uid", "destination", "attempt", "status", "sr_sop_uid", "error")),
    ):
        table = cast(Table, model.__table__)
        stmt = select(table.c.seq, *(table.c[c] for c in cols)).order_by(table.c.seq)
        result = conn.execution_options(stream_results=True, yield_per=5000).execute(stmt)
        streams.append(_tagged(table.name, result))
    return heapq.merge(*streams, key=lambda item: item[0])


def _tagged(name: str, result: Any) -> Iterator[tuple[int, str, Any]]:
    for row in result:
        yield int(row.seq), name, row


def _new_study(state: str | None) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(STUDY_FIELDS)
    row.update(state=state, instances=0)
    return row


def replay(conn: Connection) -> tuple[dict[str, dict[str, Any]],
                                      dict[tuple[str, str], dict[str, Any]]]:
    """Recompute ``studies`` and ``study_exports`` from the events, applying the write path's rules."""
    studies: dict[str, dict[str, Any]] = {}
    exports: dict[tuple[str, str], dict[str, Any]] = {}
    for _seq, table, r in _events(conn):
        if table == "instances":
            if not r.study_uid or r.status not in _HELD:
                continue
            s = studies.setdefault(r.study_uid, _new_study(None))
            if r.status == "stored":
                s["instances"] += 1
            for name in _FILL:
                if fills(name, s[name], getattr(r, name)):
                    s[name] = getattr(r, name)
        elif table == "study_events":
            s = studies.setdefault(r.study_uid, _new_study(r.state))
            s.update(state=r.state, reason=r.reason)
            if r.accession:
                s["accession"] = r.accession
        elif table == "analyses":
            if r.error is not None:
                continue
            s = studies.setdefault(r.study_uid, _new_study("received"))
            s.update(bundle_version=r.bundle_version, label=r.label, probability=r.probability,
                     sr_sop_uid=r.sr_sop_uid, analysis_seconds=r.total_seconds)
        else:
            key = (r.study_uid, r.destination)
            previous = exports.get(key, {}).get("attempts", 0)
            exports[key] = {"status": r.status, "attempts": max(previous, r.attempt),
                            "sr_sop_uid": r.sr_sop_uid, "error": r.error}
    return studies, exports


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(float(a) - float(b)) <= 1e-12 * max(
            1.0, abs(float(a)))
    return bool(a == b)


def check_projections(conn: Connection, *, limit: int = 20) -> list[ProjectionMismatch]:
    """Up to ``limit`` differences between the projections and a replay of the events."""
    expected_studies, expected_exports = replay(conn)
    found: list[ProjectionMismatch] = []

    def compare(table: str, key: str, stored: dict[str, Any] | None,
                expected: dict[str, Any] | None, fields: tuple[str, ...]) -> None:
        if stored is None or expected is None:
            found.append(ProjectionMismatch(table, key, "(row)", "present" if stored else
                                            "missing", "present" if expected else "missing"))
            return
        for name in fields:
            if not _same(stored[name], expected[name]):
                found.append(ProjectionMismatch(table, key, name, stored[name], expected[name]))

    stored_studies = {r.study_uid: dict(r._mapping) for r in conn.execute(
        select(StudyProjection.study_uid, *(getattr(StudyProjection, f) for f in STUDY_FIELDS)))}
    for uid in sorted(set(stored_studies) | set(expected_studies)):
        compare("studies", uid, stored_studies.get(uid), expected_studies.get(uid), STUDY_FIELDS)
        if len(found) >= limit:
            return found[:limit]
    x = StudyExportProjection
    stored_exports = {(r.study_uid, r.destination): dict(r._mapping) for r in conn.execute(
        select(x.study_uid, x.destination, *(getattr(x, f) for f in EXPORT_FIELDS)))}
    for key in sorted(set(stored_exports) | set(expected_exports)):
        compare("study_exports", f"{key[0]} -> {key[1]}", stored_exports.get(key),
                expected_exports.get(key), EXPORT_FIELDS)
        if len(found) >= limit:
            break
    return found[:limit]
