"""Intraclass correlation coefficients (Shrout & Fleiss 1979) for feature stability.

For an ``n x k`` matrix (``n`` targets, e.g. lesion images, rated under ``k`` conditions, e.g. ROI
perturbations) with the two-way ANOVA mean squares ``BMS`` (between targets), ``WMS`` (within targets),
``JMS`` (between conditions) and ``EMS`` (residual):

* ICC(1,1) = (BMS - WMS) / (BMS + (k-1) WMS)                      one-way random
* ICC(2,1) = (BMS - EMS) / (BMS + (k-1) EMS + k (JMS - EMS) / n)  two-way random, absolute agreement
* ICC(3,1) = (BMS - EMS) / (BMS + (k-1) EMS)                      two-way mixed, consistency

(Shrout & Fleiss, "Intraclass correlations: uses in assessing rater reliability", Psychol Bull 1979;
86:420, Table 1; McGraw & Wong 1996). Radiomics stability under ROI perturbation uses ICC(1,1)
(Zwanenburg et al., "Assessing robustness of radiomic features by image perturbation", Sci Rep 2019;9:614).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["ICC", "icc"]


@dataclass(frozen=True)
class ICC:
    """ICC(1,1), ICC(2,1) and ICC(3,1) of one ``n x k`` table, with its mean squares."""

    icc1: float
    icc2: float
    icc3: float
    bms: float
    wms: float
    jms: float
    ems: float
    n: int
    k: int

    def get(self, form: Literal["1,1", "2,1", "3,1"]) -> float:
        """The ICC of the named form."""
        return {"1,1": self.icc1, "2,1": self.icc2, "3,1": self.icc3}[form]


def icc(ratings: ArrayLike) -> ICC:
    """Single-measure ICCs of a complete ``n x k`` table (targets in rows, conditions in columns).

    Raises
    ------
    ValueError
        Not two-dimensional, fewer than 2 targets or 2 conditions, or a non-finite value.
    """
    x = np.asarray(ratings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"ratings must be a 2-D table (targets x conditions), got shape {x.shape}")
    n, k = x.shape
    if n < 2 or k < 2:
        raise ValueError(f"ICC needs at least 2 targets and 2 conditions, got {n} x {k}")
    if not np.all(np.isfinite(x)):
        raise ValueError("ratings contain NaN or infinite values")
    grand = x.mean()
    ss_rows = k * float(np.sum((x.mean(axis=1) - grand) ** 2))
    ss_cols = n * float(np.sum((x.mean(axis=0) - grand) ** 2))
    ss_total = float(np.sum((x - grand) ** 2))
    ss_within = ss_total - ss_rows
    ss_err = ss_total - ss_rows - ss_cols
    bms = ss_rows / (n - 1)
    wms = ss_within / (n * (k - 1))
    jms = ss_cols / (k - 1)
    ems = ss_err / ((n - 1) * (k - 1))

    def ratio(num: float, den: float) -> float:
        return float(num / den) if den != 0 else float("nan")

    return ICC(
        icc1=ratio(bms - wms, bms + (k - 1) * wms),
        icc2=ratio(bms - ems, bms + (k - 1) * ems + k * (jms - ems) / n),
        icc3=ratio(bms - ems, bms + (k - 1) * ems),
        bms=bms, wms=wms, jms=jms, ems=ems, n=int(n), k=int(k),
    )
