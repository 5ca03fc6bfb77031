"""Durable list of complete studies the queue has not accepted yet (the enqueue outbox).

Layout: ``<outbox_dir>/enqueue/<StudyInstanceUID>.json``, one fsynced file per study, written
before the first enqueue attempt and removed only after the :class:`~dicom_node.enqueue.Enqueuer`
returned. A study therefore reaches the queue at least once even across broker outages and
restarts; the worker's idempotency check (``AuditLog.analysis_exists``) makes a second delivery
harmless.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from eusdx.durable import atomic_write_json, read_json_object, remove_durably, sweep_temporaries
from eusdx.uids import check_uid

__all__ = ["PendingStudies"]


class PendingStudies:
    """The enqueue outbox under ``root`` (created if missing)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        sweep_temporaries(self.root)

    def _path(self, study_uid: str) -> Path:
        return self.root / f"{check_uid(study_uid, 'StudyInstanceUID')}.json"

    def put(self, study_uid: str, instances: int) -> None:
        """Record a complete study durably (idempotent: a second put refreshes the record)."""
        path = self._path(study_uid)
        record = {"study_uid": study_uid, "instances": instances, "since": time.time(),
                  "queued_audited": False, "attempts": 0}
        if path.exists():
            old = read_json_object(path)
            record["since"] = old.get("since", record["since"])
        atomic_write_json(path, record)

    def get(self, study_uid: str) -> dict[str, Any] | None:
        path = self._path(study_uid)
        return read_json_object(path) if path.exists() else None

    def update(self, study_uid: str, **fields: Any) -> None:
        """Change fields of a pending record (e.g. ``queued_audited=True``)."""
        path = self._path(study_uid)
        record = read_json_object(path)
        record.update(fields)
        atomic_write_json(path, record)

    def done(self, study_uid: str) -> None:
        """The queue has the study: forget it."""
        remove_durably(self._path(study_uid))

    def studies(self) -> list[str]:
        """Pending study UIDs, oldest first."""
        records = []
        for path in self.root.glob("*.json"):
            try:
                rec = read_json_object(path)
                records.append((float(rec.get("since", 0.0)), str(rec["study_uid"])))
            except (OSError, ValueError, KeyError):
                continue
        return [uid for _, uid in sorted(records)]

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*.json"))
