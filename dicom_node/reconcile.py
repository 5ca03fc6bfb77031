"""The reconciler: drive on every study a crash, a power cut or a lost message left half-way.

At start-up (and every ``_EVERY`` seconds after) it reads the studies whose current state is not
terminal (``audit.SETTLED_STATES`` minus ``reported``, from the state index: O(unsettled studies)) and
moves each on, with an audit row that says so:

============================  =========================================================================
state left behind             what the reconciler does
============================  =========================================================================
``received``, ``complete``    not open in the assembler and not in the enqueue outbox: re-open it from
                              the spool (it completes after the quiet period), or record ``failed``
                              when its instances are gone
``queued``, ``analysing``     neither the node's enqueue outbox nor the queue holds it: hand it to the
                              enqueue outbox again (``queued``, reason given). With a broker that
                              cannot be asked, only once it is older than the broker's visibility
                              timeout (Redis redelivers what it holds before that).
``reported``                  the export outbox has settled the SR: write ``exported`` /
                              ``export-failed`` (``dicom_node.export.settle_study``)
============================  =========================================================================

mercure's bookkeeper and cleaner are the model: one place that knows every study's life.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from audit import AuditUnavailable
from dicom_node.enqueue import Enqueuer
from dicom_node.export import settle_study
from dicom_node.outbox import Outbox, OutboxItemNotFound, item_id_for
from dicom_node.pending import PendingStudies
from dicom_node.ports import ReconcileAudit
from dicom_node.spool import Spool
from eusdx.config import Settings
from eusdx.failures import Failure, FailureClass

__all__ = ["Reconciler", "UNSETTLED"]

log = logging.getLogger(__name__)

#: Non-terminal states the reconciler looks at.
UNSETTLED = ("received", "complete", "queued", "analysing", "reported")


class Reconciler:
    """Drives unsettled studies on (see the module docstring).

    Parameters
    ----------
    settings, audit, enqueuer, pending, outbox, spool
        The node's collaborators (``enqueuer.holds(study_uid) -> bool`` is used when it exists).
    is_open
        ``study_uid -> bool``: the assembler has the study open right now.
    reopen
        ``study_uid -> None``: let the assembler complete the study again.
    clock
        Wall clock.
    """

    def __init__(self, settings: Settings, audit: ReconcileAudit, enqueuer: Enqueuer, pending: PendingStudies,
                 outbox: Outbox, spool: Spool, *, is_open: Callable[[str], bool],
                 reopen: Callable[[str], None], clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.audit = audit
        self.enqueuer = enqueuer
        self.pending = pending
        self.outbox = outbox
        self.spool = spool
        self.is_open = is_open
        self.reopen = reopen
        self.clock = clock

    def _broker_grace(self) -> float:
        # Redis re-delivers an unacknowledged message after its visibility timeout (worker.celery_app).
        return 2 * float(self.settings.task_time_limit_seconds) + 600.0

    def run_once(self) -> list[tuple[str, str, str]]:
        """One pass; returns ``(study_uid, state found, action)`` for every study it moved on.

        Raises
        ------
        audit.AuditUnavailable
            The audit store is away; the next pass retries.
        """
        actions = []
        for row in self.audit.studies_in(UNSETTLED):
            study, state = str(row["study_uid"]), str(row["state"])
            try:
                action = self._one(study, state, row)
            except AuditUnavailable:
                raise
            except (OSError, ValueError) as exc:
                log.error("reconciler: study %s (%s) not driven on: %s", study, state, exc)
                continue
            if action:
                actions.append((study, state, action))
                log.info("reconciler", extra={"study_uid": study, "state": state, "action": action})
        return actions

    def _one(self, study: str, state: str, row: dict[str, Any]) -> str | None:
        if state == "reported":
            return self._reported(study)
        if self.is_open(study) or self.pending.get(study) is not None:
            return None  # the node is working on it
        if state in ("received", "complete"):
            if self.spool.instances(study):
                self.reopen(study)
                return "re-opened from the spool"
            failure = Failure(FailureClass.INPUT, "the study's instances are no longer in the spool",
                              False, "Reconciler")
            self.audit.study_state(study_uid=study, state="failed", reason=failure.as_text(),
                                   details={"failure_class": failure.failure_class.value, "reconciler": True})
            return "failed: instances gone"
        holds = getattr(self.enqueuer, "holds", None)
        if holds is not None:
            if holds(study):
                return None
        else:
            updated = row.get("updated_at")
            if updated is not None:
                if updated.tzinfo is None:  # SQLite hands back naive UTC
                    updated = updated.replace(tzinfo=dt.timezone.utc)
                if self.clock() - updated.timestamp() < self._broker_grace():
                    return None
        n = len(self.spool.instances(study))
        self.audit.study_state(study_uid=study, state="queued",
                               reason=f"reconciler: re-queued, the queue did not hold it (was {state})",
                               details={"reconciler": True, "was": state})
        self.pending.put(study, n)
        self.pending.update(study, queued_audited=True)
        return "re-queued"

    def _reported(self, study: str) -> str | None:
        report = self.audit.last_report(study)
        if not report or not report.get("sr_sop_uid"):
            return None
        try:
            record = self.outbox.get(item_id_for(str(report["sr_sop_uid"])))
        except OutboxItemNotFound:
            return None
        written = settle_study(self.audit, record)
        return f"settled: {written}" if written else None
