"""The export outbox's lifecycle: a state index that keeps every scan O(pending work), crash-safe
index updates, the one-time index of an old outbox, and pruning of confirmed items."""

from __future__ import annotations

import json
import time
from pathlib import Path

from dicom_node.outbox import DEAD_LETTER, PENDING, SENT, Outbox, item_state
from dicom_node.outbox import ITEM_DONE as DONE
from dicom_node.outbox import ITEM_WAITING as WAITING

STUDY = "1.2.826.0.1.3680043.8.498.5"


def _add(box: Outbox, n: int, dests: list[str] | None = None) -> str:
    iid, created = box.add(sop_uid=f"1.2.3.{n}", sop_class_uid="1.2.840.10008.5.1.4.1.1.88.33",
                           study_uid=STUDY, write_object=lambda p: p.write_bytes(b"DICM"),
                           destinations=dests if dests is not None else ["A@h:1"])
    assert created
    return iid


def test_index_follows_every_state_change(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "export")
    iid = _add(box, 1, ["A@h:1", "B@h:2"])
    assert box.indexed(WAITING) == [iid] and box.due()
    box.update_destination(iid, "A@h:1", state=SENT, sent_at=time.time())
    assert box.indexed(WAITING) == [iid]  # B still to go
    box.update_destination(iid, "B@h:2", state=DEAD_LETTER)
    assert (box.indexed(WAITING), box.indexed(DEAD_LETTER)) == ([], [iid])
    assert box.rearm(None) == [(iid, "B@h:2")]
    assert box.indexed(WAITING) == [iid] and box.indexed(DEAD_LETTER) == []
    box.update_destination(iid, "B@h:2", state=SENT, sent_at=time.time())
    assert (box.indexed(WAITING), box.indexed(DONE)) == ([], [iid])
    assert box.due() == [] and box.next_due() is None
    held = _add(box, 2, [])
    assert item_state(box.get(held)) == "held" and held not in box.indexed(WAITING)


def test_a_stale_index_entry_is_ignored_and_a_crash_never_hides_an_item(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "export")
    iid = _add(box, 1)
    # A crash after the new entry was written but before the record changed: both entries exist.
    (tmp_path / "export" / ".state" / DONE / iid).write_text("0")
    assert box.records(WAITING)[0]["id"] == iid
    assert box.records(DONE) == []
    assert box.prune_sent(time.time() + 10) == []  # the stale entry is repaired, the item kept
    assert box.indexed(DONE) == [] and box.get(iid)["destinations"]["A@h:1"]["state"] == PENDING


def test_an_outbox_without_index_is_indexed_once(tmp_path: Path) -> None:
    root = tmp_path / "export"
    box = Outbox(root)
    pending, sent = _add(box, 1), _add(box, 2)
    box.update_destination(sent, "A@h:1", state=SENT, sent_at=123.0)
    import shutil

    shutil.rmtree(root / ".state")  # as an outbox written by an older eusdx
    again = Outbox(root)
    assert again.indexed(WAITING) == [pending] and again.indexed(DONE) == [sent]
    assert (root / ".state" / DONE / sent).read_text() == "123.0"


def test_prune_sent_removes_confirmed_items_oldest_first(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "export")
    ids = [_add(box, n) for n in range(4)]
    for n, iid in enumerate(ids[:3]):
        box.update_destination(iid, "A@h:1", state=SENT, sent_at=1000.0 + n)
    assert [r["id"] for r in box.prune_sent(2000.0, limit=2, dry_run=True)] == ids[:2]
    assert all((tmp_path / "export" / iid).is_dir() for iid in ids)
    gone = box.prune_sent(1001.5)
    assert [(r["id"], r["study_uid"]) for r in gone] == [(ids[0], STUDY), (ids[1], STUDY)]
    assert not (tmp_path / "export" / ids[0]).exists()
    assert box.indexed(DONE) == [ids[2]] and box.indexed(WAITING) == [ids[3]]
    assert json.loads((tmp_path / "export" / ids[3] / "item.json").read_text())["id"] == ids[3]
