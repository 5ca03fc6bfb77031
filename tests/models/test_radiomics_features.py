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


# --- issue 16: IBSI-style settings, and bundles with the old settings keep their features ---------------

OLD_SETTINGS = Path(__file__).resolve().parents[1] / "data" / "radiomics_before_issue16.yaml"


def _sector_image() -> tuple[np.ndarray, np.ndarray]:
    """A lesion inside a sector of non-zero speckle, values well inside (0, 255) (no clipping)."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:96, :96]
    mask = np.hypot(yy - 48, xx - 48) < 20
    img = rng.normal(120.0, 15.0, size=(96, 96))
    img[mask] -= 40.0
    return np.clip(img, 20, 235).round(), mask


def test_scale_normalised_log_of_a_gaussian_blob_peaks_at_its_scale() -> None:
    from models.radiomics_features import log_response

    # f = exp(-r^2 / 2t^2): sigma^2 * Laplacian of (G_sigma * f) at the centre = -2 sigma^2 t^2 / (t^2 + sigma^2)^2
    # (Lindeberg 1998), i.e. -1/2 at sigma = t for every t
    yy, xx = np.mgrid[:129, :129]
    for t in (3.0, 6.0):
        blob = np.exp(-((yy - 64) ** 2 + (xx - 64) ** 2) / (2 * t * t))
        for sigma in (t / 2, t, 2 * t):
            got = float(log_response(blob, sigma, scale_normalised=True)[64, 64])
            assert got == pytest.approx(-2 * sigma**2 * t**2 / (t**2 + sigma**2) ** 2, rel=0.03), (t, sigma)
        raw = float(log_response(blob, t, scale_normalised=False)[64, 64])
        assert raw == pytest.approx(-1 / (2 * t * t), rel=0.03)  # unnormalised: falls as 1/sigma^2


def test_new_settings_are_blind_to_a_gain_change() -> None:
    """Sector z-score + fixed bin count: an affine change of grey levels (gain, dynamic range) changes nothing."""
    img, mask = _sector_image()
    new = RadiomicsExtractor()
    a = new.extract(img, mask)
    # a gain change adds a constant to log-compressed B-mode grey levels; a dynamic-range change scales
    # them (by 1/2 here, exact in binary: other factors move grey levels that sit exactly on a bin edge)
    for changed in (img + 20.0, img * 0.5 + 32.0):
        b = new.extract(changed, mask)
        assert set(a) == set(b)
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-6, abs=1e-6), k
    old = RadiomicsExtractor(OLD_SETTINGS)
    c, d = old.extract(img, mask), old.extract(img + 20.0, mask)
    assert d["original_firstorder_Mean"] == pytest.approx(c["original_firstorder_Mean"] + 20.0)
    assert d["original_firstorder_Energy"] != pytest.approx(c["original_firstorder_Energy"], rel=0.05)


def test_new_settings_compute_what_they_document() -> None:
    from scipy import ndimage as ndi

    img, mask = _sector_image()
    feats = RadiomicsExtractor().extract(img, mask)
    z = (img - img.mean()) / img.std()  # every pixel is in the sector here
    assert feats["original_firstorder_Mean"] == pytest.approx(z[mask].mean(), abs=1e-4)
    log1 = ndi.gaussian_laplace(z.astype(np.float32), sigma=1.0) * 1.0**2
    log3 = ndi.gaussian_laplace(z.astype(np.float32), sigma=3.0) * 3.0**2
    assert feats["log-sigma-1-mm-2D_firstorder_Mean"] == pytest.approx(log1[mask].mean(), abs=1e-3)
    assert feats["log-sigma-3-mm-2D_firstorder_Mean"] == pytest.approx(log3[mask].mean(), abs=1e-3)


def test_old_bundle_settings_still_compute_the_old_features() -> None:
    """A bundle trained before issue 16 carries the old radiomics.yaml: raw grey levels, raw LoG, bin width 8."""
    from scipy import ndimage as ndi

    img, mask = _sector_image()
    old = RadiomicsExtractor(OLD_SETTINGS)
    assert old.normalise == "none" and not old.log_scale_normalised
    feats = old.extract(img, mask)
    assert feats["original_firstorder_Mean"] == pytest.approx(img[mask].mean(), abs=1e-4)
    log1 = ndi.gaussian_laplace(img.astype(np.float32), sigma=1.0)
    assert feats["log-sigma-1-mm-2D_firstorder_Mean"] == pytest.approx(log1[mask].mean(), abs=1e-3)
    assert set(feats) == set(RadiomicsExtractor().extract(img, mask))  # same names, new values


def test_unknown_normalisation_is_refused() -> None:
    from eusdx.errors import DataError

    with pytest.raises(DataError, match="intensity.normalise"):
        RadiomicsExtractor({**RadiomicsExtractor().params, "intensity": {"normalise": "minmax"}})
