"""Retention and cleaning: what goes when, always audited first; disk pressure takes exported studies
first; unsettled studies are never touched; ``eusdx spool purge --dry-run`` shows the plan."""

from __future__ import annotations

import json
import time
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from audit import AuditLog
from dicom_node import cleaner as cleaner_mod
from dicom_node.assembler import MARKER
from dicom_node.cleaner import Cleaner
from dicom_node.outbox import SENT, Outbox
from dicom_node.spool import Spool
from eusdx.config import Settings

DAY = 86400.0
OLD_EXPORTED, OLD_FAILED, NEW_EXPORTED, QUEUED, NOT_ROUTED = (f"1.2.826.0.1.3680043.8.498.7{i}" for i in range(5))


def _study(spool: Path, uid: str, size: int = 1000) -> None:
    (spool / uid).mkdir()
    (spool / uid / "1.2.3.dcm").write_bytes(b"x" * size)
    (spool / uid / MARKER).write_text(json.dumps({"instances": 1, "state": "complete"}))


@pytest.fixture
def world(make_settings: Callable[..., Settings], audit_for: Callable[[Settings], AuditLog]) -> dict[str, Any]:
    settings = make_settings(spool_retention_days=30, retention_days=7, outbox_sent_retention_days=7)
    audit = audit_for(settings)
    for uid, states in ((OLD_EXPORTED, ("received", "complete", "queued", "analysing", "reported", "exported")),
                        (OLD_FAILED, ("received", "complete", "queued", "analysing", "failed")),
                        (NEW_EXPORTED, ("received", "complete", "queued", "analysing", "reported", "exported")),
                        (QUEUED, ("received", "complete", "queued")),
                        (NOT_ROUTED, ("received", "not-routed"))):
        _study(settings.spool_dir, uid)
        for state in states:
            audit.study_state(study_uid=uid, state=state)
    outbox = Outbox(settings.outbox_path / "export")
    iid, _ = outbox.add(sop_uid="1.2.9.9", sop_class_uid="1.2.840.10008.5.1.4.1.1.88.33", study_uid=OLD_EXPORTED,
                        write_object=lambda p: p.write_bytes(b"DICM"), destinations=["P@h:1"])
    outbox.update_destination(iid, "P@h:1", state=SENT, sent_at=time.time())
    return {"settings": settings, "audit": audit, "spool": Spool(settings.spool_dir), "outbox": outbox, "item": iid}


def _cleaner(world: dict[str, Any], days_later: float, age: dict[str, float] | None = None) -> Cleaner:
    """A cleaner whose clock is ``days_later`` days ahead; ``age`` moves single studies further back."""
    audit = world["audit"]
    real = audit.study_row

    class Shifted:
        def __getattr__(self, name: str) -> Any:
            return getattr(audit, name)

        def study_row(self, uid: str) -> dict[str, Any] | None:
            row = real(uid)
            if row is not None and age and uid in age:
                import datetime as dt

                row["updated_at"] = row["updated_at"] - dt.timedelta(days=age[uid])
            return row

    return Cleaner(world["settings"], Shifted(), world["spool"], world["outbox"],
                   clock=lambda: time.time() + days_later * DAY)


def test_retention_deletes_only_settled_studies_after_their_days_and_audits_first(world: dict[str, Any]) -> None:
    cleaner = _cleaner(world, days_later=10, age={OLD_EXPORTED: 25, OLD_FAILED: 25})
    plan = cleaner.run(dry_run=True, pressure=False)
    assert {(d.what, d.study_uid, d.cause) for d in plan} == {
        ("study", OLD_EXPORTED, "retention"), ("study", OLD_FAILED, "retention"),
        ("study", NOT_ROUTED, "retention"), ("outbox-item", OLD_EXPORTED, "retention")}
    assert all((world["settings"].spool_dir / d.study_uid).is_dir() for d in plan)  # dry run
    done = cleaner.run(pressure=False)
    assert len(done) == 4
    spool = world["settings"].spool_dir
    assert not (spool / OLD_EXPORTED).exists() and not (spool / NOT_ROUTED).exists()
    assert (spool / NEW_EXPORTED).is_dir() and (spool / QUEUED).is_dir()  # young, and unsettled
    assert not (world["settings"].outbox_path / "export" / world["item"]).exists()
    audit: AuditLog = world["audit"]
    state, reason, details = audit.last_settled(OLD_EXPORTED)  # type: ignore[misc]
    assert state == "exported" and reason.startswith("retention: spool instances deleted")
    assert details["purged"] is True
    with audit.engine.connect() as conn:
        import sqlalchemy as sa

        actions = [r[0] for r in conn.execute(sa.text("select action from qa_events"))]
    assert actions == ["outbox-prune"]


def test_disk_pressure_deletes_exported_studies_first_and_never_unsettled_ones(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    Usage = namedtuple("Usage", "total used free")
    # 100 kB disk, 94 % used: 4 kB must go to get under the 90 % mark
    monkeypatch.setattr(cleaner_mod.shutil, "disk_usage", lambda _: Usage(100_000, 94_000, 6_000))
    cleaner = _cleaner(world, days_later=0, age={OLD_FAILED: 5, NEW_EXPORTED: 1, OLD_EXPORTED: 2})
    plan = [d for d in cleaner.plan(pressure=True) if d.cause == "disk-pressure"]
    # exported first, oldest first; the young failed study only when that is not enough
    assert [d.study_uid for d in plan][:2] == [OLD_EXPORTED, NEW_EXPORTED]
    assert QUEUED not in {d.study_uid for d in plan}


def test_spool_purge_dry_run_cli(world: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.main import main

    settings: Settings = world["settings"]
    monkeypatch.setenv("EUSDX_SPOOL_DIR", str(settings.spool_dir))
    monkeypatch.setenv("EUSDX_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("EUSDX_RETENTION_DAYS", "0")
    monkeypatch.setenv("EUSDX_SPOOL_CLEAN_FILL_PERCENT", "100")
    assert main(["spool", "purge", "--dry-run", "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["study_uid"], x["cause"]) for x in lines] == [(NOT_ROUTED, "retention")]
    assert (settings.spool_dir / NOT_ROUTED).is_dir()
