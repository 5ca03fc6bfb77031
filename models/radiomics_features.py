"""pyradiomics 2D features of the lesion ROI, with an on-disk cache.

Settings come from ``models/radiomics.yaml`` (or a file given by the caller; a bundle passes its own
copy, so a bundle trained with older settings keeps computing exactly the features it was trained on).
Two eusdx sections extend pyradiomics' parameter file, each optional (absent = the behaviour of
bundles before issue 16):

``intensity: {normalise: sector-zscore}``
    Per-image intensity normalisation before any filter: ``(x - mean) / sd`` over the ultrasound
    sector (the work image's non-zero pixels), so gain and dynamic-range differences between devices
    do not move first-order features (IBSI 1, Zwanenburg et al. 2020, Radiology 295:328: intensity
    normalisation as an image-processing step reported before discretisation).
``log2D: {sigma: [...], scale_normalised: true, binCount: N}``
    The 2D Laplacian of Gaussian multiplied by ``sigma_px**2`` (scale normalisation, Lindeberg 1998,
    IJCV 30:79; what pyradiomics' own 3D LoG does with SimpleITK's ``NormalizeAcrossScale``), and its
    own discretisation (``binCount`` or ``binWidth``) instead of the Original image's.

Per-filter discretisation of pyradiomics' own image types goes in their ``imageType`` entries
(pyradiomics merges those over ``setting``). Features are computed on
the work image (see ``models/preprocess.py``) and the work-image ROI mask. The cache key is
``sha256(image) | sha256(mask) | sha256(settings)``, so a cached value is reused only for exactly the
same pixels, mask and settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from eusdx.durable import atomic_write_text
from eusdx.errors import DataError

__all__ = [
    "DEFAULT_SETTINGS",
    "sector_zscore",
    "log_response",
    "RadiomicsError",
    "RadiomicsExtractor",
    "FeatureCache",
    "array_hash",
]

DEFAULT_SETTINGS = Path(__file__).with_name("radiomics.yaml")


class RadiomicsError(DataError):
    """pyradiomics could not compute features for an ROI (too small, flat, malformed)."""


def array_hash(arr: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes."""
    a = np.ascontiguousarray(arr)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


class FeatureCache:
    """Directory of JSON files, one per key (``<root>/<key[:2]>/<key>.json``); writes are atomic."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root is not None else None

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Any | None:
        """Cached value or None."""
        if self.root is None:
            return None
        p = self._path(key)
        try:
            with open(p, encoding="utf-8") as fh:
                return json.load(fh)
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value."""
        if self.root is None:
            return
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        # atomic (readers never see half a file); a cache, so no fsync; key order kept
        atomic_write_text(p, json.dumps(value), sync=False)


def _quiet_pyradiomics() -> None:
    # pyradiomics logs every filter and class at INFO on its own handler; keep errors only.
    logger = logging.getLogger("radiomics")
    logger.setLevel(logging.ERROR)
    for handler in list(logger.handlers):
        handler.setLevel(logging.ERROR)


def log_response(image: np.ndarray, sigma_px: float, *, scale_normalised: bool) -> np.ndarray:
    """2D Laplacian of Gaussian of ``image`` (float32), times ``sigma_px**2`` when ``scale_normalised``.

    With scale normalisation a Gaussian blob of standard deviation ``t`` gives its extreme response
    ``-1/2`` (for unit amplitude) at ``sigma = t`` (Lindeberg 1998, IJCV 30:79), whatever ``t``; without
    it, the response falls as ``1/sigma**2`` and filters at different scales are not comparable.
    """
    from scipy import ndimage as ndi

    response = ndi.gaussian_laplace(np.asarray(image, dtype=np.float32), sigma=sigma_px)
    if scale_normalised:
        response = response * np.float32(sigma_px**2)
    return np.asarray(response, dtype=np.float32)


def sector_zscore(image: np.ndarray) -> np.ndarray:
    """``(x - mean) / sd`` over the sector (non-zero pixels) of a 2D work image; outside stays 0.

    Returns float32 of the input's shape. A sector with fewer than 2 pixels or no spread is returned
    only shifted (sd taken as 1), so a flat image does not divide by zero.
    """
    img = np.asarray(image, dtype=np.float32)
    sector = img != 0
    if sector.sum() < 2:
        return img.copy()
    vals = img[sector].astype(np.float64)
    mean, sd = float(vals.mean()), float(vals.std())
    out = np.zeros_like(img)
    out[sector] = ((vals - mean) / (sd if sd > 0 else 1.0)).astype(np.float32)
    return out


class RadiomicsExtractor:
    """Wraps ``radiomics.featureextractor.RadiomicsFeatureExtractor`` for 2D uint8 images.

    Parameters
    ----------
    settings : path or dict, optional
        pyradiomics parameter file or dict; ``models/radiomics.yaml`` by default.
    cache : FeatureCache, optional
    only : set of str, optional
        Feature names (``<image type>_<class>_<feature>``) to compute; the others are left out
        (the bundle passes the features its model can use: see ``Bundle.used_radiomics``).
        ``None`` computes everything the settings name.
    """

    def __init__(self, settings: str | Path | dict[str, Any] | None = None,
                 cache: FeatureCache | None = None, *, only: set[str] | frozenset[str] | None = None) -> None:
        if settings is None or isinstance(settings, (str, Path)):
            path = Path(settings) if settings is not None else DEFAULT_SETTINGS
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise DataError(f"cannot read radiomics settings {path}: {exc}") from exc
            self.params: dict[str, Any] = yaml.safe_load(text)
        else:
            self.params = dict(settings)
        self.only = None if only is None else frozenset(only)
        self.settings_hash = hashlib.sha256(json.dumps(
            {**self.params, "_only": sorted(self.only) if self.only is not None else None},
            sort_keys=True).encode()).hexdigest()
        self.cache = cache or FeatureCache(None)
        self._extractor: Any = None
        self._log_extractor: Any = None
        log2d = self.params.get("log2D") or {}
        self.log_sigmas = [float(s) for s in log2d.get("sigma", [])]
        self.log_scale_normalised = bool(log2d.get("scale_normalised", False))
        self.log_bins = {k: log2d[k] for k in ("binCount", "binWidth") if k in log2d}
        norm = (self.params.get("intensity") or {}).get("normalise", "none")
        if norm not in ("none", "sector-zscore"):
            raise DataError(f"radiomics settings: intensity.normalise must be 'none' or 'sector-zscore', got {norm!r}")
        self.normalise = str(norm)

    def _pyradiomics_params(self, log: bool) -> dict[str, Any]:
        p = {k: v for k, v in self.params.items() if k not in ("log2D", "intensity", "stability")}
        if log:  # a filtered response: texture and intensity only (shape is the ROI's, once is enough)
            p["imageType"] = {"Original": dict(self.log_bins)}
            p["featureClass"] = {k: v for k, v in p.get("featureClass", {}).items() if not k.startswith("shape")}
        if self.only is not None:
            p = self._restricted(p, log)
        return p

    def _wanted(self, log: bool) -> list[tuple[str, str, str]]:
        """(image type, class, feature) of every name in ``only`` this run (main or LoG) makes."""
        out = []
        for name in self.only or ():
            image_type, _, rest = name.partition("_")
            cls, _, feature = rest.partition("_")
            if image_type.startswith("log-sigma-") == log and cls and feature:
                out.append((image_type, cls, feature))
        return out

    def _restricted(self, p: dict[str, Any], log: bool) -> dict[str, Any]:
        # Only the image types and feature classes/features some wanted name comes from. The
        # matrices (GLCM, GLRLM...) of a class are the expensive part; a class none of the wanted
        # names uses is not built at all. Values of what is computed do not change.
        wanted = self._wanted(log)
        classes: dict[str, set[str]] = {}
        for _, cls, feature in wanted:
            classes.setdefault(cls, set()).add(feature)
        p = dict(p)
        p["featureClass"] = {cls: sorted(feats) for cls, feats in classes.items()
                             if cls in (p.get("featureClass") or {})}
        if not log:
            types = {t for t, _, _ in wanted}
            image_types = dict(p.get("imageType") or {})
            keep = {}
            for key, value in image_types.items():
                if key == "Original" and "original" in types:
                    keep[key] = value
                elif key == "Wavelet" and any(t.startswith("wavelet-") for t in types):
                    keep[key] = value
                elif key not in ("Original", "Wavelet") and any(t.lower().startswith(key.lower()) for t in types):
                    keep[key] = value
            p["imageType"] = keep
        return p

    def _log_sigmas_needed(self) -> list[float]:
        if self.only is None:
            return self.log_sigmas
        types = {t for t, _, _ in self._wanted(True)}
        return [s for s in self.log_sigmas if f"log-sigma-{s:g}-mm-2D".replace(".", "-") in types]

    def _get(self, log: bool = False) -> Any:
        if (self._log_extractor if log else self._extractor) is None:
            import warnings

            _quiet_pyradiomics()
            with warnings.catch_warnings():
                # pyradiomics discovers its feature classes with the deprecated importlib load_module().
                warnings.simplefilter("ignore", DeprecationWarning)
                from radiomics import featureextractor

                _quiet_pyradiomics()
                ex = featureextractor.RadiomicsFeatureExtractor(self._pyradiomics_params(log))
            if log:
                self._log_extractor = ex
            else:
                self._extractor = ex
        return self._log_extractor if log else self._extractor

    def key(self, image: np.ndarray, mask: np.ndarray, spacing: float = 1.0) -> str:
        """Cache key of one image/mask pair (and pixel spacing) under these settings."""
        return hashlib.sha256(
            f"{array_hash(image)}|{array_hash(mask.astype(np.uint8))}|{spacing:.6g}|{self.settings_hash}".encode()
        ).hexdigest()

    def extract(self, image: np.ndarray, mask: np.ndarray, spacing: float = 1.0) -> dict[str, float]:
        """Features of one 2D image and boolean ROI mask (cached).

        ``spacing`` is the pixel size (mm for calibrated frames): shape features and the LoG sigmas
        are in these units.

        Raises
        ------
        RadiomicsError
            When the ROI is empty/too small or pyradiomics fails on it.
        """
        m = np.asarray(mask, dtype=bool)
        if m.sum() < 4:
            raise RadiomicsError("ROI has fewer than 4 pixels")
        key = self.key(image, m, spacing)
        cached = self.cache.get(key)
        if cached is not None:
            return {k: float(v) for k, v in cached.items()}
        import SimpleITK as sitk

        from scipy import ndimage as ndi

        # Crop to the ROI's bounding box plus a margin wide enough for the filters (3 LoG sigmas, and
        # at least 16 px for the wavelet): pyradiomics' own per-call overhead (hashing, label statistics,
        # binning) scales with the array it is handed, the features do not change.
        if self.normalise == "sector-zscore":
            image = sector_zscore(image)
        sig_px = max(self.log_sigmas, default=0.0) / float(spacing)
        pad = int(max(16, np.ceil(3 * sig_px) + 2))
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        r0, r1 = max(0, rows[0] - pad), min(m.shape[0], rows[-1] + 1 + pad)
        c0, c1 = max(0, cols[0] - pad), min(m.shape[1], cols[-1] + 1 + pad)
        image, m = np.asarray(image)[r0:r1, c0:c1], m[r0:r1, c0:c1]
        msk = sitk.GetImageFromArray(m.astype(np.uint8)[None])
        msk.SetSpacing((float(spacing), float(spacing), 1.0))
        runs: list[tuple[str, np.ndarray, bool]] = []
        if self.only is None or self._wanted(False):
            runs.append(("", np.asarray(image, dtype=np.float32), False))
        for s in self._log_sigmas_needed():
            response = log_response(image, s / float(spacing), scale_normalised=self.log_scale_normalised)
            runs.append((f"log-sigma-{s:g}-mm-2D".replace(".", "-"), response.astype(np.float32), True))
        feats: dict[str, float] = {}
        for prefix, arr, log in runs:
            img = sitk.GetImageFromArray(arr[None])
            img.SetSpacing((float(spacing), float(spacing), 1.0))
            try:
                raw = self._get(log).execute(img, msk)
            except (ValueError, RuntimeError, IndexError, ZeroDivisionError) as exc:
                raise RadiomicsError(f"pyradiomics failed on this ROI: {exc}") from exc
            for k, v in raw.items():
                if k.startswith("diagnostics_"):
                    continue
                try:
                    f = float(np.asarray(v).reshape(-1)[0])
                except (TypeError, ValueError):
                    continue
                name = prefix + k[len("original"):] if prefix else k
                feats[name] = f if np.isfinite(f) else 0.0
        self.cache.put(key, feats)
        return feats
