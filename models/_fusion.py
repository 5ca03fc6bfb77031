"""Training stage 4b: paper 004's integrated model, the shortcut baselines, and the training budget record.

- :func:`fit_integrated`: paper 004 (Li et al. 2026) fuses the predicted probabilities of its radiomics
  logistic regression and its ResNet-50: a logistic regression on the two models' logits, fitted on the
  training lesions' out-of-fold probabilities (patient-grouped folds for its own OOF rows). The inputs
  are ``lasso-lr/radiomics`` and ``resnet50/end-to-end`` when trained, else the CPU stand-in
  ``lasso-lr/resnet50-random-frozen``. Our SVM/XGBoost/RF stacker stays a separate row.
- :func:`fit_baselines`: the header-only, outside-sector and size-only rows (``models/baselines.py``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd

from .baselines import fit_baseline, lesion_header
from .classifiers import fit_stacker, logit

__all__ = ["INTEGRATED_KEY", "integrated_inputs", "fit_integrated", "fit_baselines", "training_budget"]

INTEGRATED_KEY = "paper004-integrated/late-fusion"
_RADIOMICS_LR = "lasso-lr/radiomics"
_RESNET50 = ("resnet50/end-to-end", "lasso-lr/resnet50-random-frozen")


def integrated_inputs(lesion_probs: dict[str, dict[str, pd.Series]]) -> list[str] | None:
    """The two model keys paper 004's integrated model fuses here, or None when one is missing."""
    res = next((k for k in _RESNET50 if k in lesion_probs and "train" in lesion_probs[k]), None)
    if res is None or _RADIOMICS_LR not in lesion_probs:
        return None
    return [_RADIOMICS_LR, res]


def fit_integrated(lesion_probs: dict[str, dict[str, pd.Series]], lesion_y: pd.Series, lesion_patient: pd.Series,
                   *, seed: int = 0) -> tuple[dict[str, Any], dict[str, pd.Series]] | None:
    """Fit paper 004's integrated model; returns (model record, lesion probabilities per split) or None.

    Trained on the training lesions that have an out-of-fold probability from both inputs (an
    end-to-end ResNet-50 has those only for its early-stopping lesions).
    """
    keys = integrated_inputs(lesion_probs)
    if keys is None:
        return None
    idx = lesion_probs[keys[0]]["train"].index.intersection(lesion_probs[keys[1]]["train"].index)
    y = lesion_y.loc[idx].to_numpy()
    if len(idx) < 8 or min(int(y.sum()), int(len(y) - y.sum())) < 2:
        return None
    P = np.column_stack([lesion_probs[k]["train"].loc[idx].to_numpy() for k in keys])
    lr, oof = fit_stacker(P, y, seed=seed, groups=lesion_patient.loc[idx].to_numpy())
    probs = {"train": pd.Series(oof, index=idx)}
    for sp in ("test", "external"):
        if all(sp in lesion_probs[k] for k in keys):
            common = lesion_probs[keys[0]][sp].index.intersection(lesion_probs[keys[1]][sp].index)
            Q = np.column_stack([lesion_probs[k][sp].loc[common].to_numpy() for k in keys])
            probs[sp] = pd.Series(lr.predict_proba(logit(Q))[:, 1], index=common)
    return {"model": lr, "inputs": keys}, probs


def fit_baselines(samples: list[Any], data: pd.DataFrame, train_mask: np.ndarray, *,
                  seed: int = 0) -> tuple[dict[str, Any], dict[str, dict[str, pd.Series]]]:
    """Header-only, outside-sector and size-only lesion-level models (``models/baselines.py``).

    Parameters
    ----------
    samples : list of models._prepare.Sample
        One per row of ``data`` (same order).
    data : pandas.DataFrame
        Rows with ``lesion_key``, ``patient_key``, ``split``, ``y``, ``image_abs``.
    train_mask : numpy.ndarray
        Bool per row.

    Returns
    -------
    (models, lesion_probs)
        ``models`` holds the fitted baselines for the record (not written into the bundle's model file);
        ``lesion_probs["baseline/<name>"][split]`` are lesion probabilities (train: out-of-fold).
    """
    from sklearn.feature_extraction import DictVectorizer

    headers: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    outside: dict[str, list[np.ndarray]] = defaultdict(list)
    size: dict[str, float] = {}
    for s, (lk, img) in zip(samples, zip(data["lesion_key"], data["image_abs"])):
        if s.header is not None:
            headers[lk][img] = s.header
        if s.outside is not None:
            outside[lk].append(s.outside)
        size[lk] = float(np.nanmax([size.get(lk, np.nan), s.roi_long_axis_mm]))
    lesions = data.groupby("lesion_key", sort=True).agg(y=("y", "first"), patient=("patient_key", "first"),
                                                        split=("split", "first"))
    is_train = lesions["split"].to_numpy() == "train"
    if is_train.sum() < 4:
        return {}, {}
    ids = lesions.index.to_numpy()
    dv = DictVectorizer(sparse=False).fit([lesion_header(list(headers[k].values())) for k in ids[is_train]])
    width = len(next(iter(outside.values()))) if outside else 1
    mats = {
        "header-only": np.asarray(dv.transform([lesion_header(list(headers[k].values())) for k in ids]), float),
        "outside-sector": np.stack([np.mean(outside[k], axis=0) if outside[k] else np.full(width, np.nan)
                                    for k in ids]),
        "size-only": np.array([[size.get(k, np.nan)] for k in ids]),
    }
    y = lesions["y"].to_numpy()
    models: dict[str, Any] = {}
    probs: dict[str, dict[str, pd.Series]] = {}
    for name, X in mats.items():
        model, oof = fit_baseline(X[is_train], y[is_train], lesions["patient"].to_numpy()[is_train], seed=seed)
        key = f"baseline/{name}"
        models[key] = model
        probs[key] = {"train": pd.Series(oof, index=ids[is_train])}
        for sp in ("test", "external"):
            m = lesions["split"].to_numpy() == sp
            if m.any():
                probs[key][sp] = pd.Series(model.predict_proba(X[m])[:, 1], index=ids[m])
    return models, probs


def training_budget(cfg: Any, net_cfg: Any, deep: Any, n_train_lesions: int) -> dict[str, Any]:
    """What the bundle's networks were trained with, for the bundle, the report and the demo."""
    return {
        "deep_mode": cfg.deep_mode,
        "backbone": cfg.backbone,
        "image_size": cfg.image_size,
        "epochs": cfg.epochs if cfg.deep_mode == "cross-fit" else 0,
        "augment_factor": cfg.augment_factor,
        "finetune_images_per_lesion": cfg.finetune_per_lesion or "all",
        "backbone_folds": cfg.backbone_folds if cfg.deep_mode == "cross-fit" else 0,
        "backbone_trainings": deep.n_trainings,
        "train_lesions": n_train_lesions,
        "end_to_end": bool(cfg.end_to_end),
        "e2e_epochs": cfg.e2e_epochs if cfg.end_to_end else 0,
        "resnet_rows": ("end-to-end" if cfg.end_to_end else
                        "frozen random-init features + LASSO LR" if cfg.resnet_frozen else "none"),
        "hyper_parameter_search": "nested, patient-grouped" if cfg.grid_search else "none (fixed defaults)",
        "cv_splits": cfg.cv_splits,
    }
