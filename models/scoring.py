"""Image probabilities of one bundle model from its feature matrices: the one scoring rule that the
worker's :meth:`models.bundle.Bundle.predict` and training's evaluation with the automatic ROI share.

A model key is ``"<classifier>/<modality>"``:

- ``radiomics`` / ``deep`` / ``combined``: a fitted scikit-learn pipeline on the radiomics matrix, the
  Transformer feature matrix, or both side by side (radiomics columns first);
- ``late-fusion``: ``{"model": stacker, "inputs": [keys]}``, a logistic regression on the logits of the
  input models' probabilities (ours, or paper 004's integrated model);
- ``end-to-end``: a fine-tuned network, scored by the caller's ``end_to_end`` callback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = ["model_probabilities"]


def model_probabilities(models: Mapping[str, Any], key: str, Xr: np.ndarray, Xd: np.ndarray,
                        end_to_end: Callable[[str], np.ndarray] | None = None) -> np.ndarray:
    """P(GIST) per image for model ``key``.

    Parameters
    ----------
    models : mapping
        The bundle's models (``models.skops``): pipelines and late-fusion records.
    key : str
        ``"<classifier>/<modality>"``.
    Xr : ndarray, shape (n_images, n_radiomics)
        Radiomics features in the bundle's ``radiomics_features`` order.
    Xd : ndarray, shape (n_images, n_deep)
        Transformer features of the images' lesion windows.
    end_to_end : callable, optional
        ``name -> (n_images,)`` probabilities of the end-to-end network ``name``.

    Returns
    -------
    ndarray, shape (n_images,), float64 in [0, 1]

    Raises
    ------
    KeyError
        ``key`` (or a late-fusion input) is not in ``models``, or an end-to-end model without ``end_to_end``.
    """
    clf, _, modality = key.partition("/")
    if modality == "end-to-end":
        if end_to_end is None:
            raise KeyError(f"{key}: no end-to-end network given")
        return np.asarray(end_to_end(clf), dtype=np.float64)
    if modality == "late-fusion":
        from .classifiers import logit

        stack = models[key]
        P = np.column_stack([model_probabilities(models, k, Xr, Xd, end_to_end) for k in stack["inputs"]])
        return np.asarray(stack["model"].predict_proba(logit(P))[:, 1], dtype=np.float64)
    X = {"radiomics": Xr, "deep": Xd, "combined": np.hstack([Xr, Xd])}[modality]
    return np.asarray(models[key].predict_proba(X)[:, 1], dtype=np.float64)
