"""Training stage 5: metrics per model and split, and the ``evaluation/`` files of a bundle.

Files (read by ``eusdx evaluate``, ``models/report``):

- ``predictions.csv``: ``split,lesion_id,patient_id,y,classifier,modality,prob``; lesion-level P(GIST);
  train rows are out-of-fold (end-to-end networks: only their inner-validation lesions).
- ``thresholds.json``: ``{"svm/combined": 0.47, ...}`` (Youden's J on train OOF lesion predictions).
- ``predictions_auto_roi.csv``: the same columns for the test/external lesions, every deployable model
  scored with the automatic ROI instead of the SEG (``models/_auto_roi_eval.py``); ``auto_roi.json``:
  how many images and lesions of each set the automatic ROI could analyse, and why the others not.
- ``features_test.csv``: image-level test rows, ``lesion_id`` then the primary combined model's input
  after imputation, standardisation and feature selection (the columns its final classifier sees).
- ``lesions.csv``: one row per lesion of every partition, the manifest's rows before any image was
  dropped: ``split,lesion_id,patient_id,y,images_listed,images_analysed`` and, where the manifest has
  them, ``size_mm,layer,echo_pattern,device,centre`` (Table 1 and the participant flow of the report).
- ``thumbs/<split>_<lesion_id>.png``: the first analysed image of each test/external lesion, 160 px,
  with its ROI outlined (the report's gallery of misclassified lesions).
- ``shap.json`` + ``shap/``: for SVM/XGBoost/RF combined and SVM radiomics, the final classifier step
  (skops, ``models.safe_store``) and its post-selection test rows and a training background sample, in the format of
  ``models/report/explain.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["metrics_table", "evaluation_files", "lesion_table", "write_lesion_files", "write_auto_roi_files"]

#: Lesion characteristics copied from the manifest into ``lesions.csv`` when present (phantom manifests
#: carry all of them; ``phantom.MANIFEST_COLUMNS``).
CHARACTERISTICS = ("size_mm", "layer", "echo_pattern", "device", "centre")

SHAP_MODELS = ("svm/combined", "xgboost/combined", "rf/combined", "svm/radiomics")


def _binary_metrics(y: np.ndarray, p: np.ndarray, thr: float) -> dict[str, float | int | None]:
    from sklearn.metrics import roc_auc_score

    pred = p >= thr
    pos, neg = y == 1, y == 0
    return {
        "n": int(len(y)),
        "auc": float(roc_auc_score(y, p)) if pos.any() and neg.any() else None,
        "accuracy": float((pred == pos).mean()) if len(y) else None,
        "sensitivity": float(pred[pos].mean()) if pos.any() else None,
        "specificity": float((~pred[neg]).mean()) if neg.any() else None,
        "threshold": float(thr),
    }


def metrics_table(lesion_probs: dict[str, dict[str, pd.Series]], lesion_y: pd.Series,
                  thresholds: dict[str, float]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{model: {split: {n, auc, accuracy, sensitivity, specificity, threshold}}}`` at lesion level."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for key, by_split in lesion_probs.items():
        thr = thresholds.get(key, 0.5)
        out[key] = {sp: _binary_metrics(lesion_y.loc[s.index].to_numpy(), s.to_numpy(), thr)
                    for sp, s in by_split.items()}
    return out


def lesion_table(listed: pd.DataFrame, analysed: pd.DataFrame) -> pd.DataFrame:
    """One row per lesion of ``listed`` (manifest rows with ``split``, ``lesion_key``); columns as in the module doc.

    ``analysed`` holds the rows that yielded an analysable image (same columns); a lesion none of whose
    images did gets ``images_analysed = 0`` and is excluded from every model.
    """
    g = listed.groupby("lesion_key", sort=True)
    out = pd.DataFrame({
        "split": g["split"].first(), "lesion_id": g["lesion_id"].first(), "patient_id": g["patient_id"].first(),
        "y": g["y"].first().astype(int), "images_listed": g.size(),
    })
    out["images_analysed"] = analysed.groupby("lesion_key").size().reindex(out.index).fillna(0).astype(int)
    for col in CHARACTERISTICS:
        if col in listed.columns:
            out[col] = g[col].first()
    return out.reset_index(drop=True)


def write_lesion_files(out: Path, table: pd.DataFrame, thumbs: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Write ``lesions.csv`` and ``thumbs/`` under ``out`` (the bundle's ``evaluation/``).

    ``thumbs`` maps ``"<split>_<lesion_id>"`` to (uint8 work image (h, w), bool ROI mask (h, w)).
    """
    from PIL import Image
    from scipy import ndimage

    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "lesions.csv", index=False, float_format="%.6g")
    if not thumbs:
        return
    (out / "thumbs").mkdir(exist_ok=True)
    for name, (image, mask) in thumbs.items():
        rgb = np.repeat(np.asarray(image, dtype=np.uint8)[..., None], 3, axis=2)
        m = np.asarray(mask, dtype=bool)
        edge = m & ~ndimage.binary_erosion(m, iterations=2)
        rgb[edge] = (255, 200, 0)
        im = Image.fromarray(rgb)
        im.thumbnail((160, 160))
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
        im.save(out / "thumbs" / f"{safe}.png", optimize=True)


def _selected(pipe: Any, X: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    head = pipe[:-1]
    Z = head.transform(X)
    try:
        cols = [str(c) for c in head.get_feature_names_out(np.asarray(names, dtype=object))]
    except (AttributeError, ValueError):
        cols = [f"f{i}" for i in range(Z.shape[1])]
    return Z, cols


def _write_features(path: Path, lesion_ids: np.ndarray, Z: np.ndarray, cols: list[str]) -> None:
    frame = pd.DataFrame(Z, columns=cols)
    frame.insert(0, "lesion_id", lesion_ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, float_format="%.6g")


def _predictions_frame(lesion_probs: dict[str, dict[str, pd.Series]], lesion_y: pd.Series, patient: pd.Series,
                       lesion_id: pd.Series) -> pd.DataFrame:
    """One row per (split, lesion, model): the columns of ``predictions.csv``."""
    rows = []
    for key, by_split in lesion_probs.items():
        clf, modality = key.split("/")
        for sp, s in by_split.items():
            for lk, p in s.items():
                rows.append((sp, lesion_id[lk], patient[lk], int(lesion_y[lk]), clf, modality,
                             float(np.clip(p, 0.0, 1.0))))
    return pd.DataFrame(rows, columns=["split", "lesion_id", "patient_id", "y", "classifier", "modality", "prob"])


def write_auto_roi_files(out: Path, lesion_probs: dict[str, dict[str, pd.Series]], coverage: dict[str, Any], *,
                         lesion_y: pd.Series, patient: pd.Series, lesion_id: pd.Series) -> None:
    """``predictions_auto_roi.csv`` and ``auto_roi.json`` (see the module docstring)."""
    out.mkdir(parents=True, exist_ok=True)
    _predictions_frame(lesion_probs, lesion_y, patient, lesion_id).to_csv(
        out / "predictions_auto_roi.csv", index=False, float_format="%.6f")
    (out / "auto_roi.json").write_text(json.dumps({
        "roi": "automatic (models.roi.auto_roi, the bundle's ROI settings), as the worker runs without a SEG",
        "coverage": coverage,
    }, indent=2, sort_keys=True), encoding="utf-8")


def evaluation_files(out: Path, *, lesion_probs: dict[str, dict[str, pd.Series]], lesion_y: pd.Series,
                     patient: pd.Series, lesion_id: pd.Series, thresholds: dict[str, float],
                     models: dict[str, Any], mats: dict[str, np.ndarray], names: dict[str, list[str]],
                     data: pd.DataFrame, primary: str, seed: int = 0) -> dict[str, Any]:
    """Write the evaluation files (see module docstring); return a summary for metrics.json."""
    from .safe_store import dump_models

    out.mkdir(parents=True, exist_ok=True)
    _predictions_frame(lesion_probs, lesion_y, patient, lesion_id).to_csv(out / "predictions.csv", index=False,
                                                                          float_format="%.6f")
    (out / "thresholds.json").write_text(json.dumps(thresholds, indent=2, sort_keys=True), encoding="utf-8")

    te = (data["split"] == "test").to_numpy()
    tr = (data["split"] == "train").to_numpy()
    rng = np.random.default_rng(seed)
    bg = np.flatnonzero(tr)
    bg = np.sort(rng.choice(bg, size=min(len(bg), 200), replace=False))
    entries = []
    for key in SHAP_MODELS:
        if key not in models or not te.any():
            continue
        modality = key.split("/")[1]
        pipe = models[key]
        Zt, cols = _selected(pipe, mats[modality][te], names[modality])
        Zb, _ = _selected(pipe, mats[modality][bg], names[modality])
        stem = key.replace("/", "_")
        _write_features(out / "shap" / f"features_test_{stem}.csv", data["lesion_id"].to_numpy()[te], Zt, cols)
        _write_features(out / "shap" / f"features_train_{stem}.csv", data["lesion_id"].to_numpy()[bg], Zb, cols)
        dump_models(pipe[-1], out / "shap" / f"{stem}.skops")
        entries.append({"model": key, "estimator": f"evaluation/shap/{stem}.skops",
                        "features": f"evaluation/shap/features_test_{stem}.csv",
                        "background": f"evaluation/shap/features_train_{stem}.csv"})
    (out / "shap.json").write_text(json.dumps({"entries": entries}, indent=2), encoding="utf-8")
    feat_key = primary if primary in models and not isinstance(models[primary], dict) and primary.endswith("combined") \
        else "svm/combined"
    if te.any() and feat_key in models:
        Zt, cols = _selected(models[feat_key], mats["combined"][te], names["combined"])
        _write_features(out / "features_test.csv", data["lesion_id"].to_numpy()[te], Zt, cols)
    return {"features_test_model": feat_key, "shap_models": [e["model"] for e in entries],
            "features_test_level": "image (one row per test image; lesion_id first)"}
