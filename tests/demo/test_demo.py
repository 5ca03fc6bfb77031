"""The README's first command, end to end: phantom -> train -> evaluate -> serve + PACS -> SRs back."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from demo.run import DemoOptions, run_demo
from tests.conftest import require_tool


@pytest.mark.slow
def test_demo_runs_end_to_end_and_every_study_gets_an_sr(tmp_path: Path) -> None:
    require_tool("/usr/bin/storescp")
    require_tool("/usr/bin/storescu")
    out = io.StringIO()
    outcomes = run_demo(DemoOptions(workdir=tmp_path / "demo", train_patients=20, send_patients=2,
                                    quiet_seconds=1.0, timeout=300, out=out))
    text = out.getvalue()
    assert len(outcomes) == 2
    for o in outcomes:
        assert o.predicted in {"GIST", "leiomyoma"}
        assert o.probability is not None and 0.0 <= o.probability <= 1.0
        assert o.sr_path is not None and o.sr_path.is_file()
    assert "2/2 SRs back" in text
    assert "synthetic phantom data only" in text
    assert "without their SEG" in text  # the automatic ROI runs, as for a study from a PACS
    assert "initialisation: random initialisation" in text and "training budget: deep mode" in text
    assert (tmp_path / "demo" / "report" / "report.html").is_file()
    # a second run reuses the cohorts, the bundle and the report
    out2 = io.StringIO()
    run_demo(DemoOptions(workdir=tmp_path / "demo", train_patients=20, send_patients=2,
                         quiet_seconds=1.0, timeout=300, out=out2))
    assert out2.getvalue().count("cached:") == 4


def test_the_closing_hint_works_as_printed(tmp_path: Path) -> None:
    """The demo's last line names a command a newcomer can paste into a shell whose PATH does not
    hold the venv (it used to print a bare `eusdx`, which is "command not found" there)."""
    import os
    import subprocess

    from audit import AuditLog
    from demo.run import audit_hint

    db = tmp_path / "run dir" / "audit.db"
    db.parent.mkdir()
    log = AuditLog(f"sqlite:///{db}", "x" * 64)
    log.ensure_schema()
    log.close()
    hint = audit_hint(db)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EUSDX_")}
    env["PATH"] = "/usr/bin:/bin"  # no venv on it
    done = subprocess.run(["/bin/sh", "-c", hint], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "(no rows)" in done.stdout
