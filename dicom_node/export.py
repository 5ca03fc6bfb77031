"""C-STORE SCU export of our SRs, through the durable outbox (:mod:`dicom_node.outbox`).

The worker calls :func:`submit` (durable once it returns; the same SOP Instance UID is queued once);
:class:`ExportRunner` (a thread of ``eusdx serve``) sends due items to every
``Settings.export_destinations`` entry, retrying with exponential back-off
(``export_backoff_seconds`` doubling, capped at ``export_backoff_max_seconds``) and moving a
destination to dead-letter after ``export_max_attempts``. An item is marked sent only after the
destination answered Success (or a Warning, which PS3.4 B.2.3 defines as stored). Every attempt
is audited (``AuditLog.export``).
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from audit import AuditUnavailable
from dicom_node.metrics import NodeMetrics
from dicom_node.outbox import DEAD_LETTER, PENDING, SENT, Outbox
from dicom_node.uids import check_uid
from eusdx.config import Settings, parse_destination
from eusdx.errors import DataError

__all__ = ["submit", "ExportRunner", "SendResult", "send_instance", "outbox_for"]

log = logging.getLogger(__name__)

_UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")


def outbox_for(settings: Settings) -> Outbox:
    """The export outbox of this configuration."""
    return Outbox(settings.outbox_path / "export")


def submit(settings: Settings, dataset_path_or_dataset: Path | str | Dataset, study_uid: str,
           *, audit: Any = None) -> str:
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
    sop_class = check_uid(str(ds.get("SOPClassUID", "")), "SOPClassUID")
    outbox = outbox_for(settings)
    item_id, created = outbox.add(sop_uid=sop_uid, sop_class_uid=sop_class, study_uid=study_uid,
                                  write_object=write, destinations=list(settings.export_destinations))
    if not created:
        log.info("export: SOP instance already in the outbox", extra={"item": item_id})
        return item_id
    if not settings.export_destinations:
        log.warning("export: no export_destinations configured; item %s is held", item_id)
    if audit is not None:
        _audit_queued(outbox, audit, item_id)
    return item_id


def _audit_queued(outbox: Outbox, audit: Any, item_id: str) -> None:
    record = outbox.get(item_id)
    if record.get("queued_audited"):
        return
    for name in record["destinations"]:
        audit.export(study_uid=record["study_uid"], destination=name, attempt=0,
                     status="queued", sr_sop_uid=record["sop_uid"])
    outbox.update(item_id, queued_audited=True)


class SendResult:
    """Outcome of one C-STORE attempt."""

    __slots__ = ("ok", "status", "error")

    def __init__(self, ok: bool, status: int | None, error: str | None) -> None:
        self.ok, self.status, self.error = ok, status, error

    def __repr__(self) -> str:
        return f"SendResult(ok={self.ok}, status={self.status}, error={self.error!r})"


def send_instance(settings: Settings, path: Path, destination: str,
                  *, timeout: float | None = None) -> SendResult:
    """One association, one C-STORE of the file at ``path`` to ``AE@host:port``.

    Never raises for network or peer problems: they come back as ``SendResult(ok=False)``.
    """
    from pynetdicom import AE

    dest = parse_destination(destination)
    ds = pydicom.dcmread(path)
    ts = str(ds.file_meta.TransferSyntaxUID)
    syntaxes = [ts] + [t for t in _UNCOMPRESSED if t != ts] if ts in _UNCOMPRESSED else [ts]
    ae = AE(ae_title=settings.ae_title)
    t = timeout or settings.network_timeout
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = t
    ae.add_requested_context(str(ds.SOPClassUID), syntaxes)
    tls_args = None
    if settings.export_tls:
        from dicom_node.tls import client_context

        tls_args = (client_context(settings), dest.host)
    try:
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, tls_args=tls_args)
    except Exception as exc:  # socket/TLS errors surface from inside pynetdicom
        return SendResult(False, None, f"cannot associate: {exc}")
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "no answer"
        return SendResult(False, None, f"association {why}")
    try:
        status_ds = assoc.send_c_store(ds)
    except Exception as exc:
        assoc.abort()
        return SendResult(False, None, f"C-STORE failed: {exc}")
    code = int(status_ds.Status) if status_ds is not None and "Status" in status_ds else None
    if assoc.is_established:
        assoc.release()
    if code is None:
        return SendResult(False, None, "no C-STORE response (timeout or abort)")
    # Success (0000) or Warning (B000, B006, B007: stored with coercion) mean the PACS has it.
    ok = code == 0x0000 or (code & 0xF000) == 0xB000
    return SendResult(ok, code, None if ok else f"status 0x{code:04X}")


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

    def __init__(self, settings: Settings, audit: Any, *, outbox: Outbox | None = None,
                 metrics: NodeMetrics | None = None, clock: Any = time.time) -> None:
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
        for item_id in self.outbox.ids():
            record = self.outbox.get(item_id)
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
        if state.get("state") != PENDING:
            return str(state.get("state"))
        attempt = int(state.get("attempts", 0)) + 1
        result = send_instance(self.settings, self.outbox.object_path(item_id), destination)
        now = self.clock()
        if result.ok:
            new_state, fields = SENT, dict(state=SENT, attempts=attempt, sent_at=now,
                                           last_error=None)
        elif attempt >= self.settings.export_max_attempts:
            new_state, fields = DEAD_LETTER, dict(state=DEAD_LETTER, attempts=attempt,
                                                  last_error=result.error)
        else:
            new_state, fields = PENDING, dict(state=PENDING, attempts=attempt,
                                              next_due=now + self.delay(attempt),
                                              last_error=result.error)
        # Mark first, audit second: a sent item must never be sent again because the audit
        # store hiccuped; the audit failure itself is logged.
        self.outbox.update_destination(item_id, destination, **fields)
        status = {SENT: "sent", DEAD_LETTER: "dead-letter", PENDING: "failed"}[new_state]
        try:
            self.audit.export(study_uid=record["study_uid"], destination=destination,
                              attempt=attempt, status=status, sr_sop_uid=record["sop_uid"],
                              error=result.error)
        except AuditUnavailable:
            log.error("audit unavailable: export attempt %d of item %s to %s not recorded",
                      attempt, item_id, destination)
        if self.metrics is not None:
            self.metrics.exports.labels(outcome=status).inc()
        log.info("export attempt", extra={"item": item_id, "destination": destination,
                                          "attempt": attempt, "outcome": status,
                                          "error": result.error})
        return new_state

    def run_forever(self, stop: threading.Event, *, poll: float = 1.0) -> None:
        """Loop :meth:`run_once` until ``stop`` is set, sleeping until the next item is due."""
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:  # keep exporting; the failing item stays pending on disk
                log.exception("export runner pass failed")
            nxt = self.outbox.next_due()
            wait = poll if nxt is None else max(0.05, min(poll, nxt - self.clock()))
            stop.wait(wait)
