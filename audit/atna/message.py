"""DICOM audit messages (DICOM PS3.15 Annex A.5, the RFC 3881 "AuditMessage" XML as DICOM profiles it).

A message is described by plain dataclasses (:class:`AuditEvent` and its parts) and serialised by
:func:`to_xml` with ``xml.etree.ElementTree`` (never by string concatenation), elements in the order
the schema (``dicom-audit-message.rng``, PS3.15 A.5.1) fixes. :mod:`audit.atna.events` fills the
dataclasses from audit log rows; :mod:`audit.atna.validate` checks the result against the schema.

Codes are ``(code value, coding scheme designator, code meaning)``; DICOM writes them as the
attributes ``csd-code``, ``codeSystemName`` and ``originalText`` (PS3.15 A.5.1 ``CodedValueType``).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import re
import xml.etree.ElementTree as ET

__all__ = [
    "Code",
    "Participant",
    "SopClassRef",
    "ParticipantObject",
    "AuditSource",
    "AuditEvent",
    "to_xml",
    "xml_text",
    "aetitles",
]

# XML 1.0 forbids most C0 controls; audit reasons are free text written by many hands.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_text(value: str) -> str:
    """``value`` with the characters XML 1.0 cannot carry replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", value)


def aetitles(*titles: str) -> str:
    """``AlternativeUserID`` of a DICOM process: ``AETITLES=AE1;AE2`` (PS3.15 A.5.2.2)."""
    return "AETITLES=" + ";".join(t.strip() for t in titles if t and t.strip())


@dataclasses.dataclass(frozen=True)
class Code:
    """A coded value: code value, coding scheme designator (``DCM``, ``RFC-3881``...), meaning."""

    value: str
    scheme: str
    meaning: str


@dataclasses.dataclass(frozen=True)
class Participant:
    """An ``ActiveParticipant``: a user or process that took part in the event (PS3.15 A.5.2.2)."""

    user_id: str
    requestor: bool
    alternative_user_id: str | None = None
    user_name: str | None = None
    roles: tuple[Code, ...] = ()
    access_point: str | None = None
    #: ``1`` machine name, ``2`` IP address, ``5`` URI (RFC 3881 NetworkAccessPointTypeCode)
    access_point_type: str | None = None


@dataclasses.dataclass(frozen=True)
class SopClassRef:
    """A ``SOPClass`` element: a SOP class UID, how many instances, optionally their UIDs."""

    uid: str
    count: int
    instances: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ParticipantObject:
    """A ``ParticipantObjectIdentification`` (PS3.15 A.5.2.5): a study, a patient, a query...

    ``type_code`` 1 person, 2 system object; ``role`` 1 patient, 3 report, 13 security resource,
    24 query; ``life_cycle`` 6 access/use, 10 export (RFC 3881 5.5 enumerations).
    """

    object_id: str
    id_type: Code
    type_code: str | None = None
    role: str | None = None
    life_cycle: str | None = None
    name: str | None = None
    query: bytes | None = None
    details: tuple[tuple[str, bytes], ...] = ()
    description: str | None = None
    sop_classes: tuple[SopClassRef, ...] = ()
    accessions: tuple[str, ...] = ()
    studies: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class AuditSource:
    """``AuditSourceIdentification``: who reports (PS3.15 A.5.2.3).

    ``type_code`` ``4``: application server process (RFC 3881 5.4 AuditSourceTypeCode).
    """

    source_id: str
    enterprise_site_id: str | None = None
    type_code: Code = Code("4", "RFC-3881", "Application Server process or thread")


@dataclasses.dataclass(frozen=True)
class AuditEvent:
    """One audit message's content.

    ``seq`` is the audit log row it was made from (not part of the XML; the sender's cursor).
    ``action`` is the EventActionCode (C, R, U, D, E); ``outcome`` the EventOutcomeIndicator
    (``0`` success, ``4`` minor failure, ``8`` serious failure, ``12`` major failure).
    """

    seq: int
    event_id: Code
    when: dt.datetime
    outcome: str
    participants: tuple[Participant, ...]
    action: str | None = None
    types: tuple[Code, ...] = ()
    outcome_description: str | None = None
    objects: tuple[ParticipantObject, ...] = ()


def _code(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    return ET.SubElement(parent, tag, {"csd-code": code.value, "codeSystemName": code.scheme,
                                       "originalText": xml_text(code.meaning)})


def _datetime(value: dt.datetime) -> str:
    if value.tzinfo is None:  # SQLite hands back naive datetimes; the log stores UTC only
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")


def _participant(root: ET.Element, p: Participant) -> None:
    attrs = {"UserID": xml_text(p.user_id), "UserIsRequestor": "true" if p.requestor else "false"}
    if p.alternative_user_id:
        attrs["AlternativeUserID"] = xml_text(p.alternative_user_id)
    if p.user_name:
        attrs["UserName"] = xml_text(p.user_name)
    if p.access_point:
        attrs["NetworkAccessPointID"] = xml_text(p.access_point)
        if p.access_point_type:
            attrs["NetworkAccessPointTypeCode"] = p.access_point_type
    el = ET.SubElement(root, "ActiveParticipant", attrs)
    for role in p.roles:
        _code(el, "RoleIDCode", role)


def _object(root: ET.Element, o: ParticipantObject) -> None:
    attrs = {"ParticipantObjectID": xml_text(o.object_id)}
    if o.type_code:
        attrs["ParticipantObjectTypeCode"] = o.type_code
    if o.role:
        attrs["ParticipantObjectTypeCodeRole"] = o.role
    if o.life_cycle:
        attrs["ParticipantObjectDataLifeCycle"] = o.life_cycle
    el = ET.SubElement(root, "ParticipantObjectIdentification", attrs)
    _code(el, "ParticipantObjectIDTypeCode", o.id_type)
    if o.name is not None:
        ET.SubElement(el, "ParticipantObjectName").text = xml_text(o.name)
    elif o.query is not None:
        ET.SubElement(el, "ParticipantObjectQuery").text = base64.b64encode(o.query).decode("ascii")
    for key, value in o.details:
        ET.SubElement(el, "ParticipantObjectDetail",
                      {"type": xml_text(key), "value": base64.b64encode(value).decode("ascii")})
    if o.description:
        ET.SubElement(el, "ParticipantObjectDescription").text = xml_text(o.description)
    for sop in o.sop_classes:
        sop_el = ET.SubElement(el, "SOPClass", {"UID": sop.uid, "NumberOfInstances": str(sop.count)})
        for uid in sop.instances:
            ET.SubElement(sop_el, "Instance", {"UID": uid})
    for number in o.accessions:
        ET.SubElement(el, "Accession", {"Number": xml_text(number)})
    if o.studies:
        contains = ET.SubElement(el, "ParticipantObjectContainsStudy")
        for uid in o.studies:
            ET.SubElement(contains, "StudyIDs", {"UID": uid})


def to_xml(event: AuditEvent, source: AuditSource) -> bytes:
    """Serialise one audit message as UTF-8 XML with an XML declaration (no BOM, no pretty-printing).

    The element order is the one PS3.15 A.5.1 fixes: EventIdentification, ActiveParticipant+,
    AuditSourceIdentification, ParticipantObjectIdentification*.
    """
    root = ET.Element("AuditMessage")
    ident = {"EventDateTime": _datetime(event.when), "EventOutcomeIndicator": event.outcome}
    if event.action:
        ident["EventActionCode"] = event.action
    ev = ET.SubElement(root, "EventIdentification", ident)
    _code(ev, "EventID", event.event_id)
    for code in event.types:
        _code(ev, "EventTypeCode", code)
    if event.outcome_description:
        ET.SubElement(ev, "EventOutcomeDescription").text = xml_text(event.outcome_description)
    for p in event.participants:
        _participant(root, p)
    src = {"AuditSourceID": xml_text(source.source_id)}
    if source.enterprise_site_id:
        src["AuditEnterpriseSiteID"] = xml_text(source.enterprise_site_id)
    src_el = ET.SubElement(root, "AuditSourceIdentification", src)
    _code(src_el, "AuditSourceTypeCode", source.type_code)
    for o in event.objects:
        _object(root, o)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data
