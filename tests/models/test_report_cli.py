"""``eusdx evaluate``: happy paths and one-line errors with non-zero exit codes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from cli.main import main
from models.safe_store import dump_models
from tests.models._report_fabricate import fabricate_bundle


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return fabricate_bundle(tmp_path / "bundle", external=False, n_train=30, n_test=20,
                            models=[("svm", "radiomics"), ("rf", "radiomics"), ("xgboost", "combined")])


def _err_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [ln for ln in err if ln.startswith("eusdx: error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_bundle_report(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["evaluate", "--bundle", str(bundle), "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.html")
    rep = json.loads((out / "report.json").read_text())
    assert rep["synthetic"] is True and rep["table2"]["ci_method"] == "wilson"


def test_prevalence_and_bootstrap_options(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["evaluate", "--bundle", str(bundle), "--out", str(out), "--quiet", "--prevalence", "0.2",
                 "--n-boot", "50", "--seed", "9"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["deployment_prevalence"]["value"] == 0.2 and rep["deployment_prevalence"]["source"].startswith("stated")
    assert rep["bootstrap"] == {"n_boot": 50, "seed": 9, "unit": "patient", "interval": "percentile"}
    row = next(r for r in rep["table2"]["rows"] if r["split"] == "test")
    assert row["bootstrap"]["n_boot"] == 50 and row["bootstrap"]["clusters"] == 10  # 20 lesions, 2 per patient
    capsys.readouterr()
    assert main(["evaluate", "--bundle", str(bundle), "--out", str(tmp_path / "o2"), "--prevalence", "1.5"]) != 0
    assert "--prevalence must lie strictly between 0 and 1" in _err_line(capsys)


def test_loose_files_with_shap_model(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 4))
    y = (x[:, 1] > 0).astype(int)
    model = tmp_path / "rf.skops"
    dump_models(RandomForestClassifier(n_estimators=10, random_state=0).fit(x, y), model)
    feats = tmp_path / "features.csv"
    with feats.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["lesion_id", "size_mm", "echo_mean", "glcm_contrast", "margin"])
        w.writerows([[f"L{i}", *row] for i, row in enumerate(x)])
    out = tmp_path / "out"
    ev = bundle / "evaluation"
    rc = main(["evaluate", "--predictions", str(ev / "predictions.csv"), "--thresholds", str(ev / "thresholds.json"),
               "--metrics", str(bundle / "metrics.json"), "--features", str(feats), "--model", str(model),
               "--shap-model", "rf/radiomics", "--ci-method", "clopper-pearson", "--out", str(out)])
    assert rc == 0
    assert "evaluate: SHAP rf/radiomics" in capsys.readouterr().err
    rep = json.loads((out / "report.json").read_text())
    assert rep["shap"]["entries"][0]["top"][0]["feature"] == "echo_mean"
    assert rep["table2"]["ci_method"] == "clopper-pearson"


def test_missing_predictions_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["evaluate", "--predictions", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")])
    assert rc == 65
    assert "predictions file not found" in _err_line(capsys)


def test_missing_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "predictions.csv"
    p.write_text("split,lesion_id,patient_id,y,classifier,modality\ntest,L1,P1,1,svm,deep\n")
    rc = main(["evaluate", "--predictions", str(p), "--out", str(tmp_path / "o")])
    assert rc == 65
    assert "missing column(s) prob" in _err_line(capsys)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.replace(",svm,radiomics,", ",svm,radiomix,", 1), "modality 'radiomix' not one of"),
        (lambda s: s.replace("\ntrain,TR0000,Ptr0000,", "\ntrain,TE0000,Ptr0000,", 1), "in both train and test"),
        (lambda s: s + "test,TE0000,Pte0000,1,svm,radiomics,0.5\n", "duplicate row"),
        (lambda s: s + "test,ZZ1,P,2,svm,radiomics,0.5\n", "y must be 0 or 1"),
        (lambda s: s + "test,ZZ1,P,1,svm,radiomics,1.5\n", "outside [0, 1]"),
    ],
    ids=["bad-modality", "leakage", "duplicate", "bad-label", "bad-prob"],
)
def test_bad_prediction_rows(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit, message) -> None:  # type: ignore[no-untyped-def]
    p = bundle / "evaluation" / "predictions.csv"
    p.write_text(edit(p.read_text()))
    rc = main(["evaluate", "--bundle", str(bundle), "--out", str(tmp_path / "o")])
    assert rc == 65
    assert message in _err_line(capsys)


def test_bundle_without_metrics(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (bundle / "metrics.json").unlink()
    assert main(["evaluate", "--bundle", str(bundle), "--out", str(tmp_path / "o")]) == 65
    assert "metrics file not found" in _err_line(capsys)


def test_bad_thresholds_json(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (bundle / "evaluation" / "thresholds.json").write_text(json.dumps({"svm/radiomics": 7}))
    assert main(["evaluate", "--bundle", str(bundle), "--out", str(tmp_path / "o")]) == 65
    assert "must be a number in [0, 1]" in _err_line(capsys)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one of --bundle or --predictions"),
        (["--bundle", "b", "--predictions", "p"], "exactly one of --bundle or --predictions"),
        (["--predictions", "p", "--features", "f"], "--features and --model go together"),
        (["--predictions", "p", "--ci-method", "exactish"], "--ci-method must be one of"),
        (["--predictions", "p", "--alpha", "1.5"], "--alpha must be in (0, 1)"),
    ],
)
def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert main(["evaluate", "--out", str(tmp_path / "o"), *args]) == 2
    assert message in _err_line(capsys)


def test_console_script_exit_code(tmp_path: Path) -> None:
    # the installed entry point, as an operator runs it
    proc = subprocess.run([sys.executable, "-m", "cli.main", "evaluate", "--bundle", str(tmp_path / "none"),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 65
    assert proc.stderr.strip().splitlines() == [f"eusdx: error: bundle directory not found: {tmp_path / 'none'}"]
