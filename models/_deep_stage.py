"""Training stage 3: deep features with no lesion seen twice, and frozen ResNet features.

Two ways to get the Transformer's features (``TrainConfig.deep_mode``):

- ``"cross-fit"``: the training patients are cut into ``backbone_folds`` patient-grouped folds; for each
  fold a backbone is fine-tuned on the other folds (early stopping on a patient split of those) and
  gives the features of that fold's images. A last backbone fine-tuned on all training patients gives the
  test/external features and goes into the bundle. So every training row's features come from a
  backbone that never saw its patient, and the classifiers' out-of-fold predictions, the stackers and
  the thresholds built on them are not optimistic (Chernozhukov et al. 2018's cross-fitting).
- ``"frozen"``: no fine-tuning; the backbone as initialised (random, or a local weights file) gives every
  row's features. Nothing is learnt from the lesions, so nothing leaks.

The ResNet34/50 rows on a CPU are frozen, randomly initialised ResNets (``resnet*-random-frozen``): their
pooled features go to paper 004's LASSO logistic regression. That is a reduced stand-in for paper 002's
trained ResNets and is named as such.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import bundle as _bundle
from .classifiers import _group_folds
from .dataset import split_by_patient
from .deep_features import Net, NetConfig

__all__ = ["DeepResult", "backbone_init", "deep_features", "frozen_features"]


@dataclass
class DeepResult:
    """Features for every row and the backbone that goes into the bundle."""

    features: np.ndarray  # (n_rows, d)
    net: Net  # fine-tuned on all training patients (cross-fit) or as initialised (frozen)
    key: str
    from_cache: bool
    fold_histories: list[list[dict[str, float]]] = field(default_factory=list)
    n_trainings: int = 0


def backbone_init(weights: str | None) -> dict[str, Any]:
    """How the backbone started: ``{"kind": "random"}`` or ``{"kind": "weights-file", "file", "sha256"}``."""
    if not weights:
        return {"kind": "random", "description": "random initialisation (timm defaults; no pretrained weights)"}
    return {"kind": "weights-file", "file": Path(weights).name, "sha256": _bundle.sha256_file(weights),
            "description": f"local weights file {Path(weights).name}"}


def _cached_outputs(cache: Path, key: str, what: str, windows: list[np.ndarray],
                    compute: Callable[[list[np.ndarray]], np.ndarray]) -> np.ndarray:
    h = hashlib.sha256(f"{key}|{what}".encode())
    for im in windows:
        h.update(im.tobytes())
    path = cache / "outputs" / f"{h.hexdigest()}.npy"
    if path.is_file():
        return np.asarray(np.load(path))
    out = np.asarray(compute(windows))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npy")
    np.save(tmp, out)
    tmp.replace(path)
    return out


def frozen_features(cfg: NetConfig, windows: list[np.ndarray], device: str, cache: Path,
                    weights: str | None = None) -> tuple[Net, np.ndarray, str]:
    """Features of a backbone as initialised (no training). Returns (net, (n, d) features, cache key)."""
    key = hashlib.sha256(json.dumps({"frozen": cfg.to_dict(),
                                     "weights": _bundle.sha256_file(weights) if weights else None},
                                    sort_keys=True).encode()).hexdigest()
    net = Net.build(cfg, weights=weights)
    feats = _cached_outputs(cache, key, "frozen-features", windows, lambda w: net.features(w, device))
    return net, feats.astype(np.float64), key


def _finetune_split(df: pd.DataFrame, rows: np.ndarray, val_fraction: float, seed: int,
                    per_lesion: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Fit and early-stopping rows (positions into ``df``) from ``rows``, split by patient."""
    sub = df.iloc[rows].reset_index(drop=True)
    fit, val = split_by_patient(sub, test_size=val_fraction, seed=seed)
    if per_lesion:
        fit = np.asarray(sorted(sub.iloc[fit].groupby("lesion_key", sort=False).head(per_lesion).index))
    return rows[fit], rows[val]


def deep_features(
    *,
    mode: str,
    data: pd.DataFrame,
    windows: list[np.ndarray],
    train_mask: np.ndarray,
    net_cfg: NetConfig,
    folds: int,
    val_fraction: float,
    per_lesion: int | None,
    seed: int,
    device: str,
    cache: Path,
    weights: str | None,
    train_net_cached: Callable[..., tuple[Net, bool, str]],
) -> DeepResult:
    """The Transformer features of every row (see the module docstring).

    ``data`` needs ``y``, ``patient_id``, ``patient_key`` and ``lesion_key``; ``train_net_cached(cfg,
    fit_imgs, y_fit, val_imgs, y_val, g_val, desc)`` trains (or loads) one network.
    """
    if mode == "frozen":
        net, feats, key = frozen_features(net_cfg, windows, device, cache, weights)
        return DeepResult(feats, net, key, False)
    if mode != "cross-fit":
        raise ValueError(f"deep_mode must be 'cross-fit' or 'frozen', got {mode!r}")
    y = data["y"].to_numpy()
    g = data["lesion_key"].to_numpy()
    tr = np.flatnonzero(train_mask)

    def train_on(rows: np.ndarray, desc: str, s: int) -> tuple[Net, bool, str]:
        fit, val = _finetune_split(data, rows, val_fraction, s, per_lesion)
        return train_net_cached(net_cfg, [windows[i] for i in fit], y[fit], [windows[i] for i in val], y[val], g[val],
                                desc)

    final, cached, key = train_on(tr, f"fine-tune {net_cfg.name} (all training patients)", seed + 1)
    feats = np.zeros((len(windows), int(final.backbone.num_features)), dtype=np.float64)
    rest = np.flatnonzero(~train_mask)
    if len(rest):
        feats[rest] = _cached_outputs(cache, key, "features", [windows[i] for i in rest],
                                      lambda w: final.features(w, device))
    histories = []
    patients = data["patient_key"].to_numpy()
    for k, (a, b) in enumerate(_group_folds(y[tr], patients[tr], folds, seed)):
        net_k, _, key_k = train_on(tr[a], f"fine-tune {net_cfg.name} (cross-fit {k + 1}/{folds})", seed + 1 + k)
        held = tr[b]
        feats[held] = _cached_outputs(cache, key_k, "features", [windows[i] for i in held],
                                      functools.partial(net_k.features, device=device))
        histories.append(net_k.history)
    return DeepResult(feats, final, key, cached, histories, 1 + len(histories))
