"""Statistics a reviewer asks for (issue 16), against published values or the published formula worked by hand.

No expected value here comes from this project's code: each is a literal computed from a cited formula
or taken from a publication or from the R/sklearn reference file ``tests/data/stats/expected.json``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize, special

import stats as S

DATA = Path(__file__).resolve().parents[1] / "data" / "stats"
REF = json.loads((DATA / "expected.json").read_text())


def _load(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with (DATA / name).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return (np.array([int(r["gist"]) for r in rows]), np.array([float(r["prob_model_a"]) for r in rows]),
            np.array([float(r["prob_model_b"]) for r in rows]))


Y_INT, A_INT, B_INT = _load("synth_eus_internal.csv")

# --- Holm (1979); R p.adjust(method = "holm") ------------------------------------------------------


def test_holm_worked_example() -> None:
    # p = (0.01, 0.04, 0.03, 0.005), m = 4. Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06,
    # 0.04*1 = 0.04 -> running max 0.06. Back in input order:
    got = S.holm_adjust([0.01, 0.04, 0.03, 0.005])
    assert got == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)


def test_holm_monotone_and_capped() -> None:
    # p.adjust(c(.01,.02,.03,.04,.05), "holm") = .05 .08 .09 .09 .09 ; p.adjust(c(.3,.6), "holm") = .6 .6
    assert S.holm_adjust([0.01, 0.02, 0.03, 0.04, 0.05]) == pytest.approx([0.05, 0.08, 0.09, 0.09, 0.09])
    assert S.holm_adjust([0.3, 0.6]) == pytest.approx([0.6, 0.6])
    assert S.holm_adjust([0.4, 0.5, 0.9]) == pytest.approx([1.0, 1.0, 1.0])


def test_holm_of_proc_paired_delong_p() -> None:
    # the pROC paired DeLong p of the reference file and a second family member 0.5: 2*p and max(2p, .5)
    p = REF["pROC_synth"]["paired_a_vs_b"]["p_value"]
    got = S.holm_adjust([p, 0.5, math.nan])
    assert got[0] == pytest.approx(min(1.0, 2 * p))
    assert got[1] == pytest.approx(max(min(1.0, 2 * p), 0.5))
    assert math.isnan(got[2])


def test_holm_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="p values"):
        S.holm_adjust([0.2, 1.5])


# --- Predictive values at a stated prevalence (Bayes; Altman & Bland 1994, BMJ 308:1552 and 309:102) --

# Liver scan vs pathology (Drum & Christacopoulos 1972, the tables of Altman & Bland 1994):
TP, FP, FN, TN = 231, 32, 27, 54


def test_bayes_at_the_study_prevalence_gives_the_observed_predictive_values() -> None:
    se, sp = TP / (TP + FN), TN / (TN + FP)  # 0.895, 0.628
    prev = (TP + FN) / (TP + FP + FN + TN)  # 258/344 = 0.75
    ppv, npv = S.predictive_values_at_prevalence(se, sp, prev)
    assert float(ppv) == pytest.approx(231 / 263, abs=1e-12)  # 0.878 in the paper
    assert float(npv) == pytest.approx(54 / 81, abs=1e-12)  # 0.667 in the paper


def test_bayes_at_a_lower_prevalence_hand_computed() -> None:
    se, sp = TP / (TP + FN), TN / (TN + FP)
    # pi = 0.25: PPV = .25 Se / (.25 Se + .75 (1 - Sp)); Se = 231/258, 1 - Sp = 32/86
    ppv_hand = (0.25 * 231 / 258) / (0.25 * 231 / 258 + 0.75 * 32 / 86)
    npv_hand = (0.75 * 54 / 86) / (0.75 * 54 / 86 + 0.25 * 27 / 258)
    ppv, npv = S.predictive_values_at_prevalence(se, sp, 0.25)
    assert float(ppv) == pytest.approx(ppv_hand, abs=1e-12)
    assert float(ppv) == pytest.approx(0.4455, abs=5e-4)
    assert float(npv) == pytest.approx(npv_hand, abs=1e-12)
    assert float(npv) == pytest.approx(0.9474, abs=5e-4)


def test_bayes_undefined_and_invalid() -> None:
    ppv, npv = S.predictive_values_at_prevalence(0.0, 1.0, 0.3)  # nobody positive
    assert math.isnan(float(ppv)) and float(npv) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="prevalence"):
        S.predictive_values_at_prevalence(0.9, 0.9, 0.0)
    with pytest.raises(ValueError, match="sensitivity"):
        S.predictive_values_at_prevalence(1.2, 0.9, 0.5)


# --- Calibration-in-the-large: glm(y ~ 1, offset = qlogis(p), binomial) --------------------------------


def test_citl_constant_prediction_closed_form() -> None:
    # all p = 0.2, 30 events in 100: a = logit(0.3) - logit(0.2), SE = 1/sqrt(n * 0.3 * 0.7)
    y = np.array([1] * 30 + [0] * 70)
    r = S.calibration_in_the_large(y, np.full(100, 0.2))
    assert r.intercept == pytest.approx(math.log(0.3 / 0.7) - math.log(0.2 / 0.8), abs=1e-10)
    assert r.intercept == pytest.approx(0.538996501, abs=1e-8)
    assert r.se == pytest.approx(1 / math.sqrt(100 * 0.3 * 0.7), abs=1e-10)
    assert r.ci_lower == pytest.approx(r.intercept - 1.959963985 * r.se, abs=1e-8)
    assert r.converged and r.observed_rate == 0.3 and r.mean_predicted == pytest.approx(0.2)


def test_citl_solves_the_score_equation_on_the_rms_example() -> None:
    cal = REF["calibration_tiny"]
    y, p = np.array(cal["y"]), np.array(cal["p"])
    r = S.calibration_in_the_large(y, p)
    # maximum of the offset log-likelihood by a generic bounded scalar optimiser
    lp = special.logit(p)

    def nll(a: float) -> float:
        return float(-np.sum(y * (lp + a) - np.logaddexp(0.0, lp + a)))

    best = optimize.minimize_scalar(nll, bounds=(-5, 5), method="bounded", options={"xatol": 1e-10})
    assert r.intercept == pytest.approx(best.x, abs=1e-6)
    assert float(np.sum(y - special.expit(lp + r.intercept))) == pytest.approx(0.0, abs=1e-9)
    # it is not val.prob's joint-fit intercept
    assert abs(r.intercept - cal["rms_val.prob"]["Intercept"]) > 0.05


def test_calibration_slope_is_the_rms_slope() -> None:
    cal = REF["calibration_tiny"]
    fit = S.calibration_intercept_slope(cal["y"], cal["p"])
    assert fit.slope == pytest.approx(cal["rms_val.prob"]["Slope"], abs=1e-6)


def test_citl_refuses_one_class_and_certain_probabilities() -> None:
    with pytest.raises(ValueError, match="both classes"):
        S.calibration_in_the_large([1, 1, 1], [0.2, 0.5, 0.7])
    with pytest.raises(ValueError, match="strictly between"):
        S.calibration_in_the_large([0, 1, 1], [0.0, 0.5, 0.7])


# --- ECE (Naeini 2015; Guo 2017) on sklearn's reference bins ----------------------------------------


def test_ece_from_the_sklearn_reference_bins() -> None:
    cal = REF["calibration_tiny"]
    ref = cal["sklearn_calibration_curve"]["calibration_curve_uniform_5"]
    # bins of width 0.2 over p = (.1 .2 .35 .4 .55 .6 .65 .8 .9 .15): counts 3, 2, 2, 2, 1
    counts = np.array([3, 2, 2, 2, 1])
    hand = float(np.sum(counts / 10 * np.abs(np.array(ref["prob_true"]) - np.array(ref["prob_pred"]))))
    assert hand == pytest.approx(0.21, abs=1e-12)  # (.45 + .25 + .85 + .45 + .1) / 10
    e = S.expected_calibration_error(cal["y"], cal["p"], n_bins=5)
    assert e.ece == pytest.approx(0.21, abs=1e-12)
    assert e.counts.tolist() == counts.tolist() and e.n == 10


def test_ece_of_a_perfect_calibration_is_zero() -> None:
    y = np.array([0, 0, 0, 1] * 5 + [1, 1, 1, 0] * 5)
    p = np.array([0.25] * 20 + [0.75] * 20)
    assert S.expected_calibration_error(y, p, n_bins=10).ece == pytest.approx(0.0, abs=1e-15)


# --- Hosmer-Lemeshow minimum sample size ------------------------------------------------------------


def test_hosmer_lemeshow_refused_below_the_minimum_with_a_reason() -> None:
    reason = S.hosmer_lemeshow_not_applicable([0, 1] * 6)
    assert reason is not None and "12 lesions" in reason and str(S.HOSMER_LEMESHOW_MIN_N) in reason
    few_events = S.hosmer_lemeshow_not_applicable([1] * 10 + [0] * 190)
    assert few_events is not None and "10 lesions of the smaller class" in few_events
    assert S.hosmer_lemeshow_not_applicable([0, 1] * 60) is None


# --- Decision curves at a stated prevalence -----------------------------------------------------------

NB = REF["net_benefit_synth_internal"]


@pytest.mark.parametrize("thr", ["0.05", "0.10", "0.20", "0.50"])
def test_decision_curve_at_the_sample_prevalence_matches_the_reference(thr: str) -> None:
    dc = S.net_benefit(Y_INT, A_INT, [float(thr)], prevalence=35 / 60)
    ref = NB["results"]["prob_model_a"][thr]
    assert dc.model.net_benefit[0] == pytest.approx(ref["net_benefit"], abs=1e-9)
    assert dc.treat_all.net_benefit[0] == pytest.approx(NB["results"]["all"][thr]["net_benefit"], abs=1e-9)
    assert dc.prevalence_source == "stated"


def test_decision_curve_at_another_prevalence_hand_computed() -> None:
    ref = NB["results"]["prob_model_a"]["0.20"]
    tp, fp = ref["TP"], ref["FP"]  # counts from the reference file: 35 cases, 25 controls
    pi, odds = 0.2, 0.2 / 0.8
    hand = tp / 35 * pi - fp / 25 * (1 - pi) * odds
    dc = S.net_benefit(Y_INT, A_INT, [0.2], prevalence=pi)
    assert dc.model.net_benefit[0] == pytest.approx(hand, abs=1e-12)
    assert dc.treat_all.net_benefit[0] == pytest.approx(pi - (1 - pi) * odds, abs=1e-12)  # = 0.0
    with pytest.raises(ValueError, match="prevalence"):
        S.net_benefit(Y_INT, A_INT, [0.2], prevalence=1.0)


# --- Patient-clustered bootstrap ----------------------------------------------------------------------


def test_bootstrap_se_of_auc_agrees_with_the_proc_delong_se() -> None:
    # DeLong's variance and the bootstrap variance estimate the same quantity (DeLong et al. 1988;
    # pROC ci.auc(method = "bootstrap") vs "delong"); the pROC DeLong variance of model B is the reference.
    ref = REF["pROC_synth"]["internal_model_b"]
    patients = np.arange(Y_INT.size)
    bs = S.cluster_bootstrap(Y_INT, B_INT, patients, 0.5, n_boot=4000, seed=3)
    assert bs.auc.estimate == pytest.approx(ref["auc"], abs=1e-12)
    # recover the bootstrap SE from the percentile interval: width / (2 * 1.96) for a near-normal statistic
    se_boot = (bs.auc.upper - bs.auc.lower) / (2 * 1.959964)
    assert se_boot == pytest.approx(math.sqrt(ref["var_delong"]), rel=0.2)


def test_bootstrap_sensitivity_interval_near_the_binomial_one() -> None:
    # 12 of 14 (paper 002's sensitivity, reference file): the bootstrap SE of a proportion is
    # sqrt(p (1 - p) / n) = 0.0935 (Efron & Tibshirani 1993, ch. 6)
    y = np.array([1] * 14 + [0] * 14)
    prob = np.array([0.9] * 12 + [0.1] * 2 + [0.1] * 14)
    bs = S.cluster_bootstrap(y, prob, np.arange(28), 0.5, n_boot=4000, seed=5)
    ref = REF["proportions_paper002"]["sensitivity"]
    assert bs.sensitivity.estimate == pytest.approx(ref["p"])
    assert bs.sensitivity.lower == pytest.approx(ref["p"] - 1.96 * math.sqrt(ref["p"] * (1 - ref["p"]) / 14), abs=0.06)
    assert bs.specificity.estimate == 1.0 and bs.specificity.lower == 1.0


def test_bootstrap_resamples_patients_not_rows() -> None:
    # Copying every row three times inside its patient changes nothing: a patient is drawn as a whole.
    pat = np.arange(Y_INT.size)
    one = S.cluster_bootstrap(Y_INT, A_INT, pat, 0.5, n_boot=500, seed=11, prevalence=0.3)
    three = S.cluster_bootstrap(np.repeat(Y_INT, 3), np.repeat(A_INT, 3), np.repeat(pat, 3), 0.5, n_boot=500,
                                seed=11, prevalence=0.3)
    for name in ("auc", "sensitivity", "specificity", "ppv", "npv", "ppv_at_prevalence"):
        a, b = getattr(one, name), getattr(three, name)
        assert (a.estimate, a.lower, a.upper) == pytest.approx((b.estimate, b.lower, b.upper), abs=1e-12), name
    assert three.n_clusters == Y_INT.size and three.n_rows == 3 * Y_INT.size
    # resampling the rows instead (one cluster per row) understates the uncertainty
    naive = S.cluster_bootstrap(np.repeat(Y_INT, 3), np.repeat(A_INT, 3), np.arange(3 * Y_INT.size), 0.5,
                                n_boot=500, seed=11)
    assert naive.auc.upper - naive.auc.lower < 0.8 * (three.auc.upper - three.auc.lower)


def test_bootstrap_ppv_at_prevalence_is_bayes_of_the_sample() -> None:
    bs = S.cluster_bootstrap(Y_INT, A_INT, np.arange(60), 0.5, n_boot=200, seed=1, prevalence=0.2)
    assert bs.ppv_at_prevalence is not None
    se, sp = bs.sensitivity.estimate, bs.specificity.estimate
    assert bs.ppv_at_prevalence.estimate == pytest.approx(0.2 * se / (0.2 * se + 0.8 * (1 - sp)))
    assert bs.ppv_at_prevalence.lower <= bs.ppv_at_prevalence.estimate <= bs.ppv_at_prevalence.upper


def test_bootstrap_is_reproducible_and_validates() -> None:
    a = S.cluster_bootstrap(Y_INT, A_INT, np.arange(60) // 2, 0.5, n_boot=100, seed=4)
    b = S.cluster_bootstrap(Y_INT, A_INT, np.arange(60) // 2, 0.5, n_boot=100, seed=4)
    assert a == b
    with pytest.raises(ValueError, match="n_boot"):
        S.cluster_bootstrap(Y_INT, A_INT, np.arange(60), 0.5, n_boot=5)
    with pytest.raises(ValueError, match="clusters"):
        S.cluster_bootstrap(Y_INT, A_INT, np.arange(59), 0.5)


# --- ICC: Shrout & Fleiss (1979), Table 2 data (6 targets x 4 judges) and their Table 4 values ---------

SHROUT_FLEISS = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]


def test_icc_matches_shrout_fleiss() -> None:
    r = S.icc(SHROUT_FLEISS)
    # published to two decimals: ICC(1,1) = .17, ICC(2,1) = .29, ICC(3,1) = .71
    assert r.icc1 == pytest.approx(0.17, abs=0.005)
    assert r.icc2 == pytest.approx(0.29, abs=0.005)
    assert r.icc3 == pytest.approx(0.71, abs=0.005)
    # their ANOVA table: BMS = 11.24, WMS = 6.26, JMS = 32.49, EMS = 1.02
    assert (r.bms, r.wms, r.jms, r.ems) == pytest.approx((11.24, 6.26, 32.49, 1.02), abs=0.006)
    assert r.get("3,1") == r.icc3 and (r.n, r.k) == (6, 4)


def test_icc_of_identical_conditions_is_one_and_validates() -> None:
    x = np.array([[1.0, 1.0], [2.0, 2.0], [5.0, 5.0]])
    r = S.icc(x)
    assert r.icc1 == pytest.approx(1.0) and r.icc3 == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2 targets"):
        S.icc([[1.0, 2.0]])


def test_citl_where_newton_from_zero_overshoots() -> None:
    # predictions all near 0.9 for two events in four: Newton from a = 0 jumps to a ~ -4.7 and diverges;
    # the root of the score equation sum(y) = sum(expit(logit(p) + a)) is still found
    y = np.array([1, 1, 0, 0])
    p = np.array([0.883833, 0.894808, 0.946878, 0.911367])
    r = S.calibration_in_the_large(y, p)
    assert r.converged
    assert float(np.sum(special.expit(special.logit(p) + r.intercept))) == pytest.approx(2.0, abs=1e-10)
    assert r.intercept < -2.0
