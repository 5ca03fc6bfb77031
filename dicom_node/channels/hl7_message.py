"""HL7 v2.5.1 ORU^R01 result messages made from an eusdx SR, and the reading of their ACKs.

Built and parsed with ``hl7apy`` (crs4/hl7apy, HL7 v2.5.1 structures). Message layout (HL7 v2.5.1
chapter 7, ORU^R01; IHE Radiology places the accession number in OBR-18)::

    MSH|^~\\&|EUSDX|<ae_title>|<receiving_application>|<receiving_facility>|<now>||ORU^R01^ORU_R01|
        <control id>|P|2.5.1|||||||UNICODE UTF-8
    PID|||<PatientID>||<PatientName>                        (the SR's patient module)
    ORC|RE|<placer order>|<filler order>||CM
    OBR|1|<placer order>|<filler order>|<SR title code>|||<SR content date/time>|...|
        OBR-18 <accession>|...|OBR-22 <now>|OBR-24 US|OBR-25 F or C
    OBX|n|CWE|121071^Finding^DCM||<finding code, exactly as the SR codes it>||||||F|C
    OBX|n|NM|122157^Probability^DCM||<P(GIST) x 100>|%^percent^UCUM|||||F|C
    OBX|n|CWE|EUSDX-0010^Analysis status^99EUSDX||<CID 6047 code of the SR>||||||F|C
    OBX|n|ST|111001^Algorithm Name^DCM||<name>        (and 111003 Algorithm Version)
    OBX|n|ST|110180^Study Instance UID^DCM||<uid>
    OBX|n|TX|EUSDX-0005^Decision support notice^99EUSDX||<each notice of the SR, one OBX each>

Every OBX-11 is the result status; OBX-14 the SR's content date/time. Codes are those of the SR
(PS3.16 DCM, SNOMED CT ``SCT``, private ``99EUSDX``), written as CWE ``code^meaning^scheme``.

A corrected result (the SR amends an earlier one) has OBR-25 ``C`` and every OBX-11 ``C`` and keeps
the placer/filler order numbers and accession, so the receiver replaces the earlier result
(HL7 v2.5.1 7.4.1.25, Table 0123 "C: Correction to results"; OBX-11 Table 0085 "C: Record coming
over is a correction and thus replaces a final result").

The message control ID (MSH-10, at most 20 characters) is derived from the SR's SOP Instance UID,
so every attempt of one result carries the same ID and a receiver can drop duplicates.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass

from hl7apy.base_datatypes import TX
from hl7apy.core import Message
from hl7apy.parser import parse_message

from dicom_node.channels.sr_result import SrResult

__all__ = ["Ack", "build_oru", "parse_ack", "control_id",
           "unescape", "HL7_VERSION"]

HL7_VERSION = "2.5.1"

#: OBX-3 of the Study Instance UID observation (DCM 110180 "Study Instance UID").
_STUDY_UID = ("110180", "DCM", "Study Instance UID")  # (value, scheme, meaning)


@dataclass(frozen=True)
class Ack:
    """An HL7 acknowledgement: MSA-1 code (``AA``/``AE``/``AR``, enhanced ``CA``/``CE``/``CR``),
    MSA-2 control ID it answers, and the text of MSA-3 and every ERR (ERR-8 user message, ERR-3
    error code)."""

    code: str
    control_id: str
    text: str


def control_id(sop_uid: str) -> str:
    """MSH-10 of the ORU for an SR: 20 hex digits of SHA-256 of its SOP Instance UID."""
    return hashlib.sha256(sop_uid.encode("ascii")).hexdigest()[:20]


def _esc(text: str) -> str:
    """``text`` without surrounding white space (DICOM pads values; HL7 ST/TX trailing spaces are
    not significant), line breaks as spaces, HL7 delimiters escaped (HL7 v2.5.1 2.7.4; hl7apy's
    own escaping)."""
    return str(TX(text.replace("\r", " ").replace("\n", " ").strip()).to_er7())


_UNESCAPES = {"F": "|", "S": "^", "T": "&", "R": "~", "E": "\\"}


def unescape(text: str) -> str:
    """The text of an ER7 field value (reverses ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``; HL7 v2.5.1
    2.7.4)."""
    return re.sub(r"\\([FSTRE])\\", lambda m: _UNESCAPES[m.group(1)], text)


def _cwe(code: tuple[str, str, str]) -> str:
    """CWE ``identifier^text^coding system`` of a DICOM ``(value, scheme, meaning)``."""
    value, scheme, meaning = code
    return "^".join(_esc(part) for part in (value, meaning, scheme))


def _xpn(dicom_name: str) -> str:
    # DICOM PN family^given^middle^prefix^suffix -> XPN family^given^middle^suffix^prefix
    parts = (dicom_name.split("=")[0].split("^") + [""] * 5)[:5]
    family, given, middle, prefix, suffix = (_esc(p) for p in parts)
    return "^".join([family, given, middle, suffix, prefix]).rstrip("^")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d%H%M%S+0000")


def build_oru(result: SrResult, *, corrected: bool, sending_facility: str,
              receiving_application: str = "", receiving_facility: str = "",
              now: str | None = None) -> str:
    """The ORU^R01 of ``result`` in ER7 (segments separated by CR), validated by hl7apy.

    Parameters
    ----------
    corrected
        The result replaces an earlier one: OBR-25 and OBX-11 are ``C`` (else ``F``).
    sending_facility
        MSH-4 (our AE title); MSH-3 is ``EUSDX``.
    receiving_application, receiving_facility
        MSH-5 and MSH-6.
    now
        HL7 DTM for MSH-7 and OBR-22 (default: the current UTC time).

    Raises
    ------
    hl7apy.exceptions.HL7apyException
        The message breaks the HL7 v2.5.1 structure (a bug, not an input problem).
    """
    now = now or _now()
    status = "C" if corrected else "F"
    msg = Message("ORU_R01", version=HL7_VERSION)
    msh = msg.msh
    msh.msh_3 = "EUSDX"
    msh.msh_4 = _esc(sending_facility)
    msh.msh_5 = receiving_application
    msh.msh_6 = receiving_facility
    msh.msh_7 = now
    msh.msh_9 = "ORU^R01^ORU_R01"
    msh.msh_10 = control_id(result.sop_uid)
    msh.msh_11 = "P"
    msh.msh_12 = HL7_VERSION
    msh.msh_18 = "UNICODE UTF-8"  # HL7 Table 0211; the MLLP block is UTF-8
    patient_result = msg.add_group("ORU_R01_PATIENT_RESULT")
    pid = patient_result.add_group("ORU_R01_PATIENT").pid
    pid.pid_1 = "1"
    pid.pid_3 = _esc(result.patient_id)
    pid.pid_5 = _xpn(result.patient_name)
    order = patient_result.add_group("ORU_R01_ORDER_OBSERVATION")
    orc = order.orc
    orc.orc_1 = "RE"
    if result.placer_order:
        orc.orc_2 = _esc(result.placer_order)
    if result.filler_order:
        orc.orc_3 = _esc(result.filler_order)
    orc.orc_5 = "CM"
    obr = order.obr
    obr.obr_1 = "1"
    if result.placer_order:
        obr.obr_2 = _esc(result.placer_order)
    if result.filler_order:
        obr.obr_3 = _esc(result.filler_order)
    obr.obr_4 = _cwe(result.title)
    if result.observed:
        obr.obr_7 = result.observed
    if result.accession:
        obr.obr_18 = _esc(result.accession)
    obr.obr_22 = now
    obr.obr_24 = "US"
    obr.obr_25 = status

    rows: list[tuple[str, str, str, str]] = []  # (type, OBX-3, OBX-5, OBX-6)
    if result.finding is not None:
        rows.append(("CWE", "121071^Finding^DCM", _cwe(result.finding), ""))
    if result.probability is not None:
        rows.append(("NM", "122157^Probability^DCM", f"{100.0 * result.probability:.1f}",
                     "%^percent^UCUM"))
    if result.status is not None:
        rows.append(("CWE", "EUSDX-0010^Analysis status^99EUSDX", _cwe(result.status), ""))
    if result.algorithm_name:
        rows.append(("ST", "111001^Algorithm Name^DCM", _esc(result.algorithm_name), ""))
    if result.algorithm_version:
        rows.append(("ST", "111003^Algorithm Version^DCM", _esc(result.algorithm_version), ""))
    rows.append(("ST", _cwe(_STUDY_UID), result.study_uid, ""))
    for text in result.notices:
        rows.append(("TX", "EUSDX-0005^Decision support notice^99EUSDX", _esc(text), ""))
    for n, (vtype, concept, value, units) in enumerate(rows, start=1):
        obx = order.add_group("ORU_R01_OBSERVATION").obx
        obx.obx_1 = str(n)
        obx.obx_2 = vtype
        obx.obx_3 = concept
        obx.obx_5 = value
        if units:
            obx.obx_6 = units
        obx.obx_11 = status
        if result.observed:
            obx.obx_14 = result.observed
    msg.validate()
    return str(msg.to_er7())


def parse_ack(er7: str) -> Ack:
    """The acknowledgement in ``er7`` (an ACK of any HL7 v2 version from 2.3).

    Raises
    ------
    ValueError
        Not an HL7 message with an MSA segment.
    """
    try:
        msg = parse_message(er7.strip("\r\n") + "\r", find_groups=False)
    except Exception as exc:  # hl7apy raises several types for text that is not HL7
        raise ValueError(f"the answer is not an HL7 message ({exc})") from exc
    msa = next((s for s in msg.children if s.name == "MSA"), None)
    if msa is None:
        raise ValueError("the answer has no MSA segment")
    fields = msa.to_er7().split("|")
    code = fields[1] if len(fields) > 1 else ""
    control = fields[2] if len(fields) > 2 else ""
    texts = [unescape(fields[3])] if len(fields) > 3 and fields[3] else []
    for seg in (s for s in msg.children if s.name == "ERR"):
        parts = seg.to_er7().split("|")
        error = parts[3] if len(parts) > 3 else ""  # ERR-3 HL7 error code (CWE)
        message = parts[8] if len(parts) > 8 else ""  # ERR-8 user message
        legacy = parts[1] if len(parts) > 1 else ""  # ERR-1 (v2.4 and before)
        bits = [unescape(message)] if message else []
        if error:
            bits.append("error " + unescape(error.replace("^", " ").strip()))
        if not bits and legacy:
            bits.append(unescape(legacy.replace("^", " ").strip()))
        texts.extend(b for b in bits if b)
    return Ack(code=code.strip().upper(), control_id=unescape(control), text="; ".join(texts))
