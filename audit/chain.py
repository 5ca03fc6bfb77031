"""The hash chain: canonical form of a row, its hash, and verification of the whole chain.

``row_hash = sha256(prev_hash || canonical(row))`` where ``canonical`` is sorted-key, compact JSON of
the table name and every column except ``row_hash``. Values are normalised so that what the
database hands back hashes the same as what was written: timestamps as UTC ISO text (SQLite returns
them naive), strings clipped to the column length and stripped of NUL (PostgreSQL rejects NUL).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import heapq
import json
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import Connection, String, Table, select

from audit.schema import EVENT_MODELS, GENESIS_HASH, ChainHead

__all__ = [
    "canonical",
    "row_hash",
    "canonical_json",
    "normalise_row",
    "ChainBreak",
    "VerifyResult",
    "verify_chain",
]


def canonical_json(value: Any) -> str:
    """Compact, sorted-key JSON; NaN and infinity are refused (they have no JSON form)."""
    return _CANONICAL.encode(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return _ts_text(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    # numpy scalars and arrays (the worker's lesion results), without importing numpy here
    if getattr(value, "shape", None) == () and callable(getattr(value, "item", None)):
        return value.item()
    if callable(getattr(value, "tolist", None)):
        return value.tolist()
    raise TypeError(f"value of type {type(value).__name__} cannot be stored in the audit log")


# One encoder, built once: ``json.dumps`` with options builds a new encoder per call, which was a
# measurable share of hashing a row (the encoder keeps no state between calls).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False, default=_json_default)


def _ts_text(value: dt.datetime) -> str:
    if value.tzinfo is None:  # SQLite hands back naive datetimes; we only ever store UTC
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")


def _clean_text(value: str, length: int | None) -> str:
    value = value.replace("\x00", "\\x00")
    if length is not None and len(value) > length:
        value = value[:length]
    return value


def normalise_row(table: Table, values: Mapping[str, Any]) -> dict[str, Any]:
    """Return a full row for ``table``: every column present, text clipped to its length.

    Unknown keys raise ``KeyError`` naming them, so a typo in a caller never disappears silently.
    """
    unknown = set(values) - set(table.c.keys())
    if unknown:
        raise KeyError(f"{table.name} has no column(s) {sorted(unknown)}")
    row: dict[str, Any] = {}
    for column in table.columns:
        value = values.get(column.name)
        if isinstance(value, str):
            length = column.type.length if isinstance(column.type, String) else None
            value = _clean_text(value, length)
        row[column.name] = value
    return row


def canonical(table_name: str, row: Mapping[str, Any]) -> str:
    """Canonical text of one event row (``row_hash`` excluded)."""
    body: dict[str, Any] = {"_table": table_name}
    for key, value in row.items():
        if key == "row_hash":
            continue
        if isinstance(value, dt.datetime):
            value = _ts_text(value)
        body[key] = value
    return canonical_json(body)


def row_hash(prev_hash: str, table_name: str, row: Mapping[str, Any]) -> str:
    """``sha256(prev_hash || canonical(row))`` as hex."""
    digest = hashlib.sha256(prev_hash.encode("ascii"))
    digest.update(canonical(table_name, row).encode("utf-8"))
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class ChainBreak:
    """The first place the chain does not hold."""

    table: str
    seq: int
    problem: str

    def __str__(self) -> str:
        return f"{self.table} seq {self.seq}: {self.problem}"


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify_chain`."""

    rows: int
    last_seq: int
    last_hash: str
    broken: ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.broken is None


def _stream(conn: Connection, table: Table) -> Iterator[tuple[int, str, dict[str, Any]]]:
    result = conn.execution_options(stream_results=True, yield_per=2000).execute(
        select(table).order_by(table.c.seq)
    )
    for row in result.mappings():
        yield int(row["seq"]), table.name, dict(row)


def verify_chain(conn: Connection, anchors: Mapping[int, str] | None = None) -> VerifyResult:
    """Recompute the chain over every event table in ``seq`` order.

    Detects an edited row (its hash no longer matches), a deleted or inserted row (a gap in ``seq``
    or a ``prev_hash`` that does not link), and a chain head that disagrees with the last row.
    With ``anchors`` it also detects a chain that was rewritten consistently from some row to the
    head (every hash recomputed): the recomputed hash at an anchored ``seq`` differs from the one
    recorded outside the database, or the chain ends before an anchored ``seq``.

    Parameters
    ----------
    conn
        An open connection; the caller decides the transaction.
    anchors
        ``{seq: row_hash}`` from verified anchors (:mod:`audit.anchor`).

    Returns
    -------
    VerifyResult
        ``broken`` names the first bad row, or is ``None`` when the chain holds.
    """
    # __table__ is set on each mapped class by the declarative base; the Base type does not declare it
    tables = [m.__table__ for m in EVENT_MODELS]  # type: ignore[attr-defined]
    streams = [_stream(conn, t) for t in tables]
    expected_seq = 1
    last_hash = GENESIS_HASH
    rows = 0
    for seq, name, row in heapq.merge(*streams, key=lambda item: item[0]):
        if seq != expected_seq:
            problem = (f"sequence gap: expected seq {expected_seq} (a row is missing)"
                       if seq > expected_seq else f"duplicate seq {seq}")
            return VerifyResult(rows, expected_seq - 1, last_hash, ChainBreak(name, seq, problem))
        if row["prev_hash"] != last_hash:
            return VerifyResult(rows, seq - 1, last_hash, ChainBreak(
                name, seq, "prev_hash does not match the previous row's hash"))
        recomputed = row_hash(last_hash, name, row)
        if recomputed != row["row_hash"]:
            return VerifyResult(rows, seq - 1, last_hash, ChainBreak(
                name, seq, "row content does not match its row_hash (row was altered)"))
        if anchors and seq in anchors and anchors[seq] != recomputed:
            return VerifyResult(rows, seq - 1, last_hash, ChainBreak(
                name, seq, "row hash differs from the signed anchor recorded outside the database "
                "(the chain was rewritten)"))
        last_hash = recomputed
        expected_seq += 1
        rows += 1
    if anchors and max(anchors) > expected_seq - 1:
        return VerifyResult(rows, expected_seq - 1, last_hash, ChainBreak(
            "anchor", max(anchors), f"a signed anchor recorded seq {max(anchors)} but the chain "
            f"ends at seq {expected_seq - 1} (rows removed from the end)"))
    head = conn.execute(select(ChainHead.seq, ChainHead.row_hash).where(ChainHead.id == 1)).first()
    last_seq = expected_seq - 1
    if head is None:
        return VerifyResult(rows, last_seq, last_hash, ChainBreak("chain_head", 1, "missing"))
    if int(head.seq) != last_seq or head.row_hash != last_hash:
        return VerifyResult(rows, last_seq, last_hash, ChainBreak(
            "chain_head", int(head.seq),
            f"head says seq {head.seq} but the chain ends at seq {last_seq} (rows deleted at the end?)"))
    return VerifyResult(rows, last_seq, last_hash, None)
