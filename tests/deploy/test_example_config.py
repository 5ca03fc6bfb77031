"""deploy/eusdx.example.toml and eusdx.example.env against eusdx.config.Settings."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import load_script
from tests.deploy._refs import DEPLOY

EXAMPLE = DEPLOY / "eusdx.example.toml"
ENV_EXAMPLE = DEPLOY / "eusdx.example.env"
_COMMENTED_KEY = re.compile(r"^#\s*(?P<key>[a-z_][a-z0-9_]*)\s*=", re.M)


def _generator() -> ModuleType:
    return load_script("gen-example-config.py")


def _user_fields() -> set[str]:
    from eusdx.config import Settings

    return {name for name, f in Settings.model_fields.items() if not f.exclude}


def _clear_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("EUSDX_")]:
        monkeypatch.delenv(key)


def test_example_is_up_to_date_with_settings() -> None:
    expected = _generator().render()
    assert EXAMPLE.read_text(encoding="utf-8") == expected, (
        "deploy/eusdx.example.toml is stale: run .venv/bin/python scripts/gen-example-config.py"
    )


def test_every_settings_field_appears_once_and_no_unknown_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    active = set(tomllib.loads(text))
    commented = {m["key"] for m in _COMMENTED_KEY.finditer(text)}
    fields = _user_fields()
    assert not active & commented, f"keys both set and commented: {active & commented}"
    assert active | commented == fields, (
        f"missing: {sorted(fields - active - commented)}; unknown: {sorted((active | commented) - fields)}"
    )
    # every key carries its description and its environment variable name
    for key in fields:
        assert re.search(rf"^# \(env EUSDX_{key.upper()}[;)]", text, re.M), key


def test_loading_the_example_gives_the_embedded_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from eusdx.config import Settings, load_settings

    _clear_env(monkeypatch)
    loaded = load_settings(EXAMPLE).model_dump(exclude={"config_file"})
    defaults = Settings.model_validate({}).model_dump(exclude={"config_file"})
    assert loaded == defaults


def test_uncommented_keys_are_valid_values(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The commented-out examples (TLS paths, the secret) also load when switched on."""
    from eusdx.config import load_settings

    _clear_env(monkeypatch)
    text = _COMMENTED_KEY.sub(lambda m: f"{m['key']} =", EXAMPLE.read_text(encoding="utf-8"))
    on = tmp_path / "on.toml"
    on.write_text(text)
    settings = load_settings(on)
    assert str(settings.tls_cert) == "/etc/eusdx/tls/server.crt"
    assert settings.audit_hmac_secret.get_secret_value().startswith("<long random")


def test_check_mode_detects_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gen = _generator()
    target = tmp_path / "eusdx.example.toml"
    assert gen.main(["--output", str(target)]) == 0
    assert gen.main(["--check", "--output", str(target)]) == 0
    target.write_text(target.read_text().replace("dicom_port = 11112", "dicom_port = 104"))
    assert gen.main(["--check", "--output", str(target)]) == 1
    assert "is stale" in capsys.readouterr().err


def _env_example() -> dict[str, str]:
    out: dict[str, str] = {}
    for lineno, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        assert "=" in stripped and not stripped.startswith("export "), f"line {lineno}: {line!r}"
        key, _, value = stripped.partition("=")
        assert key == key.strip() and not value.startswith(" "), f"line {lineno}: spaces around '='"
        assert key not in out, f"line {lineno}: {key} set twice"
        out[key] = value
    return out


def test_env_example_uses_only_real_keys_and_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    from eusdx.config import load_settings

    env = _env_example()
    fields = _user_fields()
    unknown = [k for k in env if not k.startswith("EUSDX_") or k[len("EUSDX_"):].lower() not in fields]
    assert not unknown, f"not Settings fields: {unknown}"
    _clear_env(monkeypatch)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(EXAMPLE)
    assert settings.broker_url.startswith("redis://")
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert [d.name for d in settings.result_destinations] == ["PACS1@10.1.2.3:104"]
    assert settings.allowed_aes == ["PACS1", "PACS2"]
