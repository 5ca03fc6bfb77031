"""Retention and cleaning: the spool and the export outbox keep patient data only as long as needed.

What goes, and when (every deletion is audited before it happens; ``eusdx spool purge --dry-run`` shows
the plan without deleting):

* a study in a terminal state (``exported``, ``committed``, ``export-failed``, ``failed``,
  ``dead-letter``) ``Settings.spool_retention_days`` after it reached it;
* a ``not-routed`` study ``Settings.retention_days`` after completion;
* an export outbox item ``Settings.outbox_sent_retention_days`` after every destination confirmed it;
* under disk pressure (spool file system above ``Settings.spool_clean_fill_percent``, which is below
  ``spool_max_fill_percent`` where the node answers 0xA700): settled studies early, oldest exported
  first, then the other terminal ones, until the fill level is back under the mark. A study that is
  still open, queued, analysing or waiting for its export is never deleted.

Costs: one pass lists the spool (what retention keeps, not the history) and reads one projection row per
study; the outbox is pruned from its ``done`` index. A spool deletion is recorded as the study's terminal
state written again with ``purged`` details (``eusdx audit show`` lists it); an outbox pruning as a
``qa_event`` of actor ``eusdx-cleaner``.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from dicom_node.outbox import Outbox
from dicom_node.ports import CleanerAudit
from dicom_node.spool import Spool
from eusdx.config import Settings

__all__ = ["Cleaner", "Deletion", "PURGEABLE"]

log = logging.getLogger(__name__)

#: Terminal states whose spool data retention deletes (``not-routed`` has its own retention).
PURGEABLE = ("exported", "committed", "export-failed", "failed", "dead-letter")
_DAY = 86400.0
_ACTOR = "eusdx-cleaner"


@dataclass(frozen=True)
class Deletion:
    """One thing the cleaner deletes (or would, in a dry run)."""

    what: str  # "study" or "outbox-item"
    study_uid: str
    state: str
    cause: str  # "retention" or "disk-pressure"
    age_days: float
    size_bytes: int = 0
    item_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _age_days(updated: dt.datetime | None, now: float) -> float:
    if updated is None:
        return 0.0
    if updated.tzinfo is None:  # SQLite hands back naive UTC
        updated = updated.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (now - updated.timestamp()) / _DAY)


class Cleaner:
    """Plans and carries out deletions (see the module docstring).

    Parameters
    ----------
    settings, audit, spool, outbox
        The node's collaborators (``audit`` is an ``audit.AuditLog``).
    is_open
        ``study_uid -> bool``: the assembler holds the study open (never deleted).
    clock
        Wall clock (tests inject one).
    """

    def __init__(self, settings: Settings, audit: CleanerAudit, spool: Spool, outbox: Outbox, *,
                 is_open: Callable[[str], bool] = lambda _: False, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.audit = audit
        self.spool = spool
        self.outbox = outbox
        self.is_open = is_open
        self.clock = clock

    # --- planning ---------------------------------------------------------------------------------

    def _settled_studies(self, now: float) -> list[tuple[str, str, float, int]]:
        """``(study, state, age_days, bytes)`` of every spooled study that reached a terminal state."""
        out = []
        for study in self.spool.studies():
            if self.is_open(study):
                continue
            row = self.audit.study_row(study)
            if row is None or (row["state"] not in PURGEABLE and row["state"] != "not-routed"):
                continue
            size = sum(p.stat().st_size for p in self.spool.instances(study))
            out.append((study, str(row["state"]), _age_days(row["updated_at"], now), size))
        return out

    def plan(self, *, pressure: bool | None = None) -> list[Deletion]:
        """What :meth:`run` would delete now (retention, then disk pressure when the fill level is high)."""
        now = self.clock()
        s = self.settings
        plan: list[Deletion] = []
        settled = self._settled_studies(now)
        keep = []
        for study, state, age, size in settled:
            limit = s.retention_days if state == "not-routed" else s.spool_retention_days
            if age >= limit:
                plan.append(Deletion("study", study, state, "retention", age, size))
            else:
                keep.append((study, state, age, size))
        for item in self.outbox.prune_sent(now - s.outbox_sent_retention_days * _DAY, dry_run=True):
            plan.append(Deletion("outbox-item", str(item["study_uid"]), "sent", "retention",
                                 max(0.0, (now - float(item["done_at"])) / _DAY), item_id=str(item["id"])))
        if pressure is None:
            pressure = self.spool.fill_percent() > s.spool_clean_fill_percent
        if pressure:
            plan.extend(self._pressure_plan(keep, plan))
        return plan

    def _pressure_plan(self, keep: list[tuple[str, str, float, int]], planned: list[Deletion]) -> list[Deletion]:
        usage = shutil.disk_usage(self.spool.root)
        target = usage.total * (1.0 - self.settings.spool_clean_fill_percent / 100.0)
        to_free = target - usage.free - sum(d.size_bytes for d in planned)
        # exported first (the PACS holds the result), then the other settled ones; oldest first
        order = sorted(keep, key=lambda t: (t[1] not in ("exported", "committed"), -t[2]))
        out = []
        for study, state, age, size in order:
            if to_free <= 0:
                break
            out.append(Deletion("study", study, state, "disk-pressure", age, size))
            to_free -= size
        return out

    # --- doing ------------------------------------------------------------------------------------

    def run(self, *, dry_run: bool = False, pressure: bool | None = None) -> list[Deletion]:
        """Carry out :meth:`plan`: audit each deletion, then delete. Returns what was (or would be) deleted.

        Raises
        ------
        audit.AuditUnavailable
            The audit store is away: nothing more is deleted (a deletion is never unaudited).
        """
        plan = self.plan(pressure=pressure)
        if dry_run:
            return plan
        done = []
        for d in plan:
            if d.what == "study":
                if self.is_open(d.study_uid):  # late images arrived since the plan
                    continue
                self.audit.study_state(
                    study_uid=d.study_uid, state=d.state,
                    reason=f"{d.cause}: spool instances deleted ({d.age_days:.1f} days after settling)",
                    details={"purged": True, "cause": d.cause, "bytes": d.size_bytes})
                self.spool.remove_study(d.study_uid)
            else:
                self.audit.qa_event(actor=_ACTOR, action="outbox-prune",
                                    params={"item": d.item_id, "study_uid": d.study_uid, "cause": d.cause})
                self.outbox.remove(str(d.item_id))
            done.append(d)
            log.info("cleaner: deleted", extra={"what": d.what, "study_uid": d.study_uid, "cause": d.cause})
        return done

    def relieve_pressure(self) -> list[Deletion]:
        """Run only when the spool is above ``spool_clean_fill_percent`` (cheap check otherwise)."""
        if self.spool.fill_percent() <= self.settings.spool_clean_fill_percent:
            return []
        log.warning("spool above %.0f %% full: deleting settled studies early",
                    self.settings.spool_clean_fill_percent)
        return self.run(pressure=True)
