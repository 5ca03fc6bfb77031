"""Deployment files and docs may only name commands, options and keys that really exist.

Commands come from the Typer app (``typer.main.get_command(cli.main.app)``), keys from
``eusdx.config.Settings``. A rename anywhere breaks one of these tests, not a hospital install.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import pytest
import typer

from tests.deploy._refs import (
    DEPLOY,
    DOCS,
    FILE_SUFFIX,
    K8S,
    CommandRef,
    UnknownCommand,
    check_argv,
    deploy_commands,
    doc_commands,
    env_var_uses,
    load_yaml_docs,
)

# Files that the container entrypoint serves, where EUSDX_<KEY>_FILE is meaningful.
_FILE_CONVENTION = ("deploy/Dockerfile", "deploy/compose.yaml", "deploy/compose.cpu.yaml", "deploy/docker-entrypoint.sh", "deploy/secrets/")


def _fields() -> set[str]:
    from eusdx.config import Settings

    return {name for name, f in Settings.model_fields.items() if not f.exclude}


def _root() -> Any:
    from cli.main import app

    return typer.main.get_command(app)


def _check_refs(refs: list[CommandRef]) -> None:
    root = _root()
    problems: list[str] = []
    for ref in refs:
        try:
            problems += [f"{ref}: {p}" for p in check_argv(root, ref.argv)]
        except UnknownCommand as exc:
            problems.append(f"{ref}: {exc}")
    assert not problems, "\n".join(problems)


def test_every_eusdx_variable_in_deploy_and_docs_is_a_settings_field() -> None:
    fields = _fields()
    bad: list[str] = []
    for name, where in sorted(env_var_uses(DEPLOY, DOCS).items()):
        key = name.removeprefix("EUSDX_").lower()
        if key in fields:
            continue
        if key.endswith(FILE_SUFFIX.lower()) and key[: -len(FILE_SUFFIX)] in fields:
            outside = [w for w in where if not w.startswith(_FILE_CONVENTION) and not w.startswith("docs/")]
            if not outside:
                continue
            bad.append(f"{name}: the _FILE convention only works in containers, used at {outside}")
            continue
        bad.append(f"{name} (used at {', '.join(where[:3])}) is not a Settings field")
    assert not bad, "\n".join(bad)


def test_configmap_keys_are_settings_fields_and_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from eusdx.config import load_settings

    fields = _fields()
    (cm,) = [d for d in load_yaml_docs(K8S / "configmap.yaml") if d["kind"] == "ConfigMap"]
    for key in [k for k in os.environ if k.startswith("EUSDX_")]:
        monkeypatch.delenv(key)
    for key, value in cm["data"].items():
        assert key.startswith("EUSDX_") and key[6:].lower() in fields, key
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.http_host == "0.0.0.0"


def test_deploy_files_reference_real_commands_and_options() -> None:
    refs = deploy_commands()
    # compose (7 eusdx services incl. the CPU override), k8s (4), systemd (4), Dockerfile
    assert len(refs) >= 15, [str(r) for r in refs]
    _check_refs(refs)


def test_docs_reference_real_commands_and_options() -> None:
    refs = doc_commands()
    assert len(refs) >= 10, "the guides show the operator's commands in code blocks"
    _check_refs(refs)


def test_planned_commands_all_exist() -> None:
    """The commands the deployment is built around (issue 8) are registered."""
    root = _root()
    assert isinstance(getattr(root, "commands", None), dict)
    for path in (
        ("serve",),
        ("worker",),
        ("db", "upgrade"),
        ("audit", "verify"),
        ("outbox", "list"),
        ("outbox", "retry"),
        ("phantom",),
        ("train",),
        ("evaluate",),
        ("demo",),
        ("worker", "reload"),
        ("audit", "outcome"),
        ("audit", "performance"),
    ):
        assert check_argv(root, path) == [], path  # raises UnknownCommand when missing


# --- the checker must fail on drift --------------------------------------------------------


def _fake_app() -> Any:
    app = typer.Typer()
    db = typer.Typer()

    @app.callback()
    def _root(config: Annotated[str, typer.Option("--config", "-c")] = "") -> None:
        """root"""

    @app.command()
    def worker(
        queues: Annotated[str, typer.Option("--queues")] = "analysis",
        concurrency: Annotated[int, typer.Option("--concurrency")] = 1,
        dry: Annotated[bool, typer.Option("--dry")] = False,
    ) -> None:
        """worker"""

    @db.command()
    def upgrade() -> None:
        """upgrade"""

    app.add_typer(db, name="db")
    return typer.main.get_command(app)


def test_checker_accepts_valid_lines() -> None:
    root = _fake_app()
    assert check_argv(root, ("--config", "/etc/eusdx/eusdx.toml", "worker", "--queues", "export")) == []
    assert check_argv(root, ("worker", "--dry", "--concurrency=2")) == []
    assert check_argv(root, ("db", "upgrade")) == []
    # a documentation placeholder ends the check
    assert check_argv(root, ("worker", "--concurrency", "2", "<more options>", "--bogus")) == []


def test_checker_reports_unknown_commands_and_options() -> None:
    root = _fake_app()
    with pytest.raises(UnknownCommand, match="no command 'serve' under 'eusdx'"):
        check_argv(root, ("serve",))
    with pytest.raises(UnknownCommand, match="no command 'migrate' under 'eusdx db'"):
        check_argv(root, ("db", "migrate"))
    assert check_argv(root, ("worker", "-Q", "analysis")) == ["unknown option -Q for 'eusdx worker'"]
    assert check_argv(root, ("db",)) == ["'eusdx db' is a group: a sub-command is missing"]
