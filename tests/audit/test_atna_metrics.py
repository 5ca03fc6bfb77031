"""The ATNA spool's backlog on /metrics (``eusdx_atna_spool_messages``): what waits for the audit repository."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from audit.atna.sender import AtnaSpool
from dicom_node.metrics import NodeMetrics


def _value(metrics: NodeMetrics) -> float:
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith("eusdx_atna_spool_messages "):
            return float(line.split()[1])
    raise AssertionError("eusdx_atna_spool_messages not exported")


def test_backlog_gauge_follows_the_spool_at_scrape_time(tmp_path: Path) -> None:
    spool = AtnaSpool(tmp_path / "atna")
    metrics = NodeMetrics()
    metrics.track_atna_backlog(lambda: spool.backlog()[1])
    assert _value(metrics) == 0.0
    spool.put(1, 3, [b"<AuditMessage/>", b"<AuditMessage/>"])
    spool.put(4, 4, [])  # a batch without messages moves only the cursor
    spool.put(5, 9, [b"<AuditMessage/>"])
    assert _value(metrics) == 3.0
    first = spool.files()[0]
    spool.keep_from(first, spool.read(first), sent=2)  # the repository took the first batch
    assert _value(metrics) == 1.0
