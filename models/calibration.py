"""Physical pixel size of an ultrasound frame, from the region that holds the analysed sector.

An ultrasound image may carry several calibrated regions (PS3.3 C.8.5.5, Sequence of Ultrasound
Regions (0018,6011)): the B-mode sector, a small overview, a Doppler strip, an M-mode trace. Only a
2D tissue region in centimetres (Region Spatial Format 1, Region Data Type 1, Physical Units X and
Y Direction 3) says how large a sector pixel is, and only the one that contains the sector.

Rules (order-independent: the regions' order in the sequence never changes the answer):

1. Candidates are the 2D tissue regions in cm with positive Physical Delta X and Y.
2. With a sector box, keep the candidates that contain it (at least 90 % of the box inside); the
   region that overlaps it most when none does. Without a box, keep all candidates.
3. The kept regions must agree (Physical Delta within 1 %), and each must have square pixels
   (Delta X and Delta Y within 5 %): otherwise :class:`CalibrationError` says why.
4. No candidate region: Pixel Spacing (0028,0030) when present (source ``"pixel spacing"``).
5. Nothing at all: ``mm_per_pixel`` is ``None`` (source ``"none"``); the bundle then uses the
   median pixel size of its training data, and the SR says so (:attr:`Calibration.note`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eusdx.errors import DataError

__all__ = ["Calibration", "CalibrationError", "Region", "calibration", "frame_calibration", "regions_of",
           "sector_box"]

_TISSUE = 1  # Region Data Type (0018,6014): tissue
_TWO_D = 1  # Region Spatial Format (0018,6012): 2D
_CM = 3  # Physical Units X/Y Direction (0018,6024/6026): cm
_CONTAINED = 0.9
_AGREE = 0.01
_SQUARE = 0.05


class CalibrationError(DataError):
    """The calibration of a frame is contradictory (regions disagree, pixels not square)."""


@dataclass(frozen=True)
class Region:
    """One item of the Sequence of Ultrasound Regions (pixel bounds inclusive, deltas in cm)."""

    x0: int
    y0: int
    x1: int
    y1: int
    spatial_format: int
    data_type: int
    units_x: int
    units_y: int
    delta_x: float
    delta_y: float

    @property
    def usable(self) -> bool:
        """A 2D tissue region in cm with positive deltas."""
        return (self.spatial_format == _TWO_D and self.data_type == _TISSUE
                and self.units_x == _CM and self.units_y == _CM
                and self.delta_x > 0 and self.delta_y > 0)

    @property
    def mm_per_pixel(self) -> float:
        """Delta X in mm (cm x 10)."""
        return self.delta_x * 10.0

    def overlap(self, box: tuple[int, int, int, int]) -> float:
        """Fraction of ``box`` (row0, col0, row1, col1; end exclusive) inside this region."""
        r0, c0, r1, c1 = box
        area = max(0, r1 - r0) * max(0, c1 - c0)
        if area == 0:
            return 0.0
        rows = max(0, min(r1, self.y1 + 1) - max(r0, self.y0))
        cols = max(0, min(c1, self.x1 + 1) - max(c0, self.x0))
        return rows * cols / area


@dataclass(frozen=True)
class Calibration:
    """The pixel size of a frame and where it came from.

    Attributes
    ----------
    mm_per_pixel
        Size of one frame pixel in mm, ``None`` when the frame carries no calibration.
    source
        ``"ultrasound region"``, ``"pixel spacing"`` or ``"none"``.
    """

    mm_per_pixel: float | None
    source: str

    @property
    def note(self) -> str | None:
        """The sentence an SR carries when a fallback was used (``None`` otherwise)."""
        if self.source == "none":
            return ("not calibrated: no 2D tissue ultrasound region in cm and no Pixel Spacing; "
                    "the model's training median pixel size was assumed")
        if self.source == "pixel spacing":
            return "calibrated from Pixel Spacing (no 2D tissue ultrasound region in cm)"
        return None


def _number(item: Any, keyword: str, kind: type = int) -> Any:
    value = item.get(keyword) if hasattr(item, "get") else getattr(item, keyword, None)
    try:
        return kind(value) if value is not None and value != "" else kind(0)
    except (TypeError, ValueError):
        return kind(0)


def regions_of(ds: Any) -> list[Region]:
    """The items of ``SequenceOfUltrasoundRegions`` (empty list when absent), in file order."""
    items = ds.get("SequenceOfUltrasoundRegions") if hasattr(ds, "get") else None
    regions = []
    for item in items or []:
        regions.append(Region(
            x0=_number(item, "RegionLocationMinX0"), y0=_number(item, "RegionLocationMinY0"),
            x1=_number(item, "RegionLocationMaxX1"), y1=_number(item, "RegionLocationMaxY1"),
            spatial_format=_number(item, "RegionSpatialFormat"),
            data_type=_number(item, "RegionDataType"),
            units_x=_number(item, "PhysicalUnitsXDirection"),
            units_y=_number(item, "PhysicalUnitsYDirection"),
            delta_x=abs(_number(item, "PhysicalDeltaX", float)),
            delta_y=abs(_number(item, "PhysicalDeltaY", float)),
        ))
    return regions


def _chosen(regions: Sequence[Region], box: tuple[int, int, int, int] | None) -> list[Region]:
    usable = [r for r in regions if r.usable]
    if box is None or not usable:
        return usable
    inside = [r for r in usable if r.overlap(box) >= _CONTAINED]
    if inside:
        return inside
    best = max(r.overlap(box) for r in usable)
    if best == 0.0:
        raise CalibrationError(f"no 2D tissue ultrasound region overlaps the sector {list(box)}")
    return [r for r in usable if r.overlap(box) == best]


def calibration(ds: Any, box: tuple[int, int, int, int] | None = None) -> Calibration:
    """Pixel size of a frame of ``ds`` whose analysed sector lies in ``box``.

    Parameters
    ----------
    ds
        The image's header (pydicom ``Dataset``).
    box
        ``(row0, col0, row1, col1)`` of the sector in frame pixels, end exclusive; ``None`` when
        unknown (then every usable region must agree).

    Returns
    -------
    Calibration

    Raises
    ------
    CalibrationError
        The regions that hold the sector disagree, their pixels are not square, or no usable
        region overlaps the sector.
    """
    chosen = _chosen(regions_of(ds), box)
    if chosen:
        for r in chosen:
            if abs(r.delta_x - r.delta_y) > _SQUARE * max(r.delta_x, r.delta_y):
                raise CalibrationError(
                    f"ultrasound region pixels are not square ({r.delta_x * 10:.4g} x "
                    f"{r.delta_y * 10:.4g} mm)")
        sizes = sorted({round(r.mm_per_pixel, 9) for r in chosen})
        if sizes[-1] - sizes[0] > _AGREE * sizes[-1]:
            shown = ", ".join(f"{s:.4g}" for s in sizes)
            raise CalibrationError(f"ultrasound regions holding the sector disagree: {shown} mm/pixel")
        return Calibration(sizes[0], "ultrasound region")
    spacing = ds.get("PixelSpacing") if hasattr(ds, "get") else None
    if spacing:
        try:
            value = float(spacing[1])
        except (TypeError, ValueError, IndexError):
            value = 0.0
        if value > 0:
            return Calibration(value, "pixel spacing")
    return Calibration(None, "none")


def _box_of(mask: Any) -> tuple[int, int, int, int] | None:
    import numpy as np

    arr = np.asarray(mask, dtype=bool)
    if arr.ndim != 2 or not arr.any():
        return None
    rows, cols = np.flatnonzero(arr.any(axis=1)), np.flatnonzero(arr.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def sector_box(pixels: Any, lesion_mask: Any = None) -> tuple[int, int, int, int] | None:
    """Bounding box (row0, col0, row1, col1) of the B-mode sector of a frame (with the lesion
    mask, when given, included); ``None`` when neither is found.

    The sector is found as :func:`models.preprocess.detect_sector` finds it for analysis.
    """
    from models.preprocess import PreprocessConfig, detect_sector, to_gray

    box = None
    try:
        box = _box_of(detect_sector(to_gray(pixels), PreprocessConfig()))
    except DataError:  # NoSectorError, or pixels that are neither grey nor RGB
        box = None
    roi = _box_of(lesion_mask) if lesion_mask is not None else None
    if box is None or roi is None:
        return box or roi
    return min(box[0], roi[0]), min(box[1], roi[1]), max(box[2], roi[2]), max(box[3], roi[3])


def frame_calibration(ds: Any, pixels: Any, lesion_mask: Any = None) -> Calibration:
    """:func:`calibration` of one decoded frame, with its sector (and lesion) box found here.

    The sector is looked for only when the usable regions disagree: when they all agree (the usual
    single B-mode region) the answer cannot depend on it, and the search costs a sector detection.

    Raises
    ------
    CalibrationError
        As :func:`calibration`.
    """
    try:
        return calibration(ds)
    except CalibrationError:
        return calibration(ds, sector_box(pixels, lesion_mask))
