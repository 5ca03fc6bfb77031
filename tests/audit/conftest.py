"""Audit fixtures: every database test runs on a SQLite file and on the CI PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from audit import AuditLog

SECRET = "test-secret"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty audit database URL: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'var' / 'audit.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def audit_log(db_url: str) -> Iterator[AuditLog]:
    """An ``AuditLog`` migrated to head."""
    log = AuditLog(db_url, SECRET)
    log.ensure_schema()
    try:
        yield log
    finally:
        log.close()


def drop_triggers(conn: sa.Connection, table: str) -> None:
    """What an attacker with DB access does first."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"DROP TRIGGER {table}_no_update")
        conn.exec_driver_sql(f"DROP TRIGGER {table}_no_delete")
    else:
        conn.exec_driver_sql(f"ALTER TABLE {table} DISABLE TRIGGER USER")
