"""Calibration: Brier score, binned curves and ECE, rms ``val.prob`` statistics (slope), calibration-in-the-large,
Hosmer-Lemeshow (with its minimum sample size)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special
from scipy import stats as sps

from stats._validate import FloatArray, _as_binary, _as_probs, _both_classes
from stats.roc import _placements

__all__ = [
    "HOSMER_LEMESHOW_MIN_EVENTS",
    "HOSMER_LEMESHOW_MIN_N",
    "CalibrationCurve",
    "CalibrationFit",
    "CalibrationInTheLarge",
    "ExpectedCalibrationError",
    "HosmerLemeshow",
    "brier_score",
    "calibration_in_the_large",
    "expected_calibration_error",
    "hosmer_lemeshow_not_applicable",
    "calibration_curve",
    "calibration_intercept_slope",
    "hosmer_lemeshow",
]


def brier_score(y: ArrayLike, p: ArrayLike) -> float:
    """Mean squared difference between predicted probability and outcome.

    Raises
    ------
    ValueError
        Invalid ``y``, lengths differ, or ``p`` outside [0, 1].
    """
    yy = _as_binary(y)
    pp = _as_probs(p, yy.size)
    return float(np.mean((pp - yy) ** 2))


@dataclass(frozen=True)
class CalibrationCurve:
    """Observed event rate against mean predicted probability per non-empty bin (sklearn semantics)."""

    prob_true: FloatArray
    prob_pred: FloatArray
    counts: NDArray[np.int64]
    strategy: str
    n_bins: int


def calibration_curve(
    y: ArrayLike, p: ArrayLike, n_bins: int = 10, strategy: Literal["uniform", "quantile"] = "uniform"
) -> CalibrationCurve:
    """Binned calibration curve, identical to ``sklearn.calibration.calibration_curve``.

    ``"uniform"`` bins split [0, 1] evenly; ``"quantile"`` bins have edges at the percentiles of ``p``.
    A value on an inner edge goes to the lower bin; empty bins are dropped.

    Raises
    ------
    ValueError
        Invalid input, ``n_bins < 1`` or an unknown strategy.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    if strategy not in ("uniform", "quantile"):
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    yy = _as_binary(y)
    pp = _as_probs(p, yy.size)
    if strategy == "quantile":
        bins = np.percentile(pp, np.linspace(0.0, 1.0, n_bins + 1) * 100.0)
    else:
        bins = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(bins[1:-1], pp)
    sums = np.bincount(ids, weights=pp, minlength=n_bins)
    true = np.bincount(ids, weights=yy.astype(np.float64), minlength=n_bins)
    total = np.bincount(ids, minlength=n_bins)
    nz = total != 0
    return CalibrationCurve(
        prob_true=true[nz] / total[nz], prob_pred=sums[nz] / total[nz],
        counts=total[nz].astype(np.int64), strategy=strategy, n_bins=int(n_bins),
    )


@dataclass(frozen=True)
class CalibrationFit:
    """Logistic recalibration statistics as R ``rms::val.prob`` reports them.

    ``intercept`` and ``slope`` are the coefficients of ``lrm(y ~ logit(p))`` (ideal 0 and 1).
    ``d_chisq`` is the discrimination chi-square of the predictions as given (null deviance minus the
    deviance of ``p`` itself), ``d = (d_chisq - 1)/n``; ``r2`` is Nagelkerke's R2 from that same
    chi-square; ``u_chisq`` is the unreliability chi-square (2 df: deviance of ``p`` minus deviance of
    the recalibrated fit), ``u = (u_chisq - 2)/n``; ``q = d - u``; ``emax``/``e90``/``eavg`` are the max / 90th percentile /
    mean absolute difference between ``p`` and R's ``lowess(p, y, iter=0)`` smooth; ``spiegelhalter_z``
    and its p value test calibration without binning.
    """

    intercept: float
    slope: float
    dxy: float
    c_index: float
    r2: float
    d: float
    d_chisq: float
    u: float
    u_chisq: float
    u_p_value: float
    q: float
    brier: float
    emax: float
    e90: float
    eavg: float
    spiegelhalter_z: float
    spiegelhalter_p: float
    converged: bool


def _logistic_fit(x: FloatArray, y: FloatArray, max_iter: int = 100) -> tuple[FloatArray, float, bool]:
    """Newton-Raphson logistic regression of ``y`` on ``[1, x]``; returns (coef, deviance, converged)."""
    design = np.column_stack([np.ones_like(x), x])
    beta = np.zeros(2)
    converged = False
    for _ in range(max_iter):
        mu = special.expit(design @ beta)
        w = mu * (1.0 - mu)
        hess = design.T @ (design * w[:, None])
        try:
            step = np.linalg.solve(hess, design.T @ (y - mu))
        except np.linalg.LinAlgError:
            break
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            converged = True
            break
    eta = design @ beta
    dev = float(-2.0 * np.sum(y * eta - np.logaddexp(0.0, eta)))
    return beta, dev, converged


def _lowess_r(x: FloatArray, y: FloatArray, f: float = 2.0 / 3.0) -> FloatArray:
    """R's ``lowess(x, y, f, iter=0)`` (the C routine ``clowess``), fitted values in the order of ``x``.

    Ported because val.prob's Emax/Eavg depend on its exact windowing and ``delta`` interpolation.
    """
    order = np.argsort(x, kind="mergesort")
    xs, ys_in = x[order], y[order]
    n = xs.size
    fit = np.empty(n)
    if n < 2:
        fit[:] = ys_in
        out = np.empty(n)
        out[order] = fit
        return out
    delta = 0.01 * (xs[-1] - xs[0])
    ns = max(min(int(f * n + 1e-7), n), 2)
    rng = xs[-1] - xs[0]

    def lowest(xv: float, nleft: int, nright: int) -> float | None:
        h = max(xv - xs[nleft], xs[nright] - xv)
        h9, h1 = 0.999 * h, 0.001 * h
        w = np.zeros(n)
        a = 0.0
        j = nleft
        while j < n:
            r = abs(xs[j] - xv)
            if r <= h9:
                w[j] = 1.0 if r <= h1 else (1.0 - (r / h) ** 3) ** 3
                a += w[j]
            elif xs[j] > xv:
                break
            j += 1
        nrt = j - 1
        if a <= 0.0:
            return None
        sl = slice(nleft, nrt + 1)
        w[sl] /= a
        if h > 0.0:
            mean = float(np.sum(w[sl] * xs[sl]))
            b = xv - mean
            c = float(np.sum(w[sl] * (xs[sl] - mean) ** 2))
            if math.sqrt(c) > 0.001 * rng:
                w[sl] *= b / c * (xs[sl] - mean) + 1.0
        return float(np.sum(w[sl] * ys_in[sl]))

    nleft, nright, last, i = 0, ns - 1, -1, 0
    while True:
        if nright < n - 1 and xs[i] - xs[nleft] > xs[nright + 1] - xs[i]:
            nleft += 1
            nright += 1
            continue
        val = lowest(float(xs[i]), nleft, nright)
        fit[i] = ys_in[i] if val is None else val
        if last < i - 1:  # points skipped within delta are linearly interpolated
            denom = xs[i] - xs[last]
            for k in range(last + 1, i):
                al = (xs[k] - xs[last]) / denom
                fit[k] = al * fit[i] + (1.0 - al) * fit[last]
        last = i
        cut = xs[last] + delta
        i = last + 1
        while i < n:
            if xs[i] > cut:
                break
            if xs[i] == xs[last]:
                fit[i] = fit[last]
                last = i
            i += 1
        i = max(last + 1, i - 1)
        if last >= n - 1:
            break
    out = np.empty(n)
    out[order] = fit
    return out


def calibration_intercept_slope(y: ArrayLike, p: ArrayLike) -> CalibrationFit:
    """Calibration intercept, slope and the other ``rms::val.prob`` statistics.

    Parameters
    ----------
    y : array-like of {0, 1}
    p : array-like of float
        Predicted probabilities, strictly inside (0, 1) (their logit must be finite).

    Returns
    -------
    CalibrationFit

    Raises
    ------
    ValueError
        Invalid input, a class missing, or a probability of exactly 0 or 1.
    """
    yy = _as_binary(y)
    pp = _as_probs(p, yy.size)
    _both_classes(yy)
    if np.any((pp <= 0.0) | (pp >= 1.0)):
        raise ValueError("p must be strictly between 0 and 1 for logistic calibration")
    n = yy.size
    yf = yy.astype(np.float64)
    lp = special.logit(pp)
    coef, dev, converged = _logistic_fit(lp, yf)
    prev = yf.mean()
    dev0 = float(-2.0 * n * (prev * math.log(prev) + (1.0 - prev) * math.log(1.0 - prev)))
    # val.prob scores the predictions as given: its D and R2 use the deviance of p itself, not of
    # the recalibrated fit (checked against rms output: 4.7856 vs 5.3087 for the refit)
    l01 = float(-2.0 * np.sum(yf * lp - np.logaddexp(0.0, lp)))
    lr = dev0 - l01
    r2 = (1.0 - math.exp(-lr / n)) / (1.0 - math.exp(-dev0 / n))
    u_chisq = l01 - dev
    auc, _, _ = _placements(pp[yy == 1], pp[yy == 0])
    smooth = _lowess_r(pp, yf)
    err = np.abs(pp - smooth)
    num = float(np.sum((yf - pp) * (1.0 - 2.0 * pp)))
    den = math.sqrt(float(np.sum((1.0 - 2.0 * pp) ** 2 * pp * (1.0 - pp))))
    sz = num / den
    d = (lr - 1.0) / n
    u = (u_chisq - 2.0) / n
    return CalibrationFit(
        intercept=float(coef[0]), slope=float(coef[1]),
        dxy=2.0 * (auc - 0.5), c_index=auc, r2=r2,
        d=d, d_chisq=lr,
        u=u, u_chisq=u_chisq, u_p_value=float(sps.chi2.sf(u_chisq, 2)), q=d - u,
        brier=float(np.mean((pp - yf) ** 2)),
        emax=float(err.max()), e90=float(np.quantile(err, 0.9)), eavg=float(err.mean()),
        spiegelhalter_z=sz, spiegelhalter_p=float(2.0 * sps.norm.sf(abs(sz))), converged=converged,
    )


@dataclass(frozen=True)
class HosmerLemeshow:
    """Hosmer-Lemeshow goodness-of-fit test (``ResourceSelection::hoslem.test``)."""

    statistic: float
    df: int
    p_value: float
    observed: NDArray[np.float64]  # (groups, 2): [y=0, y=1] counts
    expected: NDArray[np.float64]  # (groups, 2): [sum(1-p), sum(p)]
    breaks: FloatArray


def hosmer_lemeshow(y: ArrayLike, p: ArrayLike, groups: int = 10) -> HosmerLemeshow:
    """Hosmer-Lemeshow test with quantile groups, as ``ResourceSelection::hoslem.test(y, p, g)``.

    Breaks are ``unique(quantile(p, seq(0, 1, 1/g)))`` (R type-7 quantiles); groups are the intervals
    ``(a, b]`` with the first one closed, ``chi2 = sum((O - E)^2 / E)`` over both outcome columns, and
    ``df = groups - 2`` (as hoslem.test, even when tied breaks merge groups). Empty groups are dropped.

    Raises
    ------
    ValueError
        Invalid input or ``groups < 3``.
    """
    if groups < 3:
        raise ValueError(f"groups must be at least 3 (df = groups - 2), got {groups}")
    yy = _as_binary(y)
    pp = _as_probs(p, yy.size)
    breaks = np.unique(np.quantile(pp, np.linspace(0.0, 1.0, groups + 1)))
    if breaks.size < 2:
        raise ValueError("all predicted probabilities are equal; Hosmer-Lemeshow groups cannot be formed")
    # right-closed intervals, first one also closed on the left (R cut(include.lowest=TRUE))
    idx = np.clip(np.searchsorted(breaks, pp, side="left") - 1, 0, breaks.size - 2)
    k = breaks.size - 1
    obs = np.zeros((k, 2))
    exp_ = np.zeros((k, 2))
    np.add.at(obs[:, 1], idx, yy)
    np.add.at(obs[:, 0], idx, 1 - yy)
    np.add.at(exp_[:, 1], idx, pp)
    np.add.at(exp_[:, 0], idx, 1.0 - pp)
    keep = obs.sum(axis=1) > 0
    obs, exp_ = obs[keep], exp_[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(exp_ > 0, (obs - exp_) ** 2 / exp_, np.where(obs > 0, np.inf, 0.0))
    chi2 = float(terms.sum())
    df = groups - 2
    return HosmerLemeshow(
        statistic=chi2, df=df, p_value=float(sps.chi2.sf(chi2, df)), observed=obs, expected=exp_,
        breaks=breaks,
    )


@dataclass(frozen=True)
class CalibrationInTheLarge:
    """Calibration-in-the-large: the intercept ``a`` of ``logit P(y=1) = a + 1 * logit(p)``.

    The slope is fixed at 1 (``logit(p)`` enters as an offset), so ``a`` measures only whether the
    predictions are too high (``a < 0``) or too low (``a > 0``) on average (Steyerberg 2019, *Clinical
    Prediction Models*, 2nd ed., section 15.3; Van Calster et al. 2016, J Clin Epidemiol 74:167). It is
    not the intercept of the joint fit with the slope, which :func:`calibration_intercept_slope` gives.
    ``se`` is the inverse square root of the Fisher information, the CI a Wald interval.
    """

    intercept: float
    se: float
    ci_lower: float
    ci_upper: float
    observed_rate: float
    mean_predicted: float
    n: int
    converged: bool
    alpha: float


def calibration_in_the_large(y: ArrayLike, p: ArrayLike, alpha: float = 0.05) -> CalibrationInTheLarge:
    """Fit ``glm(y ~ 1, offset = qlogis(p), family = binomial)``: the root of its score equation (Brent).

    The estimate solves ``sum(y) = sum(expit(logit(p) + a))``. With all ``p`` equal to ``p0`` it is
    ``logit(mean(y)) - logit(p0)``.

    Raises
    ------
    ValueError
        Invalid input, a class missing (the intercept is infinite), or a probability of exactly 0 or 1.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    yy = _as_binary(y)
    pp = _as_probs(p, yy.size)
    _both_classes(yy)
    if np.any((pp <= 0.0) | (pp >= 1.0)):
        raise ValueError("p must be strictly between 0 and 1 for logistic calibration")
    yf = yy.astype(np.float64)
    lp = special.logit(pp)
    events = float(yf.sum())

    def score(a: float) -> float:  # strictly increasing in a, from -events to n - events
        return float(np.sum(special.expit(lp + a))) - events

    lo, hi = -1.0, 1.0
    while score(lo) > 0.0 and lo > -1e4:
        lo *= 2.0
    while score(hi) < 0.0 and hi < 1e4:
        hi *= 2.0
    converged = score(lo) <= 0.0 <= score(hi)
    a = float(optimize.brentq(score, lo, hi, xtol=1e-14, rtol=1e-15, maxiter=500)) if converged else math.nan
    mu = special.expit(lp + a)
    info = float(np.sum(mu * (1.0 - mu)))
    se = 1.0 / math.sqrt(info) if info > 0.0 else math.nan
    z = float(sps.norm.isf(alpha / 2.0))
    return CalibrationInTheLarge(
        intercept=a, se=se, ci_lower=a - z * se, ci_upper=a + z * se, observed_rate=float(yf.mean()),
        mean_predicted=float(pp.mean()), n=int(yy.size), converged=converged, alpha=float(alpha),
    )


@dataclass(frozen=True)
class ExpectedCalibrationError:
    """ECE over equal-width (or quantile) bins, with every non-empty bin's count.

    ``ece = sum_b (n_b / n) * |observed_b - predicted_b|`` (Naeini, Cooper & Hauskrecht 2015, AAAI;
    Guo et al. 2017, ICML). Bins are those of :func:`calibration_curve`; empty bins are dropped.
    """

    ece: float
    counts: NDArray[np.int64]
    observed: FloatArray
    predicted: FloatArray
    n: int
    n_bins: int
    strategy: str


def expected_calibration_error(
    y: ArrayLike, p: ArrayLike, n_bins: int = 10, strategy: Literal["uniform", "quantile"] = "uniform"
) -> ExpectedCalibrationError:
    """Expected calibration error with the bin counts it rests on.

    Raises
    ------
    ValueError
        Invalid input, ``n_bins < 1`` or an unknown strategy.
    """
    cc = calibration_curve(y, p, n_bins=n_bins, strategy=strategy)
    n = int(cc.counts.sum())
    ece = float(np.sum(cc.counts / n * np.abs(cc.prob_true - cc.prob_pred)))
    return ExpectedCalibrationError(ece=ece, counts=cc.counts, observed=cc.prob_true, predicted=cc.prob_pred,
                                    n=n, n_bins=int(n_bins), strategy=strategy)


#: Hosmer-Lemeshow is reported only from this many lesions and this many of each class; below, the
#: groups hold too few events for the chi-square approximation and the test has almost no power
#: (Hosmer, Lemeshow & Sturdivant 2013, *Applied Logistic Regression*, 3rd ed., section 5.2.2;
#: Paul, Pennell & Lemeshow 2013, Stat Med 32:67).
HOSMER_LEMESHOW_MIN_N = 100
HOSMER_LEMESHOW_MIN_EVENTS = 20


def hosmer_lemeshow_not_applicable(y: ArrayLike) -> str | None:
    """Why Hosmer-Lemeshow is not reported for this sample, in plain words; None when it is.

    Raises
    ------
    ValueError
        Invalid ``y``.
    """
    yy = _as_binary(y)
    n, events = int(yy.size), int(yy.sum())
    if n < HOSMER_LEMESHOW_MIN_N:
        return (f"not reported: {n} lesions, fewer than the {HOSMER_LEMESHOW_MIN_N} the test needs "
                "(too few per group for its chi-square approximation)")
    if min(events, n - events) < HOSMER_LEMESHOW_MIN_EVENTS:
        return (f"not reported: {min(events, n - events)} lesions of the smaller class, fewer than "
                f"{HOSMER_LEMESHOW_MIN_EVENTS}")
    return None
