"""SHAP explanations: the feature that drives the label must rank first, for tree and non-tree models."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from xgboost import XGBClassifier

from models.report import ReportInputError, build_report, load_bundle_inputs
from models.report.explain import explain_model, read_features_csv, read_shap_manifest, save_shap_outputs
from models.safe_store import dump_models
from tests.models._report_fabricate import fabricate_bundle

NAMES = [f"f{i}" for i in range(6)]
DRIVER = "f3"


def _data(n: int = 160, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(NAMES)))
    y = (x[:, 3] + 0.25 * rng.normal(size=n) > 0).astype(int)  # only f3 carries the label
    return x, y


def _assert_driver_first(res) -> None:  # type: ignore[no-untyped-def]
    top = res.ranking(20)
    assert top[0][1] == DRIVER
    assert top[0][2] > 2.0 * top[1][2]
    assert [r for r, _, _ in top] == list(range(1, len(NAMES) + 1))


@pytest.mark.parametrize(
    "estimator",
    [RandomForestClassifier(n_estimators=25, max_depth=4, random_state=0),
     XGBClassifier(n_estimators=25, max_depth=3, random_state=0)],
    ids=["random-forest", "xgboost"],
)
def test_tree_models_rank_driver_first(estimator: object) -> None:
    x, y = _data()
    estimator.fit(x, y)  # type: ignore[attr-defined]
    res = explain_model(estimator, x, NAMES)
    assert res.method == "tree"
    assert res.values.shape == (100, len(NAMES))  # max_explain rows
    _assert_driver_first(res)


def test_svm_uses_permutation_and_ranks_driver_first() -> None:
    x, y = _data()
    svm = make_pipeline(StandardScaler(), CalibratedClassifierCV(SVC(), ensemble=False)).fit(x, y)
    res = explain_model(svm, x, NAMES, max_explain=30, max_background=20)
    assert res.method == "permutation" and res.output == "P(GIST)"
    assert res.values.shape == (30, len(NAMES)) and res.n_background == 20
    _assert_driver_first(res)


def test_permutation_respects_the_evaluation_budget() -> None:
    x, y = _data()
    svm = make_pipeline(StandardScaler(), CalibratedClassifierCV(SVC(), ensemble=False)).fit(x, y)
    # One permutation: 2p+1 = 13 evaluations per background row; budget 5000 -> background 50 halves
    # to 25, then 5000 // (13 * 25) = 15 rows are explained
    res = explain_model(svm, x, NAMES, eval_budget=5000, permutations=1)
    assert res.n_background == 25
    assert res.values.shape == (15, len(NAMES))
    # The default, 5 permutations: 5 * 2p + 1 = 61 evaluations per background row; background 50 -> 25
    # -> 12 -> 10, then 5000 // (61 * 10) = 8 rows are explained
    res = explain_model(svm, x, NAMES, eval_budget=5000)
    assert res.n_background == 10
    assert res.values.shape == (8, len(NAMES))
    with pytest.raises(ValueError, match="permutations"):
        explain_model(svm, x, NAMES, permutations=0)


def test_explain_rejects_bad_shapes() -> None:
    x, y = _data(40)
    rf = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    with pytest.raises(ValueError, match="feature names"):
        explain_model(rf, x, NAMES[:3])
    with pytest.raises(ValueError, match="predict_proba"):
        explain_model(object(), x, NAMES)


def test_outputs_csv_and_png(tmp_path: Path) -> None:
    x, y = _data()
    rf = RandomForestClassifier(n_estimators=25, max_depth=4, random_state=0).fit(x, y)
    res = explain_model(rf, x, NAMES)
    png, csv_path = save_shap_outputs(res, tmp_path, "shap_rf", "rf/combined")
    assert png.stat().st_size > 10_000
    with csv_path.open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["rank", "feature", "mean_abs_shap"]
    assert rows[1][:2] == ["1", DRIVER]
    assert len(rows) == 1 + len(NAMES)


def _write_features(path: Path, x: np.ndarray) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["lesion_id", *NAMES])
        for i, row in enumerate(x):
            w.writerow([f"L{i:03d}", *[f"{v:.6f}" for v in row]])


def test_bundle_with_shap_manifest(tmp_path: Path) -> None:
    root = fabricate_bundle(tmp_path / "b", external=False, n_train=30, n_test=20, models=[("rf", "combined")])
    x, y = _data()
    rf = RandomForestClassifier(n_estimators=25, max_depth=4, random_state=0).fit(x, y)
    (root / "evaluation" / "shap").mkdir()
    dump_models(rf, root / "evaluation" / "shap" / "rf_combined.skops")
    _write_features(root / "evaluation" / "shap" / "features_test.csv", x[:60])
    _write_features(root / "evaluation" / "shap" / "features_train.csv", x[60:])
    (root / "evaluation" / "shap.json").write_text(json.dumps({"entries": [{
        "model": "rf/combined", "estimator": "evaluation/shap/rf_combined.skops",
        "features": "evaluation/shap/features_test.csv", "background": "evaluation/shap/features_train.csv"}]}))
    out = tmp_path / "r"
    build_report(load_bundle_inputs(root), out)
    rep = json.loads((out / "report.json").read_text())
    assert rep["shap"]["available"] is True
    entry = rep["shap"]["entries"][0]
    assert entry["model"] == "rf/combined" and entry["method"] == "tree" and entry["n_explained"] == 60
    assert entry["top"][0]["feature"] == DRIVER
    assert (out / entry["png"]).is_file() and (out / entry["csv"]).is_file()
    html = (out / "report.html").read_text()
    assert 'id="table-shap-0"' in html and f'src="{entry["png"]}"' in html
    assert "SHAP not available" not in html


def test_bad_shap_inputs(tmp_path: Path) -> None:
    bad = tmp_path / "shap.json"
    bad.write_text(json.dumps({"entries": [{"model": "rf/combined"}]}))
    with pytest.raises(ReportInputError, match="entry 0 needs"):
        read_shap_manifest(bad, tmp_path)
    feats = tmp_path / "f.csv"
    feats.write_text("id,a,b\nx,1,2\n")
    with pytest.raises(ReportInputError, match="first column must be lesion_id"):
        read_features_csv(feats)
    feats.write_text("lesion_id,a,b\nx,1,oops\n")
    with pytest.raises(ReportInputError, match="non-numeric"):
        read_features_csv(feats)
