"""``eusdx train``: manifest -> features -> classifiers -> evaluated, versioned bundle.

Stages (each shows a tqdm bar on stderr and is timed in ``metrics.json``):

1. Manifest(s), 8:2 patient split stratified by label (seeded), external set aside.
2. Per image: sector crop, ROI (SEG, plus the automatic ROI's Dice against it), radiomics (cached),
   header fields, pixels outside the sector, ROI long axis (for the shortcut baselines).
3. Transformer features, cross-fitted (a backbone per patient fold, none sees the rows it embeds) or
   frozen (``deep_mode``; see ``models/_deep_stage.py``); paper 002: x5 augmentation; on a CPU one image
   per lesion; early stopping on a patient split. Frozen random-init ResNet34/50 features (CPU) or
   end-to-end ResNet34/50 (GPU, ``--end-to-end``).
4. SVM / XGBoost / RF on radiomics, deep and combined features; paper 004's LASSO logistic regression on
   radiomics and on the ResNet features; nested, patient-grouped CV on train only; lesion-level
   aggregation; our late-fusion stacker and paper 004's integrated model (radiomics LR + ResNet-50);
   the header-only, outside-sector and size-only baselines.
5. Every deployable model scored again on the test/external images with the automatic ROI (what the
   worker does without a SEG; ``models/_auto_roi_eval.py``). Youden thresholds on train OOF lesion
   predictions, metrics, evaluation files, bundle.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from eusdx.errors import DataError, UsageError

from . import bundle as _bundle
from ._deep_stage import _cached_outputs, backbone_init, deep_features, frozen_features
from ._fusion import INTEGRATED_KEY, fit_baselines, fit_integrated, training_budget
from .classifiers import CLASSIFIERS, aggregate, fit_stacker, fit_with_cv, youden_threshold
from .dataset import fingerprint, load_manifest, make_split, split_by_patient
from .deep_features import (DEFAULT_CPU_BACKBONE, DEFAULT_GPU_BACKBONE, Net, NetConfig, resolve_device,
                            seed_everything, train_net)
from .preprocess import PreprocessConfig, lesion_window
from .radiomics_features import DEFAULT_SETTINGS, array_hash
from .roi import RoiConfig
from ._evaluation import (evaluation_files, lesion_table, metrics_table, write_auto_roi_files,
                          write_lesion_files)

__all__ = ["TrainConfig", "TrainResult", "train"]

log = logging.getLogger(__name__)
MODALITIES = ("radiomics", "deep", "combined")


@dataclass
class TrainConfig:
    """Everything ``eusdx train`` can change. ``None`` means "pick for the device" (see ``resolved``)."""

    seed: int = 0
    backbone: str | None = None
    backbone_weights: str | None = None
    device: str = "auto"
    image_size: int | None = None
    epochs: int | None = None
    batch_size: int = 32
    augment_factor: int = 5
    end_to_end: bool | None = None
    e2e_models: tuple[str, ...] = ("resnet34", "resnet50")
    e2e_epochs: int | None = None
    selector: str = "lasso"
    deep_mode: str = "cross-fit"
    backbone_folds: int = 3
    resnet_frozen: bool | None = None
    baselines: bool = True
    cv_splits: int = 5
    test_size: float = 0.2
    val_fraction: float = 0.15
    aggregation: str = "mean"
    primary: str = "svm/combined"
    jobs: int = 2
    max_frames_per_series: int | None = 2
    finetune_per_lesion: int | None = None
    window_mm: float = 60.0
    grid_search: bool = True
    progress: bool = True
    radiomics_settings: str | None = None
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    roi: RoiConfig = field(default_factory=RoiConfig)

    @classmethod
    def fast(cls, **overrides: Any) -> "TrainConfig":
        """Smallest settings that still run every stage (tests, smoke bundles): never for real use."""
        base = dict(image_size=64, epochs=1, augment_factor=1, end_to_end=False, cv_splits=3,
                    grid_search=False, max_frames_per_series=2, batch_size=16)
        return cls(**{**base, **overrides})

    def resolved(self, device: str) -> "TrainConfig":
        """Fill device-dependent defaults: GPU -> ViT-S/16 at 224, 8 epochs; CPU -> DeiT-tiny at 112, 1."""
        gpu = device.startswith("cuda")
        c = TrainConfig(**{**asdict(self), "preprocess": self.preprocess, "roi": self.roi})
        c.backbone = self.backbone or (DEFAULT_GPU_BACKBONE if gpu else DEFAULT_CPU_BACKBONE)
        c.image_size = self.image_size or (224 if gpu else 112)
        c.epochs = self.epochs or (8 if gpu else 3)
        c.e2e_epochs = self.e2e_epochs or (8 if gpu else 2)
        # Paper 002 trained on one typical image per case, enlarged x5 by augmentation; on a CPU the
        # networks do the same (the first image of each lesion: the phantom writes its canonical view
        # first), on a GPU they see every image. 0 = all images.
        c.finetune_per_lesion = (0 if gpu else 1) if self.finetune_per_lesion is None else self.finetune_per_lesion
        # End-to-end ResNets cost minutes per epoch on two CPU cores: on by default on a GPU only; without
        # them the ResNet rows are frozen random-init ResNets with a LASSO logistic regression.
        c.end_to_end = gpu if self.end_to_end is None else self.end_to_end
        c.resnet_frozen = (not c.end_to_end) if self.resnet_frozen is None else self.resnet_frozen
        if c.deep_mode not in ("cross-fit", "frozen"):
            raise UsageError(f"deep_mode must be cross-fit or frozen, got {c.deep_mode!r}")
        if self.primary.split("/")[-1] == "end-to-end" and not c.end_to_end:
            raise UsageError(f"primary model {self.primary} needs --end-to-end")
        return c


@dataclass
class TrainResult:
    """Where the bundle went and what it measured."""

    bundle_dir: Path
    metrics: dict[str, Any]


def _subsample_frames(df: pd.DataFrame, n: int | None) -> pd.DataFrame:
    """Keep at most ``n`` evenly spaced frames of each multi-frame image (cine frames are near copies)."""
    if not n:
        return df
    keep = []
    for _, g in df.groupby("image_abs", sort=False):
        if len(g) <= n:
            keep.extend(g.index)
        else:
            idx = np.linspace(0, len(g) - 1, n).round().astype(int)
            keep.extend(g.sort_values("frame").index[idx])
    return df.loc[sorted(keep)].reset_index(drop=True)


def _net_cached(cfg: NetConfig, cache: Path, fit_imgs: list[np.ndarray], y_fit: np.ndarray,
                val_imgs: list[np.ndarray], y_val: np.ndarray, g_val: np.ndarray, device: str,
                weights: str | None, progress: bool, desc: str) -> tuple[Net, bool, str]:
    h = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    for im in fit_imgs + val_imgs:
        h.update(array_hash(im).encode())
    h.update(np.asarray(y_fit).tobytes() + np.asarray(y_val).tobytes())
    if weights:
        h.update(_bundle.sha256_file(weights).encode())
    key = h.hexdigest()
    path = cache / "nets" / f"{key}.safetensors"
    if path.is_file():
        net = Net.load(cfg, path)
        hist = path.with_suffix(".json")
        if hist.is_file():
            net.history = json.loads(hist.read_text())
        return net, True, key
    net = train_net(cfg, fit_imgs, y_fit, val_imgs, y_val, g_val, device=device, weights=weights,
                    progress=progress, desc=desc)
    path.parent.mkdir(parents=True, exist_ok=True)
    net.save(path)
    path.with_suffix(".json").write_text(json.dumps(net.history))
    return net, False, key


def _fit_cached(cache: Path, clf: str, X: np.ndarray, y: np.ndarray, groups: np.ndarray,
                cfg: TrainConfig, split_at: int | None = None) -> tuple[Any, np.ndarray, dict[str, Any]]:
    """``fit_with_cv`` with its result kept under ``cache/classifiers`` (key: data, labels, groups,
    settings, scikit-learn/xgboost versions), so a resumed run does not refit unchanged models."""
    from .safe_store import dump_models, load_models

    h = hashlib.sha256(np.ascontiguousarray(X).tobytes())
    h.update(np.asarray(y).tobytes())
    h.update("|".join(map(str, groups)).encode())
    libs = _bundle.library_versions()
    key = [clf, cfg.selector, cfg.cv_splits, cfg.seed, cfg.grid_search, libs["scikit-learn"], libs["xgboost"],
           "nested-grouped-2"]
    if split_at is not None:
        key.append(f"per-modality-selection@{split_at}")
    h.update(json.dumps(key).encode())
    path = cache / "classifiers" / f"{h.hexdigest()}.skops"
    if path.is_file():
        # The same safe loader as bundles: a planted cache entry cannot run code, only be refused.
        try:
            entry = load_models(path)
            return entry["model"], np.asarray(entry["oof"]), dict(entry["params"])
        except (DataError, OSError, KeyError, TypeError) as exc:  # damaged: recompute, never trust
            log.warning("classifier cache entry %s unreadable (%s); refitting", path.name, exc)
    result = fit_with_cv(clf, X, y, groups, selector=cfg.selector, n_splits=cfg.cv_splits, seed=cfg.seed,
                         n_jobs=cfg.jobs, search=cfg.grid_search, split_at=split_at)
    path.parent.mkdir(parents=True, exist_ok=True)
    model, oof, params = result
    dump_models({"model": model, "oof": np.asarray(oof), "params": dict(params)}, path)
    return result


def train(manifest: str | Path, out_root: str | Path, *, external: str | Path | None = None,
          cache: str | Path | None = None, config: TrainConfig | None = None,
          signing_key: str | Path | None = None) -> TrainResult:
    """Train every model, evaluate it, and write a bundle under ``out_root``.

    ``signing_key`` (an Ed25519 private key, PEM) signs the bundle's manifest; workers accept only
    bundles signed by a key in their ``bundle_trusted_keys``.

    Raises
    ------
    DataError
        Bad manifest, too few lesions, or no analysable image.
    UsageError
        Bad option values (device, backbone name).
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    device = resolve_device((config or TrainConfig()).device)
    cfg = (config or TrainConfig()).resolved(device)
    assert cfg.backbone is not None and cfg.image_size is not None  # filled in by resolved()
    assert cfg.epochs is not None and cfg.e2e_epochs is not None
    if cfg.primary.split("/")[0] not in (*CLASSIFIERS, "lr-stacker", "lasso-lr", "paper004-integrated",
                                         *cfg.e2e_models):
        raise UsageError(f"unknown primary model {cfg.primary!r}")
    seed_everything(cfg.seed, cfg.jobs)
    out = Path(out_root)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache) if cache is not None else out / "cache"
    settings_path = Path(cfg.radiomics_settings) if cfg.radiomics_settings else DEFAULT_SETTINGS
    settings_text = settings_path.read_text(encoding="utf-8")  # the bundle gets exactly what was used
    settings = yaml.safe_load(settings_text)

    # 1. data -------------------------------------------------------------------------------------
    t = time.perf_counter()
    df = _subsample_frames(load_manifest(manifest), cfg.max_frames_per_series)
    ext = _subsample_frames(load_manifest(external, centre="external"), cfg.max_frames_per_series) if external else None
    split = make_split(df, external=ext, test_size=cfg.test_size, seed=cfg.seed)
    parts = [split.train.assign(split="train"), split.test.assign(split="test")]
    if len(split.external):
        parts.append(split.external.assign(split="external"))
    data = pd.concat(parts, ignore_index=True)
    # Lesion ids of a separate external manifest may repeat internal ones: key lesions by split too.
    data["lesion_key"] = data["split"] + ":" + data["lesion_id"]
    data["patient_key"] = data["split"] + ":" + data["patient_id"]
    timings["load"] = time.perf_counter() - t

    # 2. images, ROI, radiomics ---------------------------------------------------------------------
    from ._prepare import prepare

    t = time.perf_counter()
    samples_or_none, failures, file_hashes = prepare(data, pre_cfg=cfg.preprocess, roi_cfg=cfg.roi, radiomics_settings=settings,
                                             cache_dir=cache_dir, jobs=cfg.jobs, progress=cfg.progress)
    timings["images_roi_radiomics"] = time.perf_counter() - t
    keep = [i for i, s in enumerate(samples_or_none) if s is not None]
    if failures:
        log.warning("%d of %d images skipped (no sector / lesion / radiomics)", len(failures), len(data))
    listed = data
    data = data.iloc[keep].reset_index(drop=True)
    samples = [s for s in samples_or_none if s is not None]
    lesions = lesion_table(listed, data)
    thumbs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for i, (sp, les) in enumerate(zip(data["split"], data["lesion_id"])):
        if sp in ("test", "external") and f"{sp}_{les}" not in thumbs:
            thumbs[f"{sp}_{les}"] = (samples[i].image, samples[i].mask)
    tr = (data["split"] == "train").to_numpy()
    if tr.sum() == 0 or len(np.unique(data.loc[tr, "y"])) < 2:
        raise DataError("no analysable training images of both classes")
    rad_names = list(samples[0].radiomics)
    from ._stability import stability_filter

    rad_names, stability = stability_filter(samples, np.flatnonzero(tr), rad_names, settings, cache_dir, cfg.seed)
    Xr = np.array([[s.radiomics.get(n, np.nan) for n in rad_names] for s in samples], dtype=np.float64)
    mpps = [float(s.mm_per_pixel) for s in samples if s.mm_per_pixel]
    dice = np.array([s.auto_dice for s in samples], dtype=np.float64)
    dice = dice[np.isfinite(dice)]

    # 3. deep backbone, end-to-end nets -----------------------------------------------------------
    t = time.perf_counter()
    windows = [lesion_window(s.image, s.mask, cfg.image_size, mm_per_pixel=s.mm_per_pixel, window_mm=cfg.window_mm)
               for s in samples]
    train_df = data[tr].reset_index(drop=True)
    fit_idx, val_idx = split_by_patient(train_df, test_size=cfg.val_fraction, seed=cfg.seed + 1)
    if cfg.finetune_per_lesion:
        first = train_df.iloc[fit_idx].groupby("lesion_key", sort=False).head(cfg.finetune_per_lesion).index
        fit_idx = np.asarray(sorted(first))
    tr_pos = np.flatnonzero(tr)
    fit_imgs = [windows[tr_pos[i]] for i in fit_idx]
    val_imgs = [windows[tr_pos[i]] for i in val_idx]
    y_all = data["y"].to_numpy()
    y_fit, y_val = y_all[tr_pos[fit_idx]], y_all[tr_pos[val_idx]]
    g_val = train_df["lesion_key"].to_numpy()[val_idx]
    net_cfg = NetConfig(name=cfg.backbone, image_size=cfg.image_size, epochs=cfg.epochs, batch_size=cfg.batch_size,
                        augment_factor=cfg.augment_factor, seed=cfg.seed, threads=cfg.jobs)

    def _train_cached(ncfg: NetConfig, fi: list[np.ndarray], yf: np.ndarray, vi: list[np.ndarray], yv: np.ndarray,
                      gv: np.ndarray, desc: str, weights: str | None = cfg.backbone_weights) -> tuple[Net, bool, str]:
        return _net_cached(ncfg, cache_dir, fi, yf, vi, yv, gv, device, weights, cfg.progress, desc)

    deep = deep_features(mode=cfg.deep_mode, data=data, windows=windows, train_mask=tr, net_cfg=net_cfg,
                         folds=cfg.backbone_folds, val_fraction=cfg.val_fraction,
                         per_lesion=cfg.finetune_per_lesion, seed=cfg.seed, device=device, cache=cache_dir,
                         weights=cfg.backbone_weights, train_net_cached=_train_cached)
    net, net_cached, net_key, Xd = deep.net, deep.from_cache, deep.key, deep.features
    init = backbone_init(cfg.backbone_weights)
    timings["deep_backbone"] = time.perf_counter() - t
    e2e: dict[str, Net] = {}
    e2e_prob: dict[str, np.ndarray] = {}
    if cfg.end_to_end:
        t = time.perf_counter()
        for name in cfg.e2e_models:
            ecfg = NetConfig(name=name, image_size=cfg.image_size, epochs=cfg.e2e_epochs, batch_size=cfg.batch_size,
                             augment_factor=cfg.augment_factor, seed=cfg.seed, threads=cfg.jobs)
            e2e[name], _, key = _train_cached(ecfg, fit_imgs, y_fit, val_imgs, y_val, g_val, f"end-to-end {name}",
                                              weights=None)
            e2e_prob[name] = _cached_outputs(cache_dir, key, "proba", windows,
                                             functools.partial(e2e[name].predict_proba, device=device))
        timings["end_to_end"] = time.perf_counter() - t
    resnet_feats: dict[str, np.ndarray] = {}
    if cfg.resnet_frozen:
        t = time.perf_counter()
        for name in cfg.e2e_models:
            rcfg = NetConfig(name=name, image_size=cfg.image_size, epochs=0, batch_size=cfg.batch_size,
                             augment_factor=0, seed=cfg.seed, threads=cfg.jobs)
            resnet_feats[name] = frozen_features(rcfg, windows, device, cache_dir)[1]
        timings["resnet_frozen"] = time.perf_counter() - t

    # 4. classifiers ------------------------------------------------------------------------------
    t = time.perf_counter()
    from tqdm import tqdm
    import sys

    mats = {"radiomics": Xr, "deep": Xd, "combined": np.hstack([Xr, Xd])}
    deep_names = [f"deep_{cfg.backbone}_{i}" for i in range(Xd.shape[1])]
    names = {"radiomics": rad_names, "deep": deep_names, "combined": rad_names + deep_names}
    groups = data["lesion_key"].to_numpy()  # aggregation unit
    patients = data["patient_key"].to_numpy()  # every CV split
    models: dict[str, Any] = {}
    lesion_probs: dict[str, dict[str, pd.Series]] = {}
    best_params: dict[str, Any] = {}
    bar = tqdm(total=len(MODALITIES) * len(CLASSIFIERS), desc="classifiers", file=sys.stderr,
               disable=not cfg.progress, leave=False)
    jobs_list = [(clf, m) for m in MODALITIES for clf in CLASSIFIERS] + [("lasso-lr", "radiomics")]
    for name, F in resnet_feats.items():
        mats[f"{name}-random-frozen"] = F.astype(np.float64)
        names[f"{name}-random-frozen"] = [f"{name}_frozen_{i}" for i in range(F.shape[1])]
        jobs_list.append(("lasso-lr", f"{name}-random-frozen"))
    bar.total = len(jobs_list)
    for clf, modality in jobs_list:
        X = mats[modality]
        key = f"{clf}/{modality}"
        split_at = Xr.shape[1] if modality == "combined" else None
        model, oof, params = _fit_cached(cache_dir, clf, X[tr], y_all[tr], patients[tr], cfg, split_at)
        if modality in MODALITIES:  # the bundle keeps what the worker can compute (no frozen ResNets there)
            models[key] = model
        best_params[key] = {k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in params.items()}
        probs = {"train": aggregate(oof, groups[tr], cfg.aggregation)}
        for sp in ("test", "external"):
            m = (data["split"] == sp).to_numpy()
            if m.any():
                probs[sp] = aggregate(model.predict_proba(X[m])[:, 1], groups[m], cfg.aggregation)
        lesion_probs[key] = probs
        bar.update(1)
    bar.close()
    lesion_y = data.groupby("lesion_key")["y"].first()
    singles = [f"{c}/{m}" for m in ("radiomics", "deep") for c in CLASSIFIERS]
    P_train = np.column_stack([lesion_probs[k]["train"].to_numpy() for k in singles])
    train_lesions = lesion_probs[singles[0]]["train"].index
    lesion_patient = data.groupby("lesion_key")["patient_key"].first()
    stacker, stack_oof = fit_stacker(P_train, lesion_y.loc[train_lesions].to_numpy(), seed=cfg.seed,
                                     groups=lesion_patient.loc[train_lesions].to_numpy())
    models["lr-stacker/late-fusion"] = {"model": stacker, "inputs": singles}
    from .classifiers import logit

    lp = {"train": pd.Series(stack_oof, index=train_lesions)}
    for sp in ("test", "external"):
        if sp in lesion_probs[singles[0]]:
            P = np.column_stack([lesion_probs[k][sp].to_numpy() for k in singles])
            lp[sp] = pd.Series(stacker.predict_proba(logit(P))[:, 1], index=lesion_probs[singles[0]][sp].index)
    lesion_probs["lr-stacker/late-fusion"] = lp
    val_keys = set(g_val)
    for name, p in e2e_prob.items():
        probs = {}
        for sp in ("train", "test", "external"):
            m = (data["split"] == sp).to_numpy()
            if sp == "train":  # only the inner-validation lesions were held out from this network
                m = m & data["lesion_key"].isin(val_keys).to_numpy()
            if m.any():
                probs[sp] = aggregate(p[m], groups[m], cfg.aggregation)
        lesion_probs[f"{name}/end-to-end"] = probs
    integrated = fit_integrated(lesion_probs, lesion_y, lesion_patient, seed=cfg.seed)
    if integrated is not None:
        lesion_probs[INTEGRATED_KEY] = integrated[1]
        if all(k in models or k.endswith("/end-to-end") for k in integrated[0]["inputs"]):
            models[INTEGRATED_KEY] = integrated[0]
    t_auto = time.perf_counter()
    from ._auto_roi_eval import auto_roi_lesion_probabilities

    auto_probs, auto_coverage = auto_roi_lesion_probabilities(
        samples, data, models, rad_names, net, e2e, image_size=cfg.image_size, window_mm=cfg.window_mm,
        aggregation=cfg.aggregation, device=device)
    timings["auto_roi_scoring"] = time.perf_counter() - t_auto
    if cfg.baselines:
        _, base_probs = fit_baselines(samples, data, tr, seed=cfg.seed)  # report rows only, not in the bundle
        lesion_probs.update(base_probs)
    timings["classifiers"] = time.perf_counter() - t

    # 5. thresholds, metrics, bundle ----------------------------------------------------------------
    thresholds = {k: youden_threshold(lesion_y.loc[v["train"].index].to_numpy(), v["train"].to_numpy())
                  for k, v in lesion_probs.items() if "train" in v}
    synthetic = any(s.synthetic for s in samples)
    table = metrics_table(lesion_probs, lesion_y, thresholds)
    auto_table = metrics_table(auto_probs, lesion_y, thresholds)
    staging = _bundle.new_staging(out)
    try:
        patient = data.groupby("lesion_key")["patient_id"].first()
        lesion_id = data.groupby("lesion_key")["lesion_id"].first()
        shap_info = evaluation_files(staging / "evaluation", lesion_probs=lesion_probs, lesion_y=lesion_y,
                                     patient=patient, lesion_id=lesion_id, thresholds=thresholds, models=models,
                                     mats=mats, names=names, data=data, primary=cfg.primary)
        write_lesion_files(staging / "evaluation", lesions, thumbs)
        write_auto_roi_files(staging / "evaluation", auto_probs, auto_coverage, lesion_y=lesion_y, patient=patient,
                             lesion_id=lesion_id)
        net.save(staging / "backbone.safetensors")
        for name, n in e2e.items():
            n.save(staging / f"e2e_{name}.safetensors")
        from .safe_store import dump_models

        dump_models(models, staging / _bundle.MODELS_FILE)
        (staging / "radiomics.yaml").write_text(settings_text, encoding="utf-8")
        primary_thr = thresholds.get(cfg.primary, 0.5)
        fp = fingerprint(data[tr], file_hashes)
        n_counts = {sp: {"lesions": int(data.loc[data.split == sp, "lesion_key"].nunique()),
                         "images": int((data.split == sp).sum()),
                         "gist_lesions": int(data[data.split == sp].groupby("lesion_key")["y"].first().sum())}
                    for sp in data["split"].unique()}
        init_word = "random-init" if init["kind"] == "random" else "local-weights"
        model_name = (f"{cfg.primary.replace('/', '-')} ({cfg.backbone} {init_word} + radiomics)"
                      if cfg.primary.endswith("combined") else f"{cfg.primary} ({cfg.backbone} {init_word})")
        budget = training_budget(cfg, net_cfg, deep, int(data.loc[tr, "lesion_key"].nunique()))
        bundle_config = {
            "primary": cfg.primary, "model_name": model_name, "threshold": primary_thr,
            "threshold_source": "Youden J on train out-of-fold lesion predictions",
            "synthetic": synthetic, "aggregation": cfg.aggregation,
            "preprocess": cfg.preprocess.to_dict(), "roi": cfg.roi.to_dict(),
            "backbone": net_cfg.to_dict(),
            "backbone_init": init,
            "deep_mode": cfg.deep_mode,
            "training_budget": budget,
            "end_to_end": {name: n.config.to_dict() for name, n in e2e.items()},
            "window": {"size": cfg.image_size, "mm": cfg.window_mm},
            "radiomics_features": rad_names, "deep_features": deep_names,
            "radiomics_stability": None if stability is None else {k: v for k, v in stability.items() if k != "icc"},
            "default_mm_per_pixel": float(np.median(np.asarray(mpps))) if mpps else None,
            "training_fingerprint": fp, "libraries": _bundle.library_versions(),
            "train_config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        }
        (staging / "config.json").write_text(json.dumps(bundle_config, indent=2, default=str), encoding="utf-8")
        timings["total"] = time.perf_counter() - t_start
        metrics = {
            "synthetic": synthetic,
            "synthetic_note": ("trained and evaluated on the eusdx synthetic phantom: software check only, "
                               "never a clinical claim") if synthetic else None,
            "primary": cfg.primary, "device": device, "backbone": cfg.backbone, "image_size": cfg.image_size,
            "backbone_init": init, "deep_mode": cfg.deep_mode, "training_budget": budget,
            "fold_histories": deep.fold_histories,
            "seed": cfg.seed, "n": n_counts,
            "auc": {sp: {k: v[sp]["auc"] for k, v in table.items() if sp in v} for sp in ("train", "test", "external")},
            "by_model": table, "thresholds": thresholds, "best_params": best_params,
            "auto_roi": {"coverage": auto_coverage,
                         "auc": {sp: {k: v[sp]["auc"] for k, v in auto_table.items() if sp in v}
                                 for sp in ("test", "external")}},
            "roi_auto_dice": {"n": int(dice.size), "mean": float(dice.mean()) if dice.size else None,
                              "median": float(np.median(dice)) if dice.size else None},
            "skipped_images": {"n": len(failures), "examples": dict(list(failures.items())[:10])},
            "backbone_history": net.history, "backbone_from_cache": net_cached,
            "timings_s": timings, "training_fingerprint": fp, "shap": shap_info,
            "radiomics_stability": stability,
        }
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float), encoding="utf-8")
        final = _bundle.write_bundle(out, staging, signing_key=signing_key)
    except BaseException:
        _bundle.discard_staging(staging)
        raise
    log.info("bundle written to %s in %.1f s", final, timings["total"])
    return TrainResult(final, metrics)
