"""``eusdx db ...`` and ``eusdx audit ...`` through the real CLI entry point."""

from __future__ import annotations

import csv
import io
import json

import pytest
import sqlalchemy as sa

from audit import AuditLog
from cli.main import main
from tests.audit.conftest import SECRET, drop_triggers
from tests.audit.data import STUDY_A, STUDY_B, populate


@pytest.fixture
def cli_db(db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> str:  # type: ignore[no-untyped-def]
    url = db_url
    monkeypatch.setenv("EUSDX_SPOOL_DIR", str(tmp_path / "var" / "spool"))  # keys, anchors next to it
    monkeypatch.setenv("EUSDX_DATABASE_URL", url)
    monkeypatch.setenv("EUSDX_AUDIT_HMAC_SECRET", SECRET)
    monkeypatch.setenv("EUSDX_LOG_LEVEL", "WARNING")
    return url


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_db_upgrade_current_downgrade(cli_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "db", "current")
    assert code == 0 and "base (empty)" in out and "needs `eusdx db upgrade`" in out
    code, out, _ = _run(capsys, "db", "upgrade")
    assert code == 0 and "audit schema at 0004" in out
    code, out, _ = _run(capsys, "db", "current")
    assert code == 0 and "up to date" in out
    code, out, _ = _run(capsys, "db", "downgrade", "base")
    assert code == 0 and "base (empty)" in out


def test_audit_without_schema_says_what_to_do(cli_db: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "audit", "studies")
    assert code == 69 and "run `eusdx db upgrade`" in err


def test_read_only_commands_never_create_the_database(tmp_path, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A query on a database that does not exist exits 69 (documented in the README) and leaves
    no empty database file behind; `db current` reports it without creating it either."""
    db = tmp_path / "var" / "audit.db"
    monkeypatch.setenv("EUSDX_SPOOL_DIR", str(tmp_path / "var" / "spool"))
    monkeypatch.setenv("EUSDX_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("EUSDX_AUDIT_HMAC_SECRET", SECRET)
    for args in (["audit", "studies"], ["audit", "show", STUDY_A], ["audit", "performance"],
                 ["audit", "verify"]):
        code, _, err = _run(capsys, *args)
        assert code == 69 and f"no audit database at {db}" in err, (args, err)
    code, out, _ = _run(capsys, "db", "current")
    assert code == 0 and "no database file" in out
    assert not db.exists()


def test_audit_commands_print_no_library_log_lines(populated: str, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """At the default INFO level, an audit query writes its answer and nothing else (Alembic's
    "Context impl SQLiteImpl." lines used to come with every command)."""
    monkeypatch.setenv("EUSDX_LOG_LEVEL", "INFO")
    code, out, err = _run(capsys, "audit", "studies")
    assert code == 0 and STUDY_A in out
    assert err == ""


@pytest.fixture
def populated(cli_db: str) -> str:
    log = AuditLog(cli_db, SECRET)
    log.ensure_schema()
    populate(log)
    log.close()
    return cli_db


def test_studies_formats(populated: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "audit", "studies", "--ae", "PACS_A", "--format", "json")
    assert code == 0
    assert {r["study_uid"] for r in json.loads(out)} == {STUDY_A, "1.2.826.0.1.3680043.10.7.3"}
    code, out, _ = _run(capsys, "audit", "studies", "--label", "GIST", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["study_uid"] for r in rows] == [STUDY_A]
    code, out, _ = _run(capsys, "audit", "studies", "--status", "reported")
    assert code == 0 and STUDY_B in out and "study_uid" in out.splitlines()[0]


def test_other_queries(populated: str, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["failures", "--since", "2000-01-01"], ["timings", "--bundle", "1.0.0"],
                 ["exports", "--status", "dead-letter"], ["stats"], ["show", STUDY_B]):
        code, out, err = _run(capsys, "audit", *args, "--format", "json")
        assert code == 0, (args, err)
        json.loads(out)
    code, out, _ = _run(capsys, "audit", "stats")
    assert "# latency" in out and "p95_s" in out and "outbox_depth" in out


def test_usage_errors(populated: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "audit", "studies", "--since", "last week")
    assert code == 2 and "is not an ISO date" in err
    code, _, err = _run(capsys, "audit", "studies", "--format", "xml")
    assert code == 2 and "--format 'xml'" in err
    code, _, err = _run(capsys, "audit", "show", "9.9.9")
    assert code == 2 and "not in the audit log" in err


def test_verify_ok_then_tampered(populated: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "audit", "verify")
    assert code == 0 and "audit chain ok" in out and "projections match" in out
    engine = sa.create_engine(populated)
    with engine.begin() as conn:
        drop_triggers(conn, "exports")
        seq = conn.execute(sa.text("SELECT min(seq) FROM exports WHERE status = 'failed'")
                           ).scalar_one()
        conn.execute(sa.text("UPDATE exports SET status = 'sent' WHERE seq = :s"), {"s": seq})
    engine.dispose()
    code, _, err = _run(capsys, "audit", "verify")
    assert code == 65 and f"exports seq {seq}" in err


def test_verify_names_an_edited_projection(populated: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    engine = sa.create_engine(populated)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE studies SET state = 'exported' WHERE study_uid = :u"),
                     {"u": STUDY_B})
    engine.dispose()
    code, _, err = _run(capsys, "audit", "verify")
    assert code == 65 and f"studies {STUDY_B}: state is 'exported'" in err


def test_cli_reads_are_audited_with_os_user(populated: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    _run(capsys, "audit", "studies", "--accession", "ACC-B")
    engine = sa.create_engine(populated)
    with engine.connect() as conn:
        actor, action, params = conn.execute(sa.text(
            "SELECT actor, action, params FROM qa_events ORDER BY seq DESC LIMIT 1")).one()
    engine.dispose()
    assert actor.startswith("cli:") and action == "studies" and "ACC-B" in params


def test_outcome_and_performance(populated: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "audit", "outcome", STUDY_A, "--truth", "GIST")
    assert code == 0 and "recorded" in out
    code, _, err = _run(capsys, "audit", "outcome", STUDY_B, "--truth", "benign")
    assert code == 2 and "truth 'benign'" in err
    _run(capsys, "audit", "outcome", STUDY_B, "--truth", "leiomyoma", "--source", "surgery")
    code, out, _ = _run(capsys, "audit", "performance", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and rows[0]["n"] == 2 and rows[0]["auc"] == 1.0
    code, out, _ = _run(capsys, "audit", "performance")
    assert code == 0 and "brier" in out
    # intervals print as intervals, not as lists of floats; the threshold is the bundle's
    assert "(95% CI " in out and "[" not in out and "sensitivity_ci" not in out
    code, out, _ = _run(capsys, "audit", "performance", "--format", "csv")
    assert code == 0 and "1.00 (95% CI " in out and "[" not in out
