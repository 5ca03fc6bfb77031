"""A local MLLP listener standing in for a RIS/EHR: it parses each ORU with hl7apy, keeps it, and
answers an ACK (built with hl7apy) whose code ``answer`` picks per message."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

from hl7apy.core import Message
from hl7apy.parser import parse_message

from tests.conftest import free_port

#: ``answer(er7) -> (MSA-1, MSA-3 text, ERR-8 text)``; MSA-1 ``None``: close without answering,
#: ``"silent"``: keep the connection open and never answer (a hung receiver).
Answer = Callable[[str], tuple[str | None, str, str]]


def ack_for(received: str, code: str, text: str = "", error: str = "",
            control: str | None = None) -> str:
    """An HL7 v2.5.1 ACK of ``received`` (built with hl7apy)."""
    msh = parse_message(received, find_groups=False).msh
    ack = Message("ACK", version="2.5.1")
    ack.msh.msh_3 = "RIS"
    ack.msh.msh_5 = msh.msh_3.to_er7()
    ack.msh.msh_9 = "ACK^R01^ACK"
    ack.msh.msh_10 = "ACK" + msh.msh_10.to_er7()[:17]
    ack.msh.msh_11 = "P"
    ack.msh.msh_12 = "2.5.1"
    ack.msa.msa_1 = code
    ack.msa.msa_2 = msh.msh_10.to_er7() if control is None else control
    if text:
        ack.msa.msa_3 = text
    if error:
        err = ack.add_segment("ERR")
        err.err_3 = "207^Application internal error^HL70357"
        err.err_4 = "E"
        err.err_8 = error
    return str(ack.to_er7())


class MllpListener:
    """Thread serving MLLP on 127.0.0.1 (a free port unless given), optionally in TLS."""

    def __init__(self, answer: Answer = lambda m: ("AA", "", ""), *, port: int | None = None,
                 tls: tuple[Any, Any] | None = None) -> None:
        self.answer = answer
        self.port = port or free_port()
        self.tls = tls
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"mllp://127.0.0.1:{self.port}"

    def start(self) -> MllpListener:
        self._stop.clear()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(8)
        sock.settimeout(0.1)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> MllpListener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        assert self._sock is not None
        context = None
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn, context), daemon=True).start()

    def _handle(self, conn: socket.socket, context: ssl.SSLContext | None) -> None:
        try:
            conn.settimeout(5)
            if context is not None:
                conn = context.wrap_socket(conn, server_side=True)
            data = b""
            while b"\x1c\x0d" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            assert data.startswith(b"\x0b"), "MLLP block must start with 0x0B"
            message = data[1:data.index(b"\x1c\x0d")].decode("utf-8")
            self.messages.append(message)
            code, text, error = self.answer(message)
            if code is None:
                return
            if code == "silent":
                self._stop.wait(30)
                return
            control = "not-yours" if code == "AA-other" else None
            ack = ack_for(message, "AA" if code == "AA-other" else code, text, error, control)
            conn.sendall(b"\x0b" + ack.encode("utf-8") + b"\x1c\x0d")
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()
