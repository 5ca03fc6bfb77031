"""The cohort sections of the report: unit of analysis, participant flow, Table 1 and prevalence per set.

TRIPOD+AI items 20a/20b and CLAIM items 21-22 (evaluation-checklist items 2-4): who was listed, who
was excluded and why, the characteristics of each partition, and how many lesions of each class were
analysed. Sources: ``evaluation/lesions.csv`` (bundles since issue 16) and the predictions; an older
bundle gets the sections that the predictions alone allow and a sentence saying what is missing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

import stats
from models.report.inputs import LESION_CHARACTERISTICS, EvaluationInputs, LesionRecord

__all__ = ["cohort_sections", "NO_LESION_TABLE"]

NO_LESION_TABLE = ("not available: this bundle has no evaluation/lesions.csv (it predates issue 16); "
                   "retrain to get lesion characteristics and image counts")
_LABEL = {1: "GIST", 0: "leiomyoma"}


def _median_iqr(vals: list[float]) -> dict[str, Any]:
    if not vals:
        return {"n": 0, "median": None, "q1": None, "q3": None}
    q1, med, q3 = np.quantile(np.asarray(vals, dtype=np.float64), [0.25, 0.5, 0.75])
    return {"n": len(vals), "median": float(med), "q1": float(q1), "q3": float(q3)}


def _table1(lesions: list[LesionRecord], splits: list[str]) -> dict[str, Any]:
    """Per split and class: counts, size median (IQR) and the categories of layer/echo/device/centre."""
    present = [c for c in LESION_CHARACTERISTICS if any(c in r.characteristics for r in lesions)]
    columns: list[dict[str, Any]] = []
    for split in splits:
        for y in (None, 1, 0):
            rows = [r for r in lesions if r.split == split and r.images_analysed > 0 and (y is None or r.y == y)]
            col: dict[str, Any] = {
                "split": split, "group": "all" if y is None else _LABEL[y],
                "patients": len({r.patient_id for r in rows}), "lesions": len(rows),
                "images": sum(r.images_analysed for r in rows),
            }
            chars: dict[str, Any] = {}
            for c in present:
                vals = [r.characteristics.get(c, "") for r in rows]
                if c == "size_mm":
                    nums = []
                    for v in vals:
                        try:
                            nums.append(float(v))
                        except ValueError:
                            continue
                    chars[c] = _median_iqr(nums)
                else:
                    chars[c] = dict(sorted(Counter(v or "not recorded" for v in vals).items()))
            col["characteristics"] = chars
            columns.append(col)
    return {"available": True, "characteristics": present, "columns": columns,
            "note": "lesions with at least one analysable image; images counted separately from lesions"}


def _flow(lesions: list[LesionRecord], inputs: EvaluationInputs, splits: list[str]) -> list[dict[str, Any]]:
    out = []
    for split in splits:
        rows = [r for r in lesions if r.split == split]
        scored = [len(inputs.data[k][split].lesion_id) for k in inputs.models if split in inputs.data[k]]
        out.append({
            "split": split,
            "patients_listed": len({r.patient_id for r in rows}), "lesions_listed": len(rows),
            "images_listed": sum(r.images_listed for r in rows),
            "images_excluded": sum(r.images_listed - r.images_analysed for r in rows),
            "lesions_excluded": sum(1 for r in rows if r.images_analysed == 0),
            "lesions_analysed": sum(1 for r in rows if r.images_analysed > 0),
            "images_analysed": sum(r.images_analysed for r in rows),
            "lesions_scored_min": min(scored) if scored else 0, "lesions_scored_max": max(scored) if scored else 0,
        })
    return out


def _prevalence(inputs: EvaluationInputs, alpha: float) -> list[dict[str, Any]]:
    out = []
    for split in inputs.splits:
        labels: dict[str, int] = {}
        for key in inputs.models:
            mp = inputs.data[key].get(split)
            if mp is not None:
                labels.update(zip(mp.lesion_id, mp.y.tolist()))
        n, k = len(labels), sum(labels.values())
        ci = stats.proportion_ci(k, n, "wilson", alpha) if n else None
        out.append({"split": split, "lesions": n, "gist": k,
                    "prevalence": None if ci is None else {"estimate": ci.estimate, "lower": ci.lower,
                                                           "upper": ci.upper}})
    return out


def cohort_sections(inputs: EvaluationInputs, *, aggregation: str | None, alpha: float) -> dict[str, Any]:
    """``unit_of_analysis``, ``flow``, ``table1`` and ``prevalence`` of the report dictionary."""
    splits = inputs.splits
    agg = aggregation or "the bundle's aggregation rule"
    unit = {
        "unit": "lesion",
        "text": (f"The unit of analysis is the lesion: every model's image-level outputs are combined into one "
                 f"P(GIST) per lesion ({agg} over its analysed images), and every count, AUC, threshold metric, "
                 "calibration and decision curve is per lesion. Images are counted separately and never "
                 "enter a statistic as if they were lesions. Partitions are split by patient; the bootstrap "
                 "resamples patients."),
    }
    if inputs.lesions is None:
        return {"unit_of_analysis": unit, "flow": {"available": False, "reason": NO_LESION_TABLE},
                "table1": {"available": False, "reason": NO_LESION_TABLE},
                "prevalence": _prevalence(inputs, alpha)}
    return {"unit_of_analysis": unit,
            "flow": {"available": True, "rows": _flow(inputs.lesions, inputs, splits),
                     "exclusion_rule": "an image is excluded when no ultrasound sector, no lesion ROI or no "
                                       "radiomics could be obtained; a lesion without any analysable image "
                                       "is excluded from every model"},
            "table1": _table1(inputs.lesions, splits),
            "prevalence": _prevalence(inputs, alpha)}
