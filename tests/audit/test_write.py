"""The write API the DICOM node and the worker call (AUDIT_API.md), on both databases."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
import sqlalchemy as sa

from audit import AuditLog, AuditUnavailable
from audit.chain import verify_chain
from tests.audit.conftest import SECRET

STUDY = "1.2.826.0.1.3680043.10.1.1"


def _store(log: AuditLog, assoc: int | None, sop: str, *, status: str = "stored",
           study: str = STUDY, patient_id: str | None = "PAT-0042") -> None:
    log.instance(association_id=assoc, study_uid=study, series_uid=study + ".1", sop_uid=sop,
                 sop_class_uid="1.2.840.10008.5.1.4.1.1.6.1",
                 transfer_syntax="1.2.840.10008.1.2.1", size=1234, digest="ab" * 32,
                 status=status, calling_ae="PACS", patient_id=patient_id, accession="ACC-7",
                 modality="US", body_part="STOMACH")


def test_full_study_lifecycle(audit_log: AuditLog) -> None:
    assoc = audit_log.association(peer_ae="PACS", peer_host="10.0.0.5", peer_port=4242,
                                  called_ae="EUSDX", tls=False, accepted=True)
    assert assoc == 1
    _store(audit_log, assoc, STUDY + ".1.1")
    _store(audit_log, assoc, STUDY + ".1.2")
    _store(audit_log, assoc, STUDY + ".1.2", status="duplicate-ignored")
    audit_log.association_closed(association_id=assoc, instances=3)
    assert audit_log.study_current_state(STUDY) == "received"
    for state in ("complete", "queued", "analysing"):
        audit_log.study_state(study_uid=STUDY, state=state)
    assert not audit_log.analysis_exists(STUDY, "1.0.0")
    audit_log.analysis(study_uid=STUDY, bundle_version="1.0.0", bundle_sha256="f" * 64,
                       device="cpu", timings={"load": 0.25, "features": 1.5},
                       lesions=[{"probability": 0.91}], probability=0.91, label="GIST",
                       roi_source="seg", sr_sop_uid=STUDY + ".9")
    assert audit_log.analysis_exists(STUDY, "1.0.0")
    assert not audit_log.analysis_exists(STUDY, "2.0.0")
    audit_log.study_state(study_uid=STUDY, state="reported")
    audit_log.export(study_uid=STUDY, destination="PACS@10.0.0.5:104", attempt=1,
                     status="failed", sr_sop_uid=STUDY + ".9", error="connection refused")
    audit_log.export(study_uid=STUDY, destination="PACS@10.0.0.5:104", attempt=2,
                     status="sent", sr_sop_uid=STUDY + ".9")
    audit_log.study_state(study_uid=STUDY, state="exported")
    assert audit_log.study_current_state(STUDY) == "exported"
    assert audit_log.study_current_state("1.2.3.999") is None

    with audit_log.engine.connect() as conn:
        assert verify_chain(conn).ok
        study = conn.execute(sa.text("SELECT * FROM studies")).mappings().one()
        exports = conn.execute(sa.text("SELECT * FROM study_exports")).mappings().one()
        states = conn.execute(sa.text(
            "SELECT from_state, state, regular FROM study_events ORDER BY seq")).all()
    assert study["instances"] == 2
    assert study["label"] == "GIST" and study["probability"] == pytest.approx(0.91)
    assert study["analysis_seconds"] == pytest.approx(1.75)
    assert study["accession"] == "ACC-7" and study["calling_ae"] == "PACS"
    assert (exports["status"], exports["attempts"]) == ("sent", 2)
    assert [s for _f, s, _r in states] == ["received", "complete", "queued", "analysing",
                                           "reported", "exported"]
    assert all(bool(r) for *_x, r in states)


def test_patient_id_is_only_stored_as_keyed_hash(audit_log: AuditLog) -> None:
    _store(audit_log, None, STUDY + ".1.1", patient_id="PAT-0042")
    expected = hmac.new(SECRET.encode(), b"PAT-0042", hashlib.sha256).hexdigest()
    assert audit_log.pseudonym("PAT-0042") == expected
    assert audit_log.pseudonym("") is None and audit_log.pseudonym(None) is None
    with audit_log.engine.connect() as conn:
        dump = json.dumps([
            [list(map(str, row)) for row in conn.execute(sa.text(f"SELECT * FROM {table}"))]
            for table in ("instances", "studies", "study_events")
        ])
    assert "PAT-0042" not in dump
    assert expected in dump


def test_other_secret_gives_other_pseudonym(db_url: str) -> None:
    a, b = AuditLog(db_url, "one"), AuditLog(db_url, "two")
    try:
        assert a.pseudonym("X") != b.pseudonym("X")
    finally:
        a.close()
        b.close()


def test_irregular_transition_is_recorded_and_flagged(audit_log: AuditLog) -> None:
    audit_log.study_state(study_uid=STUDY, state="received")
    audit_log.study_state(study_uid=STUDY, state="exported", details={"why": "test"})
    with audit_log.engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT from_state, regular, details FROM study_events WHERE state = 'exported'"
        )).one()
    assert row.from_state == "received" and not row.regular
    assert json.loads(row.details) == {"why": "test"}


def test_rejected_instance_does_not_open_a_study(audit_log: AuditLog) -> None:
    _store(audit_log, None, "bad uid", status="rejected")
    assert audit_log.study_current_state(STUDY) is None


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda log: _store(log, None, "1.2", status="kept"), "instance status 'kept'"),
        (lambda log: log.study_state(study_uid=STUDY, state="done"), "study state 'done'"),
        (lambda log: log.export(study_uid=STUDY, destination="A@b:1", attempt=1, status="ok",
                                sr_sop_uid=None), "export status 'ok'"),
        (lambda log: log.analysis(study_uid=STUDY, bundle_version="1", bundle_sha256="0",
                                  device="cpu", timings={}, lesions=[], probability=1.5,
                                  label=None, roi_source=None), r"probability must lie in \[0, 1\]"),
        (lambda log: log.analysis(study_uid=STUDY, bundle_version="1", bundle_sha256="0",
                                  device="cpu", timings={"x": float("nan")}, lesions=[],
                                  probability=None, label=None, roi_source=None), "must be finite"),
    ],
)
def test_invalid_values_are_refused_before_writing(audit_log: AuditLog, call, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        call(audit_log)
    with audit_log.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT seq FROM chain_head")).scalar_one() == 0


def test_overlong_and_nul_text_is_clipped_not_fatal(audit_log: AuditLog) -> None:
    # A hostile peer's UID must still be recorded (as rejected), on both databases.
    _store(audit_log, None, "9" * 200 + "\x00", status="rejected")
    with audit_log.engine.connect() as conn:
        sop = conn.execute(sa.text("SELECT sop_uid FROM instances")).scalar_one()
        assert verify_chain(conn).ok
    assert sop == "9" * 64


def test_missing_schema_is_unavailable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    log = AuditLog(f"sqlite:///{tmp_path / 'empty.db'}", SECRET)
    try:
        with pytest.raises(AuditUnavailable, match="audit database unavailable"):
            log.ping()
        with pytest.raises(AuditUnavailable, match="audit write failed"):
            _store(log, None, "1.2.3")
    finally:
        log.close()


def test_unreachable_postgres_is_unavailable() -> None:
    from tests.conftest import free_port

    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test?connect_timeout=2"
    log = AuditLog(url, SECRET)
    try:
        with pytest.raises(AuditUnavailable, match="OperationalError"):
            log.association(peer_ae="A", peer_host="h", peer_port=1, called_ae="B", tls=False,
                            accepted=False, reason="not allowed")
    finally:
        log.close()


def test_from_settings_uses_database_url_and_secret(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from eusdx.config import load_settings

    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'a.db'}",
                             audit_hmac_secret="k1")
    log = AuditLog.from_settings(settings)
    try:
        assert log.pseudonym("X") == hmac.new(b"k1", b"X", hashlib.sha256).hexdigest()
    finally:
        log.close()


def test_numpy_values_in_results_are_stored_as_plain_json(audit_log: AuditLog) -> None:
    import numpy as np

    audit_log.analysis(study_uid=STUDY, bundle_version="1", bundle_sha256="0" * 64,
                       device="cuda:0",
                       timings={"features": np.float32(0.5)},  # type: ignore[dict-item]
                       lesions=[{"probability": np.float32(0.25), "bbox": np.array([1, 2, 3, 4]),
                                 "frames": np.int64(3)}],
                       probability=np.float64(0.25), label="leiomyoma", roi_source="auto")
    with audit_log.engine.connect() as conn:
        lesions, timings = conn.execute(sa.text("SELECT lesions, timings FROM analyses")).one()
        assert verify_chain(conn).ok
    assert json.loads(lesions) == [{"bbox": [1, 2, 3, 4], "frames": 3, "probability": 0.25}]
    assert json.loads(timings) == {"features": 0.5}
    with pytest.raises(TypeError, match="cannot be stored"):
        audit_log.study_state(study_uid=STUDY, state="received", details={"x": object()})


def test_a_study_whose_seg_arrives_first_is_an_ultrasound_study(audit_log: AuditLog) -> None:
    """The study's modality is its images' (US), not that of the first object to arrive (a SEG);
    the projection check applies the same rule, so verify stays clean."""
    from audit.projections import check_projections

    common = dict(association_id=None, study_uid=STUDY, series_uid=STUDY + ".9", transfer_syntax="1.2.840.10008.1.2.1",
                  size=10, digest="ab" * 32, status="stored", calling_ae="PACS", body_part="STOMACH")
    audit_log.instance(sop_uid=STUDY + ".9.1", sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4", modality="SEG",
                       **common)  # type: ignore[arg-type]
    audit_log.instance(sop_uid=STUDY + ".9.2", sop_class_uid="1.2.840.10008.5.1.4.1.1.6.1", modality="US",
                       **common)  # type: ignore[arg-type]
    audit_log.instance(sop_uid=STUDY + ".9.3", sop_class_uid="1.2.840.10008.5.1.4.1.1.88.33", modality="SR",
                       **common)  # type: ignore[arg-type]
    with audit_log.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT modality FROM studies WHERE study_uid = :u"),
                            {"u": STUDY}).scalar_one() == "US"
        assert check_projections(conn) == []
