"""``eusdx demo``: the whole job end to end on embedded defaults (see demo/run.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from eusdx.errors import UsageError

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        workdir: Path = typer.Option(Path("./var/demo"), "--workdir", help="where cohorts, bundle, runs go"),
        patients: int = typer.Option(40, "--patients", help="phantom patients to train on"),
        send: int = typer.Option(6, "--send", help="phantom studies forwarded to the node"),
        seed: int = typer.Option(1, "--seed", help="phantom seed of the training cohort"),
        quiet: float = typer.Option(3.0, "--quiet-seconds", help="study quiet period for the demo"),
        timeout: float = typer.Option(600.0, "--timeout", help="seconds to wait for the SRs"),
    ) -> None:
        """Generate a phantom, train, start node + worker + a PACS, forward studies, show the SRs."""
        from demo.run import DemoOptions, run_demo

        if patients < 10:
            raise UsageError("--patients must be at least 10 (the split needs both classes on both sides)")
        if send < 1:
            raise UsageError("--send must be at least 1")
        run_demo(DemoOptions(workdir=workdir, train_patients=patients, send_patients=send, seed=seed,
                             quiet_seconds=quiet, timeout=timeout))
