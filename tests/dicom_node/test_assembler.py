"""Study assembly, routing and the enqueue outbox, on a real node with real peers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from dicom_node.app import Node
from tests.dicom_node import scu
from tests.dicom_node.conftest import RecordingEnqueuer, rows, storescu, storescu_study
from tests.dicom_node.dicomfiles import data_file, us_instance
from tests.dicom_node.peers import wait_for

pytestmark = pytest.mark.dcmtk


def states(audit, study: str) -> list[str]:
    return [r[0] for r in rows(audit, "select state from study_events where study_uid=:s "
                                      "order by seq", s=study)]


@pytest.fixture(scope="module")
def phantom_study(tmp_path_factory) -> Path:
    """One phantom EUS study (US JPEG/RLE images + SEG) written by phantom."""
    from phantom import generate_cohort

    out = tmp_path_factory.mktemp("phantom")
    generate_cohort(out, 1, 7)
    (study,) = sorted((out / "studies").iterdir())
    return study


def test_phantom_study_completes_and_is_enqueued_once(start_node, phantom_study):
    node, audit, enq = start_node()
    for out in storescu_study(node.port, phantom_study):
        assert out.returncode == 0, out.stderr
    study = phantom_study.name
    wait_for(lambda: enq.studies)
    assert enq.studies == [study]
    assert len(node.spool.instances(study)) == len(list(phantom_study.iterdir()))
    assert states(audit, study) == ["received", "complete", "queued"]
    # re-sending the whole study (keep-first) neither re-opens nor re-enqueues it
    assert all(o.returncode == 0 for o in storescu_study(node.port, phantom_study))
    time.sleep(3 * node.settings.study_quiet_seconds)
    node.assembler.tick()
    assert enq.studies == [study]
    dup = rows(audit, "select count(*) from instances where status='duplicate-ignored'")[0][0]
    assert dup == len(list(phantom_study.iterdir()))


def test_new_instance_after_completion_reopens(start_node):
    node, audit, enq = start_node()
    first = us_instance()
    assert scu.send(node.port, first) == [0]
    wait_for(lambda: enq.studies)
    late = us_instance(study_uid=str(first.StudyInstanceUID))
    late.Modality, late.BodyPartExamined = "SEG", None  # a SEG alone would not route
    late.SOPClassUID = late.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    assert scu.send(node.port, late) == [0]
    wait_for(lambda: len(enq.studies) == 2)
    assert enq.studies == [str(first.StudyInstanceUID)] * 2
    assert states(audit, str(first.StudyInstanceUID)) == [
        "received", "complete", "queued", "received", "complete", "queued"]


def test_not_routed_study_is_kept_audited_and_expires(start_node):
    node, audit, enq = start_node(retention_days=0)
    path = data_file("US1_UNCR.dcm")  # US without BodyPartExamined / EUS series description
    assert storescu(node.port, path, extra=["-R", "-xe"]).returncode == 0
    study = "1.3.6.1.4.1.5962.1.2.13.20040826185059.5457"
    wait_for(lambda: "not-routed" in states(audit, study) and not node.assembler.open_studies())
    assert enq.studies == []
    [deleted] = node.cleaner.run(pressure=False)
    assert (deleted.study_uid, deleted.state, deleted.cause) == (study, "not-routed", "retention")
    assert not node.spool.study_dir(study).exists()
    last = states(audit, study)[-1]
    assert last == "not-routed"  # the deletion is audited as the terminal state written again


def test_ceiling_completes_a_trickling_study(start_node):
    node, _, enq = start_node(study_quiet_seconds=60, study_max_seconds=1.0)
    study = generate_uid()
    for _ in range(3):
        assert scu.send(node.port, us_instance(study_uid=study)) == [0]
        time.sleep(0.2)
    wait_for(lambda: enq.studies, timeout=10)
    assert enq.studies == [study]


def test_broker_outage_keeps_study_in_outbox_across_restart(make_settings, audit_for):
    settings = make_settings()
    audit = audit_for(settings)
    enq = RecordingEnqueuer()
    enq.down = True
    node = Node(settings, audit, enq)
    node.start()
    try:
        ds = us_instance()
        assert scu.send(node.port, ds) == [0]
        wait_for(lambda: len(node.pending) == 1)
        assert enq.studies == []
    finally:
        node.stop(timeout=5)
    # restart with the broker back: the pending study is enqueued exactly once
    enq2 = RecordingEnqueuer()
    node2 = Node(settings, audit, enq2)
    node2.start()
    try:
        wait_for(lambda: enq2.studies)
        time.sleep(0.5)
        assert enq2.studies == [str(ds.StudyInstanceUID)]
        assert len(node2.pending) == 0
        assert states(audit, str(ds.StudyInstanceUID)) == ["received", "complete", "queued"]
    finally:
        node2.stop(timeout=5)


def test_restart_resumes_open_studies_from_spool(make_settings, audit_for):
    settings = make_settings(study_quiet_seconds=2.0)
    audit = audit_for(settings)
    node = Node(settings, audit, RecordingEnqueuer())
    node.start()
    ds = us_instance()
    try:
        assert scu.send(node.port, ds) == [0]
    finally:
        node.stop(timeout=5)  # stopped before the quiet period ended: the study is still open
    enq = RecordingEnqueuer()
    node2 = Node(settings, audit, enq)
    node2.start()
    try:
        assert node2.assembler.open_studies() == [str(ds.StudyInstanceUID)]
        wait_for(lambda: enq.studies)
        assert enq.studies == [str(ds.StudyInstanceUID)]
    finally:
        node2.stop(timeout=5)
