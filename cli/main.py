"""The ``eusdx`` command line.

Each sub-command lives in its own module under ``cli`` and is registered here. Heavy imports
(torch, pynetdicom, SQLAlchemy) happen inside the commands so that ``eusdx --help`` stays fast.
Errors reach the user as one line on stderr and an exit code: 2 for usage errors, the error type's
``exit_code`` otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from typer import Abort as _TyperAbort
from typer import Exit as _TyperExit
from typer._click import exceptions as _typer_click  # typer >= 0.2x vendors click; its errors are not click's

from eusdx.errors import EusdxError

_EXIT = (click.exceptions.Exit, _TyperExit)
_ABORT = (click.exceptions.Abort, _TyperAbort)
_USAGE = (click.UsageError, _typer_click.UsageError)
_CLICK = (click.ClickException, _typer_click.ClickException)

app = typer.Typer(
    name="eusdx",
    help="EUS decision support daemon: GIST vs leiomyoma, answered as a DICOM SR.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Optional[Path], typer.Option("--config", "-c", show_default="none: embedded defaults, then EUSDX_* variables", help="TOML configuration file")
    ] = None,
) -> None:
    """Read and validate the configuration once, before any command runs."""
    from eusdx.config import load_settings

    if ctx.resilient_parsing:  # shell completion / --help parsing: do not touch files
        return
    ctx.obj = {"config": config, "settings": load_settings(config)}


def _register() -> None:
    from cli import commands

    commands.register(app)


_register()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn errors into one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    try:
        result = app(args=args, prog_name="eusdx", standalone_mode=False)
    except _EXIT as exc:
        return int(exc.exit_code)
    except _ABORT:
        print("eusdx: aborted", file=sys.stderr)
        return 130
    except _USAGE as exc:
        print(f"eusdx: error: {exc.format_message()}", file=sys.stderr)
        return 2
    except _CLICK as exc:
        print(f"eusdx: error: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except EusdxError as exc:
        print(f"eusdx: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("eusdx: interrupted", file=sys.stderr)
        return 130
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
