"""Disk full: the spool on a 20 MiB tmpfs (mounted by the test when it runs as root; otherwise
the fill-percent threshold is set just below the real file system's current fill).

New instances get 0xA700 above ``spool_max_fill_percent`` and when the disk is really full
(ENOSPC in the middle of a write); nothing half-written remains; service resumes by itself
when space returns.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from dicom_node.status import Status
from tests.dicom_node.dicomfiles import dataset_bytes, encode, us_instance
from tests.reliability.conftest import TcpProxy, send_stream, wait_for

MIB_ROWS = 21845  # 16 columns x 3 samples x 21845 rows ~ 1 MiB of pixel data


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path | None]:
    """A 20 MiB tmpfs, or None where mounting is not permitted."""
    mnt = tmp_path / "vol"
    mnt.mkdir()
    ok = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mnt)],
        capture_output=True).returncode == 0
    yield mnt if ok else None
    if ok:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _ballast(path: Path, mib: float) -> None:
    with open(path, "wb") as fh:
        fh.write(b"\x00" * int(mib * (1 << 20)))


def _clean(spool: Path) -> None:
    # an aborted receive may be cleaned up by its association thread a moment later
    wait_for(lambda: not list((spool / ".tmp").iterdir()), 5, "temp files to be removed")
    for p in spool.rglob("*.dcm"):
        pydicom.dcmread(p)  # every kept file complete and readable


def test_spool_full_is_out_of_resources_and_resumes(start_node, make_settings, tmp_path,
                                                    small_volume) -> None:
    if small_volume is None:  # fallback: threshold just below the real file system's fill
        probe = make_settings()
        used = shutil.disk_usage(probe.spool_dir)
        fill = 100.0 * (used.total - used.free) / used.total
        node, audit, _ = start_node(spool_max_fill_percent=max(fill - 0.01, 1e-6))
        assert [s for _, s in send_stream(node.port, [us_instance()]).acked] == [0xA700]
        pytest.skip("tmpfs mount not permitted: only the threshold path was checked")
    spool = small_volume / "spool"
    spool.mkdir()
    settings = make_settings(spool_dir=spool, spool_max_fill_percent=60)
    node, audit, _ = start_node(settings)
    ballast = small_volume / "ballast"
    _ballast(ballast, 6)
    sent = [us_instance(rows=MIB_ROWS) for _ in range(12)]
    res = send_stream(node.port, sent)
    statuses = [s for _, s in res.acked]
    assert res.error is None and len(statuses) == 12
    k = statuses.index(int(Status.OUT_OF_RESOURCES))
    assert k >= 3 and statuses[:k] == [0] * k and set(statuses[k:]) == {0xA700}, statuses
    for ds in sent[:k]:
        path = spool / str(ds.StudyInstanceUID) / f"{ds.SOPInstanceUID}.dcm"
        assert dataset_bytes(path) == encode(ds)
    assert len(list(spool.rglob("*.dcm"))) == k
    _clean(spool)
    import sqlalchemy as sa

    with audit.engine.connect() as conn:
        reasons = [r[0] for r in conn.execute(sa.text(
            "select reason from instances where status='rejected'"))]
    assert reasons == ["disk-full"] * (12 - k)
    ballast.unlink()  # space returns: accepted again, no restart
    assert [s for _, s in send_stream(node.port, sent[k:k + 3]).acked] == [0, 0, 0]


def test_enospc_mid_write_is_out_of_resources_and_leaves_nothing(start_node, make_settings,
                                                                 small_volume) -> None:
    """Threshold off (100 %): the disk fills up while an instance is being written."""
    if small_volume is None:
        pytest.skip("tmpfs mount not permitted here")
    spool = small_volume / "spool"
    spool.mkdir()
    node, audit, _ = start_node(make_settings(spool_dir=spool, spool_max_fill_percent=100))
    ballast = small_volume / "ballast"
    _ballast(ballast, 19.3)
    big = [us_instance(rows=MIB_ROWS) for _ in range(3)]
    res = send_stream(node.port, big)
    statuses = [s for _, s in res.acked]
    _clean(spool)
    assert not list(spool.rglob("*.dcm"))
    # the peer must get a status it can act on, not a dropped connection
    assert statuses and set(statuses) == {int(Status.OUT_OF_RESOURCES)}, (statuses, res.error)
    ballast.unlink()
    assert [s for _, s in send_stream(node.port, big).acked] == [0, 0, 0]
    _clean(spool)


@pytest.mark.parametrize("chunked", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_peer_abort_mid_instance_leaves_no_temp_file(start_node, chunked: bool) -> None:
    """A modality that drops the connection in the middle of a large instance: nothing of it is
    kept, and its partial temp file does not stay in the spool's temp area (it would eat the disk
    until the next restart). In chunked receive the assembler's sweep removes it once it has
    been idle for ``network_timeout`` + 10 s (here network_timeout = 2 s)."""
    import threading

    from pynetdicom import AE

    # many P-DATA PDUs: in chunked mode the temp file grows while we look
    node, _, _ = start_node(max_pdu_size=16384, receive_chunked=chunked, network_timeout=2)
    big = us_instance()
    big.PixelData = bytes(40 << 20)  # 40 MiB (never decoded on receive): in flight when we abort
    # the connection drops (proxy cut) while the data set is still arriving
    proxy = TcpProxy(("127.0.0.1", node.port))
    proxy.restore()
    proxy.stall_after = 5 << 20  # the node gets 5 MiB of the 40, then the line goes dead
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(str(big.SOPClassUID), str(big.file_meta.TransferSyntaxUID))
    assoc = ae.associate("127.0.0.1", proxy.port, ae_title="EUSDX")
    assert assoc.is_established
    tmp = node.spool.tmp_dir
    sender = threading.Thread(target=lambda: assoc.send_c_store(big), daemon=True)
    sender.start()
    wait_for(lambda: proxy.forwarded >= proxy.stall_after, 30, "5 MiB to reach the node")
    if chunked:
        wait_for(lambda: any(p.stat().st_size > (1 << 20) for p in tmp.iterdir()), 20,
                 "the instance to be half received")
    proxy.cut()
    sender.join(timeout=30)
    wait_for(lambda: not node.context._assocs, 30, "the association to close on the node")
    assert not [p for p in node.spool.root.rglob("*.dcm") if ".tmp" not in p.parts]
    if chunked:
        wait_for(lambda: not list(tmp.iterdir()), 40, "the sweep of the abandoned partial file")
    _clean(node.spool.root)
