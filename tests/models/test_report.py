"""The evaluation report built from a fabricated bundle: files, report.json, HTML, headless Chromium."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import stats
from models.report import EvaluationInputs, build_report, load_bundle_inputs, read_predictions
from models.report.html import SYNTHETIC_BANNER, UNKNOWN_BANNER
from tests.conftest import require_tool
from tests.models._report_fabricate import MODELS, fabricate_bundle

N_MODELS = len(MODELS)
FEW = [("svm", "radiomics"), ("svm", "combined"), ("xgboost", "combined")]
SPLITS = ("train", "test", "external")
N_FIGURES = 4 * len(SPLITS) + 2  # roc, calibration, decision, decision at prevalence per split; DeLong; Brier


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = fabricate_bundle(tmp_path_factory.mktemp("bundle"))
    out = tmp_path_factory.mktemp("report")
    build_report(load_bundle_inputs(root), out)
    return root, out


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def _raw(root: Path, model: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    clf, mod = model.split("/")
    with (root / "evaluation" / "predictions.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if (r["classifier"], r["modality"], r["split"]) == (clf, mod, split)]
    rows.sort(key=lambda r: r["lesion_id"])
    return np.array([int(r["y"]) for r in rows]), np.array([float(r["prob"]) for r in rows])


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[str] = []
        self.imgs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("id"):
            self.tables.append(str(a["id"]))
        if tag == "img":
            self.imgs.append(str(a.get("src")))


def test_files_written(built: tuple[Path, Path]) -> None:
    _, out = built
    names = {p.name for p in out.iterdir()}
    for f in ("report.html", "report.json", "table2.csv", "table3.csv", "table4.csv", "external.csv",
              "delong_test.png", "brier.png"):
        assert f in names
    for split in SPLITS:
        for kind in ("roc", "calibration", "decision"):
            assert f"{kind}_{split}.png" in names
    for png in out.glob("*.png"):
        with Image.open(png) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 300


def test_json_has_all_tables(built: tuple[Path, Path]) -> None:
    _, out = built
    rep = _report(out)
    assert rep["schema"] == "eusdx-evaluation-report/1"
    assert rep["synthetic"] is True
    assert rep["splits"] == list(SPLITS)
    assert len(rep["models"]) == N_MODELS
    assert len(rep["table2"]["rows"]) == N_MODELS * 3
    assert len(rep["table3"]["pairs"]) == N_MODELS * (N_MODELS - 1) // 2
    assert len(rep["table4"]["rows"]) == N_MODELS * 3
    assert len(rep["external"]["rows"]) == N_MODELS
    assert rep["shap"] == {"available": False, "reason": rep["shap"]["reason"]}
    for row in rep["table2"]["rows"]:
        for k in ("auc", "accuracy", "sensitivity", "specificity", "ppv", "npv"):
            assert set(row[k]) >= {"estimate", "lower", "upper"}
            assert row[k]["lower"] <= row[k]["estimate"] <= row[k]["upper"]
    assert set(rep["figures"]) == {f"{k}_{s}" for k in ("roc", "calibration", "decision", "decision_prevalence")
                                   for s in SPLITS} | {"delong_test", "brier"}
    # strict JSON: NaN/inf never written
    json.loads((out / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_json_numbers_come_from_the_predictions(built: tuple[Path, Path]) -> None:
    root, out = built
    rep = _report(out)
    model = "svm/combined"
    y, p = _raw(root, model, "test")
    row = next(r for r in rep["table2"]["rows"] if r["model"] == model and r["split"] == "test")
    auc = stats.roc_auc_ci(y, p)
    assert row["auc"]["estimate"] == pytest.approx(auc.auc, abs=1e-12)
    assert row["auc"]["lower"] == pytest.approx(auc.ci_lower, abs=1e-12)
    assert row["threshold"] == 0.5
    tp = int(np.sum((p >= 0.5) & (y == 1)))
    assert row["counts"]["tp"] == tp
    assert row["sensitivity"]["x"] == tp and row["sensitivity"]["n"] == int(y.sum())
    pair = next(q for q in rep["table3"]["pairs"] if q["a"] == "svm/radiomics" and q["b"] == model)
    ya, pa = _raw(root, "svm/radiomics", "test")
    assert pair["z"] == pytest.approx(stats.delong_paired(ya, pa, p).z, abs=1e-12)
    ext = next(r for r in rep["external"]["rows"] if r["model"] == model)
    ye, pe = _raw(root, model, "external")
    assert ext["df"] == pytest.approx(stats.delong_unpaired(y, p, ye, pe).df, abs=1e-12)
    b4 = next(r for r in rep["table4"]["rows"] if r["model"] == model and r["split"] == "test")
    assert b4["brier"] == pytest.approx(float(np.mean((p - y) ** 2)), abs=1e-12)
    # a model without an entry in thresholds.json is evaluated at Youden's threshold on its train rows
    last = "resnet34/end-to-end"
    assert rep["thresholds"][last]["source"].startswith("youden-on-train")
    yt, pt = _raw(root, last, "train")
    assert rep["thresholds"][last]["value"] == pytest.approx(stats.youden_threshold(yt, pt).threshold)


def test_html_contains_tables_banner_and_images(built: tuple[Path, Path]) -> None:
    root, out = built
    html = (out / "report.html").read_text()
    parser = _Collect()
    parser.feed(html)
    for tid in ("table-counts", "table-thresholds", "table2-train", "table2-test", "table2-external", "table3",
                "table4", "table-external"):
        assert tid in parser.tables
    gallery = [r for r in _report(out)["gallery"]["rows"] if r["image"]]
    assert gallery
    assert len(parser.imgs) == N_FIGURES + len(gallery)
    for src in parser.imgs:
        assert not src.startswith(("/", "http", "data:")), src  # relative, next to the page
        assert (out / src).is_file()
    assert SYNTHETIC_BANNER in html
    assert "SHAP not available" in html
    rep = _report(out)
    row = next(r for r in rep["table2"]["rows"] if r["model"] == "rf/deep" and r["split"] == "external")
    a = row["auc"]
    assert f"{a['estimate']:.3f} ({a['lower']:.3f}\u2013{a['upper']:.3f})" in html


def test_html_renders_in_headless_chromium(built: tuple[Path, Path], tmp_path: Path) -> None:
    chromium = require_tool("chromium")
    _, out = built
    shot = tmp_path / "shot.png"
    url = (out / "report.html").resolve().as_uri()
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files"]
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1280,4000", url],
                   check=True, capture_output=True, timeout=120)
    with Image.open(shot) as im:
        px = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert px.shape[:2] == (4000, 1280)
    assert px.std() > 20.0  # not a blank page
    red = (np.abs(px[..., 0] - 0xB0) < 12) & (px[..., 1] < 20) & (np.abs(px[..., 2] - 0x20) < 15)
    assert red.sum() > 5000  # the synthetic-data banner is drawn
    dom = subprocess.run([*common, "--dump-dom", url], check=True, capture_output=True, text=True,
                         timeout=120).stdout
    assert len(re.findall(r"<table\b", dom)) >= 8
    gallery = [r for r in _report(out)["gallery"]["rows"] if r["image"]]
    assert len(re.findall(r"<img\b", dom)) == N_FIGURES + len(gallery)
    assert 'id="table3"' in dom and 'id="synthetic-banner"' in dom


def test_without_external_and_not_synthetic(tmp_path: Path) -> None:
    root = fabricate_bundle(tmp_path / "b", external=False, synthetic=False, n_train=40, n_test=20, models=FEW)
    out = tmp_path / "r"
    build_report(load_bundle_inputs(root), out)
    rep = _report(out)
    assert rep["external"] is None and rep["synthetic"] is False
    html = (out / "report.html").read_text()
    assert "No external validation split" in html
    assert SYNTHETIC_BANNER not in html and 'id="synthetic-banner"' not in html
    assert not (out / "roc_external.png").exists()


def test_loose_predictions_without_metrics_say_provenance_unknown(tmp_path: Path) -> None:
    root = fabricate_bundle(tmp_path / "b", external=False, n_train=30, n_test=20, models=FEW)
    inputs = EvaluationInputs(data=read_predictions(root / "evaluation" / "predictions.csv"), thresholds={},
                              synthetic=None)
    out = tmp_path / "r"
    build_report(inputs, out)
    rep = _report(out)
    assert rep["synthetic"] is None
    assert all(v["source"].startswith("youden-on-train") for v in rep["thresholds"].values())
    assert UNKNOWN_BANNER in (out / "report.html").read_text()


def test_paired_delong_uses_common_lesions(tmp_path: Path) -> None:
    root = fabricate_bundle(tmp_path / "b", external=False, n_train=30, n_test=24, models=FEW)
    pred = root / "evaluation" / "predictions.csv"
    lines = pred.read_text().splitlines()
    # drop two test lesions of one model: pairs with it must use the 22 lesions both models scored
    dropped = [ln for ln in lines if ln.startswith("test,TE0005,") or ln.startswith("test,TE0006,")]
    keep = [ln for ln in lines if ln not in {d for d in dropped if ",svm,radiomics," in d}]
    pred.write_text("\n".join(keep) + "\n")
    out = tmp_path / "r"
    build_report(load_bundle_inputs(root), out)
    pairs = _report(out)["table3"]["pairs"]
    with_svm = [p for p in pairs if "svm/radiomics" in (p["a"], p["b"])]
    assert with_svm and all(p["n"] == 22 for p in with_svm)
    assert all(p["n"] == 24 for p in pairs if p not in with_svm)


class _Cells(HTMLParser):
    """Text of every <td> except each row's first cell (the model name, which may contain digits)."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []
        self._col = -1
        self._in_td = False
        self._text_table = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":  # tables of identifiers and text (methods, gallery) carry data-kind="text"
            self._text_table = dict(attrs).get("data-kind") == "text"
        if self._text_table:
            return
        if tag == "tr":
            self._col = -1
        elif tag == "td":
            self._col += 1
            self._in_td = True
            if self._col > 0:
                self.cells.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._in_td = False
        if tag == "table":
            self._text_table = False

    def handle_data(self, data: str) -> None:
        if self._in_td and self._col > 0:
            self.cells[-1] += data


def _json_numbers(obj: object, acc: set[str]) -> set[str]:
    if isinstance(obj, dict):
        for v in obj.values():
            _json_numbers(v, acc)
    elif isinstance(obj, list):
        for v in obj:
            _json_numbers(v, acc)
    elif isinstance(obj, bool) or obj is None:
        pass
    elif isinstance(obj, int):
        acc.add(str(obj))
    elif isinstance(obj, float):
        acc.update(f"{obj:.{d}f}" for d in (1, 2, 3, 4))
        if obj.is_integer():
            acc.add(str(int(obj)))
    return acc


def test_every_number_in_the_html_tables_is_in_report_json(built: tuple[Path, Path]) -> None:
    _, out = built
    known = _json_numbers(_report(out), set()) | {"0.001"}  # "<0.001" is how tiny p values are printed
    parser = _Cells()
    parser.feed((out / "report.html").read_text())
    numbers = [m for cell in parser.cells for m in re.findall(r"(?<![A-Za-z0-9_.])-?\d+(?:\.\d+)?", cell)]
    assert len(numbers) > 1000
    missing = sorted({n for n in numbers if n not in known})
    assert not missing, missing[:20]


def test_every_model_row_gets_a_colour() -> None:
    """Rows of the papers' methods and the baselines (issue 15) and unknown classifiers all get a colour."""
    from models.report.plots import _colour

    names = ["svm/combined", "lasso-lr/radiomics", "paper004-integrated/late-fusion", "baseline/size-only",
             "some-new-model/deep"]
    colours = [_colour(n) for n in names]
    assert all(c.startswith("#") and len(c) == 7 for c in colours)
    assert _colour("some-new-model/deep") == _colour("some-new-model/radiomics")
