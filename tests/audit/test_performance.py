"""Live performance against recorded outcomes; expected values computed by hand below."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from audit import AuditLog
from audit.chain import verify_chain
from audit.queries import Filters, QaReader


def _analysis(log: AuditLog, uid: str, p: float, bundle: str = "1.0.0",
              threshold: float | None = None) -> None:
    lesions = [] if threshold is None else [{"lesion": 1, "probability": p, "threshold": threshold}]
    log.analysis(study_uid=uid, bundle_version=bundle, bundle_sha256="b" * 64, device="cpu",
                 timings={"total": 1.0}, lesions=lesions, probability=p,
                 label="GIST" if p >= (threshold or 0.5) else "leiomyoma", roi_source="seg")


@pytest.fixture
def history(audit_log: AuditLog) -> AuditLog:
    log = audit_log
    _analysis(log, "1.1", 0.3)          # re-run below: the latest analysis counts
    _analysis(log, "1.1", 0.9)
    _analysis(log, "1.2", 0.6)
    _analysis(log, "1.3", 0.4)
    _analysis(log, "1.4", 0.7)
    _analysis(log, "1.5", 0.8)          # outcome "other": excluded
    _analysis(log, "1.6", 0.2)          # no outcome yet
    _analysis(log, "1.1", 0.1, bundle="2.0.0")
    log.outcome(study_uid="1.1", truth="GIST", source="pathology", recorded_by="qa")
    log.outcome(study_uid="1.2", truth="leiomyoma", source="pathology", recorded_by="qa")
    log.outcome(study_uid="1.2", truth="GIST", source="surgery", recorded_by="qa",
                note="corrected after resection")  # supersedes the first
    log.outcome(study_uid="1.3", truth="leiomyoma", source="pathology", recorded_by="qa")
    log.outcome(study_uid="1.4", truth="leiomyoma", source="pathology", recorded_by="qa")
    log.outcome(study_uid="1.5", truth="other", source="pathology", recorded_by="qa")
    return log


def test_live_performance_matches_hand_computation(history: AuditLog) -> None:
    rows = {r["bundle_version"]: r for r in
            QaReader(history, "qa").performance(Filters(), threshold=0.5)}
    one = rows["1.0.0"]
    # GIST: 0.9, 0.6; leiomyoma: 0.4, 0.7. Pairs GIST > leio: (0.9,0.4) (0.9,0.7) (0.6,0.4)
    # but not (0.6,0.7): AUC = 3/4.
    assert (one["n"], one["n_gist"], one["n_leiomyoma"]) == (4, 2, 2)
    assert (one["n_other_excluded"], one["n_without_outcome"]) == (1, 1)
    assert one["auc"] == pytest.approx(0.75)
    assert one["auc_ci_lower"] <= 0.75 <= one["auc_ci_upper"]
    # At 0.5: TP 2 (0.9, 0.6), FN 0, TN 1 (0.4), FP 1 (0.7).
    assert (one["tp"], one["fn"], one["tn"], one["fp"]) == (2, 0, 1, 1)
    assert one["sensitivity"] == pytest.approx(1.0)
    assert one["specificity"] == pytest.approx(0.5)
    assert one["ppv"] == pytest.approx(2 / 3)
    # Brier: (0.1^2 + 0.4^2 + 0.4^2 + 0.7^2) / 4 = 0.82 / 4
    assert one["brier"] == pytest.approx(0.205)
    two = rows["2.0.0"]
    assert (two["n"], two["auc"]) == (1, None)  # one class only: no AUC
    assert two["brier"] == pytest.approx(0.81)
    with history.engine.connect() as conn:
        assert verify_chain(conn).ok
        assert conn.execute(sa.text("SELECT count(*) FROM outcomes")).scalar_one() == 6


def test_outcome_validation_and_append_only(history: AuditLog) -> None:
    with pytest.raises(ValueError, match="truth 'benign'"):
        history.outcome(study_uid="1.9", truth="benign", source="pathology", recorded_by="qa")
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        with history.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE outcomes SET truth = 'GIST'")


def test_downgrade_refuses_to_drop_outcomes(history: AuditLog) -> None:
    from audit.migrate import downgrade

    with pytest.raises(RuntimeError, match="would break the chain"):
        downgrade(history.engine, "0001")


def test_the_default_threshold_is_the_one_the_bundle_recorded(audit_log: AuditLog) -> None:
    """The worker records the bundle's operating threshold with each analysis; `audit performance`
    uses it unless told otherwise (it used to take 0.5 while the SRs used the bundle's)."""
    for uid, p in (("2.1", 0.9), ("2.2", 0.6), ("2.3", 0.4), ("2.4", 0.7)):
        _analysis(audit_log, uid, p, bundle="3.0.0", threshold=0.65)
    _analysis(audit_log, "2.5", 0.6, bundle="4.0.0")  # an analysis from before the record
    for uid, truth in (("2.1", "GIST"), ("2.2", "GIST"), ("2.3", "leiomyoma"), ("2.4", "leiomyoma"),
                       ("2.5", "GIST")):
        audit_log.outcome(study_uid=uid, truth=truth, source="pathology", recorded_by="qa")
    rows = {r["bundle_version"]: r for r in QaReader(audit_log, "qa").performance(Filters())}
    three = rows["3.0.0"]
    # At 0.65: GIST 0.9 TP, 0.6 FN; leiomyoma 0.4 TN, 0.7 FP.
    assert (three["threshold"], three["threshold_source"]) == (0.65, "bundle")
    assert (three["tp"], three["fn"], three["tn"], three["fp"]) == (1, 1, 1, 1)
    four = rows["4.0.0"]
    assert (four["threshold"], four["threshold_source"], four["tp"]) == (0.5, "default (not recorded)", 1)
    given = {r["bundle_version"]: r for r in
             QaReader(audit_log, "qa").performance(Filters(), threshold=0.5)}["3.0.0"]
    assert (given["threshold_source"], given["tp"], given["fn"]) == ("given", 2, 0)
