"""pyradiomics 2D features of the lesion ROI, with an on-disk cache.

Settings come from ``models/radiomics.yaml`` (or a file given by the caller). Features are computed on
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
        self.log_sigmas = [float(s) for s in (self.params.get("log2D") or {}).get("sigma", [])]

    def _pyradiomics_params(self, log: bool) -> dict[str, Any]:
        p = {k: v for k, v in self.params.items() if k != "log2D"}
        if log:  # a filtered response: texture and intensity only (shape is the ROI's, once is enough)
            p["imageType"] = {"Original": {}}
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
            response = ndi.gaussian_laplace(np.asarray(image, dtype=np.float32), sigma=s / float(spacing))
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
