"""Dashboard fixtures: the known audit history behind the real HTTP app, and a logged-in client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from audit import AuditLog
from audit.auth import hash_token
from audit.http import create_app
from dashboard import Operations, mount_dashboard
from eusdx.config import load_settings
from tests.audit.data import populate

SECRET = "dashboard-test-secret"
TOKENS = {"worklist": "wl-token-123", "qa": "qa-token-456", "admin": "admin-token-789"}
NAMES = {"worklist": "ris", "qa": "quality", "admin": "root"}


@dataclass
class Hooks:
    """Operations hooks that record what the dashboard asked for."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    sr_files: dict[str, Path] = field(default_factory=dict)

    def operations(self, registry: Any = None) -> Operations:
        def rerun(uid: str) -> str:
            self.calls.append(("rerun", uid))
            return "queued for analysis again"

        def resend(uid: str) -> str:
            self.calls.append(("resend", uid))
            return "re-armed 1 dead-lettered destination(s) of the study"

        return Operations(registry=registry, sr_file=self.sr_files.get, rerun=rerun,
                          resend=resend)


@pytest.fixture
def dash_log(tmp_path: Path) -> Iterator[AuditLog]:
    log = AuditLog(f"sqlite:///{tmp_path / 'audit.db'}", SECRET)
    log.ensure_schema()
    populate(log)
    try:
        yield log
    finally:
        log.close()


@pytest.fixture
def hooks() -> Hooks:
    return Hooks()


@pytest.fixture
def app_client(dash_log: AuditLog, hooks: Hooks, tmp_path: Path) -> Iterator[TestClient]:
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    Gauge("eusdx_queue_depth", "q", ["state"], registry=registry).labels(state="pending").set(3)
    Gauge("eusdx_outbox_depth", "o", ["state"], registry=registry).labels(
        state="dead-letter").set(1)
    settings = load_settings(
        database_url=dash_log.database_url, spool_dir=tmp_path / "spool",
        bundle=tmp_path / "no-bundle",
        api_tokens=[f"{NAMES[r]}:{r}:{hash_token(t)}" for r, t in TOKENS.items()])
    (tmp_path / "spool").mkdir(exist_ok=True)
    app = create_app(dash_log, settings)
    mount_dashboard(app, dash_log, settings, hooks.operations(registry))
    with TestClient(app, base_url="http://testserver") as client:
        yield client


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def login(client: TestClient, role: str) -> TestClient:
    """Log ``client`` in with the token of ``role`` through the login form."""
    form = client.get("/ui/login")
    r = client.post("/ui/login", data={"token": TOKENS[role], "csrf": csrf_of(form.text),
                                       "next": "/ui/studies"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return client
