"""Optional radiomics stability filter: drop features whose ICC under ROI perturbation is low.

Enabled by a ``stability`` section in the radiomics settings (absent: no filter, as before issue 16)::

    stability:
      icc_min: 0.75      # keep features with ICC(1,1) >= this (Koo & Li 2016: 0.75 = "good")
      perturb_px: 1      # the ROI eroded and dilated by this many pixels
      max_images: 40     # training images used (seeded sample)

Each sampled training image's features are computed on the ROI as drawn, eroded and dilated; a feature's
ICC(1,1) over those three conditions (``stats.icc``; Zwanenburg et al. 2019, Sci Rep 9:614) measures how
much of its variance is between lesions rather than between ROI versions. Only training images are used,
so the test and external sets never influence which features exist.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import stats
from models.radiomics_features import FeatureCache, RadiomicsError, RadiomicsExtractor

__all__ = ["stability_filter"]

log = logging.getLogger(__name__)


def stability_filter(samples: Sequence[Any], train_idx: np.ndarray, names: list[str], settings: dict[str, Any],
                     cache_dir: Path | None, seed: int) -> tuple[list[str], dict[str, Any] | None]:
    """Names of the features that pass the filter, and a summary (None when the filter is off).

    ``samples`` have ``.image``, ``.mask``, ``.mm_per_pixel`` and ``.radiomics`` (models._prepare.Sample).

    Raises
    ------
    ValueError
        A ``stability`` section with values out of range.
    """
    conf = settings.get("stability")
    if not conf:
        return names, None
    icc_min = float(conf.get("icc_min", 0.75))
    px = int(conf.get("perturb_px", 1))
    max_images = int(conf.get("max_images", 40))
    if not 0.0 < icc_min < 1.0 or px < 1 or max_images < 3:
        raise ValueError("radiomics settings: stability needs 0 < icc_min < 1, perturb_px >= 1, max_images >= 3")
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(train_idx, size=min(max_images, len(train_idx)), replace=False))
    ex = RadiomicsExtractor(settings, FeatureCache(None if cache_dir is None else cache_dir / "radiomics"),
                            only=set(names))
    used = 0
    rows: dict[str, list[tuple[float, float, float]]] = {n: [] for n in names}
    for i in pick:
        s = samples[int(i)]
        m = np.asarray(s.mask, dtype=bool)
        eroded = ndi.binary_erosion(m, iterations=px)
        dilated = ndi.binary_dilation(m, iterations=px) & (np.asarray(s.image) > 0)
        try:
            fe = ex.extract(s.image, eroded, spacing=s.mm_per_pixel or 1.0)
            fd = ex.extract(s.image, dilated, spacing=s.mm_per_pixel or 1.0)
        except RadiomicsError:
            continue
        used += 1
        for n in names:
            rows[n].append((float(s.radiomics.get(n, np.nan)), fe.get(n, np.nan), fd.get(n, np.nan)))
    if used < 3:
        log.warning("stability filter skipped: fewer than 3 training images could be perturbed")
        return names, {"icc_min": icc_min, "perturb_px": px, "images": used, "dropped": [],
                       "skipped": "fewer than 3 perturbable training images"}
    iccs: dict[str, float] = {}
    for n, vals in rows.items():
        arr = np.asarray(vals, dtype=np.float64)
        arr = arr[np.all(np.isfinite(arr), axis=1)]
        try:
            iccs[n] = stats.icc(arr).icc1 if arr.shape[0] >= 2 else float("nan")
        except ValueError:
            iccs[n] = float("nan")
    kept = [n for n in names if np.isfinite(iccs[n]) and iccs[n] >= icc_min]
    dropped = [n for n in names if n not in kept]
    return kept, {"icc_min": icc_min, "perturb_px": px, "images": used, "form": "ICC(1,1)",
                  "kept": len(kept), "dropped": dropped,
                  "icc": {n: (round(v, 4) if np.isfinite(v) else None) for n, v in iccs.items()}}
