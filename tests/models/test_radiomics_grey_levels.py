"""The grey-level counter of scripts/radiomics_settings_compare.py on hand-made ROIs with known levels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import load_script

compare = load_script("radiomics_settings_compare.py")


def _striped(values: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """A 64x64 image (background 100) whose 24x24 ROI has vertical stripes of ``values``."""
    img = np.full((64, 64), 100, dtype=np.uint8)
    mask = np.zeros((64, 64), dtype=bool)
    mask[20:44, 20:44] = True
    for k, v in enumerate(values):
        cols = slice(20 + k * 24 // len(values), 20 + (k + 1) * 24 // len(values))
        img[20:44, cols] = v
    return img, mask


def _levels(settings_path: Path, values: list[int]) -> dict[str, int]:
    settings = yaml.safe_load(settings_path.read_text(encoding="utf-8"))
    img, mask = _striped(values)
    levels: dict[str, int] = compare.grey_level_counter(settings).levels(img, mask, 1.0)
    return levels


def test_distinct_values_far_apart_are_distinct_levels_under_both_settings() -> None:
    for path in (compare.OLD_SETTINGS, compare.NEW_SETTINGS):
        levels = _levels(path, [10, 50, 90, 130])
        assert levels["original"] == 4, path.name
        assert {"wavelet-LL", "log-sigma-1-mm-2D", "log-sigma-3-mm-2D"} <= set(levels)


def test_bin_width_8_merges_close_values_bin_count_32_does_not() -> None:
    # 40 and 44 share the fixed-width bin [40, 48); a fixed bin count spans the ROI's own range.
    assert _levels(compare.OLD_SETTINGS, [40, 44])["original"] == 1
    assert _levels(compare.NEW_SETTINGS, [40, 44])["original"] == 2


@pytest.mark.parametrize(("name", "expected"), [
    ("original_shape2D_Elongation", False),
    ("wavelet-LH_firstorder_Mean", False),
    ("log-sigma-1-mm-2D_firstorder_Entropy", True),
    ("log-sigma-3-mm-2D_glcm_Contrast", True),
])
def test_which_features_use_the_discretised_image(name: str, expected: bool) -> None:
    assert compare.uses_discretisation(name) is expected
    assert compare.image_type_of(name) == name.split("_")[0]
