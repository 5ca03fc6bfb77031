"""Shortcut baselines: what a model learns from the header, from pixels outside the sector, or from size alone.

A reviewer's first question about an imaging model is whether it reads the lesion or the acquisition.
Three lesion-level logistic regressions answer it and sit next to every evaluation's Table 2:

- ``baseline/header-only``: DICOM header fields of the lesion's images (pixel size from the ultrasound
  region, transducer frequency, manufacturer, model, station, matrix size, frames, photometric
  interpretation, transfer syntax, SOP class, patient age and sex, study date and time, image count);
  numbers averaged over the lesion's images, categories as the fraction of its images with each value.
- ``baseline/outside-sector``: the grey levels of everything outside the B-mode sector (burned-in text,
  depth scale, marks) block-averaged on a 24 x 32 grid, averaged over the lesion's images.
- ``baseline/size-only``: the lesion's long axis in mm, measured on its ROI (the largest over its images).

Each model: impute (median) -> standardise -> L2 logistic regression; train rows are out-of-fold on folds
grouped by patient (``StratifiedGroupKFold``). :func:`cv_auc` is the same model scored by the pooled
out-of-fold AUC (used by the phantom's shortcut tests).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "BASELINES",
    "OUTSIDE_GRID",
    "header_fields_from_dataset",
    "lesion_header",
    "outside_sector_features",
    "long_axis_mm",
    "baseline_model",
    "header_features",
    "grouped_folds",
    "cv_auc",
    "fit_baseline",
]

BASELINES = ("header-only", "outside-sector", "size-only")
OUTSIDE_GRID = (24, 32)
HEADER_NUMERIC = ("mm_per_pixel", "transducer_frequency_khz", "rows", "columns", "frames", "patient_age_years",
                  "study_day", "study_time_s")
HEADER_CATEGORICAL = ("manufacturer", "model", "station", "photometric", "transfer_syntax", "sop_class",
                      "patient_sex")


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _day(da: str) -> float:
    try:
        return float(_dt.date(int(da[:4]), int(da[4:6]), int(da[6:8])).toordinal())
    except (TypeError, ValueError, IndexError):
        return float("nan")


def _seconds(tm: str) -> float:
    try:
        return float(int(tm[:2]) * 3600 + int(tm[2:4]) * 60 + int(float(tm[4:6] or 0)))
    except (TypeError, ValueError, IndexError):
        return float("nan")


def header_fields_from_dataset(ds: Any) -> dict[str, Any]:
    """The header fields of one image instance (pydicom Dataset; pixel data not needed).

    Returns
    -------
    dict
        Keys :data:`HEADER_NUMERIC` (floats, NaN when absent) and :data:`HEADER_CATEGORICAL` (strings).
    """
    from models.calibration import CalibrationError
    from models.dicom_io import mm_per_pixel_from_dataset

    try:
        mpp = _float(mm_per_pixel_from_dataset(ds))
    except CalibrationError:  # contradictory regions: the pixel size is a missing value for this baseline
        mpp = float("nan")
    region = (getattr(ds, "SequenceOfUltrasoundRegions", None) or [None])[0]
    freq = getattr(region, "TransducerFrequency", None) if region is not None else None
    age = str(getattr(ds, "PatientAge", "") or "")
    return {
        "mm_per_pixel": mpp,
        "transducer_frequency_khz": _float(freq),
        "rows": _float(getattr(ds, "Rows", None)),
        "columns": _float(getattr(ds, "Columns", None)),
        "frames": _float(getattr(ds, "NumberOfFrames", 1) or 1),
        "patient_age_years": _float(age[:3]) if age.endswith("Y") else float("nan"),
        "study_day": _day(str(getattr(ds, "StudyDate", "") or "")),
        "study_time_s": _seconds(str(getattr(ds, "StudyTime", "") or "")),
        "manufacturer": str(getattr(ds, "Manufacturer", "") or ""),
        "model": str(getattr(ds, "ManufacturerModelName", "") or ""),
        "station": str(getattr(ds, "StationName", "") or ""),
        "photometric": str(getattr(ds, "PhotometricInterpretation", "") or ""),
        "transfer_syntax": str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or ""),
        "sop_class": str(getattr(ds, "SOPClassUID", "") or ""),
        "patient_sex": str(getattr(ds, "PatientSex", "") or ""),
    }


def lesion_header(images: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """One lesion's header vector from its images' fields (see the module docstring).

    Parameters
    ----------
    images : sequence of dict
        :func:`header_fields_from_dataset` of each image (one entry per instance, not per frame).

    Returns
    -------
    dict of str to float
        Numeric means, ``n_images``, and ``<field>=<value>`` fractions (for ``DictVectorizer``).
    """
    out: dict[str, float] = {"n_images": float(len(images))}
    for k in HEADER_NUMERIC:
        vals = np.array([_float(im.get(k)) for im in images], dtype=float)
        out[k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    for k in HEADER_CATEGORICAL:
        for im in images:
            key = f"{k}={im.get(k, '')}"
            out[key] = out.get(key, 0.0) + 1.0 / max(1, len(images))
    return out


def outside_sector_features(pixels: np.ndarray, sector: np.ndarray) -> np.ndarray:
    """Grey levels outside the sector, block-averaged on :data:`OUTSIDE_GRID`, plus their mean and bright share.

    Parameters
    ----------
    pixels : numpy.ndarray
        (H, W) or (H, W, 3) uint8 frame as stored.
    sector : numpy.ndarray
        (H, W) bool B-mode sector mask (``models.preprocess.detect_sector``).

    Returns
    -------
    numpy.ndarray
        (24 * 32 + 2,) float64.
    """
    from skimage.transform import resize

    from models.preprocess import to_gray

    gray = to_gray(pixels).astype(np.float64) if pixels.ndim == 3 else pixels.astype(np.float64)
    out = np.where(sector, 0.0, gray)
    grid = resize(out, OUTSIDE_GRID, order=1, anti_aliasing=True, preserve_range=True)
    outside = ~sector
    n = max(1, int(outside.sum()))
    extra = [float(out[outside].sum() / n), float((out[outside] > 127).sum() / n)]
    return np.concatenate([grid.ravel(), extra])


def long_axis_mm(mask: np.ndarray, mm_per_pixel: float | None) -> float:
    """Longest extent of a binary mask along its principal axis, in mm (pixels when uncalibrated)."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 2:
        return float("nan")
    pts = np.column_stack([xs, ys]).astype(float)
    pts -= pts.mean(0)
    _, _, vt = np.linalg.svd(pts, full_matrices=False)
    return float(np.ptp(pts @ vt[0]) + 1.0) * float(mm_per_pixel or 1.0)


def baseline_model(c: float = 0.1, seed: int = 0) -> Any:
    """Impute -> drop constant columns -> standardise -> L2 logistic regression (balanced classes)."""
    from sklearn.feature_selection import VarianceThreshold
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("variance", VarianceThreshold(0.0)),
        ("scale", StandardScaler()),
        ("lr", LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)),
    ])


def header_features(lesions: Sequence[Mapping[str, float]]) -> np.ndarray:
    """Stack lesion header dicts (:func:`lesion_header`) into a matrix (vocabulary from these rows)."""
    from sklearn.feature_extraction import DictVectorizer

    return np.asarray(DictVectorizer(sparse=False).fit_transform(list(lesions)), dtype=np.float64)


def grouped_folds(y: np.ndarray, groups: np.ndarray, n_splits: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds that keep every group (patient) on one side."""
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.asarray(y)
    n = max(2, min(n_splits, len(np.unique(groups)) // 2, int(np.bincount(y.astype(int)).min())))
    return list(StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups))


def _oof(X: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_predict

    model = baseline_model(seed=seed)
    return np.asarray(cross_val_predict(clone(model), X, y, cv=grouped_folds(y, groups, seed=seed),
                                        method="predict_proba")[:, 1])


def cv_auc(X: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0) -> float:
    """Pooled out-of-fold AUC of :func:`baseline_model` on patient-grouped folds."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, _oof(np.asarray(X, dtype=np.float64), np.asarray(y), np.asarray(groups), seed)))


def fit_baseline(X_train: np.ndarray, y_train: np.ndarray, groups_train: np.ndarray, seed: int = 0) -> tuple[Any, np.ndarray]:
    """Fit one baseline on the training lesions.

    Returns
    -------
    (model fitted on all training lesions, its out-of-fold training probabilities)
    """
    X = np.asarray(X_train, dtype=np.float64)
    y = np.asarray(y_train)
    oof = _oof(X, y, np.asarray(groups_train), seed)
    return baseline_model(seed=seed).fit(X, y), oof
