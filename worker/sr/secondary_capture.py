"""Secondary Capture of the verdict, for viewers that do not render SR.

The analysed frame is copied with the ROI outline and the result burned in (BurnedInAnnotation YES), as a
Secondary Capture Image in the source study, new series. It carries the same notice as the SR.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from worker.sr.builder import MANUFACTURER, SC_SERIES_NUMBER, AlgorithmInfo, ReportUids, notice_texts
from worker.sr.header import normalise_header

__all__ = ["build_secondary_capture", "render_overlay"]

_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "IssuerOfPatientID",
    "StudyDescription",
    "SpecificCharacterSet",
)
_OUTLINE = (255, 255, 0)


def _font(height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    size = max(10, height // 40)
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: the bitmap font still works
        return ImageFont.load_default()


def render_overlay(
    pixels: np.ndarray, polygon: Sequence[tuple[float, float]], lines: Sequence[str]
) -> np.ndarray:
    """Draw the ROI outline and text lines onto a copy of one frame.

    Parameters
    ----------
    pixels
        ``(H, W)`` gray or ``(H, W, 3)`` RGB, uint8.
    polygon
        ROI outline as (column, row) points in frame pixels.
    lines
        Text drawn top-left on a dark band.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8 RGB.

    Raises
    ------
    ValueError
        ``pixels`` is not a 2-D gray or 3-channel RGB frame, or the polygon has fewer than 3 points.
    """
    arr = np.asarray(pixels)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"pixels must be (H, W) or (H, W, 3), got shape {np.shape(pixels)}")
    if len(polygon) < 3:
        raise ValueError("polygon needs at least 3 points")
    if arr.dtype != np.uint8:
        lo, hi = float(arr.min()), float(arr.max())
        arr = ((arr - lo) / (hi - lo or 1.0) * 255).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(arr), mode="RGB")
    draw = ImageDraw.Draw(image)
    points = [(float(c), float(r)) for c, r in polygon]
    width = max(1, image.height // 200)
    draw.line(points + points[:1], fill=_OUTLINE, width=width)
    font = _font(image.height)
    char_width = max(1.0, draw.textlength("M", font=font) * 0.7)
    wrapped = [w for line in lines for w in textwrap.wrap(line, max(20, int(image.width / char_width) - 2))]
    y: float = 4
    for line in wrapped:
        box = draw.textbbox((6, y), line, font=font)
        draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
        draw.text((6, y), line, fill=(255, 255, 255), font=font)
        y = box[3] + 4
    return np.asarray(image, dtype=np.uint8)


def build_secondary_capture(
    source: Dataset,
    pixels: np.ndarray,
    polygon: Sequence[tuple[float, float]],
    *,
    probability: float,
    label: str,
    algorithm: AlgorithmInfo,
    uids: ReportUids,
    index: int = 1,
) -> Dataset:
    """Build a Secondary Capture Image of one frame with ROI and verdict burned in.

    Parameters
    ----------
    source
        Header of the source instance (patient and study attributes are copied from it).
    pixels
        The decoded frame, ``(H, W)`` or ``(H, W, 3)`` uint8.
    polygon
        ROI outline in frame pixels.
    probability, label
        The lesion-level result.
    algorithm
        Bundle identification (name, version; synthetic adds "not for clinical use").
    uids
        ``report_uids(study, version)``; the SC's UIDs derive from it.
    index
        1-based number of this SC within the study's result series.

    Returns
    -------
    pydicom.dataset.Dataset
        A Secondary Capture Image Storage instance with file meta, ready to save.

    Raises
    ------
    ValueError
        Probability outside [0, 1], or see ``render_overlay``.
    worker.sr.header.SourceHeaderError
        The source cannot be referenced (no valid UIDs or Rows/Columns).
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must lie in [0, 1], got {probability}")
    lines = [
        f"eusdx: {label} (P(GIST) = {probability:.2f})",
        f"model {algorithm.version}",
        *notice_texts(algorithm.synthetic),
    ]
    rgb = render_overlay(pixels, polygon, lines)
    now = dt.datetime.now(dt.timezone.utc)
    sop_uid = uids.sc_sop(index)

    ds = Dataset()
    header = normalise_header(source).dataset  # the same conformant values the SR copies
    for keyword in _COPIED:
        if keyword in header:
            setattr(ds, keyword, header[keyword].value)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "StudyID", "AccessionNumber", "ReferringPhysicianName"):
        if keyword not in ds:
            setattr(ds, keyword, None)  # Type 2: present, may be empty
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.SeriesInstanceUID = uids.sc_series
    ds.SeriesNumber = SC_SERIES_NUMBER
    ds.SeriesDescription = "eusdx result (burned in, decision support)"
    ds.Modality = "OT"
    ds.ConversionType = "WSD"  # workstation-made image
    ds.Manufacturer = MANUFACTURER
    ds.InstanceNumber = index
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.PatientOrientation = None
    # The stomach is unpaired: with BodyPartExamined set, Laterality (Type 2C) is correctly absent.
    ds.BodyPartExamined = "STOMACH"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.BurnedInAnnotation = "YES"
    ds.DerivationDescription = "Source frame with eusdx ROI outline and result burned in"
    src_item = Dataset()
    src_item.ReferencedSOPClassUID = header.SOPClassUID
    src_item.ReferencedSOPInstanceUID = header.SOPInstanceUID
    ds.SourceImageSequence = [src_item]
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = int(rgb.shape[0]), int(rgb.shape[1])
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = rgb.tobytes()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds
