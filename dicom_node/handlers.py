"""pynetdicom event handlers: who may associate, and how one C-STORE is kept.

Handlers run on each association's own thread; everything they share (:class:`NodeContext`) is
thread-safe. A handler only persists and records: no pixel decoding, no analysis.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit import AuditUnavailable
from dicom_node import _pynetdicom
from dicom_node.header import InflateLimitExceeded, InstanceHeader, UnparseableDataset, parse_header
from dicom_node.metrics import NodeMetrics
from dicom_node.ports import ReceiveAudit
from dicom_node.receive import Received, receive
from dicom_node.sop_classes import TRANSFER_SYNTAXES, storage_like
from dicom_node.spool import Spool, SpoolError
from dicom_node.status import Status
from eusdx.config import Settings
from eusdx.durable import sha256_file
from eusdx.uids import is_valid_uid

__all__ = [
    "NodeContext",
    "AccessPolicy",
    "handle_requested",
    "handle_accepted",
    "handle_rejected",
    "handle_conn_close",
    "handle_data_recv",
    "handle_echo",
    "handle_store",
    "keep_instance",
    "AssocState",
]

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4
_RJ_CALLING = (0x01, 0x01, 0x03)  # rejected-permanent, service-user, calling AE not recognized
_RJ_CALLED = (0x01, 0x01, 0x07)  # rejected-permanent, service-user, called AE not recognized
_RJ_CONGESTION = (0x02, 0x03, 0x01)  # rejected-transient, presentation, temporary congestion
_RJ_LIMIT = (0x02, 0x03, 0x02)  # rejected-transient, presentation, local limit exceeded

OnInstance = Callable[[InstanceHeader, bool], None]


class AccessPolicy:
    """The called-AE check and the calling-AE (and optional host) allow-list.

    Parameters
    ----------
    ae_title
        Our AE title; a request calling another title is rejected.
    allowed_aes
        Calling AE titles allowed; ``*`` anywhere allows any.
    allowed_hosts
        ``AE=host`` entries: a listed AE is accepted only from that host (name or address;
        names are resolved once, at start).
    """

    def __init__(self, ae_title: str, allowed_aes: list[str], allowed_hosts: list[str]) -> None:
        self.ae_title = ae_title.strip()
        self.any_ae = "*" in allowed_aes
        self.allowed = {a.strip() for a in allowed_aes if a.strip() and a.strip() != "*"}
        self.hosts: dict[str, set[str]] = {}
        for entry in allowed_hosts:
            ae, sep, host = entry.partition("=")
            if not sep or not ae.strip() or not host.strip():
                raise ValueError(f"allowed_hosts entry {entry!r} is not AE=host")
            self.hosts.setdefault(ae.strip(), set()).update(_resolve(host.strip()))

    def check(self, calling_ae: str, called_ae: str, host: str) -> tuple[tuple[int, int, int], str] | None:
        """Return ``(A-ASSOCIATE-RJ triple, reason)`` to reject, ``None`` to accept."""
        if not calling_ae.strip():  # PS3.8 9.3.2: a calling AE title is never all spaces
            return _RJ_CALLING, "calling-ae-blank"
        if called_ae.strip() != self.ae_title:
            return _RJ_CALLED, "called-ae-not-recognized"
        calling = calling_ae.strip()
        if not self.any_ae and calling not in self.allowed:
            return _RJ_CALLING, "calling-ae-not-recognized"
        if calling in self.hosts and host not in self.hosts[calling]:
            return _RJ_CALLING, "calling-ae-host-mismatch"
        return None


def _resolve(host: str) -> set[str]:
    found = {host}
    try:
        for info in socket.getaddrinfo(host, None):
            found.add(str(info[4][0]))
    except OSError:
        log.warning("allowed_hosts: cannot resolve %s; comparing literally", host)
    return found


@dataclass
class _AssocState:
    audit_id: int | None
    calling_ae: str
    instances: int = 0


@dataclass
class NodeContext:
    """What every handler needs; one per node, shared by all association threads."""

    settings: Settings
    spool: Spool
    audit: ReceiveAudit  # audit.AuditLog in the product
    metrics: NodeMetrics
    access: AccessPolicy
    on_instance: OnInstance = lambda header, new: None
    tls: bool = False
    chunked: bool = False
    pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=8, thread_name_prefix="eusdx-io"))
    _assocs: dict[int, _AssocState] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # connections that sent bytes but no decodable A-ASSOCIATE-RQ (yet), and those that did
    _unrequested: set[int] = field(default_factory=set)
    _requested: set[int] = field(default_factory=set)

    def state(self, assoc: Any) -> _AssocState:
        with self._lock:
            found = self._assocs.get(id(assoc))
        if found is None:  # should not happen: EVT_REQUESTED registers every accepted association
            found = _AssocState(audit_id=None, calling_ae=str(assoc.requestor.ae_title).strip())
            with self._lock:
                self._assocs[id(assoc)] = found
        return found


#: Per-association (or per STOW-RS request) state: audit id, calling AE, instance count.
AssocState = _AssocState


# --- association ---------------------------------------------------------------------------


def _reject(assoc: Any, rsd: tuple[int, int, int]) -> None:
    _pynetdicom.reject(assoc, rsd)


def handle_requested(event: Any, ctx: NodeContext) -> None:
    """EVT_REQUESTED: accept or reject an association before negotiation, and audit it.

    Rejections (A-ASSOCIATE-RJ): called AE not recognized (1,1,7); calling AE blank, not
    recognized or not from its allowed host (1,1,3); ``max_associations`` already admitted: transient, local limit
    exceeded (2,3,2); audit store unavailable: transient, temporary congestion (2,3,1), because
    nothing received could be recorded.
    """
    assoc = event.assoc
    ctx._requested.add(id(assoc))
    ctx._unrequested.discard(id(assoc))
    rq = assoc.requestor.primitive
    calling = str(rq.calling_ae_title).strip()
    called = str(rq.called_ae_title).strip()
    host = str(assoc.requestor.address)
    port = int(assoc.requestor.port or 0)
    verdict = ctx.access.check(calling, called, host)
    slot = id(assoc)
    if verdict is None:
        # Our own limit on admitted associations (pynetdicom's counts threads that are still
        # closing, so it refuses peers well below the limit; app.py sets it high). The slot is
        # reserved under the lock so two simultaneous requests cannot both take the last one.
        with ctx._lock:
            if len(ctx._assocs) >= ctx.settings.max_associations:
                verdict = (_RJ_LIMIT, "local-limit-exceeded")
            else:
                ctx._assocs[slot] = _AssocState(audit_id=None, calling_ae=calling)
    accepted = verdict is None
    reason = None if verdict is None else verdict[1]
    try:
        audit_id = ctx.audit.association(
            peer_ae=calling, peer_host=host, peer_port=port, called_ae=called, tls=ctx.tls,
            accepted=accepted, reason=reason,
        )
    except AuditUnavailable:
        log.error("association from %s@%s refused: audit store unavailable", calling, host)
        with ctx._lock:
            ctx._assocs.pop(slot, None)
        ctx.metrics.associations.labels(outcome="rejected-audit-unavailable").inc()
        _reject(assoc, _RJ_CONGESTION)
        return
    if verdict is not None:
        log.warning("association rejected", extra={"calling_ae": calling, "called_ae": called,
                                                   "peer": host, "reason": reason})
        ctx.metrics.associations.labels(outcome=reason).inc()
        _reject(assoc, verdict[0])
        return
    with ctx._lock:
        ctx._assocs[slot].audit_id = audit_id
    ctx.metrics.associations.labels(outcome="accepted").inc()
    ctx.metrics.active_associations.inc()
    if ctx.settings.accept_unknown_sop_classes:
        added = _pynetdicom.admit_unknown_storage(assoc, TRANSFER_SYNTAXES, storage_like)
        if added:
            log.info("unknown storage classes admitted", extra={"sop_classes": added,
                                                                 "calling_ae": calling})


#: PS3.8 Table 9-18 presentation context results.
_CX_RESULTS = {0x01: "user-rejection", 0x02: "no-reason", 0x03: "abstract-syntax-not-supported",
               0x04: "transfer-syntaxes-not-supported"}


def handle_accepted(event: Any, ctx: NodeContext) -> None:
    """EVT_ACCEPTED: audit every presentation context we refused (objects the peer cannot send).

    One ``rejected`` instance row per refused abstract syntax, reason
    ``context-rejected: <PS3.8 result>``, so a forwarding job's refused objects are visible.
    """
    state = ctx.state(event.assoc)
    for cx in event.assoc.rejected_contexts:
        uid = str(cx.abstract_syntax)
        reason = f"context-rejected: {_CX_RESULTS.get(int(cx.result or 0), 'unknown')}"
        try:
            ctx.audit.instance(
                association_id=state.audit_id, study_uid=None, series_uid=None, sop_uid=None,
                sop_class_uid=uid if is_valid_uid(uid) else None, transfer_syntax=None, size=0,
                digest=None, status="rejected", reason=reason, calling_ae=state.calling_ae)
        except AuditUnavailable:
            log.error("audit store unavailable: refused presentation context not recorded")
        ctx.metrics.instances_rejected.labels(reason="context-rejected").inc()


def handle_rejected(event: Any, ctx: NodeContext) -> None:
    """EVT_REJECTED: pynetdicom itself refused an association we had admitted (e.g. too many)."""
    with ctx._lock:
        state = ctx._assocs.pop(id(event.assoc), None)
    if state is None:
        return
    ctx.metrics.active_associations.dec()
    ctx.metrics.associations.labels(outcome="rejected-by-negotiation").inc()
    _close_audit(ctx, state, "rejected: local limit or negotiation")


def handle_data_recv(event: Any, ctx: NodeContext) -> None:
    """EVT_DATA_RECV: note a connection that sent bytes before any association request was
    decoded (cleared by EVT_REQUESTED); cheap, it runs for every PDU."""
    key = id(event.assoc)
    if key not in ctx._requested:
        ctx._unrequested.add(key)


def handle_conn_close(event: Any, ctx: NodeContext) -> None:
    """EVT_CONN_CLOSE: record the end of an admitted association (released or aborted).

    A connection that sent data but never a decodable A-ASSOCIATE-RQ was answered with A-ABORT
    by the toolkit (PS3.8 state machine: Evt19 in Sta2, action AA-1); it gets an ``associations``
    row (not accepted, reason ``aborted: association request could not be decoded``) with the
    peer address. A connection that sent nothing (a TCP probe) is not audited.
    """
    assoc = event.assoc
    ctx._requested.discard(id(assoc))
    if id(assoc) in ctx._unrequested:
        ctx._unrequested.discard(id(assoc))
        _audit_undecodable(event, ctx)
    with ctx._lock:
        state = ctx._assocs.pop(id(assoc), None)
    if state is None:
        return
    ctx.metrics.active_associations.dec()
    reason = "released" if assoc.is_released else "aborted" if assoc.is_aborted else "closed"
    _close_audit(ctx, state, reason)


def _audit_undecodable(event: Any, ctx: NodeContext) -> None:
    requestor = event.assoc.requestor
    host, port = str(requestor.address), int(requestor.port or 0)
    log.warning("association request could not be decoded; aborted", extra={"peer": host})
    ctx.metrics.associations.labels(outcome="aborted-undecodable").inc()
    try:
        ctx.audit.association(peer_ae="", peer_host=host, peer_port=port, called_ae="",
                              tls=ctx.tls, accepted=False,
                              reason="aborted: association request could not be decoded")
    except AuditUnavailable:
        log.error("audit store unavailable: undecodable association request from %s not recorded",
                  host)


def _close_audit(ctx: NodeContext, state: _AssocState, reason: str) -> None:
    if state.audit_id is None:
        return
    try:
        ctx.audit.association_closed(
            association_id=state.audit_id, instances=state.instances, reason=reason
        )
    except AuditUnavailable:
        # Every instance of this association already has its own row; only the close is lost.
        log.error("audit store unavailable: close of association %s not recorded", state.audit_id)


def handle_echo(event: Any) -> int:
    """EVT_C_ECHO: Verification. Returns ``Status.SUCCESS``."""
    return int(Status.SUCCESS)


# --- C-STORE -------------------------------------------------------------------------------


def _refuse(
    ctx: NodeContext, state: _AssocState, status: Status, reason: str, *, ts: str, size: int,
    header: InstanceHeader | None = None, sop_class: str | None = None,
) -> Status:
    """Audit and count a refused instance; the status is Out of Resources if auditing fails."""
    h = header or InstanceHeader(None, None, None, sop_class)

    def safe(uid: str | None) -> str | None:
        return uid if is_valid_uid(uid) else None

    try:
        ctx.audit.instance(
            association_id=state.audit_id, study_uid=safe(h.study_uid),
            series_uid=safe(h.series_uid), sop_uid=safe(h.sop_uid),
            sop_class_uid=safe(h.sop_class_uid or sop_class), transfer_syntax=ts, size=size,
            digest=None, status="rejected", reason=reason, calling_ae=state.calling_ae,
            modality=h.modality, body_part=h.body_part, accession=h.accession,
            patient_id=h.patient_id,
        )
    except AuditUnavailable:
        status = Status.OUT_OF_RESOURCES
    ctx.metrics.instances_rejected.labels(reason=reason).inc()
    log.warning("instance refused", extra={"reason": reason, "status": f"0x{int(status):04X}",
                                           "calling_ae": state.calling_ae})
    return status


def handle_store(event: Any, ctx: NodeContext) -> int:
    """EVT_C_STORE: keep one instance durably, then answer.

    The data set is never decoded beyond its header. The file is fsynced into the spool and
    recorded in the audit store before Success is returned.

    Returns
    -------
    int
        A :class:`~dicom_node.status.Status`:

        * ``SUCCESS`` (0x0000): stored, overwritten, or a duplicate kept per ``resend_policy``.
        * ``DUPLICATE_REFUSED`` (0x0111): already held and ``resend_policy = "reject"``.
        * ``OUT_OF_RESOURCES`` (0xA700): disk above ``spool_max_fill_percent``, disk error, or
          the audit store is unavailable (the spooled file is removed again).
        * ``INFLATE_LIMIT`` (0xA701): a Deflated data set inflates beyond ``inflate_max_bytes``
          or ``inflate_max_ratio``.
        * ``DATASET_MISMATCH`` (0xA900): SOP Class differs from the presentation context or the
          request's Affected SOP Class.
        * ``CANNOT_UNDERSTAND`` (0xC000): unparseable data set.
        * ``MISSING_UID`` (0xC001), ``INVALID_UID`` (0xC002), ``INSTANCE_MISMATCH`` (0xC003).

        Unexpected exceptions escape to pynetdicom, which answers 0xC211.
    """
    t0 = time.perf_counter()
    state = ctx.state(event.assoc)
    req = event.request
    ts = str(event.context.transfer_syntax)
    cx_class = str(event.context.abstract_syntax)
    rq_class = str(req.AffectedSOPClassUID)
    rq_sop = str(req.AffectedSOPInstanceUID)

    if ctx.spool.fill_percent() > ctx.settings.spool_max_fill_percent:
        return int(_refuse(ctx, state, Status.OUT_OF_RESOURCES, "disk-full", ts=ts, size=0,
                           sop_class=rq_class))
    try:
        got = receive(event, ctx.spool, state.calling_ae, chunked=ctx.chunked)
    except (OSError, ValueError) as exc:
        log.error("received data set could not be held: %s", exc)
        return int(_refuse(ctx, state, Status.OUT_OF_RESOURCES, "disk-error", ts=ts, size=0,
                           sop_class=rq_class))
    status, _, _ = keep_instance(ctx, state, got, ts, cx_class, rq_class, rq_sop, t0=t0)
    return int(status)


_KEPT = ("stored", "overwritten", "duplicate-ignored")


def keep_instance(
    ctx: NodeContext, state: _AssocState, got: Received, ts: str, cx_class: str, rq_class: str,
    rq_sop: str, *, t0: float | None = None,
) -> tuple[Status, str, InstanceHeader | None]:
    """Check, persist and audit one received instance (C-STORE or STOW-RS), then tell the
    assembler; ``got`` is consumed (kept by rename, or deleted).

    ``cx_class``/``rq_class``/``rq_sop`` are what the transport claimed (presentation context
    and request for C-STORE; the File Meta Information for STOW-RS); the data set must agree.

    Returns
    -------
    (status, outcome, header)
        ``outcome`` is ``stored``, ``overwritten``, ``duplicate-ignored`` or ``refused``; the
        statuses are those listed in :func:`handle_store`.
    """
    t0 = time.perf_counter() if t0 is None else t0
    size = got.dataset_size
    # Start the slow, disk-bound work now, while the header is parsed and checked.
    early = EarlyPersist(ctx.pool, ctx.spool, got)
    try:
        status, kept, header = _check_and_keep(ctx, state, got, early, ts, cx_class, rq_class,
                                               rq_sop)
    finally:
        early.finish()
        got.discard()  # a kept file was renamed away already; anything else goes
    if kept not in _KEPT:
        return status, "refused", None
    assert header is not None
    state.instances += 1
    ctx.metrics.bytes_received.inc(size)
    ctx.metrics.store_latency.observe(time.perf_counter() - t0)
    try:
        ctx.on_instance(header, kept == "stored")
    except Exception:  # the instance is durable already; the assembler re-reads the spool
        log.exception("study assembler failed to take an instance; recovered at next start")
    log.debug("instance kept", extra={"study_uid": header.study_uid, "sop_uid": header.sop_uid,
                                      "outcome": kept})
    return status, kept, header


def _check_and_keep(
    ctx: NodeContext, state: _AssocState, got: Received, early: EarlyPersist, ts: str,
    cx_class: str, rq_class: str, rq_sop: str,
) -> tuple[Status, str, InstanceHeader | None]:
    size = got.dataset_size
    try:
        header = parse_header(got.data, ts, inflate_limit=(ctx.settings.inflate_max_bytes,
                                                           ctx.settings.inflate_max_ratio))
    except InflateLimitExceeded as exc:
        log.warning("deflated data set refused: %s", exc)
        return _refuse(ctx, state, Status.INFLATE_LIMIT, "inflate-limit", ts=ts, size=size,
                       sop_class=rq_class), "refused", None
    except UnparseableDataset:
        return _refuse(ctx, state, Status.CANNOT_UNDERSTAND, "unparseable", ts=ts, size=size,
                       sop_class=rq_class), "refused", None
    uids = (header.study_uid, header.series_uid, header.sop_uid, header.sop_class_uid)
    if not all(uids):
        return _refuse(ctx, state, Status.MISSING_UID, "missing-uid", ts=ts, size=size,
                       header=header, sop_class=rq_class), "refused", None
    if not all(is_valid_uid(u) for u in uids):
        return _refuse(ctx, state, Status.INVALID_UID, "invalid-uid", ts=ts, size=size,
                       header=header, sop_class=rq_class), "refused", None
    if header.sop_class_uid != cx_class or header.sop_class_uid != rq_class:
        return _refuse(ctx, state, Status.DATASET_MISMATCH, "sop-class-mismatch", ts=ts,
                       size=size, header=header), "refused", None
    if header.sop_uid != rq_sop:
        return _refuse(ctx, state, Status.INSTANCE_MISMATCH, "sop-instance-mismatch", ts=ts,
                       size=size, header=header), "refused", None
    status, kept = _keep(ctx, state, header, got, early, ts)
    return status, kept, header


def _keep(
    ctx: NodeContext, state: _AssocState, header: InstanceHeader, got: Received,
    early: EarlyPersist, ts: str,
) -> tuple[Status, str]:
    """Apply the resend policy, persist and audit; undo whichever side fails.

    The file's fsync and digest started when the data set arrived (:class:`EarlyPersist`); the
    rename and directory fsync run on that pool thread while this one writes the audit row: all
    are waits on the disk, and the peer's next instance waits on their sum otherwise. Success
    needs both the file and the row.
    """
    spool = ctx.spool
    study, sop = str(header.study_uid), str(header.sop_uid)
    policy = ctx.settings.resend_policy

    def audit(status: str, reason: str | None, digest: str | None) -> None:
        ctx.audit.instance(
            association_id=state.audit_id, study_uid=study, series_uid=header.series_uid,
            sop_uid=sop, sop_class_uid=header.sop_class_uid, transfer_syntax=ts,
            size=got.size, digest=digest, status=status, reason=reason,
            calling_ae=state.calling_ae, patient_id=header.patient_id,
            accession=header.accession, modality=header.modality, body_part=header.body_part,
        )

    with spool.lock_for(sop):
        final = spool.path_for(study, sop)
        exists = final.exists()
        if exists and (policy == "keep-first" or (
                policy == "overwrite-if-different" and sha256_file(final) == early.digest())):
            early.abandon()
            try:
                audit("duplicate-ignored", "duplicate", early.digest())
            except AuditUnavailable:
                ctx.metrics.instances_rejected.labels(reason="audit-unavailable").inc()
                return Status.OUT_OF_RESOURCES, "refused"
            ctx.metrics.instances_received.labels(status="duplicate-ignored").inc()
            return Status.SUCCESS, "duplicate-ignored"
        if exists and policy == "reject":
            early.abandon()
            return _refuse(ctx, state, Status.DUPLICATE_REFUSED, "duplicate", ts=ts,
                           size=got.dataset_size, header=header), "refused"
        backup = spool.backup(final) if exists else None
        outcome = "overwritten" if exists else "stored"
        early.place(study, sop)
        audit_error: AuditUnavailable | None = None
        try:
            audit(outcome, "re-sent, content replaced" if exists else None, early.digest())
        except AuditUnavailable as exc:
            audit_error = exc
        try:
            early.result()
        except SpoolError as exc:
            log.error("spool write failed: %s", exc)
            if backup is not None:
                spool.restore(backup, final)
            if audit_error is None:  # the row says we hold it: record that we do not
                try:
                    audit("rejected", "disk-error", None)
                except AuditUnavailable:
                    log.error("audit store unavailable: disk-error of %s not recorded", sop)
            ctx.metrics.instances_rejected.labels(reason="disk-error").inc()
            return Status.OUT_OF_RESOURCES, "refused"
        if audit_error is not None:
            # What cannot be recorded is not kept: undo, answer Out of Resources (peer retries).
            if backup is not None:
                spool.restore(backup, final)
            else:
                spool.remove(final)
            ctx.metrics.instances_rejected.labels(reason="audit-unavailable").inc()
            log.error("audit store unavailable: instance refused with Out of Resources")
            return Status.OUT_OF_RESOURCES, "refused"
        if backup is not None:
            backup.unlink(missing_ok=True)
        ctx.metrics.instances_received.labels(status=outcome).inc()
        return Status.SUCCESS, outcome


class EarlyPersist:
    """fsync and SHA-256 of a received file, started at once on the pool; the rename into the
    spool happens only after :meth:`place` (validation passed), never after :meth:`abandon`.

    The pool must be large enough that these jobs never queue behind each other (two per
    concurrent C-STORE; see ``Node``), because the persist job waits for the decision.
    """

    def __init__(self, pool: ThreadPoolExecutor, spool: Spool, got: Received) -> None:
        self._spool, self._got = spool, got
        self._go = threading.Event()
        self._target: tuple[str, str] | None = None
        self._digest = pool.submit(got.digest)
        self._persist = pool.submit(self._run)

    def _run(self) -> Path | None:
        self._spool.sync_file(self._got.path)
        self._go.wait()
        if self._target is None:
            return None
        return self._spool.place(self._got.path, *self._target)

    def place(self, study_uid: str, sop_uid: str) -> None:
        self._target = (study_uid, sop_uid)
        self._go.set()

    def abandon(self) -> None:
        self._go.set()

    def digest(self) -> str:
        return str(self._digest.result())

    def result(self) -> Path | None:
        """Wait for the persist job; raises its :class:`SpoolError`."""
        return self._persist.result()

    def finish(self) -> None:
        """Abandon if undecided and wait for both jobs (before the file is closed/deleted)."""
        self._go.set()
        for job in (self._digest, self._persist):
            try:
                job.result()
            except Exception:  # already reported where it mattered (result()/digest())
                pass
