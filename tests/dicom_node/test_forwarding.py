"""A PACS forwards a whole study; peers misbehave at association level; deflate bombs.

* every object of a forwarded EUS study (images, vendor SR, KOS, GSPS, PDF, video, private) is
  stored and audited, with DCMTK storescu's defaults; with unknown classes off, the private one is
  refused at negotiation and that refusal has an audit row;
* a blank calling AE title gets A-ASSOCIATE-RJ 1/1/3 (not an A-ABORT) and an audit row with the
  peer address; an undecodable request gets the PS3.8 A-ABORT and an audit row;
* a Deflated data set beyond the inflate cap is answered 0xA701 and audited.
"""

from __future__ import annotations

import socket
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicom_node.header import InflateLimitExceeded, parse_header
from dicom_node.sop_classes import ANALYSED, SEGMENTATION, is_analysed, storage_like, stored
from dicom_node.status import Status
from tests.dicom_node import scu
from tests.dicom_node.conftest import rows, storescu_study
from tests.dicom_node.dicomfiles import encode, us_instance
from tests.dicom_node.forwarded import NON_IMAGE, PRIVATE_SOP_CLASS, forwarded_study
from tests.models.test_pixels import data_file

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

VENDOR_IMAGES = ["OBXXXX1A.dcm", "US1_J2KR.dcm", "color3d_jpeg_baseline.dcm", "gdcm-US-ALOKA-16.dcm"]


def test_one_definition_of_stored_and_analysed() -> None:
    import worker.frames

    # the worker reads the node's lists (dicom_node.sop_classes), it keeps no list of its own
    assert not [name for name, value in vars(worker.frames).items()
                if isinstance(value, (set, frozenset, dict, list, tuple)) and
                any(uid in value for uid in ANALYSED)]
    assert set(ANALYSED) <= set(stored()) and SEGMENTATION in stored()
    for kind, uid in NON_IMAGE.items():
        if kind != "private":
            assert uid in stored() and not is_analysed(uid), kind
    assert storage_like(PRIVATE_SOP_CLASS)
    assert storage_like("1.2.840.10008.5.1.4.1.1.999")  # a newer standard storage class
    assert not storage_like("1.2.840.10008.5.1.4.1.2.1.1")  # Patient Root Q/R FIND: not storage
    assert not storage_like("1.2.840.10008.5.1.4.1.1.6.1")  # known already


@pytest.mark.dcmtk
def test_forwarded_study_is_stored_whole(tmp_path: Path, start_node) -> None:
    study_uid, kinds = forwarded_study(tmp_path / "study", [data_file(n) for n in VENDOR_IMAGES])
    node, audit, _ = start_node()
    # DCMTK storescu (defaults, one association per transfer syntax) sends every standard object;
    # it refuses to send a class it does not know, so the private one goes by pynetdicom.
    private = tmp_path / "study" / "private.dcm"
    private.rename(tmp_path / "private.dcm")
    for out in storescu_study(node.port, tmp_path / "study"):
        assert out.returncode == 0, out.stderr
    assert scu.send(node.port, tmp_path / "private.dcm") == [0]
    held = dict(rows(audit, "select sop_uid, status from instances where study_uid = :s", s=study_uid))
    assert held == {uid: "stored" for uid in kinds}
    spooled = {p.stem for p in (node.settings.spool_dir / study_uid).glob("*.dcm")}
    assert spooled == set(kinds)


def test_unknown_classes_off_refuses_the_private_object_with_an_audit_row(
        tmp_path: Path, start_node) -> None:
    from pynetdicom import AE

    study_uid, kinds = forwarded_study(tmp_path / "study", [data_file("OBXXXX1A.dcm")])
    node, audit, _ = start_node(accept_unknown_sop_classes=False)
    ae = AE(ae_title="PACS")
    ae.add_requested_context(PRIVATE_SOP_CLASS, "1.2.840.10008.1.2.1")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", node.port, ae_title="EUSDX")
    assert assoc.is_established
    assert [str(cx.abstract_syntax) for cx in assoc.rejected_contexts] == [PRIVATE_SOP_CLASS]
    assert int(assoc.send_c_store(tmp_path / "study" / "img1.dcm").Status) == 0
    assoc.release()
    held = dict(rows(audit, "select sop_uid, status from instances where study_uid = :s", s=study_uid))
    image = next(uid for uid, kind in kinds.items() if kind == "image")
    assert held == {image: "stored"}
    refused = rows(audit, "select sop_class_uid, reason from instances where status = 'rejected'")
    assert refused == [(PRIVATE_SOP_CLASS, "context-rejected: abstract-syntax-not-supported")]


def _item(kind: int, payload: bytes) -> bytes:
    return bytes([kind, 0]) + struct.pack(">H", len(payload)) + payload


def associate_rq(calling: bytes, called: bytes = b"EUSDX") -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2) proposing Verification, built byte by byte."""
    context = _item(0x20, bytes([1, 0, 0, 0]) + _item(0x30, b"1.2.840.10008.1.1")
                    + _item(0x40, b"1.2.840.10008.1.2"))
    user = _item(0x50, _item(0x51, struct.pack(">I", 16384)) + _item(0x52, b"1.2.3.4"))
    body = (struct.pack(">HH", 1, 0) + called.ljust(16) + calling.ljust(16) + bytes(32)
            + _item(0x10, b"1.2.840.10008.3.1.1.1") + context + user)
    return bytes([1, 0]) + struct.pack(">I", len(body)) + body


def _exchange(port: int, pdu: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(pdu)
        return conn.recv(64)


def test_blank_calling_ae_is_rejected_and_audited(start_node) -> None:
    node, audit, _ = start_node()
    answer = _exchange(node.port, associate_rq(b" " * 16))
    # A-ASSOCIATE-RJ (type 3): rejected-permanent (1), service-user (1), calling AE not recognized (3)
    assert answer[:1] == b"\x03" and tuple(answer[7:10]) == (1, 1, 3)
    [(peer_ae, host, accepted, reason)] = rows(
        audit, "select peer_ae, peer_host, accepted, reason from associations where event='open'")
    assert (peer_ae, host, bool(accepted), reason) == ("", "127.0.0.1", False, "calling-ae-blank")
    # and the node still serves everyone else
    assert scu.send(node.port, us_instance()) == [0]


def test_undecodable_request_is_aborted_and_audited(start_node) -> None:
    node, audit, _ = start_node()
    answer = _exchange(node.port, b"\x01\x00\x00\x00\x00\x08" + bytes(8))
    assert answer[:1] == b"\x07"  # A-ABORT: PS3.8 Sta2 + Evt19 -> AA-1
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = rows(audit, "select peer_host, accepted, reason from associations")
        if found:
            break
        time.sleep(0.1)
    assert found == [("127.0.0.1", 0, "aborted: association request could not be decoded")]
    with socket.create_connection(("127.0.0.1", node.port), timeout=5):
        pass  # a TCP probe that sends nothing is not an association attempt
    assert len(rows(audit, "select * from associations")) == 1


def _deflated(ds: pydicom.Dataset) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(encode(ds)) + packer.flush()


def test_inflate_cap_by_size_and_ratio() -> None:
    ds = us_instance(rows=512)
    ds.PixelData = bytes(len(ds.PixelData))  # zeros: compresses about 1000:1
    data = _deflated(ds)
    assert parse_header(data, DeflatedExplicitVRLittleEndian).sop_uid == ds.SOPInstanceUID
    ratio = len(encode(ds)) / len(data)
    assert ratio > 20
    with pytest.raises(InflateLimitExceeded, match="inflates beyond"):
        parse_header(data, DeflatedExplicitVRLittleEndian, inflate_limit=(2**31, ratio / 2))
    with pytest.raises(InflateLimitExceeded, match="inflates beyond 1000 bytes"):
        parse_header(data, DeflatedExplicitVRLittleEndian, inflate_limit=(1000, 10**6))
    ok = parse_header(data, DeflatedExplicitVRLittleEndian, inflate_limit=(2**31, ratio * 2))
    assert ok.sop_uid == ds.SOPInstanceUID


def test_deflate_bomb_is_refused_with_a701_and_audited(tmp_path: Path, start_node) -> None:
    node, audit, _ = start_node(inflate_max_ratio=50.0)
    bomb = us_instance(rows=1024)
    bomb.PixelData = bytes(len(bomb.PixelData))
    bomb.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "bomb.dcm"
    bomb.save_as(path, enforce_file_format=True)
    fine = us_instance(rows=128)
    fine.PixelData = np.random.default_rng(1).integers(0, 255, len(fine.PixelData), dtype=np.uint8).tobytes()
    fine.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    fine_path = tmp_path / "fine.dcm"
    fine.save_as(fine_path, enforce_file_format=True)
    assert path.stat().st_size * 50 < len(bomb.PixelData)
    assert scu.send(node.port, path, fine_path, raw=True) == [int(Status.INFLATE_LIMIT), 0]
    assert rows(audit, "select status, reason from instances order by seq") == [
        ("rejected", "inflate-limit"), ("stored", None)]


def test_retired_ultrasound_classes_are_stored(start_node) -> None:
    # color-pl.dcm: Ultrasound Image Storage (Retired), 1.2.840.10008.5.1.4.1.1.6, still sent by
    # old processors; pynetdicom does not list it as a storage class
    node, audit, _ = start_node()
    path = data_file("color-pl.dcm")
    assert str(pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID) == "1.2.840.10008.5.1.4.1.1.6"
    assert scu.send(node.port, path) == [0]
    assert rows(audit, "select status, sop_class_uid from instances") == [
        ("stored", "1.2.840.10008.5.1.4.1.1.6")]
