"""Pure pieces: UID gate, spool durability primitives, header parser, routing, outboxes."""

from __future__ import annotations

import zlib

import pytest

from dicom_node.header import InstanceHeader, UnparseableDataset, parse_header
from dicom_node.outbox import Outbox, OutboxItemNotFound, item_id_for
from dicom_node.pending import PendingStudies
from dicom_node.routing import RoutingRule
from dicom_node.spool import Spool
from eusdx.config import load_settings
from eusdx.durable import sha256_file
from eusdx.uids import InvalidUID, check_uid, is_valid_uid
from tests.dicom_node.dicomfiles import encode, us_instance


@pytest.mark.parametrize("uid", ["1.2.3", "1.2.840.10008.5.1.4.1.1.6.1", "2.25.0123", "1" * 64])
def test_valid_uids(uid):
    assert is_valid_uid(uid) and check_uid(uid) == uid


@pytest.mark.parametrize("uid", ["", "../../etc", "1..2", ".1.2", "1.2.", "1.2/3", "1.2 ",
                                 "1" * 65, "1.2\x00", None, 12])
def test_invalid_uids(uid):
    assert not is_valid_uid(uid)
    with pytest.raises(InvalidUID, match="is not a valid UID"):
        check_uid(uid, "StudyInstanceUID")


def test_spool_paths_never_escape(tmp_path):
    spool = Spool(tmp_path / "spool")
    with pytest.raises(InvalidUID, match="StudyInstanceUID"):
        spool.path_for("../../etc", "1.2")
    with pytest.raises(InvalidUID, match="SOPInstanceUID"):
        spool.path_for("1.2", "../passwd")
    assert spool.path_for("1.2", "3.4") == spool.root / "1.2" / "3.4.dcm"


def test_spool_commit_is_atomic(tmp_path):
    spool = Spool(tmp_path / "spool")
    temp = spool.new_temp()
    temp.write(b"abc")
    temp.write(memoryview(b"def"))
    temp.close()
    spool.sync_file(temp.path)
    final = spool.place(temp.path, "1.2", "3.4")
    assert final.read_bytes() == b"abcdef"
    assert list(spool.tmp_dir.iterdir()) == []
    assert list(spool.studies()) == ["1.2"] and spool.instances("1.2") == [final]


def test_spool_place_replaces(tmp_path):
    spool = Spool(tmp_path / "spool")
    src = tmp_path / "incoming.dcm"
    src.write_bytes(b"one")
    final = spool.place(src, "1.2", "3.4")
    src.write_bytes(b"two")
    assert spool.place(src, "1.2", "3.4") == final and final.read_bytes() == b"two"
    assert not src.exists()


def test_spool_removes_stale_temp_files_at_start(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.new_temp().write(b"partial")
    assert list(spool.tmp_dir.iterdir())
    Spool(tmp_path / "spool")
    assert list(spool.tmp_dir.iterdir()) == []


def test_parse_header_reads_uids_without_pixels():
    ds = us_instance()
    h = parse_header(encode(ds), "1.2.840.10008.1.2.1")
    assert (h.study_uid, h.sop_uid, h.modality, h.body_part) == (
        ds.StudyInstanceUID, ds.SOPInstanceUID, "US", "STOMACH")


def test_parse_header_deflated():
    ds = us_instance()
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = c.compress(encode(ds)) + c.flush()
    assert parse_header(deflated, "1.2.840.10008.1.2.1.99").sop_uid == ds.SOPInstanceUID


@pytest.mark.parametrize("cut", [1, 10, 100, 700])
def test_parse_header_refuses_truncated_data(cut):
    with pytest.raises(UnparseableDataset, match="shorter|ends inside|cannot parse"):
        parse_header(encode(us_instance())[:-cut], "1.2.840.10008.1.2.1")


def test_parse_header_refuses_bad_deflate():
    with pytest.raises(UnparseableDataset, match="cannot parse"):
        parse_header(b"\xff" * 64, "1.2.840.10008.1.2.1.99")


@pytest.mark.parametrize(
    ("modality", "body", "desc", "routed"),
    [("US", "STOMACH", None, True), ("US", "stomach", None, True), ("US", None, "EUS stomach", True),
     ("US", None, "Endosonography gastric", True), ("US", "LIVER", "abdomen", False),
     ("SEG", "STOMACH", "EUS", False), (None, None, None, False)],
)
def test_routing_rule(modality, body, desc, routed):
    rule = RoutingRule.from_settings(load_settings(None))
    h = InstanceHeader("1", "2", "3", "4", modality=modality, body_part=body,
                       series_description=desc)
    assert rule.matches(h) is routed


def test_pending_studies_roundtrip(tmp_path):
    p = PendingStudies(tmp_path / "enqueue")
    p.put("1.2.3", 4)
    p.put("1.2.4", 1)
    p.put("1.2.3", 5)
    assert p.studies() == ["1.2.3", "1.2.4"] and len(p) == 2
    p.update("1.2.3", queued_audited=True)
    assert p.get("1.2.3")["queued_audited"] is True
    p.done("1.2.3")
    assert p.studies() == ["1.2.4"]


def test_outbox_dedup_rearm_and_depth(tmp_path):
    box = Outbox(tmp_path / "export")
    def write(path):
        path.write_bytes(b"DICM")
    iid, created = box.add(sop_uid="1.2.3", sop_class_uid="1.2", study_uid="9.9",
                           write_object=write, destinations=["A@h:1", "B@h:2"], now=100.0)
    assert created and iid == item_id_for("1.2.3")
    assert box.add(sop_uid="1.2.3", sop_class_uid="1.2", study_uid="9.9", write_object=write,
                   destinations=["A@h:1"]) == (iid, False)
    assert box.due(99.0) == [] and box.due(100.0) == [(iid, "A@h:1"), (iid, "B@h:2")]
    box.update_destination(iid, "A@h:1", state="dead-letter", attempts=3)
    box.update_destination(iid, "B@h:2", state="sent")
    assert box.depth(with_sent=True) == {"pending": 0, "sent": 1, "dead-letter": 1}
    assert box.depth() == {"pending": 0, "dead-letter": 1}  # O(pending): what /healthz and /metrics read
    assert box.rearm(None, now=200.0) == [(iid, "A@h:1")]
    assert box.due(200.0) == [(iid, "A@h:1")]
    with pytest.raises(OutboxItemNotFound, match="no outbox item"):
        box.rearm("../x")


def test_parse_header_multivalued_uid_is_kept_whole_and_invalid():
    ds = us_instance()
    ds.StudyInstanceUID = ["1.2.3", "4.5.6"]
    h = parse_header(encode(ds), "1.2.840.10008.1.2.1")
    assert h.study_uid == "1.2.3\\4.5.6" and not is_valid_uid(h.study_uid)


def test_export_backoff_doubles_and_is_capped(make_settings):
    from dicom_node.export import ExportRunner

    runner = ExportRunner(make_settings(export_backoff_seconds=5, export_backoff_max_seconds=30),
                          audit=None)
    assert [runner.delay(n) for n in range(1, 6)] == [5, 10, 20, 30, 30]


def test_sweep_tmp_removes_only_stale_files(tmp_path):
    import os
    import time

    spool = Spool(tmp_path / "spool")
    old, fresh = spool.tmp_dir / "old.dcm", spool.tmp_dir / "fresh.dcm"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (time.time() - 120, time.time() - 120))
    assert spool.sweep_tmp(60) == 1
    assert [p.name for p in spool.tmp_dir.iterdir()] == ["fresh.dcm"]


def test_in_memory_digest_equals_file_digest_after_rename(tmp_path):
    """The digest of an in-memory receive must not depend on the temp file still existing."""
    from types import SimpleNamespace

    from dicom_node.receive import receive

    spool = Spool(tmp_path / "spool")
    ds = us_instance()
    data = encode(ds)
    event = SimpleNamespace(
        encoded_dataset=lambda include_meta=False: data,
        request=SimpleNamespace(AffectedSOPClassUID=ds.SOPClassUID,
                                AffectedSOPInstanceUID=ds.SOPInstanceUID),
        context=SimpleNamespace(transfer_syntax="1.2.840.10008.1.2.1"),
    )
    got = receive(event, spool, "PEER", chunked=False)
    final = spool.place(got.path, str(ds.StudyInstanceUID), str(ds.SOPInstanceUID))
    assert got.digest() == sha256_file(final)
