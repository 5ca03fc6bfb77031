"""The CLI turns every error into one line on stderr and a meaningful exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cli.main import app, main

EXPECTED_COMMANDS = {"phantom"}


def test_help_lists_registered_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in EXPECTED_COMMANDS:
        assert name in out


def test_unknown_command_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("eusdx: error:")


def test_bad_config_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("dicom_port = -1\n")
    # any command that loads settings reports the bad key in one line
    code = main(["--config", str(cfg), "phantom", "--patients", "1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 78
    assert len(err) == 1 and "dicom_port" in err[0]


def test_console_script_runs() -> None:
    exe = Path(sys.executable).with_name("eusdx")
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert "Usage" in proc.stdout
    assert app.info.name == "eusdx"


def _command_table() -> Any:
    from tests.conftest import load_script

    return load_script("command_table.py")


def test_readme_lists_every_command_with_its_options() -> None:
    """The README's command table is the one generated from the Typer app: run
    `scripts/command_table.py README.md` after changing a command (it once listed only phantom)."""
    module = _command_table()
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = module.table()
    for path, _ in module.commands():
        assert f"`{path}" in table, path
    assert f"{module.START}\n{table}\n{module.END}" in readme


def test_every_option_shows_its_default_and_each_short_flag_means_one_thing() -> None:
    """`-c` once meant --config at the top and --concurrency under `worker`; some options showed
    no default in --help."""
    module = _command_table()
    meaning: dict[str, set[str]] = {}
    silent = []
    for path, command in module.commands():
        for p in command.params:
            if p.param_type_name != "option" or p.name == "help":
                continue
            long = max(p.opts, key=len)
            for short in (o for o in p.opts if not o.startswith("--")):
                meaning.setdefault(short, set()).add(long)
            if not p.required and module.default_text(p) is None:
                silent.append(f"{path} {long}")
    assert not silent, f"options whose --help shows no default: {silent}"
    twice = {s: sorted(longs) for s, longs in meaning.items() if len(longs) > 1}
    assert not twice, f"short flags with two meanings: {twice}"


def test_every_exit_code_is_in_the_readme() -> None:
    """Each ``exit_code`` an error type declares, and the codes the entry point itself returns,
    have a row in the README's exit-code table."""
    import re

    root = Path(__file__).resolve().parents[2]
    codes = {0, 1, 2, 130}  # done, EusdxError's default, usage, interrupted (cli.main)
    for package in ("eusdx", "cli", "demo", "audit", "dicom_node", "worker", "models", "phantom", "dashboard"):
        for path in (root / package).rglob("*.py"):
            codes |= {int(n) for n in re.findall(r"^\s+exit_code\s*=\s*(\d+)", path.read_text(), re.M)}
    readme = (root / "README.md").read_text()
    table = readme.split("<!-- exit-codes:", 1)[1].split("\n\n", 1)[0]
    listed = {int(n) for n in re.findall(r"^\| (\d+) \|", table, re.M)}
    assert codes <= listed, f"exit codes missing from the README: {sorted(codes - listed)}"
    assert "69" in table and "db upgrade" in table
