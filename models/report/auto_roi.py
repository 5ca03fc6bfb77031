"""The report's "automatic ROI" section: each deployable model with the automatic ROI beside the SEG ROI.

The worker finds the lesion itself when no DICOM SEG arrives (``models.roi.auto_roi``); training scores
every deployable model on the test and external images that way too
(``evaluation/predictions_auto_roi.csv``, ``models/_auto_roi_eval.py``). Per model and set this section
gives, on the lesions both ROIs could analyse, both AUCs with DeLong intervals, their paired DeLong
difference (Holm-adjusted over every row of the section) and sensitivity/specificity at the model's
threshold, plus how many images and lesions the automatic ROI could not analyse and why (TRIPOD+AI
item 12: predictors as measured in deployment; CLAIM item 19: how the ROI was obtained).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import stats

from .inputs import EvaluationInputs, ModelPredictions
from .tables import aligned, why_not_auc

__all__ = ["auto_roi_section"]

SPLITS = ("test", "external")


def _se_sp(y: np.ndarray, p: np.ndarray, thr: float) -> tuple[float | None, float | None]:
    pos, neg = y == 1, y == 0
    pred = p >= thr
    se = float(pred[pos].mean()) if pos.any() else None
    sp = float((~pred[neg]).mean()) if neg.any() else None
    return se, sp


def _row(key: str, split: str, seg: ModelPredictions, auto: ModelPredictions, thr: float,
         alpha: float) -> dict[str, Any]:
    y, p_seg, p_auto = aligned(seg, auto)  # the lesions both ROIs analysed
    row: dict[str, Any] = {"model": key, "split": split, "lesions_seg": int(seg.y.size),
                           "lesions_auto": int(auto.y.size), "lesions_both": int(y.size), "threshold": thr}
    se_seg, sp_seg = _se_sp(y, p_seg, thr)
    se_auto, sp_auto = _se_sp(y, p_auto, thr)
    row.update(sensitivity_seg=se_seg, sensitivity_auto=se_auto, specificity_seg=sp_seg, specificity_auto=sp_auto)
    reason = why_not_auc(y) if y.size else "not computed: no lesion was analysed with both ROIs"
    if reason is not None:
        row.update(auc_seg=None, auc_auto=None, difference=None, p_value=None, note=reason)
        return row
    cs, ca = stats.roc_auc_ci(y, p_seg, alpha=alpha), stats.roc_auc_ci(y, p_auto, alpha=alpha)
    r = stats.delong_paired(y, p_auto, p_seg, alpha=alpha)
    row.update(auc_seg={"estimate": cs.auc, "lower": cs.ci_lower, "upper": cs.ci_upper},
               auc_auto={"estimate": ca.auc, "lower": ca.ci_lower, "upper": ca.ci_upper},
               difference={"estimate": r.difference, "lower": r.ci_lower, "upper": r.ci_upper},
               p_value=r.p_value)
    return row


def auto_roi_section(inputs: EvaluationInputs, thresholds: dict[str, dict[str, Any]],
                     alpha: float = 0.05) -> dict[str, Any]:
    """Rows of the automatic-ROI comparison, or why there are none.

    Parameters
    ----------
    inputs : EvaluationInputs
        ``inputs.auto_roi`` holds the automatic-ROI predictions (None for bundles trained before them).
    thresholds : dict
        :func:`models.report.tables.resolve_thresholds` (the SEG-ROI thresholds: the bundle's).
    alpha : float
        1 - confidence level.

    Returns
    -------
    dict
        ``available``; with it ``rows`` (one per model and set: lesion counts, AUCs with CIs, difference
        automatic minus SEG with CI, DeLong p and Holm-adjusted p, sensitivity/specificity of both),
        ``coverage`` (from ``auto_roi.json``) and ``dice``; without it ``reason``.
    """
    raw = inputs.bundle.get("metrics_roi") or {}
    dice = raw if isinstance(raw, dict) and raw.get("n") else None
    if inputs.auto_roi is None:
        return {"available": False, "dice": dice,
                "reason": ("not available: this bundle was trained before training scored its models with the "
                           "automatic ROI (no evaluation/predictions_auto_roi.csv); retrain to get them")}
    rows = []
    for split in SPLITS:
        for key in inputs.models:
            seg, auto = inputs.data[key].get(split), inputs.auto_roi.get(key, {}).get(split)
            if seg is None or auto is None:
                continue
            rows.append(_row(key, split, seg, auto, float(thresholds[key]["value"]), alpha))
    raw_p = np.array([math.nan if r["p_value"] is None else r["p_value"] for r in rows], dtype=np.float64)
    holm = stats.holm_adjust(raw_p) if raw_p.size else raw_p
    for r, h in zip(rows, holm):
        r["p_holm"] = float(h) if math.isfinite(float(h)) else None
    if not rows:
        return {"available": False, "dice": dice, "coverage": inputs.auto_roi_coverage,
                "reason": "not available: no model has both SEG-ROI and automatic-ROI predictions on a test or "
                          "external set"}
    return {"available": True, "rows": rows, "coverage": inputs.auto_roi_coverage or {}, "dice": dice,
            "tests": int(np.isfinite(raw_p).sum()),
            "comparison": ("paired DeLong, automatic minus SEG ROI, on the lesions both analysed; Holm (1979) "
                           "over every row of this table")}
