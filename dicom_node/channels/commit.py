"""C-STORE with Storage Commitment (kind ``cstore-commit``, PS3.4 Annex J, Push Model).

One attempt: an association proposing the SR's class and the Storage Commitment Push Model SOP
Class (both roles, PS3.4 J.3.3), C-STORE, then N-ACTION (Action Type 1, "Request Storage
Commitment") naming the instance under a new Transaction UID. The archive answers with an
N-EVENT-REPORT (Event Type 1: all committed; 2: some failed, with a Failure Reason each), on the
same association or, like Orthanc and most archives, on a new one to our listener: either way
:func:`handle_event_report` writes the answer durably to ``<outbox_dir>/commit/<txn>.json``.

The destination then stays ``commit-pending``; the runner polls (:meth:`CommitChannel.poll`) and
marks it ``committed`` only when the archive confirmed the instance. A refusal to commit is
permanent (dead-letter, with the archive's Failure Reason); no answer within
``commit_timeout_seconds`` is transient: audited as a failed attempt and retried (C-STORE and
N-ACTION again, under a new Transaction UID).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from dicom_node.channels import Item, Outcome
from dicom_node.channels.cstore import associate, prepare, store, syntaxes_for
from eusdx.config import Destination, Settings
from eusdx.durable import atomic_write_json, read_json_object
from eusdx.failures import DeliveryError
from eusdx.uids import is_valid_uid, new_uid

__all__ = ["CommitChannel", "CommitAnswers", "handle_event_report", "STORAGE_COMMITMENT",
           "STORAGE_COMMITMENT_INSTANCE", "FAILURE_REASONS"]

log = logging.getLogger(__name__)

STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
#: The well-known SOP Instance of the Push Model (PS3.4 J.3.5).
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
_IMPLICIT = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"]
#: Failure Reason (0008,1197) values of PS3.4 J.3.3.1.1 (Storage Commitment).
FAILURE_REASONS: dict[int, str] = {
    0x0110: "processing failure",
    0x0112: "no such object instance",
    0x0213: "resource limitation",
    0x0122: "referenced SOP class not supported",
    0x0119: "class/instance conflict",
    0x0131: "duplicate transaction UID",
}
#: Seconds between looks at the answer store while an answer is awaited.
_POLL_SECONDS = 1.0
#: Seconds the association is kept open after N-ACTION for an answer on it.
_SAME_ASSOCIATION_WAIT = 2.0


class CommitAnswers:
    """N-EVENT-REPORT answers kept on disk by Transaction UID (``<outbox_dir>/commit``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_settings(cls, settings: Settings) -> CommitAnswers:
        return cls(settings.outbox_path / "commit")

    def _path(self, transaction_uid: str) -> Path:
        if not is_valid_uid(transaction_uid):
            raise ValueError(f"Transaction UID {transaction_uid[:80]!r} is not a valid UID")
        return self.root / f"{transaction_uid}.json"

    def put(self, transaction_uid: str, answer: dict[str, Any]) -> None:
        """Keep an answer durably (fsynced before the N-EVENT-REPORT is acknowledged)."""
        atomic_write_json(self._path(transaction_uid), answer)

    def get(self, transaction_uid: str) -> dict[str, Any] | None:
        path = self._path(transaction_uid)
        try:
            return read_json_object(path)
        except FileNotFoundError:
            return None

    def remove(self, transaction_uid: str) -> None:
        self._path(transaction_uid).unlink(missing_ok=True)


def _answer_of(event_type: int, ds: Dataset) -> dict[str, Any]:
    stored = [str(r.get("ReferencedSOPInstanceUID", ""))
              for r in ds.get("ReferencedSOPSequence", [])]
    failed = [{"sop_uid": str(r.get("ReferencedSOPInstanceUID", "")),
               "reason": int(r.get("FailureReason", 0x0110))}
              for r in ds.get("FailedSOPSequence", [])]
    return {"transaction_uid": str(ds.get("TransactionUID", "")), "event_type": event_type,
            "stored": stored, "failed": failed, "received_at": time.time()}


def handle_event_report(event: Any, answers: CommitAnswers) -> tuple[int, Dataset | None]:
    """EVT_N_EVENT_REPORT: keep a Storage Commitment answer; bound on our listener and on the
    channel's own associations.

    Returns
    -------
    (status, reply)
        0x0000 once the answer is on disk; 0x0110 Processing Failure when it cannot be kept (the
        archive sends it again); 0x0113 No Such Event Type for another event type; 0x0119
        Class-Instance Conflict for another SOP class; 0x0106 Invalid Attribute Value when the
        Transaction UID is missing or invalid.
    """
    req = event.request
    if str(req.AffectedSOPClassUID) != STORAGE_COMMITMENT:
        return 0x0119, None
    event_type = int(req.EventTypeID)
    if event_type not in (1, 2):
        return 0x0113, None
    try:
        ds = event.event_information
    except Exception as exc:  # pynetdicom decodes lazily: any decoder error means an undecodable data set
        # answered 0x0106 (the archive sees the refusal); the item stays commit-pending and its timeout is
        # retried and audited by the export runner
        log.warning("Storage Commitment N-EVENT-REPORT without a decodable data set (%s)", type(exc).__name__)
        return 0x0106, None
    answer = _answer_of(event_type, ds)
    if not is_valid_uid(answer["transaction_uid"]):
        return 0x0106, None
    try:
        answers.put(answer["transaction_uid"], answer)
    except OSError as exc:
        log.error("Storage Commitment answer could not be kept: %s", exc)
        return 0x0110, None
    log.info("storage commitment answer", extra={"transaction_uid": answer["transaction_uid"],
                                                 "event_type": event_type,
                                                 "failed": len(answer["failed"])})
    return 0x0000, None


class CommitChannel:
    """Kind ``cstore-commit``: C-STORE, then N-ACTION; ``committed`` once the archive answered."""

    def __init__(self, settings: Settings, destination: Destination) -> None:
        from pynetdicom import evt

        self.settings = settings
        self.destination = destination
        self.answers = CommitAnswers.for_settings(settings)
        self._handlers = [(evt.EVT_N_EVENT_REPORT, handle_event_report, [self.answers])]

    def deliver(self, item: Item) -> Outcome:
        ds = prepare(item.object_path, self.destination, self.settings.uid_root)
        where = str(self.destination.dicom)
        transaction = new_uid(self.settings.uid_root)  # PS3.4 J.3.2: unique per request
        request = Dataset()
        request.TransactionUID = transaction
        ref = Dataset()
        ref.ReferencedSOPClassUID = ds.SOPClassUID
        ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        request.ReferencedSOPSequence = [ref]
        contexts = [(str(ds.SOPClassUID), syntaxes_for(ds)), (STORAGE_COMMITMENT, _IMPLICIT)]
        with associate(self.settings, self.destination, contexts,
                       extra_supported=[STORAGE_COMMITMENT], evt_handlers=self._handlers) as assoc:
            store(assoc, ds, where)
            try:
                status, _ = assoc.send_n_action(request, 1, STORAGE_COMMITMENT,
                                                STORAGE_COMMITMENT_INSTANCE)
            except Exception as exc:
                raise DeliveryError(f"Storage Commitment request to {where} failed: {exc}") from exc
            code = int(status.Status) if "Status" in status else None
            if code is None:
                raise DeliveryError(f"no N-ACTION response from {where} (timeout or abort)")
            if code != 0x0000:
                raise DeliveryError(f"{where} refused the Storage Commitment request with status "
                                    f"0x{code:04X}", permanent=(code & 0xFF00) != 0xA700)
            deadline = time.monotonic() + min(_SAME_ASSOCIATION_WAIT,
                                              self.destination.commit_timeout_seconds)
            while self.answers.get(transaction) is None and time.monotonic() < deadline \
                    and assoc.is_established:
                time.sleep(0.05)
        now = time.time()
        fields = {"transaction_uid": transaction, "requested_at": now,
                  "sent_sop_uid": str(ds.SOPInstanceUID)}
        waiting = Outcome("commit-pending", f"stored; commitment requested (transaction "
                          f"{transaction})", fields, next_due=now)
        # An answer already here (same association, or a quick archive) is taken at once.
        return self._resolve(item, fields, now) or waiting

    def poll(self, item: Item, now: float) -> Outcome | None:
        transaction = str(item.state.get("transaction_uid") or "")
        if not transaction:
            raise DeliveryError("no Storage Commitment transaction is recorded; sending again")
        found = self._resolve(item, item.state, now)
        if found is not None:
            return found
        requested = float(item.state.get("requested_at") or 0)
        if now - requested > self.destination.commit_timeout_seconds:
            raise DeliveryError(
                f"{self.destination.dicom} sent no Storage Commitment answer within "
                f"{self.destination.commit_timeout_seconds:g} s (transaction {transaction}); "
                "sending again")
        return Outcome("commit-pending", None, {},
                       next_due=min(now + _POLL_SECONDS,
                                    requested + self.destination.commit_timeout_seconds + 0.01))

    def _resolve(self, item: Item, state: dict[str, Any], now: float) -> Outcome | None:
        transaction = str(state["transaction_uid"])
        answer = self.answers.get(transaction)
        if answer is None:
            return None
        sop = str(state.get("sent_sop_uid") or item.record.get("sop_uid"))
        failed = {f["sop_uid"]: int(f["reason"]) for f in answer.get("failed", [])}
        self.answers.remove(transaction)
        if sop in failed:
            code = failed[sop]
            raise DeliveryError(
                f"{self.destination.dicom} refused to commit the SR: "
                f"{FAILURE_REASONS.get(code, 'failure')} (Failure Reason 0x{code:04X})",
                permanent=code != 0x0213)
        if sop not in answer.get("stored", []):
            raise DeliveryError(f"{self.destination.dicom} answered transaction {transaction} "
                                "without naming the SR; sending again")
        return Outcome("committed", f"archive committed the SR (transaction {transaction})",
                       {"committed_at": now})
