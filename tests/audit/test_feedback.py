"""Feedback events: validation, append-only edits, and their way into performance, worklist and FHIR."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from audit import AuditLog
from audit.chain import verify_chain
from audit.queries import Filters, QaReader
from tests.audit.data import STUDY_A, STUDY_B
from tests.audit.test_http import _auth, client  # noqa: F401  (fixture)


def test_feedback_is_validated(audit_log: AuditLog) -> None:
    fb = audit_log.feedback
    with pytest.raises(ValueError, match="feedback kind"):
        fb(study_uid=STUDY_A, kind="opinion", recorded_by="r", role="qa")
    with pytest.raises(ValueError, match="verdict"):
        fb(study_uid=STUDY_A, kind="verdict", verdict="maybe", recorded_by="r", role="qa")
    with pytest.raises(ValueError, match="corrected label"):
        fb(study_uid=STUDY_A, kind="verdict", verdict="correct", recorded_by="r", role="qa")
    with pytest.raises(ValueError, match="verdict 'correct' only"):
        fb(study_uid=STUDY_A, kind="verdict", verdict="accept", corrected_label="GIST",
           recorded_by="r", role="qa")
    with pytest.raises(ValueError, match="truth"):
        fb(study_uid=STUDY_A, kind="pathology", truth="benign", source="surgery",
           recorded_by="r", role="qa")
    with pytest.raises(ValueError, match="source"):
        fb(study_uid=STUDY_A, kind="pathology", truth="GIST", source=" ", recorded_by="r",
           role="qa")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        fb(study_uid=STUDY_A, kind="pathology", truth="GIST", source="surgery",
           diagnosed_on="31/12/2025", recorded_by="r", role="qa")
    tomorrow = (dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=2)).isoformat()
    with pytest.raises(ValueError, match="future"):
        fb(study_uid=STUDY_A, kind="pathology", truth="GIST", source="surgery",
           diagnosed_on=tomorrow, recorded_by="r", role="qa")
    with audit_log.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM feedback")).scalar_one() == 0


def test_edits_append_and_the_latest_counts(client: TestClient, audit_log: AuditLog) -> None:  # noqa: F811
    log = audit_log
    log.feedback(study_uid=STUDY_A, kind="verdict", verdict="reject", comment="ROI on the wall",
                 recorded_by="ui:dr", role="qa", bundle_version="1.0.0")
    log.feedback(study_uid=STUDY_A, kind="verdict", verdict="correct", corrected_label="leiomyoma",
                 recorded_by="ui:dr", role="qa", bundle_version="1.0.0")
    log.feedback(study_uid=STUDY_A, kind="pathology", truth="leiomyoma", source="surgery",
                 diagnosed_on="2026-10-01", recorded_by="ui:qa", role="qa")
    log.feedback(study_uid=STUDY_B, kind="pathology", truth="other", source="biopsy",
                 recorded_by="ui:qa", role="qa")
    log.feedback(study_uid=STUDY_B, kind="pathology", truth="leiomyoma", source="surgery",
                 recorded_by="ui:qa", role="qa")
    shown = QaReader(log, "t").show(STUDY_A)
    assert shown is not None
    kinds = [(e["kind"], e.get("verdict"), e.get("truth")) for e in shown["events"]
             if e["kind"] == "feedback"]
    assert kinds == [("feedback", "reject", None), ("feedback", "correct", None),
                     ("feedback", None, "leiomyoma")]
    # Both studies are now leiomyoma by pathology: one negative misread as GIST 0.92, one 0.15.
    [row] = QaReader(log, "t").performance(Filters(), threshold=0.5)
    assert (row["n"], row["n_gist"], row["n_leiomyoma"], row["fp"], row["tn"]) == (2, 0, 2, 1, 1)
    with log.engine.connect() as conn:
        assert verify_chain(conn).ok

    feed = client.get("/api/v1/worklist", headers=_auth("worklist")).json()
    items = {i["study_uid"]: i for i in feed["items"]}
    assert items[STUDY_A]["verdict"]["verdict"] == "correct"
    assert items[STUDY_A]["verdict"]["corrected_label"] == "leiomyoma"
    assert items[STUDY_A]["pathology"]["diagnosed_on"] == "2026-10-01"
    assert items[STUDY_B]["verdict"] is None
    assert items[STUDY_B]["pathology"]["truth"] == "leiomyoma"

    from fhir.resources.R4B.bundle import Bundle

    data = client.get("/api/v1/worklist/fhir", headers=_auth("worklist")).json()
    Bundle.model_validate(data)
    resources = {e["fullUrl"]: e["resource"] for e in data["entry"]}
    report_a = next(r for r in resources.values() if r["resourceType"] == "DiagnosticReport"
                    and any(i["value"] == f"urn:oid:{STUDY_A}" for i in r["identifier"]))
    assert report_a["extension"][0]["valueString"] == "correct -> leiomyoma"
    pathology = resources[report_a["result"][1]["reference"]]
    assert pathology["status"] == "final" and pathology["effectiveDateTime"] == "2026-10-01"
    assert pathology["valueCodeableConcept"]["coding"][0]["code"] == "1162890002"
