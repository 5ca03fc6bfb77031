"""Which sub-command modules make up the CLI.

Each module named here defines ``register(app: typer.Typer) -> None``. Adding a command means adding
one module and one name below; no other file changes.
"""

from __future__ import annotations

import importlib

import typer

__all__ = ["register", "COMMAND_MODULES"]

COMMAND_MODULES: tuple[str, ...] = (
    "cli.phantom_cmd",
    "cli.train_cmd",
    "cli.bundle_cmd",
    "cli.db_cmd",
    "cli.audit_cmd",
    "cli.evaluate_cmd",
    "cli.worker_cmd",
    "cli.serve_cmd",
    "cli.outbox_cmd",
    "cli.spool_cmd",
    "cli.demo_cmd",
)


def register(app: typer.Typer) -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
