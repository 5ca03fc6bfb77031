"""Syslog transport of audit messages: RFC 5424 messages over TLS (RFC 5425) or UDP (RFC 5426).

IHE ITI-20 (Record Audit Event) carries each DICOM audit message as the MSG of one RFC 5424 syslog
message: PRI ``<85>`` (facility 10 security/authorization, severity 5 notice), version 1, the event
time, our host name, APP-NAME ``eusdx``, MSGID ``IHE+RFC-3881``, no structured data, then the UTF-8
BOM and the XML (RFC 5424 6.4 MSG-UTF8).

Over TLS each message is framed by octet counting, ``MSG-LEN SP SYSLOG-MSG`` (RFC 5425 4.3);
the client checks the repository's certificate against ``ca`` and presents its own when given (IHE
ATNA node authentication is mutual TLS). Over UDP each message is one datagram (RFC 5426); UDP has
no acknowledgement, so an outage is noticed only through the ICMP errors the kernel reports on a
connected socket. Neither RFC 5425 nor 5426 acknowledges a message: a message is counted as sent
once the kernel took it; a closed TLS connection is detected before each batch and re-opened.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import select
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from audit.errors import AuditError
from eusdx.config import parse_syslog_endpoint
from eusdx.failures import FailureClass, register

__all__ = [
    "AtnaUnavailable",
    "Endpoint",
    "SyslogClient",
    "TlsSyslogClient",
    "UdpSyslogClient",
    "parse_endpoint",
    "syslog_message",
    "open_client",
]

BOM = b"\xef\xbb\xbf"
#: RFC 5424 PRI of an audit message: facility 10 (security/authorization) * 8 + severity 5 (notice)
PRI = 10 * 8 + 5
MSGID = "IHE+RFC-3881"
#: Largest datagram we send (IPv4 UDP payload limit); RFC 5426 3.2 asks receivers for >= 2048.
UDP_MAX = 65507


class AtnaUnavailable(AuditError):
    """The audit repository cannot be reached or refused the connection; the messages stay spooled.

    ``sent`` is how many messages of the batch went out before the failure.
    """

    exit_code = 69  # EX_UNAVAILABLE

    def __init__(self, message: str, *, sent: int = 0) -> None:
        super().__init__(message)
        self.sent = sent


register(AtnaUnavailable, FailureClass.DELIVERY, retryable=True)


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """An audit repository: ``tls://host:port`` or ``udp://host:port``."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_endpoint(text: str) -> Endpoint:
    """Parse ``tls://host:port`` / ``udp://host:port`` (``eusdx.config.parse_syslog_endpoint``).

    Raises
    ------
    ValueError
        Another form, or a port outside 1-65535.
    """
    scheme, host, port = parse_syslog_endpoint(text)
    return Endpoint(scheme, host, port)


def _field(value: str, limit: int) -> str:
    """An RFC 5424 header field: printable US-ASCII without spaces, at most ``limit`` long."""
    clean = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return clean or "-"


def syslog_message(xml: bytes, *, when: dt.datetime, hostname: str, app_name: str = "eusdx",
                   procid: str = "-") -> bytes:
    """One RFC 5424 SYSLOG-MSG carrying ``xml`` (the TIMESTAMP is the audit event's time, UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    stamp = when.astimezone(dt.timezone.utc).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")
    header = (f"<{PRI}>1 {stamp} {_field(hostname, 255)} {_field(app_name, 48)} "
              f"{_field(procid, 128)} {MSGID} - ")
    return header.encode("ascii") + BOM + xml


class SyslogClient(Protocol):
    """Sends syslog messages to one repository."""

    def send(self, messages: Sequence[bytes]) -> int:
        """Send every message in order; return how many were sent.

        Raises
        ------
        AtnaUnavailable
            The repository cannot be reached; ``sent`` says how many went out first.
        """

    def close(self) -> None:
        """Close the connection (the next ``send`` opens a new one)."""


class TlsSyslogClient:
    """RFC 5425: syslog over TLS with octet-counting framing; one connection, re-opened on need.

    Parameters
    ----------
    endpoint
        The repository.
    ca
        CA bundle that verifies its certificate (default: the system store).
    cert, key
        Our client certificate and key (PEM) for mutual TLS.
    timeout
        Connect and send timeout, seconds.
    """

    def __init__(self, endpoint: Endpoint, *, ca: Path | None = None, cert: Path | None = None,
                 key: Path | None = None, timeout: float = 10.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._context = ssl.create_default_context(cafile=str(ca) if ca else None)
        self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert is not None:
            self._context.load_cert_chain(str(cert), str(key) if key else None)
        self._sock: ssl.SSLSocket | None = None

    def _connect(self) -> ssl.SSLSocket:
        raw = socket.create_connection((self.endpoint.host, self.endpoint.port),
                                       timeout=self.timeout)
        try:
            return self._context.wrap_socket(raw, server_hostname=self.endpoint.host)
        except BaseException:
            raw.close()
            raise

    def _usable(self, sock: ssl.SSLSocket) -> bool:
        """False when the repository closed the connection (it never sends us data otherwise)."""
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable and not sock.pending():
            return True
        try:
            sock.setblocking(False)
            try:
                data = sock.recv(1024)
            finally:
                sock.setblocking(True)
                sock.settimeout(self.timeout)
        except (ssl.SSLWantReadError, BlockingIOError):
            return True
        except (OSError, ssl.SSLError):
            return False
        return bool(data)

    def send(self, messages: Sequence[bytes]) -> int:
        sent = 0
        try:
            if self._sock is not None and not self._usable(self._sock):
                self.close()
            if self._sock is None:
                self._sock = self._connect()
            for message in messages:
                self._sock.sendall(str(len(message)).encode("ascii") + b" " + message)
                sent += 1
        except (OSError, ssl.SSLError) as exc:
            self.close()
            raise AtnaUnavailable(f"audit repository {self.endpoint}: {type(exc).__name__}: "
                                  f"{exc}", sent=sent) from exc
        return sent

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass  # closing a broken socket: nothing left to release
            self._sock = None


class UdpSyslogClient:
    """RFC 5426: one syslog message per UDP datagram, on a connected socket."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = 10.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._sock: socket.socket | None = None

    def send(self, messages: Sequence[bytes]) -> int:
        sent = 0
        try:
            if self._sock is None:
                info = socket.getaddrinfo(self.endpoint.host, self.endpoint.port,
                                          type=socket.SOCK_DGRAM)[0]
                sock = socket.socket(info[0], socket.SOCK_DGRAM)
                sock.settimeout(self.timeout)
                sock.connect(info[4])
                self._sock = sock
            for message in messages:
                if len(message) > UDP_MAX:
                    raise AtnaUnavailable(f"audit message of {len(message)} bytes does not fit "
                                          f"a UDP datagram; use tls://", sent=sent)
                self._sock.send(message)
                sent += 1
        except OSError as exc:
            self.close()
            raise AtnaUnavailable(f"audit repository {self.endpoint}: {type(exc).__name__}: "
                                  f"{exc}", sent=sent) from exc
        return sent

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def open_client(endpoint: Endpoint, *, ca: Path | None = None, cert: Path | None = None,
                key: Path | None = None, timeout: float = 10.0) -> SyslogClient:
    """The client for ``endpoint``'s scheme."""
    if endpoint.scheme == "tls":
        return TlsSyslogClient(endpoint, ca=ca, cert=cert, key=key, timeout=timeout)
    return UdpSyslogClient(endpoint, timeout=timeout)
