"""Compute the report's tables and curve data as one JSON-ready dictionary.

The HTML page and the PNGs are drawn from this dictionary only, so every number shown on the page is
also in ``report.json``. Float NaN never appears: undefined values are ``None`` with a ``note``.

Tables (numbering follows paper 000/001):

* ``table2``: per model and split: n, AUC (DeLong 95% CI), accuracy, sensitivity, specificity, PPV, NPV
  (each with a binomial CI) at the model's threshold; ``bootstrap``: patient-clustered percentile CIs of
  the AUC and every threshold metric, and PPV/NPV at the stated deployment prevalence.
* ``table3`` (test) and ``table3_external``: paired DeLong tests between every pair of models on the same
  lesions, with Holm-adjusted p values within each split's family of tests.
* ``table4``: calibration per model and split: Brier score, calibration-in-the-large (slope fixed at 1),
  calibration slope (rms ``val.prob``), ECE with its bin counts, Spiegelhalter z, Hosmer-Lemeshow only
  from ``stats.HOSMER_LEMESHOW_MIN_N`` lesions (else the reason).
* ``external``: per model, AUCs with CIs and the unpaired DeLong test, internal test vs external.

A value that cannot be computed is None with a ``*_note`` in plain words (never an exception's text).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

import stats
from models.report.cohort import cohort_sections
from models.report.inputs import BASELINE_CLASSIFIER, EvaluationInputs, ModelPredictions

__all__ = ["SCHEMA", "DECISION_GRID", "DEFAULT_PREVALENCE", "compute_report_data", "resolve_thresholds",
           "json_clean", "why_not_auc", "why_not_calibration", "aligned"]

SCHEMA = "eusdx-evaluation-report/1"
#: Deployment prevalence of GIST among the lesions the tool would see, when none is stated (an
#: assumption the report prints; set it with ``eusdx evaluate --prevalence``).
DEFAULT_PREVALENCE = 0.5
ECE_BINS = 10
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


def why_not_auc(y: np.ndarray) -> str | None:
    """Why no AUC with a DeLong CI can be given for these labels, in plain words; None when it can."""
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    if n_pos == 0 or n_neg == 0:
        return f"not computed: this set has no {'GIST' if n_pos == 0 else 'leiomyoma'} lesion"
    if n_pos < 2 or n_neg < 2:
        return (f"not computed: DeLong's variance needs at least 2 lesions of each class "
                f"(here {n_pos} GIST, {n_neg} leiomyoma)")
    return None


def why_not_calibration(y: np.ndarray, p: np.ndarray) -> str | None:
    """Why no logistic calibration (intercept, slope) can be fitted, in plain words; None when it can."""
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        return f"not computed: this set has no {'GIST' if n_pos == 0 else 'leiomyoma'} lesion"
    certain = int(np.sum((p <= 0.0) | (p >= 1.0)))
    if certain:
        return (f"not computed: {certain} predicted probabilit{'y is' if certain == 1 else 'ies are'} exactly 0 "
                "or 1, whose logit is infinite, so no logistic recalibration can be fitted")
    return None


def _interval(iv: stats.BootstrapInterval | None) -> dict[str, Any] | None:
    if iv is None:
        return None
    return {"estimate": iv.estimate, "lower": iv.lower, "upper": iv.upper, "n_valid": iv.n_valid}


def _bootstrap(mp: ModelPredictions, thr: float, alpha: float, prevalence: float, n_boot: int,
               seed: int) -> dict[str, Any]:
    reason = why_not_auc(mp.y)
    if reason is not None:
        return {"available": False, "reason": reason.replace("DeLong's variance", "the bootstrap")}
    clusters = np.asarray([p or les for p, les in zip(mp.patient_id, mp.lesion_id)], dtype=object)
    bs = stats.cluster_bootstrap(mp.y, mp.prob, clusters, thr, n_boot=n_boot, seed=seed, alpha=alpha,
                                 prevalence=prevalence)
    out: dict[str, Any] = {"available": True, "n_boot": bs.n_boot, "seed": bs.seed, "clusters": bs.n_clusters,
                           "cluster_unit": "patient", "interval": "percentile"}
    for name in ("auc", "sensitivity", "specificity", "ppv", "npv", "accuracy", "ppv_at_prevalence",
                 "npv_at_prevalence"):
        out[name] = _interval(getattr(bs, name))
    return out


def _table2_row(key: str, split: str, mp: ModelPredictions, thr: float, ci_method: str, alpha: float,
                prevalence: float, n_boot: int, seed: int) -> dict[str, Any]:
    clf, mod = key.split("/", 1)
    n_pos = int(mp.y.sum())
    row: dict[str, Any] = {
        "model": key, "classifier": clf, "modality": mod, "split": split,
        "n": int(mp.y.size), "n_gist": n_pos, "n_leiomyoma": int(mp.y.size - n_pos), "threshold": thr,
        "patients": len(set(mp.patient_id)),
    }
    reason = why_not_auc(mp.y)
    if reason is None:
        r = stats.roc_auc_ci(mp.y, mp.prob, alpha=alpha)
        row["auc"] = {"estimate": r.auc, "lower": r.ci_lower, "upper": r.ci_upper, "variance": r.variance}
    else:
        row["auc"] = None
        row["auc_note"] = reason
    dm = stats.diagnostic_metrics(mp.y, mp.prob, thr, ci_method=ci_method, alpha=alpha)
    row["counts"] = {"tp": dm.tp, "fp": dm.fp, "tn": dm.tn, "fn": dm.fn}
    for name in ("accuracy", "sensitivity", "specificity", "ppv", "npv"):
        row[name] = _prop(getattr(dm, name))
    row["bootstrap"] = _bootstrap(mp, thr, alpha, prevalence, n_boot, seed)
    return row


def _table4_row(key: str, split: str, mp: ModelPredictions, alpha: float) -> dict[str, Any]:
    row: dict[str, Any] = {"model": key, "split": split, "n": int(mp.y.size), "brier": stats.brier_score(mp.y, mp.prob)}
    reason = why_not_calibration(mp.y, mp.prob)
    empty = dict(calibration_in_the_large=None, calibration_slope=None, spiegelhalter_z=None,
                 spiegelhalter_p=None, emax=None, eavg=None)
    if reason is not None:
        row.update(empty, calibration_note=reason)
    else:
        citl = stats.calibration_in_the_large(mp.y, mp.prob, alpha=alpha)
        fit = stats.calibration_intercept_slope(mp.y, mp.prob)
        row.update(
            calibration_in_the_large={"estimate": citl.intercept, "lower": citl.ci_lower, "upper": citl.ci_upper},
            calibration_slope=fit.slope if fit.converged else None,
            spiegelhalter_z=fit.spiegelhalter_z, spiegelhalter_p=fit.spiegelhalter_p, emax=fit.emax, eavg=fit.eavg,
        )
        if not fit.converged:
            row["calibration_note"] = ("slope not shown: the logistic fit did not converge (the predictions "
                                       "separate the classes perfectly, so the slope is unbounded)")
    ece = stats.expected_calibration_error(mp.y, mp.prob, n_bins=ECE_BINS, strategy="uniform")
    row["ece"] = {"estimate": ece.ece, "n_bins": ece.n_bins, "strategy": "uniform width",
                  "bin_counts": ece.counts.tolist()}
    hl_reason = stats.hosmer_lemeshow_not_applicable(mp.y)
    if hl_reason is None and reason is None:
        hl = stats.hosmer_lemeshow(mp.y, mp.prob, groups=10)
        row["hosmer_lemeshow"] = {"statistic": hl.statistic, "df": hl.df, "p_value": hl.p_value, "groups": 10}
    else:
        row["hosmer_lemeshow"] = None
        row["hosmer_lemeshow_note"] = hl_reason or reason
    return row


def aligned(a: ModelPredictions, b: ModelPredictions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y, prob_a, prob_b on the lesions both models scored (paired tests need the same samples)."""
    ia = {les: i for i, les in enumerate(a.lesion_id)}
    ib = {les: i for i, les in enumerate(b.lesion_id)}
    common = sorted(set(ia) & set(ib))
    sel_a = np.array([ia[c] for c in common], dtype=np.int64)
    sel_b = np.array([ib[c] for c in common], dtype=np.int64)
    return a.y[sel_a], a.prob[sel_a], b.prob[sel_b]


def _table3(inputs: EvaluationInputs, alpha: float, split: str = "test") -> dict[str, Any]:
    """Paired DeLong tests of every pair of models on ``split``, Holm-adjusted within the split."""
    keys = [k for k in inputs.models if split in inputs.data[k]]
    pairs: list[dict[str, Any]] = []
    for ka, kb in itertools.combinations(keys, 2):
        y, pa, pb = aligned(inputs.data[ka][split], inputs.data[kb][split])
        entry: dict[str, Any] = {"a": ka, "b": kb, "n": int(y.size)}
        reason = why_not_auc(y) if y.size else "not computed: the two models scored no lesion in common"
        if reason is None:
            r = stats.delong_paired(y, pa, pb, alpha=alpha)
            entry.update(auc_a=r.auc_a, auc_b=r.auc_b, difference=r.difference, z=r.z, p_value=r.p_value,
                         ci_lower=r.ci_lower, ci_upper=r.ci_upper)
        else:
            entry.update(auc_a=None, auc_b=None, difference=None, z=None, p_value=None, ci_lower=None,
                         ci_upper=None, note=reason)
        pairs.append(entry)
    raw = np.array([math.nan if e["p_value"] is None else e["p_value"] for e in pairs], dtype=np.float64)
    holm = stats.holm_adjust(raw) if raw.size else raw
    for e, h in zip(pairs, holm):
        e["p_holm"] = None if not math.isfinite(float(h)) else float(h)
    return {"split": split, "models": keys, "pairs": pairs, "tests": int(np.isfinite(raw).sum()),
            "adjustment": "Holm (1979) step-down over all pairs of this split"}


def _external(inputs: EvaluationInputs, alpha: float) -> dict[str, Any] | None:
    if "external" not in inputs.splits:
        return None
    rows: list[dict[str, Any]] = []
    for key in inputs.models:
        per = inputs.data[key]
        if "test" not in per or "external" not in per:
            continue
        t, e = per["test"], per["external"]
        entry: dict[str, Any] = {"model": key, "n_test": int(t.y.size), "n_external": int(e.y.size)}
        reason = why_not_auc(t.y) or why_not_auc(e.y)
        if reason is None:
            r = stats.delong_unpaired(t.y, t.prob, e.y, e.prob)
            ct, ce = stats.roc_auc_ci(t.y, t.prob, alpha=alpha), stats.roc_auc_ci(e.y, e.prob, alpha=alpha)
            entry.update(auc_test=r.auc_a, auc_external=r.auc_b, difference=r.difference, d=r.d, df=r.df,
                         p_value=r.p_value, auc_test_ci=[ct.ci_lower, ct.ci_upper],
                         auc_external_ci=[ce.ci_lower, ce.ci_upper])
        else:
            entry.update(auc_test=None, auc_external=None, difference=None, d=None, df=None, p_value=None,
                         auc_test_ci=None, auc_external_ci=None, note=reason)
        rows.append(entry)
    return {"comparison": "internal test vs external validation (unpaired DeLong, pROC D and df)", "rows": rows}


def _split_labels(inputs: EvaluationInputs, split: str) -> np.ndarray:
    labels: dict[str, int] = {}
    for key in inputs.models:
        mp = inputs.data[key].get(split)
        if mp is not None:
            labels.update(zip(mp.lesion_id, mp.y.tolist()))
    return np.array(list(labels.values()), dtype=np.int64)


def _curves(inputs: EvaluationInputs, prevalence: float) -> dict[str, Any]:
    roc: dict[str, dict[str, Any]] = {}
    cal: dict[str, dict[str, Any]] = {}
    dec: dict[str, dict[str, Any]] = {}
    dec_prev: dict[str, dict[str, Any]] = {}
    for split in inputs.splits:
        roc[split], cal[split] = {}, {}
        dec_models: dict[str, Any] = {}
        prev_models: dict[str, Any] = {}
        for key in inputs.models:
            mp = inputs.data[key].get(split)
            if mp is None:
                continue
            if 0 < mp.y.sum() < mp.y.size:
                c = stats.roc_curve(mp.y, mp.prob)
                roc[split][key] = {"fpr": c.fpr, "tpr": c.sensitivity}
            n_bins = min(10, max(3, mp.y.size // 10))
            cc = stats.calibration_curve(mp.y, mp.prob, n_bins=n_bins, strategy="quantile")
            cal[split][key] = {"prob_pred": cc.prob_pred, "prob_true": cc.prob_true, "counts": cc.counts,
                               "strategy": "quantile", "n_bins": n_bins}
            dc = stats.net_benefit(mp.y, mp.prob, DECISION_GRID)
            # treat-all of the lesions this model scored (on train, end-to-end nets score only some)
            dec_models[key] = {"net_benefit": dc.model.net_benefit,
                               "net_intervention_avoided": dc.model.net_intervention_avoided,
                               "treat_all": dc.treat_all.net_benefit, "n": dc.n, "events": dc.events}
            if 0 < mp.y.sum() < mp.y.size:
                dp = stats.net_benefit(mp.y, mp.prob, DECISION_GRID, prevalence=prevalence)
                prev_models[key] = {"net_benefit": dp.model.net_benefit}
        ys = _split_labels(inputs, split)
        treat_all = None
        if ys.size:
            pr = ys.mean()
            odds = np.asarray(DECISION_GRID) / (1.0 - np.asarray(DECISION_GRID))
            treat_all = (pr - (1.0 - pr) * odds).tolist()
        dec[split] = {"thresholds": list(DECISION_GRID), "treat_all": treat_all, "treat_none": 0.0,
                      "treat_all_lesions": int(ys.size), "models": dec_models}
        odds = np.asarray(DECISION_GRID) / (1.0 - np.asarray(DECISION_GRID))
        dec_prev[split] = {"thresholds": list(DECISION_GRID), "prevalence": prevalence,
                           "treat_all": (prevalence - (1.0 - prevalence) * odds).tolist(), "treat_none": 0.0,
                           "models": prev_models}
    return {"roc": roc, "calibration": cal, "decision": dec, "decision_at_prevalence": dec_prev}


def compute_report_data(inputs: EvaluationInputs, ci_method: str = "wilson", alpha: float = 0.05, *,
                        prevalence: float | None = None, n_boot: int = 2000, seed: int = 20160) -> dict[str, Any]:
    """Compute every table and curve of the report.

    Parameters
    ----------
    inputs : EvaluationInputs
    ci_method : str
        Binomial CI for accuracy/sensitivity/specificity/PPV/NPV (see :func:`stats.proportion_ci`).
    alpha : float
        1 - confidence level for all intervals.
    prevalence : float, optional
        Deployment prevalence of GIST for Bayes' PPV/NPV and the second set of decision curves; default
        :data:`DEFAULT_PREVALENCE`, printed as an assumption.
    n_boot, seed : int
        Patient-clustered bootstrap replicates and seed.

    Returns
    -------
    dict
        JSON-ready (after :func:`json_clean`); keys ``schema, synthetic, models, splits, thresholds,
        table2, table3, table4, external, curves, counts``.

    Raises
    ------
    ValueError
        Unknown ``ci_method``, a prevalence outside (0, 1) or ``n_boot < 10``.
    """
    if ci_method not in stats.PROPORTION_METHODS:
        raise ValueError(f"unknown CI method {ci_method!r}; use one of {', '.join(stats.PROPORTION_METHODS)}")
    stated = prevalence is not None
    prev = DEFAULT_PREVALENCE if prevalence is None else float(prevalence)
    if not 0.0 < prev < 1.0:
        raise ValueError(f"deployment prevalence must lie strictly between 0 and 1, got {prev}")
    if n_boot < 10:
        raise ValueError(f"n_boot must be at least 10, got {n_boot}")
    thresholds = resolve_thresholds(inputs)
    t2: list[dict[str, Any]] = []
    t4: list[dict[str, Any]] = []
    for split in inputs.splits:
        for key in inputs.models:
            mp = inputs.data[key].get(split)
            if mp is None:
                continue
            t2.append(_table2_row(key, split, mp, thresholds[key]["value"], ci_method, alpha, prev, n_boot, seed))
            t4.append(_table4_row(key, split, mp, alpha))
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
        "deployment_prevalence": {"value": prev, "source": "stated with --prevalence" if stated else
                                  f"assumed {DEFAULT_PREVALENCE} (no --prevalence given)"},
        "bootstrap": {"n_boot": n_boot, "seed": seed, "unit": "patient", "interval": "percentile"},
        "table2": {"ci_method": ci_method, "auc_ci": "DeLong (pROC), clipped to [0, 1]", "rows": t2},
        "table3": _table3(inputs, alpha, "test"),
        "table3_external": _table3(inputs, alpha, "external") if "external" in inputs.splits else None,
        "table4": {"rows": t4, "ece_bins": ECE_BINS, "hosmer_lemeshow_min_n": stats.HOSMER_LEMESHOW_MIN_N},
        "external": _external(inputs, alpha),
        "curves": _curves(inputs, prev),
    }
    config = inputs.bundle.get("config") or {}
    data.update(cohort_sections(inputs, aggregation=config.get("aggregation"), alpha=alpha))
    return data
