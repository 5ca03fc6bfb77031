"""Export of our SRs to every result destination, through the durable outbox
(:mod:`dicom_node.outbox`) and the channels of :mod:`dicom_node.channels`.

The worker calls :func:`submit` (durable once it returns; the same SOP Instance UID is queued once);
:class:`ExportRunner` (a thread of ``eusdx serve``) delivers due items to every destination of
``Settings.result_destinations`` (C-STORE, C-STORE with Storage Commitment, STOW-RS, webhook),
retrying transient failures with exponential back-off (``export_backoff_seconds`` doubling,
capped at ``export_backoff_max_seconds``) and moving a destination to dead-letter after
``export_max_attempts`` or at once on a permanent refusal (the reason names what was refused).
Every attempt is audited (``AuditLog.export``); a dead letter is also announced to the webhooks
that asked for it.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from audit import AuditUnavailable
from dicom_node.channels import Item, Outcome, channel_for
from dicom_node.metrics import NodeMetrics
from dicom_node.outbox import (
    COMMIT_PENDING,
    COMMITTED,
    DEAD_LETTER,
    ITEM_DONE,
    ITEM_WAITING,
    PENDING,
    SENT,
    Outbox,
    item_state,
)
from dicom_node.ports import ExportAudit
from eusdx.config import Settings
from eusdx.errors import DataError
from eusdx.failures import DeliveryError, classify
from eusdx.uids import check_uid

__all__ = ["submit", "ExportRunner", "outbox_for", "destinations_for", "settle_study"]

log = logging.getLogger(__name__)

_SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
#: Study states the export of the current SR may move on from.
_EXPORTING = ("reported", "exported", "committed", "export-failed")


def settle_study(audit: ExportAudit, record: dict[str, Any]) -> str | None:
    """Write the study's ``exported`` or ``export-failed`` state once its current SR's item is settled.

    ``exported``: every destination confirmed the SR of the study's current revision (the per-destination
    results go into the details); ``committed``: every destination answered a Storage Commitment for it;
    ``export-failed``: none is still pending and at least one dead-lettered
    it (named in the reason). Items that are not the current revision's SR, or studies no longer waiting on
    the export (failed, re-opened by late images), change nothing.

    Returns
    -------
    str or None
        The state written, or ``None``.

    Raises
    ------
    audit.AuditUnavailable
        The audit store is away (the start-up reconciler writes the state later).
    """
    if not str(record.get("sop_class_uid", "")).startswith(_SR_CLASS_PREFIX):
        return None
    state = item_state(record)
    if state not in (ITEM_DONE, DEAD_LETTER):
        return None
    study = str(record["study_uid"])
    report = audit.last_report(study)
    if report is None or report.get("sr_sop_uid") != record["sop_uid"]:
        return None
    current = audit.study_current_state(study)
    if current not in _EXPORTING:
        return None
    destinations = {
        name: {"state": d.get("state"), "attempts": d.get("attempts", 0), "sent_at": d.get("sent_at"),
               "last_error": d.get("last_error")}
        for name, d in sorted(record["destinations"].items())
    }
    if state == ITEM_DONE and all(d["state"] == COMMITTED for d in destinations.values()):
        new, reason = "committed", f"{len(destinations)} destination(s) committed to keep the SR"
    elif state == ITEM_DONE:
        new, reason = "exported", f"{len(destinations)} destination(s) confirmed the SR"
    else:
        dead = [n for n, d in destinations.items() if d["state"] == DEAD_LETTER]
        errors = "; ".join(f"{n}: {destinations[n]['last_error'] or 'no answer'}" for n in dead)
        new, reason = "export-failed", f"delivery: the SR was dead-lettered by {errors}"[:250]
    if new == current:
        return None
    audit.study_state(study_uid=study, state=new, reason=reason,
                      details={"sr_sop_uid": record["sop_uid"], "revision": report.get("revision"),
                               "destinations": destinations})
    return new


def outbox_for(settings: Settings) -> Outbox:
    """The export outbox of this configuration."""
    return Outbox(settings.outbox_path / "export")


def submit(settings: Settings, dataset_path_or_dataset: Path | str | Dataset, study_uid: str,
           *, audit: ExportAudit | None = None, amends: str | None = None) -> str:
    """Durably put an instance (our SR) in the export outbox.

    Parameters
    ----------
    settings
        ``export_destinations`` and ``outbox_dir``/``spool_dir`` are used.
    dataset_path_or_dataset
        A DICOM file path or a pydicom ``Dataset`` (written in the DICOM File Format).
    study_uid
        The analysed study (for the audit rows).
    audit
        Optional ``AuditLog``: when given, one ``queued`` row per destination is written now;
        otherwise the runner writes it when it first sees the item.
    amends
        SOP Instance UID of the earlier SR this one corrects (kept as the item's ``amends``;
        the ``hl7`` channel then sends a corrected result, OBR-25/OBX-11 ``C``).

    Returns
    -------
    str
        The outbox item id (stable: derived from the SOP Instance UID). Submitting the same SOP
        Instance UID again returns the same id and queues nothing.

    Raises
    ------
    eusdx.errors.DataError
        The object has no valid SOP Instance/Class UID, or the file cannot be read.
    """
    check_uid(study_uid, "StudyInstanceUID")
    if isinstance(dataset_path_or_dataset, Dataset):
        ds = dataset_path_or_dataset

        def write(path: Path) -> None:
            ds.save_as(path, enforce_file_format=True)
    else:
        source = Path(dataset_path_or_dataset)
        try:
            ds = pydicom.dcmread(source, stop_before_pixels=True)
        except Exception as exc:
            raise DataError(f"cannot read {source}: {exc}") from exc

        def write(path: Path) -> None:
            path.write_bytes(source.read_bytes())

    sop_uid = check_uid(str(ds.get("SOPInstanceUID", "")), "SOPInstanceUID")
    if amends is not None:
        check_uid(amends, "amends")
    sop_class = check_uid(str(ds.get("SOPClassUID", "")), "SOPClassUID")
    outbox = outbox_for(settings)
    names = destinations_for(settings, ds)
    item_id, created = outbox.add(sop_uid=sop_uid, sop_class_uid=sop_class, study_uid=study_uid,
                                  write_object=write, destinations=names,
                                  extra={"accession": str(ds.get("AccessionNumber", "") or "")
                                         or None, "amends": amends})
    if not created:
        log.info("export: SOP instance already in the outbox", extra={"item": item_id})
        return item_id
    if not names:
        log.warning("export: no result destination configured; item %s is held", item_id)
    if audit is not None:
        _audit_queued(outbox, audit, item_id)
    return item_id


def destinations_for(settings: Settings, ds: Dataset) -> list[str]:
    """Names of the destinations an SR goes to: every DICOM and DICOMweb destination, and the
    webhooks that asked for this result (``result``, or ``high-gist`` when it is one)."""
    from dicom_node.channels.webhook import wants_result

    return [d.name for d in settings.result_destinations
            if d.kind != "webhook" or wants_result(ds, settings, d)]


#: Serialises the "queued" rows of one process: submit (worker thread) and the runner's pass
#: would otherwise both see ``queued_audited`` unset and write them twice.
_QUEUED_LOCK = threading.Lock()


def _audit_queued(outbox: Outbox, audit: ExportAudit, item_id: str) -> None:
    with _QUEUED_LOCK:
        record = outbox.get(item_id)
        if record.get("queued_audited"):
            return
        for name in record["destinations"]:
            audit.export(study_uid=record["study_uid"], destination=name, attempt=0,
                         status="queued", sr_sop_uid=record["sop_uid"])
        outbox.update(item_id, queued_audited=True)


class ExportRunner:
    """Send due outbox items; one pass at a time per outbox.

    Several runners may point at one outbox (the thread of ``eusdx serve`` and the ``export``-queue
    workers): each pass holds the outbox's runner lock, so an item is never sent by two at once.

    Parameters
    ----------
    settings
        Destinations, back-off and attempt limits.
    audit
        ``audit.AuditLog``: every attempt is recorded.
    outbox, metrics
        Optional collaborators (made from the settings otherwise).
    clock
        Wall clock (tests inject one).
    """

    def __init__(self, settings: Settings, audit: ExportAudit, *, outbox: Outbox | None = None,
                 metrics: NodeMetrics | None = None, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.audit = audit
        self.outbox = outbox or outbox_for(settings)
        self.metrics = metrics
        self.clock = clock

    def delay(self, attempts: int) -> float:
        """Back-off after ``attempts`` failed attempts: base, 2*base, 4*base, ... capped."""
        s = self.settings
        return float(min(s.export_backoff_max_seconds,
                         s.export_backoff_seconds * (2 ** max(0, attempts - 1))))

    def run_once(self) -> list[tuple[str, str, str]]:
        """Attempt every due ``(item, destination)`` once; returns ``(id, destination, state)``.

        Returns an empty list when another runner is in the middle of a pass."""
        return self.try_run_once() or []

    def try_run_once(self) -> list[tuple[str, str, str]] | None:
        """Like :meth:`run_once`, but ``None`` when another runner holds the outbox right now."""
        with open(self.outbox.root / ".runner.lock", "a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            try:
                return self._pass()
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _pass(self) -> list[tuple[str, str, str]]:
        results = []
        for record in self.outbox.records(ITEM_WAITING):  # O(pending work), never the history
            item_id = record["id"]
            if not record.get("queued_audited"):
                try:
                    _audit_queued(self.outbox, self.audit, item_id)
                except AuditUnavailable:
                    log.error("audit unavailable: export of item %s postponed", item_id)
                    continue
        for item_id, dest in self.outbox.due(self.clock()):
            results.append((item_id, dest, self._attempt(item_id, dest)))
        return results

    def _attempt(self, item_id: str, destination: str) -> str:
        record = self.outbox.get(item_id)
        state = record["destinations"][destination]
        current = state.get("state")
        if current not in (PENDING, COMMIT_PENDING):
            return str(current)
        config = self.settings.destination(destination)
        if config is None:
            # Kept, not attempted: the destination may come back in the configuration.
            later = self.clock() + self.settings.export_backoff_max_seconds
            self.outbox.update_destination(item_id, destination, next_due=later,
                                           last_error="destination is no longer configured")
            log.warning("export: destination %s of item %s is not configured", destination,
                        item_id)
            return str(current)
        item = Item(record, state, self.outbox.object_path(item_id))
        channel = channel_for(self.settings, config)
        waiting = current == COMMIT_PENDING
        attempt = int(state.get("attempts", 0)) + (0 if waiting else 1)
        outcome: Outcome | None
        error: DeliveryError | None = None
        try:
            outcome = channel.poll(item, self.clock()) if waiting else channel.deliver(item)
        except DeliveryError as exc:
            outcome, error = None, exc
        except (OSError, ValueError) as exc:  # unreadable object, bad TLS files: retried
            outcome, error = None, DeliveryError(classify(exc).reason)
        except Exception as exc:  # a bug in a channel: counted and backed off like a failure
            log.exception("export channel %s failed unexpectedly", config.kind)
            outcome, error = None, DeliveryError(classify(exc).reason)
        now = self.clock()
        if outcome is not None and outcome.state == COMMIT_PENDING and waiting:
            # Still waiting for the archive's answer: look again later, nothing to audit.
            self.outbox.update_destination(item_id, destination,
                                           next_due=outcome.next_due or now + 1.0)
            return COMMIT_PENDING
        if outcome is not None:
            new_state = outcome.state
            fields: dict[str, Any] = dict(state=new_state, attempts=attempt, last_error=None,
                                          detail=outcome.detail, **outcome.fields)
            if new_state in (SENT, COMMITTED):
                fields["sent_at"] = state.get("sent_at") or now
            if new_state == COMMIT_PENDING:
                fields["next_due"] = outcome.next_due or now
            reason = outcome.detail
        else:
            assert error is not None
            reason = classify(error).as_text()
            if error.permanent or attempt >= self.settings.export_max_attempts:
                new_state = DEAD_LETTER
                fields = dict(state=DEAD_LETTER, attempts=attempt, last_error=reason,
                              permanent=error.permanent)
            else:
                new_state = PENDING
                fields = dict(state=PENDING, attempts=attempt, next_due=now + self.delay(attempt),
                              last_error=reason)
        # Mark first, audit second: a sent item must never be sent again because the audit
        # store hiccuped; the audit failure itself is logged.
        self.outbox.update_destination(item_id, destination, **fields)
        status = {SENT: "sent", COMMITTED: "committed", COMMIT_PENDING: "commit-pending",
                  DEAD_LETTER: "dead-letter", PENDING: "failed"}[new_state]
        try:
            self.audit.export(study_uid=record["study_uid"], destination=destination,
                              attempt=attempt, status=status, sr_sop_uid=record["sop_uid"],
                              error=reason if outcome is None else None)
        except AuditUnavailable:
            log.error("audit unavailable: export attempt %d of item %s to %s not recorded",
                      attempt, item_id, destination)
        else:
            try:
                settle_study(self.audit, self.outbox.get(item_id))
            except AuditUnavailable:
                log.error("audit unavailable: the study of item %s settles at the next reconcile", item_id)
        if self.metrics is not None:
            self.metrics.exports.labels(outcome=status).inc()
        log.info("export attempt", extra={"item": item_id, "destination": destination,
                                          "kind": config.kind, "attempt": attempt,
                                          "outcome": status, "error": reason})
        if new_state == DEAD_LETTER and record.get("kind") != "event":
            self._announce_dead_letter(record, destination, reason)
        return new_state

    def _announce_dead_letter(self, record: dict[str, Any], destination: str,
                              reason: str | None) -> None:
        from dicom_node.channels.events import notify

        try:
            notify(self.settings, "dead-letter", record["study_uid"], reason=reason,
                   destination=destination, sr_sop_uid=record.get("sop_uid"),
                   accession=record.get("accession"), audit=self.audit)
        except (OSError, AuditUnavailable) as exc:
            log.error("dead letter of %s could not be announced to webhooks: %s", destination,
                      classify(exc).as_text())

    def run_forever(self, stop: threading.Event, *, poll: float = 1.0, stop_check: float = 0.2) -> None:
        """Loop :meth:`run_once` until ``stop`` is set, sleeping until the next item is due.

        An item the embedded worker adds wakes the loop at once (:meth:`Outbox.wait_for_arrival`);
        otherwise it passes every ``poll`` seconds (items from other processes, retries due) and
        checks ``stop`` every ``stop_check`` seconds.
        """
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:  # keep exporting; the failing item stays pending on disk
                log.exception("export runner pass failed")
            nxt = self.outbox.next_due()
            wait = poll if nxt is None else max(0.05, min(poll, nxt - self.clock()))
            deadline = time.monotonic() + wait
            while not stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0 or self.outbox.wait_for_arrival(min(left, stop_check)):
                    break
