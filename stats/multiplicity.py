"""Multiplicity adjustment of p values: Holm's step-down procedure.

Holm (1979), "A simple sequentially rejective multiple test procedure", Scand J Statist 6:65-70.
With the ``m`` p values sorted ascending ``p_(1) <= ... <= p_(m)``, the adjusted value of the ``i``-th
is ``max_{k <= i} min(1, (m - k + 1) * p_(k))``; identical to R ``p.adjust(p, "holm")``. It controls the
family-wise error rate under any dependence, as between DeLong tests that share the same lesions.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from stats._validate import FloatArray

__all__ = ["holm_adjust"]


def holm_adjust(p_values: ArrayLike) -> FloatArray:
    """Holm-adjusted p values, in the order given.

    Parameters
    ----------
    p_values : array-like of float in [0, 1], shape (m,)
        NaN entries are left out of the family (``m`` counts the finite ones) and stay NaN.

    Returns
    -------
    numpy.ndarray of float, shape (m,)

    Raises
    ------
    ValueError
        Not one-dimensional, or a finite value outside [0, 1].
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values must be one-dimensional, got shape {p.shape}")
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    vals = p[ok]
    if np.any((vals < 0.0) | (vals > 1.0)):
        raise ValueError("p values must lie in [0, 1]")
    m = vals.size
    order = np.argsort(vals, kind="mergesort")
    scaled = np.minimum(1.0, (m - np.arange(m)) * vals[order])
    adj = np.maximum.accumulate(scaled)
    res = np.empty(m)
    res[order] = adj
    out[ok] = res
    return out
