"""DICOMweb STOW-RS receive (PS3.18 10.5): the HTTP door of the DICOM node, next to C-STORE.

``POST /dicom-web/studies`` and ``POST /dicom-web/studies/{StudyInstanceUID}`` take
``multipart/related; type="application/dicom"``, each part one DICOM file (PS3.10: preamble,
``DICM``, File Meta Information, data set). Every part goes through exactly the C-STORE path
(:func:`dicom_node.handlers.keep_instance`): UID checks, the resend policy, fsync into the spool
and the audit row before the answer, then routing and study assembly. The request is recorded
as an ``associations`` audit row whose calling AE is the token's name.

Answers (PS3.18 10.5.3, body ``application/dicom+json`` with Referenced SOP Sequence
(0008,1199) and Failed SOP Sequence (0008,1198), Failure Reason (0008,1197) = the C-STORE
status the instance would have had):

Instances of SOP classes or transfer syntaxes the C-STORE side does not accept are refused
(0x0122, 0xC122), like a C-STORE without an accepted presentation context.

=====  ==============================================================================
200    every instance stored (or kept as a duplicate by the resend policy)
202    some stored, some refused
409    none stored (each refusal in the Failed SOP Sequence)
400    the body is not a multipart/related message, or has no part
401    no or unknown bearer token; 403: the token's role is not ``sender`` or ``admin``
413    the request is larger than ``stow_max_request_bytes``
415    not ``multipart/related; type="application/dicom"`` (or a part of another type)
503    the audit store is unavailable or the spool is above ``spool_max_fill_percent``
=====  ==============================================================================
"""

# No ``from __future__ import annotations``: FastAPI reads endpoint signatures at run time.
import logging
import mmap
import struct
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from audit import AuditUnavailable
from audit.auth import TokenTable
from dicom_node.handlers import AssocState, keep_instance
from dicom_node.receive import Received, file_meta_bytes
from dicom_node.status import Status
from eusdx.uids import is_valid_uid

if TYPE_CHECKING:
    from dicom_node.app import Node  # for the type only: the router needs no import of the app

__all__ = ["stow_router", "STOW_ROLES", "meta_of"]

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
#: Token roles that may store.
STOW_ROLES = ("sender", "admin")
_META_TAGS = {0x00020002: "sop_class", 0x00020003: "sop_uid", 0x00020010: "ts"}
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
             b"UV"}


class BadPart(ValueError):
    """A part is not a DICOM file with File Meta Information."""


def meta_of(head: bytes) -> tuple[int, int, dict[str, str]]:
    """Where the File Meta Information and the data set start, and the meta values (SOP class,
    SOP instance, transfer syntax) of a part whose first bytes are ``head``.

    A PS3.10 file has a 128-byte preamble and ``DICM``; some clients (dicomweb-client among
    them) send the meta group without the preamble, or without ``DICM`` too: both are taken.
    Group 0002 is always Explicit VR Little Endian (PS3.10 7.1).

    Returns
    -------
    (meta_start, dataset_start, values)

    Raises
    ------
    BadPart
        No File Meta Information, it is cut short, or it lacks one of the three values.
    """
    if len(head) >= 132 and head[128:132] == b"DICM":
        start = 132
    elif head[:4] == b"DICM":
        start = 4
    elif head[:2] == b"\x02\x00":
        start = 0
    else:
        raise BadPart("not a DICOM file (no File Meta Information)")
    pos, values = start, {}
    while pos + 8 <= len(head):
        group, elem = struct.unpack_from("<HH", head, pos)
        if group != 0x0002:
            break
        vr = head[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(head):
                raise BadPart("File Meta Information is cut short")
            (length,) = struct.unpack_from("<L", head, pos + 8)
            begin = pos + 12
        else:
            (length,) = struct.unpack_from("<H", head, pos + 6)
            begin = pos + 8
        if begin + length > len(head):
            raise BadPart("File Meta Information is cut short")
        name = _META_TAGS.get((group << 16) | elem)
        if name:
            values[name] = head[begin:begin + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos = begin + length
    missing = [n for n in ("sop_class", "sop_uid", "ts") if n not in values]
    if missing:
        raise BadPart(f"File Meta Information lacks {', '.join(missing)}")
    return start, pos, values


class _Parts:
    """python-multipart callbacks writing each part to a spool temp file."""

    def __init__(self, spool: Any) -> None:
        self.spool = spool
        self.parts: list[tuple[Any, str]] = []  # (TempFile, content type)
        self._current: Any = None
        self._field = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._begin, "on_part_data": self._data, "on_part_end": self._end,
            "on_header_field": self._hfield, "on_header_value": self._hvalue,
            "on_header_end": self._hend,
        }

    def _begin(self) -> None:
        self._headers = {}
        self._current = self.spool.new_temp()

    def _hfield(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _hvalue(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _hend(self) -> None:
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field = self._value = b""

    def _data(self, data: bytes, start: int, end: int) -> None:
        self._current.write(data[start:end])

    def _end(self) -> None:
        ctype = self._headers.get(b"content-type", b"application/dicom").decode("latin-1")
        self._current.close()
        self.parts.append((self._current, ctype.split(";")[0].strip().lower()))
        self._current = None

    def discard(self) -> None:
        if self._current is not None:
            self._current.discard()
        for temp, _ in self.parts:
            temp.discard()


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"type": "about:blank", "status": status, "detail": detail},
                        status_code=status, media_type="application/problem+json",
                        headers=headers)


def _received(spool: Any, temp: Any, who: str) -> tuple[Received, dict[str, str]]:
    """The part as a :class:`Received`: kept as it came when it is a PS3.10 file; otherwise its
    data set is copied behind our own preamble and File Meta Information (as for C-STORE)."""
    with open(temp.path, "rb") as fh:
        head = fh.read(64 * 1024)
        meta_start, offset, meta = meta_of(head)
        if temp.size <= offset:
            raise BadPart("the part holds File Meta Information but no data set")
        if meta_start == 132:
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            return Received(path=temp.path, size=temp.size, dataset_size=temp.size - offset,
                            owned=True, _map=mapped, _offset=offset), meta
        header = file_meta_bytes(meta["sop_class"], meta["sop_uid"], meta["ts"], who)
        fixed = spool.new_temp()
        try:
            fixed.write(header)
            fh.seek(offset)
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                fixed.write(chunk)
            fixed.close()
        except OSError:
            fixed.discard()
            raise
    temp.discard()
    with open(fixed.path, "rb") as fh:
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    return Received(path=fixed.path, size=fixed.size, dataset_size=fixed.size - len(header),
                    owned=True, _map=mapped, _offset=len(header)), meta


def _unsupported(meta: dict[str, str]) -> int | None:
    """The Failure Reason for a SOP class or transfer syntax the C-STORE side would not accept
    either (PS3.18 10.5.3: 0x0122 SOP class not supported, 0xC122 transfer syntax not
    supported), else ``None``."""
    from dicom_node.app import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES

    if meta["sop_class"] not in STORAGE_SOP_CLASSES:
        return 0x0122
    if meta["ts"] not in TRANSFER_SYNTAXES:
        return 0xC122
    return None


def _ref(sop_class: str, sop_uid: str, reason: int | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"00081150": {"vr": "UI"}, "00081155": {"vr": "UI"}}
    if sop_class:
        item["00081150"]["Value"] = [sop_class]
    if sop_uid:
        item["00081155"]["Value"] = [sop_uid]
    if reason is not None:
        item["00081197"] = {"vr": "US", "Value": [int(reason)]}
    return item


def _store_parts(node: "Node", parts: list[tuple[Any, str]], study: str | None, who: str,
                 host: str, port: int, tls: bool) -> tuple[int, dict[str, Any]]:
    ctx = node.context
    audit_id = ctx.audit.association(peer_ae=who[:16], peer_host=host, peer_port=port,
                                     called_ae=node.settings.ae_title, tls=tls, accepted=True,
                                     reason="stow-rs")
    state = AssocState(audit_id=audit_id, calling_ae=who[:16])
    stored: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    try:
        for temp, ctype in parts:
            if ctype != "application/dicom":
                temp.discard()
                failed.append(_ref("", "", int(Status.CANNOT_UNDERSTAND)))
                continue
            try:
                got, meta = _received(ctx.spool, temp, who[:16])
            except (BadPart, OSError) as exc:
                log.warning("STOW-RS part refused: %s", exc)
                temp.discard()
                failed.append(_ref("", "", int(Status.CANNOT_UNDERSTAND)))
                continue
            refused = _unsupported(meta)
            if refused is not None:
                got.discard()
                failed.append(_ref(meta["sop_class"], meta["sop_uid"], refused))
                continue
            if study is not None:
                from dicom_node.header import UnparseableDataset, parse_header

                try:
                    header_study = parse_header(got.data, meta["ts"]).study_uid
                except UnparseableDataset:
                    header_study = None
                if header_study is not None and header_study != study:
                    got.discard()
                    failed.append(_ref(meta["sop_class"], meta["sop_uid"],
                                       int(Status.DATASET_MISMATCH)))
                    continue
            status, kept, _ = keep_instance(ctx, state, got, meta["ts"], meta["sop_class"],
                                            meta["sop_class"], meta["sop_uid"])
            if kept == "refused":
                failed.append(_ref(meta["sop_class"], meta["sop_uid"], int(status)))
            else:
                stored.append(_ref(meta["sop_class"], meta["sop_uid"]))
    finally:
        try:
            ctx.audit.association_closed(association_id=audit_id, instances=state.instances,
                                         reason="stow-rs request answered")
        except AuditUnavailable:
            log.error("audit store unavailable: end of STOW-RS request not recorded")
    body: dict[str, Any] = {}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": stored}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    code = 200 if not failed else 202 if stored else 409
    return code, body


def stow_router(node: "Node") -> APIRouter:
    """STOW-RS routes for one :class:`~dicom_node.app.Node` (mounted by ``node_router``)."""
    router = APIRouter()
    tokens = TokenTable(node.settings.api_tokens)
    limit = int(node.settings.stow_max_request_bytes)

    async def store(request: Request, study: str | None) -> JSONResponse:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        principal = tokens.match(token.strip()) if scheme.lower() == "bearer" and token else None
        if principal is None:
            return _problem(401, "a valid bearer token is required",
                            {"WWW-Authenticate": 'Bearer realm="eusdx"'})
        if principal.role not in STOW_ROLES:
            return _problem(403, f"role {principal.role!r} may not store (needs one of "
                                 f"{', '.join(STOW_ROLES)})")
        if study is not None and not is_valid_uid(study):
            return _problem(400, "the StudyInstanceUID in the path is not a valid UID")
        ctype, options = parse_options_header(request.headers.get("content-type", ""))
        boundary = options.get(b"boundary")
        part_type = options.get(b"type", b"application/dicom").decode("latin-1").lower()
        if ctype != b"multipart/related" or part_type != "application/dicom":
            return _problem(415, 'only multipart/related; type="application/dicom" is accepted')
        if not boundary:
            return _problem(400, "the multipart/related content type has no boundary")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _problem(413, f"request larger than {limit} bytes")
        if node.context.spool.fill_percent() > node.settings.spool_max_fill_percent:
            return _problem(503, "spool disk is full", {"Retry-After": "60"})
        parts = _Parts(node.context.spool)
        # python-multipart types the callbacks as its TypedDict; ours is a plain dict with those keys
        parser = MultipartParser(boundary, parts.callbacks())  # type: ignore[arg-type]
        seen = 0
        try:
            async for chunk in request.stream():
                seen += len(chunk)
                if seen > limit:
                    parts.discard()
                    return _problem(413, f"request larger than {limit} bytes")
                await run_in_threadpool(parser.write, chunk)
            parser.finalize()
        except Exception as exc:  # python-multipart raises its own parse errors
            parts.discard()
            log.warning("STOW-RS body refused: %s", type(exc).__name__)
            return _problem(400, "the body is not a valid multipart/related message")
        if not parts.parts:
            return _problem(400, "the multipart/related message has no part")
        client = request.client
        try:
            code, body = await run_in_threadpool(
                _store_parts, node, parts.parts, study, principal.name,
                client.host if client else "?", client.port if client else 0,
                request.url.scheme == "https")
        except AuditUnavailable:
            parts.discard()
            return _problem(503, "audit store unavailable; nothing was kept", {"Retry-After": "30"})
        return JSONResponse(body, status_code=code, media_type=DICOM_JSON)

    @router.post("/dicom-web/studies", include_in_schema=True,
                 summary="STOW-RS: store instances (PS3.18 10.5)")
    async def store_any(request: Request) -> JSONResponse:
        return await store(request, None)

    @router.post("/dicom-web/studies/{study_uid}",
                 summary="STOW-RS: store instances of one study (PS3.18 10.5)")
    async def store_study(request: Request, study_uid: str) -> JSONResponse:
        return await store(request, study_uid)

    return router
