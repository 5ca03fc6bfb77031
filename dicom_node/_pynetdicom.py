"""Every use of pynetdicom beyond its public API, in one place (pynetdicom 3.0).

Each function says which internal it touches and why; when pynetdicom changes, only this module
changes. Nothing here runs at import time.

* :func:`reject`: ``assoc.acse.send_reject`` + ``assoc.kill`` from an EVT_REQUESTED handler, the
  sequence pynetdicom's own acceptor uses (there is no public "reject with this reason").
* :func:`set_chunked_receive`: ``_config.STORE_RECV_CHUNKED_DATASET`` (process-wide switch).
* :func:`receive_chunks_into`: the temporary file of a chunked C-STORE is created by
  ``pynetdicom.dimse_messages`` with ``NamedTemporaryFile()`` and no directory; that module's
  ``NamedTemporaryFile`` is replaced by one that puts the file into the directory registered for
  the association's AE (the spool's ``.tmp``), so Python's process-wide ``tempfile.tempdir`` is
  never changed (torch and pyradiomics temporaries stay in the system temp folder).
* :func:`send_chunked`: ``_config.STORE_SEND_CHUNKED_DATASET`` for a block (test peers that send
  a file's bytes verbatim).
* :func:`attach_server`: ``AE._servers``, so that ``AE.shutdown`` knows a server made with
  ``make_server`` (as ``start_server(block=False)`` would have registered it).
* :func:`read_blank_calling_ae`: pynetdicom refuses to decode an A-ASSOCIATE-RQ whose Calling AE
  Title is all spaces and answers with an A-ABORT; PS3.8 wants an A-ASSOCIATE-RJ (rejected-permanent,
  service-user, calling AE title not recognised). ``pdu.A_ASSOCIATE_RQ`` is changed to decode it
  with an empty title instead, so that the EVT_REQUESTED handler can reject and audit it.
* :func:`register_storage`: ``pynetdicom.sop_class.register_uid`` for stored classes pynetdicom
  does not list (the retired US classes), so their C-STOREs reach our handler.
* :func:`copy_contexts_cheaply`: ``AssociationServer.contexts``. pynetdicom's request handler gives
  every new association ``deepcopy(server.contexts)``; a deep copy rebuilds every UID through
  ``pydicom.uid.UID.__new__``, which validates it with a regular expression: 26 ms of GIL-held CPU
  per association for the node's 172 Storage classes x 15 transfer syntaxes (measured 2026-12-01).
  The list is replaced by one whose deep copy copies each context's own state (its transfer-syntax
  list included) but shares the immutable UID strings.
* :func:`admit_unknown_storage`: adds supported contexts for private / unknown Storage classes the
  peer proposes (``assoc.acceptor.supported_contexts`` before negotiation) and registers those UIDs
  with the Storage service (``pynetdicom.sop_class.register_uid``), so C-STOREs of them reach
  our handler.
"""

from __future__ import annotations

import copy
import logging
import re
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["PYNETDICOM_TESTED", "admit_unknown_storage", "attach_server", "copy_contexts_cheaply",
           "read_blank_calling_ae",
           "receive_chunks_into", "register_storage", "reject", "send_chunked", "set_chunked_receive"]

#: The pynetdicom versions this module was written against and tested with (pyproject.toml pins
#: the same range); tests/dicom_node/test_pynetdicom_compat.py checks the installed one.
PYNETDICOM_TESTED = (">=3.0.4", "<3.1")

log = logging.getLogger(__name__)

_lock = threading.Lock()
_registered: set[str] = set()
_chunk_dirs: weakref.WeakKeyDictionary[Any, Path] = weakref.WeakKeyDictionary()


def reject(assoc: Any, rsd: tuple[int, int, int]) -> None:
    """Send A-ASSOCIATE-RJ ``(result, source, diagnostic)`` and end the association thread.

    Same sequence as pynetdicom's own acceptor rejection: send the RJ, then wait for the peer to
    close (the DUL returns to Sta1) before the association thread ends.
    """
    assoc.acse.send_reject(*rsd)
    assoc.kill()


def set_chunked_receive(enabled: bool) -> None:
    """pynetdicom writes incoming C-STORE data sets to a temp file while they arrive."""
    from pynetdicom import _config

    _config.STORE_RECV_CHUNKED_DATASET = bool(enabled)


def receive_chunks_into(ae: Any, directory: Path | None) -> None:
    """Chunked C-STOREs received by ``ae`` are written into ``directory`` (``None``: forget ``ae``).

    pynetdicom creates the file in the DUL thread of the association (``fsm`` -> ``DIMSE`` ->
    ``decode_msg``); that thread's public ``assoc`` names the association and so its AE. An
    association of an AE that registered nothing gets pynetdicom's default (the system temp folder).
    Installed once per process (idempotent).
    """
    from pynetdicom import dimse_messages

    with _lock:
        if directory is None:
            _chunk_dirs.pop(ae, None)
        else:
            _chunk_dirs[ae] = Path(directory)
        if not getattr(dimse_messages, "_eusdx_chunk_dirs", False):
            setattr(dimse_messages, "NamedTemporaryFile", _named_temporary_file)
            setattr(dimse_messages, "_eusdx_chunk_dirs", True)


def _named_temporary_file(*args: Any, **kwargs: Any) -> IO[bytes]:
    if kwargs.get("dir") is None:
        assoc = getattr(threading.current_thread(), "assoc", None)
        ae = getattr(assoc, "ae", None)
        with _lock:
            directory = _chunk_dirs.get(ae) if ae is not None else None
        if directory is not None:
            kwargs["dir"] = str(directory)
    return tempfile.NamedTemporaryFile(*args, **kwargs)


@contextmanager
def send_chunked(enabled: bool = True) -> Iterator[None]:
    """Within the block, pynetdicom sends a C-STORE from a file path as the file's bytes, verbatim
    (``_config.STORE_SEND_CHUNKED_DATASET``; process-wide, restored afterwards)."""
    from pynetdicom import _config

    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = bool(enabled)
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old


def attach_server(ae: Any, server: Any) -> None:
    """Register a server from ``ae.make_server`` with its AE (for ``ae.shutdown``)."""
    ae._servers.append(server)


class _ContextList(list[Any]):  # pynetdicom's PresentationContext objects
    """A list of presentation contexts whose deep copy shares the (immutable) UIDs."""

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        out = []
        for cx in self:
            twin = copy.copy(cx)  # every attribute but the transfer syntaxes is an int, bool, None or UID
            twin._transfer_syntax = list(cx._transfer_syntax)
            out.append(twin)
        return out


def copy_contexts_cheaply(server: Any) -> None:
    """Make the per-association copy of ``server.contexts`` cheap (see the module docstring).

    Each association still gets its own context objects and its own transfer-syntax lists
    (negotiation writes ``result``, roles and context IDs into them); only the UID strings, which
    nothing changes, are shared.
    """
    server.contexts = _ContextList(server.contexts)


def read_blank_calling_ae() -> None:
    """Decode A-ASSOCIATE-RQ PDUs whose Calling AE Title is all spaces, as an empty title.

    ``pynetdicom.pdu.A_ASSOCIATE_RQ`` gets a tolerant ``calling_ae_title`` setter and a
    ``to_primitive`` that carries the empty title into the A-ASSOCIATE primitive (the class itself
    is changed, not subclassed: pynetdicom dispatches on the exact PDU type). Installed once per
    process (idempotent); every other field, every non-blank title and every other PDU type is
    handled by pynetdicom unchanged.
    """
    from pynetdicom.pdu import A_ASSOCIATE_RQ

    with _lock:
        if getattr(A_ASSOCIATE_RQ, "_eusdx_blank_calling_ae", False):
            return
        original: property = vars(A_ASSOCIATE_RQ)["calling_ae_title"]
        original_set = original.fset
        if original_set is None:  # not the pynetdicom this was written for (3.x): leave it alone
            raise RuntimeError("pynetdicom A_ASSOCIATE_RQ.calling_ae_title has no setter to wrap")
        original_to_primitive = A_ASSOCIATE_RQ.to_primitive

        def set_calling(self: Any, value: Any) -> None:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
            if isinstance(text, str) and not text.strip():
                self._calling_aet = ""
                return
            original_set(self, value)

        def to_primitive(self: Any) -> Any:
            if self._calling_aet:
                return original_to_primitive(self)
            self._calling_aet = "BLANK"  # a placeholder the primitive's validation accepts ...
            try:
                primitive = original_to_primitive(self)
            finally:
                self._calling_aet = ""
            primitive._calling_ae_title = ""  # ... replaced by what was received
            return primitive

        # setattr: the class is patched in place (see above), which a static type cannot express
        setattr(A_ASSOCIATE_RQ, "calling_ae_title", property(original.fget, set_calling, doc=original.__doc__))
        setattr(A_ASSOCIATE_RQ, "to_primitive", to_primitive)
        setattr(A_ASSOCIATE_RQ, "_eusdx_blank_calling_ae", True)


def register_storage(uids: Iterable[str]) -> None:
    """Make pynetdicom dispatch C-STOREs of ``uids`` to the Storage service (and so to our
    EVT_C_STORE handler): needed for classes it does not list, such as the retired Ultrasound
    Image Storage classes (1.2.840.10008.5.1.4.1.1.6 and .3), which vendors still send."""
    from pynetdicom.service_class import StorageServiceClass
    from pynetdicom.sop_class import register_uid, uid_to_service_class

    for uid in uids:
        with _lock:
            if uid in _registered or uid_to_service_class(uid) is StorageServiceClass:
                continue
            register_uid(uid, _keyword(uid), StorageServiceClass)
            _registered.add(uid)


def _keyword(uid: str) -> str:
    return "EusdxUnknownStorage_" + re.sub(r"[^0-9]", "_", uid)


def admit_unknown_storage(assoc: Any, transfer_syntaxes: Iterable[str],
                          wanted: Callable[[str], bool]) -> list[str]:
    """Support, for this association only, the proposed abstract syntaxes ``wanted`` says yes to.

    Must be called from EVT_REQUESTED (before negotiation). Returns the UIDs added.
    """
    from pynetdicom.presentation import PresentationContext

    supported = list(assoc.acceptor.supported_contexts)
    have = {str(cx.abstract_syntax) for cx in supported}
    added: list[str] = []
    for cx in assoc.requestor.primitive.presentation_context_definition_list or []:
        uid = str(cx.abstract_syntax)
        if uid in have or not wanted(uid):
            continue
        register_storage([uid])
        context = PresentationContext()
        context.abstract_syntax = uid
        context.transfer_syntax = list(transfer_syntaxes)
        supported.append(context)
        have.add(uid)
        added.append(uid)
    if added:
        assoc.acceptor.supported_contexts = supported
    return added
