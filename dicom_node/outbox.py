"""The export outbox: SRs waiting to be C-STOREd to each destination, kept on disk.

Layout (``<outbox_dir>/export``)::

    <id>/object.dcm    the SR (or any instance) to send, written durably before submit returns
    <id>/item.json     study, SOP UIDs and, per destination: state, attempts, next_due, last_error
    .state/<s>/<id>    index of item states (empty files, fsynced): ``waiting`` (a destination is
                       still to be sent), ``dead-letter`` (one gave up), ``done`` (all sent; the
                       file's content is when, for pruning)
    .lock              flock taken for every read-modify-write (serve and the CLI share the folder)

``id`` is derived from the SOP Instance UID, so submitting the same SR twice is one item.
Destination states: ``pending`` (due at ``next_due``), ``sent`` (Success received),
``commit-pending`` (stored; a Storage Commitment answer is awaited until ``next_due``),
``committed`` (the archive confirmed it keeps the object), ``dead-letter``
(``export_max_attempts`` reached or a permanent refusal; ``eusdx outbox retry`` re-arms it).
Items may also carry a JSON event instead of a DICOM object (webhook notices): their object file
is named in the record's ``object`` field.

Cost: the runner, ``/healthz`` and ``/metrics`` read only the ``waiting`` and ``dead-letter`` index
(O(pending work)); sent items are pruned after ``Settings.outbox_sent_retention_days``
(:meth:`Outbox.prune_sent`), so the folder does not grow with history. Every write goes through
``eusdx.durable``. An index entry is written before the record changes and the old one removed after,
so a crash leaves at most a stale entry (re-checked against ``item.json`` and repaired on read), never
a missing one.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eusdx.durable import (
    atomic_write_json,
    atomic_write_text,
    atomic_write_with,
    fsync_dir,
    read_json_object,
    remove_durably,
    sweep_temporaries,
)
from eusdx.errors import DataError

__all__ = ["Outbox", "OutboxItemNotFound", "item_id_for", "item_state", "PENDING", "SENT", "DEAD_LETTER",
           "COMMIT_PENDING", "COMMITTED", "WAITING", "DONE", "ITEM_WAITING", "ITEM_DONE", "HELD"]

PENDING = "pending"
SENT = "sent"
DEAD_LETTER = "dead-letter"
COMMIT_PENDING = "commit-pending"
COMMITTED = "committed"
#: Destination states the runner still acts on at ``next_due``; states nothing more happens to.
WAITING = (PENDING, COMMIT_PENDING)
DONE = (SENT, COMMITTED, DEAD_LETTER)
#: Item-level states of the index: a destination still to be served / one gave up / all confirmed.
ITEM_WAITING = "waiting"
ITEM_DONE = "done"
#: An item without destinations (none configured): kept, never sent, not in the index.
HELD = "held"
_INDEXED = (ITEM_WAITING, DEAD_LETTER, ITEM_DONE)
_OBJECT = "object.dcm"
_ITEM = "item.json"
_STATE = ".state"


def item_state(record: dict[str, Any]) -> str:
    """The item-level state of a record: ``waiting`` if any destination is pending or awaits a
    Storage Commitment answer, else ``dead-letter`` if any gave up, else ``done`` (all sent or
    committed), or ``held`` without destinations."""
    states = [str(d.get("state")) for d in record.get("destinations", {}).values()]
    if not states:
        return HELD
    if any(state in WAITING for state in states):
        return ITEM_WAITING
    if DEAD_LETTER in states:
        return DEAD_LETTER
    return ITEM_DONE


class OutboxItemNotFound(DataError):
    """No outbox item has that id."""


def item_id_for(sop_uid: str) -> str:
    """Short, stable item id of an SR: first 16 hex digits of SHA-256 of its SOP Instance UID."""
    return hashlib.sha256(sop_uid.encode("ascii")).hexdigest()[:16]


_arrivals: dict[str, threading.Event] = {}
_arrivals_lock = threading.Lock()


def _arrival_event(root: Path) -> threading.Event:
    """The in-process "a new item was added" signal of one outbox folder (shared by every
    :class:`Outbox` opened on it in this process)."""
    key = str(root.resolve())
    with _arrivals_lock:
        return _arrivals.setdefault(key, threading.Event())


class Outbox:
    """Durable export items under ``root`` (created if missing).

    An item added in this process (the embedded worker of ``eusdx serve``) wakes a runner waiting
    in :meth:`wait_for_arrival` at once; items added by another process (a Celery worker) are found
    by the runner's next periodic pass.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._arrival = _arrival_event(self.root)
        self._lock_path = self.root / ".lock"
        self._state = self.root / _STATE
        if not self._state.is_dir():
            self._build_index()

    # --- state index ----------------------------------------------------------------------------

    def _marker(self, state: str, item_id: str) -> Path:
        return self._state / state / item_id

    def _build_index(self) -> None:
        """Index an outbox written before the index existed (once; O(items))."""
        with self.locked():
            if self._state.is_dir():
                return
            staging = self.root / f"{_STATE}.building"
            shutil.rmtree(staging, ignore_errors=True)
            for state in _INDEXED:
                (staging / state).mkdir(parents=True)
            for item in self._all_ids():
                try:
                    record = self.get(item)
                except (OutboxItemNotFound, ValueError, OSError):
                    continue
                state = item_state(record)
                if state in _INDEXED:
                    (staging / state / item).write_text(str(self._done_at(record)))
            for state in _INDEXED:
                fsync_dir(staging / state)
            staging.rename(self._state)
            fsync_dir(self.root)

    @staticmethod
    def _done_at(record: dict[str, Any]) -> float:
        times = [float(d.get("sent_at") or 0.0) for d in record.get("destinations", {}).values()]
        return max(times, default=float(record.get("created", 0.0))) or float(record.get("created", 0.0))

    def _index_entry(self, item_id: str, record: dict[str, Any]) -> str:
        """Write the index entry of the record's state if missing; return that state."""
        new = item_state(record)
        if new in _INDEXED and not self._marker(new, item_id).exists():
            atomic_write_text(self._marker(new, item_id), str(self._done_at(record)))
        return new

    def _drop_other_entries(self, item_id: str, keep: str) -> None:
        for state in _INDEXED:
            if state != keep:
                remove_durably(self._marker(state, item_id))

    def _write_record(self, item_id: str, record: dict[str, Any]) -> None:
        """Write ``item.json`` with the index kept right (call under the lock): the new entry first,
        the record, then the old entry goes."""
        new = self._index_entry(item_id, record)
        atomic_write_json(self._dir(item_id) / _ITEM, record)
        self._drop_other_entries(item_id, new)

    def indexed(self, state: str) -> list[str]:
        """Item ids the index lists under ``waiting``, ``dead-letter`` or ``done`` (may hold stale ids,
        which readers check against the record)."""
        folder = self._state / state
        try:
            return sorted(e.name for e in folder.iterdir() if e.name.isalnum())
        except FileNotFoundError:
            return []

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
            sweep_temporaries(folder)
            atomic_write_with(folder / object_name, write_object)
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
            self._write_record(item_id, record)
            fsync_dir(self.root)
        self._arrival.set()
        return item_id, True

    def wait_for_arrival(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds until an item is added in this process; True if one was.

        The signal is consumed only when it was seen (the caller then scans the disk, which holds every
        item added before the signal); one set while nobody waits wakes the next wait at once.
        """
        arrived = self._arrival.wait(max(0.0, timeout))
        if arrived:
            self._arrival.clear()
        return arrived

    def update(self, item_id: str, **fields: Any) -> dict[str, Any]:
        """Set top-level fields of an item; returns the new record."""
        with self.locked():
            record = self.get(item_id)
            record.update(fields)
            self._write_record(item_id, record)
            return record

    def update_destination(self, item_id: str, destination: str, **fields: Any) -> dict[str, Any]:
        """Set fields of one destination of an item; returns the new destination record."""
        with self.locked():
            record = self.get(item_id)
            dest = record["destinations"].setdefault(destination, {})
            dest.update(fields)
            self._write_record(item_id, record)
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
        ids = [item_id] if item_id is not None else self.indexed(DEAD_LETTER)
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
                    self._write_record(iid, record)
        return rearmed

    def remove(self, item_id: str) -> None:
        """Delete an item (its folder and index entries) durably."""
        with self.locked():
            self._remove_unlocked(item_id)

    def _remove_unlocked(self, item_id: str) -> None:
        shutil.rmtree(self._dir(item_id), ignore_errors=True)
        fsync_dir(self.root)
        for state in _INDEXED:
            remove_durably(self._marker(state, item_id))

    def prune_sent(self, older_than: float, *, limit: int | None = None,
                   dry_run: bool = False) -> list[dict[str, Any]]:
        """Delete items every destination confirmed before ``older_than`` (epoch seconds), oldest first.

        Parameters
        ----------
        older_than
            Confirmation time limit; items confirmed later stay.
        limit
            At most this many (disk-pressure cleaning removes a few at a time).
        dry_run
            Only say what would go.

        Returns
        -------
        list of dict
            The records removed (``id``, ``study_uid``, ``sop_uid``, ``done_at``): the caller audits them.
        """
        found: list[tuple[float, str]] = []
        for iid in self.indexed(ITEM_DONE):
            try:
                done_at = float(self._marker(ITEM_DONE, iid).read_text() or 0.0)
            except (OSError, ValueError):
                continue
            if done_at < older_than:
                found.append((done_at, iid))
        found.sort()
        removed: list[dict[str, Any]] = []
        with self.locked():
            for done_at, iid in found[:limit] if limit is not None else found:
                try:
                    record = self.get(iid)
                except OutboxItemNotFound:
                    remove_durably(self._marker(ITEM_DONE, iid))
                    continue
                if item_state(record) != ITEM_DONE:  # stale entry: repair, keep the item
                    self._drop_other_entries(iid, self._index_entry(iid, record))
                    continue
                removed.append({"id": iid, "study_uid": record["study_uid"], "sop_uid": record["sop_uid"],
                                "done_at": done_at})
                if not dry_run:
                    self._remove_unlocked(iid)
        return removed

    # --- reading --------------------------------------------------------------------------------

    def _all_ids(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and (p / _ITEM).exists())

    def ids(self) -> list[str]:
        """Every item id (O(items): for the CLI listing, not for the runner)."""
        return self._all_ids()

    def get(self, item_id: str) -> dict[str, Any]:
        """The item's record.

        Raises
        ------
        OutboxItemNotFound
            No such item.
        """
        path = self._dir(item_id) / _ITEM
        try:
            return read_json_object(path)
        except FileNotFoundError:
            raise OutboxItemNotFound(f"no outbox item {item_id!r}") from None

    def items(self) -> list[dict[str, Any]]:
        """Every item's record (O(items): for the CLI listing)."""
        return [self.get(i) for i in self.ids()]

    def records(self, state: str) -> list[dict[str, Any]]:
        """Records of the items indexed under ``state`` that really are in it (stale entries skipped)."""
        out = []
        for iid in self.indexed(state):
            try:
                record = self.get(iid)
            except (OutboxItemNotFound, ValueError):
                continue  # being created (entry first), or gone
            if item_state(record) == state:
                out.append(record)
        return out

    def due(self, now: float | None = None) -> list[tuple[str, str]]:
        """``(id, destination)`` pairs that are pending (or awaiting a Storage Commitment answer) and
        due, oldest item first (O(waiting items))."""
        now = time.time() if now is None else now
        found = []
        for record in self.records(ITEM_WAITING):
            for name, dest in record["destinations"].items():
                if dest.get("state") in WAITING and float(dest.get("next_due", 0)) <= now:
                    found.append((float(record.get("created", 0)), record["id"], name))
        return [(iid, name) for _, iid, name in sorted(found)]

    def next_due(self) -> float | None:
        """Earliest ``next_due`` of any pending or commit-pending destination, or ``None``
        (O(waiting items))."""
        times = [float(d.get("next_due", 0)) for r in self.records(ITEM_WAITING)
                 for d in r["destinations"].values() if d.get("state") in WAITING]
        return min(times) if times else None

    def depth(self, *, with_sent: bool = False) -> dict[str, int]:
        """Number of (item, destination) pairs per state, from the index: O(pending work).

        ``sent`` (and ``committed``) are counted only ``with_sent`` (it reads every confirmed item
        still kept).
        """
        counts = {PENDING: 0, DEAD_LETTER: 0}
        if with_sent:
            counts[SENT] = 0
        try:
            records = self.records(ITEM_WAITING) + self.records(DEAD_LETTER)
            if with_sent:
                records += self.records(ITEM_DONE)
        except OSError:
            return counts
        for record in records:
            for dest in record["destinations"].values():
                state = str(dest.get("state"))
                if state in (SENT, COMMITTED) and not with_sent:
                    continue
                counts[state] = counts.get(state, 0) + 1
        return counts
