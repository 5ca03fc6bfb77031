"""Which input columns can a fitted scikit-learn model's output depend on?

Read from the fitted steps, exactly, never guessed: a feature selector (anything with
``get_support``: ``SelectFromModel`` after LASSO, ``VarianceThreshold``, ``SelectKBest``) keeps the
columns its support names; column-wise steps (imputers, scalers) map column *i* to column *i*
(``SimpleImputer`` drops columns that were empty at fit unless ``keep_empty_features``); a
``ColumnTransformer`` routes its column slices; the final estimator needs all its inputs. Any step
this module does not know makes every one of its inputs needed, so the answer can be too large but
never too small. The bundle uses it to skip radiomics features no model can use (issue 21).

Source: scikit-learn's ``Pipeline``, ``ColumnTransformer``, ``SelectorMixin.get_support`` and
``SimpleImputer`` (``statistics_``, ``keep_empty_features``) API documentation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["needed_inputs"]

_COLUMNWISE = {"StandardScaler", "RobustScaler", "MinMaxScaler", "MaxAbsScaler", "QuantileTransformer",
               "PowerTransformer", "FunctionTransformer_identity"}


def _all(n: int) -> np.ndarray:
    return np.ones(n, dtype=bool)


def _step_inputs(step: Any, needed_out: np.ndarray, n_in: int) -> tuple[np.ndarray, bool]:
    """Inputs of one fitted step needed for ``needed_out``; second value: the step is known."""
    name = type(step).__name__
    if step is None or step == "passthrough":
        return needed_out.copy(), True
    if hasattr(step, "get_support") and hasattr(step, "transform"):
        support = np.asarray(step.get_support(), dtype=bool)
        if support.size != n_in or support.sum() != needed_out.size:
            return _all(n_in), False
        out = np.zeros(n_in, dtype=bool)
        out[np.flatnonzero(support)[needed_out]] = True
        return out, True
    if name == "SimpleImputer":
        stats = np.asarray(step.statistics_, dtype=float)
        if stats.size != n_in or getattr(step, "add_indicator", False):
            return _all(n_in), False
        kept = np.ones(n_in, dtype=bool) if getattr(step, "keep_empty_features", False) else ~np.isnan(stats)
        if kept.sum() != needed_out.size:
            return _all(n_in), False
        out = np.zeros(n_in, dtype=bool)
        out[np.flatnonzero(kept)[needed_out]] = True
        return out, True
    if name in _COLUMNWISE:
        if needed_out.size != n_in:
            return _all(n_in), False
        return needed_out.copy(), True
    return _all(n_in), False


def _n_out(step: Any, n_in: int) -> int | None:
    """Columns a fitted transformer gives for ``n_in`` inputs, when this module can tell."""
    name = type(step).__name__
    if step is None or step == "passthrough" or name in _COLUMNWISE:
        return n_in
    if hasattr(step, "get_support") and hasattr(step, "transform"):
        return int(np.asarray(step.get_support(), dtype=bool).sum())
    if name == "SimpleImputer" and not getattr(step, "add_indicator", False):
        stats = np.asarray(step.statistics_, dtype=float)
        return n_in if getattr(step, "keep_empty_features", False) else int((~np.isnan(stats)).sum())
    if hasattr(step, "transformers_"):
        total = 0
        for _, tr, cols in step.transformers_:
            if tr == "drop":
                continue
            idx = _columns(cols, n_in)
            if idx is None:
                return None
            inner = _n_out(tr, idx.size) if not hasattr(tr, "steps") else _pipeline_n_out(tr, idx.size)
            if inner is None:
                return None
            total += inner
        return total
    if hasattr(step, "steps"):
        return _pipeline_n_out(step, n_in)
    return None


def _pipeline_n_out(pipe: Any, n_in: int) -> int | None:
    n: int | None = n_in
    for _, step in pipe.steps:
        if n is None:
            return None
        n = _n_out(step, n)
    return n


def _columns(cols: Any, n_in: int) -> np.ndarray | None:
    if isinstance(cols, slice):
        return np.arange(n_in)[cols]
    arr = np.asarray(cols)
    if arr.dtype == bool and arr.size == n_in:
        return np.flatnonzero(arr)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(int)
    return None  # column names: this module works on positions only


def _transformer_inputs(step: Any, needed_out: np.ndarray, n_in: int) -> np.ndarray:
    if hasattr(step, "transformers_"):  # ColumnTransformer: outputs are its parts, in order
        out = np.zeros(n_in, dtype=bool)
        pos = 0
        for _, tr, cols in step.transformers_:
            if tr == "drop":
                continue
            idx = _columns(cols, n_in)
            if idx is None:
                return _all(n_in)
            width = _pipeline_n_out(tr, idx.size) if hasattr(tr, "steps") else _n_out(tr, idx.size)
            if width is None:
                return _all(n_in)
            part = needed_out[pos:pos + width]
            pos += width
            if part.any():
                inner = (_pipeline_inputs(tr, part, idx.size) if hasattr(tr, "steps")
                         else _step_inputs(tr, part, idx.size)[0])
                out[idx[inner]] = True
        if pos != needed_out.size:
            return _all(n_in)
        return out
    if hasattr(step, "steps"):
        return _pipeline_inputs(step, needed_out, n_in)
    return _step_inputs(step, needed_out, n_in)[0]


def _pipeline_inputs(pipe: Any, needed_out: np.ndarray, n_in: int) -> np.ndarray:
    widths = [n_in]
    for _, step in pipe.steps:
        n = _n_out(step, widths[-1])
        if n is None:
            return _all(n_in)
        widths.append(n)
    if widths[-1] != needed_out.size:
        return _all(n_in)
    needed = needed_out
    for (_, step), width in zip(reversed(pipe.steps), reversed(widths[:-1])):
        needed = _transformer_inputs(step, needed, width)
    return needed


def needed_inputs(model: Any, n_features: int) -> np.ndarray:
    """(n_features,) bool: the input columns ``model``'s predictions can depend on.

    ``model`` is a fitted estimator: a ``Pipeline`` of transformers ending in a classifier (all of
    whose inputs count), or a bare classifier (every column needed).
    """
    if not hasattr(model, "steps"):
        return _all(n_features)
    *transforms, (_, final) = model.steps
    widths = [n_features]
    for _, step in transforms:
        n = _n_out(step, widths[-1])
        if n is None:
            return _all(n_features)
        widths.append(n)
    needed = _all(widths[-1])  # the classifier uses every column it is given
    for (_, step), width in zip(reversed(transforms), reversed(widths[:-1])):
        needed = _transformer_inputs(step, needed, width)
    return needed
