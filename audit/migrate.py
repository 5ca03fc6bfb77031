"""Alembic, driven from code so it works from an installed package (no alembic.ini needed).

The scripts live in ``audit/migrations/`` (part of this package: the schema and its migrations are one
concern, so no import runs from ``audit`` to another package and back).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from audit._engine import WRITE_OPTION

__all__ = ["alembic_config", "upgrade", "downgrade", "current_revision", "head_revision"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(engine: Engine | None = None) -> Config:
    """An Alembic ``Config`` whose env.py uses ``engine`` (an attribute, never a URL string)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def _run(engine: Engine, action: str, revision: str) -> None:
    # A write connection: on SQLite BEGIN IMMEDIATE, so concurrent starts upgrade one at a time;
    # env.py takes an advisory lock on PostgreSQL for the same reason.
    writer = engine.execution_options(**{WRITE_OPTION: True})
    with writer.begin() as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, revision)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the audit schema up to ``revision``."""
    _run(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Migrate the audit schema down to ``revision`` (``base`` drops everything)."""
    _run(engine, "downgrade", revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or ``None`` for an empty database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    """The newest revision shipped with this package."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
