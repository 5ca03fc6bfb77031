"""Audit log rows -> DICOM audit messages (PS3.15 A.5.3 event definitions).

Which row becomes which message:

===========================================  =================================  ======  =========
audit row                                    PS3.15 A.5.3 event (EventID)        action  outcome
===========================================  =================================  ======  =========
``associations`` open, refused (except for  Security Alert 110113 /             E       4
our own load limit)                          Node Authentication 110126
``instances`` stored / overwritten /         DICOM Instances Transferred 110104  C/U/R   0
duplicate-ignored / rejected                 (we are the destination)            C       4 rejected
``analyses`` (the model read the study)      DICOM Instances Accessed 110103     R       0, 4 error
``qa_events`` ui-sr-download                 DICOM Instances Accessed 110103     R       0
``exports`` sent / committed / failed /      DICOM Instances Transferred 110104  R       0/0/4/8
dead-letter                                  (we are the source)
``qa_events`` reads (CLI, HTTP, dashboard)   Query 110112                        E       0
``qa_events`` ui-login / -failed / -logout   User Authentication 110114          E       0/4/0
``qa_events`` api-auth-failed (bad token)    User Authentication 110114          E       4
``qa_events`` application-start / -stop      Application Activity 110100         E       0
``qa_events`` verify-failed                  Security Alert 110113               E       8
===========================================  =================================  ======  =========

Every other row (study state changes, outcomes, feedback, association close, maintenance actions
such as ``outbox-prune``) has no message: it is none of the events PS3.15 A.5.3 defines, or (state
changes) it repeats what the rows above already say.

Patient identity: the audit log keeps only the keyed pseudonym (HMAC-SHA256) of a Patient ID, never
the ID itself, so the Patient participant object (type 1 person, role 1 patient) carries that
pseudonym as ``ParticipantObjectID`` with ID type RFC-3881 ``2`` (Patient Number). The security team
can map it back with ``eusdx audit pseudonym``. Messages are a pure function of the rows at and
before their ``seq``, so a message re-sent for any period is the message first sent.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import ipaddress
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, cast

from sqlalchemy import Connection, Table, func, select

from audit.atna import codes
from audit.atna.message import (
    AuditEvent,
    AuditSource,
    Code,
    Participant,
    ParticipantObject,
    SopClassRef,
    aetitles,
)
from audit.schema import (
    AnalysisEvent,
    AssociationEvent,
    ExportEvent,
    InstanceEvent,
    QaEvent,
    StudyEvent,
)

__all__ = [
    "APPLICATION_START_ACTION",
    "APPLICATION_STOP_ACTION",
    "VERIFY_FAILED_ACTION",
    "NOT_AUDITED_ACTIONS",
    "INSTANCE_ACCESS_ACTIONS",
    "NOT_SECURITY_REFUSALS",
    "AtnaContext",
    "read_rows",
    "build_event",
    "build_events",
]

#: ``qa_events`` actions written for the Application Activity and Security Alert messages.
APPLICATION_START_ACTION = "application-start"
APPLICATION_STOP_ACTION = "application-stop"
VERIFY_FAILED_ACTION = "verify-failed"
#: ``qa_events`` actions that read DICOM objects (not the log): DICOM Instances Accessed.
INSTANCE_ACCESS_ACTIONS = frozenset({"ui-sr-download"})
#: Association refusals that say nothing about the peer's identity (our own load limit): no alert.
NOT_SECURITY_REFUSALS = frozenset({"local-limit-exceeded"})
#: ``qa_events`` actions that are maintenance, not a read of the log: no message.
NOT_AUDITED_ACTIONS = frozenset({"outbox-prune", "spool-purge", "outbox-retry", "ui-rerun",
                                 "ui-resend", "atna-resend"})
_LOGIN = {"ui-login": (codes.LOGIN, "0"), "ui-login-failed": (codes.LOGIN, "4"),
          "ui-logout": (codes.LOGOUT, "0"), "api-auth-failed": (codes.LOGIN, "4")}
_INSTANCE_ACTION = {"stored": "C", "overwritten": "U", "duplicate-ignored": "R", "rejected": "C"}
_EXPORT_OUTCOME = {"sent": "0", "committed": "0", "failed": "4", "dead-letter": "8"}
_HELD = ("stored", "duplicate-ignored", "overwritten")
_DEST = re.compile(r"^(?P<ae>[^@\s]{1,16})@(?P<host>[^:\s]+):(?P<port>\d{1,5})$")
_TABLES: tuple[Table, ...] = tuple(cast(Table, m.__table__) for m in (
    AssociationEvent, InstanceEvent, AnalysisEvent, ExportEvent, QaEvent))


@dataclasses.dataclass(frozen=True)
class AtnaContext:
    """What the messages say about us.

    ``app_id`` is our process's UserID (e.g. ``eusdx@host``), ``ae_title`` our AE title,
    ``hostname`` our NetworkAccessPointID; ``destinations`` maps a result destination's name
    (as the ``exports`` rows carry it) to its address (``AE@host:port``, URL, ``mllp://``).
    """

    source: AuditSource
    app_id: str
    ae_title: str
    hostname: str
    destinations: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def us(self, *, requestor: bool, role: Code | None = None) -> Participant:
        """Our application as an ActiveParticipant."""
        return Participant(user_id=self.app_id, requestor=requestor,
                           alternative_user_id=aetitles(self.ae_title),
                           roles=(role,) if role is not None else (),
                           access_point=self.hostname, access_point_type=_nap_type(self.hostname))


def _nap_type(host: str) -> str:
    """NetworkAccessPointTypeCode: ``2`` for an IP address, ``1`` for a machine name."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return "1"
    return "2"


def read_rows(conn: Connection, *, after_seq: int = 0, limit: int = 500,
              since: Any = None, until: Any = None) -> list[tuple[str, dict[str, Any]]]:
    """The next ``limit`` rows (by ``seq``) of the tables that give messages, ``seq > after_seq``.

    ``since``/``until`` (UTC datetimes) keep rows with ``since <= ts < until``. Each table is read
    with the same bound and the merged result cut at ``limit``, so the rows are exactly the
    ``limit`` smallest ``seq`` values (the chain's ``seq`` is gap-free and commits in order).

    Returns ``[(table name, row)]`` in ``seq`` order.
    """
    streams: list[Iterator[tuple[int, str, dict[str, Any]]]] = []
    for table in _TABLES:
        stmt = select(table).where(table.c.seq > after_seq)
        if since is not None:
            stmt = stmt.where(table.c.ts >= since)
        if until is not None:
            stmt = stmt.where(table.c.ts < until)
        rows = conn.execute(stmt.order_by(table.c.seq).limit(limit)).mappings().all()
        streams.append(iter([(int(r["seq"]), table.name, dict(r)) for r in rows]))
    merged = heapq.merge(*streams, key=lambda item: item[0])
    return [(name, row) for _, name, row in itertools.islice(merged, limit)]


def build_events(conn: Connection, rows: Iterable[tuple[str, dict[str, Any]]],
                 ctx: AtnaContext) -> list[AuditEvent]:
    """The messages of ``rows`` (rows without one are skipped), in ``seq`` order."""
    peers = _Peers(conn)
    out = []
    for table, row in rows:
        event = build_event(conn, table, row, ctx, peers)
        if event is not None:
            out.append(event)
    return out


class _Peers:
    """Association id -> (peer AE, peer host), read once per batch."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.cache: dict[int, tuple[str | None, str | None]] = {}

    def get(self, association_id: int | None) -> tuple[str | None, str | None]:
        if association_id is None:
            return None, None
        if association_id not in self.cache:
            row = self.conn.execute(
                select(AssociationEvent.peer_ae, AssociationEvent.peer_host)
                .where(AssociationEvent.seq == association_id)).first()
            self.cache[association_id] = (row.peer_ae, row.peer_host) if row else (None, None)
        return self.cache[association_id]


def build_event(conn: Connection, table: str, row: Mapping[str, Any], ctx: AtnaContext,
                peers: _Peers | None = None) -> AuditEvent | None:
    """The message of one audit row, or ``None`` when the row has none (see the module table)."""
    if table == "associations":
        return _refused_association(row, ctx)
    if table == "instances":
        return _instance(conn, row, ctx, peers or _Peers(conn))
    if table == "analyses":
        return _analysis(conn, row, ctx)
    if table == "exports":
        return _export(conn, row, ctx)
    if table == "qa_events":
        return _qa(row, ctx)
    return None


# --- participants and objects ----------------------------------------------------------------

def _peer(ae: str | None, host: str | None, *, requestor: bool, role: Code | None) -> Participant:
    user = (ae or "").strip() or (host or "").strip() or "unknown"
    return Participant(user_id=user, requestor=requestor,
                       alternative_user_id=aetitles(ae) if ae and ae.strip() else None,
                       roles=(role,) if role is not None else (),
                       access_point=host or None,
                       access_point_type=_nap_type(host) if host else None)


def _patient(pseudonym: str | None) -> tuple[ParticipantObject, ...]:
    if not pseudonym:
        return ()
    return (ParticipantObject(object_id=pseudonym, id_type=codes.ID_PATIENT_NUMBER,
                              type_code="1", role="1"),)


def _study(uid: str, *, life_cycle: str | None, sop_classes: tuple[SopClassRef, ...] = (),
           accession: str | None = None, description: str | None = None) -> ParticipantObject:
    return ParticipantObject(object_id=uid, id_type=codes.ID_STUDY_UID, type_code="2", role="3",
                             life_cycle=life_cycle, description=description,
                             sop_classes=sop_classes,
                             accessions=(accession,) if accession else (), studies=(uid,))


def _study_facts(conn: Connection, study_uid: str, before_seq: int) -> tuple[str | None, str | None]:
    """``(patient pseudonym, accession)`` of a study from its instance rows before ``before_seq``."""
    i = InstanceEvent
    row = conn.execute(
        select(func.max(i.patient_hash), func.max(i.accession))
        .where(i.study_uid == study_uid, i.seq < before_seq)).first()
    return (row[0], row[1]) if row is not None else (None, None)


# --- one builder per row kind ----------------------------------------------------------------

def _refused_association(row: Mapping[str, Any], ctx: AtnaContext) -> AuditEvent | None:
    if row["event"] != "open" or row["accepted"] or row["reason"] in NOT_SECURITY_REFUSALS:
        return None
    reason = row["reason"] or "association refused"
    who = f"{row['peer_ae'] or '?'}@{row['peer_host'] or '?'}"
    subject = ParticipantObject(object_id=who, id_type=codes.ID_NODE, type_code="2", role="13",
                                details=(("Alert Description", reason.encode("utf-8")),))
    return AuditEvent(
        seq=int(row["seq"]), event_id=codes.SECURITY_ALERT, when=row["ts"], outcome="4",
        action="E", types=(codes.NODE_AUTHENTICATION,), outcome_description=reason,
        participants=(_peer(row["peer_ae"], row["peer_host"], requestor=True, role=None),
                      ctx.us(requestor=False, role=codes.ROLE_APPLICATION)),
        objects=(subject,))


def _instance(conn: Connection, row: Mapping[str, Any], ctx: AtnaContext,
              peers: _Peers) -> AuditEvent:
    status = row["status"]
    peer_ae, peer_host = peers.get(row["association_id"])
    objects: list[ParticipantObject] = []
    if row["study_uid"]:
        sop = ((SopClassRef(row["sop_class_uid"], 1, (row["sop_uid"],) if row["sop_uid"] else ()),)
               if row["sop_class_uid"] else ())
        objects.append(_study(row["study_uid"], life_cycle="2" if status in _HELD else None,
                              sop_classes=sop, accession=row["accession"]))
    objects.extend(_patient(row["patient_hash"]))
    return AuditEvent(
        seq=int(row["seq"]), event_id=codes.INSTANCES_TRANSFERRED, when=row["ts"],
        outcome="4" if status == "rejected" else "0", action=_INSTANCE_ACTION.get(status, "C"),
        outcome_description=(row["reason"] or "rejected") if status == "rejected" else None,
        participants=(_peer(peer_ae or row["calling_ae"], peer_host, requestor=True,
                            role=codes.ROLE_SOURCE),
                      ctx.us(requestor=False, role=codes.ROLE_DESTINATION)),
        objects=tuple(objects))


def _analysis(conn: Connection, row: Mapping[str, Any], ctx: AtnaContext) -> AuditEvent:
    study_uid = row["study_uid"]
    i = InstanceEvent
    counts = conn.execute(
        select(i.sop_class_uid, func.count()).where(
            i.study_uid == study_uid, i.seq < row["seq"], i.status.in_(("stored", "overwritten")),
            i.sop_class_uid.is_not(None))
        .group_by(i.sop_class_uid).order_by(i.sop_class_uid)).all()
    pseudonym, accession = _study_facts(conn, study_uid, int(row["seq"]))
    error = row["error"]
    model = Participant(user_id=f"{ctx.app_id}/model", requestor=True,
                        user_name=f"model bundle {row['bundle_version']}",
                        roles=(codes.ROLE_APPLICATION,))
    study = _study(study_uid, life_cycle="6", accession=accession,
                   sop_classes=tuple(SopClassRef(str(uid), int(n)) for uid, n in counts),
                   description=f"analysed by model bundle {row['bundle_version']} "
                               f"(sha256 {row['bundle_sha256'][:16]})")
    return AuditEvent(
        seq=int(row["seq"]), event_id=codes.INSTANCES_ACCESSED, when=row["ts"],
        outcome="4" if error else "0", action="R",
        outcome_description=error.splitlines()[0][:500] if error else None,
        participants=(model, ctx.us(requestor=False)),
        objects=(study, *_patient(pseudonym)))


def _sr_class(conn: Connection, study_uid: str, sr_uid: str | None, before_seq: int) -> str | None:
    if not sr_uid:
        return None
    rows = conn.execute(
        select(StudyEvent.details).where(
            StudyEvent.study_uid == study_uid, StudyEvent.seq < before_seq,
            StudyEvent.state.in_(("reported", "failed")), StudyEvent.details.is_not(None))
        .order_by(StudyEvent.seq.desc())).all()
    for (details,) in rows:
        try:
            parsed = json.loads(details or "null")
        except ValueError:
            continue
        if isinstance(parsed, dict) and parsed.get("sr_sop_uid") == sr_uid:
            value = parsed.get("sr_sop_class")
            return str(value) if value else None
    return None


def _export(conn: Connection, row: Mapping[str, Any], ctx: AtnaContext) -> AuditEvent | None:
    outcome = _EXPORT_OUTCOME.get(row["status"])
    if outcome is None:  # queued, replayed, commit-pending: nothing was transferred yet
        return None
    name = row["destination"]
    address = ctx.destinations.get(name, name)
    m = _DEST.match(address)
    if m:
        dest = _peer(m["ae"], m["host"], requestor=False, role=codes.ROLE_DESTINATION)
        dest = dataclasses.replace(dest, user_id=name)
    else:
        dest = Participant(user_id=name, requestor=False, roles=(codes.ROLE_DESTINATION,),
                           access_point=address if address != name else None,
                           access_point_type="5" if address != name else None)
    study_uid = row["study_uid"]
    sr_uid = row["sr_sop_uid"]
    sr_class = _sr_class(conn, study_uid, sr_uid, int(row["seq"]))
    sop = (SopClassRef(sr_class, 1, (sr_uid,) if sr_uid else ()),) if sr_class else ()
    pseudonym, accession = _study_facts(conn, study_uid, int(row["seq"]))
    error = row["error"]
    return AuditEvent(
        seq=int(row["seq"]), event_id=codes.INSTANCES_TRANSFERRED, when=row["ts"],
        outcome=outcome, action="R",
        outcome_description=(error.splitlines()[0][:500] if error else row["status"])
        if outcome != "0" else None,
        participants=(ctx.us(requestor=True, role=codes.ROLE_SOURCE), dest),
        objects=(_study(study_uid, life_cycle="10", sop_classes=sop, accession=accession,
                        description=f"result SR, attempt {row['attempt']}, {row['status']}"),
                 *_patient(pseudonym)))


def _actor(actor: str) -> Participant:
    return Participant(user_id=actor or "unknown", requestor=True)


def _qa(row: Mapping[str, Any], ctx: AtnaContext) -> AuditEvent | None:
    action = str(row["action"])
    seq, when, actor = int(row["seq"]), row["ts"], str(row["actor"])
    try:
        params = json.loads(row["params"]) if row["params"] else {}
    except ValueError:
        params = {}
    if not isinstance(params, dict):
        params = {}
    if action in NOT_AUDITED_ACTIONS:
        return None
    if action in _LOGIN:
        kind, outcome = _LOGIN[action]
        return AuditEvent(seq=seq, event_id=codes.USER_AUTHENTICATION, when=when, outcome=outcome,
                          action="E", types=(kind,),
                          outcome_description="invalid token" if outcome != "0" else None,
                          participants=(_actor(actor), ctx.us(requestor=False)))
    if action in (APPLICATION_START_ACTION, APPLICATION_STOP_ACTION):
        kind = codes.APPLICATION_START if action == APPLICATION_START_ACTION else codes.APPLICATION_STOP
        launcher = Participant(user_id=str(params.get("user") or actor), requestor=True,
                               roles=(codes.ROLE_LAUNCHER,))
        return AuditEvent(seq=seq, event_id=codes.APPLICATION_ACTIVITY, when=when, outcome="0",
                          action="E", types=(kind,),
                          participants=(ctx.us(requestor=False, role=codes.ROLE_APPLICATION),
                                        launcher))
    if action == VERIFY_FAILED_ACTION:
        problem = str(params.get("problem") or "audit chain verification failed")
        subject = ParticipantObject(object_id="urn:eusdx:audit-log", id_type=codes.ID_URI,
                                    type_code="2", role="13",
                                    details=(("Alert Description", problem.encode("utf-8")),))
        return AuditEvent(seq=seq, event_id=codes.SECURITY_ALERT, when=when, outcome="8",
                          action="E", types=(codes.AUDIT_CHAIN_BROKEN,),
                          outcome_description=problem[:500],
                          participants=(_actor(actor), ctx.us(requestor=False,
                                                              role=codes.ROLE_APPLICATION)),
                          objects=(subject,))
    if action in INSTANCE_ACCESS_ACTIONS and isinstance(params.get("study_uid"), str):
        sop = str(params.get("sop_uid") or "")
        return AuditEvent(seq=seq, event_id=codes.INSTANCES_ACCESSED, when=when, outcome="0",
                          action="R", participants=(_actor(actor), ctx.us(requestor=False)),
                          objects=(_study(str(params["study_uid"]), life_cycle="6",
                                          description=f"result SR {sop} downloaded" if sop
                                          else None),))
    query = ParticipantObject(
        object_id=f"eusdx-audit:{action}", id_type=codes.ID_SEARCH_CRITERIA, type_code="2",
        role="24", query=json.dumps(params, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    objects = [query]
    uid = params.get("study_uid")
    if isinstance(uid, str) and uid:
        objects.append(_study(uid, life_cycle="6"))
    return AuditEvent(seq=seq, event_id=codes.QUERY, when=when, outcome="0", action="E",
                      participants=(dataclasses.replace(_actor(actor), roles=(codes.ROLE_SOURCE,)),
                                    ctx.us(requestor=False, role=codes.ROLE_DESTINATION)),
                      objects=tuple(objects))
