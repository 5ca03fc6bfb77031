"""Lesion region of interest: from a DICOM SEG when the study has one, else found automatically.

Automatic segmentation (documented; the worker reports its confidence):

1. Smooth the work image with a Gaussian (``sigma`` pixels) so speckle averages out.
2. Inside the sector (eroded so that the dark fan edge never counts), a three-class Otsu threshold
   over the sector's smoothed pixels gives ``t_low`` < ``t_high``. Pixels under
   ``water_factor * t_low`` are anechoic water (excluded); pixels under
   ``t_low + dark_level * (t_high - t_low)`` are hypoechoic candidates.
3. A small opening and hole filling clean the dark mask. Each connected component is then opened
   with a disk of ``open_fraction`` x its largest inscribed radius (Euclidean distance transform):
   the lesion is a thick blob, the hypoechoic wall layers it sits in are thin and are cut away.
   Components that start in the top ``probe_band`` (15 %) of the fan (the anechoic water in front of
   the transducer) are down-weighted tenfold.
   Pieces under ``min_area`` or over ``max_area`` (fractions of the sector) are dropped.
4. Each remaining component is scored. A lesion is dark against a brighter rim (contrast against a
   ring around it), compact (solidity), does not run along the sector edge (the anechoic lumen near
   the probe and the attenuated far field do), and lies near the middle of the fan:
   ``score = contrast * solidity * (1 - edge_fraction)**2 * (0.5 + 0.5 * centrality)``.
5. The best component is the ROI; its confidence is
   ``clip(contrast / 0.5, 0, 1) * solidity * (1 - edge_fraction)`` in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, measure

from eusdx.errors import DataError

from .preprocess import Preprocessed

__all__ = [
    "NoLesionError",
    "RoiConfig",
    "Roi",
    "auto_roi",
    "roi_from_mask",
    "dice",
    "mask_polygon",
]


class NoLesionError(DataError):
    """No lesion could be found in the frame (deterministic; retrying will not help)."""


@dataclass(frozen=True)
class RoiConfig:
    """Parameters of :func:`auto_roi` (saved in the bundle)."""

    sigma: float = 2.0
    water_factor: float = 0.4
    dark_level: float = 0.5
    min_area: float = 0.003
    max_area: float = 0.5
    ring: int = 6
    open_fraction: float = 0.6
    probe_band: float = 0.15

    def to_dict(self) -> dict[str, float | int]:
        """Plain dict for JSON."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Roi:
    """Lesion mask on the work image, where it came from and how sure we are."""

    mask: np.ndarray
    source: str
    confidence: float


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (yy * yy + xx * xx) <= radius * radius


def roi_from_mask(mask: np.ndarray) -> Roi:
    """Wrap a SEG-derived work-image mask (largest component kept, holes filled).

    Raises
    ------
    NoLesionError
        When the mask is empty on this frame.
    """
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        raise NoLesionError("the SEG mask is empty on this frame")
    labels, n = ndi.label(m)
    if n > 1:
        sizes = ndi.sum(m, labels, index=np.arange(1, n + 1))
        m = labels == (int(np.argmax(sizes)) + 1)
    return Roi(mask=ndi.binary_fill_holes(m), source="SEG", confidence=1.0)


def auto_roi(pre: Preprocessed, config: RoiConfig | None = None) -> Roi:
    """Find the hypoechoic lesion on a preprocessed frame (algorithm in the module docstring).

    Raises
    ------
    NoLesionError
        When no dark compact region is found inside the sector.
    """
    cfg = config or RoiConfig()
    img = pre.image.astype(np.float32)
    sector = ndi.binary_erosion(pre.sector, structure=_disk(3))
    n_sector = int(sector.sum())
    if n_sector < 100:
        raise NoLesionError("sector too small to search for a lesion")
    # Fill outside-sector pixels with the sector median so the blur does not darken the fan edge.
    fill = float(np.median(img[sector]))
    smooth = filters.gaussian(np.where(pre.sector, img, fill), sigma=cfg.sigma, preserve_range=True)
    vals = smooth[sector]
    t_low, t_high = (float(v) for v in filters.threshold_multiotsu(vals, classes=3))
    # Anechoic water (far darker than any hypoechoic lesion) is excluded outright; "dark" is everything
    # up to ``dark_level`` of the way from the low to the high class threshold.
    water = smooth < cfg.water_factor * t_low
    dark = (smooth < t_low + cfg.dark_level * (t_high - t_low)) & ~water & sector
    dark = ndi.binary_opening(dark, structure=_disk(1))
    dark = ndi.binary_fill_holes(dark)
    labels, n = ndi.label(dark)
    if n == 0:
        raise NoLesionError("no hypoechoic region inside the sector")
    dist = ndi.distance_transform_edt(dark)
    edge_band = pre.sector & ~ndi.binary_erosion(pre.sector, structure=_disk(6))
    cy0, cx0 = np.argwhere(pre.sector).mean(axis=0)
    sec_rows = np.flatnonzero(pre.sector.any(axis=1))
    # The transducer sits at the top of the fan; the anechoic water (balloon / lumen) in front of it is
    # the biggest dark region and is never the lesion.
    near_row = sec_rows[0] + max(3, int(cfg.probe_band * (sec_rows[-1] - sec_rows[0])))
    diag = float(np.hypot(*img.shape))
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    # Every step below looks only at one component and a margin around it (the ring, one pixel so that
    # hole filling sees a background border): each works on the component's padded bounding box, which
    # holds exactly the pixels it would touch on the whole image, so the result is the same.
    margin = cfg.ring + 2
    best: tuple[float, np.ndarray, float] | None = None
    for lab, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None or areas[lab] < cfg.min_area * n_sector:
            continue
        r0, r1 = max(0, box[0].start - margin), min(img.shape[0], box[0].stop + margin)
        c0, c1 = max(0, box[1].start - margin), min(img.shape[1], box[1].stop + margin)
        crop = (slice(r0, r1), slice(c0, c1))
        comp = labels[crop] == lab
        cdist = dist[crop]
        # Opening with a disk scaled to this blob (EDT erosion, then EDT dilation): the lesion is a
        # thick blob; the thin hypoechoic wall layers it sits in are cut off.
        big = float(cdist[comp].max())
        r = max(2.0, cfg.open_fraction * big)
        core = comp & (cdist >= r)
        if not core.any():
            continue
        opened = (ndi.distance_transform_edt(~core) <= r) & comp
        sub, k = ndi.label(opened)
        if k > 1:
            peak = np.unravel_index(np.argmax(np.where(comp, cdist, 0)), cdist.shape)
            keep = sub[peak] if sub[peak] else int(np.argmax(np.bincount(sub.ravel())[1:])) + 1
            opened = sub == keep
        opened = ndi.binary_fill_holes(opened)
        area = int(opened.sum())
        if area < cfg.min_area * n_sector or area > cfg.max_area * n_sector:
            continue
        region = measure.regionprops(opened.astype(np.uint8))[0]
        ring = ndi.binary_dilation(opened, structure=_disk(cfg.ring)) & ~opened & pre.sector[crop]
        if not ring.any():
            continue
        csmooth = smooth[crop]
        inside = float(np.median(csmooth[opened]))
        rim = float(np.median(csmooth[ring]))
        contrast = max(0.0, (rim - inside) / (rim + 1.0))
        edge_fraction = float((opened & edge_band[crop]).sum()) / area
        centrality = 1.0 - float(np.hypot(region.centroid[0] + r0 - cy0, region.centroid[1] + c0 - cx0)) / diag
        solidity = float(region.solidity)
        near_probe = 0.1 if box[0].start < near_row else 1.0
        score = contrast * solidity * (1.0 - edge_fraction) ** 2 * (0.5 + 0.5 * centrality) * near_probe
        confidence = float(np.clip(contrast / 0.5, 0, 1) * solidity * (1.0 - edge_fraction))
        if best is None or score > best[0]:
            full = np.zeros(img.shape, dtype=bool)
            full[crop] = opened
            best = (score, full, confidence)
    if best is None or best[0] <= 0:
        raise NoLesionError("no compact hypoechoic region inside the sector")
    return Roi(mask=best[1], source="automatic", confidence=float(np.clip(best[2], 0.0, 1.0)))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean masks (1.0 when both are empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    denom = int(a.sum()) + int(b.sum())
    if denom == 0:
        return 1.0
    return 2.0 * int((a & b).sum()) / denom


def mask_polygon(mask: np.ndarray, pre: Preprocessed, tolerance: float = 0.75) -> list[tuple[float, float]]:
    """Outline of a work-image mask as (column, row) points in ORIGINAL frame pixels."""
    padded = np.pad(np.asarray(mask, dtype=np.float32), 1)
    contours = measure.find_contours(padded, 0.5)
    if not contours:
        return []
    contour = max(contours, key=len) - 1.0
    contour = measure.approximate_polygon(contour, tolerance=tolerance)
    rows, cols = pre.to_original(contour[:, 0] + 0.5, contour[:, 1] + 0.5)
    return [(float(c), float(r)) for r, c in zip(rows, cols)]
