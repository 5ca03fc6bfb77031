"""EUS frame preprocessing: find the B-mode sector, crop to it, blank what lies outside, resize.

The algorithm (documented here because the worker and training must agree on it):

1. Convert to gray (RGB frames: luminance; a frame whose sector holds many saturated colour pixels is a
   colour-Doppler or screenshot frame and is refused with :class:`NoSectorError`).
2. On a copy shrunk so that its long side is at most ``detect_size`` pixels, threshold the image just
   above black, then close and open with a disk about 2 % of the image wide. Speckle inside the fan is
   dense and survives; burned-in text, depth-scale dots and calibration marks are thin and disappear.
3. Keep the largest connected component and take its convex hull (a fan is convex; the hull brings back
   the anechoic water next to the probe, as dark as the background): that is the sector. Under ``min_sector_fraction``
   of the frame means there is no sector.
4. Crop the original frame to the sector's bounding box and set every pixel outside the sector to 0,
   which removes text and marks that lie outside the fan.
5. Resize the crop so that its long side is ``work_size`` pixels (the "work image" that ROI, radiomics
   and the deep input are computed on). The crop box and scale are kept so that results (ROI outlines)
   map back to original frame pixels.

Training augmentation follows paper 002 (Guo et al. 2024): rotation, flip, CLAHE, log contrast and
sigmoid contrast (``skimage.exposure``), each training image enlarged ``augment_factor`` times (5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage as ndi
from skimage import exposure, morphology, transform

from eusdx.errors import DataError

__all__ = [
    "NoSectorError",
    "PreprocessConfig",
    "Preprocessed",
    "to_gray",
    "colour_fraction",
    "detect_sector",
    "has_sector",
    "preprocess",
    "mask_to_work",
    "augment",
    "random_augment",
    "lesion_window",
    "AUGMENTATIONS",
]


class NoSectorError(DataError):
    """The frame has no usable B-mode sector (colour Doppler, screenshot, blank frame)."""


@dataclass(frozen=True)
class PreprocessConfig:
    """Parameters of :func:`preprocess` (saved in the bundle so inference matches training)."""

    detect_size: int = 256
    work_size: int = 256
    black_level: int = 6
    min_sector_fraction: float = 0.08
    max_colour_fraction: float = 0.02

    def to_dict(self) -> dict[str, float | int]:
        """Plain dict for JSON."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Preprocessed:
    """A frame after :func:`preprocess`.

    Attributes
    ----------
    image : numpy.ndarray
        (h, w) uint8 work image: the sector crop, zero outside the sector, long side ``work_size``.
    sector : numpy.ndarray
        (h, w) bool sector mask on the work image.
    box : tuple of int
        (row0, col0, row1, col1) crop box in original frame pixels (end exclusive).
    scale : float
        Work pixels per original pixel.
    mm_per_pixel : float or None
        Physical size of one work-image pixel when the frame is calibrated.
    """

    image: np.ndarray
    sector: np.ndarray
    box: tuple[int, int, int, int]
    scale: float
    mm_per_pixel: float | None = None

    def to_original(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map work-image coordinates to original frame coordinates."""
        return rows / self.scale + self.box[0], cols / self.scale + self.box[1]


def colour_fraction(pixels: np.ndarray, where: np.ndarray | None = None) -> float:
    """Fraction of bright pixels (optionally only ``where``) that are strongly coloured."""
    arr = np.asarray(pixels)
    if arr.ndim != 3 or arr.shape[2] < 3:
        return 0.0
    # Every 3rd pixel in each direction is plenty for a fraction and nine times cheaper.
    arr = arr[::3, ::3]
    if where is not None:
        where = np.asarray(where)[::3, ::3]
    rgb = arr[..., :3].astype(np.int16)
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    bright = rgb.max(axis=2) > 40
    if where is not None:
        bright &= where
    n = int(bright.sum())
    return float((spread[bright] > 60).sum()) / n if n else 0.0


def to_gray(pixels: np.ndarray) -> np.ndarray:
    """Return an (H, W) uint8 gray image (luminance) from a gray or RGB frame.

    Raises
    ------
    DataError
        When the array has an unexpected shape.
    """
    arr = np.asarray(pixels)
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        gray = arr.astype(np.float32)
    elif arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8:
        from PIL import Image

        return np.asarray(Image.fromarray(np.ascontiguousarray(arr)).convert("L"))
    elif arr.ndim == 3 and arr.shape[2] == 3:
        rgb = arr.astype(np.float32)
        gray = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    else:
        raise DataError(f"frame has shape {arr.shape}; expected (H, W) or (H, W, 3)")
    if arr.dtype != np.uint8:
        hi = float(gray.max()) if gray.size else 0.0
        if hi > 255.0:  # e.g. 12/16-bit data: stretch into 8 bits
            gray = gray * (255.0 / hi)
    return np.clip(gray + 0.5, 0, 255).astype(np.uint8)


def _disk(radius: int) -> np.ndarray:
    r = max(1, int(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy * yy + xx * xx) <= r * r


def _resize(img: np.ndarray, shape: tuple[int, int], *, nearest: bool = False) -> np.ndarray:
    """Resize a 2D uint8/bool image with PIL (area-averaging when shrinking, bilinear otherwise)."""
    from PIL import Image

    h, w = shape
    if img.dtype == bool:
        out = Image.fromarray(img.astype(np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST)
        return np.asarray(out) > 127
    src = Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8))
    if nearest:
        method = Image.Resampling.NEAREST
    elif h < img.shape[0] or w < img.shape[1]:
        method = Image.Resampling.BOX
    else:
        method = Image.Resampling.BILINEAR
    return np.asarray(src.resize((w, h), method))


def _shrink(gray: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    h, w = gray.shape
    s = min(1.0, size / max(h, w))
    if s >= 1.0:
        return gray, 1.0
    small = _resize(gray, (max(1, round(h * s)), max(1, round(w * s))))
    return small.astype(np.float32), s


def detect_sector(gray: np.ndarray, config: PreprocessConfig | None = None) -> np.ndarray:
    """Return the (H, W) bool sector mask of a gray frame.

    Raises
    ------
    NoSectorError
        When no component covers ``min_sector_fraction`` of the frame.
    """
    cfg = config or PreprocessConfig()
    small, s = _shrink(gray, cfg.detect_size)
    h, w = small.shape
    fg = ndi.uniform_filter(small.astype(np.float32), size=3) > cfg.black_level
    radius = max(2, round(0.02 * max(h, w)))
    fg = ndi.binary_closing(fg, structure=_disk(radius), border_value=0)
    fg = ndi.binary_opening(fg, structure=_disk(radius))
    labels, n = ndi.label(fg)
    if n == 0:
        raise NoSectorError("no B-mode sector found (frame is blank)")
    sizes = ndi.sum(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    best = int(np.argmax(sizes)) + 1
    if sizes[best - 1] < cfg.min_sector_fraction * h * w:
        raise NoSectorError(
            f"no B-mode sector found (largest bright region {sizes[best - 1] / (h * w):.1%} of the frame)"
        )
    # The fan is convex: its hull brings back the anechoic water near the probe, which is as dark as
    # the background and would otherwise be cut off (text lies outside the hull, so it stays out).
    keep = labels == best
    rows, cols = np.nonzero(keep)
    top, c_lo, c_hi = rows.min(), np.percentile(cols, 20), np.percentile(cols, 80)
    # The near field next to the probe can be a separate bright blob above the anechoic water; it
    # belongs to the fan when it sits above the main region and in its middle columns (text sits in
    # the corners).
    for lab in range(1, n + 1):
        if lab == best or sizes[lab - 1] < 0.001 * h * w:
            continue
        rr, cc = np.nonzero(labels == lab)
        if rr.max() <= top + 2 and c_lo <= cc.mean() <= c_hi:
            keep |= labels == lab
    sector = morphology.convex_hull_image(keep)
    if s < 1.0:
        sector = _resize(np.asarray(sector, dtype=bool), gray.shape)
    return np.asarray(sector, dtype=bool)


def has_sector(pixels: np.ndarray, config: PreprocessConfig | None = None) -> bool:
    """Cheap check: does this frame hold a B-mode sector (and is not colour Doppler)?"""
    cfg = config or PreprocessConfig()
    try:
        gray = to_gray(pixels)
        small, _ = _shrink(gray, 128)
        sector = detect_sector(small, PreprocessConfig(detect_size=128, black_level=cfg.black_level,
                                                       min_sector_fraction=cfg.min_sector_fraction))
    except (NoSectorError, DataError):
        return False
    arr = np.asarray(pixels)
    if arr.ndim == 3:
        small_rgb = np.stack([_resize(arr[..., c], sector.shape, nearest=True) for c in range(3)], axis=-1)
        if colour_fraction(small_rgb, sector) > cfg.max_colour_fraction:
            return False
    return True


def preprocess(pixels: np.ndarray, config: PreprocessConfig | None = None, *,
               mm_per_pixel: float | None = None) -> Preprocessed:
    """Crop a frame to its sector, blank the outside, and resize to the work image.

    Parameters
    ----------
    pixels : numpy.ndarray
        One decoded frame, (H, W) gray or (H, W, 3) RGB.
    config : PreprocessConfig, optional
    mm_per_pixel : float, optional
        Physical pixel size of the frame (DICOM ultrasound region calibration).

    Returns
    -------
    Preprocessed

    Raises
    ------
    NoSectorError
        The frame has no B-mode sector.
    """
    cfg = config or PreprocessConfig()
    gray = to_gray(pixels)
    sector = detect_sector(gray, cfg)
    if colour_fraction(pixels, sector) > cfg.max_colour_fraction:
        raise NoSectorError("the sector holds colour (Doppler or screenshot), not plain B-mode")
    rows = np.flatnonzero(sector.any(axis=1))
    cols = np.flatnonzero(sector.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    crop = np.where(sector[r0:r1, c0:c1], gray[r0:r1, c0:c1], 0).astype(np.uint8)
    sec = sector[r0:r1, c0:c1]
    h, w = crop.shape
    scale = cfg.work_size / max(h, w)
    out_shape = (max(1, round(h * scale)), max(1, round(w * scale)))
    image = _resize(crop, out_shape)
    sec_w = _resize(sec, out_shape)
    image = np.where(sec_w, image, 0).astype(np.uint8)
    mpp = None if mm_per_pixel is None else float(mm_per_pixel) / float(scale)
    return Preprocessed(image=image, sector=sec_w, box=(r0, c0, r1, c1), scale=float(scale), mm_per_pixel=mpp)


def mask_to_work(mask: np.ndarray, pre: Preprocessed) -> np.ndarray:
    """Map an (H, W) mask in original frame pixels onto the work image of ``pre``."""
    r0, c0, r1, c1 = pre.box
    crop = np.asarray(mask, dtype=bool)[r0:r1, c0:c1]
    return _resize(crop, pre.image.shape)


# --- paper 002 augmentation -------------------------------------------------------------------

AugName = Literal["rotate", "flip", "clahe", "log", "sigmoid"]
AUGMENTATIONS: tuple[AugName, ...] = ("rotate", "flip", "clahe", "log", "sigmoid")


def _apply(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    f = img.astype(np.float64) / 255.0
    if kind == "rotate":
        out = transform.rotate(f, angle=float(rng.uniform(-20, 20)), order=1, mode="constant", cval=0)
    elif kind == "flip":
        out = f[:, ::-1]
    elif kind == "clahe":
        out = exposure.equalize_adapthist(f, clip_limit=float(rng.uniform(0.01, 0.03)))
    elif kind == "log":
        out = exposure.adjust_log(f, gain=float(rng.uniform(0.8, 1.2)))
    elif kind == "sigmoid":
        out = exposure.adjust_sigmoid(f, cutoff=float(rng.uniform(0.4, 0.6)), gain=float(rng.uniform(5, 10)))
    else:
        raise ValueError(f"unknown augmentation {kind!r}")
    return np.clip(np.asarray(out) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def augment(image: np.ndarray, rng: np.random.Generator, n: int = 5) -> list[np.ndarray]:
    """Return ``n`` augmented copies of a uint8 gray image (paper 002's five transforms).

    Copy ``i`` applies transform ``i mod 5`` (rotation, flip, CLAHE, log, sigmoid) with random
    parameters drawn from ``rng``, so ``n=5`` gives one copy of each as in the paper.
    """
    return [_apply(image, AUGMENTATIONS[i % len(AUGMENTATIONS)], rng) for i in range(n)]


def random_augment(image: np.ndarray, rng: np.random.Generator, factor: int = 5) -> np.ndarray:
    """One draw from the x``factor`` enlarged set: the original with probability 1/(1+factor)."""
    k = int(rng.integers(0, factor + 1))
    if k == 0:
        return image
    return _apply(image, AUGMENTATIONS[(k - 1) % len(AUGMENTATIONS)], rng)


def lesion_window(image: np.ndarray, mask: np.ndarray | None, out_size: int, *,
                  mm_per_pixel: float | None = None, window_mm: float = 60.0,
                  min_fraction: float = 0.5, margin: float = 1.4) -> np.ndarray:
    """Square window of the work image centred on the lesion, resized to ``out_size``.

    With a calibrated image the window is ``window_mm`` wide (or ``margin`` x the lesion extent when
    the lesion is larger), so every window has the same physical scale and the network sees absolute
    lesion size (the strongest GIST vs leiomyoma cue, and the depth setting varies between images).
    Uncalibrated: ``max(min_fraction * long side, margin * extent)``. Without a mask the whole image,
    padded to a square, is used.
    """
    h, w = image.shape
    if mask is None or not mask.any():
        cy, cx, side = h / 2.0, w / 2.0, float(max(h, w))
    else:
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        cy, cx = (rows[0] + rows[-1] + 1) / 2.0, (cols[0] + cols[-1] + 1) / 2.0
        extent = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
        base = window_mm / mm_per_pixel if mm_per_pixel else min_fraction * max(h, w)
        side = max(base, margin * extent)
    half = side / 2.0
    r0, c0 = int(round(cy - half)), int(round(cx - half))
    n = max(1, int(round(side)))
    canvas = np.zeros((n, n), dtype=np.uint8)
    sr0, sc0 = max(0, r0), max(0, c0)
    sr1, sc1 = min(h, r0 + n), min(w, c0 + n)
    if sr1 > sr0 and sc1 > sc0:
        canvas[sr0 - r0 : sr1 - r0, sc0 - c0 : sc1 - c0] = image[sr0:sr1, sc0:sc1]
    return _resize(canvas, (out_size, out_size))
