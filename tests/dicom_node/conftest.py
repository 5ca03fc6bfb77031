"""Fixtures for the DICOM node tests: a real node on a free port with a real SQLite audit log."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from audit import AuditLog
from dicom_node.enqueue import BrokerUnavailable
from eusdx.config import Settings, load_settings
from demo.peers import STORESCU_TS_OPTION as _PEER_TS_OPTION
from tests.conftest import free_port, require_tool

# storescu option that proposes a file's own transfer syntax (plus the uncompressed ones): the
# demo's table, as argument lists
STORESCU_TS_OPTION = {ts: [opt] for ts, opt in _PEER_TS_OPTION.items()}


class RecordingEnqueuer:
    """A real in-memory Enqueuer (the protocol is one method); ``down`` simulates a broker outage
    by raising the same error the Celery enqueuer raises."""

    def __init__(self) -> None:
        self.studies: list[str] = []
        self.down = False

    def enqueue(self, study_uid: str) -> None:
        if self.down:
            raise BrokerUnavailable("broker down (test)")
        self.studies.append(study_uid)


def rows(audit: AuditLog, sql: str, **params: Any) -> list[Any]:
    with audit.engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params))


def storescu(port: int, *files: Path | str, aet: str = "STORESCU", aec: str = "EUSDX",
             extra: list[str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    exe = require_tool("/usr/bin/storescu")
    cmd = [exe, "-aet", aet, "-aec", aec, *(extra or []), "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def storescu_study(port: int, folder: Path, **kwargs: Any) -> list[subprocess.CompletedProcess[str]]:
    """Send every file of a folder with DCMTK storescu, one association per transfer syntax
    (storescu proposes one compressed syntax per SOP class, so mixed studies need this)."""
    import pydicom

    groups: dict[str, list[Path]] = {}
    for path in sorted(Path(folder).iterdir()):
        ts = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        groups.setdefault(ts, []).append(path)
    return [storescu(port, *files, extra=["-R", *STORESCU_TS_OPTION[ts]], **kwargs)
            for ts, files in sorted(groups.items())]


@pytest.fixture
def make_settings(tmp_var: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = dict(
            spool_dir=tmp_var / "spool", database_url=f"sqlite:///{tmp_var}/audit.db",
            dicom_host="127.0.0.1", dicom_port=free_port(), study_quiet_seconds=0.5,
            queue_dir=tmp_var / "queue", log_format="text",
        )
        base.update(overrides)
        return load_settings(None, **base)

    return make


@pytest.fixture
def audit_for() -> Iterator[Callable[[Settings], AuditLog]]:
    made: list[AuditLog] = []

    def make(settings: Settings) -> AuditLog:
        log = AuditLog.from_settings(settings)
        log.ensure_schema()
        made.append(log)
        return log

    yield make
    for log in made:
        log.close()


@pytest.fixture
def start_node(make_settings: Callable[..., Settings], audit_for: Callable[[Settings], AuditLog]
               ) -> Iterator[Callable[..., Any]]:
    """Start a Node; returns ``(node, audit, enqueuer)``; stopped at teardown."""
    from dicom_node.app import Node

    nodes: list[Node] = []

    def start(settings: Settings | None = None, **overrides: Any) -> tuple[Node, AuditLog, RecordingEnqueuer]:
        settings = settings or make_settings(**overrides)
        audit = audit_for(settings)
        enq = RecordingEnqueuer()
        node = Node(settings, audit, enq)
        node.start()
        nodes.append(node)
        return node, audit, enq

    yield start
    for node in nodes:
        node.stop(timeout=5)
