"""Live performance per bundle version and month, from the audit's analyses and the reference
diagnoses and verdicts recorded as feedback.

Statistics come from ``stats`` (checked there against R's pROC and statsmodels): AUC with
its DeLong 95 % CI (pROC ``ci.auc``), sensitivity / specificity / PPV / NPV with Wilson CIs, the
binned calibration curve; agreement of the readers' verdicts with the model is the share of
``accept`` verdicts among all verdicts (Wilson CI). The validation reference is the configured
bundle's own test split (``evaluation/predictions.csv``, its primary model), whose DeLong CI the
monthly AUC is compared with: a month whose AUC falls outside it is flagged as drift.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Cell", "Validation", "live_table", "load_validation", "calibration_png"]


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclasses.dataclass(frozen=True)
class Validation:
    """The configured bundle's validation AUC (test split) with its DeLong CI."""

    bundle_version: str
    model: str
    n: int
    auc: float
    lower: float
    upper: float
    threshold: float | None


def load_validation(bundle_dir: Path) -> tuple[Validation | None, str | None]:
    """``(validation, None)`` or ``(None, why not)`` for the bundle folder in the settings."""
    from stats import roc_auc_ci

    root = Path(bundle_dir)
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        config = json.loads((root / "config.json").read_text(encoding="utf-8"))
        primary = str(config["primary"])
        clf, modality = primary.split("/", 1)
        y: list[int] = []
        p: list[float] = []
        with open(root / "evaluation" / "predictions.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                if (row["split"] == "test" and row["classifier"] == clf
                        and row["modality"] == modality):
                    y.append(int(float(row["y"])))
                    p.append(float(row["prob"]))
    except FileNotFoundError as exc:
        return None, f"the configured bundle has no {Path(str(exc.filename)).name}"
    except (OSError, ValueError, KeyError) as exc:
        return None, f"the configured bundle's evaluation cannot be read ({type(exc).__name__})"
    if sum(y) < 2 or len(y) - sum(y) < 2:
        return None, "the bundle's test split has too few cases for a DeLong CI"
    auc = roc_auc_ci(np.asarray(y), np.asarray(p))
    threshold = config.get("threshold")
    return Validation(str(manifest.get("version")), primary, len(y), float(auc.auc),
                      float(auc.ci_lower), float(auc.ci_upper),
                      float(threshold) if threshold is not None else None), None


@dataclasses.dataclass
class Cell:
    """One bundle version x month (``month`` = ``"all"`` for the bundle's whole history)."""

    bundle_version: str
    month: str
    analyses: int = 0
    no_analysis: int = 0
    y: list[int] = dataclasses.field(default_factory=list)
    p: list[float] = dataclasses.field(default_factory=list)
    verdicts: dict[str, int] = dataclasses.field(default_factory=dict)
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    drift: str | None = None

    def compute(self, threshold: float) -> None:
        from stats import diagnostic_metrics, proportion_ci, roc_auc_ci

        s: dict[str, Any] = {"n_paired": len(self.y), "n_gist": int(sum(self.y)),
                             "threshold": threshold}
        s["no_analysis_rate"] = (self.no_analysis / self.analyses) if self.analyses else None
        y, p = np.asarray(self.y, dtype=int), np.asarray(self.p, dtype=float)
        n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
        if n_pos >= 2 and n_neg >= 2:
            auc = roc_auc_ci(y, p)
            s["auc"] = (_num(auc.auc), _num(auc.ci_lower), _num(auc.ci_upper))
        if len(y):
            m = diagnostic_metrics(y, p, threshold)
            for name in ("sensitivity", "specificity", "ppv", "npv"):
                ci = getattr(m, name)
                s[name] = (_num(ci.estimate), _num(ci.lower), _num(ci.upper))
        total = sum(self.verdicts.values())
        if total:
            agree = proportion_ci(self.verdicts.get("accept", 0), total)
            s["agreement"] = (_num(agree.estimate), _num(agree.lower), _num(agree.upper))
        s["n_verdicts"] = total
        self.stats = s


def live_table(data: dict[str, Any], *, threshold: float,
               validation: Validation | None) -> list[Cell]:
    """Cells per bundle version and month, then one ``"all"`` cell per bundle.

    ``data`` is what ``QaReader.analyses`` returns. The latest analysis of each (bundle, study)
    counts, in the month it was made; a study with a recorded error counts as "no analysis".
    """
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in data["analyses"]:
        latest[(row["bundle_version"], row["study_uid"])] = row
    truths: dict[str, str] = data["truths"]
    verdicts: dict[str, dict[str, Any]] = data["verdicts"]
    cells: dict[tuple[str, str], Cell] = {}
    for (bundle, study), row in latest.items():
        month_cell = cells.get((bundle, row["month"]))
        if month_cell is None:
            month_cell = cells[(bundle, row["month"])] = Cell(bundle, row["month"])
        all_cell = cells.get((bundle, "all"))
        if all_cell is None:
            all_cell = cells[(bundle, "all")] = Cell(bundle, "all")
        both = (month_cell, all_cell)
        failed = row["failed"] or row["probability"] is None
        truth = None if failed else truths.get(study)
        verdict = None if failed else verdicts.get(study)
        if verdict is not None and verdict.get("bundle_version") not in (None, bundle):
            verdict = None
        for cell in both:
            cell.analyses += 1
            if failed:
                cell.no_analysis += 1
                continue
            if truth == "GIST" or truth == "leiomyoma":
                cell.y.append(1 if truth == "GIST" else 0)
                cell.p.append(float(row["probability"]))
            if verdict is not None:
                cell.verdicts[verdict["verdict"]] = cell.verdicts.get(verdict["verdict"], 0) + 1
    ordered = sorted(cells.values(), key=lambda c: (c.bundle_version, c.month == "all", c.month))
    for cell in ordered:
        cell.compute(threshold)
        auc = cell.stats.get("auc")
        if (validation is not None and auc is not None and cell.month != "all"
                and cell.bundle_version == validation.bundle_version
                and not validation.lower <= auc[0] <= validation.upper):
            cell.drift = (f"AUC {auc[0]:.3f} lies outside the validation CI "
                          f"{validation.lower:.3f}-{validation.upper:.3f}")
    return ordered


def calibration_png(cell: Cell, *, synthetic: bool | None) -> bytes | None:
    """Calibration plot (uniform bins, the evaluation report's figure style and banner) as PNG,
    or ``None`` without both classes."""
    import io

    from matplotlib.figure import Figure

    from models.report.plots import draw_banner
    from stats import brier_score, calibration_curve

    y, p = np.asarray(cell.y, dtype=int), np.asarray(cell.p, dtype=float)
    if len(y) < 2 or y.min() == y.max():
        return None
    curve = calibration_curve(y, p, n_bins=min(10, max(2, len(y) // 5)))
    fig = Figure(figsize=(5.0, 5.0), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(curve.prob_pred, curve.prob_true, marker="o", ms=4, color="#1f77b4",
            label=f"{cell.bundle_version} (n={len(y)}, Brier {brier_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="ideal")
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="mean predicted P(GIST)",
           ylabel="observed GIST fraction", title=f"Live calibration, {cell.month}")
    ax.set_aspect("equal")
    ax.legend(loc="upper left", fontsize=8)
    draw_banner(fig, synthetic)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
