"""Alembic migrations agree with the models and round-trip, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from audit import AuditLog
from audit._engine import create_audit_engine
from audit.migrate import current_revision, downgrade, head_revision, upgrade
from audit.schema import EVENT_TABLE_NAMES, Base
from tests.audit.conftest import SECRET


def _diff(engine: sa.Engine) -> list[object]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_models_and_migrations_agree(db_url: str) -> None:
    engine = create_audit_engine(db_url)
    try:
        upgrade(engine)
        assert _diff(engine) == []
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_upgrade_downgrade_round_trip(db_url: str) -> None:
    engine = create_audit_engine(db_url)
    try:
        assert current_revision(engine) is None
        upgrade(engine)
        assert set(EVENT_TABLE_NAMES) <= _tables(engine)
        downgrade(engine, "base")
        assert current_revision(engine) is None
        assert _tables(engine) <= {"alembic_version"}
        upgrade(engine)
        assert _diff(engine) == []
        with engine.connect() as conn:
            head = conn.execute(sa.text("SELECT seq, row_hash FROM chain_head")).one()
        assert head.seq == 0 and head.row_hash == "0" * 64
    finally:
        engine.dispose()


def test_ensure_schema_creates_sqlite_parent_dir(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "deep" / "var" / "audit.db"
    log = AuditLog(f"sqlite:///{path}", SECRET)
    try:
        log.ensure_schema()
        log.ensure_schema()  # idempotent
        log.ping()
    finally:
        log.close()
    assert path.is_file()
