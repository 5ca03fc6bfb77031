"""Automatic lesion ROI, SEG-derived ROI, Dice and outline mapping."""

from __future__ import annotations

import numpy as np
import pytest

from models.preprocess import mask_to_work, preprocess
from models.roi import NoLesionError, auto_roi, dice, mask_polygon, roi_from_mask
from tests.models._synth_eus import fan_frame


def test_dice_reference_values() -> None:
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[:, :5] = True  # 50 pixels
    b[:, 2:6] = True  # 40 pixels, 30 shared
    assert dice(a, b) == pytest.approx(2 * 30 / 90)
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0
    assert dice(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_automatic_roi_finds_the_dark_lesion(seed: int) -> None:
    px, _, lesion = fan_frame(np.random.default_rng(seed), lesion_radius=26 + 4 * seed)
    pre = preprocess(px)
    roi = auto_roi(pre)
    assert roi.source == "automatic"
    assert 0.0 <= roi.confidence <= 1.0
    assert dice(roi.mask, mask_to_work(lesion, pre)) > 0.7


def test_automatic_roi_refuses_a_flat_sector() -> None:
    px, sector, _ = fan_frame(np.random.default_rng(0))
    flat = np.where(sector, 120, 0).astype(np.uint8)
    with pytest.raises(NoLesionError, match="hypoechoic"):
        auto_roi(preprocess(flat))


def test_seg_roi_and_outline_in_original_pixels() -> None:
    px, _, lesion = fan_frame(np.random.default_rng(3))
    pre = preprocess(px)
    roi = roi_from_mask(mask_to_work(lesion, pre))
    assert roi.source == "SEG" and roi.confidence == 1.0
    poly = np.array(mask_polygon(roi.mask, pre))
    rows, cols = np.nonzero(lesion)
    # Outline (column, row) lies on the lesion border in the original frame, within a work pixel or two.
    tol = 2.5 / pre.scale
    assert poly[:, 0].min() == pytest.approx(cols.min(), abs=tol)
    assert poly[:, 0].max() == pytest.approx(cols.max() + 1, abs=tol)
    assert poly[:, 1].min() == pytest.approx(rows.min(), abs=tol)
    assert poly[:, 1].max() == pytest.approx(rows.max() + 1, abs=tol)
    with pytest.raises(NoLesionError, match="empty"):
        roi_from_mask(np.zeros_like(roi.mask))
