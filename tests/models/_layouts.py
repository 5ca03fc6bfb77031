"""Native-encoded ultrasound images of every layout, with the display pixels expected of them.

The expected pixels come from the standard's own formulas (PS3.3 C.7.6.3.1.2 YBR_FULL to RGB,
C.7.6.3.1.5 palette lookup, C.7.6.3.1.1 Bits Stored), computed here without pydicom, so that a test
compares the decoder against the standard rather than against pydicom's own output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR")


@dataclass(frozen=True)
class Layout:
    photometric: str
    planar: int  # 0 or 1 (3-sample photometrics other than YBR_FULL_422)
    frames: int
    bits: int  # 8 or 16 (YBR: 8 only)
    rows: int
    cols: int  # even for YBR_FULL_422
    multi: bool  # NumberOfFrames present (a multi-frame IOD)


def ybr_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """PS3.3 C.7.6.3.1.2 (YBR_FULL, 8 bit): the inverse of the RGB-to-YCbCr equations."""
    y, cb, cr = (v.astype(np.float64) for v in (y, cb, cr))
    r = y + 1.402 * (cr - 128)
    g = y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128)
    b = y + 1.772 * (cb - 128)
    return np.clip(np.rint(np.stack([r, g, b], axis=-1)), 0, 255).astype(np.uint8)


def make_image(layout: Layout, seed: int) -> tuple[Dataset, list[np.ndarray]]:
    """A dataset (native Explicit VR Little Endian) and the display frames a decoder must give."""
    rng = np.random.default_rng(seed)
    lo = layout
    n, h, w = lo.frames, lo.rows, lo.cols
    ds = Dataset()
    ds.SOPClassUID = US_MULTIFRAME if lo.multi else US_IMAGE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "US"
    ds.Rows, ds.Columns = h, w
    ds.PhotometricInterpretation = lo.photometric
    ds.PixelRepresentation = 0
    if lo.multi:
        ds.NumberOfFrames = n
    top = (1 << lo.bits) - 1
    dtype = np.uint8 if lo.bits == 8 else np.dtype("<u2")
    expected: list[np.ndarray] = []
    if lo.photometric.startswith("MONOCHROME"):
        ds.SamplesPerPixel = 1
        stored = rng.integers(0, top + 1, size=(n, h, w), dtype=np.int64)
        grey = np.rint(stored * (255.0 / top)).astype(np.uint8)
        if lo.photometric == "MONOCHROME1":
            grey = 255 - grey
        expected = list(grey)
        data = stored.astype(dtype).tobytes()
    elif lo.photometric == "PALETTE COLOR":
        ds.SamplesPerPixel = 1
        entries = 1 << lo.bits if lo.bits == 8 else 4096
        index = rng.integers(0, entries, size=(n, h, w), dtype=np.int64)
        lut = rng.integers(0, 256, size=(3, entries), dtype=np.int64)
        for colour, values in zip(("Red", "Green", "Blue"), lut):
            setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [entries, 0, 16])
            # 16-bit entries holding the 8-bit colour in the high byte, as most writers do
            setattr(ds, f"{colour}PaletteColorLookupTableData", (values << 8).astype("<u2").tobytes())
        expected = [np.stack([lut[c][index[f]] for c in range(3)], axis=-1).astype(np.uint8)
                    for f in range(n)]
        data = index.astype(dtype).tobytes()
    elif lo.photometric in ("YBR_FULL", "YBR_FULL_422"):
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0 if lo.photometric == "YBR_FULL_422" else lo.planar
        y = rng.integers(16, 236, size=(n, h, w), dtype=np.int64)
        half = w // 2 if lo.photometric == "YBR_FULL_422" else w
        cb = rng.integers(64, 192, size=(n, h, half), dtype=np.int64)
        cr = rng.integers(64, 192, size=(n, h, half), dtype=np.int64)
        if lo.photometric == "YBR_FULL_422":
            full_cb, full_cr = np.repeat(cb, 2, axis=2), np.repeat(cr, 2, axis=2)
            # PS3.3 C.7.6.3.1.2 YBR_FULL_422 native: Y1 Y2 Cb Cr for every two pixels of a row
            packed = np.stack([y[..., 0::2], y[..., 1::2], cb, cr], axis=-1)
            data = packed.astype(np.uint8).tobytes()
        else:
            full_cb, full_cr = cb, cr
            data = _interleave(np.stack([y, cb, cr], axis=-1), lo.planar, np.uint8)
        expected = list(ybr_to_rgb(y, full_cb, full_cr))
    else:  # RGB
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = lo.planar
        stored = rng.integers(0, top + 1, size=(n, h, w, 3), dtype=np.int64)
        expected = list(np.rint(stored * (255.0 / top)).astype(np.uint8))
        data = _interleave(stored, lo.planar, dtype)
    ds.BitsAllocated = lo.bits
    ds.BitsStored = lo.bits
    ds.HighBit = lo.bits - 1
    ds.PixelData = data + (b"\x00" if len(data) % 2 else b"")
    ds["PixelData"].VR = "OB" if lo.bits == 8 else "OW"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds, expected


def _interleave(arr: np.ndarray, planar: int, dtype: object) -> bytes:
    """(frames, rows, cols, 3) samples as planar configuration 0 (RGBRGB) or 1 (RR..GG..BB..)."""
    if planar == 1:
        arr = np.transpose(arr, (0, 3, 1, 2))
    return np.ascontiguousarray(arr).astype(dtype).tobytes()
