"""Training stage 1: every manifest row -> work image, lesion ROI and radiomics (cached, parallel).

Per row: read the frame (each file is decoded once), preprocess (sector crop, text blanking, resize),
take the ROI from the SEG (and, on test/external rows, also run the automatic ROI the worker uses when
no SEG arrives: its Dice against the SEG, its mask and its radiomics, so the models can be scored with
it too), then pyradiomics on the ROI. Results are cached under ``<cache>/samples`` (npz, keyed by file hash, frame,
SEG hash and the preprocessing/ROI settings) and ``<cache>/radiomics`` (JSON, keyed by image + mask +
settings hashes), so a second run reads instead of computing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eusdx.durable import atomic_write_with, sha256_file
from eusdx.errors import DataError

from .dicom_io import read_instance, read_seg_mask
from .baselines import header_fields_from_dataset, long_axis_mm, outside_sector_features
from .preprocess import NoSectorError, PreprocessConfig, Preprocessed, detect_sector, mask_to_work, preprocess, to_gray
from .radiomics_features import FeatureCache, RadiomicsError, RadiomicsExtractor
from .roi import NoLesionError, RoiConfig, auto_roi, dice, roi_from_mask

__all__ = ["Sample", "prepare", "frame_sample"]


@dataclass
class Sample:
    """One analysable image: work image, ROI, where the ROI came from, radiomics."""

    row: int
    image: np.ndarray
    mask: np.ndarray
    mm_per_pixel: float | None
    roi_source: str
    roi_confidence: float
    auto_dice: float
    radiomics: dict[str, float]
    synthetic: bool = False
    header: dict[str, Any] | None = None  # models.baselines.header_fields_from_dataset of the instance
    outside: np.ndarray | None = None  # models.baselines.outside_sector_features of the frame
    roi_long_axis_mm: float = float("nan")
    # Test/external rows only: the automatic ROI (None when it found no lesion), its radiomics (None when
    # pyradiomics refused it) and why either is missing.
    auto_mask: np.ndarray | None = None
    auto_radiomics: dict[str, float] | None = None
    auto_error: str | None = None


def frame_sample(pixels: np.ndarray, seg_mask: np.ndarray | None, mm_per_pixel: float | None,
                 pre_cfg: PreprocessConfig, roi_cfg: RoiConfig, *, measure_auto: bool = False,
                 ) -> tuple[Preprocessed, Any, float, Any]:
    """Preprocess one frame and find its ROI (SEG when given, else automatic).

    Returns
    -------
    (preprocessed, roi, auto_dice, auto) where, with ``measure_auto`` and a SEG, ``auto`` is the
    automatic ROI (``models.roi.Roi``; None when it finds no lesion, then ``auto_dice`` is 0) and
    ``auto_dice`` its Dice against the SEG; otherwise ``auto`` is None and ``auto_dice`` NaN.
    """
    pre = preprocess(pixels, pre_cfg, mm_per_pixel=mm_per_pixel)
    auto_d = float("nan")
    auto = None
    if seg_mask is not None:
        roi = roi_from_mask(mask_to_work(seg_mask, pre))
        if measure_auto:
            try:
                auto = auto_roi(pre, roi_cfg)
                auto_d = dice(auto.mask, roi.mask)
            except NoLesionError:
                auto_d = 0.0
    else:
        roi = auto_roi(pre, roi_cfg)
    return pre, roi, auto_d, auto


_SAMPLE_VERSION = "sample-3 (automatic ROI mask kept on test/external rows)"


def _header(path: str) -> dict[str, Any]:
    """Header fields of an image file (models.baselines); empty for non-DICOM images."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError):
        return {}
    return header_fields_from_dataset(ds)


def _atomic_savez(path: Path, **arrays: Any) -> None:
    """A cache file, written atomically (no fsync: it is recomputed when lost)."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: numpy would add ".npz" to a bare path
            np.savez_compressed(fh, **arrays)

    atomic_write_with(path, write, sync=False)


def _prepare_file(
    image_abs: str,
    rows: list[tuple[int, int, str | None, bool]],
    file_hash: str,
    seg_hashes: dict[str, str],
    pre_cfg: PreprocessConfig,
    roi_cfg: RoiConfig,
    settings: dict[str, Any],
    cache_dir: str | None,
) -> list[tuple[int, Sample | None, str | None]]:
    """Work on all rows (frames) of one image file; runs in a worker process."""
    import logging

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    extractor = RadiomicsExtractor(settings, FeatureCache(Path(cache_dir) / "radiomics" if cache_dir else None))
    cfg_hash = hashlib.sha256(json.dumps([pre_cfg.to_dict(), roi_cfg.to_dict(), _SAMPLE_VERSION],
                                         sort_keys=True).encode()).hexdigest()
    inst = None
    header: dict[str, Any] | None = None
    out: list[tuple[int, Sample | None, str | None]] = []
    for row, frame, seg, measure in rows:
        key = hashlib.sha256(f"{file_hash}|{frame}|{seg_hashes.get(seg or '', '')}|{cfg_hash}".encode()).hexdigest()
        path = Path(cache_dir) / "samples" / key[:2] / f"{key}.npz" if cache_dir else None
        try:
            if header is None:
                header = _header(image_abs)
            if path is not None and path.is_file():
                z = np.load(path)
                image, mask, outside = z["image"], z["mask"], z["outside"]
                auto_mask = z["auto_mask"] if "auto_mask" in z.files else None
                meta = json.loads(str(z["meta"]))
            else:
                if inst is None:
                    inst = read_instance(image_abs)
                if not 0 <= frame < len(inst.frames):
                    raise DataError(f"{Path(image_abs).name} has {len(inst.frames)} frame(s); row asks for {frame}")
                px = inst.frames[frame]
                seg_mask = None
                if seg:
                    seg_mask = read_seg_mask(seg, px.shape[:2], source_sop_uid=inst.sop_uid, frame=frame,
                                             multi_frame_source=inst.multi_frame)
                pre, roi, auto_d, auto = frame_sample(px, seg_mask, inst.mm_per_pixel, pre_cfg, roi_cfg,
                                                      measure_auto=measure)
                image, mask = pre.image, roi.mask
                auto_mask = None if auto is None else auto.mask
                outside = outside_sector_features(px, detect_sector(to_gray(px), pre_cfg))
                meta = {"mpp": pre.mm_per_pixel, "source": roi.source, "conf": roi.confidence,
                        "auto_dice": auto_d, "synthetic": inst.synthetic, "measured": measure}
                if path is not None:
                    extra = {} if auto_mask is None else {"auto_mask": auto_mask}
                    _atomic_savez(path, image=image, mask=mask, outside=outside, meta=np.array(json.dumps(meta)),
                                  **extra)
            spacing = meta["mpp"] or 1.0
            feats = extractor.extract(image, mask, spacing=spacing)
            auto_feats: dict[str, float] | None = None
            auto_error: str | None = None
            if meta["source"] != "SEG":  # no SEG: the row's own ROI already is the automatic one
                if meta.get("measured"):
                    auto_mask, auto_feats = mask, feats
            else:
                auto_feats, auto_error = _auto_features(extractor, image, auto_mask, spacing,
                                                        bool(meta.get("measured")))
            out.append((row, Sample(row, image, mask, meta["mpp"], meta["source"], float(meta["conf"]),
                                    float(meta["auto_dice"]), feats, bool(meta.get("synthetic", False)),
                                    header, np.asarray(outside, dtype=np.float64),
                                    long_axis_mm(mask, meta["mpp"]), auto_mask, auto_feats, auto_error), None))
        except (NoSectorError, NoLesionError, RadiomicsError, DataError) as exc:
            out.append((row, None, f"{type(exc).__name__}: {exc}"))
    return out


def _auto_features(extractor: RadiomicsExtractor, image: np.ndarray, auto_mask: np.ndarray | None,
                   spacing: float, measured: bool) -> tuple[dict[str, float] | None, str | None]:
    """Radiomics on the automatic ROI of a test/external row, or why there are none."""
    if not measured:
        return None, None
    if auto_mask is None:
        return None, "NoLesionError: the automatic ROI found no lesion"
    try:
        return extractor.extract(image, auto_mask, spacing=spacing), None
    except RadiomicsError as exc:
        return None, f"RadiomicsError: {exc}"


def prepare(
    df: pd.DataFrame,
    *,
    pre_cfg: PreprocessConfig,
    roi_cfg: RoiConfig,
    radiomics_settings: dict[str, Any],
    cache_dir: str | Path | None,
    jobs: int = 1,
    progress: bool = True,
    desc: str = "images",
) -> tuple[list[Sample | None], dict[str, str], dict[str, str]]:
    """Prepare every row of ``df`` (positional order kept).

    Returns
    -------
    (samples, failures, file_hashes)
        ``samples[i]`` is None for a row that failed; ``failures`` maps row_id -> reason.
    """
    import sys

    from joblib import Parallel, delayed
    from tqdm import tqdm

    file_hashes = {p: sha256_file(p) for p in df["image_abs"].unique()}
    segs = [s for s in df["seg_abs"].unique() if s]
    seg_hashes = {s: sha256_file(s) for s in segs if Path(s).is_file()}
    groups: dict[str, list[tuple[int, int, str | None, bool]]] = {}
    measure = (df["split"] != "train").to_numpy() if "split" in df else np.ones(len(df), dtype=bool)
    for i, (img, frame, seg) in enumerate(zip(df["image_abs"], df["frame"], df["seg_abs"])):
        groups.setdefault(img, []).append((i, int(frame), seg or None, bool(measure[i])))
    tasks = [
        delayed(_prepare_file)(img, rows, file_hashes[img], seg_hashes, pre_cfg, roi_cfg, radiomics_settings,
                               None if cache_dir is None else str(cache_dir))
        for img, rows in groups.items()
    ]
    samples: list[Sample | None] = [None] * len(df)
    failures: dict[str, str] = {}
    bar = tqdm(total=len(df), desc=desc, file=sys.stderr, disable=not progress, leave=False)
    runner = Parallel(n_jobs=jobs, return_as="generator_unordered") if jobs > 1 else None
    results = runner(tasks) if runner is not None else (t[0](*t[1], **t[2]) for t in tasks)
    for chunk in results:
        for row, sample, err in chunk:
            samples[row] = sample
            if err is not None:
                failures[str(df["row_id"].iloc[row])] = err
            bar.update(1)
    bar.close()
    return samples, failures, file_hashes
