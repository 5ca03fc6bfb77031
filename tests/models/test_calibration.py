"""models.calibration: the pixel size comes from the region that holds the sector, in any order."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from models.calibration import Calibration, CalibrationError, calibration, frame_calibration
from models.pixels import decode_frames
from tests.models.test_pixels import data_file

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def region(x0: int, y0: int, x1: int, y1: int, delta_cm: float, *, fmt: int = 1, kind: int = 1,
           units: int = 3, delta_y: float | None = None) -> Dataset:
    item = Dataset()
    item.RegionSpatialFormat = fmt
    item.RegionDataType = kind
    item.RegionFlags = 0
    item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, y0
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1, y1
    item.PhysicalUnitsXDirection = units
    item.PhysicalUnitsYDirection = units
    item.PhysicalDeltaX = delta_cm
    item.PhysicalDeltaY = delta_cm if delta_y is None else delta_y
    return item


def image_with(regions: list[Dataset]) -> Dataset:
    ds = Dataset()
    ds.Rows, ds.Columns = 600, 800
    ds.SequenceOfUltrasoundRegions = Sequence(regions)
    return ds


SECTOR_BOX = (100, 150, 500, 650)  # rows 100..499, columns 150..649
SECTOR = region(100, 60, 760, 560, 0.0115)  # the B-mode image
OVERVIEW = region(10, 10, 120, 90, 0.0577)  # a small thumbnail of the whole field
DOPPLER = region(100, 565, 760, 599, 0.02, fmt=3, kind=3, units=4)  # a spectral strip (cm/s)


def test_overview_listed_first_does_not_scale_the_sector() -> None:
    # the reported case: 0.577 mm/pixel from the first item instead of 0.115 from the sector's
    cal = calibration(image_with([OVERVIEW, DOPPLER, SECTOR]), SECTOR_BOX)
    assert cal == Calibration(pytest.approx(0.115), "ultrasound region")


@settings(max_examples=40, deadline=None)
@given(order=st.permutations([OVERVIEW, DOPPLER, SECTOR, region(700, 0, 799, 50, 0.2, kind=13)]))
def test_the_order_of_the_regions_never_changes_the_answer(order: list[Dataset]) -> None:
    assert calibration(image_with(list(order)), SECTOR_BOX).mm_per_pixel == pytest.approx(0.115)


@settings(max_examples=30, deadline=None)
@given(order=st.permutations([SECTOR, region(90, 50, 770, 570, 0.03), OVERVIEW]))
def test_conflicting_regions_are_refused_in_any_order(order: list[Dataset]) -> None:
    with pytest.raises(CalibrationError, match=r"disagree: 0\.115, 0\.3 mm/pixel"):
        calibration(image_with(list(order)), SECTOR_BOX)


def test_without_a_box_every_usable_region_must_agree() -> None:
    assert calibration(image_with([SECTOR, DOPPLER])).mm_per_pixel == pytest.approx(0.115)
    with pytest.raises(CalibrationError, match="disagree"):
        calibration(image_with([OVERVIEW, SECTOR]))


def test_a_sector_outside_every_region_is_refused() -> None:
    with pytest.raises(CalibrationError, match="no 2D tissue ultrasound region overlaps"):
        calibration(image_with([OVERVIEW]), (300, 300, 400, 400))


def test_non_square_pixels_are_refused() -> None:
    with pytest.raises(CalibrationError, match="not square"):
        calibration(image_with([region(100, 60, 760, 560, 0.0115, delta_y=0.02)]), SECTOR_BOX)


def test_fallbacks_say_what_they_assumed() -> None:
    bare = Dataset()
    assert calibration(bare) == Calibration(None, "none")
    assert "training median pixel size was assumed" in str(Calibration(None, "none").note)
    bare.PixelSpacing = [0.2, 0.25]
    cal = calibration(bare)
    assert cal.mm_per_pixel == pytest.approx(0.25) and cal.source == "pixel spacing"
    assert "Pixel Spacing" in str(cal.note)
    only_doppler = image_with([DOPPLER])
    assert calibration(only_doppler).source == "none"
    assert Calibration(0.1, "ultrasound region").note is None


@pytest.mark.parametrize(("name", "mm"), [
    ("OBXXXX1A.dcm", 0.2623),  # Philips: B-mode region + a Doppler-strip region (units cm/s)
    ("gdcm-US-ALOKA-16.dcm", 0.3827),  # ALOKA: dual view (two equal B-mode regions) + a trace
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", 0.2548),
    ("color3d_jpeg_baseline.dcm", 0.5105),
])
def test_vendor_files_are_calibrated_from_their_sector(name: str, mm: float) -> None:
    path = data_file(name)
    head = pydicom.dcmread(path, stop_before_pixels=True)
    (frame,) = decode_frames(path, [0], header=head)
    assert frame_calibration(head, frame).mm_per_pixel == pytest.approx(mm, abs=1e-4)


def test_frame_calibration_finds_the_sector_in_the_pixels() -> None:
    frame = np.zeros((600, 800), dtype=np.uint8)
    rng = np.random.default_rng(0)
    frame[120:480, 200:600] = rng.integers(40, 200, size=(360, 400))  # a bright speckled field
    frame[20:70, 20:100] = 255  # the overview thumbnail: small, not the sector
    cal = frame_calibration(image_with([OVERVIEW, SECTOR]), frame)
    assert cal.mm_per_pixel == pytest.approx(0.115)
