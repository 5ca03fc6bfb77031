"""ROC curves, AUC with DeLong variance and CI, paired and unpaired DeLong tests, Youden's threshold.

Matches pROC 1.18.0 (``ci.auc``, ``roc.test``, ``coords(best, "youden")``) with ``direction='<'``: a higher
score means more likely a case (y = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

from stats._validate import FloatArray, _as_binary, _as_scores, _both_classes, _check_alpha

__all__ = [
    "RocAuc",
    "RocCurve",
    "PairedDeLong",
    "UnpairedDeLong",
    "YoudenResult",
    "roc_auc_ci",
    "roc_curve",
    "delong_paired",
    "delong_unpaired",
    "youden_threshold",
]


@dataclass(frozen=True)
class RocAuc:
    """AUC with its DeLong variance and a normal confidence interval (pROC ``ci.auc`` semantics).

    ``ci_lower``/``ci_upper`` are clipped to [0, 1] as pROC does; the unclipped bounds are kept too.
    """

    auc: float
    variance: float
    se: float
    ci_lower: float
    ci_upper: float
    ci_lower_unclipped: float
    ci_upper_unclipped: float
    n_cases: int
    n_controls: int
    alpha: float


@dataclass(frozen=True)
class RocCurve:
    """Empirical ROC curve at pROC's thresholds (midpoints between distinct scores, plus +-inf)."""

    thresholds: FloatArray
    sensitivity: FloatArray
    specificity: FloatArray

    @property
    def fpr(self) -> FloatArray:
        """False-positive rate, 1 - specificity."""
        return 1.0 - self.specificity


@dataclass(frozen=True)
class PairedDeLong:
    """DeLong's test for two correlated ROC curves (same patients), pROC ``roc.test(paired=TRUE)``."""

    auc_a: float
    auc_b: float
    difference: float
    se: float
    z: float
    p_value: float
    ci_lower: float
    ci_upper: float
    alpha: float


@dataclass(frozen=True)
class UnpairedDeLong:
    """DeLong's test for two independent ROC curves, pROC's statistic ``D`` with Welch-type ``df``."""

    auc_a: float
    auc_b: float
    difference: float
    d: float
    df: float
    p_value: float


def _midrank(x: FloatArray) -> FloatArray:
    """Mid-ranks (1-based; ties share their average rank), as in Sun & Xu (2014)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = xs.size
    ranks_sorted = np.empty(n, dtype=np.float64)
    i = 0
    while i < n:
        j = i
        while j < n and xs[j] == xs[i]:
            j += 1
        ranks_sorted[i:j] = 0.5 * (i + j - 1) + 1.0
        i = j
    out = np.empty(n, dtype=np.float64)
    out[order] = ranks_sorted
    return out


def _placements(cases: FloatArray, controls: FloatArray) -> tuple[float, FloatArray, FloatArray]:
    """Fast DeLong structural components (Sun & Xu 2014).

    Returns ``(auc, v10, v01)``: ``v10[i]`` is the fraction of controls below case ``i`` (ties count
    one half), ``v01[j]`` the fraction of cases above control ``j``. These are pROC's ``X`` and ``Y``
    placements, so the variances below equal pROC's.
    """
    m, n = cases.size, controls.size
    tx = _midrank(cases)
    ty = _midrank(controls)
    tz = _midrank(np.concatenate([cases, controls]))
    # rank sums are exact multiples of 1/2, so one final division keeps AUC = 1 exact
    auc = float((tz[:m].sum() - m * (m + 1.0) / 2.0) / (m * n))
    v10 = (tz[:m] - tx) / n
    v01 = 1.0 - (tz[m:] - ty) / m
    return auc, v10, v01


def _split(y: NDArray[np.int64], s: FloatArray) -> tuple[FloatArray, FloatArray]:
    return s[y == 1], s[y == 0]


def _prepare(y: ArrayLike, score: ArrayLike, name: str = "score") -> tuple[NDArray[np.int64], FloatArray]:
    yy = _as_binary(y)
    ss = _as_scores(score, yy.size, name)
    _both_classes(yy)
    return yy, ss


def roc_auc_ci(y: ArrayLike, score: ArrayLike, alpha: float = 0.05) -> RocAuc:
    """AUC with DeLong variance and confidence interval, as pROC ``ci.auc(method="delong")``.

    Parameters
    ----------
    y : array-like of {0, 1}
        Truth, 1 = GIST (case).
    score : array-like of float
        Higher means more likely a case (pROC ``direction='<'``).
    alpha : float
        1 - confidence level.

    Returns
    -------
    RocAuc

    Raises
    ------
    ValueError
        Lengths differ, ``y`` is not binary, a class is missing, or fewer than two of either class
        (the DeLong variance needs two).
    """
    alpha = _check_alpha(alpha)
    yy, ss = _prepare(y, score)
    cases, controls = _split(yy, ss)
    if cases.size < 2 or controls.size < 2:
        raise ValueError("DeLong variance needs at least 2 cases and 2 controls")
    auc, v10, v01 = _placements(cases, controls)
    var = float(np.var(v10, ddof=1) / cases.size + np.var(v01, ddof=1) / controls.size)
    se = math.sqrt(var)
    z = float(sps.norm.isf(alpha / 2.0))
    lo, hi = auc - z * se, auc + z * se
    return RocAuc(
        auc=auc,
        variance=var,
        se=se,
        ci_lower=min(max(lo, 0.0), 1.0),
        ci_upper=min(max(hi, 0.0), 1.0),
        ci_lower_unclipped=lo,
        ci_upper_unclipped=hi,
        n_cases=int(cases.size),
        n_controls=int(controls.size),
        alpha=alpha,
    )


def roc_curve(y: ArrayLike, score: ArrayLike) -> RocCurve:
    """ROC curve points at pROC's thresholds, in increasing threshold order.

    Thresholds are ``-inf``, the midpoints between adjacent distinct scores, and ``+inf``; a sample is
    called positive iff ``score >= threshold``.
    """
    yy, ss = _prepare(y, score)
    cases, controls = _split(yy, ss)
    u = np.unique(ss)
    thr = np.concatenate([[-np.inf], (u[:-1] + u[1:]) / 2.0, [np.inf]])
    cs = np.sort(cases)
    ct = np.sort(controls)
    # count of values >= t = size - (count of values < t)
    sens = 1.0 - np.searchsorted(cs, thr, side="left") / cs.size
    spec = np.searchsorted(ct, thr, side="left") / ct.size
    return RocCurve(thresholds=thr, sensitivity=sens.astype(np.float64), specificity=spec.astype(np.float64))


def delong_paired(
    y: ArrayLike, score_a: ArrayLike, score_b: ArrayLike, alpha: float = 0.05
) -> PairedDeLong:
    """DeLong's test comparing two AUCs on the same samples (pROC ``roc.test``, paired).

    Identical predictions (difference 0, variance 0) give ``z = 0`` and ``p = 1``, as pROC does; a
    non-zero difference with zero variance gives an infinite ``z`` and ``p = 0``.

    Parameters
    ----------
    y : array-like of {0, 1}
    score_a, score_b : array-like of float
        Two models' scores for the same samples, in the same order.
    alpha : float
        For the confidence interval of ``auc_a - auc_b``.

    Returns
    -------
    PairedDeLong

    Raises
    ------
    ValueError
        On invalid input (see :func:`roc_auc_ci`).
    """
    alpha = _check_alpha(alpha)
    yy, sa = _prepare(y, score_a, "score_a")
    sb = _as_scores(score_b, yy.size, "score_b")
    ca, na = _split(yy, sa)
    cb, nb = _split(yy, sb)
    m, n = ca.size, na.size
    if m < 2 or n < 2:
        raise ValueError("DeLong variance needs at least 2 cases and 2 controls")
    auc_a, x_a, y_a = _placements(ca, na)
    auc_b, x_b, y_b = _placements(cb, nb)
    sx = np.cov(np.vstack([x_a, x_b]), ddof=1)
    sy = np.cov(np.vstack([y_a, y_b]), ddof=1)
    s = sx / m + sy / n
    var = float(s[0, 0] + s[1, 1] - 2.0 * s[0, 1])
    var = max(var, 0.0)  # rounding can push an exact zero slightly negative
    sig = math.sqrt(var)
    d = auc_a - auc_b
    if sig == 0.0:
        # pROC special-cases 0/0 as Z = 0; a naive division returns NaN (and some ports report p = 0)
        z = 0.0 if d == 0.0 else math.copysign(math.inf, d)
    else:
        z = d / sig
    p = float(2.0 * sps.norm.sf(abs(z)))
    crit = float(sps.norm.isf(alpha / 2.0))
    return PairedDeLong(
        auc_a=auc_a,
        auc_b=auc_b,
        difference=d,
        se=sig,
        z=float(z),
        p_value=p,
        ci_lower=d - crit * sig,
        ci_upper=d + crit * sig,
        alpha=alpha,
    )


def delong_unpaired(
    y_a: ArrayLike, score_a: ArrayLike, y_b: ArrayLike, score_b: ArrayLike
) -> UnpairedDeLong:
    """DeLong's test comparing AUCs from two independent samples (pROC ``delong.unpaired.test``).

    ``D = (auc_a - auc_b) / sqrt(S_a + S_b)`` with ``S = var(X)/m + var(Y)/n`` for each curve, and
    ``df = (S_a + S_b)^2 / (S_a^2 / (N_a - 1) + S_b^2 / (N_b - 1))`` where ``N`` is the total number of
    samples (cases + controls) of that curve; ``p = 2 * pt(-|D|, df)``.

    Raises
    ------
    ValueError
        On invalid input in either sample.
    """
    ya, sa = _prepare(y_a, score_a, "score_a")
    yb, sb = _prepare(y_b, score_b, "score_b")
    parts = []
    for yy, ss in ((ya, sa), (yb, sb)):
        cases, controls = _split(yy, ss)
        if cases.size < 2 or controls.size < 2:
            raise ValueError("DeLong variance needs at least 2 cases and 2 controls in each sample")
        auc, x, yv = _placements(cases, controls)
        s = float(np.var(x, ddof=1) / cases.size + np.var(yv, ddof=1) / controls.size)
        parts.append((auc, s, yy.size))
    (auc_a, s_a, n_a), (auc_b, s_b, n_b) = parts
    diff = auc_a - auc_b
    tot = s_a + s_b
    if tot == 0.0:
        d = 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
        return UnpairedDeLong(auc_a, auc_b, diff, d, math.nan, 1.0 if diff == 0.0 else 0.0)
    d = diff / math.sqrt(tot)
    df = tot**2 / (s_a**2 / (n_a - 1) + s_b**2 / (n_b - 1))
    p = float(2.0 * sps.t.sf(abs(d), df))
    return UnpairedDeLong(auc_a=auc_a, auc_b=auc_b, difference=diff, d=d, df=df, p_value=p)


@dataclass(frozen=True)
class YoudenResult:
    """The threshold maximising sensitivity + specificity - 1 and the counts there."""

    threshold: float
    sensitivity: float
    specificity: float
    youden_index: float
    tp: int
    fp: int
    tn: int
    fn: int


def youden_threshold(y: ArrayLike, score: ArrayLike) -> YoudenResult:
    """Best threshold by Youden's J, as pROC ``coords(roc, "best", best.method="youden")``.

    Candidates are pROC's thresholds (midpoints between adjacent distinct scores, excluding the
    infinite ends). When several tie, the lowest threshold wins (pROC ``best.policy="first"``).
    """
    yy, ss = _prepare(y, score)
    curve = roc_curve(yy, ss)
    thr = curve.thresholds
    finite = np.isfinite(thr)
    if not finite.any():  # a single distinct score: the only cut-offs are +-inf
        finite[:] = True
    j = curve.sensitivity + curve.specificity - 1.0
    j_masked = np.where(finite, j, -np.inf)
    best = int(np.argmax(j_masked))  # argmax returns the first maximum
    t = float(thr[best])
    pos = ss >= t
    return YoudenResult(
        threshold=t,
        sensitivity=float(curve.sensitivity[best]),
        specificity=float(curve.specificity[best]),
        youden_index=float(j[best]),
        tp=int(np.sum(pos & (yy == 1))),
        fp=int(np.sum(pos & (yy == 0))),
        tn=int(np.sum(~pos & (yy == 0))),
        fn=int(np.sum(~pos & (yy == 1))),
    )
