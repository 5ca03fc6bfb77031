"""``eusdx phantom``: write a synthetic EUS cohort (DICOM studies + manifest.csv)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from eusdx.errors import UsageError

__all__ = ["register"]


def phantom_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (studies/ and manifest.csv)")],
    patients: Annotated[int, typer.Option("--patients", help="number of patients, one lesion each")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="random seed; the same seed gives identical files")] = 1,
    difficulty: Annotated[
        float | None, typer.Option("--difficulty", show_default="0.5", help="class overlap in [0, 1]")
    ] = None,
    centre: Annotated[str, typer.Option("--centre", help="centre name written to the manifest")] = "internal",
    gist_fraction: Annotated[float, typer.Option("--gist-fraction", help="share of GIST patients in [0, 1]")] = 0.5,
    size_matched: Annotated[
        bool, typer.Option("--size-matched", help="both classes share one lesion-size distribution (no size cue)")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Write a synthetic EUS phantom cohort (never a clinical data set)."""
    from phantom import DEFAULT_DIFFICULTY, generate_cohort

    if patients < 1:
        raise UsageError(f"--patients must be >= 1, got {patients}")
    if seed < 0:
        raise UsageError(f"--seed must be >= 0, got {seed}")
    diff = DEFAULT_DIFFICULTY if difficulty is None else difficulty
    if not 0.0 <= diff <= 1.0:
        raise UsageError(f"--difficulty must be in [0, 1], got {diff}")
    if not 0.0 <= gist_fraction <= 1.0:
        raise UsageError(f"--gist-fraction must be in [0, 1], got {gist_fraction}")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    try:
        manifest = generate_cohort(
            out, patients, seed, difficulty=diff, centre=centre, gist_fraction=gist_fraction,
            size_matched=size_matched, progress=not quiet,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    with manifest.open(encoding="utf-8") as fh:
        rows = sum(1 for _ in fh) - 1
    matched = ", size-matched" if size_matched else ""
    typer.echo(f"{manifest} ({patients} patients, {rows} images{matched}; synthetic phantom, not clinical data)")


def register(app: typer.Typer) -> None:
    """Add the ``phantom`` command to the CLI."""
    app.command("phantom")(phantom_cmd)
