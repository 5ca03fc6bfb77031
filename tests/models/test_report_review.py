"""Issue 16: every item TRIPOD+AI and CLAIM ask of the evaluation report is on the page headless Chromium renders.

The report is built from a fabricated bundle (two lesions per patient, an external set, lesion
characteristics, thumbnails, config/manifest/radiomics settings) so no training runs here.
"""

from __future__ import annotations

import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from models.report import build_report, load_bundle_inputs
from tests.conftest import require_tool
from tests.models._report_fabricate import fabricate_bundle

FEW = [("svm", "radiomics"), ("svm", "deep"), ("svm", "combined"), ("rf", "combined")]
RAW_ERROR_TEXT = ("must be strictly between", "must contain both classes", "needs at least 2 cases",
                  "ValueError", "Traceback", "Error:", "calibration fit:")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    # Two lesions per patient: 140 + 40 + 30 = 210 patients (the issue asks for a cohort of at least 200).
    root = fabricate_bundle(tmp_path_factory.mktemp("bundle"), models=FEW, n_train=280, n_test=80, n_external=60,
                            manifest=True)
    out = tmp_path_factory.mktemp("report")
    build_report(load_bundle_inputs(root), out, prevalence=0.3, n_boot=200)
    return out, json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def dom(report: tuple[Path, dict]) -> str:
    chromium = require_tool("chromium")
    out, _ = report
    url = (out / "report.html").resolve().as_uri()
    return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                           "--dump-dom", url], check=True, capture_output=True, text=True, timeout=120).stdout


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self._stack: list[str | None] = []
        self.cells: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        eid = dict(attrs).get("id")
        if eid:
            self.by_id[eid] = ""
        if tag in ("td", "th"):
            self._cell = []
        if tag not in ("img", "br", "meta", "link"):
            self._stack.append(eid)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append("".join(self._cell))
            self._cell = None
        if tag not in ("img", "br", "meta", "link") and self._stack:
            self._stack.pop()

    def handle_data(self, data: str) -> None:
        for eid in self._stack:
            if eid:
                self.by_id[eid] += data
        if self._cell is not None:
            self._cell.append(data)


def _parse(dom: str) -> _Text:
    p = _Text()
    p.feed(dom)
    return p


def test_every_checklist_item_is_on_the_rendered_page(dom: str, report: tuple[Path, dict]) -> None:
    page = _parse(dom)
    _, rep = report
    ids = page.by_id
    # Table 1 by partition: size, layer, echo pattern, device, centre; participant flow; unit of analysis
    for text in ("Size, mm", "Layer of origin", "Echo pattern", "Device", "Centre", "external: GIST", "test: leiomyoma"):
        assert text in ids["table1"], text
    assert "Images excluded" in ids["participant-flow"] and "Lesions excluded" in ids["participant-flow"]
    assert "unit of analysis is the lesion" in ids["unit-of-analysis"]
    assert "Images are counted separately" in ids["unit-of-analysis"]
    # prevalence per set, PPV/NPV at the stated deployment prevalence
    for split in ("train", "test", "external"):
        assert split in ids["table-prevalence"]
    assert "0.30" in ids["deployment-prevalence"] and "stated" in ids["deployment-prevalence"]
    # patient-clustered bootstrap CIs for AUC and every threshold metric
    for split in ("train", "test", "external"):
        boot = ids[f"table2-bootstrap-{split}"]
        for col in ("AUC (bootstrap CI)", "Sensitivity", "Specificity", "PPV", "NPV", "PPV at prevalence 0.30",
                    "NPV at prevalence 0.30", "resampling patients"):
            assert col in boot, (split, col)
    # Holm-adjusted DeLong, paired DeLong on the external set, internal-vs-external per model
    assert "Holm" in ids["table3"] and "Holm" in ids["table3-external"]
    assert "p" in ids["table3-external"] and "Z=" in ids["table3-external"]
    for clf, mod in FEW:
        assert f"{clf}/{mod}" in ids["table-external"]
    assert "AUC internal test (95% CI)" in ids["table-external"]
    # calibration-in-the-large, slope, ECE with bin counts, Hosmer-Lemeshow only above the minimum n
    t4 = ids["table4"]
    for text in ("Calibration-in-the-large", "Calibration slope", "ECE bin counts", "Hosmer-Lemeshow"):
        assert text in t4
    assert "not reported" in t4 and "fewer than the 100" in t4  # 60-80 lesions per held-out set: the stated reason
    # decision curves with the prevalence option
    assert "deployment prevalence" in ids["decision-prevalence"]
    assert len(re.findall(r'<img[^>]+alt="Decision curve \w+ at the deployment prevalence"', dom)) == 3
    # results with the automatic ROI beside the SEG ROI: every model on both held-out sets, coverage
    assert "automatic ROI" in ids["auto-roi"] and "Dice" in ids["auto-roi"]
    auto = ids["table-auto-roi"]
    for text in ("AUC SEG (95% CI)", "AUC automatic (95% CI)", "p Holm", "Se auto", "Sp auto"):
        assert text in auto, text
    assert {(r["model"], r["split"]) for r in rep["auto_roi"]["rows"]} == {
        (f"{c}/{m}", sp) for c, m in FEW for sp in ("test", "external")}
    for clf, mod in FEW:
        assert f"{clf}/{mod}" in auto
    cov = ids["table-auto-roi-coverage"]
    assert "NoLesionError" in cov and "71 of 80" in cov  # lesions 4, 13, ..., 76 have no automatic ROI
    # gallery of misclassified lesions, methods from the bundle
    assert "Misclassified" in ids["gallery"]
    assert rep["gallery"]["rows"] and all(r["image"] for r in rep["gallery"]["rows"])
    assert len(re.findall(r'<img[^>]+alt="lesion ', dom)) == len(rep["gallery"]["rows"])
    ident = ids["methods-identity"]
    assert "2026.12.01-abcdef12" in ident and "svm-combined (deit_tiny random-init + radiomics)" in ident
    assert rep["methods"]["identity"][1][1] in ident  # manifest SHA-256, as the SR carries it
    items = ids["methods-items"]
    for text in ("deit_tiny_patch16_224", "random initialisation", "lasso", "mean", "Seed"):
        assert text in items, text
    assert "binWidth" in ids["methods-radiomics"]
    assert "pyradiomics-bhklab" in ids["methods-libraries"] and "3.1.4" in ids["methods-libraries"]
    # synthetic phantom stated
    assert 'id="synthetic-banner"' in dom and "eusdx synthetic phantom" in dom


def test_no_raw_error_text_in_any_cell(dom: str) -> None:
    page = _parse(dom)
    assert len(page.cells) > 200
    bad = [c for c in page.cells if any(t in c for t in RAW_ERROR_TEXT)]
    assert not bad, bad[:5]


def test_uncomputable_cells_say_why_in_plain_words(tmp_path: Path) -> None:
    """A set with one GIST and probabilities of exactly 0 and 1: every cell says why, no exception text."""
    root = fabricate_bundle(tmp_path / "b", models=FEW[:2], n_train=30, n_test=12, external=False)
    pred = root / "evaluation" / "predictions.csv"
    lines = pred.read_text().splitlines()
    fixed = [lines[0]]
    for ln in lines[1:]:
        f = ln.split(",")
        if f[0] == "test":
            idx = int(f[1][2:])
            f[3] = "1" if idx == 0 else "0"
            f[6] = "1.0000" if idx in (0, 5) else ("0.0000" if idx == 6 else f[6])
        fixed.append(",".join(f))
    pred.write_text("\n".join(fixed) + "\n")
    lesions = root / "evaluation" / "lesions.csv"
    les = [ln for ln in lesions.read_text().splitlines()]
    les = [les[0]] + [(ln.replace(",1,", ",0,", 1) if ln.startswith("test,") and not ln.startswith("test,TE0000,")
                       else ln) for ln in les[1:]]
    lesions.write_text("\n".join(les) + "\n")
    out = tmp_path / "r"
    build_report(load_bundle_inputs(root), out, n_boot=50)
    html = (out / "report.html").read_text()
    page = _parse(html)
    assert not [c for c in page.cells if any(t in c for t in RAW_ERROR_TEXT)]
    rep = json.loads((out / "report.json").read_text())
    row = next(r for r in rep["table2"]["rows"] if r["split"] == "test")
    assert row["auc"] is None and "at least 2 lesions of each class (here 1 GIST, 11 leiomyoma)" in row["auc_note"]
    assert "at least 2 lesions of each class" in page.by_id["table2-test"]
    cal = next(r for r in rep["table4"]["rows"] if r["split"] == "test")
    assert "exactly 0 or 1" in cal["calibration_note"] and "exactly 0 or 1" in page.by_id["table4"]
    assert "not reported: 12 lesions" in cal["hosmer_lemeshow_note"]


def test_legacy_bundle_says_what_is_missing(tmp_path: Path) -> None:
    root = fabricate_bundle(tmp_path / "b", models=FEW[:2], n_train=30, n_test=16, external=False, legacy=True)
    out = tmp_path / "r"
    build_report(load_bundle_inputs(root), out, n_boot=50)
    page = _parse((out / "report.html").read_text())
    assert "predates issue 16" in page.by_id["table1"] and "predates issue 16" in page.by_id["participant-flow"]
    assert "no thumbnails" in page.by_id["gallery"]
    assert "not recorded in this bundle" in page.by_id["methods-identity"]
    assert "assumed 0.5" in page.by_id["deployment-prevalence"]


def test_automatic_roi_rows_match_an_independent_computation(report: tuple[Path, dict]) -> None:
    """AUCs from scikit-learn on the fabricated files, on the lesions both ROIs scored; Holm never lowers p."""
    import csv as _csv

    from sklearn.metrics import roc_auc_score

    out, rep = report
    root = Path(rep["inputs"]["predictions"]).parent
    read = lambda name: list(_csv.DictReader((root / name).open()))  # noqa: E731
    seg, auto = read("predictions.csv"), read("predictions_auto_roi.csv")
    for row in rep["auto_roi"]["rows"]:
        clf, mod = row["model"].split("/")
        pick = lambda rows: {r["lesion_id"]: (int(r["y"]), float(r["prob"])) for r in rows  # noqa: E731
                             if r["split"] == row["split"] and r["classifier"] == clf and r["modality"] == mod}
        s, a = pick(seg), pick(auto)
        both = sorted(set(s) & set(a))
        assert row["lesions_both"] == len(both) == len(a) < len(s)
        y = [s[k][0] for k in both]
        assert row["auc_seg"]["estimate"] == pytest.approx(roc_auc_score(y, [s[k][1] for k in both]), abs=1e-12)
        assert row["auc_auto"]["estimate"] == pytest.approx(roc_auc_score(y, [a[k][1] for k in both]), abs=1e-12)
        assert row["difference"]["estimate"] == pytest.approx(row["auc_auto"]["estimate"] - row["auc_seg"]["estimate"])
        assert row["p_holm"] >= row["p_value"]
