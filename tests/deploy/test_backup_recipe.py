"""The operator guide's backup section works: the documented sqlite3 / pg_dump + pg_restore commands
give a copy on which `eusdx audit verify` passes, and an edited row in a copy makes it fail."""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL, require_tool
from tests.deploy._refs import DOCS


def _backup_section() -> str:
    text = (DOCS / "operator-guide.md").read_text(encoding="utf-8")
    start = text.index("## 10. Back up and restore the audit database")
    return text[start : text.index("\n## ", start + 1)]


def _fill(url: str) -> int:
    """Write a few events of every kind through the real AuditLog; return the row count."""
    from audit import AuditLog

    log = AuditLog(url, "backup-test-secret")
    try:
        log.ensure_schema()
        study = "1.2.826.0.1.3680043.8.498.77"
        assoc = log.association(peer_ae="PACS1", peer_host="10.0.0.1", peer_port=104, called_ae="EUSDX",
                                tls=False, accepted=True)
        log.instance(association_id=assoc, study_uid=study, series_uid=study + ".1", sop_uid=study + ".1.1",
                     sop_class_uid="1.2.840.10008.5.1.4.1.1.6.1", transfer_syntax="1.2.840.10008.1.2.1",
                     size=10, digest="0" * 64, status="stored", calling_ae="PACS1", patient_id="P1")
        log.association_closed(association_id=assoc, instances=1)
        log.study_state(study_uid=study, state="received")
        log.analysis(study_uid=study, bundle_version="v1", bundle_sha256="1" * 64, device="cpu",
                     timings={"classify": 0.1}, lesions=[], probability=0.4, label="leiomyoma",
                     roi_source="automatic")
        log.export(study_uid=study, destination="PACS1@10.0.0.1:104", attempt=1, status="sent",
                   sr_sop_uid=study + ".9")
    finally:
        log.close()
    return 6


def _verify(url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    from cli.main import main

    for key in [k for k in os.environ if k.startswith("EUSDX_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("EUSDX_DATABASE_URL", url)  # as the guide does
    code = main(["audit", "verify"])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_sqlite_online_backup_verifies_and_tampering_is_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sqlite = require_tool("sqlite3")
    live = tmp_path / "audit.db"
    _fill(f"sqlite:///{live}")
    (line,) = [ln for ln in _backup_section().splitlines() if ln.startswith("sqlite3 ")]
    argv = shlex.split(line)
    assert argv[1] == "/var/lib/eusdx/var/audit.db"
    backup = tmp_path / "backup.db"
    argv = [sqlite, str(live), re.sub(r"'[^']*'", f"'{backup}'", argv[2])]
    subprocess.run(argv, check=True, timeout=60, capture_output=True)

    code, out = _verify(f"sqlite:///{backup}", capsys, monkeypatch)
    assert code == 0, out
    assert re.match(r"audit chain ok: \d+ rows, last seq \d+, head [0-9a-f]{64}", out), out

    # Edit one row in the copy (the append-only triggers have to go first, as an intruder's would).
    with sqlite3.connect(backup) as conn:
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            conn.execute(f'DROP TRIGGER "{name}"')
        from audit.schema import AnalysisEvent

        conn.execute(f'UPDATE "{AnalysisEvent.__tablename__}" SET probability = 0.99')
    code, out = _verify(f"sqlite:///{backup}", capsys, monkeypatch)
    assert code != 0
    assert "audit chain broken at" in out and "seq" in out


@pytest.mark.postgres
@pytest.mark.slow
def test_pg_dump_and_restore_as_documented_verify(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pg_dump = require_tool("pg_dump")
    pg_restore = require_tool("pg_restore")
    createdb = require_tool("createdb")
    dropdb = require_tool("dropdb")
    require_tool("psql")
    section = _backup_section()
    (dump_line,) = [ln for ln in section.splitlines() if ln.startswith("pg_dump ")]
    (restore_line,) = [ln for ln in section.splitlines() if ln.startswith("createdb ")]
    assert "--format=custom" in dump_line and "pg_restore --no-owner --dbname=" in restore_line

    base = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0]
    src, dst = f"eusdx_src_{uuid.uuid4().hex[:8]}", f"eusdx_restore_{uuid.uuid4().hex[:8]}"
    conn_args = ["-h", "127.0.0.1", "-U", "postgres"]
    subprocess.run([createdb, *conn_args, src], check=True, timeout=60)
    try:
        rows = _fill(f"postgresql+psycopg://postgres@127.0.0.1:5432/{src}")
        assert rows > 0
        dump = tmp_path / "eusdx-audit.dump"
        subprocess.run([pg_dump, "--format=custom", f"--file={dump}", f"{base}/{src}"], check=True, timeout=120)
        subprocess.run([createdb, *conn_args, dst], check=True, timeout=60)
        subprocess.run([pg_restore, "--no-owner", f"--dbname={base}/{dst}", str(dump)], check=True, timeout=120)
        code, out = _verify(f"postgresql+psycopg://postgres@127.0.0.1:5432/{dst}", capsys, monkeypatch)
        assert code == 0, out
        assert out.startswith("audit chain ok:")
    finally:
        for db in (src, dst):
            subprocess.run([dropdb, *conn_args, "--if-exists", db], timeout=60)
