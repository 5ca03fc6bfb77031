"""Configuration: defaults are the embedded ones, env beats TOML, bad values name their key."""

from __future__ import annotations

from pathlib import Path

import pytest

from eusdx.config import Settings, load_settings, parse_destination
from eusdx.errors import ConfigError

DESIGN_KEYS = {
    "EUSDX_AE_TITLE": ("ae_title", "EUSDX"),
    "EUSDX_DICOM_PORT": ("dicom_port", 11112),
    "EUSDX_ALLOWED_AES": ("allowed_aes", ["*"]),
    "EUSDX_SPOOL_DIR": ("spool_dir", Path("./var/spool")),
    "EUSDX_DATABASE_URL": ("database_url", "sqlite:///./var/audit.db"),
    "EUSDX_BROKER_URL": ("broker_url", ""),
    "EUSDX_EXPORT_DESTINATIONS": ("export_destinations", []),
    "EUSDX_STUDY_QUIET_SECONDS": ("study_quiet_seconds", 30.0),
    "EUSDX_BUNDLE": ("bundle", Path("./var/bundles/current")),
    "EUSDX_HTTP_PORT": ("http_port", 8080),
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("EUSDX_"):
            monkeypatch.delenv(key)


def test_design_keys_have_embedded_defaults() -> None:
    settings = load_settings()
    for env, (field, default) in DESIGN_KEYS.items():
        assert getattr(settings, field) == default, env
    assert settings.embedded_broker


def test_env_overrides_and_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EUSDX_ALLOWED_AES", "PACS1, PACS2")
    monkeypatch.setenv("EUSDX_EXPORT_DESTINATIONS", "PACS@10.0.0.5:104,ARCH@arch.local:11112")
    monkeypatch.setenv("EUSDX_DICOM_PORT", "4242")
    settings = load_settings()
    assert settings.allowed_aes == ["PACS1", "PACS2"]
    assert settings.dicom_port == 4242
    assert [d.name for d in settings.result_destinations] == ["PACS@10.0.0.5:104", "ARCH@arch.local:11112"]


def test_toml_file_is_read_and_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "eusdx.toml"
    cfg.write_text('ae_title = "FROMTOML"\nallowed_aes = ["A", "B"]\nstudy_quiet_seconds = 5\n')
    settings = load_settings(cfg)
    assert settings.ae_title == "FROMTOML"
    assert settings.allowed_aes == ["A", "B"]
    assert settings.study_quiet_seconds == 5
    monkeypatch.setenv("EUSDX_AE_TITLE", "FROMENV")
    assert load_settings(cfg).ae_title == "FROMENV"
    # the TOML path does not leak into later loads
    assert load_settings().ae_title == "FROMENV"
    monkeypatch.delenv("EUSDX_AE_TITLE")
    assert load_settings().ae_title == "EUSDX"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("dicom_port = 70000\n", "dicom_port"),
        ("no_such_key = 1\n", "no_such_key"),
        ('export_destinations = ["nonsense"]\n', "export_destinations"),
        ('resend_policy = "sometimes"\n', "resend_policy"),
        ("ae_title = [\n", "cannot read configuration"),
    ],
)
def test_bad_toml_names_the_key(tmp_path: Path, content: str, match: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    with pytest.raises(ConfigError, match=match):
        load_settings(cfg)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.toml")


def test_parse_destination() -> None:
    dest = parse_destination("PACS@127.0.0.1:104")
    assert (dest.ae_title, dest.host, dest.port) == ("PACS", "127.0.0.1", 104)
    with pytest.raises(ValueError, match="AE@host:port"):
        parse_destination("PACS@host")
    with pytest.raises(ValueError, match="out of range"):
        parse_destination("PACS@host:99999")


def test_every_key_is_documented_in_readme() -> None:
    from tests.conftest import load_script

    root = Path(__file__).resolve().parents[2]
    module = load_script("config_table.py")
    readme = (root / "README.md").read_text()
    for name in Settings.model_fields:
        if name != "config_file":
            assert f"EUSDX_{name.upper()}" in readme, name
    # the table is the generated one, defaults and all: run scripts/config_table.py README.md after a change
    assert module.table() in readme
