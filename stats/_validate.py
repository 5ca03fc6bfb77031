"""Input checks shared by the statistics modules; each raises ``ValueError`` naming the problem."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__: list[str] = []

FloatArray = NDArray[np.float64]


def _as_binary(y: ArrayLike, name: str = "y") -> NDArray[np.int64]:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    try:
        num = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be binary 0/1, got non-numeric values") from exc
    if not np.all(np.isin(num, (0.0, 1.0))):
        bad = sorted(set(num[~np.isin(num, (0.0, 1.0))].tolist()))[:3]
        raise ValueError(f"{name} must be binary 0/1, found {bad}")
    return num.astype(np.int64)


def _as_scores(s: ArrayLike, n: int, name: str) -> FloatArray:
    arr = np.asarray(s, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size != n:
        raise ValueError(f"length mismatch: y has {n} values, {name} has {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _as_probs(p: ArrayLike, n: int, name: str = "p") -> FloatArray:
    arr = _as_scores(p, n, name)
    if np.any((arr < 0.0) | (arr > 1.0)):
        raise ValueError(f"{name} must be probabilities in [0, 1]")
    return arr


def _both_classes(y: NDArray[np.int64], name: str = "y") -> None:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise ValueError(f"{name} must contain both classes (0 and 1); got only {int(y[0])}")


def _check_alpha(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return float(alpha)
