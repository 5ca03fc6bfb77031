"""Fabricate a trained-bundle-like evaluation folder for the report tests (no training involved)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

MODELS = [
    ("svm", "radiomics"), ("xgboost", "radiomics"), ("rf", "radiomics"),
    ("svm", "deep"), ("xgboost", "deep"), ("rf", "deep"),
    ("svm", "combined"), ("xgboost", "combined"), ("rf", "combined"),
    ("lr-stacker", "late-fusion"), ("resnet34", "end-to-end"),
]


def fabricate_bundle(root: Path, *, n_train: int = 120, n_test: int = 40, n_external: int = 30,
                     synthetic: bool = True, seed: int = 7, external: bool = True,
                     models: list[tuple[str, str]] | None = None) -> Path:
    """Write ``metrics.json`` and ``evaluation/{predictions.csv,thresholds.json}`` under ``root``.

    ``models`` defaults to all of :data:`MODELS`; the last one gets no entry in thresholds.json.
    """
    models = list(MODELS if models is None else models)
    rng = np.random.default_rng(seed)
    (root / "evaluation").mkdir(parents=True, exist_ok=True)
    splits = [("train", n_train), ("test", n_test)] + ([("external", n_external)] if external else [])
    rows = []
    for split, n in splits:
        y = (rng.random(n) < 0.5).astype(int)
        y[:2], y[2:4] = 1, 0  # both classes, at least two each
        latent = rng.normal(size=n)
        for k, (clf, mod) in enumerate(models):
            strength = 0.5 + 0.08 * k
            logit = strength * (2 * y - 1) + 0.6 * latent + rng.normal(scale=0.8, size=n)
            prob = np.round(1 / (1 + np.exp(-logit)), 4)
            for i in range(n):
                rows.append([split, f"{split[:2].upper()}{i:04d}", f"P{split[:2]}{i // 2:04d}", int(y[i]),
                             clf, mod, f"{prob[i]:.4f}"])
    with (root / "evaluation" / "predictions.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["split", "lesion_id", "patient_id", "y", "classifier", "modality", "prob"])
        w.writerows(rows)
    thresholds = {f"{c}/{m}": 0.5 for c, m in models[:-1]}  # the last model gets Youden from the report
    (root / "evaluation" / "thresholds.json").write_text(json.dumps(thresholds))
    (root / "metrics.json").write_text(json.dumps({"synthetic": synthetic, "auc_test": 0.9}))
    return root
