"""Webhook notices that are not SRs: a study that failed, a result that went to dead-letter.

:func:`notify` puts one JSON item in the export outbox for every webhook destination that asked
for the event; the :class:`~dicom_node.export.ExportRunner` delivers it like any other item
(same back-off, dead-letter and audit rows). The item is durable when :func:`notify` returns.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from dicom_node.channels.webhook import SR_NOTICE
from dicom_node.outbox import Outbox
from dicom_node.ports import ExportAudit
from eusdx.config import Settings
from eusdx.uids import check_uid

__all__ = ["notify", "EVENT_OBJECT"]

#: Object file name of an event item.
EVENT_OBJECT = "event.json"


def notify(settings: Settings, event: str, study_uid: str, *, reason: str | None = None,
           accession: str | None = None, destination: str | None = None,
           sr_sop_uid: str | None = None, audit: ExportAudit | None = None,
           now: float | None = None) -> str | None:
    """Queue a ``failure`` or ``dead-letter`` message for the webhooks subscribed to it.

    Parameters
    ----------
    event
        ``failure`` (a study could not be analysed) or ``dead-letter`` (a result was given up).
    reason
        The classified failure text (``eusdx.failures.classify(exc).as_text()``).
    destination, sr_sop_uid
        For ``dead-letter``: which destination gave up on which SR.
    audit
        Optional ``AuditLog``: a ``queued`` export row per webhook is written now.

    Returns
    -------
    str or None
        The outbox item id, or ``None`` when no webhook asked for this event.

    Raises
    ------
    ValueError
        ``event`` is not ``failure`` or ``dead-letter``.
    eusdx.errors.DataError
        ``study_uid`` is not a valid UID.
    """
    if event not in ("failure", "dead-letter"):
        raise ValueError(f"event {event!r} is not failure or dead-letter")
    check_uid(study_uid, "StudyInstanceUID")
    names = [d.name for d in settings.result_destinations
             if d.kind == "webhook" and event in d.events]
    if not names:
        return None
    now = time.time() if now is None else now
    message = {"event": event, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
               "study_uid": study_uid, "accession": accession, "reason": reason,
               "destination": destination, "sr_sop_uid": sr_sop_uid, "notice": SR_NOTICE}

    def write(path: Path) -> None:
        path.write_text(json.dumps(message, sort_keys=True), encoding="utf-8")

    outbox = Outbox(settings.outbox_path / "export")
    key = f"event|{event}|{study_uid}|{destination or ''}|{sr_sop_uid or ''}|{now!r}"
    item_id, created = outbox.add(sop_uid=None, sop_class_uid=None, study_uid=study_uid,
                                  write_object=write, destinations=names, now=now, key=key,
                                  object_name=EVENT_OBJECT,
                                  extra={"kind": "event", "event": event, "accession": accession})
    if created and audit is not None:
        from dicom_node.export import _audit_queued

        _audit_queued(outbox, audit, item_id)
    return item_id
