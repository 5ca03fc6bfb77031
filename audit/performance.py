"""Live performance: the deployed model's predictions against the reference diagnoses QA recorded.

For each bundle version: the latest successful analysis of each study, paired with the study's
latest outcome (QA outcome or dashboard pathology feedback, whichever came last) (GIST = positive, leiomyoma = negative; "other" is left out), then AUC with its
DeLong 95 % CI (from 2 cases and 2 controls on; below that the point estimate only), sensitivity/specificity/PPV/NPV (Wilson CIs) at a threshold, and the Brier score,
all from ``stats`` (checked there against pROC). ``stats`` pulls in SciPy, so it is
imported only when performance is asked for.

The threshold is, unless one is given, the bundle's own operating threshold: the one its SRs used,
recorded by the worker with each analysis (``lesions[0].threshold`` of the analysis row); 0.5 for
a bundle whose analyses predate that record (``threshold_source`` says which).
"""

from __future__ import annotations

import json
import math
from typing import Any

from sqlalchemy import Connection, select

from audit.errors import QueryError
from audit.schema import AnalysisEvent, StudyProjection

__all__ = ["DEFAULT_THRESHOLD", "performance"]

#: Used only for a bundle none of whose analyses recorded its threshold.
DEFAULT_THRESHOLD = 0.5


def _num(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _recorded_threshold(lesions: str | None) -> float | None:
    """The threshold the worker recorded with an analysis (``None`` for older rows)."""
    try:
        value = json.loads(lesions or "[]")[0]["threshold"]
    except (ValueError, LookupError, TypeError):
        return None
    return float(value) if isinstance(value, (int, float)) and 0.0 < value <= 1.0 else None


def _paired(conn: Connection, f: Any
            ) -> tuple[dict[str, list[tuple[int, float]]], dict[str, dict[str, int]], dict[str, float]]:
    """bundle -> [(y, probability)] for studies with a GIST/leiomyoma outcome, the counts of
    analyses left out (no outcome yet, outcome "other") per bundle, and the threshold each bundle's
    latest analysis recorded."""
    from audit.queries import _time_range

    from audit.feedback import reference_truths

    truth = reference_truths(conn)  # later outcomes / pathology rows correct earlier ones
    an = AnalysisEvent
    stmt = select(an.seq, an.study_uid, an.bundle_version, an.probability, an.lesions).where(
        an.error.is_(None), an.probability.is_not(None), *_time_range(an.ts, f))
    if f.bundle:
        stmt = stmt.where(an.bundle_version == f.bundle)
    if f.label:
        stmt = stmt.where(an.label == f.label)
    if f.ae or f.accession:
        stmt = stmt.join(StudyProjection, StudyProjection.study_uid == an.study_uid)
        if f.ae:
            stmt = stmt.where(StudyProjection.calling_ae == f.ae)
        if f.accession:
            stmt = stmt.where(StudyProjection.accession == f.accession)
    latest: dict[tuple[str, str], float] = {}
    thresholds: dict[str, float] = {}
    for _seq, study_uid, bundle_version, probability, lesions in conn.execute(stmt.order_by(an.seq)):
        if probability is not None:  # filtered in SQL; keeps the type checker honest
            latest[(bundle_version, study_uid)] = float(probability)
        recorded = _recorded_threshold(lesions)
        if recorded is not None:
            thresholds[bundle_version] = recorded
    out: dict[str, list[tuple[int, float]]] = {}
    counts: dict[str, dict[str, int]] = {}
    for (bundle, study), p in latest.items():
        c = counts.setdefault(bundle, {"no_outcome": 0, "other": 0})
        t = truth.get(study)
        if t is None:
            c["no_outcome"] += 1
        elif t == "other":
            c["other"] += 1
        else:
            out.setdefault(bundle, []).append((1 if t == "GIST" else 0, p))
    for bundle in counts:
        out.setdefault(bundle, [])
    return out, counts, thresholds


def performance(conn: Connection, f: Any, *, threshold: float | None = None) -> list[dict[str, Any]]:
    """One row per bundle version: counts, AUC (95 % CI), metrics at a threshold, Brier score.

    ``threshold``: the operating point for sensitivity/specificity/PPV/NPV; ``None`` (default)
    uses each bundle's recorded threshold (see the module docstring).

    Raises
    ------
    QueryError
        ``threshold`` outside (0, 1].
    """
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise QueryError(f"threshold must lie in (0, 1], got {threshold}")
    import numpy as np

    from stats import brier_score, diagnostic_metrics, roc_auc_ci

    pairs, counts, recorded = _paired(conn, f)
    rows: list[dict[str, Any]] = []
    for bundle in sorted(pairs):
        data = pairs[bundle]
        if threshold is not None:
            used, source = threshold, "given"
        elif bundle in recorded:
            used, source = recorded[bundle], "bundle"
        else:
            used, source = DEFAULT_THRESHOLD, "default (not recorded)"
        y = np.array([d[0] for d in data], dtype=int)
        p = np.array([d[1] for d in data], dtype=float)
        n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
        row: dict[str, Any] = {
            "bundle_version": bundle, "n": len(y), "n_gist": n_pos, "n_leiomyoma": n_neg,
            "n_other_excluded": counts[bundle]["other"],
            "n_without_outcome": counts[bundle]["no_outcome"],
            "auc": None, "auc_ci_lower": None, "auc_ci_upper": None, "threshold": used,
            "threshold_source": source,
        }
        if n_pos >= 2 and n_neg >= 2:
            auc = roc_auc_ci(y, p)
            row.update(auc=_num(auc.auc), auc_ci_lower=_num(auc.ci_lower),
                       auc_ci_upper=_num(auc.ci_upper))
        elif n_pos and n_neg:
            # Too few for a DeLong variance: the point estimate only (Mann-Whitney, ties = 1/2).
            diff = p[y == 1][:, None] - p[y == 0][None, :]
            row["auc"] = float(np.mean((diff > 0) + 0.5 * (diff == 0)))
        if len(y):
            m = diagnostic_metrics(y, p, used)
            row.update(tp=m.tp, fp=m.fp, tn=m.tn, fn=m.fn)
            for name in ("sensitivity", "specificity", "ppv", "npv"):
                ci = getattr(m, name)
                row[name] = _num(ci.estimate)
                row[f"{name}_ci"] = [_num(ci.lower), _num(ci.upper)]
            row["brier"] = _num(brier_score(y, p))
        rows.append(row)
    return rows
