"""stats against independently computed reference values.

Every number compared here comes from ``tests/data/stats/expected.json``: R 4.2.2 + pROC 1.18.0 (DeLong),
rms ``val.prob``, statsmodels ``proportion_confint`` and scikit-learn ``calibration_curve``, computed
outside this project. Tolerance 1e-6 throughout.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

import stats as S

DATA = Path(__file__).resolve().parents[1] / "data" / "stats"
REF = json.loads((DATA / "expected.json").read_text())
TOL = 1e-6


def _load(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with (DATA / name).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    y = np.array([int(r["gist"]) for r in rows])
    a = np.array([float(r["prob_model_a"]) for r in rows])
    b = np.array([float(r["prob_model_b"]) for r in rows])
    return y, a, b


Y_INT, A_INT, B_INT = _load("synth_eus_internal.csv")
Y_EXT, A_EXT, B_EXT = _load("synth_eus_external.csv")
PROC = REF["pROC_synth"]


# --- AUC + DeLong (pROC) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "y", "score"),
    [
        ("internal_model_a", Y_INT, A_INT),
        ("internal_model_b", Y_INT, B_INT),
        ("external_model_a", Y_EXT, A_EXT),
    ],
)
def test_roc_auc_ci_matches_proc(key: str, y: np.ndarray, score: np.ndarray) -> None:
    ref = PROC[key]
    r = S.roc_auc_ci(y, score)
    assert r.auc == pytest.approx(ref["auc"], abs=TOL)
    assert r.variance == pytest.approx(ref["var_delong"], abs=1e-9)
    assert r.variance == pytest.approx(ref["var_delong"], rel=1e-6)
    assert r.ci_lower == pytest.approx(ref["ci_lower"], abs=TOL)
    assert r.ci_upper == pytest.approx(ref["ci_upper"], abs=TOL)
    assert r.n_cases == ref["n_cases"]
    assert r.n_controls == ref["n_controls"]
    if "ci_upper_unclipped" in ref:
        assert r.ci_upper_unclipped == pytest.approx(ref["ci_upper_unclipped"], abs=TOL)
        assert r.ci_upper == 1.0  # pROC clips at 1


def test_delong_paired_matches_proc() -> None:
    ref = PROC["paired_a_vs_b"]
    r = S.delong_paired(Y_INT, A_INT, B_INT)
    assert r.z == pytest.approx(ref["statistic"], abs=TOL)
    assert r.p_value == pytest.approx(ref["p_value"], abs=TOL)
    assert r.ci_lower == pytest.approx(ref["diff_ci"][0], abs=TOL)
    assert r.ci_upper == pytest.approx(ref["diff_ci"][1], abs=TOL)
    assert (r.auc_a, r.auc_b) == pytest.approx(ref["estimate"], abs=TOL)


def test_delong_paired_swapped_flips_sign() -> None:
    ref = PROC["paired_a_vs_b"]
    r = S.delong_paired(Y_INT, B_INT, A_INT)
    assert r.z == pytest.approx(-ref["statistic"], abs=TOL)
    assert r.p_value == pytest.approx(ref["p_value"], abs=TOL)


def test_delong_paired_identical_predictions_gives_z0_p1() -> None:
    # pROC's own test suite: roc.test(r, r) has Z = 0 and p = 1 (a naive 0/0 gives NaN or p = 0)
    r = S.delong_paired(Y_INT, A_INT, A_INT.copy())
    assert r.z == 0.0
    assert r.p_value == 1.0
    assert r.difference == 0.0
    assert (r.ci_lower, r.ci_upper) == (0.0, 0.0)


def test_delong_unpaired_matches_proc() -> None:
    ref = PROC["unpaired_internalA_vs_externalA"]
    r = S.delong_unpaired(Y_INT, A_INT, Y_EXT, A_EXT)
    assert r.d == pytest.approx(ref["statistic"], abs=TOL)
    assert r.df == pytest.approx(ref["df"], abs=TOL)
    assert r.p_value == pytest.approx(ref["p_value"], abs=TOL)
    assert (r.auc_a, r.auc_b) == pytest.approx(ref["estimate"], abs=TOL)


def test_youden_matches_proc_coords_best() -> None:
    ref = PROC["youden_best_model_a"]
    r = S.youden_threshold(Y_INT, A_INT)
    assert r.threshold == pytest.approx(ref["threshold"], abs=TOL)
    assert r.sensitivity == pytest.approx(ref["sensitivity"], abs=TOL)
    assert r.specificity == pytest.approx(ref["specificity"], abs=TOL)
    assert (r.tp, r.fp, r.tn, r.fn) == (ref["tp"], ref["fp"], ref["tn"], ref["fn"])


def test_diagnostic_counts_at_half_positive_when_ge() -> None:
    ref = PROC["internal_model_a_at_0.5_ge"]
    m = S.diagnostic_metrics(Y_INT, A_INT, 0.5)
    assert (m.tp, m.fp, m.tn, m.fn) == (ref["tp"], ref["fp"], ref["tn"], ref["fn"])
    assert m.sensitivity.estimate == pytest.approx(ref["tp"] / (ref["tp"] + ref["fn"]))
    assert m.accuracy.n == Y_INT.size


def test_diagnostic_threshold_is_inclusive() -> None:
    m = S.diagnostic_metrics([0, 1], [0.5, 0.5], 0.5)
    assert (m.tp, m.fp, m.tn, m.fn) == (1, 1, 0, 0)
    assert math.isnan(m.npv.estimate)  # nothing tested negative: NPV undefined, not an error


def test_roc_curve_endpoints() -> None:
    c = S.roc_curve(Y_INT, A_INT)
    assert c.sensitivity[0] == 1.0 and c.specificity[0] == 0.0
    assert c.sensitivity[-1] == 0.0 and c.specificity[-1] == 1.0
    # trapezoid area under the empirical curve equals the Mann-Whitney AUC that pROC reports
    fpr = c.fpr[::-1]
    tpr = c.sensitivity[::-1]
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(PROC["internal_model_a"]["auc"], abs=TOL)


# --- proportions (statsmodels; paper 002's reported Wald intervals) --------------------------------

_METHODS = {
    "normal": ("wald", "normal"),
    "wilson": ("wilson",),
    "beta": ("clopper-pearson", "beta"),
    "agresti_coull": ("agresti-coull",),
    "jeffreys": ("jeffreys",),
}


@pytest.mark.parametrize("metric", sorted(REF["proportions_paper002"]))
@pytest.mark.parametrize("ref_key", sorted(_METHODS))
def test_proportion_ci_matches_statsmodels(metric: str, ref_key: str) -> None:
    ref = REF["proportions_paper002"][metric]
    for method in _METHODS[ref_key]:
        r = S.proportion_ci(ref["x"], ref["n"], method)
        assert r.estimate == pytest.approx(ref["p"], abs=1e-12)
        assert r.lower == pytest.approx(ref[ref_key][0], abs=TOL)
        assert r.upper == pytest.approx(ref[ref_key][1], abs=TOL)


@pytest.mark.parametrize("metric", sorted(REF["proportions_paper002"]))
def test_wald_reproduces_paper_002(metric: str) -> None:
    ref = REF["proportions_paper002"][metric]
    lo_txt, hi_txt = ref["paper_ci"].split("-")
    r = S.proportion_ci(ref["x"], ref["n"], "wald")
    assert round(r.lower * 100, 2) == pytest.approx(float(lo_txt), abs=0.006)
    assert round(r.upper * 100, 2) == pytest.approx(float(hi_txt), abs=0.006)


def test_proportion_boundaries() -> None:
    assert S.proportion_ci(0, 10, "clopper-pearson").lower == 0.0
    assert S.proportion_ci(10, 10, "jeffreys").upper == 1.0
    # Clopper-Pearson for 0/n: upper bound 1 - (alpha/2)^(1/n) (closed form)
    assert S.proportion_ci(0, 10, "beta").upper == pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-12)


# --- calibration (rms val.prob, sklearn) -----------------------------------------------------------

CAL = REF["calibration_tiny"]
VP = CAL["rms_val.prob"]


def test_brier_matches_reference() -> None:
    assert S.brier_score(CAL["y"], CAL["p"]) == pytest.approx(CAL["brier"], abs=TOL)


@pytest.mark.parametrize(
    ("attr", "key"),
    [
        ("intercept", "Intercept"),
        ("slope", "Slope"),
        ("dxy", "Dxy"),
        ("c_index", "C (ROC)"),
        ("r2", "R2"),
        ("d", "D"),
        ("d_chisq", "D:Chi-sq"),
        ("u", "U"),
        ("u_chisq", "U:Chi-sq"),
        ("u_p_value", "U:p"),
        ("q", "Q"),
        ("brier", "Brier"),
        ("emax", "Emax"),
        ("e90", "E90"),
        ("eavg", "Eavg"),
        ("spiegelhalter_z", "S:z"),
        ("spiegelhalter_p", "S:p"),
    ],
)
def test_calibration_matches_rms_val_prob(attr: str, key: str) -> None:
    fit = S.calibration_intercept_slope(CAL["y"], CAL["p"])
    assert fit.converged
    assert getattr(fit, attr) == pytest.approx(VP[key], abs=TOL)


@pytest.mark.parametrize("key", sorted(CAL["sklearn_calibration_curve"]))
def test_calibration_curve_matches_sklearn(key: str) -> None:
    ref = CAL["sklearn_calibration_curve"][key]
    _, strategy, n_bins = key.rsplit("_", 2)
    c = S.calibration_curve(CAL["y"], CAL["p"], int(n_bins), strategy)  # type: ignore[arg-type]
    np.testing.assert_allclose(c.prob_true, ref["prob_true"], atol=TOL)
    np.testing.assert_allclose(c.prob_pred, ref["prob_pred"], atol=TOL)
    assert int(c.counts.sum()) == len(CAL["y"])


def test_hosmer_lemeshow_hand_computed() -> None:
    # g = 3 on 10 points: R type-7 quantiles of p at 1/3 and 2/3 are p[3] = 0.4 and p[6] = 0.7, so the
    # groups are [0.1, 0.4], (0.4, 0.7], (0.7, 0.95]. Observed/expected per group (y=1 | y=0):
    #   g1: y = 0,0,1,0  O1 = 1, E1 = 0.1+0.2+0.3+0.4 = 1.0;  O0 = 3, E0 = 3.0
    #   g2: y = 1,1,0    O1 = 2, E1 = 0.5+0.6+0.7 = 1.8;      O0 = 1, E0 = 1.2
    #   g3: y = 1,1,1    O1 = 3, E1 = 0.8+0.9+0.95 = 2.65;    O0 = 0, E0 = 0.35
    y = [0, 0, 1, 0, 1, 1, 0, 1, 1, 1]
    p = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    chi2 = 0.0 + 0.0 + 0.2**2 / 1.8 + 0.2**2 / 1.2 + 0.35**2 / 2.65 + 0.35**2 / 0.35
    hl = S.hosmer_lemeshow(y, p, groups=3)
    assert hl.statistic == pytest.approx(chi2, abs=1e-12)
    assert hl.df == 1
    assert hl.p_value == pytest.approx(float(sps.chi2.sf(chi2, 1)), abs=1e-12)
    np.testing.assert_allclose(hl.observed, [[3, 1], [1, 2], [0, 3]])
    np.testing.assert_allclose(hl.expected, [[3.0, 1.0], [1.2, 1.8], [0.35, 2.65]], atol=1e-12)


def test_hosmer_lemeshow_tied_breaks_merge_groups_but_keep_df() -> None:
    # quantiles of 5 x 0.2 and 5 x 0.8 at 0, .25, .5, .75, 1 are 0.2, 0.2, 0.5, 0.8, 0.8 -> two groups
    y = [0, 0, 0, 0, 1, 1, 1, 1, 1, 0]
    p = [0.2] * 5 + [0.8] * 5
    hl = S.hosmer_lemeshow(y, p, groups=4)
    np.testing.assert_allclose(hl.breaks, [0.2, 0.5, 0.8])
    chi2 = (1 - 1.0) ** 2 / 1.0 + (4 - 4.0) ** 2 / 4.0 + (4 - 4.0) ** 2 / 4.0 + (1 - 1.0) ** 2 / 1.0
    assert hl.statistic == pytest.approx(chi2, abs=1e-12)
    assert hl.df == 2  # hoslem.test uses g - 2 regardless of merged groups


# --- decision curves -------------------------------------------------------------------------------

NB = REF["net_benefit_synth_internal"]
_THR = ["0.05", "0.10", "0.20", "0.50"]
_FIELDS = ["net_benefit", "tp_rate", "fp_rate", "test_pos_rate", "net_intervention_avoided"]


@pytest.mark.parametrize(("model_key", "score"), [("prob_model_a", A_INT), ("prob_model_b", B_INT)])
def test_net_benefit_matches_reference(model_key: str, score: np.ndarray) -> None:
    res = NB["results"]
    dc = S.net_benefit(Y_INT, score, [float(t) for t in _THR])
    assert (dc.n, dc.events) == (NB["n"], NB["events"])
    for i, t in enumerate(_THR):
        for strategy, obj in ((model_key, dc.model), ("all", dc.treat_all), ("none", dc.treat_none)):
            for field in _FIELDS:
                got = float(getattr(obj, field)[i])
                assert got == pytest.approx(res[strategy][t][field], abs=TOL), (strategy, t, field)
        assert int(dc.model.tp[i]) == res[model_key][t]["TP"]
        assert int(dc.model.fp[i]) == res[model_key][t]["FP"]


# --- input validation ------------------------------------------------------------------------------


def test_length_mismatch_rejected() -> None:
    with pytest.raises(ValueError, match="length mismatch"):
        S.roc_auc_ci([0, 1, 0, 1], [0.1, 0.2, 0.3])


def test_non_binary_rejected() -> None:
    with pytest.raises(ValueError, match="binary"):
        S.roc_auc_ci([0, 1, 2, 1], [0.1, 0.2, 0.3, 0.4])


def test_single_class_rejected() -> None:
    with pytest.raises(ValueError, match="both classes"):
        S.delong_paired([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])


def test_too_few_for_delong_rejected() -> None:
    with pytest.raises(ValueError, match="at least 2 cases and 2 controls"):
        S.roc_auc_ci([0, 1, 1], [0.1, 0.2, 0.3])


def test_nan_scores_rejected() -> None:
    with pytest.raises(ValueError, match="NaN"):
        S.roc_auc_ci([0, 1, 0, 1], [0.1, float("nan"), 0.3, 0.4])


def test_probabilities_out_of_range_rejected() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        S.brier_score([0, 1], [0.2, 1.2])
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        S.calibration_intercept_slope([0, 1, 0, 1], [0.0, 0.5, 0.3, 0.9])


def test_unknown_proportion_method_rejected() -> None:
    with pytest.raises(ValueError, match="unknown proportion CI method"):
        S.proportion_ci(3, 10, "exact-ish")
    with pytest.raises(ValueError, match=r"x must be in \[0, n\]"):
        S.proportion_ci(11, 10, "wilson")


def test_bad_thresholds_rejected() -> None:
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        S.net_benefit([0, 1], [0.2, 0.8], [0.0, 0.5])


def test_bad_calibration_strategy_rejected() -> None:
    with pytest.raises(ValueError, match="strategy"):
        S.calibration_curve([0, 1], [0.2, 0.8], 5, "kmeans")  # type: ignore[arg-type]


def test_delong_unpaired_zero_variance_equal_aucs() -> None:
    # two perfectly separated samples: AUC 1 and variance 0 on both sides -> no difference, p = 1
    r = S.delong_unpaired([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], [0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.9])
    assert (r.auc_a, r.auc_b) == (1.0, 1.0)
    assert r.d == 0.0 and r.p_value == 1.0


def test_youden_tie_takes_lowest_threshold() -> None:
    # cut-offs 0.25 and 0.8 both give J = 0.5 here; pROC best.policy="first" takes the lower one
    r = S.youden_threshold([0, 1, 0, 1], [0.1, 0.4, 0.7, 0.9])
    assert r.youden_index == pytest.approx(0.5)
    assert r.threshold == pytest.approx(0.25)
