"""The key-image preview: the ROI outline and label exactly as the SR states them, drawn on the
spool instance the SR points at.

The SR (TID 1500, DICOM PS3.16) carries one measurement group per analysed image with a SCOORD
POLYLINE (PS3.3 C.18.6, column/row pixel coordinates) selected from an IMAGE reference (SOP
Instance UID, optional frame), a NUM ``(122157, DCM, "Probability")`` and a CODE
``(121071, DCM, "Finding")``; values in UCUM ``%`` are read as fractions. The key image is the
region whose probability is closest to the lesion's: the lesion-level group itself where the SR
puts it on the key image, else the image the worker picked by the same rule. Pixels are decoded by pydicom (its
pixel handlers cover the JPEG family and RLE); the PNG is drawn with Pillow.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from eusdx.uids import is_valid_uid

__all__ = ["Region", "regions_from_sr", "key_region", "render_png", "spool_instance",
           "PreviewUnavailable"]

_PROBABILITY = ("122157", "DCM")
_FINDING = ("121071", "DCM")
_LEIOMYOMA_SCT = "1162890002"


class PreviewUnavailable(Exception):
    """No preview can be drawn; the message says why in a plain sentence for the page."""


@dataclasses.dataclass(frozen=True)
class Region:
    """One image-level result of the SR: where the ROI is and what the SR says of it."""

    sop_uid: str
    frame: int | None
    polygon: tuple[tuple[float, float], ...]  # (column, row) pixel coordinates
    probability: float | None
    label: str | None


def _code(item: Dataset, attr: str) -> tuple[str, str] | None:
    seq = item.get(attr)
    if not seq:
        return None
    return str(seq[0].CodeValue), str(seq[0].CodingSchemeDesignator)


def _label(item: Dataset) -> str | None:
    seq = item.get("ConceptCodeSequence")
    if not seq:
        return None
    code = seq[0]
    if str(code.CodeValue) == _LEIOMYOMA_SCT:
        return "leiomyoma"
    meaning = str(code.get("CodeMeaning", code.CodeValue))
    return "GIST" if "stromal" in meaning.lower() else meaning


def _fraction(measured: Dataset) -> float:
    """A probability NUM as a fraction in [0, 1]: UCUM ``%`` values are divided by 100."""
    value = float(measured.NumericValue)
    units = measured.get("MeasurementUnitsCodeSequence")
    if units and str(units[0].CodeValue) == "%":
        value /= 100.0
    return value


def _walk(items: Any) -> Iterator[Dataset]:
    for item in items or []:
        yield item
        yield from _walk(item.get("ContentSequence"))


def regions_from_sr(sr: Dataset) -> list[Region]:
    """Every SCOORD-with-IMAGE region of the SR, with the probability and finding of its group."""
    out: list[Region] = []
    for group in _walk(sr.get("ContentSequence")):
        if group.get("ValueType") != "CONTAINER":
            continue
        children = list(group.get("ContentSequence") or [])
        scoords = [c for c in children if c.get("ValueType") == "SCOORD"]
        if not scoords:
            continue
        probability = label = None
        for c in children:
            name = _code(c, "ConceptNameCodeSequence")
            if c.get("ValueType") == "NUM" and name == _PROBABILITY:
                probability = _fraction(c.MeasuredValueSequence[0])
            elif c.get("ValueType") == "CODE" and name == _FINDING:
                label = _label(c)
        for sc in scoords:
            images = [i for i in sc.get("ContentSequence") or [] if i.get("ValueType") == "IMAGE"]
            if not images or "GraphicData" not in sc:
                continue
            ref = images[0].ReferencedSOPSequence[0]
            frames = ref.get("ReferencedFrameNumber")
            frame = None
            if frames is not None:
                frame = int(frames[0] if isinstance(frames, (list, pydicom.multival.MultiValue))
                            else frames)
            data = [float(v) for v in sc.GraphicData]
            polygon = tuple(zip(data[0::2], data[1::2]))
            out.append(Region(str(ref.ReferencedSOPInstanceUID), frame, polygon, probability,
                              label))
    return out


def key_region(regions: list[Region], lesion_probability: float | None) -> Region | None:
    """The region whose probability is closest to the lesion's (the first when unknown)."""
    if not regions:
        return None
    if lesion_probability is None:
        return regions[0]
    return min(regions, key=lambda r: abs((r.probability if r.probability is not None else 9.0)
                                          - lesion_probability))


def spool_instance(spool: Path, study_uid: str, sop_uid: str) -> Path:
    """``<spool>/<study>/<sop>.dcm`` after checking both are plain UIDs.

    Raises
    ------
    PreviewUnavailable
        A UID is not a DICOM UID, or the file is not (or no longer) in the spool.
    """
    if not (is_valid_uid(study_uid) and is_valid_uid(sop_uid)):
        raise PreviewUnavailable("the image reference is not a DICOM UID")
    path = Path(spool) / study_uid / f"{sop_uid}.dcm"
    if not path.is_file():
        raise PreviewUnavailable("the key image is no longer in the spool (retention removed it, "
                                 "or it was never stored here)")
    return path


def _to_rgb(ds: Dataset, frame: int | None) -> np.ndarray:
    from pydicom.pixels.processing import apply_color_lut

    arr: np.ndarray = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = arr[(frame or 1) - 1]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    if arr.ndim == 2:
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr.astype(np.float64) - lo) / (hi - lo if hi > lo else 1.0) * 255.0
        if photometric == "MONOCHROME1":
            scaled = 255.0 - scaled
        arr = np.repeat(scaled[..., None], 3, axis=2)
    elif arr.dtype != np.uint8:
        arr = arr.astype(np.float64) / float(arr.max() or 1) * 255.0
    rgb: np.ndarray = np.clip(arr, 0, 255).astype(np.uint8)
    return rgb


def render_png(instance: Path, region: Region, *, caption: str) -> bytes:
    """The instance's frame as PNG with the ROI outline (yellow) and ``caption`` on it.

    Raises
    ------
    PreviewUnavailable
        The file cannot be read or its pixels cannot be decoded.
    """
    from PIL import Image, ImageDraw

    try:
        ds = pydicom.dcmread(instance)
        rgb = _to_rgb(ds, region.frame)
    except Exception as exc:  # pydicom raises many types for undecodable pixel data
        from eusdx.failures import classify

        raise PreviewUnavailable(f"the key image cannot be decoded ({classify(exc).as_text()})"
                                 ) from exc
    image = Image.fromarray(rgb, mode="RGB")
    draw = ImageDraw.Draw(image)
    points = [(float(c), float(r)) for c, r in region.polygon]
    if points and points[0] != points[-1]:
        points.append(points[0])
    width = max(2, round(min(image.size) / 200))
    draw.line(points, fill=(255, 220, 0), width=width, joint="curve")
    x = min(p[0] for p in points)
    y = max(0.0, min(p[1] for p in points) - 16)
    box = draw.textbbox((x, y), caption)
    draw.rectangle(box, fill=(0, 0, 0))
    draw.text((x, y), caption, fill=(255, 220, 0))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
