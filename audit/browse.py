"""Keyset-paged study listing for the dashboard, and the analysis rows live performance needs.

Paging uses the sort key itself (``first_seen`` descending, then ``study_uid``) as the cursor, so
page 1000 costs what page 1 costs (an OFFSET would scan every skipped row); the index
``ix_studies_first_seen_study_uid`` serves the order.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from audit.errors import QueryError
from audit.schema import AnalysisEvent, StudyProjection

__all__ = ["StudyPage", "studies_page", "encode_cursor", "decode_cursor", "analysis_rows",
           "analysis_attempts", "count_studies", "NO_RESULT"]

#: ``result`` filter value for studies without a label (no analysis, failed, not yet analysed).
NO_RESULT = "none"


def encode_cursor(first_seen: str, study_uid: str) -> str:
    """An opaque, URL-safe cursor for the row after which the next page starts."""
    return base64.urlsafe_b64encode(f"{first_seen}|{study_uid}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    """Inverse of :func:`encode_cursor`.

    Raises
    ------
    QueryError
        The cursor was not made by :func:`encode_cursor`.
    """
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, uid = text.split("|", 1)
        stamp = dt.datetime.fromisoformat(when)
    except (ValueError, UnicodeDecodeError) as exc:
        raise QueryError("the page cursor is not valid; start again from the first page") from exc
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return stamp.astimezone(dt.timezone.utc), uid


@dataclasses.dataclass(frozen=True)
class StudyPage:
    """One page of studies, newest first; ``next_cursor`` is ``None`` on the last page."""

    rows: list[dict[str, Any]]
    next_cursor: str | None


def studies_page(conn: Connection, f: Any, *, cursor: str | None = None,
                 size: int = 50) -> StudyPage:
    """Studies matching ``f`` (``audit.queries.Filters``), one page after ``cursor``.

    ``f.label`` may be :data:`NO_RESULT` for studies without a result.

    Raises
    ------
    QueryError
        Unknown state, bad cursor, or ``size`` outside 1..500.
    """
    from audit.log import STUDY_STATES
    from audit.queries import _STUDY_COLUMNS, _rows, _study_conditions

    if not 1 <= size <= 500:
        raise QueryError(f"page size must lie in 1..500, got {size}")
    if f.status and f.status not in STUDY_STATES:
        raise QueryError(f"state {f.status!r} is not a study state ({', '.join(STUDY_STATES)})")
    s = StudyProjection
    # SQLite's planner picks the index of an equality filter (state, result, bundle: each matches
    # a large share of the studies) and then sorts every match; walking the order index and
    # filtering finds a page after a few hundred rows. Wrapping the column keeps its index out of
    # the choice. An accession is selective, so its index stays usable.
    plain = conn.dialect.name != "sqlite" or bool(f.accession)

    def col(column: Any) -> Any:
        return column if plain else func.coalesce(column, "")

    cond = _study_conditions(dataclasses.replace(f, status=None, label=None, bundle=None,
                                                 ae=None))
    if f.ae:
        cond.append(col(s.calling_ae) == f.ae)
    if f.status:
        cond.append(col(s.state) == f.status)
    if f.label == NO_RESULT:
        cond.append(s.label.is_(None) if plain else func.coalesce(s.label, "") == "")
    elif f.label:
        cond.append(col(s.label) == f.label)
    if f.bundle:
        cond.append(col(s.bundle_version) == f.bundle)
    if cursor:
        when, uid = decode_cursor(cursor)
        # The leading ``first_seen <= when`` is a range the index serves; the OR then only
        # settles ties on the boundary timestamp.
        cond.append(s.first_seen <= when)
        cond.append(or_(s.first_seen < when, s.study_uid > uid))
    stmt = (select(*_STUDY_COLUMNS).where(and_(True, *cond))
            .order_by(s.first_seen.desc(), s.study_uid).limit(size + 1))
    rows = _rows(conn.execute(stmt))
    next_cursor = None
    if len(rows) > size:
        rows = rows[:size]
        last = rows[-1]
        next_cursor = encode_cursor(last["first_seen"], last["study_uid"])
    return StudyPage(rows, next_cursor)


def count_studies(conn: Connection) -> int:
    """How many studies the log knows."""
    return int(conn.execute(select(func.count()).select_from(StudyProjection)).scalar_one())


def analysis_rows(conn: Connection, f: Any) -> list[dict[str, Any]]:
    """Every analysis (result or error) in ``f``'s time range and bundle, oldest first: seq,
    month (``YYYY-MM``, UTC), study_uid, bundle_version, probability, label, failed (bool).
    Live performance groups 100,000s of these, so rows are built plainly."""
    from audit.queries import _time_range

    an = AnalysisEvent
    stmt = select(an.seq, an.ts, an.study_uid, an.bundle_version, an.probability, an.label,
                  an.error.is_not(None)).where(*_time_range(an.ts, f))
    if f.bundle:
        stmt = stmt.where(an.bundle_version == f.bundle)
    out = []
    for seq, ts, uid, bundle, probability, label, failed in conn.execute(stmt.order_by(an.seq)):
        if ts.tzinfo is not None:
            ts = ts.astimezone(dt.timezone.utc)
        out.append({"seq": seq, "month": f"{ts.year:04d}-{ts.month:02d}", "study_uid": uid,
                    "bundle_version": bundle, "probability": probability, "label": label,
                    "failed": bool(failed)})
    return out


def analysis_attempts(conn: Connection, study_uids: Any) -> dict[str, int]:
    """``{study_uid: n}``: how many times each study entered ``analysing`` (deliveries)."""
    from audit.schema import StudyEvent

    uids = sorted(set(study_uids))
    out: dict[str, int] = {}
    se = StudyEvent
    for start in range(0, len(uids), 500):
        chunk = uids[start:start + 500]
        # ``state + ''``-style wrapping keeps SQLite on the study_uid index (the state index
        # would visit every "analysing" row of the log).
        for uid, n in conn.execute(select(se.study_uid, func.count()).where(
                se.study_uid.in_(chunk), func.coalesce(se.state, "") == "analysing")
                .group_by(se.study_uid)):
            out[uid] = int(n)
    return out
