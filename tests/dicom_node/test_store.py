"""C-ECHO / C-STORE against a real node: DCMTK and pynetdicom peers, real SQLite audit log."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom_node.status import Status
from tests.conftest import require_tool
from tests.dicom_node import scu
from tests.dicom_node.conftest import STORESCU_TS_OPTION, rows, storescu
from tests.dicom_node.dicomfiles import (
    dataset_bytes,
    encode,
    raw_file,
    data_file,
    us_instance,
)

pytestmark = pytest.mark.dcmtk

# Real ultrasound / secondary-capture files from pydicom-data, one per transfer syntax family.
REAL_FILES = [
    "US1_UNCR.dcm",  # US, RGB, explicit VR LE, 0.9 MB
    "gdcm-US-ALOKA-16.dcm",  # US, palette colour, implicit VR LE
    "OBXXXX1A_expb.dcm",  # US, palette, explicit VR big endian
    "OBXXXX1A_rle_2frame.dcm",  # US multi-frame, RLE
    "examples_ybr_color.dcm",  # US multi-frame, YBR_FULL_422, JPEG baseline, 30 frames
    "JPGLosslessP14SV1_1s_1f_8b.dcm",  # US, JPEG lossless SV1
    "US1_J2KR.dcm",  # US, JPEG 2000 lossless
    "US1_J2KI.dcm",  # US, JPEG 2000
    "JPGExtended.dcm",  # SC, JPEG extended
    "SC_rgb.dcm",  # SC, RGB
    "image_dfl.dcm",  # SC, deflated explicit VR LE
]


def _spooled(spool: Path, path: Path) -> Path:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return spool / str(ds.StudyInstanceUID) / f"{ds.SOPInstanceUID}.dcm"


def test_echo_with_dcmtk(start_node):
    node, audit, _ = start_node()
    out = subprocess.run([require_tool("/usr/bin/echoscu"), "-aec", "EUSDX", "127.0.0.1",
                          str(node.port)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert rows(audit, "select peer_ae, accepted from associations where event='open'") == [
        ("ECHOSCU", True)]


@pytest.fixture(scope="module")
def dcmtk_pacs(tmp_path_factory):
    """DCMTK storescp in bit-preserving mode (+B): the reference for what storescu put on the
    wire (storescu re-encodes a file's data set, e.g. drops group lengths, so the wire bytes
    are not the file's bytes)."""
    from tests.dicom_node.peers import DcmtkStoreSCP

    with DcmtkStoreSCP(tmp_path_factory.mktemp("dcmtk-pacs"), bit_preserving=True) as pacs:
        yield pacs


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_files_stored_byte_identically(start_node, dcmtk_pacs, name):
    """DCMTK storescu, proposing the file's own transfer syntax, sends each file to us and to
    DCMTK storescp +B. What we spool after the File Meta Information (group 0002) is byte for
    byte what DCMTK stored bit-preserving, i.e. exactly the data set on the wire; the meta
    carries the context's transfer syntax."""
    node, audit, _ = start_node()
    path = data_file(name)
    ts = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    opts = ["-R", *STORESCU_TS_OPTION[ts]]
    out = storescu(node.port, path, extra=opts)
    assert out.returncode == 0, out.stderr
    ref = storescu(dcmtk_pacs.port, path, aec="PACS", extra=opts)
    assert ref.returncode == 0, ref.stderr
    stored = _spooled(node.spool.root, path)
    assert stored.is_file()
    sop = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    reference = dcmtk_pacs.received(str(sop))
    assert dataset_bytes(stored) == dataset_bytes(reference)
    meta = pydicom.dcmread(stored, stop_before_pixels=True).file_meta
    assert str(meta.TransferSyntaxUID) == ts
    (status, size, digest), = rows(audit, "select status, size, digest from instances")
    assert status == "stored" and size == stored.stat().st_size and len(digest) == 64


@pytest.mark.parametrize("name", ["US1_UNCR.dcm", "OBXXXX1A_rle_2frame.dcm", "US1_J2KR.dcm"])
def test_raw_send_stores_the_file_data_set_verbatim(start_node, name):
    """pynetdicom's chunked send puts a file's data set on the wire unchanged: the spooled
    data set equals the original file's data set byte for byte."""
    node, _, _ = start_node()
    path = data_file(name)
    assert scu.send(node.port, path, raw=True) == [0]
    assert dataset_bytes(_spooled(node.spool.root, path)) == dataset_bytes(path)


def test_jpeg_ls_vl_endoscopic_and_seg(start_node, tmp_path):
    """JPEG-LS (pydicom's file lacks Study/Series UIDs: we add them without touching pixels),
    a VL Endoscopic image and a phantom-style SEG are accepted too."""
    node, audit, _ = start_node()
    jls = pydicom.dcmread(data_file("JPEGLSNearLossless_08.dcm"))
    jls.StudyInstanceUID, jls.SeriesInstanceUID = generate_uid(), generate_uid()
    jls_path = tmp_path / "jls.dcm"
    jls.save_as(jls_path, enforce_file_format=True)
    endo = us_instance()
    endo.SOPClassUID = endo.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.1"
    endo.Modality = "ES"
    endo_path = tmp_path / "endo.dcm"
    endo.save_as(endo_path, enforce_file_format=True)
    seg = us_instance()
    seg.SOPClassUID = seg.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    seg.Modality = "SEG"
    seg_path = tmp_path / "seg.dcm"
    seg.save_as(seg_path, enforce_file_format=True)
    for path, opt in ((jls_path, ["-xu"]), (endo_path, []), (seg_path, [])):
        out = storescu(node.port, path, extra=["-R", *opt])
        assert out.returncode == 0, out.stderr
        assert _spooled(node.spool.root, path).is_file()
    assert len(rows(audit, "select 1 from instances where status='stored'")) == 3


@pytest.mark.parametrize(
    ("settings", "aet", "aec", "message", "reason"),
    [
        ({"allowed_aes": ["PACS1"]}, "STRANGER", "EUSDX", "Calling AE Title Not Recognized",
         "calling-ae-not-recognized"),
        ({}, "STORESCU", "NOTUS", "Called AE Title Not Recognized", "called-ae-not-recognized"),
        ({"allowed_aes": ["PACS1"], "allowed_hosts": ["PACS1=10.255.0.1"]}, "PACS1", "EUSDX",
         "Calling AE Title Not Recognized", "calling-ae-host-mismatch"),
    ],
)
def test_unknown_callers_rejected_at_association(start_node, settings, aet, aec, message, reason):
    node, audit, _ = start_node(**settings)
    out = storescu(node.port, data_file("SC_rgb.dcm"), aet=aet, aec=aec)
    assert out.returncode != 0
    assert "Association Rejected" in out.stderr and message in out.stderr
    assert rows(audit, "select peer_ae, accepted, reason from associations") == [
        (aet, False, reason)]
    assert not list(node.spool.root.glob("*/*.dcm"))


def test_allowed_host_accepts_its_ae(start_node):
    node, audit, _ = start_node(allowed_aes=["PACS1"], allowed_hosts=["PACS1=127.0.0.1"])
    out = storescu(node.port, data_file("SC_rgb.dcm"), aet="PACS1")
    assert out.returncode == 0, out.stderr
    assert rows(audit, "select accepted from associations where event='open'") == [(True,)]


def _bad_cases(tmp_path: Path) -> list[tuple[str, Path, Status, str]]:
    good = us_instance()
    sop, study = str(good.SOPInstanceUID), str(good.StudyInstanceUID)
    us_class = "1.2.840.10008.5.1.4.1.1.6.1"
    cases = []
    # truncated in transit: Pixel Data says 768 bytes, 668 follow
    body = encode(good)
    cases.append(("unparseable", raw_file(tmp_path / "trunc.dcm", sop_class=us_class, sop_uid=sop,
                                          dataset=body[:-100]),
                  Status.CANNOT_UNDERSTAND, "unparseable"))
    no_study = us_instance()
    del no_study.StudyInstanceUID
    cases.append(("missing", raw_file(tmp_path / "nostudy.dcm", sop_class=us_class,
                                      sop_uid=str(no_study.SOPInstanceUID), dataset=encode(no_study)),
                  Status.MISSING_UID, "missing-uid"))
    evil = us_instance()
    evil.StudyInstanceUID = "../../etc"
    cases.append(("traversal", raw_file(tmp_path / "evil.dcm", sop_class=us_class,
                                        sop_uid=str(evil.SOPInstanceUID), dataset=encode(evil)),
                  Status.INVALID_UID, "invalid-uid"))
    sc = us_instance()
    sc.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    cases.append(("mismatch", raw_file(tmp_path / "mismatch.dcm", sop_class=us_class,
                                       sop_uid=str(sc.SOPInstanceUID), dataset=encode(sc)),
                  Status.DATASET_MISMATCH, "sop-class-mismatch"))
    other = us_instance(study_uid=study)
    cases.append(("instance", raw_file(tmp_path / "other.dcm", sop_class=us_class,
                                       sop_uid=generate_uid(), dataset=encode(other)),
                  Status.INSTANCE_MISMATCH, "sop-instance-mismatch"))
    return cases


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "in-memory"])
def test_bad_datasets_get_their_status_and_association_survives(start_node, tmp_path, chunked):
    node, audit, enq = start_node(receive_chunked=chunked)
    cases = _bad_cases(tmp_path)
    good = us_instance()
    good_path = tmp_path / "good.dcm"
    good.save_as(good_path, enforce_file_format=True)
    statuses = scu.send(node.port, *(c[1] for c in cases), good_path, raw=True)
    assert statuses == [int(c[2]) for c in cases] + [0]
    reasons = [r[0] for r in rows(audit, "select reason from instances where status='rejected' order by seq")]
    assert reasons == [c[3] for c in cases]
    # nothing of the bad ones is kept; nothing escaped the spool
    kept = sorted(p.name for p in node.spool.root.rglob("*.dcm"))
    assert kept == [f"{good.SOPInstanceUID}.dcm"]
    assert not (node.spool.root.parent / "etc").exists()
    assert not list(node.spool.tmp_dir.iterdir())


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "in-memory"])
@pytest.mark.parametrize("policy", ["keep-first", "reject", "overwrite", "overwrite-if-different"])
def test_resend_policy(start_node, policy, chunked):
    node, audit, _ = start_node(resend_policy=policy, receive_chunked=chunked)
    first = us_instance(pixel_value=1)
    same = us_instance(pixel_value=1)
    for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        setattr(same, k, getattr(first, k))
    same.file_meta = first.file_meta
    changed = us_instance(pixel_value=2)
    for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        setattr(changed, k, getattr(first, k))
    changed.file_meta = first.file_meta
    statuses = scu.send(node.port, first, same, changed)
    stored = node.spool.path_for(str(first.StudyInstanceUID), str(first.SOPInstanceUID))
    kept_pixels = pydicom.dcmread(stored).PixelData[:1]
    audited = [r[0] for r in rows(audit, "select status from instances order by seq")]
    expected = {
        "keep-first": ([0, 0, 0], ["stored", "duplicate-ignored", "duplicate-ignored"], b"\x01"),
        "reject": ([0, 0x0111, 0x0111], ["stored", "rejected", "rejected"], b"\x01"),
        "overwrite": ([0, 0, 0], ["stored", "overwritten", "overwritten"], b"\x02"),
        "overwrite-if-different": ([0, 0, 0], ["stored", "duplicate-ignored", "overwritten"], b"\x02"),
    }[policy]
    assert (statuses, audited, kept_pixels) == expected


def test_disk_above_limit_is_out_of_resources(start_node):
    node, audit, _ = start_node(spool_max_fill_percent=1e-9)
    ds = us_instance()
    assert scu.send(node.port, ds) == [int(Status.OUT_OF_RESOURCES)]
    assert rows(audit, "select status, reason from instances") == [("rejected", "disk-full")]
    assert not list(node.spool.root.rglob("*.dcm"))


def test_audit_unavailable_is_out_of_resources_and_nothing_kept(start_node):
    """The audit database loses its chain head (a real failure of the one write path) while an
    association is open: the C-STORE gets 0xA700 and the spooled file is removed; a new
    association is refused as transient congestion; once the table is back, Success again."""
    import sqlalchemy as sa
    from pynetdicom import AE

    node, audit, _ = start_node()
    ds = us_instance()
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
    assoc = ae.associate("127.0.0.1", node.port, ae_title="EUSDX")
    assert assoc.is_established
    with audit.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE chain_head RENAME TO chain_head_away"))
    try:
        assert int(assoc.send_c_store(ds).Status) == int(Status.OUT_OF_RESOURCES)
        assoc.release()
        assert not list(node.spool.root.rglob("*.dcm"))
        refused = ae.associate("127.0.0.1", node.port, ae_title="EUSDX")
        assert refused.is_rejected
        assert refused.acceptor.primitive.result == 0x02  # rejected-transient
    finally:
        with audit.engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE chain_head_away RENAME TO chain_head"))
    assert scu.send(node.port, ds) == [0]
    assert len(list(node.spool.root.rglob("*.dcm"))) == 1


def test_no_pixel_decoding_on_receive(start_node, monkeypatch):
    """The receive path never touches pixel data: make any pixel decode fail loudly."""
    import pydicom.dataset

    def boom(*a, **k):
        raise AssertionError("pixel data decoded on the receive path")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(boom))
    monkeypatch.setattr(pydicom.dataset.Dataset, "convert_pixel_data", boom)
    node, _, _ = start_node()
    assert storescu(node.port, data_file("US1_J2KR.dcm"), extra=["-R", "-xv"]).returncode == 0
    assert len(list(node.spool.root.rglob("*.dcm"))) == 1
