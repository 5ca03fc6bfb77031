"""The export outbox: SRs waiting to be C-STOREd to each destination, kept on disk.

Layout (``<outbox_dir>/export``)::

    <id>/object.dcm    the SR (or any instance) to send, written durably before submit returns
    <id>/item.json     study, SOP UIDs and, per destination: state, attempts, next_due, last_error
    .lock              flock taken for every read-modify-write (serve and the CLI share the folder)

``id`` is derived from the SOP Instance UID, so submitting the same SR twice is one item.
Destination states: ``pending`` (due at ``next_due``), ``sent`` (Success received),
``commit-pending`` (stored; a Storage Commitment answer is awaited until ``next_due``),
``committed`` (the archive confirmed it keeps the object), ``dead-letter``
(``export_max_attempts`` reached or a permanent refusal; ``eusdx outbox retry`` re-arms it).
Items may also carry a JSON event instead of a DICOM object (webhook notices): their object file
is named in the record's ``object`` field.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dicom_node.pending import read_json, write_json_atomic
from dicom_node.spool import fsync_dir
from eusdx.errors import DataError

__all__ = ["Outbox", "OutboxItemNotFound", "item_id_for", "PENDING", "SENT", "DEAD_LETTER",
           "COMMIT_PENDING", "COMMITTED", "WAITING", "DONE"]

PENDING = "pending"
SENT = "sent"
DEAD_LETTER = "dead-letter"
COMMIT_PENDING = "commit-pending"
COMMITTED = "committed"
#: States the runner still acts on at ``next_due``; states nothing more happens to.
WAITING = (PENDING, COMMIT_PENDING)
DONE = (SENT, COMMITTED, DEAD_LETTER)
_OBJECT = "object.dcm"
_ITEM = "item.json"


class OutboxItemNotFound(DataError):
    """No outbox item has that id."""


def item_id_for(sop_uid: str) -> str:
    """Short, stable item id of an SR: first 16 hex digits of SHA-256 of its SOP Instance UID."""
    return hashlib.sha256(sop_uid.encode("ascii")).hexdigest()[:16]


class Outbox:
    """Durable export items under ``root`` (created if missing)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.root / ".lock"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive lock over the whole outbox (short critical sections only)."""
        with open(self._lock_path, "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _dir(self, item_id: str) -> Path:
        if not item_id.isalnum():
            raise OutboxItemNotFound(f"no outbox item {item_id!r}")
        return self.root / item_id

    def object_path(self, item_id: str) -> Path:
        """The item's object file (``object.dcm``, or the name its record gives)."""
        name = _OBJECT
        try:
            name = str(self.get(item_id).get("object", _OBJECT))
        except OutboxItemNotFound:
            pass
        if "/" in name or name.startswith("."):
            raise OutboxItemNotFound(f"outbox item {item_id!r} names a bad object file")
        return self._dir(item_id) / name

    # --- writing --------------------------------------------------------------------------------

    def add(self, *, sop_uid: str | None, sop_class_uid: str | None, study_uid: str,
            write_object: Any, destinations: list[str], now: float | None = None,
            key: str | None = None, object_name: str = _OBJECT,
            extra: dict[str, Any] | None = None) -> tuple[str, bool]:
        """Create an item unless one exists for ``key`` (default: ``sop_uid``).

        ``write_object(path)`` writes the DICOM file to ``path`` (a temp name); it is fsynced and
        renamed into place before ``item.json`` exists, so an item never lacks its object.
        ``object_name`` and ``extra`` (top-level record fields) serve items that are not DICOM
        objects (webhook events, keyed by ``key``).

        Returns
        -------
        (id, created)
        """
        now = time.time() if now is None else now
        item_id = item_id_for(key if key is not None else str(sop_uid))
        folder = self._dir(item_id)
        with self.locked():
            if (folder / _ITEM).exists():
                return item_id, False
            folder.mkdir(exist_ok=True)
            tmp = folder / f".{object_name}.tmp"
            write_object(tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, folder / object_name)
            fsync_dir(folder)
            record = {
                **(extra or {}),
                "id": item_id, "study_uid": study_uid, "sop_uid": sop_uid,
                "sop_class_uid": sop_class_uid, "created": now, "queued_audited": False,
                "object": object_name,
                "destinations": {
                    d: {"state": PENDING, "attempts": 0, "next_due": now, "last_error": None,
                        "sent_at": None}
                    for d in destinations
                },
            }
            write_json_atomic(folder / _ITEM, record)
            fsync_dir(self.root)
        return item_id, True

    def update(self, item_id: str, **fields: Any) -> dict[str, Any]:
        """Set top-level fields of an item; returns the new record."""
        with self.locked():
            record = self.get(item_id)
            record.update(fields)
            write_json_atomic(self._dir(item_id) / _ITEM, record)
            return record

    def update_destination(self, item_id: str, destination: str, **fields: Any) -> dict[str, Any]:
        """Set fields of one destination of an item; returns the new destination record."""
        with self.locked():
            record = self.get(item_id)
            dest = record["destinations"].setdefault(destination, {})
            dest.update(fields)
            write_json_atomic(self._dir(item_id) / _ITEM, record)
            return dict(dest)

    def rearm(self, item_id: str | None, *, now: float | None = None) -> list[tuple[str, str]]:
        """Put dead-letter destinations (of one item, or all items) back to ``pending``, due now,
        with a fresh attempt budget. Returns the ``(id, destination)`` pairs re-armed.

        Raises
        ------
        OutboxItemNotFound
            ``item_id`` is given and unknown.
        """
        now = time.time() if now is None else now
        ids = [item_id] if item_id is not None else self.ids()
        rearmed = []
        with self.locked():
            for iid in ids:
                record = self.get(iid)
                changed = False
                for name, dest in record["destinations"].items():
                    if dest.get("state") == DEAD_LETTER:
                        dest.update(state=PENDING, attempts=0, next_due=now)
                        rearmed.append((iid, name))
                        changed = True
                if changed:
                    write_json_atomic(self._dir(iid) / _ITEM, record)
        return rearmed

    def remove(self, item_id: str) -> None:
        with self.locked():
            shutil.rmtree(self._dir(item_id), ignore_errors=True)
            fsync_dir(self.root)

    # --- reading --------------------------------------------------------------------------------

    def ids(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and (p / _ITEM).exists() and not p.name.startswith("."))

    def get(self, item_id: str) -> dict[str, Any]:
        """The item's record.

        Raises
        ------
        OutboxItemNotFound
            No such item.
        """
        path = self._dir(item_id) / _ITEM
        try:
            return read_json(path)
        except FileNotFoundError:
            raise OutboxItemNotFound(f"no outbox item {item_id!r}") from None

    def items(self) -> list[dict[str, Any]]:
        return [self.get(i) for i in self.ids()]

    def due(self, now: float | None = None) -> list[tuple[str, str]]:
        """``(id, destination)`` pairs that are pending (or awaiting a Storage Commitment
        answer) and due, oldest item first."""
        now = time.time() if now is None else now
        found = []
        for record in self.items():
            for name, dest in record["destinations"].items():
                if dest.get("state") in WAITING and float(dest.get("next_due", 0)) <= now:
                    found.append((float(record.get("created", 0)), record["id"], name))
        return [(iid, name) for _, iid, name in sorted(found)]

    def next_due(self) -> float | None:
        """Earliest ``next_due`` of any pending or commit-pending destination, or ``None``."""
        times = [float(d.get("next_due", 0)) for r in self.items()
                 for d in r["destinations"].values() if d.get("state") in WAITING]
        return min(times) if times else None

    def depth(self) -> dict[str, int]:
        """Number of (item, destination) pairs per state."""
        counts = {PENDING: 0, SENT: 0, DEAD_LETTER: 0}
        try:
            records = self.items()
        except OSError:
            return counts
        for record in records:
            for dest in record["destinations"].values():
                state = str(dest.get("state"))
                counts[state] = counts.get(state, 0) + 1
        return counts
