"""``eusdx db upgrade|downgrade|current``: migrate the audit database (Alembic)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from eusdx.config import Settings

__all__ = ["register"]

db_app = typer.Typer(name="db", help="Audit database schema (Alembic migrations).",
                     no_args_is_help=True)


def _engine(ctx: typer.Context) -> Engine:
    from audit._engine import create_audit_engine
    from cli.context import settings_from

    return create_audit_engine(settings_from(ctx).database_url)


@db_app.command("upgrade")
def upgrade_cmd(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
) -> None:
    """Migrate the audit schema up (default: to the newest revision)."""
    from sqlalchemy.exc import SQLAlchemyError

    from audit import AuditUnavailable
    from audit.migrate import current_revision, upgrade

    from cli.context import settings_from

    settings = settings_from(ctx)
    engine = _engine(ctx)
    try:
        upgrade(engine, revision)
        typer.echo(f"audit schema at {current_revision(engine)}")
        _first_run_keys(settings)
    except SQLAlchemyError as exc:
        raise AuditUnavailable(f"upgrade failed: {type(exc).__name__}: "
                               f"{str(getattr(exc, 'orig', exc)).splitlines()[0]}") from exc
    finally:
        engine.dispose()


def _first_run_keys(settings: Settings) -> None:
    """Create the per-installation pseudonymisation key on first run (owner-only file) unless a
    secret is configured; never overwrite. (The anchor signing key is created by ``eusdx serve``,
    the one process that writes anchors, where its anchor folder lives.)"""
    from eusdx.keys import BUILTIN_AUDIT_SECRET, create_key_file

    if settings.audit_hmac_secret.get_secret_value() == BUILTIN_AUDIT_SECRET:
        kid, created = create_key_file(settings.hmac_key_path)
        if created:
            typer.echo(f"audit HMAC key {kid} created in {settings.hmac_key_path} (owner-only); "
                       "back it up with the database")


@db_app.command("downgrade")
def downgrade_cmd(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="target revision, e.g. -1 or base")],
) -> None:
    """Migrate the audit schema down (``base`` drops every audit table)."""
    from audit.migrate import current_revision, downgrade

    engine = _engine(ctx)
    try:
        downgrade(engine, revision)
        typer.echo(f"audit schema at {current_revision(engine) or 'base (empty)'}")
    finally:
        engine.dispose()


@db_app.command("current")
def current_cmd(ctx: typer.Context) -> None:
    """Print the database's revision and the newest one this version ships."""
    from audit._engine import sqlite_file
    from audit.migrate import current_revision, head_revision
    from cli.context import settings_from

    path = sqlite_file(settings_from(ctx).database_url)
    current: str | None = None
    if path is None or path.is_file():  # a read: never create the SQLite file
        engine = _engine(ctx)
        try:
            current = current_revision(engine)
        finally:
            engine.dispose()
    head = head_revision()
    state = "up to date" if current == head else "needs `eusdx db upgrade`"
    if path is not None and not path.is_file():
        state += f"; no database file at {path} yet"
    typer.echo(f"current: {current or 'base (empty)'}  head: {head}  ({state})")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
