"""No shipped secrets: the built-in audit HMAC key is refused outside dev_mode, ``eusdx db upgrade``
creates a per-installation key (0600), and rotation keeps old pseudonyms verifiable."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import main
from eusdx.config import load_settings
from eusdx.errors import ConfigError
from tests.conftest import free_port
from eusdx.keys import BUILTIN_AUDIT_SECRET, load_keyring, require_own_key, rotate_key_file

EUSDX = str(Path(sys.executable).with_name("eusdx"))


def _settings(var: Path, **kw: object):  # type: ignore[no-untyped-def]
    return load_settings(None, spool_dir=var / "spool", database_url=f"sqlite:///{var / 'audit.db'}",
                         **kw)


def _use_env(monkeypatch: pytest.MonkeyPatch, var: Path) -> None:
    """Point the in-process CLI at ``var`` with no audit secret (so the key file is used)."""
    for k, v in _clean_env(var).items():
        if k.startswith("EUSDX_"):
            monkeypatch.setenv(k, v)
    monkeypatch.delenv("EUSDX_AUDIT_HMAC_SECRET", raising=False)


def _clean_env(var: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EUSDX_")}
    env.update({"EUSDX_SPOOL_DIR": str(var / "spool"), "EUSDX_DATABASE_URL": f"sqlite:///{var / 'audit.db'}",
                "EUSDX_QUEUE_DIR": str(var / "queue"), "EUSDX_DICOM_HOST": "127.0.0.1",
                "EUSDX_DICOM_PORT": str(free_port()), "EUSDX_HTTP_PORT": str(free_port()), "EUSDX_LOG_LEVEL": "WARNING",
                "EUSDX_BUNDLE": str(var / "no-bundle")})
    env.update(extra)
    return env


@pytest.mark.parametrize("command", [["serve", "--no-worker", "--no-http"], ["worker", "--queues", "export"]])
def test_default_key_refused_outside_demo_mode(tmp_path: Path, command: list[str]) -> None:
    var = tmp_path / "var"
    proc = subprocess.run([EUSDX, *command], env=_clean_env(var), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 78, proc.stderr
    assert "refuses the built-in audit HMAC key" in proc.stderr
    assert not (var / "audit.db").exists()  # refused before anything was opened


@pytest.mark.parametrize("secret", ["CHANGE-ME", "<long random string, e.g. from: openssl rand -hex 32>",
                                    "short"])
def test_placeholder_and_short_secrets_refused(tmp_path: Path, secret: str) -> None:
    settings = _settings(tmp_path / "var", audit_hmac_secret=secret)
    with pytest.raises(ConfigError, match="refuses audit_hmac_secret"):
        require_own_key(settings, "eusdx serve")


def test_dev_mode_allows_the_builtin_key(tmp_path: Path) -> None:
    ring = require_own_key(_settings(tmp_path / "var", dev_mode=True), "eusdx serve")
    assert ring.builtin and ring.secret == BUILTIN_AUDIT_SECRET.encode()


def test_db_upgrade_creates_an_owner_only_key_that_serve_accepts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    var = tmp_path / "var"
    _use_env(monkeypatch, var)
    assert main(["db", "upgrade"]) == 0
    out = capsys.readouterr().out
    key_file = var / "keys" / "audit-hmac.json"
    assert "audit HMAC key" in out and key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    settings = _settings(var)
    ring = require_own_key(settings, "eusdx serve")
    assert ring.source == "file" and len(ring.secret) == 32 and not ring.builtin
    # a second upgrade keeps the key (pseudonyms depend on it)
    assert main(["db", "upgrade"]) == 0
    assert load_keyring(settings).secret == ring.secret
    # two installations never share a key
    other = tmp_path / "other"
    _use_env(monkeypatch, other)
    assert main(["db", "upgrade"]) == 0
    assert load_keyring(_settings(other)).secret != ring.secret


def test_rotation_keeps_old_pseudonyms_verifiable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    var = tmp_path / "var"
    _use_env(monkeypatch, var)
    assert main(["db", "upgrade"]) == 0
    settings = _settings(var)
    old = load_keyring(settings)
    before = old.pseudonym("PAT-0001")
    new_id = rotate_key_file(settings.hmac_key_path)
    ring = load_keyring(settings)
    assert ring.current == new_id != old.current
    assert ring.pseudonym("PAT-0001") != before
    assert ring.matching_key("PAT-0001", before) == old.current
    assert ring.matching_key("PAT-0002", before) is None
    capsys.readouterr()
    assert main(["audit", "pseudonym", "PAT-0001", "--check", before]) == 0
    assert old.current in capsys.readouterr().out
    assert main(["audit", "pseudonym", "PAT-0002", "--check", before]) == 65


def test_tampered_key_file_is_refused(tmp_path: Path) -> None:
    var = tmp_path / "var"
    settings = _settings(var)
    from eusdx.keys import create_key_file

    create_key_file(settings.hmac_key_path)
    text = settings.hmac_key_path.read_text()
    import json

    doc = json.loads(text)
    kid = doc["current"]
    doc["keys"][kid]["secret"] = "00" * 32
    settings.hmac_key_path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="does not match its secret"):
        load_keyring(settings)
