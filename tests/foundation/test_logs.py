"""Logs are JSON lines and never carry patient identifiers, even when code passes one by mistake."""

from __future__ import annotations

import io
import json
import logging

from eusdx.logs import configure_logging


def test_json_lines_with_extra_fields_and_no_patient_keys() -> None:
    buf = io.StringIO()
    configure_logging("INFO", "json", stream=buf)
    log = logging.getLogger("eusdx.test")
    log.info("stored", extra={"sop_uid": "1.2.3", "PatientName": "DOE^JANE", "patient_id": "X1"})
    line = buf.getvalue().strip().splitlines()[-1]
    record = json.loads(line)
    assert record["msg"] == "stored"
    assert record["sop_uid"] == "1.2.3"
    assert "DOE^JANE" not in line and "X1" not in line
    assert record["ts"].endswith("Z")


def test_configure_is_idempotent() -> None:
    buf = io.StringIO()
    configure_logging("INFO", "json", stream=buf)
    configure_logging("INFO", "json", stream=buf)
    logging.getLogger("eusdx.test").warning("once")
    assert buf.getvalue().count('"once"') == 1


def test_default_handler_follows_sys_stderr(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # set up while one stderr is in place, then that stream goes away (as pytest's capture does)
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    configure_logging("INFO", "json")
    first.close()
    monkeypatch.setattr("sys.stderr", second)
    logging.getLogger("eusdx.test").warning("after the swap")
    assert '"after the swap"' in second.getvalue()


def test_library_chatter_stays_out_of_the_log_at_info() -> None:
    """At INFO a log carries eusdx's own lines; the libraries' own INFO lines (Alembic's "Context
    impl SQLiteImpl." with every audit command, one httpx line per HTTP export, ...) do not, their
    warnings do."""
    buf = io.StringIO()
    configure_logging("INFO", "json", stream=buf)
    for name in ("alembic.runtime.migration", "httpx", "dicomweb_client.api", "timm.models._builder",
                 "highdicom.base", "radiomics.glcm", "pykwalify.core", "pynetdicom.acse"):
        logging.getLogger(name).info("chatter from %s", name)
    logging.getLogger("alembic.runtime.migration").warning("a real problem")
    logging.getLogger("dicom_node.app").info("DICOM node listening")
    text = buf.getvalue()
    assert "chatter" not in text
    assert "a real problem" in text and "DICOM node listening" in text
