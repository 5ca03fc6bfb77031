"""Sector crop, text blanking, resize, augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from models.preprocess import (
    AUGMENTATIONS,
    NoSectorError,
    PreprocessConfig,
    augment,
    has_sector,
    lesion_window,
    mask_to_work,
    preprocess,
    random_augment,
    to_gray,
)
from models.roi import dice
from tests.models._synth_eus import fan_frame


def test_sector_is_found_and_text_is_blanked() -> None:
    px, sector, _ = fan_frame(np.random.default_rng(0))
    pre = preprocess(px)
    r0, c0, r1, c1 = pre.box
    rows, cols = np.nonzero(sector)
    # The crop hugs the fan (the anechoic water band is part of it: the hull brings it back).
    assert abs(r1 - 1 - rows.max()) <= 3 and abs(c0 - cols.min()) <= 3 and abs(c1 - 1 - cols.max()) <= 3
    assert r0 <= rows.min() + 15
    assert max(pre.image.shape) == PreprocessConfig().work_size
    assert dice(mask_to_work(sector, pre), pre.sector) > 0.95
    # Nothing outside the sector survives: the text blocks and ticks were outside it.
    assert pre.image[~pre.sector].max() == 0


def test_rgb_gray_frame_matches_gray() -> None:
    gray, _, _ = fan_frame(np.random.default_rng(1))
    rgb, _, _ = fan_frame(np.random.default_rng(1), rgb=True)
    assert np.array_equal(to_gray(rgb), gray)
    assert np.array_equal(preprocess(rgb).image, preprocess(gray).image)


def test_physical_pixel_size_follows_the_resize() -> None:
    px, _, _ = fan_frame(np.random.default_rng(2))
    pre = preprocess(px, mm_per_pixel=0.2)
    assert pre.mm_per_pixel == pytest.approx(0.2 / pre.scale)


def test_blank_and_colour_frames_are_refused() -> None:
    with pytest.raises(NoSectorError, match="blank"):
        preprocess(np.zeros((200, 300), np.uint8))
    px, sector, _ = fan_frame(np.random.default_rng(3), rgb=True)
    doppler = px.copy()
    blob = sector & (np.random.default_rng(4).random(sector.shape) < 0.3)
    doppler[blob] = (250, 30, 30)
    with pytest.raises(NoSectorError, match="colour"):
        preprocess(doppler)
    assert has_sector(px)
    assert not has_sector(doppler)
    assert not has_sector(np.zeros((100, 100, 3), np.uint8))


def test_bad_shape_is_a_data_error() -> None:
    from eusdx.errors import DataError

    with pytest.raises(DataError, match="shape"):
        to_gray(np.zeros((4, 4, 4, 4), np.uint8))


def test_paper_002_augmentation_gives_five_different_variants() -> None:
    px, _, _ = fan_frame(np.random.default_rng(5))
    img = preprocess(px).image
    out = augment(img, np.random.default_rng(0), n=5)
    assert len(out) == 5 == len(AUGMENTATIONS)
    for variant in out:
        assert variant.shape == img.shape and variant.dtype == np.uint8
        assert not np.array_equal(variant, img)
    assert np.array_equal(out[1], img[:, ::-1])  # the flip
    # Same seed, same variants.
    again = augment(img, np.random.default_rng(0), n=5)
    assert all(np.array_equal(a, b) for a, b in zip(out, again))
    draws = [random_augment(img, np.random.default_rng(s), 5) for s in range(30)]
    assert any(np.array_equal(d, img) for d in draws) and not all(np.array_equal(d, img) for d in draws)


def test_lesion_window_keeps_physical_scale() -> None:
    img = np.zeros((200, 200), np.uint8)
    small, big = np.zeros_like(img, bool), np.zeros_like(img, bool)
    yy, xx = np.mgrid[:200, :200]
    small[np.hypot(yy - 100, xx - 100) < 10] = True
    big[np.hypot(yy - 100, xx - 100) < 20] = True
    w_small = lesion_window(np.where(small, 255, 0).astype(np.uint8), small, 64, mm_per_pixel=0.5, window_mm=60)
    w_big = lesion_window(np.where(big, 255, 0).astype(np.uint8), big, 64, mm_per_pixel=0.5, window_mm=60)
    # Same 60 mm window: the lesion twice as wide covers about four times the area.
    ratio = (w_big > 127).sum() / max(1, (w_small > 127).sum())
    assert 3.0 < ratio < 5.0
    assert lesion_window(img, None, 32).shape == (32, 32)
