"""Which sub-command modules make up the CLI.

Each module named here defines ``register(app: typer.Typer) -> None``. Adding a command means adding
one module and one name below; no other file changes.
"""

from __future__ import annotations

import importlib

import typer

__all__ = ["register", "COMMAND_MODULES"]

COMMAND_MODULES: tuple[str, ...] = (
    "eusdx.cli.phantom_cmd",
    "eusdx.cli.train_cmd",
    "eusdx.cli.bundle_cmd",
    "eusdx.cli.db_cmd",
    "eusdx.cli.audit_cmd",
    "eusdx.cli.evaluate_cmd",
    "eusdx.cli.worker_cmd",
    "eusdx.cli.serve_cmd",
    "eusdx.cli.outbox_cmd",
    "eusdx.cli.spool_cmd",
    "eusdx.cli.demo_cmd",
)


def register(app: typer.Typer) -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
