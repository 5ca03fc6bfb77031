"""Statistics for the evaluation report: ROC/AUC with DeLong, proportions, calibration, decision curves,
patient-clustered bootstrap, Holm adjustment, predictive values at a stated prevalence.

Pure numpy/scipy and the standard library: no project package (the layering test checks it). Every function is checked against values computed independently in R (pROC 1.18.0,
rms ``val.prob``), statsmodels (proportion intervals) and the decision-curve formula
(``tests/data/stats/expected.json``).

Conventions
-----------
* ``y`` is binary with 1 = GIST (the positive class, pROC "cases") and 0 = leiomyoma ("controls").
* Scores follow pROC's ``direction='<'``: a higher score means more likely positive.
* A probability ``p`` counts as a positive test iff ``p >= threshold``.
* Invalid input raises ``ValueError`` with a message naming what is wrong.
"""

from __future__ import annotations

from stats.bootstrap import BootstrapInterval, ClusterBootstrap, cluster_bootstrap
from stats.calibration import (
    HOSMER_LEMESHOW_MIN_EVENTS,
    HOSMER_LEMESHOW_MIN_N,
    CalibrationCurve,
    CalibrationFit,
    CalibrationInTheLarge,
    ExpectedCalibrationError,
    HosmerLemeshow,
    brier_score,
    calibration_curve,
    calibration_in_the_large,
    calibration_intercept_slope,
    expected_calibration_error,
    hosmer_lemeshow,
    hosmer_lemeshow_not_applicable,
)
from stats.decision import DecisionCurve, StrategyNetBenefit, net_benefit
from stats.multiplicity import holm_adjust
from stats.reliability import ICC, icc
from stats.prevalence import predictive_values_at_prevalence
from stats.proportions import (
    PROPORTION_METHODS,
    DiagnosticMetrics,
    ProportionCI,
    diagnostic_metrics,
    proportion_ci,
)
from stats.roc import (
    PairedDeLong,
    RocAuc,
    RocCurve,
    UnpairedDeLong,
    YoudenResult,
    delong_paired,
    delong_unpaired,
    roc_auc_ci,
    roc_curve,
    youden_threshold,
)

__all__ = [
    "ICC",
    "icc",
    "BootstrapInterval",
    "ClusterBootstrap",
    "CalibrationInTheLarge",
    "ExpectedCalibrationError",
    "HOSMER_LEMESHOW_MIN_EVENTS",
    "HOSMER_LEMESHOW_MIN_N",
    "cluster_bootstrap",
    "calibration_in_the_large",
    "expected_calibration_error",
    "hosmer_lemeshow_not_applicable",
    "holm_adjust",
    "predictive_values_at_prevalence",
    "RocAuc",
    "RocCurve",
    "PairedDeLong",
    "UnpairedDeLong",
    "ProportionCI",
    "DiagnosticMetrics",
    "YoudenResult",
    "CalibrationCurve",
    "CalibrationFit",
    "HosmerLemeshow",
    "StrategyNetBenefit",
    "DecisionCurve",
    "PROPORTION_METHODS",
    "roc_auc_ci",
    "roc_curve",
    "delong_paired",
    "delong_unpaired",
    "proportion_ci",
    "diagnostic_metrics",
    "youden_threshold",
    "brier_score",
    "calibration_curve",
    "calibration_intercept_slope",
    "hosmer_lemeshow",
    "net_benefit",
]
