"""Compute the report's tables and curve data as one JSON-ready dictionary.

The HTML page and the PNGs are drawn from this dictionary only, so every number shown on the page is
also in ``report.json``. Float NaN never appears: undefined values are ``None`` with a ``note``.

Tables (numbering follows paper 000/001):

* ``table2``: per model and split: n, AUC (DeLong 95% CI), accuracy, sensitivity, specificity, PPV, NPV
  (each with a binomial CI) at the model's threshold.
* ``table3``: paired DeLong tests between every pair of models on the test split (same lesions).
* ``table4``: calibration per model and split: Brier score, calibration intercept and slope
  (rms ``val.prob``), Spiegelhalter z, Hosmer-Lemeshow.
* ``external``: per model, unpaired DeLong internal test vs external validation (pROC semantics).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

import stats
from models.report.inputs import BASELINE_CLASSIFIER, EvaluationInputs, ModelPredictions

__all__ = ["SCHEMA", "DECISION_GRID", "compute_report_data", "resolve_thresholds", "json_clean"]

SCHEMA = "eusdx-evaluation-report/1"
DECISION_GRID: tuple[float, ...] = tuple(round(0.01 * i, 2) for i in range(1, 100))


def json_clean(obj: Any) -> Any:
    """Turn numpy scalars/arrays into Python types and NaN/inf into None, recursively."""
    if isinstance(obj, dict):
        return {str(k): json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_clean(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def resolve_thresholds(inputs: EvaluationInputs) -> dict[str, dict[str, Any]]:
    """The threshold each model is evaluated at, and where it came from.

    ``thresholds.json`` wins; otherwise Youden's J on the model's train (out-of-fold) rows; otherwise 0.5.
    """
    out: dict[str, dict[str, Any]] = {}
    for key in inputs.models:
        if key in inputs.thresholds:
            out[key] = {"value": inputs.thresholds[key], "source": "thresholds.json"}
            continue
        train = inputs.data[key].get("train")
        if train is not None:
            try:
                yt = stats.youden_threshold(train.y, train.prob)
                out[key] = {"value": yt.threshold, "source": "youden-on-train (computed by the report)"}
                continue
            except ValueError:
                pass
        out[key] = {"value": 0.5, "source": "default 0.5 (no threshold and no usable train rows)"}
    return out


def _prop(ci: stats.ProportionCI) -> dict[str, Any]:
    return {"estimate": ci.estimate, "lower": ci.lower, "upper": ci.upper, "x": ci.x, "n": ci.n}


def _table2_row(key: str, split: str, mp: ModelPredictions, thr: float, ci_method: str, alpha: float) -> dict[str, Any]:
    clf, mod = key.split("/", 1)
    n_pos = int(mp.y.sum())
    row: dict[str, Any] = {
        "model": key, "classifier": clf, "modality": mod, "split": split,
        "n": int(mp.y.size), "n_gist": n_pos, "n_leiomyoma": int(mp.y.size - n_pos), "threshold": thr,
    }
    try:
        r = stats.roc_auc_ci(mp.y, mp.prob, alpha=alpha)
        row["auc"] = {"estimate": r.auc, "lower": r.ci_lower, "upper": r.ci_upper, "variance": r.variance}
    except ValueError as exc:
        row["auc"] = None
        row["auc_note"] = str(exc)
    dm = stats.diagnostic_metrics(mp.y, mp.prob, thr, ci_method=ci_method, alpha=alpha)
    row["counts"] = {"tp": dm.tp, "fp": dm.fp, "tn": dm.tn, "fn": dm.fn}
    for name in ("accuracy", "sensitivity", "specificity", "ppv", "npv"):
        row[name] = _prop(getattr(dm, name))
    return row


def _table4_row(key: str, split: str, mp: ModelPredictions) -> dict[str, Any]:
    row: dict[str, Any] = {"model": key, "split": split, "n": int(mp.y.size), "brier": stats.brier_score(mp.y, mp.prob)}
    notes: list[str] = []
    try:
        fit = stats.calibration_intercept_slope(mp.y, mp.prob)
        row.update(
            calibration_intercept=fit.intercept, calibration_slope=fit.slope,
            spiegelhalter_z=fit.spiegelhalter_z, spiegelhalter_p=fit.spiegelhalter_p,
            emax=fit.emax, eavg=fit.eavg,
        )
        if not fit.converged:
            notes.append("logistic recalibration did not converge (separation?)")
    except ValueError as exc:
        row.update(calibration_intercept=None, calibration_slope=None, spiegelhalter_z=None, spiegelhalter_p=None,
                   emax=None, eavg=None)
        notes.append(f"calibration fit: {exc}")
    groups = 10 if mp.y.size >= 50 else 5
    try:
        hl = stats.hosmer_lemeshow(mp.y, mp.prob, groups=groups)
        row["hosmer_lemeshow"] = {"statistic": hl.statistic, "df": hl.df, "p_value": hl.p_value, "groups": groups}
    except ValueError as exc:
        row["hosmer_lemeshow"] = None
        notes.append(f"Hosmer-Lemeshow: {exc}")
    if notes:
        row["note"] = "; ".join(notes)
    return row


def _aligned(a: ModelPredictions, b: ModelPredictions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y, prob_a, prob_b on the lesions both models scored (paired tests need the same samples)."""
    ia = {les: i for i, les in enumerate(a.lesion_id)}
    ib = {les: i for i, les in enumerate(b.lesion_id)}
    common = sorted(set(ia) & set(ib))
    sel_a = np.array([ia[c] for c in common], dtype=np.int64)
    sel_b = np.array([ib[c] for c in common], dtype=np.int64)
    return a.y[sel_a], a.prob[sel_a], b.prob[sel_b]


def _table3(inputs: EvaluationInputs, alpha: float) -> dict[str, Any]:
    keys = [k for k in inputs.models if "test" in inputs.data[k]]
    pairs: list[dict[str, Any]] = []
    for ka, kb in itertools.combinations(keys, 2):
        y, pa, pb = _aligned(inputs.data[ka]["test"], inputs.data[kb]["test"])
        entry: dict[str, Any] = {"a": ka, "b": kb, "n": int(y.size)}
        try:
            r = stats.delong_paired(y, pa, pb, alpha=alpha)
            entry.update(auc_a=r.auc_a, auc_b=r.auc_b, difference=r.difference, z=r.z, p_value=r.p_value,
                         ci_lower=r.ci_lower, ci_upper=r.ci_upper)
        except ValueError as exc:
            entry.update(auc_a=None, auc_b=None, difference=None, z=None, p_value=None, ci_lower=None,
                         ci_upper=None, note=str(exc))
        pairs.append(entry)
    return {"split": "test", "models": keys, "pairs": pairs}


def _external(inputs: EvaluationInputs) -> dict[str, Any] | None:
    if "external" not in inputs.splits:
        return None
    rows: list[dict[str, Any]] = []
    for key in inputs.models:
        per = inputs.data[key]
        if "test" not in per or "external" not in per:
            continue
        t, e = per["test"], per["external"]
        entry: dict[str, Any] = {"model": key, "n_test": int(t.y.size), "n_external": int(e.y.size)}
        try:
            r = stats.delong_unpaired(t.y, t.prob, e.y, e.prob)
            entry.update(auc_test=r.auc_a, auc_external=r.auc_b, difference=r.difference, d=r.d, df=r.df,
                         p_value=r.p_value)
        except ValueError as exc:
            entry.update(auc_test=None, auc_external=None, difference=None, d=None, df=None, p_value=None,
                         note=str(exc))
        rows.append(entry)
    return {"comparison": "internal test vs external validation (unpaired DeLong, pROC D and df)", "rows": rows}


def _curves(inputs: EvaluationInputs) -> dict[str, Any]:
    roc: dict[str, dict[str, Any]] = {}
    cal: dict[str, dict[str, Any]] = {}
    dec: dict[str, dict[str, Any]] = {}
    for split in inputs.splits:
        roc[split], cal[split] = {}, {}
        dec_models: dict[str, Any] = {}
        treat_all: list[float] | None = None
        for key in inputs.models:
            mp = inputs.data[key].get(split)
            if mp is None:
                continue
            try:
                c = stats.roc_curve(mp.y, mp.prob)
                roc[split][key] = {"fpr": c.fpr, "tpr": c.sensitivity}
            except ValueError:
                pass
            n_bins = min(10, max(3, mp.y.size // 10))
            cc = stats.calibration_curve(mp.y, mp.prob, n_bins=n_bins, strategy="quantile")
            cal[split][key] = {"prob_pred": cc.prob_pred, "prob_true": cc.prob_true, "counts": cc.counts,
                               "strategy": "quantile", "n_bins": n_bins}
            dc = stats.net_benefit(mp.y, mp.prob, DECISION_GRID)
            dec_models[key] = {"net_benefit": dc.model.net_benefit,
                               "net_intervention_avoided": dc.model.net_intervention_avoided}
            if treat_all is None:
                treat_all = dc.treat_all.net_benefit.tolist()
        dec[split] = {"thresholds": list(DECISION_GRID), "treat_all": treat_all, "treat_none": 0.0,
                      "models": dec_models}
    return {"roc": roc, "calibration": cal, "decision": dec}


def compute_report_data(inputs: EvaluationInputs, ci_method: str = "wilson", alpha: float = 0.05) -> dict[str, Any]:
    """Compute every table and curve of the report.

    Parameters
    ----------
    inputs : EvaluationInputs
    ci_method : str
        Binomial CI for accuracy/sensitivity/specificity/PPV/NPV (see :func:`stats.proportion_ci`).
    alpha : float
        1 - confidence level for all intervals.

    Returns
    -------
    dict
        JSON-ready (after :func:`json_clean`); keys ``schema, synthetic, models, splits, thresholds,
        table2, table3, table4, external, curves, counts``.

    Raises
    ------
    ValueError
        Unknown ``ci_method``.
    """
    if ci_method not in stats.PROPORTION_METHODS:
        raise ValueError(f"unknown CI method {ci_method!r}; use one of {', '.join(stats.PROPORTION_METHODS)}")
    thresholds = resolve_thresholds(inputs)
    t2: list[dict[str, Any]] = []
    t4: list[dict[str, Any]] = []
    for split in inputs.splits:
        for key in inputs.models:
            mp = inputs.data[key].get(split)
            if mp is None:
                continue
            t2.append(_table2_row(key, split, mp, thresholds[key]["value"], ci_method, alpha))
            t4.append(_table4_row(key, split, mp))
    counts: dict[str, Any] = {}
    for split in inputs.splits:
        lesions: dict[str, int] = {}
        patients: set[str] = set()
        for key in inputs.models:
            mp = inputs.data[key].get(split)
            if mp is not None:
                lesions.update(zip(mp.lesion_id, mp.y.tolist()))
                patients.update(mp.patient_id)
        counts[split] = {"lesions": len(lesions), "gist": sum(lesions.values()),
                         "leiomyoma": len(lesions) - sum(lesions.values()), "patients": len(patients)}
    pats = {s: {p for k in inputs.models if s in inputs.data[k] for p in inputs.data[k][s].patient_id}
            for s in ("train", "test")}
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "synthetic": inputs.synthetic,
        "models": inputs.models,
        "splits": inputs.splits,
        "counts": counts,
        "patients_in_train_and_test": len(pats["train"] & pats["test"]),
        "provenance": dict(inputs.provenance),
        "baseline_models": [k for k in inputs.models if k.split("/", 1)[0] == BASELINE_CLASSIFIER],
        "thresholds": thresholds,
        "confidence_level": 1.0 - alpha,
        "table2": {"ci_method": ci_method, "auc_ci": "DeLong (pROC), clipped to [0, 1]", "rows": t2},
        "table3": _table3(inputs, alpha),
        "table4": {"rows": t4},
        "external": _external(inputs),
        "curves": _curves(inputs),
    }
    return data
