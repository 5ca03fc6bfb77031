"""Anchors outside the database: a rewrite of the whole chain (every later hash and the chain
head recomputed) passes :func:`verify_chain` alone, and is caught against a signed anchor."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from audit import AuditLog
from audit.anchor import (
    AnchorError,
    AnchorWriter,
    anchor_map,
    create_anchor_key,
    load_anchor_key,
    read_anchors,
    write_anchor,
)
from audit.chain import row_hash, verify_chain
from audit.schema import EVENT_MODELS, EVENT_TABLE_NAMES, ChainHead
from cli.main import main
from eusdx.config import load_settings
from tests.audit.conftest import SECRET, drop_triggers
from tests.audit.data import populate


def _settings(var: Path, db_url: str):  # type: ignore[no-untyped-def]
    return load_settings(None, spool_dir=var / "spool", database_url=db_url,
                         audit_hmac_secret=SECRET, audit_anchor_syslog="")


@pytest.fixture
def populated(tmp_path: Path) -> Iterator[tuple[AuditLog, Any]]:
    """A SQLite audit log with a known history, and settings whose anchors live next to it."""
    var = tmp_path / "var"
    db_url = f"sqlite:///{var / 'audit.db'}"
    log = AuditLog(db_url, SECRET)
    log.ensure_schema()
    populate(log)
    try:
        yield log, _settings(var, db_url)
    finally:
        log.close()


def _cli_env(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    monkeypatch.setenv("EUSDX_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("EUSDX_SPOOL_DIR", str(settings.spool_dir))
    monkeypatch.setenv("EUSDX_AUDIT_HMAC_SECRET", SECRET)


def rewrite_whole_chain(log: AuditLog, *, sop_uid: str, size: int) -> None:
    """The attack the anchors exist for: edit one row, then recompute every later hash and the
    chain head, so the chain is internally consistent again."""
    with log.engine.begin() as conn:
        for name in EVENT_TABLE_NAMES:
            drop_triggers(conn, name)
        rows = []
        for model in EVENT_MODELS:
            table = model.__table__
            rows += [(r["seq"], table, dict(r)) for r in conn.execute(sa.select(table)).mappings()]
        rows.sort(key=lambda item: item[0])
        prev = None
        for seq, table, row in rows:
            if prev is None:
                prev = row["prev_hash"]
            if table.name == "instances" and row["sop_uid"] == sop_uid:
                row["size"] = size
            row["prev_hash"] = prev
            row["row_hash"] = row_hash(prev, table.name, row)
            conn.execute(sa.update(table).where(table.c.seq == seq).values(
                prev_hash=row["prev_hash"], row_hash=row["row_hash"], size=row["size"])
                if table.name == "instances" else
                sa.update(table).where(table.c.seq == seq).values(
                    prev_hash=row["prev_hash"], row_hash=row["row_hash"]))
            prev = row["row_hash"]
        conn.execute(sa.update(ChainHead).where(ChainHead.id == 1).values(row_hash=prev))


def test_full_chain_rewrite_caught_by_audit_verify_against_the_anchor(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    var = tmp_path / "var"
    settings = _settings(var, db_url)
    log = AuditLog(db_url, SECRET)
    log.ensure_schema()
    try:
        populate(log)
        writer = AnchorWriter(log.engine, settings)
        anchor = writer.stop()  # the shutdown anchor
        assert anchor is not None and anchor.path.is_file()
        assert stat.S_IMODE(settings.anchor_signing_key_path.stat().st_mode) == 0o600
        log.qa_event(actor="qa", action="studies", params={})  # life goes on after the anchor
        with log.engine.connect() as conn:
            target = conn.execute(sa.text("SELECT min(seq) FROM instances")).scalar_one()
        assert target < anchor.seq
        rewrite_whole_chain(log, sop_uid=_first_sop(log), size=123456)
        with log.engine.connect() as conn:
            assert verify_chain(conn).ok  # without an anchor the rewrite goes unnoticed
            anchors = read_anchors(settings.anchor_dir, load_anchor_key(settings.anchor_signing_key_path).public_key())
            result = verify_chain(conn, anchor_map(anchors))
        assert result.broken is not None and result.broken.seq == anchor.seq
        assert "rewritten" in result.broken.problem
    finally:
        log.close()
    _cli_env(monkeypatch, settings)
    capsys.readouterr()
    assert main(["audit", "verify"]) != 0
    err = capsys.readouterr().err
    assert f"seq {anchor.seq}" in err and "chain was rewritten" in err


def _first_sop(log: AuditLog) -> str:
    with log.engine.connect() as conn:
        return str(conn.execute(sa.text(
            "SELECT sop_uid FROM instances WHERE status = 'stored' ORDER BY seq LIMIT 1")).scalar_one())


def test_audit_verify_passes_with_anchors_and_reports_them(
        populated: tuple[AuditLog, Any], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    log, settings = populated
    AnchorWriter(log.engine, settings).anchor("manual")
    _cli_env(monkeypatch, settings)
    capsys.readouterr()
    assert main(["audit", "verify"]) == 0
    assert "matches 1 signed anchor(s)" in capsys.readouterr().out


def test_truncation_after_an_anchor_is_caught(populated: tuple[AuditLog, Any]) -> None:
    log, settings = populated
    anchor = AnchorWriter(log.engine, settings).anchor("manual")
    assert anchor is not None
    with log.engine.begin() as conn:  # delete the anchored (newest) row and move the head back
        table = next(m.__table__ for m in EVENT_MODELS
                     if conn.execute(sa.select(m.__table__.c.seq).where(
                         m.__table__.c.seq == anchor.seq)).first() is not None)
        drop_triggers(conn, table.name)
        prev = conn.execute(sa.select(table.c.prev_hash).where(table.c.seq == anchor.seq)).scalar_one()
        conn.execute(sa.delete(table).where(table.c.seq == anchor.seq))
        conn.execute(sa.update(ChainHead).where(ChainHead.id == 1).values(
            seq=anchor.seq - 1, row_hash=prev))
    anchors = read_anchors(settings.anchor_dir, load_anchor_key(settings.anchor_signing_key_path).public_key())
    with log.engine.connect() as conn:
        assert verify_chain(conn).ok
        result = verify_chain(conn, anchor_map(anchors))
    assert result.broken is not None and "rows removed from the end" in result.broken.problem


def test_edited_or_foreign_anchor_is_refused(populated: tuple[AuditLog, Any], tmp_path: Path) -> None:
    log, settings = populated
    anchor = AnchorWriter(log.engine, settings).anchor("manual")
    assert anchor is not None
    public = load_anchor_key(settings.anchor_signing_key_path).public_key()
    doc = json.loads(anchor.path.read_text())
    doc["row_hash"] = "0" * 64
    anchor.path.write_text(json.dumps(doc))
    with pytest.raises(AnchorError, match="signature does not verify"):
        read_anchors(settings.anchor_dir, public)
    other = tmp_path / "other.pem"
    create_anchor_key(other)
    doc["row_hash"] = anchor.row_hash
    anchor.path.write_text(json.dumps(doc))
    assert read_anchors(settings.anchor_dir, public)[0].row_hash == anchor.row_hash
    with pytest.raises(AnchorError, match="not by this installation's key"):
        read_anchors(settings.anchor_dir, load_anchor_key(other).public_key())


def test_interval_anchors_skip_an_unmoved_head(populated: tuple[AuditLog, Any]) -> None:
    log, settings = populated
    writer = AnchorWriter(log.engine, settings)
    assert writer.anchor("interval") is not None
    assert writer.anchor("interval") is None
    log.qa_event(actor="qa", action="studies", params={})
    assert writer.anchor("interval") is not None
    assert writer.stop() is not None and writer.written == 3


def test_anchor_goes_to_syslog(populated: tuple[AuditLog, Any]) -> None:
    import socket

    log, settings = populated
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(10)
        address = f"127.0.0.1:{receiver.getsockname()[1]}"
        anchor = write_anchor(log.engine, settings.anchor_dir, load_or_create(settings),
                              reason="manual", syslog=address)
        line = receiver.recv(4096).decode()
    assert f"seq={anchor.seq} row_hash={anchor.row_hash}" in line
    assert line.startswith("<86>")  # authpriv.info: facility 10 * 8 + severity 6 (RFC 3164)


def load_or_create(settings: Any):  # type: ignore[no-untyped-def]
    create_anchor_key(settings.anchor_signing_key_path)
    return load_anchor_key(settings.anchor_signing_key_path)
