"""Group commit: concurrent audit writes of one process share one transaction and one fsync.

Every audit write is a transaction that ends in a commit, and a commit waits for the disk
(SQLite ``synchronous=FULL``: an fsync of the WAL; PostgreSQL: a WAL flush). Threads that write
at the same time (the DICOM node's associations) would otherwise queue for the database's write
lock one by one, each paying its own fsync, and SQLite's busy handler makes a waiting writer
sleep in steps of up to 100 ms.

Here the first thread to arrive becomes the *leader*: it takes every write queued so far (its own
included), runs them in order in ONE transaction, commits, and wakes the others. Writes that
arrive while a leader is committing wait and go together in the next group. A single writer is
never delayed (it leads a group of one). Each caller still returns only after its row is
committed, so nothing is weaker: "recorded before Success" holds per row.

If a group's transaction fails, nothing of it was committed and each write of the group is run
again alone, so one bad write never takes the others' outcome with it.

This is the classic group commit of database logs (Gray & Reuter, *Transaction Processing*, 9.4.7;
PostgreSQL ``commit_delay``; SQLite has none built in).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
B = TypeVar("B")


class _Request(Generic[B]):
    __slots__ = ("build", "done", "result", "error")

    def __init__(self, build: B) -> None:
        self.build = build
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommit(Generic[B]):
    """Runs ``commit_many`` on groups of concurrent requests; see the module docstring.

    Parameters
    ----------
    commit_many
        ``commit_many(builds) -> results``: runs every build in one transaction and commits it,
        returning one result per build in order, or raises (then nothing was committed).
    max_group
        Most requests in one transaction (bounds its length and the leader's work).
    """

    def __init__(self, commit_many: Callable[[Sequence[B]], list[Any]], *, max_group: int = 64) -> None:
        if max_group < 1:
            raise ValueError("max_group must be >= 1")
        self._commit_many = commit_many
        self._max_group = max_group
        self._cv = threading.Condition(threading.Lock())
        self._pending: list[_Request[B]] = []
        self._leading = False
        self.groups = 0  # transactions committed (for tests and metrics)
        self.requests = 0

    def submit(self, build: B) -> Any:
        """Run ``build`` in the next group; return its result once committed, or raise its error."""
        req: _Request[B] = _Request(build)
        with self._cv:
            self._pending.append(req)
            while True:
                while not req.done and self._leading:
                    self._cv.wait()
                if req.done:
                    return self._outcome(req)
                # No leader: lead the next group (oldest first; ours is in it unless more than
                # max_group were waiting before us, then we lead again right after).
                self._leading = True
                batch = self._pending[: self._max_group]
                del self._pending[: self._max_group]
                self._cv.release()
                try:
                    self._run(batch)
                finally:
                    self._cv.acquire()
                    self._leading = False
                    self._cv.notify_all()

    def _run(self, batch: list[_Request[B]]) -> None:
        try:
            results = self._commit_many([r.build for r in batch])
        except BaseException as exc:
            if len(batch) == 1:
                batch[0].error = exc
                batch[0].done = True
                return
            # Nothing of the group was committed: each write alone, each with its own outcome.
            for r in batch:
                try:
                    r.result = self._commit_many([r.build])[0]
                except BaseException as one:  # handed to that request's own thread, raised there
                    r.error = one
                r.done = True
                self.groups += 1
            self.requests += len(batch)
            return
        for r, result in zip(batch, results):
            r.result = result
            r.done = True
        self.groups += 1
        self.requests += len(batch)

    @staticmethod
    def _outcome(req: _Request[B]) -> Any:
        if req.error is not None:
            raise req.error
        return req.result
