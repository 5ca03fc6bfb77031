"""Anchors of the audit hash chain outside the database.

The chain (:mod:`audit.chain`) shows an edited, removed or inserted row, but someone with write
access to the database can recompute every later hash and the chain head, and the chain holds
again. An anchor closes that gap: at an interval and at every shutdown the chain head
(``seq``, ``row_hash``) is written to a file outside the database, signed with the
installation's Ed25519 key (RFC 8032, ``cryptography``), and sent to syslog. ``eusdx audit verify``
checks the chain against every anchor: a rewritten row before an anchored ``seq`` no longer hashes
to the anchored value.

Anchor file ``<anchor_dir>/anchor-<seq>-<UTC time>.json``::

    {"format": "eusdx-audit-anchor/1", "seq": 123, "row_hash": "<64 hex>",
     "written": "<UTC ISO time>", "reason": "interval|shutdown|manual",
     "key": "<public key id>", "signature": "<base64 Ed25519 over the other fields>"}

The signing key is created owner-only (``0600``) by ``eusdx db upgrade`` or on first use. What it
does not stop: someone who can also write the anchor directory *and* read the key file, and
whose syslog copies nobody compares; keep the anchor directory and syslog on another system.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import logging.handlers
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select

from audit.chain import canonical_json
from audit.schema import ChainHead
from eusdx.durable import atomic_write_bytes
from eusdx.ed25519 import create_private_key, key_id, load_private_key
from eusdx.errors import ConfigError

__all__ = [
    "ANCHOR_FORMAT",
    "Anchor",
    "AnchorError",
    "anchor_map",
    "installation_anchors",
    "AnchorWriter",
    "create_anchor_key",
    "load_anchor_key",
    "read_anchors",
    "write_anchor",
]

log = logging.getLogger(__name__)

ANCHOR_FORMAT = "eusdx-audit-anchor/1"


class AnchorError(ConfigError):
    """An anchor file that is unreadable, malformed or not signed by the installation key."""


@dataclass(frozen=True)
class Anchor:
    """One verified anchor."""

    seq: int
    row_hash: str
    written: str
    reason: str
    path: Path


def create_anchor_key(path: Path) -> bool:
    """Create the Ed25519 anchor signing key (PKCS#8 PEM, 0600) unless ``path`` exists; return
    whether it was created now."""
    return create_private_key(path) is not None


def load_anchor_key(path: Path) -> Ed25519PrivateKey:
    """Read the anchor signing key.

    Raises
    ------
    AnchorError
        Missing, unreadable or not an Ed25519 private key.
    """
    try:
        return load_private_key(path, "audit anchor key")
    except ConfigError as exc:
        raise AnchorError(str(exc)) from exc


def _body(seq: int, row_hash: str, written: str, reason: str, kid: str) -> dict[str, Any]:
    return {"format": ANCHOR_FORMAT, "seq": seq, "row_hash": row_hash, "written": written,
            "reason": reason, "key": kid}


def write_anchor(engine: Any, anchor_dir: Path, key: Ed25519PrivateKey, *, reason: str,
                 syslog: str = "") -> Anchor:
    """Read the chain head and write a signed anchor file (and a syslog line when ``syslog``).

    Parameters
    ----------
    engine
        SQLAlchemy engine of the audit database.
    anchor_dir
        Folder outside the database (created if missing).
    reason
        ``interval``, ``shutdown`` or ``manual``.
    syslog
        Unix socket path (``/dev/log``) or ``host:port`` (UDP); empty for none.
    """
    with engine.connect() as conn:
        head = conn.execute(select(ChainHead.seq, ChainHead.row_hash).where(ChainHead.id == 1)).one()
    now = dt.datetime.now(dt.UTC)
    written = now.isoformat(timespec="microseconds")
    body = _body(int(head.seq), str(head.row_hash), written, reason, key_id(key.public_key()))
    signature = key.sign(canonical_json(body).encode("utf-8"))
    doc = {**body, "signature": base64.b64encode(signature).decode("ascii")}
    anchor_dir = Path(anchor_dir)
    anchor_dir.mkdir(parents=True, exist_ok=True)
    path = anchor_dir / f"anchor-{int(head.seq):012d}-{now:%Y%m%dT%H%M%S%f}.json"
    atomic_write_bytes(path, (json.dumps(doc, indent=1) + "\n").encode("ascii"))
    if syslog:
        _to_syslog(syslog, doc)
    return Anchor(int(head.seq), str(head.row_hash), written, reason, path)


def _to_syslog(address: str, doc: dict[str, Any]) -> None:
    if address.startswith("/"):
        if not os.path.exists(address):
            log.warning("audit anchor not sent to syslog: %s does not exist", address)
            return
        target: Any = address
    else:
        host, _, port = address.rpartition(":")
        target = (host, int(port))
    try:
        handler = logging.handlers.SysLogHandler(
            address=target, facility=logging.handlers.SysLogHandler.LOG_AUTHPRIV)
    except OSError as exc:
        log.warning("audit anchor not sent to syslog %s: %s", address, exc)
        return
    try:
        record = logging.LogRecord("eusdx.audit.anchor", logging.INFO, __file__, 0,
                                   "eusdx audit anchor seq=%s row_hash=%s key=%s signature=%s",
                                   (doc["seq"], doc["row_hash"], doc["key"], doc["signature"]), None)
        handler.emit(record)
    finally:
        handler.close()


def read_anchors(anchor_dir: Path, public: Ed25519PublicKey) -> list[Anchor]:
    """Every anchor in ``anchor_dir``, signature-checked, in ``seq`` order.

    Raises
    ------
    AnchorError
        An anchor file is malformed or its signature does not verify with ``public`` (someone
        edited or forged it); the message names the file.
    """
    out: list[Anchor] = []
    anchor_dir = Path(anchor_dir)
    if not anchor_dir.is_dir():
        return out
    kid = key_id(public)
    for path in sorted(anchor_dir.glob("anchor-*.json")):
        try:
            doc = json.loads(path.read_text(encoding="ascii"))
            body = _body(int(doc["seq"]), str(doc["row_hash"]), str(doc["written"]),
                         str(doc["reason"]), str(doc["key"]))
            signature = base64.b64decode(doc["signature"], validate=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AnchorError(f"audit anchor {path.name} is unreadable or malformed ({exc})") from exc
        if doc.get("format") != ANCHOR_FORMAT:
            raise AnchorError(f"audit anchor {path.name} is not in format {ANCHOR_FORMAT}")
        if body["key"] != kid:
            raise AnchorError(f"audit anchor {path.name} was signed by key {body['key']}, "
                              f"not by this installation's key {kid}")
        try:
            public.verify(signature, canonical_json(body).encode("utf-8"))
        except InvalidSignature:
            raise AnchorError(f"audit anchor {path.name}: signature does not verify "
                              "(the anchor was edited or forged)") from None
        out.append(Anchor(body["seq"], body["row_hash"], body["written"], body["reason"], path))
    out.sort(key=lambda a: (a.seq, a.written))
    return out


def installation_anchors(settings: Any) -> list[Anchor]:
    """The verified anchors of this installation (``anchor_dir``, checked with the public half of
    ``anchor_signing_key_path``); empty when no anchor key exists yet.

    Raises
    ------
    AnchorError
        An anchor is malformed or forged, or the key cannot be read.
    """
    path = Path(settings.anchor_signing_key_path)
    if not path.is_file():
        return []
    return read_anchors(settings.anchor_dir, load_anchor_key(path).public_key())


def anchor_map(anchors: list[Anchor]) -> dict[int, str]:
    """``{seq: row_hash}``; two anchors that disagree on one ``seq`` raise :class:`AnchorError`."""
    out: dict[int, str] = {}
    for a in anchors:
        if out.setdefault(a.seq, a.row_hash) != a.row_hash:
            raise AnchorError(f"two signed anchors disagree about seq {a.seq} "
                              f"({a.path.name}): the chain was rewritten between them")
    return out


class AnchorWriter:
    """Writes an anchor every ``interval`` seconds (when the head moved) and once at :meth:`stop`.

    Parameters
    ----------
    engine
        The audit engine.
    settings
        ``anchor_dir``, ``anchor_signing_key_path``, ``audit_anchor_interval_seconds``,
        ``audit_anchor_syslog``.
    """

    def __init__(self, engine: Any, settings: Any) -> None:
        self._engine = engine
        self._dir = Path(settings.anchor_dir)
        self._interval = float(settings.audit_anchor_interval_seconds)
        self._syslog = str(settings.audit_anchor_syslog)
        create_anchor_key(settings.anchor_signing_key_path)
        self._key = load_anchor_key(settings.anchor_signing_key_path)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_seq: int | None = None
        self._lock = threading.Lock()
        self.written = 0

    def anchor(self, reason: str, *, force: bool = False) -> Anchor | None:
        """Write one anchor now (skipped when the head has not moved, unless ``force``)."""
        with self._lock:
            with self._engine.connect() as conn:
                seq = conn.execute(select(ChainHead.seq).where(ChainHead.id == 1)).scalar_one()
            if not force and seq == self._last_seq:
                return None
            a = write_anchor(self._engine, self._dir, self._key, reason=reason, syslog=self._syslog)
            self._last_seq = a.seq
            self.written += 1
            log.info("audit anchor written: seq %s (%s)", a.seq, reason)
            return a

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.anchor("interval")
            except Exception as exc:  # noqa: BLE001 - the daemon keeps running; the next try may work
                log.error("audit anchor not written: %s: %s", type(exc).__name__, exc)

    def start(self) -> AnchorWriter:
        self._thread = threading.Thread(target=self._run, name="eusdx-audit-anchor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Anchor | None:
        """Stop the interval thread and write the shutdown anchor."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        return self.anchor("shutdown", force=True)
