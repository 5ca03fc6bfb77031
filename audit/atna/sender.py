"""The ATNA sender: audit log rows -> spooled syslog messages -> the audit repository.

Two steps, each durable (``eusdx.durable``):

1. *collect*: read the rows after the cursor (``seq`` of the last row turned into messages), build
   and schema-validate their messages, write them as one spool file
   ``pending/<first seq>-<last seq>.json``, then move the cursor (``cursor.json``). A crash between
   the two writes rebuilds the same batch under the same name (the cursor is also taken as the
   highest ``last seq`` of the spool files), so nothing is spooled twice.
2. *deliver*: send the spool files oldest first; a file is removed once every message of it went
   out; after a partial send it is rewritten with the messages still to go.

While the repository is down the spool grows and nothing is lost; when it returns the backlog goes
out in order, once. One sender works a spool directory at a time (``flock`` on ``sender.lock``): a
second ``eusdx serve`` given the same ``atna_spool_dir`` stands by until the first one stops. The
messages are made from the log, so :func:`resend` rebuilds and sends those
of any period without touching the cursor or the spool (``eusdx audit atna-send``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from audit.atna.events import AtnaContext, build_events, read_rows
from audit.atna.message import AuditSource, to_xml
from audit.atna.syslog import (
    AtnaUnavailable,
    Endpoint,
    SyslogClient,
    open_client,
    parse_endpoint,
    syslog_message,
)
from audit.atna.validate import validate
from audit.errors import AuditUnavailable
from eusdx.durable import (
    atomic_write_json,
    read_json_object,
    remove_durably,
    sweep_temporaries,
)

if TYPE_CHECKING:
    from eusdx.config import Settings

__all__ = ["AtnaConfig", "AtnaSpool", "AtnaSender", "render", "resend", "context_from_settings"]

log = logging.getLogger(__name__)

_PENDING = re.compile(r"^(\d{20})-(\d{20})\.json$")


def context_from_settings(settings: Settings) -> AtnaContext:
    """What our messages say about us, from the configuration (host name: this machine's)."""
    hostname = socket.gethostname() or "localhost"
    source = AuditSource(source_id=settings.atna_audit_source_id or settings.ae_title,
                         enterprise_site_id=settings.atna_enterprise_site_id or None)
    return AtnaContext(source=source, app_id=f"eusdx@{hostname}", ae_title=settings.ae_title,
                       hostname=hostname,
                       destinations={d.name: d.address for d in settings.result_destinations})


@dataclasses.dataclass(frozen=True)
class AtnaConfig:
    """The sender's settings (``Settings.atna_*``)."""

    endpoint: Endpoint
    spool_dir: Path
    context: AtnaContext
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    timeout: float = 10.0
    batch_rows: int = 500
    interval: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> AtnaConfig | None:
        """``None`` when no ``atna_repository`` is configured."""
        if not settings.atna_repository:
            return None
        return cls(endpoint=parse_endpoint(settings.atna_repository),
                   spool_dir=settings.atna_spool_path, context=context_from_settings(settings),
                   ca=settings.atna_tls_ca, cert=settings.atna_tls_cert, key=settings.atna_tls_key,
                   timeout=settings.atna_timeout_seconds, batch_rows=settings.atna_batch_rows,
                   interval=settings.atna_interval_seconds)

    def client(self) -> SyslogClient:
        return open_client(self.endpoint, ca=self.ca, cert=self.cert, key=self.key,
                           timeout=self.timeout)


def render(engine: Engine, ctx: AtnaContext, *, after_seq: int, limit: int,
           since: dt.datetime | None = None,
           until: dt.datetime | None = None) -> tuple[int | None, list[bytes]]:
    """Build the syslog messages of the next ``limit`` rows after ``after_seq``.

    Returns ``(last seq read, messages)``; the seq is ``None`` when no row was left.

    Raises
    ------
    AuditUnavailable
        The audit database cannot be read.
    InvalidAuditMessage
        A message failed the PS3.15 A.5.1 schema (a bug: nothing is spooled or sent).
    """
    try:
        with engine.connect() as conn:
            rows = read_rows(conn, after_seq=after_seq, limit=limit, since=since, until=until)
            events = build_events(conn, rows, ctx)
    except SQLAlchemyError as exc:
        raise AuditUnavailable(f"audit read failed: {type(exc).__name__}") from exc
    if not rows:
        return None, []
    messages = []
    for event in events:
        xml = to_xml(event, ctx.source)
        validate(xml)
        messages.append(syslog_message(xml, when=event.when, hostname=ctx.hostname))
    return int(rows[-1][1]["seq"]), messages


class AtnaSpool:
    """``<dir>/cursor.json`` and ``<dir>/pending/<first>-<last>.json`` (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.pending = self.directory / "pending"
        self.pending.mkdir(parents=True, exist_ok=True)
        sweep_temporaries(self.directory)
        sweep_temporaries(self.pending)

    @property
    def cursor_path(self) -> Path:
        return self.directory / "cursor.json"

    def files(self) -> list[Path]:
        """Spool files, oldest first."""
        return sorted(p for p in self.pending.iterdir() if _PENDING.match(p.name))

    def cursor(self) -> int:
        """``seq`` of the last audit row turned into messages (0: none yet).

        Raises
        ------
        ValueError
            ``cursor.json`` is damaged (it is never written torn; someone edited it).
        """
        last = 0
        if self.cursor_path.exists():
            last = int(read_json_object(self.cursor_path)["last_seq"])
        for path in self.files():
            m = _PENDING.match(path.name)
            assert m is not None
            last = max(last, int(m.group(2)))
        return last

    def put(self, first_seq: int, last_seq: int, messages: Sequence[bytes]) -> None:
        """Spool one batch (when it has messages), then move the cursor to ``last_seq``."""
        if messages:
            atomic_write_json(self.pending / f"{first_seq:020d}-{last_seq:020d}.json",
                              {"messages": [m.decode("utf-8") for m in messages]})
        atomic_write_json(self.cursor_path, {
            "last_seq": last_seq,
            "updated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})

    def read(self, path: Path) -> list[bytes]:
        return [str(m).encode("utf-8") for m in read_json_object(path)["messages"]]

    def keep_from(self, path: Path, messages: Sequence[bytes], sent: int) -> None:
        """After ``sent`` messages of ``path`` went out: remove it, or keep the rest."""
        if sent >= len(messages):
            remove_durably(path)
        elif sent > 0:
            atomic_write_json(path, {"messages": [m.decode("utf-8") for m in messages[sent:]]})

    def backlog(self) -> tuple[int, int]:
        """``(files, messages)`` waiting."""
        files = self.files()
        return len(files), sum(len(read_json_object(p)["messages"]) for p in files)


class AtnaSender:
    """Collects and delivers; ``start()`` runs both every ``interval`` seconds on a thread.

    Parameters
    ----------
    engine
        The audit database (read only: the sender writes no audit rows, so it cannot feed itself).
    config
        Repository, spool and batch settings.
    client
        The syslog client (default: ``config.client()``).
    """

    def __init__(self, engine: Engine, config: AtnaConfig,
                 client: SyslogClient | None = None) -> None:
        self.engine = engine
        self.config = config
        self.spool = AtnaSpool(config.spool_dir)
        self.client = client if client is not None else config.client()
        self.sent = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self.standby = False

    def _hold_lock(self) -> bool:
        """Take (or keep) the spool's sender lock; False while another process holds it."""
        if self._lock_fd is not None:
            return True
        fd = os.open(self.spool.directory / "sender.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if not self.standby:
                log.info("ATNA: another sender works %s; standing by", self.spool.directory)
            self.standby = True
            return False
        self._lock_fd, self.standby = fd, False
        return True

    def collect(self, *, max_batches: int = 1000) -> int:
        """Spool the messages of every new row (at most ``max_batches`` batches); return rows read."""
        total = 0
        for _ in range(max_batches):
            after = self.spool.cursor()
            last, messages = render(self.engine, self.config.context, after_seq=after,
                                    limit=self.config.batch_rows)
            if last is None:
                break
            self.spool.put(after + 1, last, messages)
            total += last - after
        return total

    def deliver(self) -> int:
        """Send the spool, oldest first; return messages sent.

        Raises
        ------
        AtnaUnavailable
            The repository went away; what was not sent stays spooled.
        """
        sent = 0
        for path in self.spool.files():
            messages = self.spool.read(path)
            try:
                n = self.client.send(messages)
            except AtnaUnavailable as exc:
                self.spool.keep_from(path, messages, exc.sent)
                self.sent += sent + exc.sent
                raise
            self.spool.keep_from(path, messages, n)
            sent += n
        self.sent += sent
        return sent

    def run_once(self) -> tuple[int, int]:
        """One round: ``(rows collected, messages sent)``; ``(0, 0)`` while another sender holds
        the spool directory."""
        if not self._hold_lock():
            return 0, 0
        rows = self.collect()
        return rows, self.deliver()

    def start(self) -> AtnaSender:
        """Run rounds on a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._loop, name="eusdx-atna", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        delay = self.config.interval
        while not self._stop.is_set():
            try:
                self.run_once()
                self.last_error = None
                delay = self.config.interval
            except (AtnaUnavailable, AuditUnavailable) as exc:
                if self.last_error != str(exc):
                    log.warning("ATNA: %s; messages stay spooled in %s", exc,
                                self.spool.pending)
                self.last_error = str(exc)
                delay = min(max(delay * 2, self.config.interval), 300.0)
            except Exception as exc:  # noqa: BLE001 - the loop must outlive one bad round
                log.exception("ATNA sender round failed: %s", type(exc).__name__)
                self.last_error = f"{type(exc).__name__}: {exc}"
                delay = min(max(delay * 2, self.config.interval), 300.0)
            self._stop.wait(delay)

    def stop(self, *, flush: bool = True) -> None:
        """Stop the thread; with ``flush`` make one last round (best effort) first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(30.0, self.config.timeout * 3))
        if flush:
            try:
                self.run_once()
            except (AtnaUnavailable, AuditUnavailable) as exc:
                log.warning("ATNA: at stop: %s; messages stay spooled in %s", exc,
                            self.spool.pending)
        self.client.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None


def resend(engine: Engine, ctx: AtnaContext, client: SyslogClient, *,
           since: dt.datetime | None, until: dt.datetime | None,
           batch_rows: int = 500) -> dict[str, Any]:
    """Rebuild and send the messages of the rows with ``since <= ts < until``.

    Returns ``{"messages", "bytes", "seconds"}``.

    Raises
    ------
    AtnaUnavailable
        The repository cannot be reached (the messages sent so far are in ``sent``).
    """
    started = time.perf_counter()
    after, count, size = 0, 0, 0
    while True:
        last, messages = render(engine, ctx, after_seq=after, limit=batch_rows, since=since,
                                until=until)
        if last is None:
            break
        client.send(messages)
        count += len(messages)
        size += sum(len(m) for m in messages)
        after = last
    return {"messages": count, "bytes": size, "seconds": time.perf_counter() - started}
