"""One engine per process, configured for an append-only log that several writers share.

SQLite: WAL (readers never block the writer), ``synchronous=FULL`` (a committed audit row survives a
power cut, at the price of one more fsync per commit), a 30 s busy timeout, and ``BEGIN IMMEDIATE``
for write transactions so two processes never both read the same chain head. pysqlite's own
transaction handling is switched off (``isolation_level = None``) so that our BEGIN is the one used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url

__all__ = ["create_audit_engine", "is_sqlite", "sqlite_file", "WRITE_OPTION"]

#: Execution option that marks a connection as an audit writer (SQLite: BEGIN IMMEDIATE).
WRITE_OPTION = "eusdx_audit_write"


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


SQLITE_SYNCHRONOUS = ("FULL", "EXTRA", "NORMAL")


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite ``url`` names; ``None`` for other databases and in-memory SQLite.

    Connecting creates a missing SQLite file, so read-only commands ask this first and refuse
    instead of leaving an empty database behind.
    """
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" \
            or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def create_audit_engine(url: str, *, sqlite_synchronous: str = "FULL") -> Engine:
    """Create the engine for ``url``; for a SQLite file, create its parent directory.

    Parameters
    ----------
    url
        SQLAlchemy URL, e.g. ``sqlite:///./var/audit.db`` or ``postgresql+psycopg://...``.
    sqlite_synchronous
        SQLite ``PRAGMA synchronous``. ``FULL`` (default) fsyncs the WAL at every commit, so an
        acknowledged audit row survives power loss; ``NORMAL`` is faster but may lose the last
        commits on power loss (never corrupts). Benchmarks only; production keeps ``FULL``.
    """
    if sqlite_synchronous not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"sqlite_synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}")
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=10)

    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": 30.0})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={sqlite_synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine
