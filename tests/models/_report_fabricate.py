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
                     models: list[tuple[str, str]] | None = None, legacy: bool = False,
                     manifest: bool = False) -> Path:
    """Write ``metrics.json`` and ``evaluation/{predictions.csv,thresholds.json}`` under ``root``.

    ``models`` defaults to all of :data:`MODELS`; the last one gets no entry in thresholds.json.
    Unless ``legacy`` (a bundle from before issue 16), also ``evaluation/lesions.csv`` (two lesions per
    patient, phantom characteristics, one lesion listed with no analysable image, a few excluded
    images), ``evaluation/thumbs/`` for test/external lesions, ``config.json``, ``manifest.json`` and
    ``radiomics.yaml``; with ``manifest``, an (unsigned, unsealed) ``manifest.json`` too, which the CLI
    would try to verify.
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
    metrics: dict[str, object] = {"synthetic": synthetic, "auc_test": 0.9}
    if not legacy:
        metrics.update(seed=3, primary="svm/combined", roi_auto_dice={"n": 70, "mean": 0.81, "median": 0.84})
    (root / "metrics.json").write_text(json.dumps(metrics))
    if not legacy:
        _extras(root, rows, rng, manifest)
    return root


def _extras(root: Path, rows: list[list[object]], rng: np.random.Generator, manifest: bool) -> None:
    from PIL import Image

    seen: dict[tuple[object, object], list[object]] = {}
    for r in rows:
        seen.setdefault((r[0], r[1]), r)
    with (root / "evaluation" / "lesions.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["split", "lesion_id", "patient_id", "y", "images_listed", "images_analysed", "size_mm", "layer",
                    "echo_pattern", "device", "centre"])
        for k, (split, les) in enumerate(seen):
            r = seen[(split, les)]
            listed = 3 + k % 4
            w.writerow([split, les, r[2], r[3], listed, listed - (1 if k % 7 == 0 else 0),
                        f"{rng.uniform(10, 60):.1f}", "muscularis propria" if k % 3 else "muscularis mucosae",
                        "hypoechoic" if k % 5 else "heterogeneous", f"dev-{k % 2}",
                        "external" if split == "external" else "internal"])
        w.writerow(["test", "TE9999", "Pte9999", 1, 2, 0, "22.0", "muscularis propria", "hypoechoic", "dev-0",
                    "internal"])  # listed, no analysable image: excluded
    thumbs = root / "evaluation" / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    for split, les in seen:
        if split in ("test", "external"):
            px = (rng.random((48, 64)) * 255).astype(np.uint8)
            Image.fromarray(px).save(thumbs / f"{split}_{les}.png")
    (root / "config.json").write_text(json.dumps({
        "primary": "svm/combined", "model_name": "svm-combined (deit_tiny random-init + radiomics)",
        "threshold": 0.5, "threshold_source": "Youden J on train out-of-fold lesion predictions",
        "aggregation": "mean", "backbone": {"name": "deit_tiny_patch16_224", "image_size": 112, "epochs": 1},
        "backbone_init": {"kind": "random", "description": "random initialisation (no pretrained weights)"},
        "deep_mode": "cross-fit", "preprocess": {"work_size": 256}, "roi": {"method": "seg-else-auto"},
        "window": {"size": 112, "mm": 60.0}, "radiomics_features": ["original_firstorder_Mean"] * 5,
        "deep_features": ["deep_0"] * 3, "training_fingerprint": "f" * 64,
        "libraries": {"numpy": "2.3.0", "pyradiomics-bhklab": "3.1.4", "torch": "2.14.1"},
        "train_config": {"seed": 3, "selector": "lasso", "cv_splits": 5, "grid_search": True, "test_size": 0.2},
    }))
    if manifest:
        (root / "manifest.json").write_text(json.dumps({"format": "eusdx-bundle/2", "version": "2026.12.01-abcdef12",
                                                        "files": {}}))
    (root / "radiomics.yaml").write_text("setting:\n  binWidth: 8\n  normalize: false\nimageType:\n  Original: {}\n")
    _auto_roi(root, rows, rng)


def _auto_roi(root: Path, rows: list[list[object]], rng: np.random.Generator) -> None:
    """``predictions_auto_roi.csv``: the test/external rows with noisier probabilities (the automatic ROI is
    coarser) and every 9th lesion missing (no lesion found), plus ``auto_roi.json``."""
    out, coverage = [], {}
    for r in rows:
        split, les = str(r[0]), str(r[1])
        if split == "train" or int(les[2:]) % 9 == 4:
            continue
        p = float(r[6])
        q = float(np.clip(p + rng.normal(scale=0.12), 0.0, 1.0))
        out.append([*r[:6], f"{q:.4f}"])
    for split in ("test", "external"):
        seg = {r[1] for r in rows if r[0] == split}
        auto = {r[1] for r in out if r[0] == split}
        if seg:
            coverage[split] = {"images_seg": 3 * len(seg), "images_auto": 3 * len(auto) - 2,
                               "lesions_seg": len(seg), "lesions_auto": len(auto),
                               "images_left_out": {"NoLesionError": 3 * (len(seg) - len(auto)) + 2}}
    with (root / "evaluation" / "predictions_auto_roi.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["split", "lesion_id", "patient_id", "y", "classifier", "modality", "prob"])
        w.writerows(out)
    (root / "evaluation" / "auto_roi.json").write_text(json.dumps({"roi": "automatic", "coverage": coverage}))
