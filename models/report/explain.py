"""SHAP explanations of a fitted classifier: top features as a PNG and a CSV.

Tree models (XGBoost, random forest, extra trees, gradient boosting, a decision tree; also the last step
of an sklearn ``Pipeline`` whose earlier steps keep the columns) use ``shap.TreeExplainer`` (exact,
fast; XGBoost values are in log-odds, forests' in probability). Anything else with ``predict_proba``
(the SVM, stackers, wrapped models) uses ``shap.PermutationExplainer`` on P(GIST) with a small
background sample; the number of explained rows is cut so that the model is evaluated at most
``eval_budget`` times, which bounds the run time whatever the feature count.

Bundle input (optional): ``evaluation/shap.json`` in the bundle, paths relative to the bundle root::

    {"entries": [
        {"model": "xgboost/combined",                         # "<classifier>/<modality>"
         "estimator": "evaluation/shap/xgboost_combined.skops",  # skops file of the fitted estimator
         "features": "evaluation/shap/features_test_combined.csv",  # rows to explain
         "background": "evaluation/shap/features_train_combined.csv"}  # optional; default = features
    ]}

A features CSV has a first column ``lesion_id`` then one named numeric column per feature, in the order
the estimator's ``predict_proba`` expects; column 1 of ``predict_proba`` is P(GIST).
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray
from matplotlib.figure import Figure

from models.report.inputs import ReportInputError

__all__ = [
    "ShapResult",
    "ShapEntry",
    "explain_model",
    "save_shap_outputs",
    "read_features_csv",
    "read_shap_manifest",
    "load_estimator",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShapResult:
    """SHAP values of one model and the features ranked by mean absolute SHAP value."""

    method: str  # "tree" | "permutation"
    output: str  # what the values explain, e.g. "P(GIST)" or "log-odds of GIST"
    feature_names: tuple[str, ...]
    values: NDArray[np.float64]  # (n_explained, n_features)
    data: NDArray[np.float64]  # the explained rows, same shape
    mean_abs: NDArray[np.float64]  # (n_features,)
    n_background: int
    seconds: float

    def ranking(self, top: int = 20) -> list[tuple[int, str, float]]:
        """``(rank, feature, mean |SHAP|)`` for the ``top`` features, rank 1 = most important."""
        order = np.argsort(-self.mean_abs, kind="mergesort")[:top]
        return [(i + 1, self.feature_names[j], float(self.mean_abs[j])) for i, j in enumerate(order)]


@dataclass(frozen=True)
class ShapEntry:
    """One model to explain, as listed in ``evaluation/shap.json``."""

    model: str
    estimator: Path
    features: Path
    background: Path | None


def _tree_types() -> tuple[type, ...]:
    from sklearn.ensemble import ExtraTreesClassifier, GradientBoostingClassifier, RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    types: list[type] = [RandomForestClassifier, ExtraTreesClassifier, GradientBoostingClassifier,
                         DecisionTreeClassifier]
    try:
        from xgboost import XGBClassifier

        types.append(XGBClassifier)
    except ImportError:  # pragma: no cover - xgboost is a declared dependency
        pass
    return tuple(types)


def _split_pipeline(estimator: Any, x: NDArray[np.float64]) -> tuple[Any, Callable[[Any], Any] | None]:
    """The final estimator and the transform in front of it (None if not a Pipeline)."""
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline) and len(estimator.steps) > 1:
        prefix = estimator[:-1]
        return estimator[-1], prefix.transform
    return estimator, None


def _as_frame_if_named(estimator: Any, x: NDArray[np.float64], names: tuple[str, ...]) -> Any:
    # estimators fitted on a DataFrame warn (or fail) when given a bare array
    if hasattr(estimator, "feature_names_in_"):
        import pandas as pd

        return pd.DataFrame(x, columns=list(names))
    return x


def explain_model(
    estimator: Any,
    x: NDArray[np.float64],
    feature_names: list[str] | tuple[str, ...],
    background: NDArray[np.float64] | None = None,
    *,
    max_background: int = 50,
    max_explain: int = 100,
    eval_budget: int = 500_000,
    seed: int = 0,
    permutations: int = 5,
) -> ShapResult:
    """Compute SHAP values of ``estimator`` for (a sample of) ``x``.

    Parameters
    ----------
    estimator : fitted classifier with ``predict_proba`` (column 1 = P(GIST))
    x : ndarray (n, p)
        Rows to explain (e.g. the test set); at most ``max_explain`` are used (random, seeded).
    feature_names : sequence of str
        Length ``p``.
    background : ndarray (m, p), optional
        Reference rows for the model-agnostic explainer (default ``x``); at most ``max_background``.
    eval_budget : int
        Upper bound on model evaluations (rows predicted) for the permutation explainer.
    permutations : int
        Antithetic permutations per explained row for the permutation explainer (each costs 2p
        evaluations; ``shap.PermutationExplainer`` with ``max_evals = permutations * 2p + 1``). One
        permutation gives exact values only for additive models; more average out the order effect.

    Returns
    -------
    ShapResult

    Raises
    ------
    ValueError
        Shapes disagree, fewer than one row or feature, or the estimator has no ``predict_proba``.
    """
    import shap

    x = np.asarray(x, dtype=np.float64)
    names = tuple(str(n) for n in feature_names)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x must be a non-empty 2-D array, got shape {x.shape}")
    if len(names) != x.shape[1]:
        raise ValueError(f"{len(names)} feature names for {x.shape[1]} columns")
    if not hasattr(estimator, "predict_proba"):
        raise ValueError(f"{type(estimator).__name__} has no predict_proba")
    bg = x if background is None else np.asarray(background, dtype=np.float64)
    if bg.ndim != 2 or bg.shape[1] != x.shape[1]:
        raise ValueError(f"background has shape {bg.shape}, expected (m, {x.shape[1]})")
    rng = np.random.default_rng(seed)
    if x.shape[0] > max_explain:
        x = x[np.sort(rng.choice(x.shape[0], max_explain, replace=False))]
    if bg.shape[0] > max_background:
        bg = bg[np.sort(rng.choice(bg.shape[0], max_background, replace=False))]

    t0 = time.perf_counter()
    final, transform = _split_pipeline(estimator, x)
    if isinstance(final, _tree_types()):
        xt = x if transform is None else np.asarray(transform(_as_frame_if_named(estimator, x, names)), dtype=np.float64)
        if xt.shape == x.shape:
            exp = shap.TreeExplainer(final)
            raw = exp.shap_values(_as_frame_if_named(final, xt, names))
            # per-class output (forests): a list per class or a trailing class axis; keep GIST
            vals = np.asarray(raw[1] if isinstance(raw, list) else raw, dtype=np.float64)
            if vals.ndim == 3:
                vals = vals[..., 1]
            xgb = type(final).__name__.startswith("XGB")
            output = "log-odds of GIST" if xgb else "P(GIST)"
            return ShapResult("tree", output, names, vals, x, np.abs(vals).mean(axis=0), 0,
                              time.perf_counter() - t0)
        log.info("pipeline changes the feature space; using the permutation explainer")

    p = x.shape[1]
    if permutations < 1:
        raise ValueError(f"permutations must be >= 1, got {permutations}")
    max_evals = permutations * 2 * p + 1
    n_bg = bg.shape[0]
    while n_bg > 10 and max_evals * n_bg * min(x.shape[0], 10) > eval_budget:
        n_bg = max(10, n_bg // 2)
    bg = bg[:n_bg]
    n_rows = max(1, min(x.shape[0], eval_budget // (max_evals * n_bg)))
    x = x[:n_rows]

    def f(a: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(estimator.predict_proba(_as_frame_if_named(estimator, a, names)), dtype=np.float64)[:, 1]

    masker = shap.maskers.Independent(bg, max_samples=n_bg)
    explainer = shap.PermutationExplainer(f, masker, feature_names=list(names), seed=seed)
    ex = explainer(x, max_evals=max_evals, silent=True)
    vals = np.asarray(ex.values, dtype=np.float64)
    return ShapResult("permutation", "P(GIST)", names, vals, x, np.abs(vals).mean(axis=0), n_bg,
                      time.perf_counter() - t0)


def save_shap_outputs(result: ShapResult, out_dir: Path, stem: str, title: str, top: int = 20,
                      banner: Callable[[Figure], None] | None = None) -> tuple[Path, Path]:
    """Write ``<stem>.csv`` (rank, feature, mean_abs_shap) and ``<stem>.png`` (bar + beeswarm).

    Returns
    -------
    (png_path, csv_path)
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    ranking = result.ranking(top)
    csv_path = out_dir / f"{stem}.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["rank", "feature", "mean_abs_shap"])
        for rank, name, val in ranking:
            w.writerow([rank, name, f"{val:.10g}"])

    k = len(ranking)
    fig = Figure(figsize=(12.0, 1.4 + 0.32 * k), dpi=100)
    ax_bar = fig.add_subplot(1, 2, 1)
    ax_sw = fig.add_subplot(1, 2, 2)
    labels = [name for _, name, _ in ranking][::-1]
    ax_bar.barh(range(k), [v for _, _, v in ranking][::-1], color="#1f77b4")
    ax_bar.set_yticks(range(k), labels, fontsize=8)
    ax_bar.set_xlabel(f"mean |SHAP| ({result.output})")
    rng = np.random.default_rng(0)
    idx = {n: j for j, n in enumerate(result.feature_names)}
    for row, name in enumerate(labels):
        j = idx[name]
        v = result.values[:, j]
        d = result.data[:, j]
        span = float(np.ptp(d))
        colour = (d - d.min()) / span if span > 0 else np.full_like(d, 0.5)
        ax_sw.scatter(v, row + rng.uniform(-0.25, 0.25, v.size), c=colour, cmap="coolwarm", s=8, vmin=0, vmax=1)
    ax_sw.axvline(0.0, color="grey", lw=0.8)
    ax_sw.set_yticks(range(k), [""] * k)
    ax_sw.set_xlabel("SHAP value (colour: feature value, low blue / high red)")
    fig.suptitle(f"{title} - top {k} features ({result.method} explainer, n={result.values.shape[0]})",
                 y=0.965 if banner else 0.99)
    if banner:
        banner(fig)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    png_path = out_dir / f"{stem}.png"
    fig.savefig(png_path, format="png")
    return png_path, csv_path


def read_features_csv(path: Path) -> tuple[list[str], list[str], NDArray[np.float64]]:
    """Read a features CSV: returns (lesion ids, feature names, matrix).

    Raises
    ------
    ReportInputError
        Missing file, no ``lesion_id`` first column, no feature columns, or a non-numeric value.
    """
    if not path.is_file():
        raise ReportInputError(f"features file not found: {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or not rows[0] or rows[0][0] != "lesion_id":
        raise ReportInputError(f"{path.name}: first column must be lesion_id")
    names = rows[0][1:]
    if not names:
        raise ReportInputError(f"{path.name}: no feature columns")
    if len(rows) < 2:
        raise ReportInputError(f"{path.name}: no rows")
    ids: list[str] = []
    mat = np.empty((len(rows) - 1, len(names)))
    for i, r in enumerate(rows[1:]):
        if len(r) != len(names) + 1:
            raise ReportInputError(f"{path.name} line {i + 2}: {len(r)} fields, expected {len(names) + 1}")
        ids.append(r[0])
        try:
            mat[i] = [float(v) for v in r[1:]]
        except ValueError:
            raise ReportInputError(f"{path.name} line {i + 2}: non-numeric feature value") from None
    if not np.all(np.isfinite(mat)):
        raise ReportInputError(f"{path.name}: NaN or infinite feature values")
    return ids, names, mat


def load_estimator(path: Path) -> Any:
    """Load a fitted estimator stored with ``models.safe_store`` (skops; types checked against its
    trusted list before anything is built, so the file cannot run code).

    Raises
    ------
    ReportInputError
        The file is missing, is not a skops file (a pickle, say), names an untrusted type, or has
        no ``predict_proba``.
    """
    from models.safe_store import UnsafeModelFile, load_models

    if not path.is_file():
        raise ReportInputError(f"model file not found: {path}")
    try:
        est = load_models(path)
    except (UnsafeModelFile, OSError) as exc:
        raise ReportInputError(f"{path.name}: cannot load estimator ({exc})") from exc
    if not hasattr(est, "predict_proba"):
        raise ReportInputError(f"{path.name}: {type(est).__name__} has no predict_proba")
    return est


def read_shap_manifest(path: Path, root: Path) -> list[ShapEntry]:
    """Parse ``evaluation/shap.json`` (format in the module docstring); paths resolve against ``root``.

    Raises
    ------
    ReportInputError
        Not valid JSON or entries malformed.
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportInputError(f"{path.name}: cannot read ({exc})") from exc
    entries = raw.get("entries") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise ReportInputError(f"{path.name}: needs an \"entries\" list")
    out: list[ShapEntry] = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not all(isinstance(e.get(k), str) for k in ("model", "estimator", "features")):
            raise ReportInputError(f"{path.name}: entry {i} needs string keys model, estimator, features")
        bg = e.get("background")
        out.append(ShapEntry(model=e["model"], estimator=root / e["estimator"], features=root / e["features"],
                             background=root / bg if isinstance(bg, str) else None))
    return out
