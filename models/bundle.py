"""Model bundles: a versioned directory written by training, verified and used by the worker.

Layout (every file listed with its SHA-256 in ``manifest.json``)::

    <root>/<version>/
        manifest.json            {"format": "eusdx-bundle/2", "version", "created", "files": {path: sha256}}
        manifest.sig             Ed25519 signature of manifest.json (``models.signing``)
        config.json              preprocessing, ROI, network and feature settings, primary model, threshold,
                                 synthetic flag, library versions, training-data fingerprint
        radiomics.yaml           pyradiomics settings used for training
        backbone.safetensors     fine-tuned deep-feature network (timm backbone + head)
        e2e_resnet34.safetensors end-to-end classifiers (optional)
        models.skops             fitted pipelines {"svm/combined": Pipeline, ...} and the late-fusion stacker
                                 (skops, types checked against ``models.safe_store.TRUSTED_TYPES``)
        metrics.json             test/external AUC etc. ("synthetic": true for phantom data)
        evaluation/              predictions.csv, thresholds.json, features_test.csv, shap.json + shap/*.skops
    <root>/current -> <version>

:func:`load_bundle` first checks who made the bundle (the manifest's Ed25519 signature against the
trusted keys, and the optional pinned manifest SHA-256: :class:`models.signing.BundleTrust`), then
every listed file's SHA-256, and only then reads models, in formats that cannot run code on load
(skops with an explicit trusted-types list, safetensors, JSON). A forged, tampered, incomplete or
incompatible bundle is refused with :class:`BundleError` naming the file. Format 1 bundles (pickled
``models.joblib``) are refused: retrain.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eusdx.durable import sha256_file
from eusdx.errors import DataError

from .preprocess import NoSectorError, PreprocessConfig, has_sector, lesion_window
from .roi import NoLesionError, RoiConfig, mask_polygon
from .safe_store import UnsafeModelFile, load_models
from .signing import BundleTrust, SignatureError, sign_manifest

__all__ = [
    "BUNDLE_FORMAT",
    "BundleError",
    "NoSectorError",
    "NoLesionError",
    "Frame",
    "ImageResult",
    "Bundle",
    "BundleTrust",
    "load_bundle",
    "verify_bundle",
    "write_bundle",
    "library_versions",
    "sha256_file",
]

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "eusdx-bundle/2"
MODELS_FILE = "models.skops"
#: Suffixes of pickle-based files; a bundle that lists one is refused (they run code when read).
_PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle", ".pt", ".pth")


class BundleError(DataError):
    """A bundle is missing, tampered with or incompatible; the message names the file."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame handed to :meth:`Bundle.predict`.

    ``mm_per_pixel`` (an addition to the contract, optional) is the frame's physical pixel size from
    the ultrasound region calibration (``models.dicom_io.mm_per_pixel_from_dataset(ds)``); without it
    the bundle assumes the median pixel size of its training images.
    """

    pixels: np.ndarray
    seg_mask: np.ndarray | None = None
    key: str = ""
    mm_per_pixel: float | None = None


@dataclass(frozen=True)
class ImageResult:
    """Per-image output. ``roi_polygon`` is (column, row) in original frame pixel coordinates
    (DICOM convention: the centre of the top-left pixel is (0.5, 0.5))."""

    key: str
    probability: float
    label: str
    roi_polygon: list[tuple[float, float]]
    roi_source: str
    roi_confidence: float
    timings: dict[str, float]


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose objects a bundle stores."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("numpy", "scikit-learn", "xgboost", "torch", "timm", "pyradiomics-bhklab", "scikit-image",
                 "safetensors", "skops", "pydicom", "highdicom", "SimpleITK"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def _major_minor(v: str) -> tuple[str, ...]:
    return tuple(v.split("+")[0].split(".")[:2])


# --- writing -----------------------------------------------------------------------------------

def write_bundle(out_root: str | Path, staging: Path, *, link_current: bool = True,
                 signing_key: str | Path | None = None) -> Path:
    """Seal a staged bundle directory: hash every file, write manifest.json (and, with
    ``signing_key``, its Ed25519 signature manifest.sig), move it into place.

    Parameters
    ----------
    out_root : path
        Folder that holds bundle versions and the ``current`` link.
    staging : path
        Directory with all bundle files written (inside ``out_root``, so the move is a rename).
    signing_key : path, optional
        Ed25519 private key (PEM) that signs the manifest (``eusdx bundle keygen`` makes one).

    Returns
    -------
    pathlib.Path
        The sealed ``<out_root>/<version>`` directory.
    """
    root = Path(out_root)
    files = {}
    for p in sorted(staging.rglob("*")):
        if p.is_file() and p.name not in ("manifest.json", "manifest.sig"):
            files[p.relative_to(staging).as_posix()] = sha256_file(p)
    content = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    version = f"{_dt.datetime.now(_dt.UTC):%Y.%m.%d}-{content[:8]}"
    manifest = {"format": BUNDLE_FORMAT, "version": version,
                "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "files": files}
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    final = root / version
    if final.exists():
        final = root / f"{version}-{uuid.uuid4().hex[:4]}"
        manifest["version"] = final.name
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    if signing_key is not None:
        sign_manifest(staging, signing_key)
    os.replace(staging, final)
    if link_current:
        tmp = root / f".current-{uuid.uuid4().hex}"
        os.symlink(final.name, tmp)
        os.replace(tmp, root / "current")
    return final


def new_staging(out_root: str | Path) -> Path:
    """A fresh staging directory inside ``out_root``."""
    root = Path(out_root)
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    return staging


def discard_staging(staging: Path) -> None:
    """Remove a staging directory after a failed training run."""
    shutil.rmtree(staging, ignore_errors=True)


# --- loading -----------------------------------------------------------------------------------

def _verify(root: Path, trust: BundleTrust | None) -> tuple[dict[str, Any], str]:
    mpath = root / "manifest.json"
    if not root.is_dir():
        raise BundleError(f"bundle directory not found: {root}")
    try:
        raw = mpath.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"bundle {root}: manifest.json is missing") from None
    if trust is not None:  # origin first: nothing of an unproven bundle is parsed further
        try:
            trust.check(root, raw)
        except SignatureError as exc:
            raise BundleError(str(exc)) from exc
    else:
        log.warning("bundle %s loaded without an origin check (no trusted keys given)", root)
    try:
        manifest = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError for binary junk
        raise BundleError(f"bundle {root}: manifest.json is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"bundle {root}: manifest.json is not a JSON object")
    if manifest.get("format") == "eusdx-bundle/1":
        raise BundleError(f"bundle {root}: format eusdx-bundle/1 stores pickled models that run code "
                          "when loaded; retrain to get an eusdx-bundle/2 bundle")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"bundle {root}: manifest.json format {manifest.get('format')!r} is not {BUNDLE_FORMAT}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"bundle {root}: manifest.json lists no files")
    for rel in files:
        if str(rel).lower().endswith(_PICKLE_SUFFIXES):
            raise BundleError(f"bundle {root}: file {rel} is a pickle-based format, which can run code "
                              "when loaded; bundles store models as skops/safetensors/JSON only")
    for rel, digest in files.items():
        p = root / rel
        if ".." in Path(rel).parts or not p.is_file():
            raise BundleError(f"bundle {root}: file {rel} is missing")
        if sha256_file(p) != digest:
            raise BundleError(f"bundle {root}: file {rel} was modified (SHA-256 does not match manifest.json)")
    for needed in ("config.json", MODELS_FILE, "radiomics.yaml"):
        if needed not in files:
            raise BundleError(f"bundle {root}: {needed} is not listed in manifest.json")
    return manifest, hashlib.sha256(raw).hexdigest()


def _read_config(root: Path) -> dict[str, Any]:
    try:
        config: dict[str, Any] = json.loads((root / "config.json").read_text(encoding="utf-8"))
    except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError for binary junk
        raise BundleError(f"bundle {root}: config.json is not valid JSON ({exc})") from exc
    libs = config.get("libraries", {})
    current = library_versions()
    for lib in ("scikit-learn", "xgboost"):
        if lib in libs and _major_minor(libs[lib]) != _major_minor(current[lib]):
            raise BundleError(
                f"bundle {root}: {MODELS_FILE} was written with {lib} {libs[lib]}, this is {current[lib]}; "
                "retrain or install the matching version")
    return config


def verify_bundle(path: str | Path, *, trust: BundleTrust | None = None) -> str:
    """Check a bundle without loading its models (origin, hashes, format, library versions,
    and that every stored model type is on the trusted list).

    A process that will load the bundle later (a worker's pool processes) calls this at start so that
    a missing or tampered bundle stops it with a clear error instead of failing every study.

    Returns
    -------
    str
        The SHA-256 of the bundle manifest (``Bundle.sha256``).

    Raises
    ------
    BundleError
        As ``load_bundle``, except for errors only building the models would find.
    """
    from .safe_store import untrusted_types

    root = Path(path).resolve()
    _, digest = _verify(root, trust)
    _read_config(root)
    try:
        bad = untrusted_types((root / MODELS_FILE).read_bytes())
    except UnsafeModelFile as exc:
        raise BundleError(f"bundle {root}: {MODELS_FILE} {exc}") from exc
    if bad:
        raise BundleError(f"bundle {root}: {MODELS_FILE} names types that are not trusted: {', '.join(bad)}")
    return digest


def load_bundle(path: str | Path, *, trust: BundleTrust | None = None) -> "Bundle":
    """Load a bundle (a version directory or the ``current`` link) after verifying it.

    Parameters
    ----------
    path
        Bundle version directory or the ``current`` link.
    trust
        Trusted signing keys / pinned digest (``BundleTrust.from_settings``). The worker and the
        CLI always pass one; ``None`` (library use, tests) checks integrity only and logs it.

    Raises
    ------
    BundleError
        An untrusted or missing signature, a pin mismatch, a missing directory or file, a SHA-256
        mismatch, an unknown format, a model type outside the trusted list, or library versions
        the stored objects cannot be loaded with.
    """
    root = Path(path).resolve()
    manifest, digest = _verify(root, trust)
    config = _read_config(root)
    try:
        models = load_models(root / MODELS_FILE)
    except (UnsafeModelFile, OSError) as exc:
        raise BundleError(f"bundle {root}: {MODELS_FILE} cannot be loaded ({exc})") from exc
    return Bundle(root, manifest, digest, config, models)


class Bundle:
    """A loaded, verified bundle (what the worker uses of it: ``worker.pipeline.BundleLike``)."""

    def __init__(self, root: Path, manifest: dict[str, Any], sha256: str, config: dict[str, Any],
                 models: dict[str, Any]) -> None:
        from .deep_features import Net, NetConfig
        from .frame_pool import FramePool

        self.root = root
        self.version: str = manifest["version"]
        self.sha256 = sha256
        self.config = config
        self.threshold = float(config["threshold"])
        self.synthetic = bool(config["synthetic"])
        self.primary: str = config["primary"]
        self.model_name: str = config["model_name"]
        self.aggregation: str = config.get("aggregation", "mean")
        self._models = models
        self._pre = PreprocessConfig(**config["preprocess"])
        self._roi = RoiConfig(**config["roi"])
        self._radiomics_names: list[str] = config["radiomics_features"]
        self._default_mpp = config.get("default_mm_per_pixel")
        self._window = config["window"]
        try:
            self._net = Net.load(NetConfig(**config["backbone"]), root / "backbone.safetensors")
            self._e2e = {name: Net.load(NetConfig(**cfg), root / f"e2e_{name}.safetensors")
                         for name, cfg in config.get("end_to_end", {}).items()}
        except (DataError, OSError) as exc:
            raise BundleError(f"bundle {root}: network weights cannot be loaded ({exc})") from exc
        if self.primary not in self.model_keys():
            raise BundleError(f"bundle {root}: config.json names primary model {self.primary!r}, not in {MODELS_FILE}")
        self._used = self.used_radiomics(self.primary)
        self._frames = FramePool(self._pre, self._roi, root / "radiomics.yaml", only=self._used)
        self._torch_threads()

    def _depends_on(self, key: str) -> list[str]:
        clf, _, modality = key.partition("/")
        if modality == "late-fusion":
            return [k for inner in self._models[key]["inputs"] for k in self._depends_on(inner)]
        return [key]

    def used_radiomics(self, key: str) -> frozenset[str] | None:
        """The radiomics features model ``key``'s probability can depend on; None = all of them.

        Read from the fitted pipelines (``models.feature_use.needed_inputs``: selectors' supports,
        column-wise imputers and scalers, column routing), so a feature the model drops (e.g. not
        among the LASSO-selected ones) is not computed at inference; the probabilities are the same
        bit for bit (tests/models/test_frame_pool.py). Unknown steps count every column as used.
        """
        from .feature_use import needed_inputs

        n_r, n_d = len(self._radiomics_names), int(self._net.backbone.num_features)
        used = np.zeros(n_r, dtype=bool)
        for leaf in self._depends_on(key):
            _, _, modality = leaf.partition("/")
            if modality in ("deep", "end-to-end"):
                continue
            width = n_r + n_d if modality == "combined" else n_r
            if modality not in ("radiomics", "combined"):
                return None
            used |= needed_inputs(self._models[leaf], width)[:n_r]
        names = frozenset(n for n, u in zip(self._radiomics_names, used) if u)
        log.info("bundle %s: model %s uses %d of %d radiomics features", self.version, key, len(names), n_r)
        return names

    def model_keys(self) -> list[str]:
        """Every ``classifier/modality`` this bundle can run."""
        keys = [k for k in self._models if "/" in k]
        keys += [f"{n}/end-to-end" for n in self._e2e]
        return keys

    def use_processes(self, processes: int, *, all_radiomics: bool = False) -> None:
        """Use ``processes`` CPU cores: the frames of a study (preprocess, ROI, radiomics) run on
        that many worker processes (0 = one per usable CPU core, the default; 1 = in this
        process), then the networks on half as many torch threads (at least one).
        ``all_radiomics`` computes every radiomics feature, also those the model cannot use
        (benchmarks and tests compare it with the default)."""
        from .frame_pool import FramePool

        self._frames.close()
        self._frames = FramePool(self._pre, self._roi, self.root / "radiomics.yaml", processes=processes,
                                 only=None if all_radiomics else self._used)
        self._torch_threads()

    def _torch_threads(self) -> None:
        # Net.load sets torch to the thread count of training (its reproducibility setting). At
        # inference the networks run after the frame pool has finished, on half its cores (at least
        # one): torch's OpenMP threads spin at every barrier and collapse as soon as another process
        # (the DICOM node, another worker) wants a core: on a busy 2-core machine 2 threads took
        # 4-7x longer than 1 for the same 10 windows (bench/pipeline.py, issue 21).
        import torch

        torch.set_num_threads(max(1, self._frames.processes // 2))

    def close(self) -> None:
        """Stop the frame worker processes (they start again on the next ``predict``)."""
        self._frames.close()

    def warm_up(self, device: str = "cpu") -> None:
        """Run every stage once on a synthetic fan with a dark disc (lazy imports, buffers, kernels),
        and start the frame worker processes."""
        self._frames.warm()
        h, w = 300, 400
        yy, xx = np.mgrid[:h, :w]
        r = np.hypot(yy - 10.0, xx - w / 2)
        fan = (r > 12) & (r < h - 20) & (np.abs(np.degrees(np.arctan2(xx - w / 2, yy - 10.0))) < 40)
        img = np.random.default_rng(0).gamma(2.0, 35.0, size=(h, w))
        lesion = np.hypot(yy - 160, xx - w / 2) < 30
        img[lesion] *= 0.3
        pixels = np.where(fan, np.clip(img, 0, 255), 0).astype(np.uint8)
        self.predict([Frame(pixels=pixels, seg_mask=lesion & fan, key="warm-up", mm_per_pixel=0.2)], device)

    def has_sector(self, pixels: np.ndarray) -> bool:
        """Cheap check used to skip non-B-mode frames (colour Doppler, screenshots, blank frames)."""
        return has_sector(pixels, self._pre)

    def label_for(self, probability: float) -> str:
        """``GIST`` at or above the bundle threshold, else ``leiomyoma``."""
        return "GIST" if probability >= self.threshold else "leiomyoma"

    def lesion_probability(self, results: list[ImageResult]) -> float:
        """Aggregate image probabilities to one lesion probability (the bundle's aggregation, mean)."""
        if not results:
            raise NoLesionError("no analysed image to aggregate")
        p = np.array([r.probability for r in results], dtype=np.float64)
        if self.aggregation == "median":
            return float(np.median(p))
        if self.aggregation == "max":
            return float(p.max())
        return float(p.mean())

    def _probabilities(self, key: str, Xr: np.ndarray, Xd: np.ndarray, windows: list[np.ndarray],
                       device: str) -> np.ndarray:
        from .scoring import model_probabilities

        return model_probabilities(self._models, key, Xr, Xd,
                                   lambda name: self._e2e[name].predict_proba(windows, device))

    def predict(self, frames: list[Frame], device: str = "cpu", *, model: str | None = None) -> list[ImageResult]:
        """Classify a batch of frames with the primary model (or ``model``).

        Frames without a sector or without a findable lesion are left out of the result (logged);
        when no frame at all can be analysed the first such error is raised.

        Raises
        ------
        NoSectorError
            No frame has a B-mode sector.
        NoLesionError
            No lesion was found on any frame with a sector.
        """
        from .deep_features import resolve_device
        from .frame_pool import FrameJob, FrameSkipped

        dev = resolve_device(device)
        key = model or self.primary
        if key not in self.model_keys():
            raise BundleError(f"bundle {self.root}: no model {key!r}")
        if key != self.primary and self._used is not None:
            need = self.used_radiomics(key)
            if need is None or not need <= self._used:  # the pool computes only the primary model's features
                self.use_processes(self._frames.processes, all_radiomics=True)
                self._used = None
        # Preprocess, ROI and radiomics of every frame, in parallel across the CPU cores.
        jobs = [FrameJob(f.key, f.pixels, f.seg_mask, f.mm_per_pixel if f.mm_per_pixel else self._default_mpp)
                for f in frames]
        ok: list[tuple[Frame, Any, Any, dict[str, float]]] = []
        rows = []
        first_error: Exception | None = None
        for f, done in zip(frames, self._frames.analyse(jobs)):
            if isinstance(done, FrameSkipped):
                log.info("frame %s skipped: %s", f.key, done.error)
                first_error = first_error or done.error
                continue
            ok.append((f, done.pre, done.roi, dict(done.timings)))
            rows.append([done.features.get(n, np.nan) for n in self._radiomics_names])
        if not ok:
            if first_error is not None:
                raise first_error
            return []
        Xr = np.asarray(rows, dtype=np.float64)
        t = time.perf_counter()
        windows = [lesion_window(pre.image, roi.mask, int(self._window["size"]), mm_per_pixel=pre.mm_per_pixel,
                                 window_mm=float(self._window["mm"])) for _, pre, roi, _ in ok]
        Xd = self._net.features(windows, dev).astype(np.float64)
        t_deep = (time.perf_counter() - t) / len(ok)
        t = time.perf_counter()
        prob = self._probabilities(key, Xr, Xd, windows, dev)
        t_cls = (time.perf_counter() - t) / len(ok)
        out = []
        for (f, pre, roi, tm), p in zip(ok, prob):
            timings = {**tm, "deep": t_deep, "classify": t_cls}
            out.append(ImageResult(key=f.key, probability=float(p), label=self.label_for(float(p)),
                                   roi_polygon=mask_polygon(roi.mask, pre), roi_source=roi.source,
                                   roi_confidence=float(roi.confidence), timings=timings))
        return out
