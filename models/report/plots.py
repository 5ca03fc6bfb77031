"""Figures of the evaluation report, drawn from the report dictionary (PNG, matplotlib Agg).

Each figure has one panel per modality, one line per classifier, so that the comparisons of paper
000/001 (radiomics vs deep vs combined) read side by side. ``matplotlib.figure.Figure`` is used
directly (no pyplot), which renders with Agg and leaves no global state behind.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from models.report.inputs import CLASSIFIERS, MODALITIES

__all__ = ["plot_roc", "plot_calibration", "plot_decision", "plot_decision_prevalence", "plot_delong", "plot_brier",
           "draw_banner"]

_COLOURS = {
    "svm": "#1f77b4",
    "xgboost": "#d62728",
    "rf": "#2ca02c",
    "lr-stacker": "#9467bd",
    "resnet34": "#ff7f0e",
    "resnet50": "#8c564b",
    "lasso-lr": "#17becf",
    "paper004-integrated": "#e377c2",
    "baseline": "#7f7f7f",
}
_OTHER_COLOURS = ("#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")


def _colour(key: str) -> str:
    """Colour of a model row by its classifier (``clf/modality``); unknown classifiers get a stable one."""
    clf = key.split("/")[0]
    if clf in _COLOURS:
        return _COLOURS[clf]
    return _OTHER_COLOURS[sum(clf.encode()) % len(_OTHER_COLOURS)]
_SYNTHETIC_TEXT = "SYNTHETIC PHANTOM DATA - NOT A CLINICAL RESULT"


def draw_banner(fig: Figure, synthetic: bool | None) -> None:
    """Stamp the provenance on the figure itself so a copied PNG still carries it."""
    if synthetic is False:
        return
    text = _SYNTHETIC_TEXT if synthetic else "DATA PROVENANCE UNKNOWN - NOT A CLINICAL RESULT"
    fig.text(0.5, 0.995, text, ha="center", va="top", fontsize=10, color="white", weight="bold",
             bbox={"facecolor": "#b00020", "edgecolor": "none", "pad": 3})


def _panels(models: list[str]) -> list[tuple[str, list[str]]]:
    by_mod: dict[str, list[str]] = {}
    for key in models:
        clf, mod = key.split("/", 1)
        by_mod.setdefault(mod, []).append(key)
    return [(m, sorted(by_mod[m], key=lambda k: CLASSIFIERS.index(k.split("/")[0]))) for m in MODALITIES if m in by_mod]


def _grid(n: int) -> tuple[Figure, list[Any]]:
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(5.0 * cols, 4.6 * rows + 0.4), dpi=100)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    return fig, axes


def _save(fig: Figure, path: Path, synthetic: bool | None, title: str) -> Path:
    fig.suptitle(title, y=0.965 if synthetic is not False else 0.99)
    draw_banner(fig, synthetic)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _auc_label(data: dict[str, Any], key: str, split: str) -> str:
    for row in data["table2"]["rows"]:
        if row["model"] == key and row["split"] == split and row.get("auc"):
            a = row["auc"]
            return f"{key.split('/')[0]} AUC {a['estimate']:.3f} ({a['lower']:.3f}-{a['upper']:.3f})"
    return key.split("/")[0]


def plot_roc(data: dict[str, Any], split: str, path: Path) -> Path | None:
    """ROC curves of every model on ``split``; returns None when there is nothing to draw."""
    curves = data["curves"]["roc"].get(split) or {}
    panels = _panels([k for k in data["models"] if k in curves])
    if not panels:
        return None
    fig, axes = _grid(len(panels))
    for ax, (mod, keys) in zip(axes, panels):
        for key in keys:
            c = curves[key]
            ax.step(c["fpr"], c["tpr"], where="post", color=_colour(key), lw=1.6,
                    label=_auc_label(data, key, split))
        ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
        ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="1 - specificity", ylabel="sensitivity", title=mod)
        ax.set_aspect("equal")
        ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path, data["synthetic"], f"ROC curves ({split})")


def plot_calibration(data: dict[str, Any], split: str, path: Path) -> Path | None:
    """Binned calibration curves (quantile bins) on ``split``."""
    curves = data["curves"]["calibration"].get(split) or {}
    panels = _panels([k for k in data["models"] if k in curves])
    if not panels:
        return None
    brier = {r["model"]: r["brier"] for r in data["table4"]["rows"] if r["split"] == split}
    fig, axes = _grid(len(panels))
    for ax, (mod, keys) in zip(axes, panels):
        for key in keys:
            c = curves[key]
            ax.plot(c["prob_pred"], c["prob_true"], marker="o", ms=4, color=_colour(key),
                    label=f"{key.split('/')[0]} Brier {brier[key]:.3f}")
        ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="ideal")
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="mean predicted P(GIST)", ylabel="observed GIST fraction", title=mod)
        ax.set_aspect("equal")
        ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path, data["synthetic"], f"Calibration curves ({split})")


def plot_decision_prevalence(data: dict[str, Any], split: str, path: Path) -> Path | None:
    """Decision curves at the stated deployment prevalence (``curves.decision_at_prevalence``)."""
    return plot_decision(data, split, path, which="decision_at_prevalence")


def plot_decision(data: dict[str, Any], split: str, path: Path, which: str = "decision") -> Path | None:
    """Decision curves (net benefit vs threshold probability) with treat-all and treat-none."""
    dec = data["curves"][which].get(split)
    if not dec or not dec["models"]:
        return None
    if which == "decision_at_prevalence":
        split = f"{split}, prevalence {dec['prevalence']:.2f}"
    panels = _panels([k for k in data["models"] if k in dec["models"]])
    thr = np.asarray(dec["thresholds"], dtype=float)
    all_nb = np.array([np.nan if v is None else v for v in dec["treat_all"]], dtype=float)
    top = max(0.05, float(np.nanmax(all_nb)) if np.isfinite(all_nb).any() else 0.05)
    fig, axes = _grid(len(panels))
    for ax, (mod, keys) in zip(axes, panels):
        for key in keys:
            nb = np.array([np.nan if v is None else v for v in dec["models"][key]["net_benefit"]], dtype=float)
            ax.plot(thr, nb, color=_colour(key), lw=1.6, label=key.split("/")[0])
        ax.plot(thr, all_nb, color="grey", lw=1, label="treat all")
        ax.axhline(0.0, color="black", lw=1, label="treat none")
        ax.set(xlim=(0, 1), ylim=(-0.05, top * 1.1), xlabel="threshold probability", ylabel="net benefit", title=mod)
        ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path, data["synthetic"], f"Decision curves ({split})")


def plot_delong(data: dict[str, Any], path: Path) -> Path | None:
    """Heat map of paired DeLong p values on the test split (Table 3)."""
    t3 = data["table3"]
    keys = t3["models"]
    if len(keys) < 2:
        return None
    idx = {k: i for i, k in enumerate(keys)}
    mat = np.full((len(keys), len(keys)), np.nan)
    for pr in t3["pairs"]:
        if pr["p_value"] is not None:
            i, j = idx[pr["a"]], idx[pr["b"]]
            mat[i, j] = mat[j, i] = pr["p_value"]
    size = 1.2 + 0.55 * len(keys)
    fig = Figure(figsize=(size + 3.0, size + 2.2), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(mat, vmin=0.0, vmax=1.0, cmap="viridis_r")
    for i in range(len(keys)):
        for j in range(len(keys)):
            if np.isfinite(mat[i, j]):
                ax.text(j, i, f"{mat[i, j]:.3f}", ha="center", va="center", fontsize=7,
                        color="black" if mat[i, j] < 0.5 else "white")
    ax.set_xticks(range(len(keys)), keys, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(keys)), keys, fontsize=8)
    fig.colorbar(im, ax=ax, label="DeLong p (two-sided)")
    return _save(fig, path, data["synthetic"], "Paired DeLong tests (test split)")


def plot_brier(data: dict[str, Any], path: Path) -> Path | None:
    """Bar chart of Brier scores per model (Table 4), one bar group per evaluation split."""
    rows = [r for r in data["table4"]["rows"] if r["split"] in ("test", "external")]
    if not rows:
        return None
    keys = [k for k in data["models"] if any(r["model"] == k for r in rows)]
    splits = [s for s in ("test", "external") if any(r["split"] == s for r in rows)]
    val = {(r["model"], r["split"]): r["brier"] for r in rows}
    width = 0.8 / len(splits)
    fig = Figure(figsize=(max(6.0, 0.7 * len(keys) + 2.0), 4.8), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for i, split in enumerate(splits):
        xs = [j + (i - (len(splits) - 1) / 2) * width for j in range(len(keys))]
        ys = [val.get((k, split), np.nan) for k in keys]
        ax.bar(xs, ys, width=width, label=split, color=("#4c72b0", "#dd8452")[i])
    ax.set_xticks(range(len(keys)), keys, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("Brier score (lower is better)")
    ax.legend(fontsize=8)
    return _save(fig, path, data["synthetic"], "Brier scores (Table 4)")
