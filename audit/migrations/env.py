"""Alembic environment for the audit schema.

Normally run through ``audit.migrate`` (``eusdx db upgrade``, ``AuditLog.ensure_schema``), which
passes an open connection. Run as ``alembic -c audit/migrations/alembic.ini ...`` it reads the URL from
``EUSDX_DATABASE_URL`` (or the ini's ``sqlalchemy.url``).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from audit.schema import Base

# An arbitrary constant: the advisory lock that serialises concurrent upgrades on PostgreSQL.
_PG_MIGRATION_LOCK = 0x6575_7364_7801


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    import os

    from audit._engine import create_audit_engine

    url = os.environ.get("EUSDX_DATABASE_URL") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        url = "sqlite:///./var/audit.db"
    engine = create_audit_engine(url)
    try:
        with engine.connect() as conn:
            _configure_and_run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported for the audit schema")
run_migrations_online()
