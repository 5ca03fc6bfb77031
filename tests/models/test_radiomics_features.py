"""pyradiomics 2D extraction, physical units, and the on-disk cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.radiomics_features import FeatureCache, RadiomicsError, RadiomicsExtractor


def _disk(shape: tuple[int, int] = (96, 96), radius: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.hypot(yy - shape[0] / 2, xx - shape[1] / 2) < radius
    img = rng.gamma(2.0, 30.0, size=shape)
    img[mask] *= 0.4
    return np.clip(img, 0, 255).astype(np.uint8), mask


def test_all_feature_classes_and_filters_are_computed() -> None:
    img, mask = _disk()
    feats = RadiomicsExtractor().extract(img, mask)
    prefixes = {k.split("_")[0] for k in feats}
    classes = {k.split("_")[1] for k in feats}
    assert {"original", "wavelet-LL", "wavelet-HH", "log-sigma-1-mm-2D", "log-sigma-3-mm-2D"} <= prefixes
    assert {"shape2D", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"} <= classes
    assert all(np.isfinite(v) for v in feats.values())


def test_shape_features_are_in_physical_units() -> None:
    img, mask = _disk()
    a1 = RadiomicsExtractor().extract(img, mask, spacing=1.0)["original_shape2D_PixelSurface"]
    a2 = RadiomicsExtractor().extract(img, mask, spacing=0.5)["original_shape2D_PixelSurface"]
    assert a1 == pytest.approx(mask.sum())
    assert a2 == pytest.approx(mask.sum() * 0.25)


def test_cache_is_used_on_the_second_call(tmp_path: Path) -> None:
    img, mask = _disk()
    first = RadiomicsExtractor(cache=FeatureCache(tmp_path)).extract(img, mask)
    assert len(list(tmp_path.rglob("*.json"))) == 1
    ex = RadiomicsExtractor(cache=FeatureCache(tmp_path))
    ex._extractor = object()  # any use of pyradiomics would now fail
    assert ex.extract(img, mask) == first
    # A different mask is a different key.
    with pytest.raises(AttributeError):
        ex.extract(img, np.roll(mask, 3, axis=0))


def test_settings_change_the_key(tmp_path: Path) -> None:
    img, mask = _disk()
    a = RadiomicsExtractor()
    b = RadiomicsExtractor({**a.params, "setting": {**a.params["setting"], "binWidth": 16}})
    assert a.key(img, mask) != b.key(img, mask)


def test_tiny_roi_is_refused() -> None:
    img, mask = _disk()
    with pytest.raises(RadiomicsError, match="fewer than 4"):
        RadiomicsExtractor().extract(img, np.zeros_like(mask))
