"""Decode ultrasound frames to display pixels: one decoder for training and the worker.

Every photometric interpretation and layout ultrasound uses comes out as ``(H, W)`` (grey) or
``(H, W, 3)`` (colour) ``uint8``, one frame at a time:

================  ==============================================================================
Photometric       What is done (PS3.3 C.7.6.3.1.2, C.7.6.3.1.5, C.11.2; pydicom ``pydicom.pixels``)
================  ==============================================================================
MONOCHROME2       VOI window (0028,1050/1051) when present, else Smallest/Largest Image Pixel
                  Value (0028,0106/0107), else the full Bits Stored range, mapped to 0..255.
MONOCHROME1       as MONOCHROME2, then inverted (255 - v): low values are white.
PALETTE COLOR     the Red/Green/Blue Palette Color LUTs (also segmented) applied to the index;
                  16-bit entries scaled to 8 bits (``>> 8``), 8-bit entries kept; single and
                  multi-frame alike.
RGB               as stored; planar configuration 0 (RGBRGB) and 1 (RRGGBB) both give (H, W, 3);
                  more than 8 Bits Stored scaled to 0..255.
YBR_FULL(_422)    converted to RGB by pydicom (4:2:2 sub-sampling of native data expanded first).
YBR_RCT / ICT     JPEG 2000 only: the decoder undoes the component transform, giving RGB.
================  ==============================================================================

The mapping to 8 bits depends only on header attributes (never on the values of the frames
decoded), so one frame scales the same whether it is decoded alone or with the rest of its cine,
in training and in the worker.

Frame-level decoding: given a path, only the requested frames are read and decoded
(``pydicom.pixels.iter_pixels``); a whole-cine array is never made. Deflated files are the one
exception: the data set has to be inflated as a whole before anything in it can be read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eusdx.errors import DataError

__all__ = ["PixelDecodeError", "decode_frames", "frame_count", "iter_frames", "to_display"]

log = logging.getLogger(__name__)

_DEFLATED = "1.2.840.10008.1.2.1.99"


class PixelDecodeError(DataError):
    """Pixel data cannot be decoded (unsupported transfer syntax, truncated or corrupt data)."""


def frame_count(ds: Any) -> int:
    """Number of frames an image data set holds (``NumberOfFrames``, 1 when absent or empty).

    Raises
    ------
    DataError
        ``NumberOfFrames`` is not a positive integer.
    """
    raw = ds.get("NumberOfFrames", 1) if hasattr(ds, "get") else getattr(ds, "NumberOfFrames", 1)
    try:
        n = int(raw or 1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"NumberOfFrames {raw!r} is not an integer") from exc
    if n < 1:
        raise DataError(f"NumberOfFrames {n} is not positive")
    return n


def _scale_to_uint8(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear map of ``[lo, hi]`` to ``[0, 255]`` (clipped, rounded)."""
    if hi <= lo:
        hi = lo + 1.0
    out = (arr.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _stored_range(ds: Any) -> tuple[float, float]:
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return float(-(1 << (bits - 1))), float((1 << (bits - 1)) - 1)
    return 0.0, float((1 << bits) - 1)


def _first(value: Any) -> float:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def _grey_range(ds: Any) -> tuple[float, float]:
    """Values mapped to black and white: VOI window, else the declared extremes, else Bits Stored."""
    if "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            centre, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        except (TypeError, ValueError, IndexError):
            centre, width = 0.0, 0.0
        if width >= 1:
            # PS3.3 C.11.2.1.2.1 (LINEAR): [c - 0.5 - (w-1)/2, c - 0.5 + (w-1)/2]
            return centre - 0.5 - (width - 1) / 2, centre - 0.5 + (width - 1) / 2
    lo_hi = ds.get("SmallestImagePixelValue"), ds.get("LargestImagePixelValue")
    if all(isinstance(v, (int, float)) for v in lo_hi) and lo_hi[1] > lo_hi[0]:  # type: ignore[operator]
        return float(lo_hi[0]), float(lo_hi[1])  # type: ignore[arg-type]
    return _stored_range(ds)


def _palette(frame: np.ndarray, ds: Any) -> np.ndarray:
    from pydicom.pixels.processing import apply_color_lut

    rgb = np.asarray(apply_color_lut(frame, ds))
    if rgb.dtype == np.uint8:
        return rgb
    # 16-bit entries (PS3.3 C.7.6.3.1.5): most writers store v << 8; a few declare 16 bits but
    # store 8-bit values. The LUT's own maximum tells which (a header property, not the frame's).
    lut_max = _lut_max(ds)
    if lut_max <= 255:
        return rgb.astype(np.uint8)
    return (rgb >> 8).astype(np.uint8)


def _lut_max(ds: Any) -> int:
    """Largest entry of the palette LUTs, as pydicom expands them (segmented ones too)."""
    from pydicom.pixels.processing import apply_color_lut

    descriptor = ds.get("RedPaletteColorLookupTableDescriptor")
    if descriptor is None:
        return 0xFFFF
    first, n = int(descriptor[1]), int(descriptor[0]) or 65536
    index = np.arange(first, first + n, dtype=np.uint16 if first + n > 256 else np.uint8)
    return int(np.asarray(apply_color_lut(index, ds)).max())


def to_display(frame: np.ndarray, ds: Any) -> np.ndarray:
    """Turn one decoded frame into display pixels, ``(H, W)`` or ``(H, W, 3)`` uint8.

    Parameters
    ----------
    frame
        One frame as pydicom decodes it with ``raw=False`` (YBR already RGB): ``(H, W)`` or
        ``(H, W, samples)``.
    ds
        The header of its instance (photometric interpretation, bits, LUTs, window).

    Raises
    ------
    DataError
        A palette image without usable LUTs, or a frame of an unexpected shape.
    """
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    arr = np.asarray(frame)
    if photometric == "PALETTE COLOR":
        if arr.ndim != 2:
            raise DataError(f"palette frame has shape {arr.shape}, expected (rows, columns)")
        try:
            return _palette(arr, ds)
        except (ValueError, KeyError, AttributeError, IndexError) as exc:
            raise DataError(f"palette colour LUTs cannot be applied: {exc}") from exc
    if arr.ndim == 3:
        if arr.shape[2] == 1:
            arr = arr[..., 0]
        elif arr.shape[2] != 3:
            raise DataError(f"frame with {arr.shape[2]} samples per pixel is not grey or RGB")
        else:
            if arr.dtype == np.uint8:
                return arr
            return _scale_to_uint8(arr, *_stored_range(ds))
    if arr.ndim != 2:
        raise DataError(f"frame has shape {arr.shape}, expected (rows, columns[, 3])")
    if arr.dtype == np.uint8 and not ("WindowCenter" in ds and "WindowWidth" in ds):
        grey = arr
    else:
        grey = _scale_to_uint8(arr, *_grey_range(ds))
    if photometric == "MONOCHROME1":
        grey = np.subtract(255, grey, dtype=np.uint8)
    return grey


def _check_indices(indices: Sequence[int], n: int) -> None:
    bad = [i for i in indices if not 0 <= int(i) < n]
    if bad:
        raise DataError(f"frames {list(indices)} asked of an instance with {n}")


def _decode_error(exc: BaseException, what: str) -> PixelDecodeError:
    return PixelDecodeError(f"cannot decode pixel data of {what}: {type(exc).__name__}: {exc}")


def _header_of(path: Path) -> Any:
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for a malformed file
        raise DataError(f"cannot read DICOM {path.name}: {type(exc).__name__}: {exc}") from exc


def iter_frames(
    src: Any, indices: Sequence[int] | None = None, *, header: Any = None
) -> Iterator[np.ndarray]:
    """Yield display frames (see :func:`to_display`) one at a time, in the order of ``indices``.

    Parameters
    ----------
    src
        A path to a DICOM file (only the requested frames are read), or a pydicom ``Dataset``.
    indices
        0-based frames; all when ``None``. Repeats are allowed.
    header
        The instance's header when ``src`` is a path and the caller has read it already.

    Raises
    ------
    DataError
        An index out of range, an unreadable file, or (:class:`PixelDecodeError`) undecodable
        pixel data.
    """
    from pydicom.dataset import Dataset

    if isinstance(src, Dataset):
        ds, path = src, None
    else:
        path = Path(os.fspath(src))
        ds = header if header is not None else _header_of(path)
    n = frame_count(ds)
    wanted = list(range(n)) if indices is None else [int(i) for i in indices]
    _check_indices(wanted, n)
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if path is not None and ts == _DEFLATED:
        # a deflated data set can only be read whole (inflated); the node caps its size
        import pydicom

        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:
            raise _decode_error(exc, path.name) from exc
        path = None
    order = sorted(set(wanted))
    decoded: dict[int, np.ndarray] = {}
    for index, raw in zip(order, _raw_frames(ds, path, order)):
        decoded[index] = raw
        # Hand frames out as soon as every earlier request is satisfied: memory holds only the
        # frames still to be given, never the cine.
        while wanted and wanted[0] in decoded:
            first = wanted.pop(0)
            frame = decoded[first] if first in wanted else decoded.pop(first)
            yield to_display(_drop_frame_axis(frame, ds, n), ds)


def _drop_frame_axis(frame: np.ndarray, ds: Any, n: int) -> np.ndarray:
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    arr = np.asarray(frame)
    if arr.ndim == (3 if samples == 1 else 4) and arr.shape[0] == 1:
        arr = arr[0]  # a decoder that keeps a frame axis of 1
    if rows and cols and arr.shape[:2] != (rows, cols):
        raise DataError(f"decoded frame has shape {arr.shape}, header says {rows} x {cols}")
    return arr


def _per_call(ds: Any) -> bool:
    """Native YBR_FULL_422 is decoded one frame per call: pydicom 3.0's ``iter_pixels`` marks the
    data YBR_FULL after expanding the first frame and then misreads the second (a fresh call per
    frame costs one header parse; native frames are read by offset)."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    native = ts is None or not getattr(ts, "is_compressed", False)
    return native and str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422"


def _raw_frames(ds: Any, path: Path | None, order: list[int]) -> Iterator[np.ndarray]:
    from pydicom.pixels.utils import iter_pixels, pixel_array

    what = path.name if path is not None else str(ds.get("SOPInstanceUID", "?"))
    if not order:
        return
    try:
        if path is not None and not _per_call(ds):
            yield from iter_pixels(path, indices=order)
        else:
            for index in order:
                yield pixel_array(ds if path is None else path, index=index)
    except DataError:
        raise
    except Exception as exc:  # decoders raise many types (ValueError, RuntimeError, ...)
        raise _decode_error(exc, what) from exc


def decode_frames(
    src: Any, indices: Sequence[int] | None = None, *, header: Any = None
) -> list[np.ndarray]:
    """Decode frames of an image instance to ``(H, W)`` or ``(H, W, 3)`` uint8 display pixels.

    Training and the worker both decode through here. Pass a path (not a fully read data set) to
    keep memory at the size of the requested frames.

    Parameters
    ----------
    src
        Path of a DICOM file, or a pydicom ``Dataset`` with pixel data.
    indices
        0-based frames to return; all when ``None``.
    header
        The header of ``src`` when it is a path and has been read already.

    Returns
    -------
    list of numpy.ndarray
        One array per requested index, in the order asked.

    Raises
    ------
    DataError
        An index is out of range or the file cannot be read; :class:`PixelDecodeError` when the
        pixel data cannot be decoded (unsupported transfer syntax, truncated data).
    """
    return list(iter_frames(src, indices, header=header))
