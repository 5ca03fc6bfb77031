"""Decision-curve analysis: net benefit of the model, treat-all and treat-none."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from stats._validate import FloatArray, _as_binary, _as_probs

__all__ = ["StrategyNetBenefit", "DecisionCurve", "net_benefit"]


@dataclass(frozen=True)
class StrategyNetBenefit:
    """Net benefit of one strategy over the threshold grid (arrays aligned with the thresholds)."""

    net_benefit: FloatArray
    tp_rate: FloatArray
    fp_rate: FloatArray
    test_pos_rate: FloatArray
    net_intervention_avoided: FloatArray
    tp: NDArray[np.int64]
    fp: NDArray[np.int64]


@dataclass(frozen=True)
class DecisionCurve:
    """Decision-curve analysis: the model, treat-all and treat-none at each threshold probability."""

    thresholds: FloatArray
    n: int
    events: int
    prevalence: float
    prevalence_source: str
    model: StrategyNetBenefit
    treat_all: StrategyNetBenefit
    treat_none: StrategyNetBenefit


def net_benefit(y: ArrayLike, p: ArrayLike, thresholds: ArrayLike, prevalence: float | None = None) -> DecisionCurve:
    """Decision-curve net benefit (Vickers & Elkin 2006).

    ``NB(pt) = TP/n - FP/n * pt/(1-pt)`` with a positive test iff ``p >= pt``; treat-all
    ``NB = prev - (1 - prev) * pt/(1-pt)``; treat-none ``NB = 0``; net interventions avoided per patient
    ``NIA = (NB_strategy - NB_all) / (pt/(1-pt))``.

    With ``prevalence`` given (a deployment prevalence ``pi`` differing from the sample's, e.g. an
    enriched test set), ``TP/n`` and ``FP/n`` are replaced by ``Se * pi`` and ``(1 - Sp) * (1 - pi)``
    and treat-all by ``pi - (1 - pi) * pt/(1-pt)``, as R ``dcurves::dca(prevalence = )`` does for
    case-control samples (Pfeiffer & Gail 2020, Biom J 62:764). With ``pi = events/n`` this equals the
    plain formula. ``tp``/``fp`` stay the sample counts.

    Raises
    ------
    ValueError
        Invalid ``y``/``p``, thresholds outside (0, 1), a prevalence outside (0, 1), or a prevalence
        with only one class in ``y`` (sensitivity or specificity undefined).
    """
    yy = _as_binary(y)
    pp = _as_probs(p, yy.size)
    pt = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if pt.ndim != 1 or pt.size == 0:
        raise ValueError("thresholds must be a non-empty 1-D sequence")
    if np.any(~np.isfinite(pt) | (pt <= 0.0) | (pt >= 1.0)):
        raise ValueError("thresholds must lie strictly between 0 and 1")
    n = yy.size
    events = int(yy.sum())
    odds = pt / (1.0 - pt)
    pos = pp[None, :] >= pt[:, None]
    tp = np.sum(pos & (yy[None, :] == 1), axis=1).astype(np.int64)
    fp = np.sum(pos & (yy[None, :] == 0), axis=1).astype(np.int64)
    if prevalence is None:
        prev, source = events / n, "sample"
        tp_rate, fp_rate = tp / n, fp / n
    else:
        if not 0.0 < prevalence < 1.0:
            raise ValueError(f"prevalence must lie strictly between 0 and 1, got {prevalence}")
        if events == 0 or events == n:
            raise ValueError("a stated prevalence needs both classes in y (sensitivity and specificity)")
        prev, source = float(prevalence), "stated"
        tp_rate = tp / events * prev
        fp_rate = fp / (n - events) * (1.0 - prev)
    nb_model = tp_rate - fp_rate * odds
    nb_all = prev - (1.0 - prev) * odds
    ones = np.ones_like(pt)
    zeros = np.zeros_like(pt)

    def strategy(nb: FloatArray, tpr: FloatArray, fpr: FloatArray, tpos: FloatArray,
                 tpc: NDArray[np.int64], fpc: NDArray[np.int64]) -> StrategyNetBenefit:
        return StrategyNetBenefit(
            net_benefit=nb, tp_rate=tpr, fp_rate=fpr, test_pos_rate=tpos,
            net_intervention_avoided=(nb - nb_all) / odds, tp=tpc, fp=fpc,
        )

    return DecisionCurve(
        thresholds=pt, n=n, events=events, prevalence=prev, prevalence_source=source,
        model=strategy(nb_model, tp_rate, fp_rate, tp_rate + fp_rate, tp, fp),
        treat_all=strategy(nb_all, prev * ones, (1.0 - prev) * ones, ones,
                           np.full(pt.size, events, np.int64), np.full(pt.size, n - events, np.int64)),
        treat_none=strategy(zeros.copy(), zeros.copy(), zeros.copy(), zeros.copy(),
                            np.zeros(pt.size, np.int64), np.zeros(pt.size, np.int64)),
    )
