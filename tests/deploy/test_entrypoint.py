"""deploy/docker-entrypoint.sh: EUSDX_<KEY>_FILE secrets become EUSDX_<KEY>."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy._refs import DEPLOY

SCRIPT = DEPLOY / "docker-entrypoint.sh"


def _run(env: dict[str, str], *cmd: str) -> subprocess.CompletedProcess[str]:
    sh = shutil.which("sh")
    assert sh is not None
    base = {k: v for k, v in os.environ.items() if not k.startswith("EUSDX_")}
    return subprocess.run([sh, str(SCRIPT), *cmd], env={**base, **env}, capture_output=True, text=True, timeout=30)


def test_file_secret_becomes_the_variable_and_the_file_variable_goes(tmp_path: Path) -> None:
    secret = tmp_path / "db"
    secret.write_text("postgresql+psycopg://eusdx:p@ss w0rd@db/eusdx\n")
    out = _run(
        {"EUSDX_DATABASE_URL_FILE": str(secret), "EUSDX_AE_TITLE": "KEEP"},
        "sh", "-c", 'printf "%s|%s|%s" "$EUSDX_DATABASE_URL" "${EUSDX_DATABASE_URL_FILE-unset}" "$EUSDX_AE_TITLE"',
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "postgresql+psycopg://eusdx:p@ss w0rd@db/eusdx|unset|KEEP"


def test_unreadable_secret_file_stops_the_container(tmp_path: Path) -> None:
    out = _run({"EUSDX_API_TOKENS_FILE": str(tmp_path / "missing")}, "true")
    assert out.returncode == 78
    assert "EUSDX_API_TOKENS_FILE points to unreadable file" in out.stderr


def test_value_and_file_together_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_text("x")
    out = _run({"EUSDX_AUDIT_HMAC_SECRET": "a", "EUSDX_AUDIT_HMAC_SECRET_FILE": str(secret)}, "true")
    assert out.returncode == 78
    assert "both EUSDX_AUDIT_HMAC_SECRET and EUSDX_AUDIT_HMAC_SECRET_FILE are set" in out.stderr


def test_exec_passes_the_exit_code_through() -> None:
    out = _run({}, "sh", "-c", "exit 7")
    assert out.returncode == 7


def test_script_is_executable() -> None:
    assert os.access(SCRIPT, os.X_OK), "COPY keeps the mode: the script must be executable in git"
