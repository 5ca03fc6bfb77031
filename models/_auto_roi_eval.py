"""Training stage 5b: the bundle's models scored with the automatic ROI on the test and external sets.

The worker takes the lesion from a DICOM SEG when one arrives and otherwise finds it itself
(:func:`models.roi.auto_roi`). The models are fitted and first evaluated with the SEG ROI; this stage
re-scores every deployable model (what the bundle stores: the single models, the stackers, the
end-to-end networks) on the same test/external images with the automatic ROI instead, computed exactly
as the worker does (same preprocessing, ROI settings, radiomics settings, lesion window, backbone and
scoring rule :func:`models.scoring.model_probabilities`), and aggregates to lesions the same way.

TRIPOD+AI item 12 (the predictors as they are measured where the model is used) and CLAIM item 19
(how the ROI was obtained) ask for exactly this. Images on which the automatic ROI finds no lesion,
or pyradiomics refuses it, are left out (as the worker leaves them out); a lesion with no image left is
counted as not analysable with the automatic ROI (the worker would answer it with a no-lesion report).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ._prepare import Sample
from .classifiers import aggregate
from .deep_features import Net
from .preprocess import lesion_window
from .scoring import model_probabilities

__all__ = ["auto_roi_lesion_probabilities"]

SPLITS = ("test", "external")


def auto_roi_lesion_probabilities(
    samples: list[Sample],
    data: pd.DataFrame,
    models: Mapping[str, Any],
    rad_names: list[str],
    net: Net,
    end_to_end: Mapping[str, Net],
    *,
    image_size: int,
    window_mm: float,
    aggregation: str,
    device: str,
) -> tuple[dict[str, dict[str, pd.Series]], dict[str, Any]]:
    """Lesion probabilities of every deployable model with the automatic ROI, and the coverage.

    Parameters
    ----------
    samples : list of Sample, one per row of ``data``
        From :func:`models._prepare.prepare`; test/external rows carry ``auto_mask``/``auto_radiomics``.
    data : DataFrame
        Columns ``split`` and ``lesion_key``, aligned with ``samples``.
    models : mapping
        The bundle's models (pipelines and late-fusion records).
    rad_names : list of str
        Radiomics feature order of the models' inputs.
    net, end_to_end
        The bundle's backbone and end-to-end networks.
    image_size, window_mm, aggregation, device
        As in the bundle's config (lesion window and image -> lesion aggregation).

    Returns
    -------
    (lesion_probs, coverage)
        ``lesion_probs[model_key][split]``: Series of P(GIST) indexed by lesion key.
        ``coverage[split]``: images and lesions analysed with the SEG and with the automatic ROI, and
        the reasons images were left out (counts by exception type).
    """
    split = data["split"].to_numpy()
    lesion = data["lesion_key"].to_numpy()
    coverage: dict[str, Any] = {}
    keep: list[int] = []
    for sp in SPLITS:
        rows = np.flatnonzero(split == sp)
        if not rows.size:
            continue
        ok = [int(i) for i in rows if samples[i].auto_radiomics is not None and samples[i].auto_mask is not None]
        reasons: dict[str, int] = {}
        for i in rows:
            err = samples[i].auto_error
            if err:
                kind = err.split(":", 1)[0]
                reasons[kind] = reasons.get(kind, 0) + 1
        coverage[sp] = {
            "images_seg": int(rows.size), "images_auto": len(ok),
            "lesions_seg": int(len(set(lesion[rows]))), "lesions_auto": int(len(set(lesion[ok]))),
            "images_left_out": reasons,
        }
        keep.extend(ok)
    if not keep:
        return {}, coverage
    sel = [samples[i] for i in keep]
    Xr = np.array([[s.auto_radiomics.get(n, np.nan) if s.auto_radiomics else np.nan for n in rad_names]
                   for s in sel], dtype=np.float64)
    windows = [lesion_window(s.image, s.auto_mask, image_size, mm_per_pixel=s.mm_per_pixel, window_mm=window_mm)
               for s in sel]
    Xd = net.features(windows, device).astype(np.float64)
    e2e_cache: dict[str, np.ndarray] = {}

    def e2e(name: str) -> np.ndarray:
        if name not in e2e_cache:
            e2e_cache[name] = end_to_end[name].predict_proba(windows, device)
        return e2e_cache[name]

    keys = [k for k in models if "/" in k] + [f"{n}/end-to-end" for n in end_to_end]
    sp_keep = split[keep]
    les_keep = lesion[keep]
    out: dict[str, dict[str, pd.Series]] = {}
    for key in keys:
        p = model_probabilities(models, key, Xr, Xd, e2e)
        out[key] = {sp: aggregate(p[sp_keep == sp], les_keep[sp_keep == sp], aggregation)
                    for sp in SPLITS if (sp_keep == sp).any()}
    return out, coverage
