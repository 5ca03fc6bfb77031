"""Fault-injection helpers: ``eusdx serve`` as a killable subprocess, our own Redis, a TCP proxy
we can cut, a concurrent C-STORE stream sender and an RSS probe.

Shared services (Redis 6379, PostgreSQL 5432) are never stopped: faults are injected into
private instances or into a proxy in front of the shared one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydicom.dataset import Dataset

from tests.conftest import free_port, require_tool
from tests.dicom_node.peers import wait_listening

EUSDX = str(Path(sys.executable).with_name("eusdx"))


def knob(name: str, default: int) -> int:
    """An integer size knob from the environment (``EUSDX_REL_<NAME>``): CI runs the default,
    hand runs raise it."""
    return int(os.environ.get(f"EUSDX_REL_{name}", default))


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` every 50 ms until it is truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (from /proc; psutil is not a dependency)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


class Serve:
    """``eusdx serve`` as a subprocess on fixed (free) ports, restartable over the same var/."""

    def __init__(self, var: Path, *, worker: bool = False, http: bool = False,
                 **env_extra: str) -> None:
        self.var = var
        self.worker = worker
        self.http = http
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.env = dict(os.environ)
        self.env.update({
            "EUSDX_SPOOL_DIR": str(var / "spool"),
            "EUSDX_DATABASE_URL": f"sqlite:///{var}/audit.db",
            "EUSDX_QUEUE_DIR": str(var / "queue"), "EUSDX_DICOM_HOST": "127.0.0.1",
            "EUSDX_DICOM_PORT": str(self.dicom_port), "EUSDX_HTTP_PORT": str(self.http_port),
            "EUSDX_LOG_FORMAT": "json", "EUSDX_AUDIT_HMAC_SECRET": "reliability-secret",
            **env_extra,
        })
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = var / "serve.log"
        self.starts = 0

    def start(self, timeout: float = 60) -> Serve:
        args = [EUSDX, "serve", "--worker" if self.worker else "--no-worker",
                "--http" if self.http else "--no-http"]
        self.starts += 1
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                wait_listening(self.dicom_port, timeout=0.5)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise AssertionError(f"serve did not listen:\n{self.log()[-4000:]}")
        if self.http:
            wait_listening(self.http_port, timeout=30)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed beyond what was done already."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=30)
        self.proc = None

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        rc = self.proc.wait(timeout=60)
        self.proc = None
        return rc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def audit_rows(self, sql: str, **params: Any) -> list[Any]:
        engine = sa.create_engine(self.env["EUSDX_DATABASE_URL"])
        try:
            with engine.connect() as conn:
                return list(conn.execute(sa.text(sql), params))
        finally:
            engine.dispose()


@pytest.fixture
def serve_factory(tmp_var: Path) -> Iterator[Callable[..., Serve]]:
    made: list[Serve] = []

    def make(**kwargs: Any) -> Serve:
        s = Serve(tmp_var, **kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        s.kill()


# --- C-STORE streams ---------------------------------------------------------------------------


@dataclass
class StreamResult:
    """What one association managed to send: (SOP UID, status) per C-STORE answered."""

    acked: list[tuple[Dataset, int]] = field(default_factory=list)
    error: str | None = None


def send_stream(port: int, datasets: list[Dataset], *, aet: str = "RELSCU",
                stop: threading.Event | None = None, timeout: float = 30) -> StreamResult:
    """Send ``datasets`` on one association, recording every answered status; a dropped
    connection ends the stream (the result says how far it got)."""
    from pynetdicom import AE

    result = StreamResult()
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class, ts in sorted({(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID))
                                 for d in datasets}):
        ae.add_requested_context(sop_class, ts)
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="EUSDX")
    except Exception as exc:  # noqa: BLE001  # a killed server may reset the socket anywhere
        result.error = f"associate: {exc}"
        return result
    if not assoc.is_established:
        result.error = "association not established"
        return result
    try:
        for ds in datasets:
            if stop is not None and stop.is_set():
                break
            rsp = assoc.send_c_store(ds)
            if "Status" not in rsp:
                result.error = "no response"
                break
            result.acked.append((ds, int(rsp.Status)))
        if assoc.is_established:
            assoc.release()
    except Exception as exc:  # noqa: BLE001
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def send_concurrently(port: int, streams: list[list[Dataset]], **kwargs: Any
                      ) -> list[StreamResult]:
    """One thread and one association per stream; returns when all ended."""
    results: list[StreamResult | None] = [None] * len(streams)

    def run(i: int) -> None:
        results[i] = send_stream(port, streams[i], **kwargs)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(streams))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert all(r is not None for r in results), "a sender thread hung"
    return [r for r in results if r is not None]


# --- our own Redis, and a TCP proxy we can cut -------------------------------------------------


class RedisServer:
    """A private ``redis-server`` (no persistence) that the test may kill and restart."""

    def __init__(self, workdir: Path, *extra_args: str) -> None:
        self.exe = require_tool("/usr/bin/redis-server")
        self.port = free_port()
        self.workdir = workdir
        self.extra_args = list(extra_args) or ["--appendonly", "no"]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             *self.extra_args, "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.port, timeout=15)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


class TcpProxy:
    """A TCP forwarder on a free local port; :meth:`cut` closes the listener and every live
    connection (the upstream looks unreachable), :meth:`restore` listens again on the same port."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._up = False
        #: bytes forwarded client -> upstream; with ``stall_after`` set, forwarding in that
        #: direction stops (the bytes wait in the proxy) once that many have passed
        self.forwarded = 0
        self.stall_after: int | None = None

    def restore(self) -> None:
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", self.port))
        lst.listen(64)
        self._listener, self._up = lst, True
        threading.Thread(target=self._accept, args=(lst,), daemon=True).start()

    def _accept(self, lst: socket.socket) -> None:
        while True:
            try:
                client, _ = lst.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if not self._up:
                    client.close()
                    upstream.close()
                    continue
                self._conns += [client, upstream]
            for a, b, up in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(a, b, up), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upward: bool) -> None:
        try:
            while data := src.recv(16384):
                if upward:
                    while self.stall_after is not None and self.forwarded >= self.stall_after:
                        if not self._up:
                            return
                        time.sleep(0.01)
                    self.forwarded += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        with self._lock:
            self._up = False
            if self._listener is not None:
                try:  # wakes the accept() thread; close() alone leaves the port listening
                    self._listener.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self._listener.close()
                self._listener = None
            for s in self._conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._conns.clear()


def dcmtk_storescp(out_dir: Path, port: int, aet: str = "PACS") -> subprocess.Popen[bytes]:
    """DCMTK storescp as a PACS writing files named by SOP Instance UID."""
    exe = require_tool("/usr/bin/storescp")
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([exe, "-aet", aet, "-od", str(out_dir), "-uf", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, timeout=15)
    return proc



# the node fixtures of tests/dicom_node (a real Node on a free port with a real SQLite audit log)
from tests.dicom_node.conftest import audit_for, make_settings, start_node  # noqa: E402,F401
# phantom_cohort and tiny_bundle come from tests/conftest.py (trained once per session)
