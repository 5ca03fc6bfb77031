"""Patient-clustered percentile bootstrap for the AUC and the threshold metrics.

Lesions of one patient are not independent, so the resampling unit is the patient (cluster), never
the lesion or the image: each replicate draws ``N`` patients with replacement from the ``N`` patients
and keeps all of their rows (Field & Welsh 2007, "Bootstrapping clustered data", JRSS B 69:369;
Davison & Hinkley 1997, section 3.8). A patient drawn ``k`` times enters every statistic with weight
``k``, which is what copying his rows ``k`` times would give.

Intervals are percentile intervals (Efron & Tibshirani 1993, ch. 13): the ``alpha/2`` and
``1 - alpha/2`` quantiles (numpy's default linear rule, R ``quantile`` type 7) of the replicates in
which the statistic is defined (a replicate with no case has no sensitivity; ``n_valid`` says how many
were usable).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from stats._validate import FloatArray, _as_binary, _as_scores, _both_classes, _check_alpha
from stats.prevalence import predictive_values_at_prevalence

__all__ = ["BootstrapInterval", "ClusterBootstrap", "cluster_bootstrap"]


@dataclass(frozen=True)
class BootstrapInterval:
    """One statistic: its value on the sample and the percentile interval of its replicates.

    ``estimate`` is NaN when undefined on the sample (e.g. PPV with no positive test); ``lower`` and
    ``upper`` are NaN when fewer than 2 replicates were usable (``n_valid``).
    """

    estimate: float
    lower: float
    upper: float
    n_valid: int


@dataclass(frozen=True)
class ClusterBootstrap:
    """Patient-clustered bootstrap intervals at one threshold (positive iff ``prob >= threshold``).

    ``ppv_at_prevalence``/``npv_at_prevalence`` apply Bayes' rule to each replicate's sensitivity and
    specificity at the stated ``prevalence`` (None when no prevalence was given).
    """

    auc: BootstrapInterval
    sensitivity: BootstrapInterval
    specificity: BootstrapInterval
    ppv: BootstrapInterval
    npv: BootstrapInterval
    accuracy: BootstrapInterval
    ppv_at_prevalence: BootstrapInterval | None
    npv_at_prevalence: BootstrapInterval | None
    threshold: float
    prevalence: float | None
    n_rows: int
    n_clusters: int
    n_boot: int
    seed: int
    alpha: float


def _interval(estimate: float, reps: FloatArray, alpha: float) -> BootstrapInterval:
    ok = reps[np.isfinite(reps)]
    if ok.size < 2:
        return BootstrapInterval(float(estimate), math.nan, math.nan, int(ok.size))
    lo, hi = np.quantile(ok, [alpha / 2.0, 1.0 - alpha / 2.0])
    return BootstrapInterval(float(estimate), float(lo), float(hi), int(ok.size))


def _ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def cluster_bootstrap(
    y: ArrayLike,
    prob: ArrayLike,
    clusters: ArrayLike,
    threshold: float,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    prevalence: float | None = None,
) -> ClusterBootstrap:
    """Percentile intervals for AUC, sensitivity, specificity, PPV, NPV and accuracy, resampling clusters.

    Parameters
    ----------
    y : array-like of {0, 1}, shape (n,)
        Truth per row (lesion), 1 = GIST.
    prob : array-like of float, shape (n,)
        Score per row; higher means more likely GIST.
    clusters : array-like, shape (n,)
        Resampling unit per row (patient id); rows with equal values move together.
    threshold : float
        Positive test iff ``prob >= threshold``.
    n_boot : int
        Replicates (>= 10).
    seed : int
        Seed of ``numpy.random.default_rng``; the same inputs and seed give the same intervals.
    alpha : float
        1 - confidence level.
    prevalence : float, optional
        Deployment prevalence in (0, 1) for Bayes' PPV/NPV.

    Returns
    -------
    ClusterBootstrap

    Raises
    ------
    ValueError
        Invalid ``y``/``prob``, lengths differ, a class missing, ``n_boot < 10``, a non-finite threshold
        or a prevalence outside (0, 1).
    """
    alpha = _check_alpha(alpha)
    if n_boot < 10:
        raise ValueError(f"n_boot must be at least 10, got {n_boot}")
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    if prevalence is not None and not 0.0 < prevalence < 1.0:
        raise ValueError(f"prevalence must lie strictly between 0 and 1, got {prevalence}")
    yy = _as_binary(y)
    pp = _as_scores(prob, yy.size, "prob")
    _both_classes(yy)
    cl = np.asarray(clusters)
    if cl.ndim != 1 or cl.size != yy.size:
        raise ValueError(f"clusters must be one-dimensional with {yy.size} values, got shape {cl.shape}")
    _, cidx = np.unique(cl, return_inverse=True)
    n_cl = int(cidx.max()) + 1
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_cl, size=(n_boot, n_cl))
    counts = np.zeros((n_boot, n_cl), dtype=np.float64)
    np.add.at(counts, (np.repeat(np.arange(n_boot), n_cl), draws.ravel()), 1.0)
    w = counts[:, cidx]  # (B, n): how often each row is in each replicate

    pos = (pp >= threshold).astype(np.float64)
    case = (yy == 1).astype(np.float64)
    ctrl = 1.0 - case

    def metrics(wt: NDArray[np.float64]) -> dict[str, FloatArray]:
        tp = wt @ (pos * case)
        fn = wt @ ((1.0 - pos) * case)
        fp = wt @ (pos * ctrl)
        tn = wt @ ((1.0 - pos) * ctrl)
        sens, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
        out = {"sensitivity": sens, "specificity": spec, "ppv": _ratio(tp, tp + fp),
               "npv": _ratio(tn, tn + fn), "accuracy": _ratio(tp + tn, tp + tn + fp + fn)}
        if prevalence is not None:
            ppv_d, npv_d = predictive_values_at_prevalence(sens, spec, prevalence)
            out["ppv_at_prevalence"], out["npv_at_prevalence"] = ppv_d, npv_d
        return out

    # AUC of a weighted sample: sum_ij w_i w_j K_ij / (sum_i w_i * sum_j w_j) with K the Mann-Whitney
    # kernel (1 if case score > control score, 1/2 if tied), i over cases and j over controls
    sc, sn = pp[yy == 1], pp[yy == 0]
    kern = (sc[:, None] > sn[None, :]).astype(np.float64) + 0.5 * (sc[:, None] == sn[None, :])
    wc, wn = w[:, yy == 1], w[:, yy == 0]
    auc_num = np.einsum("bi,ij,bj->b", wc, kern, wn)
    auc_reps = _ratio(auc_num, wc.sum(axis=1) * wn.sum(axis=1))
    auc_est = float(kern.mean())

    est = metrics(np.ones((1, yy.size)))
    reps = metrics(w)

    def iv(name: str) -> BootstrapInterval:
        return _interval(float(est[name][0]), reps[name], alpha)

    return ClusterBootstrap(
        auc=_interval(auc_est, auc_reps, alpha),
        sensitivity=iv("sensitivity"), specificity=iv("specificity"), ppv=iv("ppv"), npv=iv("npv"),
        accuracy=iv("accuracy"),
        ppv_at_prevalence=iv("ppv_at_prevalence") if prevalence is not None else None,
        npv_at_prevalence=iv("npv_at_prevalence") if prevalence is not None else None,
        threshold=float(threshold), prevalence=prevalence, n_rows=int(yy.size), n_clusters=n_cl,
        n_boot=int(n_boot), seed=int(seed), alpha=alpha,
    )
