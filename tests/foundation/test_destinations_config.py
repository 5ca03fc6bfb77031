"""The destinations model: TOML tables, the JSON list in EUSDX_DESTINATIONS, the old
AE@host:port list, and the errors an operator sees for a wrong entry."""

from __future__ import annotations

import json

import pytest

from eusdx.config import load_settings
from eusdx.errors import ConfigError


def test_toml_tables_and_the_old_list_together(tmp_path, monkeypatch):
    for key in ("EUSDX_DESTINATIONS", "EUSDX_EXPORT_DESTINATIONS"):
        monkeypatch.delenv(key, raising=False)
    path = tmp_path / "eusdx.toml"
    path.write_text('''
export_destinations = ["PACS@10.0.0.5:104"]
export_tls = true

[[destinations]]
name = "archive"
kind = "cstore-commit"
address = "ARCH@10.0.0.7:104"
sr_class = "comprehensive-3d"

[[destinations]]
name = "cloud"
kind = "stowrs"
address = "https://pacs.example.org/dicom-web"
username = "eusdx"
password = "pw"

[[destinations]]
name = "pager"
kind = "webhook"
address = "https://pager.example.org/hook"
events = ["high-gist", "dead-letter"]
''')
    s = load_settings(path)
    assert [(d.name, d.kind) for d in s.result_destinations] == [
        ("PACS@10.0.0.5:104", "cstore"), ("archive", "cstore-commit"), ("cloud", "stowrs"),
        ("pager", "webhook")]
    legacy = s.destination("PACS@10.0.0.5:104")
    assert legacy is not None and legacy.tls and str(legacy.dicom) == "PACS@10.0.0.5:104"
    assert s.destination("archive").sr_class == "comprehensive-3d"
    assert s.destination("cloud").password.get_secret_value() == "pw"
    assert s.destination("pager").events == ("high-gist", "dead-letter")
    assert s.destination("nowhere") is None


def test_environment_json_list(monkeypatch):
    monkeypatch.setenv("EUSDX_DESTINATIONS", json.dumps([
        {"name": "o", "kind": "stowrs", "address": "http://127.0.0.1:8042/dicom-web",
         "bearer_token": "s3cr3t-token"}]))
    s = load_settings(None)
    (dest,) = s.destinations
    assert dest.bearer_token.get_secret_value() == "s3cr3t-token"
    assert "s3cr3t" not in repr(dest)


@pytest.mark.parametrize("entry, words", [
    ({"name": "x", "kind": "fax", "address": "A@h:1"}, "kind 'fax' is not one of"),
    ({"name": "x", "kind": "hl7", "address": "A@h:1"}, "is not mllp://host:port"),
    ({"name": "x", "kind": "cstore", "address": "http://h/"}, "is not AE@host:port"),
    ({"name": "x", "kind": "stowrs", "address": "PACS@h:104"}, "is not an http(s):// URL"),
    ({"name": "x", "kind": "webhook", "address": "https://h/", "events": ["sometimes"]},
     "event 'sometimes' is not one of"),
    ({"name": "x", "kind": "stowrs", "address": "https://h/", "sr_class": "basic"},
     "sr_class 'basic' is not one of"),
    ({"name": "x", "kind": "stowrs", "address": "https://h/", "username": "u"},
     "username and password go together"),
    ({"name": "x", "kind": "stowrs", "address": "https://h/", "username": "u", "password": "p",
      "bearer_token": "t"}, "bearer_token or username/password"),
    ({"name": "x y", "kind": "cstore", "address": "A@h:1"}, "destinations"),
    ({"name": "x", "kind": "cstore", "address": "A@h:1", "colour": "red"}, "destinations"),
])
def test_a_wrong_entry_is_a_config_error_naming_it(entry, words):
    with pytest.raises(ConfigError, match="destinations") as err:
        load_settings(None, destinations=[entry])
    assert words in str(err.value)


def test_names_are_unique_across_both_lists():
    with pytest.raises(ConfigError, match="destination name 'PACS@h:104' is used twice"):
        load_settings(None, export_destinations=["PACS@h:104"],
                      destinations=[{"name": "PACS@h:104", "kind": "cstore",
                                     "address": "PACS@h:104"}])
