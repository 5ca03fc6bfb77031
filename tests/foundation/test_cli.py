"""The CLI turns every error into one line on stderr and a meaningful exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
