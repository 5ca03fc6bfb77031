"""QA queries: filters, results, auditing of reads, injection-shaped input."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from audit import AuditLog, QueryError
from audit.chain import verify_chain
from audit.formats import render
from audit.queries import Filters, QaReader
from tests.audit.data import STUDY_A, STUDY_B, STUDY_C, STUDY_D, populate


@pytest.fixture
def reader(audit_log: AuditLog) -> QaReader:
    populate(audit_log)
    return QaReader(audit_log, "cli:tester")


def _uids(rows: list[dict]) -> set[str]:  # type: ignore[type-arg]
    return {r["study_uid"] for r in rows}


def test_studies_filters(reader: QaReader) -> None:
    assert _uids(reader.query("studies", Filters())) == {STUDY_A, STUDY_B, STUDY_C, STUDY_D}
    assert _uids(reader.query("studies", Filters(ae="PACS_A"))) == {STUDY_A, STUDY_C}
    assert _uids(reader.query("studies", Filters(status="exported"))) == {STUDY_A}
    assert _uids(reader.query("studies", Filters(label="leiomyoma"))) == {STUDY_B}
    assert _uids(reader.query("studies", Filters(bundle="1.0.0"))) == {STUDY_A, STUDY_B}
    assert _uids(reader.query("studies", Filters(accession="ACC-D"))) == {STUDY_D}
    assert len(reader.query("studies", Filters(limit=2))) == 2
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    assert reader.query("studies", Filters(since=future)) == []
    assert len(reader.query("studies", Filters(until=future))) == 4
    row = reader.query("studies", Filters(accession="ACC-A"))[0]
    assert (row["state"], row["instances"], row["label"]) == ("exported", 3, "GIST")


def test_failures(reader: QaReader) -> None:
    rows = reader.query("failures", Filters())
    kinds = sorted(r["kind"] for r in rows)
    assert kinds == ["analysis-error", "association-rejected", "export-dead-letter",
                     "export-failed", "export-failed", "instance-rejected", "study-failed"]
    assert {r["kind"] for r in reader.query("failures", Filters(ae="PACS_B"))} == {
        "export-failed", "export-dead-letter"}
    only = reader.query("failures", Filters(status="dead-letter"))
    assert [r["kind"] for r in only] == ["export-dead-letter"]
    assert {r["reason"] for r in reader.query("failures", Filters(accession="ACC-C"))} == {
        "no-usable-frames"}


def test_timings_and_exports(reader: QaReader) -> None:
    rows = reader.query("timings", Filters())
    assert len(rows) == 3
    a = next(r for r in rows if r["study_uid"] == STUDY_A)
    assert (a["t_load"], a["t_features"], a["t_classify"]) == (1.0, 3.0, 0.5)
    assert a["total_seconds"] == pytest.approx(4.5)
    assert len(reader.query("timings", Filters(status="error"))) == 1
    outbox = reader.query("exports", Filters())
    assert {(r["study_uid"], r["status"], r["attempts"]) for r in outbox} == {
        (STUDY_A, "sent", 1), (STUDY_A, "queued", 1), (STUDY_B, "dead-letter", 3)}
    assert len(reader.query("exports", Filters(status="queued"))) == 1


def test_stats(reader: QaReader) -> None:
    result = reader.query("stats", Filters())
    volumes = result["volumes"]
    assert volumes["studies"] == 4
    assert volumes["studies_by_state"] == {"exported": 1, "reported": 1, "failed": 1,
                                           "not-routed": 1}
    assert volumes["instances_by_status"] == {"stored": 7, "rejected": 1}
    assert (volumes["associations_accepted"], volumes["associations_rejected"]) == (2, 1)
    failures = {(f["kind"], f["reason"]): (f["count"], f["of"]) for f in result["failures"]}
    assert failures[("instance-rejected", "invalid-uid")] == (1, 8)
    assert failures[("export-failed", "association-rejected")] == (3, 5)
    assert failures[("analysis-error", "no-usable-frames")] == (1, 3)
    assert failures[("association-rejected", "calling-ae-not-allowed")] == (1, 3)
    latency = {r["stage"]: r for r in result["latency"]}
    # two successful analyses: load 1.0 and 2.0 -> linear-interpolated p50 1.5, p95 1.95
    assert latency["load"]["p50_s"] == pytest.approx(1.5)
    assert latency["load"]["p95_s"] == pytest.approx(1.95)
    assert latency["features"]["n"] == 2
    # no "total" timed by the worker: the sum of the stages, 4.5 s and 8.5 s
    assert latency["total"]["p50_s"] == pytest.approx(6.5)
    assert result["outbox"] == {"depth": 1, "queued": 1, "failed": 0, "dead_letter": 1}
    for fmt in ("table", "csv", "json"):
        assert "outbox" in render(result, fmt)


def test_show_study_timeline(reader: QaReader) -> None:
    result = reader.show(STUDY_B)
    assert result is not None and result["study"]["state"] == "reported"
    kinds = [e["kind"] for e in result["events"]]
    assert kinds.count("instance") == 2 and kinds.count("export") == 3
    seqs = [e["seq"] for e in result["events"]]
    assert seqs == sorted(seqs)
    assert reader.show("9.9.9") is None


def test_every_read_is_audited(reader: QaReader, audit_log: AuditLog) -> None:
    reader.query("studies", Filters(ae="PACS_A", label="GIST"))
    reader.show(STUDY_A)
    reader.verify()
    with audit_log.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT actor, action, params FROM qa_events ORDER BY seq")
                            ).all()
        assert verify_chain(conn).ok
    assert [(r.actor, r.action) for r in rows] == [
        ("cli:tester", "studies"), ("cli:tester", "show"), ("cli:tester", "verify")]
    assert '"ae":"PACS_A"' in rows[0].params and '"label":"GIST"' in rows[0].params


INJECTIONS = ["' OR '1'='1", "x'; DROP TABLE studies; --", '" OR 1=1 --', "%", "_",
              "1.2.826.0.1.3680043.10.7.1' --"]


@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_shaped_filters_are_harmless(reader: QaReader, audit_log: AuditLog,
                                               value: str) -> None:
    for name in ("studies", "failures", "timings", "exports", "stats"):
        f = Filters(ae=value, label=value, bundle=value, accession=value)
        result = reader.query(name, f)
        if name == "stats":
            assert result["volumes"]["studies"] == 0
        else:
            assert result == []
    assert reader.show(value) is None
    with audit_log.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM studies")).scalar_one() == 4
        assert verify_chain(conn).ok


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"since": "yesterday"}, "is not an ISO date"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "--since is after --until"),
        ({"limit": -1}, "limit must lie in"),
    ],
)
def test_bad_filters(kwargs: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(QueryError, match=match):
        Filters.from_text(**kwargs)


def test_bad_status_per_query(reader: QaReader) -> None:
    with pytest.raises(QueryError, match="is not a study state"):
        reader.query("studies", Filters(status="nope"))
    with pytest.raises(QueryError, match="is not an export status"):
        reader.query("exports", Filters(status="nope"))
    with pytest.raises(QueryError, match="for failures is one of"):
        reader.query("failures", Filters(status="nope"))
    with pytest.raises(QueryError, match="unknown query"):
        reader.query("drop", Filters())


def test_every_timestamp_column_is_converted() -> None:
    from sqlalchemy import DateTime

    from audit.queries import _STAMP_COLUMNS
    from audit.schema import Base

    stamps = {c.name for t in Base.metadata.tables.values() for c in t.columns
              if isinstance(c.type, DateTime)}
    assert stamps == set(_STAMP_COLUMNS)
