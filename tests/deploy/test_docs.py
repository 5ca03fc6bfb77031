"""The operator docs against the code: codes, SOP classes, links and the honesty statements."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy._refs import DOCS, markdown_commands

GUIDES = ("operator-guide.md", "conformance-statement.md", "qa-guide.md")
_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def _text(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _anchors(markdown: str) -> set[str]:
    """GitHub-style heading anchors."""
    out = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
            out.add(slug)
    return out


@pytest.mark.parametrize("name", GUIDES)
def test_guide_exists_and_says_phantom_results_are_not_clinical(name: str) -> None:
    text = _text(name)
    assert len(text) > 3000
    assert re.search(r"phantom", text, re.I)
    assert re.search(r"not (a )?clinical|NOT FOR CLINICAL USE", text), f"{name} lacks the notice"


@pytest.mark.parametrize("name", GUIDES)
def test_relative_links_resolve(name: str) -> None:
    path = DOCS / name
    text = path.read_text(encoding="utf-8")
    for m in _LINK.finditer(text):
        target = m["target"]
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        assert dest.exists(), f"{name}: link to missing {target}"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest.read_text(encoding="utf-8")), f"{name}: no anchor {target}"


def test_every_private_code_is_in_the_conformance_statement() -> None:
    from pydicom.sr.coding import Code

    from worker.sr import codes

    text = _text("conformance-statement.md")
    private = [
        v for v in vars(codes).values() if isinstance(v, Code) and v.scheme_designator == codes.PRIVATE_SCHEME
    ]
    assert len(private) >= 10
    for code in private:
        assert f"| {code.value} | {code.meaning} |" in text, f"{code.value} missing from the table"
    # and no private code in the table that the code does not have
    documented = set(re.findall(r"^\| (EUSDX-\d{4}) \|", text, re.M))
    assert documented == {c.value for c in private}
    assert f"`{codes.PRIVATE_SCHEME}`" in text


def test_standard_codes_of_the_sr_are_documented() -> None:
    from pydicom.sr.coding import Code

    from worker.sr import codes

    text = _text("conformance-statement.md")
    for name in ("LEIOMYOMA", "STOMACH", "LESION", "PROBABILITY", "FINDING", "REPORT_TITLE",
                 "PROCEDURE_REPORTED", "ROI_AUTOMATIC", "QUALITATIVE_EVALUATIONS",
                 "ALL_SUCCEEDED_WITH_FINDINGS", "NONE_SUCCEEDED"):
        code = getattr(codes, name)
        assert isinstance(code, Code)
        assert f"{code.value}, {code.scheme_designator}" in text or f"{code.meaning} {code.value}" in text, name


def _table_after(text: str, heading: str) -> list[list[str]]:
    """Rows of the first Markdown table after ``heading`` (cells stripped, header skipped)."""
    start = text.index(heading)
    rows: list[list[str]] = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    return rows[2:]


def test_accepted_sop_classes_match_the_node_and_the_worker() -> None:
    from dicom_node.sop_classes import ANALYSED, SEGMENTATION, VERIFICATION, stored

    rows = _table_after(_text("conformance-statement.md"), "Accepted abstract syntaxes")
    named = {uid: (name, analysed) for name, uid, analysed in rows if uid != "—"}
    assert set(named) == set(ANALYSED) | {SEGMENTATION, VERIFICATION}
    for uid, (name, analysed) in named.items():
        if uid in ANALYSED:
            assert name == ANALYSED[uid] and analysed.startswith("yes"), name
        elif uid == SEGMENTATION:
            assert uid in stored() and name == stored()[uid]


def test_accepted_transfer_syntaxes_match_the_node() -> None:
    from dicom_node.sop_classes import TRANSFER_SYNTAXES

    rows = _table_after(_text("conformance-statement.md"), "Transfer syntaxes accepted for every storage")
    assert [uid for _, uid in rows] == list(TRANSFER_SYNTAXES)


def test_status_codes_match_the_node() -> None:
    from dicom_node.status import Status

    text = _text("conformance-statement.md")
    for status in Status:
        assert f"| `{int(status):04X}` " in text, f"{status.name} (0x{int(status):04X}) is not documented"


def test_sr_series_and_notice_match_the_builder() -> None:
    from worker.sr import builder

    text = " ".join(_text("conformance-statement.md").split())
    assert f"SeriesNumber {builder.SR_SERIES_NUMBER}" in text
    assert builder.SERIES_DESCRIPTION in text
    for notice in builder.notice_texts(synthetic=True):
        assert " ".join(notice.split()) in text.replace("TEXT Decision support notice = ", "")


def test_markdown_command_extraction(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "eusdx serve in prose is ignored\n"
        "```text\neusdx worker --not-checked\n```\n"
        "```sh\n$ eusdx audit stats --since 2026-01-01 | head\n"
        "EUSDX_DATABASE_URL=sqlite:///x.db eusdx audit verify\n"
        "sudo -u eusdx /opt/eusdx/venv/bin/eusdx db upgrade   # comment\n```\n"
    )
    refs = [r.argv for r in markdown_commands(doc)]
    assert refs == [("audit", "stats", "--since", "2026-01-01"), ("audit", "verify"), ("db", "upgrade")]
    assert str(next(markdown_commands(doc))).startswith(f"{doc}:6: eusdx audit stats")


def test_worklist_example_has_the_fields_the_feed_returns(tmp_path: Path) -> None:
    """The JSON example in the QA guide lists exactly the keys a real worklist item has."""
    import json

    from audit import AuditLog
    from audit.queries import QaReader

    block = re.search(r"```json\n(?P<body>.*?)\n```", _text("qa-guide.md"), re.S)
    assert block, "qa-guide.md has no JSON example of the worklist"
    example = json.loads(block["body"])
    log = AuditLog(f"sqlite:///{tmp_path / 'audit.db'}", "test-secret")
    try:
        log.ensure_schema()
        study = "1.2.826.0.1.3680043.8.498.1"
        log.study_state(study_uid=study, state="received", accession="A123456")
        log.analysis(
            study_uid=study, bundle_version="2026.11.26-ab12cd34", bundle_sha256="0" * 64,
            device="cpu", timings={"classify": 0.1}, lesions=[], probability=0.83, label="GIST",
            roi_source="automatic", sr_sop_uid="1.2.826.0.1.3680043.8.498.2",
        )
        feed = QaReader(log, "test").worklist(cursor=0, limit=10, threshold=0.7)
    finally:
        log.close()
    assert set(feed) == set(example)
    (item,) = feed["items"]
    assert set(item) == set(example["items"][0])
    assert item["priority"] is True and example["items"][0]["priority"] is True
    # same timestamp style as the example
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", item["ts"])


def test_configuration_errors_look_as_the_operator_guide_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from cli.main import main

    text = " ".join(_text("operator-guide.md").split())
    m = re.search(r"exit code (\d+) \(`(eusdx: error: invalid configuration key '\w+': [^`.]*?)\.\.\.`\)", text)
    assert m, "the guide no longer shows the configuration error"
    for key in [k for k in os.environ if k.startswith("EUSDX_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("EUSDX_DICOM_PORT", "abc")
    assert main(["db", "current"]) == int(m[1])
    assert capsys.readouterr().err.startswith(m[2].rstrip(", "))
    monkeypatch.delenv("EUSDX_DICOM_PORT")
    bad = tmp_path / "bad.toml"
    bad.write_text("bogus_key = 1\n")
    assert main(["--config", str(bad), "db", "current"]) == int(m[1])
    assert "invalid configuration key 'bogus_key'" in capsys.readouterr().err


def test_implementation_identifiers_are_current() -> None:
    import pynetdicom

    text = _text("conformance-statement.md")
    assert f"`{pynetdicom.PYNETDICOM_IMPLEMENTATION_UID}`" in text
    assert f"`{pynetdicom.PYNETDICOM_IMPLEMENTATION_VERSION}`" in text


def test_the_event_tables_named_in_the_qa_guide_are_the_chained_ones() -> None:
    from audit.schema import EVENT_MODELS

    text = " ".join(_text("qa-guide.md").split())
    m = re.search(r"FROM (\w+) WHERE seq = \d+`, and the same for the other event tables: ([\w, ]+)\)", text)
    assert m, "the QA guide no longer shows how to look up a recorded head"
    named = {m[1], *(t.strip() for t in m[2].split(","))}
    assert named == {getattr(model, "__tablename__") for model in EVENT_MODELS}


_DEFAULT_CLAIM = re.compile(r"[Bb]y default \(`(?P<key>[a-z_]+) = (?P<value>[^`]+)`\)")


@pytest.mark.parametrize("name", GUIDES)
def test_stated_defaults_are_the_configured_defaults(name: str) -> None:
    """"By default (`key = value`)" in a guide is the default of that setting (the conformance
    statement once said `receive_chunked = true` while the configuration said false)."""
    from eusdx.config import Settings

    wrong = []
    for m in _DEFAULT_CLAIM.finditer(_text(name)):
        default = Settings.model_fields[m["key"]].default
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        if m["value"].strip('"') != shown:
            wrong.append(f"{m['key']}: the guide says {m['value']}, the configuration {default!r}")
    assert not wrong, "\n".join(wrong)


def test_architecture_page_names_only_files_that_exist() -> None:
    """docs/architecture.md: the picture and the reading list point at real files (a docstring
    once pointed at a file that did not exist)."""
    text = _text("architecture.md")
    root = DOCS.parent
    named = set(re.findall(r"\b((?:eusdx|cli|demo|dicom_node|worker|audit|models|tests)/[\w/]+\.py)\b", text))
    assert len(named) >= 12
    missing = sorted(p for p in named if not (root / p).is_file())
    assert not missing, missing
