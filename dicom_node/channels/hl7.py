"""HL7 v2 channel (kind ``hl7``): one ORU^R01 per SR to a RIS/EHR over MLLP, optionally in TLS.

The message is :func:`dicom_node.channels.hl7_message.build_oru` of the SR in the outbox. A result
that amends an earlier one (the outbox item's ``amends`` field names the earlier SR's SOP Instance
UID, or the SR lists it in its Predecessor Documents Sequence, PS3.3 C.17.2.3) goes as a
correction: OBR-25 and OBX-11 ``C``.

Transport: MLLP, the HL7 Minimal Lower Layer Protocol (HL7 v2.5.1 Appendix C.4): ``0x0B`` +
message + ``0x1C 0x0D``, one message and one acknowledgement per connection. ``tls = true`` wraps
the connection in TLS (``tls_ca`` verifies the receiver, ``tls_client_cert``/``tls_client_key``
present ours; IHE ITI TF-2 3.1 "Secure Node" practice).

Acknowledgement (HL7 v2.5.1 2.9.2, Table 0008):

* ``AA``/``CA``: accepted, kept as ``sent``;
* ``AE``/``CE`` (application error): transient, retried with back-off;
* ``AR``/``CR`` (application reject): permanent, dead-letter at once;
* no connection, no ACK within ``timeout_seconds``, an ACK for another control ID, or an answer
  that is not HL7: transient.

Reasons carry the ACK's MSA-3 and ERR text.
"""

from __future__ import annotations

import socket
import ssl

import pydicom

from dicom_node.channels import Item, Outcome
from dicom_node.channels.hl7_message import Ack, build_oru, parse_ack
from dicom_node.channels.sr_result import read_result
from eusdx.config import Destination, Settings
from eusdx.failures import DeliveryError

__all__ = ["Hl7Channel", "frame", "exchange", "START", "END", "MAX_ACK_BYTES"]

START = b"\x0b"
END = b"\x1c\x0d"
#: An acknowledgement longer than this is not an acknowledgement.
MAX_ACK_BYTES = 1 << 20


def frame(message: str) -> bytes:
    """The MLLP block of an ER7 message (UTF-8; MSH-18 says so)."""
    return START + message.encode("utf-8") + END


def _tls_context(destination: Destination) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=str(destination.tls_ca) if destination.tls_ca is not None else None)
    if not destination.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if destination.tls_client_cert is not None and destination.tls_client_key is not None:
        context.load_cert_chain(str(destination.tls_client_cert),
                                str(destination.tls_client_key))
    return context


def exchange(destination: Destination, message: str) -> str:
    """Send one MLLP block and return the answer's ER7 text.

    Raises
    ------
    eusdx.failures.DeliveryError
        Transient: no connection, TLS failure, timeout, the connection closed before a whole
        answer came, or an answer over :data:`MAX_ACK_BYTES`.
    """
    host, port = destination.mllp
    where = destination.address
    timeout = destination.timeout_seconds
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise DeliveryError(f"cannot connect to {where}: {exc}") from exc
    try:
        sock: socket.socket = raw
        if destination.tls:
            sock = _tls_context(destination).wrap_socket(raw, server_hostname=host)
        sock.settimeout(timeout)
        sock.sendall(frame(message))
        answer = b""
        while END not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                raise DeliveryError(f"{where} closed the connection without a whole ACK")
            answer += chunk
            if len(answer) > MAX_ACK_BYTES:
                raise DeliveryError(f"{where} answered more than {MAX_ACK_BYTES} bytes")
    except TimeoutError as exc:
        raise DeliveryError(f"no ACK from {where} within {timeout:g} s") from exc
    except OSError as exc:  # includes ssl.SSLError (certificate checks)
        raise DeliveryError(f"MLLP exchange with {where} failed: {exc}") from exc
    finally:
        raw.close()
    block = answer.split(END, 1)[0]
    return block[block.find(START) + 1:].decode("utf-8", errors="replace")


def _judge(ack: Ack, expected: str, where: str) -> None:
    if ack.control_id != expected:
        raise DeliveryError(f"{where} acknowledged control ID {ack.control_id!r}, "
                            f"not ours ({expected})")
    detail = f": {ack.text}" if ack.text else ""
    if ack.code in ("AA", "CA"):
        return
    if ack.code in ("AR", "CR"):
        raise DeliveryError(f"{where} rejected the ORU^R01 (ACK {ack.code}){detail}",
                            permanent=True)
    if ack.code in ("AE", "CE"):
        raise DeliveryError(f"{where} answered application error (ACK {ack.code}){detail}")
    raise DeliveryError(f"{where} answered an unknown acknowledgement code "
                        f"{ack.code!r}{detail}")


class Hl7Channel:
    """Kind ``hl7``: one connection, one ORU^R01 and one ACK per attempt."""

    def __init__(self, settings: Settings, destination: Destination) -> None:
        self.settings = settings
        self.destination = destination

    def message(self, item: Item) -> tuple[str, bool]:
        """The ER7 message of an outbox item and whether it is a correction.

        Raises
        ------
        eusdx.failures.DeliveryError
            Permanent: the item is an event (no result to report).
        """
        if item.is_event:
            raise DeliveryError("an hl7 destination takes results, not event notices",
                                permanent=True)
        ds = pydicom.dcmread(item.object_path, stop_before_pixels=True)
        corrected = bool(item.record.get("amends")) or bool(
            ds.get("PredecessorDocumentsSequence"))
        return build_oru(read_result(ds), corrected=corrected,
                         sending_facility=self.settings.ae_title,
                         receiving_application=self.destination.receiving_application,
                         receiving_facility=self.destination.receiving_facility), corrected

    def deliver(self, item: Item) -> Outcome:
        message, corrected = self.message(item)
        control = message.split("\r", 1)[0].split("|")[9]
        where = f"HL7 receiver {self.destination.name} ({self.destination.address})"
        answer = exchange(self.destination, message)
        try:
            ack = parse_ack(answer)
        except ValueError as exc:
            raise DeliveryError(f"{where}: {exc}") from exc
        _judge(ack, control, where)
        status = "C" if corrected else "F"
        what = "corrected result" if corrected else "result"
        return Outcome("sent", f"ORU^R01 {what} accepted (ACK {ack.code}, control ID {control})",
                       {"control_id": control, "result_status": status})

    def poll(self, item: Item, now: float) -> Outcome | None:
        raise DeliveryError("an hl7 destination never waits for a commitment", permanent=True)
