"""Study assembly: decide when a study is complete, route it, and hand it to the queue.

A study is complete after ``Settings.study_quiet_seconds`` without a new instance, or
``Settings.study_max_seconds`` after its first one (studies that trickle). Completion writes a
marker ``<spool>/<study>/.study.json`` (state and instance count); new instances that arrive
later re-open the study, re-sent ones do not. On start the state is rebuilt from the spool:
studies without a marker (or with more instances than their marker counted) are open again, and
the enqueue outbox is retried. Deleting what retention no longer keeps is
:mod:`dicom_node.cleaner`'s job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom

from audit import AuditUnavailable
from dicom_node.enqueue import BrokerUnavailable, Enqueuer
from dicom_node.header import InstanceHeader
from dicom_node.metrics import NodeMetrics
from dicom_node.pending import PendingStudies
from dicom_node.ports import StudyAudit
from dicom_node.routing import RoutingRule
from dicom_node.spool import Spool
from eusdx.config import Settings
from eusdx.durable import atomic_write_json, read_json_object

__all__ = ["StudyAssembler", "MARKER"]

log = logging.getLogger(__name__)

MARKER = ".study.json"
_RETRY_MIN = 1.0
_RETRY_MAX = 60.0
_TMP_SWEEP_EVERY = 30.0


@dataclass
class _Open:
    first_seen: float
    last_seen: float
    routed: bool
    accession: str | None = None
    reopened: bool = False


class StudyAssembler:
    """Tracks open studies; a background thread completes and enqueues them.

    Parameters
    ----------
    settings
        ``study_quiet_seconds``, ``study_max_seconds``, ``retention_days`` and the routing keys.
    spool, audit, enqueuer, pending, metrics
        Collaborators (``audit`` is an ``audit.AuditLog``).
    clock
        Monotonic clock (tests inject one).
    """

    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        audit: StudyAudit,
        enqueuer: Enqueuer,
        pending: PendingStudies,
        metrics: NodeMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.audit = audit
        self.enqueuer = enqueuer
        self.pending = pending
        self.metrics = metrics
        self.rule = RoutingRule.from_settings(settings)
        self.clock = clock
        self._open: dict[str, _Open] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._retry_at = 0.0
        self._retry_delay = _RETRY_MIN
        self._tmp_sweep_at = 0.0
        #: ``[period_s, job, next_due]`` run from the assembler thread (``Node`` adds its reconciler).
        self.periodic: list[list[Any]] = []
        metrics.enqueue_pending.set_function(lambda: float(len(self.pending)))

    # --- input (handler threads) ------------------------------------------------------------

    def on_instance(self, header: InstanceHeader, is_new: bool) -> None:
        """Called by the C-STORE handler after an instance was kept.

        ``is_new`` is False for re-sent instances (kept first copy or overwritten): those keep an
        open study alive but never re-open a completed one.
        """
        study = str(header.study_uid)
        now = self.clock()
        routed = self.rule.matches(header)
        with self._lock:
            current = self._open.get(study)
            if current is None:
                if not is_new and self._marker(study) is not None:
                    return
                marker = self._marker(study)
                # a re-opened EUS study stays EUS even if the late instances (a SEG) alone are not
                routed = routed or (marker is not None and marker.get("state") != "not-routed")
                self._open[study] = _Open(now, now, routed, header.accession, marker is not None)
            else:
                current.last_seen = now
                current.routed = current.routed or routed
                current.accession = current.accession or header.accession

    # --- state on disk ------------------------------------------------------------------------

    def _marker_path(self, study: str) -> Path:
        return self.spool.study_dir(study) / MARKER

    def _marker(self, study: str) -> dict[str, Any] | None:
        path = self._marker_path(study)
        try:
            return read_json_object(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            log.error("unreadable study marker %s; treating study as open", path)
            return None

    def recover(self) -> None:
        """Rebuild open studies from the spool (call once before :meth:`start`)."""
        for study in self.spool.studies():
            files = self.spool.instances(study)
            if not files:
                continue
            marker = self._marker(study)
            if marker is not None and int(marker.get("instances", 0)) >= len(files):
                continue
            self._open_from_spool(study, files, marker)
            log.info("recovered open study", extra={"study_uid": study, "instances": len(files)})
        if len(self.pending):
            log.info("enqueue outbox holds %d studies from before the restart", len(self.pending))

    def reopen(self, study: str) -> None:
        """Open a study again from what the spool holds (the reconciler's call for a study a crash left
        in ``received``/``complete``); it completes after the quiet period like any other."""
        files = self.spool.instances(study)
        if files:
            self._open_from_spool(study, files, self._marker(study))

    def is_open(self, study: str) -> bool:
        with self._lock:
            return study in self._open

    def _open_from_spool(self, study: str, files: list[Path], marker: dict[str, Any] | None) -> None:
        now_wall, now = time.time(), self.clock()
        mtimes = [f.stat().st_mtime for f in files]
        routed, accession = False, None
        for f in files:
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
            except Exception:  # a file we wrote cannot be unreadable; log and skip it
                log.exception("cannot read spooled file %s", f)
                continue
            header = InstanceHeader(
                study, None, None, None, modality=ds.get("Modality"),
                body_part=ds.get("BodyPartExamined"),
                series_description=ds.get("SeriesDescription"),
            )
            accession = accession or (str(ds.get("AccessionNumber") or "") or None)
            if self.rule.matches(header):
                routed = True
                break
        with self._lock:
            if study in self._open:
                return
            self._open[study] = _Open(
                first_seen=now - max(0.0, now_wall - min(mtimes)),
                last_seen=now - max(0.0, now_wall - max(mtimes)),
                routed=routed, accession=accession, reopened=marker is not None,
            )

    # --- completion -----------------------------------------------------------------------------

    def due(self, now: float | None = None) -> list[str]:
        """Studies whose quiet period or ceiling has passed."""
        now = self.clock() if now is None else now
        quiet, ceiling = self.settings.study_quiet_seconds, self.settings.study_max_seconds
        with self._lock:
            return [
                uid for uid, st in self._open.items()
                if now - st.last_seen >= quiet or now - st.first_seen >= ceiling
            ]

    def next_due_in(self, now: float | None = None) -> float | None:
        """Seconds until the next open study's quiet period or ceiling ends (0 if one is due now);
        None when no study is open."""
        now = self.clock() if now is None else now
        quiet, ceiling = self.settings.study_quiet_seconds, self.settings.study_max_seconds
        with self._lock:
            ends = [min(st.last_seen + quiet, st.first_seen + ceiling) for st in self._open.values()]
        return max(0.0, min(ends) - now) if ends else None

    def tick(self) -> list[str]:
        """Complete due studies and retry the enqueue outbox; returns the studies completed."""
        done = []
        for study in self.due():
            if self._complete(study):
                done.append(study)
        now = self.clock()
        if done or now >= self._retry_at:
            self.flush_pending()
        for job in self.periodic:
            if now >= job[2]:
                job[2] = now + job[0]
                job[1]()
        if now >= self._tmp_sweep_at:
            self._tmp_sweep_at = now + _TMP_SWEEP_EVERY
            # an active transfer touches its file with every fragment; one idle this long was
            # dropped by its peer (pynetdicom's network timeout has ended the association)
            if n := self.spool.sweep_tmp(self.settings.network_timeout + 10.0):
                log.warning("removed %d abandoned partial transfer(s) from the spool", n)
        return done

    def _complete(self, study: str) -> bool:
        with self._lock:
            st = self._open.get(study)
            seen = st.last_seen if st is not None else 0.0
        if st is None:
            return False
        n = len(self.spool.instances(study))
        try:
            if st.reopened:
                self.audit.study_state(study_uid=study, state="received",
                                       reason="new instances after completion")
                st.reopened = False
            if st.routed:
                self.audit.study_state(study_uid=study, state="complete",
                                       accession=st.accession, details={"instances": n})
                self.pending.put(study, n)
                state = "complete"
            else:
                self.audit.study_state(study_uid=study, state="not-routed",
                                       reason="routing rules did not match",
                                       accession=st.accession, details={"instances": n})
                state = "not-routed"
        except AuditUnavailable:
            log.error("audit store unavailable: completion of study %s postponed", study)
            return False
        atomic_write_json(self._marker_path(study),
                          {"state": state, "instances": n, "completed_at": time.time()})
        with self._lock:
            if st.last_seen == seen:
                del self._open[study]
            else:  # an instance arrived during completion: the study is open again
                st.reopened = True
        self.metrics.studies.labels(outcome="routed" if st.routed else "not-routed").inc()
        log.info("study complete", extra={"study_uid": study, "instances": n,
                                            "routed": st.routed})
        return True

    def flush_pending(self) -> int:
        """Try to enqueue every pending study; returns how many the queue took."""
        taken = 0
        for study in self.pending.studies():
            record = self.pending.get(study)
            if record is None:
                continue
            try:
                if not record.get("queued_audited"):
                    # Audit "queued" before the hand-off: a fast worker must not see its
                    # "analysing" overtaken by our "queued".
                    self.audit.study_state(study_uid=study, state="queued")
                    self.pending.update(study, queued_audited=True)
                self.enqueuer.enqueue(study)
            except BrokerUnavailable as exc:
                log.warning("queue unavailable, study %s kept in the outbox: %s", study, exc)
                self._backoff()
                return taken
            except AuditUnavailable:
                log.error("audit store unavailable: enqueue of study %s postponed", study)
                self._backoff()
                return taken
            self.pending.done(study)
            self._set_marker_state(study, "queued")
            taken += 1
            log.info("study queued", extra={"study_uid": study})
        self._retry_delay = _RETRY_MIN
        self._retry_at = self.clock() + _RETRY_MAX
        return taken

    def _backoff(self) -> None:
        self._retry_at = self.clock() + self._retry_delay
        self._retry_delay = min(_RETRY_MAX, self._retry_delay * 2)

    def _set_marker_state(self, study: str, state: str) -> None:
        marker = self._marker(study)
        if marker is not None:
            marker["state"] = state
            atomic_write_json(self._marker_path(study), marker)

    def open_studies(self) -> list[str]:
        with self._lock:
            return sorted(self._open)

    # --- thread ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="eusdx-assembler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        period = max(0.05, min(1.0, self.settings.study_quiet_seconds / 4 or 0.05))
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # keep the assembler alive; the next tick retries
                log.exception("assembler tick failed")
            # wake when the next quiet period ends (not up to ``period`` late), a new instance
            # arrives (``_wake``), or ``period`` passes (retries, periodic jobs)
            nxt = self.next_due_in()
            self._wake.wait(period if nxt is None else min(period, max(0.05, nxt + 0.005)))
            self._wake.clear()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread; open studies stay on disk and are recovered at the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
