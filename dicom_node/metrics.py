"""Prometheus metrics of the DICOM node (one private registry per node, so tests can run several)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["NodeMetrics"]

log = logging.getLogger(__name__)


class NodeMetrics:
    """Counters, gauges and the store-latency histogram served at ``/metrics``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.associations = Counter(
            "eusdx_associations", "Association requests by outcome", ["outcome"], registry=r
        )
        self.active_associations = Gauge(
            "eusdx_associations_active", "Associations in progress", registry=r
        )
        self.instances_received = Counter(
            "eusdx_instances_received", "Instances kept (stored, overwritten, duplicate-ignored)",
            ["status"], registry=r,
        )
        self.instances_rejected = Counter(
            "eusdx_instances_rejected", "Instances refused, by reason", ["reason"], registry=r
        )
        self.bytes_received = Counter(
            "eusdx_received_bytes", "Bytes of instances written to the spool", registry=r
        )
        self.store_latency = Histogram(
            "eusdx_store_seconds",
            "Time from C-STORE data complete to response (parse, write, fsync, audit)",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.studies = Counter(
            "eusdx_studies_completed", "Completed studies by routing outcome", ["outcome"],
            registry=r,
        )
        self.enqueue_pending = Gauge(
            "eusdx_enqueue_pending", "Complete studies waiting for the queue", registry=r
        )
        self.outbox_depth = Gauge(
            "eusdx_outbox_depth", "Export outbox items by state", ["state"], registry=r
        )
        self.exports = Counter(
            "eusdx_export_attempts", "C-STORE export attempts by outcome", ["outcome"], registry=r
        )

    def track_studies(self, counts: Callable[[], dict[str, int]]) -> None:
        """``eusdx_studies{state}``: studies per current state, read from ``counts()`` at scrape time."""
        from audit import STUDY_STATES

        gauge = Gauge("eusdx_studies", "Studies by current state (terminal: exported, committed, "
                      "export-failed, failed, dead-letter, not-routed)", ["state"], registry=self.registry)
        cache: dict[str, Any] = {"at": -1.0, "value": {}}

        def reader(state: str) -> Callable[[], float]:
            def read() -> float:
                now = time.monotonic()
                if now - cache["at"] > 0.5:  # one query per scrape, not one per label
                    try:
                        cache["value"] = counts()
                    except Exception:  # noqa: BLE001 - a scrape must answer; the gauge keeps its value
                        log.warning("study counts unavailable at scrape", exc_info=True)
                    cache["at"] = now
                return float(cache["value"].get(state, 0))
            return read

        for state in STUDY_STATES:
            gauge.labels(state=state).set_function(reader(state))

    def track_atna_backlog(self, backlog: Callable[[], int]) -> None:
        """``eusdx_atna_spool_messages``: IHE ATNA audit messages spooled and not yet taken by the audit
        repository (``audit.atna.sender.AtnaSpool.backlog``), read at scrape time. It grows while the
        repository is down; the spool has no size cap, so this is the figure to alert on."""
        gauge = Gauge("eusdx_atna_spool_messages", "ATNA audit messages waiting for the audit repository",
                      registry=self.registry)
        gauge.set_function(lambda: float(backlog()))

    def track_outbox(self, depth: Callable[[], dict[str, int]]) -> None:
        """Read the outbox depth from ``depth()`` at scrape time (always current, no thread)."""
        def reader(state: str) -> Callable[[], float]:
            return lambda: float(depth().get(state, 0))

        # Sent items are counted by eusdx_export_attempts{outcome="sent"}: counting the kept ones at every
        # scrape would cost O(history).
        for state in ("pending", "dead-letter"):
            self.outbox_depth.labels(state=state).set_function(reader(state))
