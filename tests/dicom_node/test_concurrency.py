"""Several peers at once, the association limit, and both receive modes."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydicom.uid import generate_uid

from tests.conftest import require_tool
from tests.dicom_node import scu
from tests.dicom_node.peers import wait_for
from tests.dicom_node.conftest import rows
from tests.dicom_node.dicomfiles import dataset_bytes, us_instance

pytestmark = pytest.mark.dcmtk


def test_concurrent_associations_all_stored(start_node, tmp_path):
    node, audit, enq = start_node()
    study = generate_uid()
    folders = []
    for k in range(4):
        folder = tmp_path / f"peer{k}"
        folder.mkdir()
        for i in range(5):
            us_instance(study_uid=study, pixel_value=k * 10 + i).save_as(
                folder / f"{i}.dcm", enforce_file_format=True)
        folders.append(folder)
    exe = require_tool("/usr/bin/storescu")

    def send(folder):
        return subprocess.run([exe, "-aec", "EUSDX", "127.0.0.1", str(node.port), "+sd",
                               str(folder)], capture_output=True, text=True, timeout=60)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(send, folders))
    assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr for r in results]
    assert len(node.spool.instances(study)) == 20
    assert rows(audit, "select count(*) from instances where status='stored'") == [(20,)]
    # the close row is written when the connection closes, just after storescu returns
    wait_for(lambda: rows(audit, "select count(*) from associations where event='close'")
             == [(4,)])


def test_association_limit_rejects_extra_peer(start_node):
    """max_associations=1: a second association while the first is open is refused
    (A-ASSOCIATE-RJ, local limit exceeded) and the first keeps working."""
    from pynetdicom import AE

    node, audit, _ = start_node(max_associations=1)
    ds = us_instance()
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
    first = ae.associate("127.0.0.1", node.port, ae_title="EUSDX")
    assert first.is_established
    second = ae.associate("127.0.0.1", node.port, ae_title="EUSDX")
    assert second.is_rejected
    assert int(first.send_c_store(ds).Status) == 0
    first.release()
    wait_for(lambda: len(rows(audit, "select 1 from associations where event='close'")) == 1)
    assert rows(audit, "select accepted, reason from associations where event='open' and not accepted") == [
        (False, "local-limit-exceeded")]
    # the slot is free again once the first association has closed
    third = ae.associate("127.0.0.1", node.port, ae_title="EUSDX")
    assert third.is_established
    third.release()


def test_released_associations_do_not_count_against_the_limit(start_node):
    """Peers that associate, store and release in a tight loop are never refused below the limit
    (pynetdicom's own counter includes threads still closing; ours counts admitted associations)."""
    from pynetdicom import AE

    node, audit, _ = start_node(max_associations=2)
    ds = us_instance()
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
    for _ in range(30):
        assoc = ae.associate("127.0.0.1", node.port, ae_title="EUSDX")
        assert assoc.is_established
        assert int(assoc.send_c_store(ds).Status) == 0
        assoc.release()
    wait_for(lambda: len(rows(audit, "select 1 from associations where event='close'")) == 30)
    assert rows(audit, "select count(*) from associations where event='open' and not accepted") == [(0,)]


@pytest.mark.parametrize("chunked", [True, False])
def test_both_receive_modes_keep_the_same_bytes(start_node, tmp_path, chunked):
    node, audit, _ = start_node(receive_chunked=chunked, resend_policy="overwrite-if-different")
    ds = us_instance(rows=64)
    path = tmp_path / "a.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert scu.send(node.port, path, path, raw=True) == [0, 0]
    stored = node.spool.path_for(str(ds.StudyInstanceUID), str(ds.SOPInstanceUID))
    assert dataset_bytes(stored) == dataset_bytes(path)
    assert [r[0] for r in rows(audit, "select status from instances order by seq")] == [
        "stored", "duplicate-ignored"]
    assert not list(node.spool.tmp_dir.iterdir())
