"""Rendering of single phantom images: geometry, mask, speckle statistics, burned-in text."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from phantom.image import (GEOMETRY, INTERNAL_DEVICES, Device, device_for_centre, devices_for_centre,
                                   speckle_noise)
from phantom import LesionSpec, render_cine, render_image, sample_lesion


def _spec(**kw: object) -> LesionSpec:
    base = dict(
        label="GIST",
        size_mm=20.0,
        layer="muscularis_propria",
        echo_pattern="homogeneous",
        lobulated=False,
        cystic=False,
        hyperechoic_foci=False,
        aspect=0.7,
    )
    base.update(kw)
    return LesionSpec(**base)  # type: ignore[arg-type]


def _long_axis_mm(mask: np.ndarray, mm_per_pixel: float) -> float:
    ys, xs = np.nonzero(mask)
    pts = np.column_stack([xs, ys]).astype(float)
    pts -= pts.mean(0)
    # Extent along the principal axis.
    _, _, vt = np.linalg.svd(pts, full_matrices=False)
    proj = pts @ vt[0]
    return float(np.ptp(proj) + 1) * mm_per_pixel


def test_image_shape_types_and_masks() -> None:
    img = render_image(np.random.default_rng(0), _spec(), view=0)
    assert img.pixels.shape == (GEOMETRY.rows, GEOMETRY.cols) and img.pixels.dtype == np.uint8
    assert img.mask.dtype == bool and img.sector_mask.dtype == bool
    assert img.mask.any()
    assert not (img.mask & ~img.sector_mask).any()
    # Black outside the sector except for burned-in text and scale.
    outside = ~img.sector_mask & ~img.text_mask
    assert img.pixels[outside].max() == 0
    assert img.text_mask.sum() > 500
    assert not (img.text_mask & img.sector_mask).any()


@pytest.mark.parametrize("size_mm", [4.0, 12.0, 30.0, 40.0])
def test_canonical_view_shows_the_true_long_axis(size_mm: float) -> None:
    img = render_image(np.random.default_rng(1), _spec(size_mm=size_mm), view=0)
    measured = _long_axis_mm(img.mask, img.mm_per_pixel)
    assert measured == pytest.approx(size_mm, rel=0.1)
    # Pixel size follows the depth preset over the sector radius.
    assert img.mm_per_pixel == pytest.approx(img.view.depth_mm / GEOMETRY.depth_px)


def test_acquisition_is_blind_to_the_lesion() -> None:
    # The same random stream gives the same depth, gain and pixel size for a 4 mm and a 55 mm lesion:
    # the operator's preset never follows the lesion (no size, hence no class, in the header).
    for view in (0, 1, 2):
        small = render_image(np.random.default_rng(3), _spec(size_mm=4.0), view=view)
        large = render_image(np.random.default_rng(3), _spec(size_mm=55.0, label="leiomyoma"), view=view)
        assert small.view == large.view
        assert small.mm_per_pixel == large.mm_per_pixel
        outside = ~small.sector_mask
        assert np.array_equal(small.pixels[outside], large.pixels[outside])


def test_lesion_is_hypoechoic_relative_to_surrounding_tissue() -> None:
    img = render_image(np.random.default_rng(2), _spec(size_mm=25.0), view=0)
    ring = np.zeros_like(img.mask)
    ys, xs = np.nonzero(img.mask)
    ring[ys.max() + 40 : ys.max() + 80, xs.min() : xs.max()] = True
    ring &= img.sector_mask
    assert img.pixels[img.mask].mean() < img.pixels[ring].mean() - 20


def test_heterogeneous_lesions_are_more_variable_inside() -> None:
    rng = np.random.default_rng(3)
    homog = [render_image(rng, _spec(heterogeneity_db=1.0, texture_seed=i)) for i in range(4)]
    heter = [
        render_image(rng, _spec(echo_pattern="heterogeneous", heterogeneity_db=7.0, texture_seed=i)) for i in range(4)
    ]
    sd_homog = np.mean([im.pixels[im.mask].std() for im in homog])
    sd_heter = np.mean([im.pixels[im.mask].std() for im in heter])
    assert sd_heter > sd_homog + 3


def test_speckle_envelope_is_rayleigh() -> None:
    z = speckle_noise(np.random.default_rng(4))
    env = np.abs(z)[::4, ::4].ravel()  # thin out: neighbouring samples are correlated
    # Unit mean power -> Rayleigh with scale 1/sqrt(2).
    result = stats.kstest(env, "rayleigh", args=(0, 1 / np.sqrt(2)))
    assert result.pvalue > 0.001
    assert np.mean(env**2) == pytest.approx(1.0, rel=0.05)


def test_views_differ_but_are_deterministic() -> None:
    spec = sample_lesion(np.random.default_rng(5), "leiomyoma", 0.4)
    a = render_image(np.random.default_rng(6), spec, view=2)
    b = render_image(np.random.default_rng(6), spec, view=2)
    c = render_image(np.random.default_rng(7), spec, view=3)
    assert np.array_equal(a.pixels, b.pixels) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.pixels, c.pixels)


def test_cystic_spaces_and_foci_render() -> None:
    plain = render_image(np.random.default_rng(8), _spec(size_mm=30.0, texture_seed=3))
    cystic = render_image(np.random.default_rng(8), _spec(size_mm=30.0, texture_seed=3, cystic=True))
    foci = render_image(np.random.default_rng(8), _spec(size_mm=30.0, texture_seed=3, hyperechoic_foci=True))
    assert np.percentile(cystic.pixels[cystic.mask], 10) < np.percentile(plain.pixels[plain.mask], 10)
    assert foci.pixels[foci.mask].max() >= plain.pixels[plain.mask].max()
    assert np.percentile(foci.pixels[foci.mask], 99.5) > np.percentile(plain.pixels[plain.mask], 99.5)


def test_cine_frames_share_pixel_size_and_move() -> None:
    frames = render_cine(np.random.default_rng(9), _spec(), 6)
    assert len(frames) == 6
    assert len({f.mm_per_pixel for f in frames}) == 1
    assert not np.array_equal(frames[0].pixels, frames[-1].pixels)
    with pytest.raises(ValueError, match="n_frames must be >= 1"):
        render_cine(np.random.default_rng(9), _spec(), 0)


def _lag1(z: np.ndarray) -> float:
    a = np.abs(z)
    return float(np.corrcoef(a[:, :-1].ravel(), a[:, 1:].ravel())[0, 1])


def test_external_centre_gets_a_fixed_different_device() -> None:
    assert device_for_centre("internal") == Device()
    assert devices_for_centre("internal") == INTERNAL_DEVICES and len(INTERNAL_DEVICES) >= 3
    ext = devices_for_centre("site-B")
    assert ext == devices_for_centre("site-B")
    assert not set(ext) & set(INTERNAL_DEVICES)
    # Every external device differs from every internal one in gain, speckle grain and frequency.
    for e in ext:
        for i in INTERNAL_DEVICES:
            assert abs(e.gain_db - i.gain_db) > 0 and e.psf_scale * e.lateral_blur > i.psf_scale * i.lateral_blur
            assert e.frequency_mhz != i.frequency_mhz
    coarse = speckle_noise(np.random.default_rng(10), psf_scale=1.3)
    fine = speckle_noise(np.random.default_rng(10), psf_scale=0.8)
    assert _lag1(coarse) > _lag1(fine) + 0.05
    spec = _spec()
    a = render_image(np.random.default_rng(11), spec, view=1)
    b = render_image(np.random.default_rng(11), spec, view=1, device=Device(gain_db=6.0))
    assert b.pixels[b.sector_mask].mean() > a.pixels[a.sector_mask].mean() + 10
