"""Binomial proportion confidence intervals and diagnostic metrics at a threshold."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps

from stats._validate import _as_binary, _as_scores, _check_alpha

__all__ = [
    "PROPORTION_METHODS",
    "ProportionCI",
    "DiagnosticMetrics",
    "proportion_ci",
    "diagnostic_metrics",
]

ProportionMethod = Literal["wald", "normal", "wilson", "clopper-pearson", "beta", "agresti-coull", "jeffreys"]
PROPORTION_METHODS: tuple[str, ...] = (
    "wald",
    "normal",
    "wilson",
    "clopper-pearson",
    "beta",
    "agresti-coull",
    "jeffreys",
)


@dataclass(frozen=True)
class ProportionCI:
    """A proportion ``x / n`` with its confidence interval. ``n == 0`` gives NaNs throughout."""

    x: int
    n: int
    estimate: float
    lower: float
    upper: float
    method: str
    alpha: float


def proportion_ci(x: int, n: int, method: str = "wilson", alpha: float = 0.05) -> ProportionCI:
    """Confidence interval of a binomial proportion (statsmodels ``proportion_confint`` semantics).

    Parameters
    ----------
    x, n : int
        Successes and trials, ``0 <= x <= n``, ``n >= 1``.
    method : str
        ``"wald"`` (alias ``"normal"``; ``p +- z*sqrt(p(1-p)/n)`` clipped to [0, 1], the interval paper
        002 reports), ``"wilson"``, ``"clopper-pearson"`` (alias ``"beta"``, exact), ``"agresti-coull"``
        (clipped to [0, 1]) or ``"jeffreys"`` (lower bound 0 when ``x = 0``, upper 1 when ``x = n``).
    alpha : float
        1 - confidence level; ``z = Phi^-1(1 - alpha/2)``.

    Returns
    -------
    ProportionCI

    Raises
    ------
    ValueError
        Unknown method, ``n < 1`` or ``x`` outside ``[0, n]``.
    """
    alpha = _check_alpha(alpha)
    if method not in PROPORTION_METHODS:
        raise ValueError(f"unknown proportion CI method {method!r}; use one of {', '.join(PROPORTION_METHODS)}")
    if int(n) != n or int(x) != x:
        raise ValueError(f"x and n must be integers, got x={x}, n={n}")
    x, n = int(x), int(n)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not 0 <= x <= n:
        raise ValueError(f"x must be in [0, n], got x={x}, n={n}")
    p = x / n
    z = float(sps.norm.isf(alpha / 2.0))
    if method in ("wald", "normal"):
        half = z * math.sqrt(p * (1.0 - p) / n)
        lo, hi = p - half, p + half
    elif method == "wilson":
        z2 = z * z
        denom = 1.0 + z2 / n
        centre = (p + z2 / (2.0 * n)) / denom
        half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
        lo, hi = centre - half, centre + half
    elif method in ("clopper-pearson", "beta"):
        lo = 0.0 if x == 0 else float(sps.beta.ppf(alpha / 2.0, x, n - x + 1))
        hi = 1.0 if x == n else float(sps.beta.isf(alpha / 2.0, x + 1, n - x))
    elif method == "agresti-coull":
        nt = n + z * z
        pt = (x + z * z / 2.0) / nt
        half = z * math.sqrt(pt * (1.0 - pt) / nt)
        lo, hi = pt - half, pt + half
    else:  # jeffreys
        lo = 0.0 if x == 0 else float(sps.beta.ppf(alpha / 2.0, x + 0.5, n - x + 0.5))
        hi = 1.0 if x == n else float(sps.beta.isf(alpha / 2.0, x + 0.5, n - x + 0.5))
    # the interval always contains p; at p = 0 or 1 rounding can otherwise leave a bound 1 ulp short
    lo, hi = min(lo, p), max(hi, p)
    return ProportionCI(
        x=x, n=n, estimate=p, lower=min(max(lo, 0.0), 1.0), upper=min(max(hi, 0.0), 1.0),
        method=method, alpha=alpha,
    )


def _proportion_or_nan(x: int, n: int, method: str, alpha: float) -> ProportionCI:
    if n == 0:  # e.g. PPV when nothing tested positive: undefined, reported as NaN
        return ProportionCI(x=0, n=0, estimate=math.nan, lower=math.nan, upper=math.nan, method=method, alpha=alpha)
    return proportion_ci(x, n, method, alpha)


@dataclass(frozen=True)
class DiagnosticMetrics:
    """Confusion counts at one threshold and the derived proportions with confidence intervals."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: ProportionCI
    specificity: ProportionCI
    ppv: ProportionCI
    npv: ProportionCI
    accuracy: ProportionCI


def diagnostic_metrics(
    y: ArrayLike, prob: ArrayLike, threshold: float, ci_method: str = "wilson", alpha: float = 0.05
) -> DiagnosticMetrics:
    """Sensitivity, specificity, PPV, NPV and accuracy at ``threshold`` (positive iff ``prob >= threshold``).

    Raises
    ------
    ValueError
        Invalid ``y``/``prob``, unknown ``ci_method``, or a non-finite threshold.
    """
    if ci_method not in PROPORTION_METHODS:
        raise ValueError(f"unknown proportion CI method {ci_method!r}; use one of {', '.join(PROPORTION_METHODS)}")
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    yy = _as_binary(y)
    pp = _as_scores(prob, yy.size, "prob")
    pos = pp >= threshold
    tp = int(np.sum(pos & (yy == 1)))
    fp = int(np.sum(pos & (yy == 0)))
    tn = int(np.sum(~pos & (yy == 0)))
    fn = int(np.sum(~pos & (yy == 1)))

    def ci(a: int, b: int) -> ProportionCI:
        return _proportion_or_nan(a, b, ci_method, alpha)

    return DiagnosticMetrics(
        threshold=float(threshold), tp=tp, fp=fp, tn=tn, fn=fn,
        sensitivity=ci(tp, tp + fn), specificity=ci(tn, tn + fp),
        ppv=ci(tp, tp + fp), npv=ci(tn, tn + fn), accuracy=ci(tp + tn, yy.size),
    )
