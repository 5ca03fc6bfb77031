"""Optional radiomics stability filter (ICC(1,1) under ROI erosion/dilation), issue 16."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import stats
from models._stability import stability_filter
from models.radiomics_features import RadiomicsExtractor

NAMES = ["original_shape2D_PixelSurface", "original_firstorder_Mean", "original_glcm_ClusterShade"]


def _samples(n: int = 6) -> list[SimpleNamespace]:
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:80, :80]
    out = []
    ex = RadiomicsExtractor(only=set(NAMES))
    for i in range(n):
        mask = np.hypot(yy - 40, xx - 40) < 8 + 3 * i
        img = np.clip(rng.normal(120, 20, (80, 80)) - 30 * mask, 10, 240).round()
        out.append(SimpleNamespace(image=img, mask=mask, mm_per_pixel=1.0, radiomics=ex.extract(img, mask)))
    return out


def test_filter_off_without_a_stability_section() -> None:
    names, summary = stability_filter([], np.arange(0), NAMES, {"setting": {}}, None, 0)
    assert names == NAMES and summary is None


def test_filter_keeps_exactly_the_features_above_the_threshold() -> None:
    samples = _samples()
    settings = {**RadiomicsExtractor().params, "stability": {"icc_min": 0.9, "perturb_px": 1, "max_images": 6}}
    kept, summary = stability_filter(samples, np.arange(6), NAMES, settings, None, 0)
    assert summary is not None and summary["images"] == 6 and summary["form"] == "ICC(1,1)"
    icc = summary["icc"]
    assert kept == [n for n in NAMES if icc[n] is not None and icc[n] >= 0.9]
    assert summary["dropped"] == [n for n in NAMES if n not in kept]
    # area differs between lesions (radii 8..23 px) far more than between ROI versions: stable
    assert "original_shape2D_PixelSurface" in kept
    # the summary's ICC is stats.icc over (drawn, eroded, dilated) of the same images
    from scipy import ndimage as ndi

    ex = RadiomicsExtractor(only=set(NAMES))
    table = []
    for s in samples:
        e = ex.extract(s.image, ndi.binary_erosion(s.mask), 1.0)
        d = ex.extract(s.image, ndi.binary_dilation(s.mask) & (s.image > 0), 1.0)
        table.append([s.radiomics[NAMES[1]], e[NAMES[1]], d[NAMES[1]]])
    assert icc[NAMES[1]] == pytest.approx(stats.icc(table).icc1, abs=1e-4)


def test_bad_stability_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="icc_min"):
        stability_filter([], np.arange(0), NAMES, {"stability": {"icc_min": 1.5}}, None, 0)
