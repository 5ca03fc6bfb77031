"""Read EUS frames and lesion masks from DICOM files (and plain image files).

Frames come back as display pixels (gray (H, W) or RGB (H, W, 3) uint8) from :mod:`models.pixels`, the one
decoder training and the worker share. A DICOM SEG gives the lesion mask for one source instance / frame.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eusdx.errors import DataError
from models.calibration import calibration, frame_calibration
from models.pixels import decode_frames

__all__ = [
    "Instance",
    "decode_frames",
    "read_instance",
    "mm_per_pixel_from_dataset",
    "dataset_is_phantom",
    "read_frame",
    "read_frames",
    "read_image_file",
    "read_seg_mask",
    "mm_per_pixel",
    "is_phantom",
    "PHANTOM_MARKERS",
]

log = logging.getLogger(__name__)

#: Manufacturer / device strings the synthetic phantom writes; a manifest whose DICOMs carry one of
#: these is synthetic and every bundle trained on it is marked ``synthetic: true``.
PHANTOM_MARKERS: tuple[str, ...] = ("phantom", "synthetic")

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    a = arr.astype(np.float64)
    hi = float(a.max()) if a.size else 0.0
    if hi > 255:
        a = a * (255.0 / hi)
    return np.clip(a, 0, 255).astype(np.uint8)


def read_image_file(path: str | Path) -> np.ndarray:
    """Read a PNG/JPEG/TIFF file as an (H, W) or (H, W, 3) uint8 array."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode in ("L", "RGB"):
                arr = np.asarray(im)
            elif im.mode in ("I;16", "I", "F"):
                arr = _to_uint8(np.asarray(im))
            else:
                arr = np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc
    return _to_uint8(arr)


def read_frames(path: str | Path) -> list[np.ndarray]:
    """Return every frame of a DICOM image (or the one frame of a PNG/JPEG) as uint8 arrays.

    Raises
    ------
    DataError
        When the file is missing, not an image, or its pixels cannot be decoded.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"image file not found: {p}")
    if p.suffix.lower() in _IMAGE_SUFFIXES:
        return [read_image_file(p)]
    return decode_frames(p, header=_read_header(p))


def _read_header(p: Path) -> Any:
    import pydicom

    try:
        return pydicom.dcmread(p, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for a malformed file
        raise DataError(f"cannot read DICOM {p}: {exc}") from exc


@dataclass(frozen=True)
class Instance:
    """One image file read once: its frames and the attributes training needs."""

    frames: list[np.ndarray]
    sop_uid: str | None
    mm_per_pixel: float | None
    synthetic: bool

    @property
    def multi_frame(self) -> bool:
        return len(self.frames) > 1


def read_instance(path: str | Path) -> Instance:
    """Read a DICOM (or PNG/JPEG) file once: frames, SOPInstanceUID, calibration, phantom marker.

    Raises
    ------
    DataError
        When the file is missing or cannot be decoded; ``CalibrationError`` when the ultrasound
        regions that hold the sector disagree.
    """
    p = Path(path)
    if p.suffix.lower() in _IMAGE_SUFFIXES:
        return Instance(read_frames(p), None, None, False)
    if not p.is_file():
        raise DataError(f"image file not found: {p}")
    ds = _read_header(p)
    frames = decode_frames(p, header=ds)
    uid = str(ds.SOPInstanceUID) if "SOPInstanceUID" in ds else None
    # the region that holds the sector of the first frame (a cine keeps its geometry)
    mpp = frame_calibration(ds, frames[0]).mm_per_pixel if frames else mm_per_pixel_from_dataset(ds)
    return Instance(frames, uid, mpp, dataset_is_phantom(ds))


def mm_per_pixel_from_dataset(ds: Any, box: tuple[int, int, int, int] | None = None) -> float | None:
    """Pixel size in mm of an image (see :func:`models.calibration.calibration` for the rules).

    Parameters
    ----------
    ds
        The image's header.
    box
        Sector box ``(row0, col0, row1, col1)`` in frame pixels, when known.

    Raises
    ------
    CalibrationError
        The ultrasound regions that could hold the sector disagree.
    """
    return calibration(ds, box).mm_per_pixel


def dataset_is_phantom(ds: Any) -> bool:
    """True when a dataset says it was made by the synthetic phantom (equipment attributes)."""
    text = " ".join(
        str(getattr(ds, k, "")) for k in ("Manufacturer", "ManufacturerModelName", "SoftwareVersions")
    )
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        text += " " + str(getattr(meta, "ImplementationVersionName", ""))
    text = text.lower()
    return any(m in text for m in PHANTOM_MARKERS)


def read_frame(path: str | Path, frame: int = 0) -> np.ndarray:
    """Return frame ``frame`` (0-based) of an image file.

    Raises
    ------
    DataError
        When the frame index is out of range or the file cannot be read.
    """
    frames = read_frames(path)
    if not 0 <= frame < len(frames):
        raise DataError(f"{path} has {len(frames)} frame(s); frame {frame} requested")
    return frames[frame]


def mm_per_pixel(path: str | Path) -> float | None:
    """Physical pixel size in mm of an image file, if calibrated."""
    p = Path(path)
    if p.suffix.lower() in _IMAGE_SUFFIXES:
        return None
    import pydicom

    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
    except Exception:
        return None
    return mm_per_pixel_from_dataset(ds)


def is_phantom(path: str | Path) -> bool:
    """True when a DICOM file says it was made by the synthetic phantom (Manufacturer/model)."""
    p = Path(path)
    if p.suffix.lower() in _IMAGE_SUFFIXES or not p.is_file():
        return False
    import pydicom

    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
    except Exception:
        return False
    return dataset_is_phantom(ds)


def read_seg_mask(
    seg_path: str | Path,
    shape: tuple[int, int],
    *,
    source_sop_uid: str | None = None,
    frame: int = 0,
    multi_frame_source: bool = False,
) -> np.ndarray:
    """Lesion mask (all segments combined) of one source image/frame from a DICOM SEG.

    Plain image masks (PNG, nonzero = lesion) are accepted too.

    Parameters
    ----------
    seg_path : path
    shape : (rows, cols)
        Shape of the source frame; the mask must match it.
    source_sop_uid : str, optional
        SOPInstanceUID of the source image. Without it a single-frame SEG is used as is.
    frame : int
        0-based frame of a multi-frame source.
    multi_frame_source : bool
        The source image is multi-frame (select by frame number).

    Raises
    ------
    DataError
        When the SEG cannot be read, does not reference the source, or its size differs.
    """
    p = Path(seg_path)
    if not p.is_file():
        raise DataError(f"SEG file not found: {p}")
    if p.suffix.lower() in _IMAGE_SUFFIXES:
        m = read_image_file(p)
        m = m if m.ndim == 2 else m.max(axis=2)
        mask = m > 0
    else:
        mask = _seg_mask_dicom(p, source_sop_uid, frame, multi_frame_source)
    if mask.shape != tuple(shape):
        raise DataError(f"SEG {p.name}: mask shape {mask.shape} differs from the image {tuple(shape)}")
    return mask


def _seg_mask_dicom(p: Path, uid: str | None, frame: int, multi: bool) -> np.ndarray:
    import highdicom as hd
    import pydicom

    try:
        seg = hd.seg.segread(p)
    except Exception as exc:
        raise DataError(f"cannot read DICOM SEG {p}: {exc}") from exc
    only = _only_source_uid(seg)
    if uid is None or (only is not None and uid != only):
        # A SEG that references exactly one instance describes that instance; trust it over a caller's
        # UID that may come from a stale manifest.
        uid = only
    try:
        if uid is None:
            raise ValueError("the SEG does not name one source instance")
        if multi:
            arr = seg.get_pixels_by_source_frame(
                uid, source_frame_numbers=[frame + 1], combine_segments=True,
                skip_overlap_checks=True, ignore_spatial_locations=True)
        else:
            arr = seg.get_pixels_by_source_instance(
                [uid], combine_segments=True, skip_overlap_checks=True,
                ignore_spatial_locations=True)
        return np.asarray(arr[0]) > 0
    except (ValueError, KeyError, IndexError, AttributeError, TypeError, RuntimeError) as exc:
        # Fall back to the raw frames for SEGs highdicom cannot index (e.g. one frame, no refs).
        ds = pydicom.dcmread(p)
        raw = np.asarray(ds.pixel_array)
        if raw.ndim == 2:
            return raw > 0
        if raw.ndim == 3 and raw.shape[0] >= 1 and uid is None:
            return raw.max(axis=0) > 0
        raise DataError(f"SEG {p.name} has no mask for instance {uid} frame {frame + 1}: {exc}") from exc


def _only_source_uid(seg: "object") -> str | None:
    uids = set()
    for item in getattr(seg, "ReferencedSeriesSequence", []) or []:
        for inst in getattr(item, "ReferencedInstanceSequence", []) or []:
            uids.add(str(inst.ReferencedSOPInstanceUID))
    if len(uids) == 1:
        return uids.pop()
    return None
