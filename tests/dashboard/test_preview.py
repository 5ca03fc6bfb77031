"""The key-image preview draws the ROI the SR states onto the spool instance, or says why not."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dashboard._preview import (
    PreviewUnavailable,
    key_region,
    regions_from_sr,
    render_png,
    spool_instance,
)
from tests.worker._helpers import us_image
from tests.worker.test_sr_builder import POLYGON, _second_instance, _study
from worker.sr import build_report


def test_regions_are_read_from_the_sr_as_written() -> None:
    src = us_image()
    other = _second_instance(src)
    sr = build_report(_study([src, other], [0.9, 0.2]))
    regions = {r.sop_uid: r for r in regions_from_sr(sr)}
    assert set(regions) == {src.SOPInstanceUID, other.SOPInstanceUID}
    # The lesion result (mean 0.55, GIST) sits on the key image; the other image has its own.
    lesion, image = regions[src.SOPInstanceUID], regions[other.SOPInstanceUID]
    assert (lesion.probability, lesion.label) == (pytest.approx(0.55), "GIST")
    assert (image.probability, image.label) == (pytest.approx(0.2), "leiomyoma")
    # The SR closes the polygon (first point repeated).
    assert lesion.polygon[:4] == tuple(POLYGON)
    assert key_region(list(regions.values()), 0.55) == lesion
    assert key_region(list(regions.values()), 0.25) == image
    assert key_region([], 0.5) is None


def test_png_has_the_outline_on_the_image(tmp_path: Path) -> None:
    src = us_image()
    sr = build_report(_study([src], [0.9]))
    [region] = regions_from_sr(sr)
    study_dir = tmp_path / src.StudyInstanceUID
    study_dir.mkdir()
    src.save_as(study_dir / f"{src.SOPInstanceUID}.dcm", enforce_file_format=True)
    path = spool_instance(tmp_path, src.StudyInstanceUID, region.sop_uid)
    png = render_png(path, region, caption="GIST p=0.900 (SR)")
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert image.shape[:2] == (int(src.Rows), int(src.Columns))
    # Midpoint of the polygon's first edge is drawn in the outline colour.
    (c0, r0), (c1, r1) = POLYGON[0], POLYGON[1]
    assert tuple(image[round((r0 + r1) / 2), round((c0 + c1) / 2)]) == (255, 220, 0)
    # Far from the outline the picture is the image itself.
    assert tuple(image[470, 10]) != (255, 220, 0)


def test_missing_instance_or_bad_uid_is_said_plainly(tmp_path: Path) -> None:
    with pytest.raises(PreviewUnavailable, match="no longer in the spool"):
        spool_instance(tmp_path, "1.2.3", "1.2.3.4")
    with pytest.raises(PreviewUnavailable, match="not a DICOM UID"):
        spool_instance(tmp_path, "../etc", "passwd")
