"""The dashboard's hooks into a running node (``eusdx serve``): the Prometheus registry (with the
queue-depth and spool-fill gauges added), the SRs in the export outbox, re-run and re-send."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dashboard import Operations
    from dicom_node.app import Node
    from dicom_node.enqueue import Enqueuer
    from dicom_node.outbox import Outbox
    from dicom_node.ports import ExportAudit
    from eusdx.config import Settings

__all__ = ["node_operations", "replay_dead_letters"]

log = logging.getLogger(__name__)


def replay_dead_letters(outbox: Outbox, audit: ExportAudit, item_ids: list[str] | None) -> int:
    """Re-arm the dead-lettered destinations of ``item_ids`` (``None``: every item) and record an
    export ``replayed`` row for each; returns how many destinations were re-armed."""
    rearmed: list[tuple[str, str]] = []
    for item in (item_ids if item_ids is not None else [None]):
        rearmed.extend(outbox.rearm(item))
    for iid, dest in rearmed:
        record = outbox.get(iid)
        audit.export(study_uid=record["study_uid"], destination=dest, attempt=0,
                     status="replayed", sr_sop_uid=record["sop_uid"])
    return len(rearmed)


def _add_gauges(node: Node, enqueuer: Enqueuer, settings: Settings) -> None:
    from prometheus_client import Gauge

    registry = node.metrics.registry
    queue = getattr(enqueuer, "queue", None)
    if queue is not None and callable(getattr(queue, "depth", None)):
        depth = Gauge("eusdx_queue_depth", "Embedded analysis queue: studies by state",
                      ["state"], registry=registry)
        def reader(state: str) -> Any:
            return lambda: float(queue.depth().get(state, 0))

        for state in ("pending", "running"):
            depth.labels(state=state).set_function(reader(state))
    spool = Path(settings.spool_dir)

    def fill() -> float:
        try:
            usage = shutil.disk_usage(spool)
        except OSError:
            return float("nan")
        return 100.0 * usage.used / usage.total

    Gauge("eusdx_spool_fill_percent", "Used share of the spool's file system (percent)",
          registry=registry).set_function(fill)


def node_operations(node: Node, audit: ExportAudit, enqueuer: Enqueuer, settings: Settings) -> Operations:
    """:class:`dashboard.Operations` for a started :class:`dicom_node.app.Node`."""
    from dashboard import Operations
    from dicom_node.outbox import item_id_for

    _add_gauges(node, enqueuer, settings)
    outbox = node.outbox

    def sr_file(sop_uid: str) -> Path | None:
        path = Path(outbox.object_path(item_id_for(sop_uid)))
        return path if path.is_file() else None

    def rerun(study_uid: str) -> str:
        if not (Path(settings.spool_dir) / study_uid).is_dir():
            return "not queued: the study's images are no longer in the spool"
        audit.study_state(study_uid=study_uid, state="queued", reason="re-run from the dashboard")
        enqueuer.enqueue(study_uid)
        return "queued for analysis again"

    def resend(study_uid: str) -> str:
        ids = [i for i in outbox.ids() if outbox.get(i).get("study_uid") == study_uid]
        n = replay_dead_letters(outbox, audit, ids) if ids else 0
        return f"re-armed {n} dead-lettered destination(s) of the study"

    return Operations(registry=node.metrics.registry, sr_file=sr_file, rerun=rerun,
                      resend=resend)
