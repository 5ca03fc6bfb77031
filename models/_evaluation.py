"""Training stage 5: metrics per model and split, and the ``evaluation/`` files of a bundle.

Files (read by ``eusdx evaluate``, ``models/report``):

- ``predictions.csv``: ``split,lesion_id,patient_id,y,classifier,modality,prob``; lesion-level P(GIST);
  train rows are out-of-fold (end-to-end networks: only their inner-validation lesions).
- ``thresholds.json``: ``{"svm/combined": 0.47, ...}`` (Youden's J on train OOF lesion predictions).
- ``features_test.csv``: image-level test rows, ``lesion_id`` then the primary combined model's input
  after imputation, standardisation and feature selection (the columns its final classifier sees).
- ``shap.json`` + ``shap/``: for SVM/XGBoost/RF combined and SVM radiomics, the final classifier step
  (skops, ``models.safe_store``) and its post-selection test rows and a training background sample, in the format of
  ``models/report/explain.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["metrics_table", "evaluation_files"]

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


def evaluation_files(out: Path, *, lesion_probs: dict[str, dict[str, pd.Series]], lesion_y: pd.Series,
                     patient: pd.Series, lesion_id: pd.Series, thresholds: dict[str, float],
                     models: dict[str, Any], mats: dict[str, np.ndarray], names: dict[str, list[str]],
                     data: pd.DataFrame, primary: str, seed: int = 0) -> dict[str, Any]:
    """Write the evaluation files (see module docstring); return a summary for metrics.json."""
    from .safe_store import dump_models

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for key, by_split in lesion_probs.items():
        clf, modality = key.split("/")
        for sp, s in by_split.items():
            for lk, p in s.items():
                rows.append((sp, lesion_id[lk], patient[lk], int(lesion_y[lk]), clf, modality,
                             float(np.clip(p, 0.0, 1.0))))
    pred = pd.DataFrame(rows, columns=["split", "lesion_id", "patient_id", "y", "classifier", "modality", "prob"])
    pred.to_csv(out / "predictions.csv", index=False, float_format="%.6f")
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
