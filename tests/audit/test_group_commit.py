"""Group commit: concurrent writers share transactions, every row is committed before its call
returns, the chain stays valid, and one failing write does not take the others with it."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from audit import AuditLog, AuditUnavailable
from audit.chain import verify_chain
from audit.group_commit import GroupCommit


def _instance(log: AuditLog, i: int) -> None:
    log.instance(association_id=None, study_uid="1.2.3", series_uid="1.2.3.1",
                 sop_uid=f"1.2.3.1.{i}", sop_class_uid="1.2.840.10008.5.1.4.1.1.6.1",
                 transfer_syntax="1.2.840.10008.1.2.1", size=10, digest="0" * 64,
                 status="stored", calling_ae="PACS", patient_id="P1")


def test_concurrent_writers_are_grouped_and_every_row_is_in_the_chain(audit_log: AuditLog) -> None:
    n_threads, per_thread = 8, 10
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            barrier.wait()
            for k in range(per_thread):
                _instance(audit_log, t * 100 + k)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    group = audit_log._group
    assert group.requests == n_threads * per_thread
    with audit_log.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM instances").scalar_one() == n_threads * per_thread
        assert verify_chain(conn).ok


def _slow_commit_many(log: list[list[str]], fail: str | None = None):  # type: ignore[no-untyped-def]
    def commit_many(builds: Sequence[str]) -> list[str]:
        time.sleep(0.05)  # a commit that waits for the disk
        if fail is not None and fail in builds:
            raise AuditUnavailable(f"cannot write {fail}")
        log.append(list(builds))
        return [b.upper() for b in builds]

    return commit_many


def test_writes_arriving_during_a_commit_go_together_in_the_next_group() -> None:
    committed: list[list[str]] = []
    group: GroupCommit[str] = GroupCommit(_slow_commit_many(committed))
    results: dict[str, str] = {}
    first = threading.Thread(target=lambda: results.setdefault("a", group.submit("a")))
    first.start()
    time.sleep(0.01)  # "a" is committing now
    others = [threading.Thread(target=lambda x=x: results.setdefault(x, group.submit(x))) for x in "bcd"]
    for th in others:
        th.start()
    for th in [first, *others]:
        th.join(10)
    assert results == {"a": "A", "b": "B", "c": "C", "d": "D"}
    assert committed[0] == ["a"] and sorted(committed[1]) == ["b", "c", "d"]
    assert group.groups == 2


def test_a_failing_write_fails_alone_and_the_rest_of_its_group_is_committed() -> None:
    committed: list[list[str]] = []
    group: GroupCommit[str] = GroupCommit(_slow_commit_many(committed, fail="bad"))
    outcomes: dict[str, object] = {}

    def submit(x: str) -> None:
        try:
            outcomes[x] = group.submit(x)
        except AuditUnavailable as exc:
            outcomes[x] = exc

    first = threading.Thread(target=submit, args=("a",))
    first.start()
    time.sleep(0.01)
    rest = [threading.Thread(target=submit, args=(x,)) for x in ("b", "bad", "c")]
    for th in rest:
        th.start()
    for th in [first, *rest]:
        th.join(10)
    assert isinstance(outcomes["bad"], AuditUnavailable)
    assert {k: v for k, v in outcomes.items() if k != "bad"} == {"a": "A", "b": "B", "c": "C"}
    assert sorted(x for batch in committed for x in batch) == ["a", "b", "c"]


def test_more_waiters_than_max_group_are_all_served() -> None:
    committed: list[list[str]] = []
    group: GroupCommit[str] = GroupCommit(_slow_commit_many(committed), max_group=2)
    names = [f"w{i}" for i in range(7)]
    results: dict[str, str] = {}
    threads = [threading.Thread(target=lambda x=x: results.setdefault(x, group.submit(x))) for x in names]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    assert results == {x: x.upper() for x in names}
    assert all(len(batch) <= 2 for batch in committed)
    with pytest.raises(ValueError):
        GroupCommit(_slow_commit_many([]), max_group=0)
