"""Predictive values at a prevalence other than the study's (Bayes' theorem).

``PPV = Se * pi / (Se * pi + (1 - Sp) * (1 - pi))`` and ``NPV = Sp * (1 - pi) / (Sp * (1 - pi) + (1 - Se) * pi)``
(Altman & Bland 1994, "Diagnostic tests 2: predictive values", BMJ 309:102). A test set enriched
for one class gives PPV/NPV that hold only at its own prevalence; the deployment prevalence must be
stated and used here.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from stats._validate import FloatArray

__all__ = ["predictive_values_at_prevalence"]


def predictive_values_at_prevalence(
    sensitivity: ArrayLike, specificity: ArrayLike, prevalence: float
) -> tuple[FloatArray, FloatArray]:
    """PPV and NPV at ``prevalence`` from sensitivity and specificity (element-wise).

    Parameters
    ----------
    sensitivity, specificity : array-like of float in [0, 1] (NaN allowed: gives NaN)
    prevalence : float
        Strictly between 0 and 1.

    Returns
    -------
    (ppv, npv) : arrays of float, the shape of the broadcast inputs; NaN where the denominator is 0
        (e.g. PPV when Se = 0 and Sp = 1: nobody tests positive).

    Raises
    ------
    ValueError
        Prevalence outside (0, 1), or a sensitivity/specificity outside [0, 1].
    """
    if not 0.0 < prevalence < 1.0:
        raise ValueError(f"prevalence must lie strictly between 0 and 1, got {prevalence}")
    se = np.asarray(sensitivity, dtype=np.float64)
    sp = np.asarray(specificity, dtype=np.float64)
    for name, arr in (("sensitivity", se), ("specificity", sp)):
        fin = arr[np.isfinite(arr)]
        if np.any((fin < 0.0) | (fin > 1.0)):
            raise ValueError(f"{name} must lie in [0, 1]")
    pi = float(prevalence)
    tp, fp = se * pi, (1.0 - sp) * (1.0 - pi)
    tn, fn = sp * (1.0 - pi), (1.0 - se) * pi
    with np.errstate(divide="ignore", invalid="ignore"):
        ppv = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1.0), np.nan)
        npv = np.where(tn + fn > 0, tn / np.where(tn + fn > 0, tn + fn, 1.0), np.nan)
    return np.asarray(ppv, dtype=np.float64), np.asarray(npv, dtype=np.float64)
