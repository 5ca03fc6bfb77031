"""SR export through the durable outbox to a real DCMTK storescp acting as PACS."""

from __future__ import annotations

import time

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_node import export
from dicom_node.export import ExportRunner
from cli.main import main as cli
from tests.conftest import free_port
from tests.dicom_node.conftest import rows
from tests.dicom_node.peers import DcmtkStoreSCP

pytestmark = pytest.mark.dcmtk


def make_sr(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


@pytest.fixture
def export_settings(make_settings):
    def make(pacs_port: int, **kw):
        return make_settings(export_destinations=[f"PACS@127.0.0.1:{pacs_port}"],
                             export_backoff_seconds=0.2, export_backoff_max_seconds=0.4, **kw)
    return make


def test_submit_and_deliver_once(export_settings, audit_for, tmp_path):
    with DcmtkStoreSCP(tmp_path / "pacs") as pacs:
        settings = export_settings(pacs.port)
        audit = audit_for(settings)
        study = generate_uid()
        sr = make_sr(study)
        item = export.submit(settings, sr, study)
        assert export.submit(settings, sr, study) == item  # same SOP instance: one item
        runner = ExportRunner(settings, audit)
        assert runner.run_once() == [(item, f"PACS@127.0.0.1:{pacs.port}", "sent")]
        assert runner.run_once() == []
        (received,) = pacs.files()
        assert pydicom.dcmread(received).SOPInstanceUID == sr.SOPInstanceUID
    assert rows(audit, "select status, attempt from exports order by seq") == [
        ("queued", 0), ("sent", 1)]


def test_pacs_down_for_a_while_then_delivered_exactly_once(export_settings, audit_for, tmp_path):
    port = free_port()
    settings = export_settings(port, export_max_attempts=50)
    audit = audit_for(settings)
    study = generate_uid()
    sr_path = tmp_path / "sr.dcm"
    make_sr(study).save_as(sr_path, enforce_file_format=True)
    item = export.submit(settings, sr_path, study)
    runner = ExportRunner(settings, audit)
    results = runner.run_once()
    assert [r[2] for r in results] == ["pending"]  # PACS not there: failed, retry later
    record = runner.outbox.get(item)["destinations"][f"PACS@127.0.0.1:{port}"]
    assert record["attempts"] == 1 and "associat" in record["last_error"]
    with DcmtkStoreSCP(tmp_path / "pacs", port=port) as pacs:  # the PACS comes up late
        deadline = time.monotonic() + 10
        while runner.outbox.depth(with_sent=True)["sent"] == 0 and time.monotonic() < deadline:
            runner.run_once()
            time.sleep(0.05)
        for _ in range(3):
            assert runner.run_once() == []
        assert len(pacs.files()) == 1
    statuses = [r[0] for r in rows(audit, "select status from exports order by seq")]
    assert statuses[0] == "queued" and statuses[-1] == "sent"
    assert statuses.count("sent") == 1 and set(statuses[1:-1]) == {"failed"}


def test_dead_letter_then_cli_list_and_retry(export_settings, audit_for, tmp_path, monkeypatch,
                                            capsys):
    port = free_port()
    settings = export_settings(port, export_max_attempts=2)
    audit = audit_for(settings)
    study = generate_uid()
    item = export.submit(settings, make_sr(study), study)
    runner = ExportRunner(settings, audit)
    runner.run_once()
    time.sleep(0.25)
    assert [r[2] for r in runner.run_once()] == ["dead-letter"]
    time.sleep(0.5)
    assert runner.run_once() == []  # dead letters are not retried on their own
    for key, value in {"EUSDX_SPOOL_DIR": str(settings.spool_dir),
                       "EUSDX_DATABASE_URL": settings.database_url,
                       "EUSDX_EXPORT_DESTINATIONS": f"PACS@127.0.0.1:{port}"}.items():
        monkeypatch.setenv(key, value)
    assert cli(["outbox", "list"]) == 0
    listing = capsys.readouterr().out
    assert item in listing and "dead-letter" in listing and "2" in listing
    assert cli(["outbox", "retry"]) == 2  # neither ID nor --all: usage error
    assert cli(["outbox", "retry", "0123456789abcdef"]) == 65  # unknown item: data error
    assert "no outbox item" in capsys.readouterr().err
    assert cli(["outbox", "retry", "--all"]) == 0
    assert "re-armed 1" in capsys.readouterr().out
    with DcmtkStoreSCP(tmp_path / "pacs", port=port) as pacs:
        assert [r[2] for r in runner.run_once()] == ["sent"]
        assert len(pacs.files()) == 1
    statuses = [r[0] for r in rows(audit, "select status from exports order by seq")]
    assert statuses == ["queued", "failed", "dead-letter", "replayed", "sent"]


def test_node_runs_the_exporter(start_node, tmp_path):
    with DcmtkStoreSCP(tmp_path / "pacs") as pacs:
        node, audit, _ = start_node(export_destinations=[f"PACS@127.0.0.1:{pacs.port}"])
        study = generate_uid()
        export.submit(node.settings, make_sr(study), study, audit=audit)
        deadline = time.monotonic() + 10
        while not pacs.files() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(pacs.files()) == 1


def test_two_runners_on_one_outbox_never_send_an_item_twice(export_settings, audit_for, tmp_path):
    # serve's runner thread and the export-queue workers share one outbox: while one pass holds the
    # runner lock, another runner must not start sending the same due items.
    import fcntl

    with DcmtkStoreSCP(tmp_path / "pacs") as pacs:
        settings = export_settings(pacs.port)
        audit = audit_for(settings)
        study = generate_uid()
        item = export.submit(settings, make_sr(study), study)
        first, second = ExportRunner(settings, audit), ExportRunner(settings, audit)
        with open(first.outbox.root / ".runner.lock", "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # a pass of another runner in progress
            assert second.try_run_once() is None
            assert second.run_once() == []
        assert first.run_once() == [(item, f"PACS@127.0.0.1:{pacs.port}", "sent")]
        assert second.run_once() == []
        assert len(pacs.files()) == 1
    assert rows(audit, "select status from exports order by seq") == [("queued",), ("sent",)]


def test_an_sr_added_in_this_process_is_sent_at_once_not_at_the_next_poll(export_settings, audit_for,
                                                                          tmp_path):
    """The embedded worker's SR wakes the runner (issue 21): with a 30 s poll it still goes out in
    well under a second, and a second SR added while the runner is busy is not left for the poll."""
    import threading

    with DcmtkStoreSCP(tmp_path / "pacs") as pacs:
        settings = export_settings(pacs.port)
        runner = ExportRunner(settings, audit_for(settings))
        stop = threading.Event()
        thread = threading.Thread(target=runner.run_forever, args=(stop,), kwargs={"poll": 30.0})
        thread.start()
        try:
            time.sleep(0.5)  # the runner's first pass found nothing and waits
            for sent in (1, 2):
                t0 = time.monotonic()
                export.submit(settings, make_sr(generate_uid()), generate_uid())
                while len(pacs.files()) < sent and time.monotonic() - t0 < 10:
                    time.sleep(0.02)
                assert len(pacs.files()) == sent
                assert time.monotonic() - t0 < 5.0  # the poll alone would take 30 s
        finally:
            stop.set()
            thread.join(10)
        assert not thread.is_alive()


def test_an_arrival_signal_waits_for_the_next_wait(tmp_path):
    """A signal set while nobody waits is kept; a wait that sees it consumes it; none times out."""
    from dicom_node.outbox import Outbox

    box = Outbox(tmp_path / "outbox")
    assert box.wait_for_arrival(0.05) is False
    box.add(sop_uid=generate_uid(), sop_class_uid="1.2.840.10008.5.1.4.1.1.88.33", study_uid="1.2.3",
            write_object=lambda path: path.write_bytes(b"x"), destinations=["PACS@127.0.0.1:1"])
    assert Outbox(tmp_path / "outbox").wait_for_arrival(0) is True  # the same folder's signal
    assert box.wait_for_arrival(0.05) is False
