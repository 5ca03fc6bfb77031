"""Hash chain: append-only triggers, tamper detection, concurrent writers."""

from __future__ import annotations

import multiprocessing
import threading

import pytest
import sqlalchemy as sa

from audit import AuditLog
from audit.chain import verify_chain
from audit.schema import EVENT_TABLE_NAMES, InstanceEvent
from tests.audit.conftest import SECRET, drop_triggers


def _fill(log: AuditLog, n: int = 5) -> None:
    assoc = log.association(peer_ae="PACS", peer_host="h", peer_port=104, called_ae="EUSDX",
                            tls=True, accepted=True)
    for i in range(n):
        log.instance(association_id=assoc, study_uid="1.2.3", series_uid="1.2.3.1",
                     sop_uid=f"1.2.3.1.{i}", sop_class_uid="1.2", transfer_syntax="1.2.1",
                     size=10, digest=None, status="stored", patient_id="P")
    log.qa_event(actor="tester", action="studies", params={"status": "failed"})


def test_update_and_delete_are_rejected(audit_log: AuditLog) -> None:
    _fill(audit_log)
    audit_log.study_state(study_uid="1.2.3", state="complete")
    audit_log.analysis(study_uid="1.2.3", bundle_version="1", bundle_sha256="0" * 64,
                       device="cpu", timings={"a": 1.0}, lesions=[], probability=0.5,
                       label="GIST", roi_source="auto")
    audit_log.export(study_uid="1.2.3", destination="A@h:1", attempt=1, status="queued",
                     sr_sop_uid=None)
    audit_log.outcome(study_uid="1.2.3", truth="GIST", source="pathology", recorded_by="qa")
    audit_log.feedback(study_uid="1.2.3", kind="verdict", verdict="accept", recorded_by="rad",
                       role="qa")
    for table in EVENT_TABLE_NAMES:
        with audit_log.engine.connect() as conn:  # row triggers only fire on existing rows
            assert conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one() > 0
        for statement in (f"UPDATE {table} SET prev_hash = 'x'", f"DELETE FROM {table}"):
            with pytest.raises(sa.exc.DBAPIError, match=f"{table} is append-only"):
                with audit_log.engine.begin() as conn:
                    conn.exec_driver_sql(statement)
    with audit_log.engine.connect() as conn:
        assert verify_chain(conn).ok


def test_truncate_rejected_on_postgres(postgres_url: str) -> None:
    log = AuditLog(postgres_url, SECRET)
    log.ensure_schema()
    try:
        _fill(log)
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with log.engine.begin() as conn:
                conn.exec_driver_sql("TRUNCATE instances")
    finally:
        log.close()


def test_edited_row_is_detected_and_named(audit_log: AuditLog) -> None:
    _fill(audit_log)
    with audit_log.engine.connect() as conn:
        assert verify_chain(conn).ok
        target = conn.execute(sa.text(
            "SELECT seq FROM instances WHERE sop_uid = '1.2.3.1.2'")).scalar_one()
    with audit_log.engine.begin() as conn:
        drop_triggers(conn, "instances")
        conn.execute(sa.text("UPDATE instances SET size = :s WHERE seq = :q"),
                     {"s": 99999, "q": target})
    with audit_log.engine.connect() as conn:
        result = verify_chain(conn)
    assert not result.ok and result.broken is not None
    assert (result.broken.table, result.broken.seq) == ("instances", target)
    assert "altered" in result.broken.problem


def test_edited_row_with_recomputed_hash_breaks_the_next_link(audit_log: AuditLog) -> None:
    from audit.chain import row_hash

    _fill(audit_log)
    with audit_log.engine.begin() as conn:
        drop_triggers(conn, "instances")
        table = InstanceEvent.__table__
        row = dict(conn.execute(sa.select(table).where(
            table.c.sop_uid == "1.2.3.1.1")).mappings().one())
        row["size"] = 5
        new_hash = row_hash(row["prev_hash"], "instances", row)
        conn.execute(sa.text("UPDATE instances SET size = 5, row_hash = :h WHERE seq = :q"),
                     {"h": new_hash, "q": row["seq"]})
    with audit_log.engine.connect() as conn:
        result = verify_chain(conn)
    assert result.broken is not None and result.broken.seq == row["seq"] + 1
    assert "prev_hash" in result.broken.problem


def test_deleted_row_is_detected(audit_log: AuditLog) -> None:
    _fill(audit_log)
    with audit_log.engine.begin() as conn:
        drop_triggers(conn, "instances")
        conn.execute(sa.text("DELETE FROM instances WHERE sop_uid = '1.2.3.1.3'"))
    with audit_log.engine.connect() as conn:
        result = verify_chain(conn)
    assert result.broken is not None and "sequence gap" in result.broken.problem


def test_deleted_last_row_is_detected_by_chain_head(audit_log: AuditLog) -> None:
    _fill(audit_log)
    with audit_log.engine.begin() as conn:
        drop_triggers(conn, "qa_events")
        conn.execute(sa.text("DELETE FROM qa_events"))
    with audit_log.engine.connect() as conn:
        result = verify_chain(conn)
    assert result.broken is not None and result.broken.table == "chain_head"


def test_threads_append_one_chain(audit_log: AuditLog) -> None:
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(25):
                audit_log.instance(association_id=None, study_uid=f"1.2.{k}", series_uid=None,
                                   sop_uid=f"1.2.{k}.{i}", sop_class_uid=None,
                                   transfer_syntax=None, size=1, digest=None, status="stored")
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with audit_log.engine.connect() as conn:
        result = verify_chain(conn)
        counts = conn.execute(sa.text("SELECT instances FROM studies")).scalars().all()
    # 150 instances + one "received" transition per study
    assert result.ok and result.rows == 150 + 6
    assert sorted(counts) == [25] * 6


def _child(url: str, k: int) -> None:
    log = AuditLog(url, SECRET)
    try:
        log.ensure_schema()  # every process migrates at start; they must not trip over each other
        for i in range(20):
            log.export(study_uid=f"1.9.{k}", destination="A@h:1", attempt=i + 1,
                       status="failed", sr_sop_uid=None, error="refused")
    finally:
        log.close()


def test_processes_migrate_and_append_one_chain(db_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_child, args=(db_url, k)) for k in range(2)]
    for p in procs:
        p.start()
    parent = AuditLog(db_url, SECRET)
    try:
        parent.ensure_schema()
        for i in range(20):
            parent.qa_event(actor="parent", action="ping", params={"i": i})
        for p in procs:
            p.join(timeout=120)
            assert p.exitcode == 0
        with parent.engine.connect() as conn:
            result = verify_chain(conn)
            exports = conn.execute(sa.text("SELECT attempts FROM study_exports")).scalars().all()
        assert result.ok and result.rows == 60
        assert exports == [20, 20]
    finally:
        parent.close()


def test_projections_match_a_replay_of_the_events(audit_log: AuditLog) -> None:
    from audit.projections import check_projections
    from tests.audit.data import STUDY_A, populate

    populate(audit_log)
    with audit_log.engine.connect() as conn:
        assert check_projections(conn) == []
    # Projections may be updated, so an attacker needs no trigger bypass to change what QA sees.
    with audit_log.engine.begin() as conn:
        conn.execute(sa.text("UPDATE studies SET label = 'leiomyoma', probability = 0.1 "
                             "WHERE study_uid = :u"), {"u": STUDY_A})
        conn.execute(sa.text("UPDATE study_exports SET status = 'sent' WHERE status = "
                             "'dead-letter'"))
    with audit_log.engine.connect() as conn:
        assert verify_chain(conn).ok  # the chain itself is intact
        found = {(m.table, m.column, m.expected) for m in check_projections(conn)}
    assert found == {("studies", "label", "GIST"), ("studies", "probability", 0.92),
                     ("study_exports", "status", "dead-letter")}
