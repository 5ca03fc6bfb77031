"""Reads of the feedback events: a study's feedback history, the latest verdict and pathology per
study (for the worklist, FHIR feed and study list), and the reference diagnosis live performance
counts (the latest of a QA ``outcome`` and a ``pathology`` feedback row, by chain order).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, select

from audit.schema import FeedbackEvent, OutcomeEvent

__all__ = ["feedback_history", "latest_feedback", "latest_verdicts", "reference_truths",
           "FEEDBACK_COLUMNS"]

FEEDBACK_COLUMNS = ("seq", "ts", "kind", "verdict", "corrected_label", "truth", "diagnosed_on",
                    "source", "comment", "bundle_version", "recorded_by", "role")
_CHUNK = 500  # bound-parameter lists stay well under SQLite's limit


def _row(row: Any) -> dict[str, Any]:
    from audit.queries import _iso

    out = {name: getattr(row, name) for name in FEEDBACK_COLUMNS}
    out["ts"] = _iso(out["ts"])
    return out


def feedback_history(conn: Connection, study_uid: str) -> list[dict[str, Any]]:
    """Every feedback row of a study, oldest first (the edit history: nothing is overwritten)."""
    fb = FeedbackEvent
    stmt = select(*(getattr(fb, c) for c in FEEDBACK_COLUMNS)).where(
        fb.study_uid == study_uid).order_by(fb.seq)
    return [_row(r) for r in conn.execute(stmt)]


def latest_feedback(conn: Connection, study_uids: Iterable[str]
                    ) -> dict[str, dict[str, dict[str, Any]]]:
    """``{study_uid: {"verdict": row, "pathology": row}}`` with the latest row of each kind
    (kinds without a row are absent)."""
    uids = sorted(set(study_uids))
    out: dict[str, dict[str, dict[str, Any]]] = {}
    fb = FeedbackEvent
    for start in range(0, len(uids), _CHUNK):
        chunk = uids[start:start + _CHUNK]
        stmt = select(fb.study_uid, *(getattr(fb, c) for c in FEEDBACK_COLUMNS)).where(
            fb.study_uid.in_(chunk)).order_by(fb.seq)
        for r in conn.execute(stmt):
            out.setdefault(r.study_uid, {})[r.kind] = _row(r)
    return out


def latest_verdicts(conn: Connection) -> dict[str, dict[str, Any]]:
    """``{study_uid: {"verdict", "corrected_label", "bundle_version"}}``: each study's latest
    verdict (one pass over the verdict rows, for live performance)."""
    fb = FeedbackEvent
    out: dict[str, dict[str, Any]] = {}
    for uid, verdict, corrected, bundle in conn.execute(
            select(fb.study_uid, fb.verdict, fb.corrected_label, fb.bundle_version)
            .where(fb.kind == "verdict").order_by(fb.seq)):
        out[uid] = {"verdict": verdict, "corrected_label": corrected, "bundle_version": bundle}
    return out


def reference_truths(conn: Connection) -> dict[str, str]:
    """``{study_uid: GIST | leiomyoma | other}``: the latest reference diagnosis of each study,
    whether QA recorded it as an outcome (API, CLI) or as pathology feedback (dashboard)."""
    rows: list[tuple[int, str, str]] = []
    rows.extend((int(s), u, t) for s, u, t in conn.execute(
        select(OutcomeEvent.seq, OutcomeEvent.study_uid, OutcomeEvent.truth)))
    fb = FeedbackEvent
    rows.extend((int(s), u, str(t)) for s, u, t in conn.execute(
        select(fb.seq, fb.study_uid, fb.truth).where(fb.kind == "pathology")))
    rows.sort()
    return {uid: truth for _seq, uid, truth in rows}
