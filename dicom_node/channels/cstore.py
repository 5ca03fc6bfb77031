"""C-STORE SCU channel (kind ``cstore``), and the association and refusal rules that
``cstore-commit`` shares.

Refusals are sorted by what a retry can change (PS3.8 9.3.4 A-ASSOCIATE-RJ; PS3.4 B.2.3 and
PS3.7 C statuses):

* permanent (dead-letter at once): A-ASSOCIATE-RJ with result *rejected-permanent*; no presented
  context accepted (the peer does not support the SOP class, or none of the transfer syntaxes);
  C-STORE failure statuses (0xA900 data set does not match, 0xCxxx cannot understand, 0x0122 SOP
  class not supported, 0x0124 not authorized, ...);
* transient (retried with back-off): no connection, timeouts, aborts, *rejected-transient*,
  0xA7xx Out of Resources and 0x0213 Resource Limitation (a full disk empties).

Success (0x0000) and Warning (0xB000, 0xB006, 0xB007) mean stored (PS3.4 B.2.3).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from dicom_node.channels import Item, Outcome
from dicom_node.channels.sr_class import SR_CLASS_NAMES, convert
from eusdx.config import Destination, Settings
from eusdx.failures import DeliveryError

__all__ = ["CStoreChannel", "associate", "store", "prepare", "is_stored"]

log = logging.getLogger(__name__)

_UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
#: Failure statuses a later attempt may pass (PS3.4 B.2.3, PS3.7 C.5.x).
_TRANSIENT_STATUS = (0x0213,)


def is_stored(code: int) -> bool:
    """Success or Warning: the peer keeps the object (PS3.4 B.2.3)."""
    return code == 0x0000 or (code & 0xF000) == 0xB000


def _status_is_transient(code: int) -> bool:
    return (code & 0xFF00) == 0xA700 or code in _TRANSIENT_STATUS


def _class_name(uid: str) -> str:
    try:
        name = pydicom.uid.UID(uid).name
    except Exception:  # unknown UIDs have no name
        name = uid
    return SR_CLASS_NAMES.get(uid, name if name != uid else f"SOP class {uid}")


def prepare(path: Any, destination: Destination, uid_root: str) -> Dataset:
    """Read the outbox object and convert it to the destination's ``sr_class`` (a converted copy
    gets a UID under ``uid_root``).

    Raises
    ------
    eusdx.failures.DeliveryError
        Permanent: the content does not fit the SR class asked for.
    """
    return convert(pydicom.dcmread(path), destination.sr_class, uid_root)


@contextmanager
def associate(settings: Settings, destination: Destination,
              contexts: list[tuple[str, list[str]]], *,
              extra_supported: list[str] | None = None,
              evt_handlers: list[Any] | None = None) -> Iterator[Any]:
    """An established association to a ``cstore``/``cstore-commit`` destination; released (or
    aborted, if the body raised) on exit.

    Parameters
    ----------
    contexts
        ``(abstract syntax, transfer syntaxes)`` to propose; each must be accepted.
    extra_supported
        SOP classes for which we propose both roles (Storage Commitment: the N-EVENT-REPORT
        may come back on this association, PS3.4 J.3.3).
    evt_handlers
        pynetdicom ``(event, handler[, args])`` tuples bound to the association.

    Raises
    ------
    eusdx.failures.DeliveryError
        Permanent when the peer rejected us permanently or accepted none of a required context;
        transient for connection problems, timeouts, aborts and transient rejections.
    """
    from pynetdicom import AE, build_role

    dest = destination.dicom
    ae = AE(ae_title=settings.ae_title)
    timeout = destination.timeout_seconds
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, syntaxes)
    roles: list[Any] = [build_role(uid, scu_role=True, scp_role=True)
                        for uid in (extra_supported or [])]
    tls_args = None
    if destination.tls:
        from dicom_node.tls import client_context

        tls_args = (client_context(settings), dest.host)
    where = f"{dest.ae_title}@{dest.host}:{dest.port}"
    try:
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, tls_args=tls_args,
                             ext_neg=roles or None, evt_handlers=evt_handlers or None)
    except Exception as exc:  # socket and TLS errors surface from inside pynetdicom
        raise DeliveryError(f"cannot associate with {where}: {exc}") from exc
    if assoc.is_rejected:
        rsp = assoc.acceptor.primitive
        permanent = getattr(rsp, "result", None) == 0x01
        raise DeliveryError(
            f"{where} rejected the association ({getattr(rsp, 'result_str', '?')}, "
            f"{getattr(rsp, 'source_str', '?')}: {getattr(rsp, 'reason_str', '?')})",
            permanent=permanent)
    refused = {str(cx.abstract_syntax): cx.status for cx in assoc.rejected_contexts}
    missing = [a for a, _ in contexts if a in refused]
    if missing:
        if assoc.is_established:
            assoc.release()
        what = "; ".join(f"{_class_name(a)} ({a}): {refused[a].lower()}" for a in missing)
        raise DeliveryError(f"{where} accepted no presentation context for {what}",
                            permanent=True)
    if not assoc.is_established:
        if getattr(assoc.acceptor, "primitive", None) is None:
            raise DeliveryError(f"cannot associate with {where}: no connection, or no answer to "
                                "the association request")
        raise DeliveryError(f"the association with {where} was aborted")
    try:
        yield assoc
    except BaseException:
        assoc.abort()
        raise
    else:
        if assoc.is_established:
            assoc.release()


def syntaxes_for(ds: Dataset) -> list[str]:
    """The file's own transfer syntax, plus the uncompressed ones when it is uncompressed."""
    ts = str(ds.file_meta.TransferSyntaxUID)
    return [ts] + [t for t in _UNCOMPRESSED if t != ts] if ts in _UNCOMPRESSED else [ts]


def store(assoc: Any, ds: Dataset, where: str) -> int:
    """One C-STORE on an established association; returns the status code when stored.

    Raises
    ------
    eusdx.failures.DeliveryError
        No response (transient) or a failure status (permanent unless Out of Resources or
        Resource Limitation); the reason names the status and the peer's Error Comment.
    """
    try:
        rsp = assoc.send_c_store(ds)
    except Exception as exc:
        raise DeliveryError(f"C-STORE to {where} failed: {exc}") from exc
    if rsp is None or "Status" not in rsp:
        raise DeliveryError(f"no C-STORE response from {where} (timeout or abort)")
    code = int(rsp.Status)
    if is_stored(code):
        return code
    comment = str(rsp.get("ErrorComment", "") or "").strip()
    note = f" ({comment})" if comment else ""
    raise DeliveryError(
        f"{where} refused {_class_name(str(ds.SOPClassUID))} with status 0x{code:04X}{note}",
        permanent=not _status_is_transient(code))


class CStoreChannel:
    """Kind ``cstore``: one association and one C-STORE per attempt."""

    def __init__(self, settings: Settings, destination: Destination) -> None:
        self.settings = settings
        self.destination = destination

    def deliver(self, item: Item) -> Outcome:
        ds = prepare(item.object_path, self.destination, self.settings.uid_root)
        where = str(self.destination.dicom)
        with associate(self.settings, self.destination,
                       [(str(ds.SOPClassUID), syntaxes_for(ds))]) as assoc:
            code = store(assoc, ds, where)
        detail = None if code == 0 else f"stored with warning 0x{code:04X}"
        return Outcome("sent", detail, {"sent_sop_uid": str(ds.SOPInstanceUID)})

    def poll(self, item: Item, now: float) -> Outcome | None:
        raise DeliveryError("a cstore destination never waits for a commitment", permanent=True)
