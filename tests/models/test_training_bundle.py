"""``eusdx train`` on a tiny phantom cohort, the bundle it writes, and the worker's inference API.

One module-scoped training run (``--fast``: tiny network input, no grid search) keeps this file near a
minute; the full-size run is ``bench/train_full.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cli.main import main
from models.bundle import BundleError, Frame, load_bundle, sha256_file


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from phantom import generate_cohort

    root = tmp_path_factory.mktemp("train")
    internal = generate_cohort(root / "internal", 16, 11)
    external = generate_cohort(root / "external", 6, 12, centre="ext")
    out = root / "bundles"
    rc = main(["train", "--manifest", str(internal), "--external", str(external), "--out", str(out),
               "--fast", "--end-to-end", "--jobs", "1", "--quiet", "--seed", "3"])
    assert rc == 0
    return {"root": root, "internal": internal, "external": external, "out": out,
            "bundle": (out / "current").resolve()}


def test_bundle_layout_and_current_link(trained: dict[str, Path]) -> None:
    b = trained["bundle"]
    assert (trained["out"] / "current").is_symlink()
    manifest = json.loads((b / "manifest.json").read_text())
    for rel in ("config.json", "models.skops", "backbone.safetensors", "radiomics.yaml", "metrics.json",
                "evaluation/predictions.csv", "evaluation/thresholds.json", "evaluation/features_test.csv",
                "evaluation/shap.json", "evaluation/lesions.csv"):
        assert manifest["files"][rel] == sha256_file(b / rel)
    metrics = json.loads((b / "metrics.json").read_text())
    assert metrics["synthetic"] is True
    for key in [f"{c}/{m}" for c in ("svm", "xgboost", "rf") for m in ("radiomics", "deep", "combined")] + [
            "resnet34/end-to-end", "resnet50/end-to-end"]:
        assert metrics["auc"]["test"][key] is not None
        assert key in metrics["auc"]["external"]
    assert "lr-stacker/late-fusion" in metrics["auc"]["test"]
    assert metrics["roi_auto_dice"]["n"] > 0
    # Paper 004's radiomics LR and the three shortcut baselines are rows of every evaluation.
    for key in ("lasso-lr/radiomics", "baseline/header-only", "baseline/outside-sector", "baseline/size-only"):
        assert key in metrics["auc"]["test"] and key in metrics["auc"]["external"]
    # How the backbone started and what it was trained with, in the bundle and the metrics.
    config = json.loads((b / "config.json").read_text())
    for record in (config, metrics):
        assert record["backbone_init"]["kind"] == "random"
        assert record["deep_mode"] == "cross-fit"
        assert record["training_budget"]["backbone_trainings"] == 1 + record["training_budget"]["backbone_folds"]
    assert "random-init" in config["model_name"]


def test_predictions_file_follows_the_report_contract(trained: dict[str, Path]) -> None:
    from models.report.explain import load_estimator, read_features_csv, read_shap_manifest
    from models.report.inputs import load_bundle_inputs

    b = trained["bundle"]
    pred = pd.read_csv(b / "evaluation" / "predictions.csv")
    assert list(pred.columns) == ["split", "lesion_id", "patient_id", "y", "classifier", "modality", "prob"]
    assert set(pred["split"]) == {"train", "test", "external"}
    assert not set(pred.loc[pred.split == "train", "lesion_id"]) & set(pred.loc[pred.split == "test", "lesion_id"])
    assert not set(pred.loc[pred.split == "train", "patient_id"]) & set(pred.loc[pred.split == "test", "patient_id"])
    truth = pd.read_csv(trained["internal"]).groupby("lesion_id")["label"].first()
    internal = pred[pred.split != "external"]
    assert (internal["y"] == (internal["lesion_id"].map(truth) == "GIST").astype(int)).all()
    e2e = pred[pred.modality == "end-to-end"]
    assert set(e2e["classifier"]) == {"resnet34", "resnet50"}
    # End-to-end networks have out-of-sample train rows only for their inner-validation lesions.
    assert 0 < (e2e.split == "train").sum() < (pred[(pred.classifier == "svm") & (pred.modality == "deep")].split
                                                == "train").sum()
    load_bundle_inputs(b)  # the stats helper's reader accepts the files
    entries = read_shap_manifest(b / "evaluation" / "shap.json", b)
    assert {e.model for e in entries} >= {"svm/combined", "xgboost/combined"}
    for e in entries:
        lesions, names, X = read_features_csv(e.features)
        est = load_estimator(e.estimator)
        assert est.predict_proba(X).shape == (len(lesions), 2)


def test_lesion_table_and_report_of_the_trained_bundle(trained: dict[str, Path]) -> None:
    """Issue 16: lesions.csv lists every manifest lesion with its characteristics; the report has Table 1,
    the flow, the gallery with thumbnails and the methods read from this bundle."""
    from models.report import build_report, load_bundle_inputs

    b = trained["bundle"]
    les = pd.read_csv(b / "evaluation" / "lesions.csv")
    internal = pd.read_csv(trained["internal"])
    external = pd.read_csv(trained["external"])
    assert set(les.loc[les.split != "external", "lesion_id"]) == set(internal["lesion_id"])
    assert set(les.loc[les.split == "external", "lesion_id"]) == set(external["lesion_id"])
    assert {"size_mm", "layer", "echo_pattern", "device", "centre"} <= set(les.columns)
    assert (les["images_analysed"] <= les["images_listed"]).all() and (les["images_analysed"] > 0).any()
    thumbs = sorted(p.name for p in (b / "evaluation" / "thumbs").glob("*.png"))
    assert thumbs and all(t.startswith(("test_", "external_")) for t in thumbs)
    out = b.parent.parent / "report-issue16"
    build_report(load_bundle_inputs(b), out, n_boot=100)
    rep = json.loads((out / "report.json").read_text())
    assert rep["table1"]["available"] and rep["flow"]["available"]
    assert rep["methods"]["identity"][0][1] == b.name  # the bundle version the SR carries
    assert rep["methods"]["identity"][1][1] == sha256_file(b / "manifest.json")
    assert ["setting.binCount", "32"] in rep["methods"]["radiomics"]
    assert ["intensity.normalise", "sector-zscore"] in rep["methods"]["radiomics"]
    assert all(r["image"] for r in rep["gallery"]["rows"])
    assert rep["auto_roi"]["available"] and {r["split"] for r in rep["auto_roi"]["rows"]} == {"test", "external"}
    html = (out / "report.html").read_text()
    assert "strictly between" not in html and "must contain both classes" not in html


def test_load_and_predict_frames(trained: dict[str, Path]) -> None:
    from models.dicom_io import read_instance, read_seg_mask

    bundle = load_bundle(trained["out"] / "current")
    assert bundle.synthetic and 0.0 <= bundle.threshold <= 1.0
    assert bundle.version == trained["bundle"].name
    assert "svm-combined" in bundle.model_name
    rows = pd.read_csv(trained["external"]).drop_duplicates("image_path").head(4)
    frames = []
    for i, r in enumerate(rows.itertuples()):
        inst = read_instance(trained["external"].parent / r.image_path)
        px = inst.frames[0]
        seg = read_seg_mask(trained["external"].parent / r.seg_path, px.shape[:2], source_sop_uid=inst.sop_uid,
                            multi_frame_source=inst.multi_frame)
        frames.append(Frame(pixels=px, seg_mask=seg if i % 2 else None, key=f"img{i}",
                            mm_per_pixel=inst.mm_per_pixel))
    bundle.warm_up("cpu")
    assert all(bundle.has_sector(f.pixels) for f in frames)
    assert not bundle.has_sector(np.zeros((480, 640, 3), np.uint8))
    results = bundle.predict(frames, device="cpu")
    assert [r.key for r in results] == [f.key for f in frames]
    for r, f in zip(results, frames):
        assert 0.0 <= r.probability <= 1.0
        assert r.label == bundle.label_for(r.probability)
        assert r.roi_source == ("SEG" if f.seg_mask is not None else "automatic")
        assert 0.0 <= r.roi_confidence <= 1.0
        poly = np.array(r.roi_polygon)
        assert len(poly) >= 3
        assert (poly[:, 0] >= 0).all() and (poly[:, 0] <= f.pixels.shape[1]).all()
        assert set(r.timings) == {"preprocess", "roi", "radiomics", "deep", "classify"}
    seg_result = results[1]
    rr, cc = np.nonzero(frames[1].seg_mask)
    assert np.array(seg_result.roi_polygon)[:, 0].min() == pytest.approx(cc.min(), abs=6)
    p = bundle.lesion_probability(results)
    assert p == pytest.approx(np.mean([r.probability for r in results]))
    # The same frames give the same answer (deterministic CPU inference).
    assert [r.probability for r in bundle.predict(frames)] == pytest.approx([r.probability for r in results])


def test_automatic_roi_results_are_what_the_worker_computes(trained: dict[str, Path]) -> None:
    """Issue 16: training scores its models with the automatic ROI exactly as the deployed worker does.

    For two external lesions, ``Bundle.predict`` on the lesion's frames without their SEG (the worker's
    path) gives the lesion probability written to ``predictions_auto_roi.csv``, for the primary model and
    for a model whose radiomics the primary does not compute."""
    from models.dicom_io import read_instance
    from models.dataset import load_manifest
    from models.report.inputs import read_predictions
    from models.training import _subsample_frames

    b = trained["bundle"]
    auto = read_predictions(b / "evaluation" / "predictions_auto_roi.csv")
    seg = read_predictions(b / "evaluation" / "predictions.csv")
    cov = json.loads((b / "evaluation" / "auto_roi.json").read_text())["coverage"]
    assert set(cov) == {"test", "external"}
    for sp, c in cov.items():
        assert 0 < c["images_auto"] <= c["images_seg"] and 0 < c["lesions_auto"] <= c["lesions_seg"]
        assert c["images_seg"] - c["images_auto"] == sum(c["images_left_out"].values())
    assert set(auto) <= set(seg) and "svm/combined" in auto and "resnet34/end-to-end" in auto
    metrics = json.loads((b / "metrics.json").read_text())
    assert metrics["auto_roi"]["auc"]["external"]["svm/combined"] is not None

    bundle = load_bundle(b)
    bundle.use_processes(1)
    rows = _subsample_frames(load_manifest(trained["external"], centre="external"), 2)
    ext = auto["svm/combined"]["external"]
    checked = 0
    for lesion_id in ext.lesion_id[:2]:
        frames = []
        for r in rows[rows["lesion_id"] == lesion_id].itertuples():
            inst = read_instance(r.image_abs)
            frames.append(Frame(pixels=inst.frames[int(r.frame)], key=f"{r.image_abs}:{r.frame}",
                                mm_per_pixel=inst.mm_per_pixel))
        for key in ("svm/combined", "rf/radiomics"):
            want = float(auto[key]["external"].prob[list(auto[key]["external"].lesion_id).index(lesion_id)])
            got = bundle.lesion_probability(bundle.predict(frames, model=key))
            assert got == pytest.approx(want, abs=2e-6), (lesion_id, key)  # the CSV keeps 6 decimals
            checked += 1
    assert checked == 4


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_tampered_file_is_refused(trained: dict[str, Path], tmp_path: Path) -> None:
    b = _copy(trained["bundle"], tmp_path / "b")
    data = bytearray((b / "models.skops").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (b / "models.skops").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"models\.skops was modified"):
        load_bundle(b)


def test_missing_file_and_manifest_are_refused(trained: dict[str, Path], tmp_path: Path) -> None:
    b = _copy(trained["bundle"], tmp_path / "b")
    (b / "backbone.safetensors").unlink()
    with pytest.raises(BundleError, match=r"backbone\.safetensors is missing"):
        load_bundle(b)
    (b / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        load_bundle(b)
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nowhere")


def test_incompatible_library_version_is_refused(trained: dict[str, Path], tmp_path: Path) -> None:
    b = _copy(trained["bundle"], tmp_path / "b")
    cfg = json.loads((b / "config.json").read_text())
    cfg["libraries"]["scikit-learn"] = "0.24.2"
    (b / "config.json").write_text(json.dumps(cfg))
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["files"]["config.json"] = sha256_file(b / "config.json")  # a consistent but old bundle
    (b / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="scikit-learn 0.24.2"):
        load_bundle(b)


def test_second_run_resumes_from_the_cache(trained: dict[str, Path]) -> None:
    from models.training import TrainConfig, train

    cfg = TrainConfig.fast(seed=3, jobs=1, progress=False, end_to_end=True)
    result = train(trained["internal"], trained["out"], external=trained["external"], config=cfg)
    assert result.metrics["backbone_from_cache"] is True
    first = json.loads((trained["bundle"] / "metrics.json").read_text())
    assert result.metrics["timings_s"]["images_roi_radiomics"] < first["timings_s"]["images_roi_radiomics"]
    assert result.metrics["auc"]["test"] == pytest.approx(first["auc"]["test"])
    assert (trained["out"] / "current").resolve() == result.bundle_dir


def test_cli_refuses_bad_options_and_missing_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "b"), "--selector", "boruta"])
    assert rc == 2
    assert "--selector" in capsys.readouterr().err
    rc = main(["train", "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "b"), "--quiet"])
    assert rc == 65
    assert "manifest not found" in capsys.readouterr().err
