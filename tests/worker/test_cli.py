"""``eusdx worker`` and ``eusdx worker reload``: argument checks and the embedded reload path."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from audit import AuditLog
from cli.main import main
from eusdx.config import Settings
from tests.worker.conftest import FakeBundle, RecordingExport
from worker.embedded import start_embedded
from worker.model_cache import ModelCache
from worker.runtime import WorkerRuntime


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["worker", "--concurrency", "0"], "--concurrency must be >= 1"),
        (["worker", "--pool", "threads"], "--pool must be prefork or solo"),
        (["worker", "--queues", "analysis,bogus"], "--queues must name analysis and/or export"),
    ],
)
def test_bad_worker_options_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_reload_in_embedded_mode_reaches_the_running_worker(
    settings: Settings, audit_log: AuditLog, exporter: RecordingExport, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    loads: list[int] = []

    def loader(_: Path) -> Any:
        loads.append(1)
        return FakeBundle()

    cache = ModelCache(settings.bundle, "cpu", loader=loader, warm=False)
    service = start_embedded(settings, runtime=WorkerRuntime(settings, cache=cache, audit=audit_log,
                                                             export=exporter))
    try:
        deadline = time.monotonic() + 30
        while not loads and time.monotonic() < deadline:
            time.sleep(0.05)
        assert loads == [1]  # loaded once at start, before any study
        monkeypatch.setenv("EUSDX_QUEUE_DIR", str(settings.queue_dir))
        time.sleep(0.05)  # the reload file's mtime must differ from the one the worker saw at start
        assert main(["worker", "reload"]) == 0
        assert "reload requested" in capsys.readouterr().out
        service.enqueuer.enqueue("1.2.3.4.5")  # the next task runs on the reloaded bundle
        deadline = time.monotonic() + 30
        while len(loads) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(loads) == 2
    finally:
        service.stop()
