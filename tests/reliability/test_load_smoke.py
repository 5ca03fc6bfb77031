"""Smoke run of ``bench/load.py`` (the real numbers come from a hand run, see the report)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "load.py"


@pytest.mark.slow
def test_load_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_load", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--duration", "6", "--concurrency", "10", "--limit", "12", "--burst", "30",
                      "--instances", "3", "--quiet", "1", "--sample", "1"])
    s, b = out["sustained"], out["burst"]
    assert s["refused"] == 0 and s["failed"] == 0 and b["refused"] == 0 and b["failed"] == 0
    assert set(s["statuses"]) == {0} and s["c_stores"] > 0
    assert b["sent_ok"] == 30 and b["missing_from_queue"] == 0
    assert "p95 ms" in capsys.readouterr().out
