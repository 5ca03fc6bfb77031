"""Read and check the files an evaluation report is built from.

A trained bundle carries (paths relative to the bundle root):

``evaluation/predictions.csv``
    Columns exactly ``split,lesion_id,patient_id,y,classifier,modality,prob`` (extra columns are
    ignored). ``split`` in ``train|test|external``; ``y`` 1 = GIST, 0 = leiomyoma; ``classifier`` in
    ``svm|xgboost|rf|lr-stacker|resnet34|resnet50``; ``modality`` in
    ``radiomics|deep|combined|late-fusion|end-to-end``; ``prob`` = lesion-level P(GIST) in [0, 1].
    ``train`` rows are out-of-fold predictions. One row per (split, lesion, classifier, modality).
``evaluation/thresholds.json``
    ``{"<classifier>/<modality>": threshold}``, chosen by Youden's J on train. A model without an entry
    gets Youden's threshold on its train rows here (or 0.5 when it has none); the report says which.
``metrics.json``
    Must hold ``"synthetic": true|false``. Anything else in it is ignored here.
``evaluation/shap.json`` (optional; see :mod:`models.report.explain`)
``evaluation/lesions.csv`` (optional; bundles since issue 16)
    One row per lesion listed in the manifests: ``split,lesion_id,patient_id,y,images_listed,
    images_analysed`` and any of ``size_mm,layer,echo_pattern,device,centre`` (Table 1, participant flow).
``evaluation/thumbs/<split>_<lesion_id>.png`` (optional): the misclassified-lesion gallery.
``evaluation/predictions_auto_roi.csv`` + ``evaluation/auto_roi.json`` (optional; bundles since issue 16)
    The test/external lesions scored with the automatic ROI (columns as ``predictions.csv``) and how many
    images and lesions it could analyse (the report's automatic-ROI section).
``config.json``, ``manifest.json``, ``radiomics.yaml`` (optional): the methods section (the bundle
    version and manifest SHA-256 are the identifiers the SR carries).

Everything that is wrong raises :class:`ReportInputError` naming the file and the problem.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from eusdx.errors import DataError

__all__ = [
    "PREDICTION_COLUMNS",
    "SPLITS",
    "CLASSIFIERS",
    "MODALITIES",
    "BASELINE_CLASSIFIER",
    "ReportInputError",
    "ModelPredictions",
    "EvaluationInputs",
    "read_predictions",
    "read_thresholds",
    "read_synthetic_flag",
    "read_lesions",
    "load_bundle_inputs",
    "LesionRecord",
    "LESION_CHARACTERISTICS",
]

#: Optional lesion characteristics of ``lesions.csv``, in Table 1's order.
LESION_CHARACTERISTICS: tuple[str, ...] = ("size_mm", "layer", "echo_pattern", "device", "centre")
_LESION_COLUMNS: tuple[str, ...] = ("split", "lesion_id", "patient_id", "y", "images_listed", "images_analysed")

PREDICTION_COLUMNS: tuple[str, ...] = ("split", "lesion_id", "patient_id", "y", "classifier", "modality", "prob")
SPLITS: tuple[str, ...] = ("train", "test", "external")
CLASSIFIERS: tuple[str, ...] = ("svm", "xgboost", "rf", "lasso-lr", "lr-stacker", "paper004-integrated",
                                 "resnet34", "resnet50", "baseline")
MODALITIES: tuple[str, ...] = ("radiomics", "deep", "combined", "resnet34-random-frozen", "resnet50-random-frozen",
                               "late-fusion", "end-to-end", "size-only", "header-only", "outside-sector")
#: Rows that show what a model could learn without the lesion's appearance (``models/baselines.py``).
BASELINE_CLASSIFIER = "baseline"


class ReportInputError(DataError):
    """An evaluation input file is missing or malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class ModelPredictions:
    """One model's predictions on one split, sorted by lesion id."""

    lesion_id: tuple[str, ...]
    patient_id: tuple[str, ...]
    y: NDArray[np.int64]
    prob: NDArray[np.float64]


@dataclass(frozen=True)
class LesionRecord:
    """One lesion of ``lesions.csv``; ``characteristics`` holds the optional columns present (as text)."""

    split: str
    lesion_id: str
    patient_id: str
    y: int
    images_listed: int
    images_analysed: int
    characteristics: dict[str, str]


@dataclass
class EvaluationInputs:
    """Everything a report needs, already checked.

    ``data[model_key][split]`` holds that model's predictions; ``model_key`` is
    ``"<classifier>/<modality>"``. ``synthetic`` is None when no metrics.json was given.
    """

    data: dict[str, dict[str, ModelPredictions]]
    thresholds: dict[str, float]
    synthetic: bool | None
    sources: dict[str, str] = field(default_factory=dict)
    shap_manifest: Path | None = None
    bundle_root: Path | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    lesions: list[LesionRecord] | None = None
    bundle: dict[str, Any] = field(default_factory=dict)
    thumbs_dir: Path | None = None
    auto_roi: dict[str, dict[str, ModelPredictions]] | None = None
    auto_roi_coverage: dict[str, Any] | None = None

    @property
    def models(self) -> list[str]:
        """Model keys ordered by modality, then classifier, in the canonical order above."""

        def order(key: str) -> tuple[int, int, str]:
            clf, mod = key.split("/", 1)
            return (MODALITIES.index(mod), CLASSIFIERS.index(clf), key)

        return sorted(self.data, key=order)

    @property
    def splits(self) -> list[str]:
        """Splits present in any model, in the order train, test, external."""
        present = {s for per in self.data.values() for s in per}
        return [s for s in SPLITS if s in present]


def _need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ReportInputError(f"{what} not found: {path}")
    return path


def _read_csv(path: Path, what: str, columns: Sequence[str], *,
              expected_hint: bool = False) -> tuple[list[str], list[dict[str, str]]]:
    """``(header, rows)`` of a UTF-8 CSV that must exist and hold ``columns``.

    Raises
    ------
    ReportInputError
        The file is missing, not UTF-8, or lacks a column (``expected_hint`` adds the expected header).
    """
    p = _need_file(path, what)
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            missing = [c for c in columns if c not in header]
            if missing:
                hint = f"; expected {','.join(columns)}" if expected_hint else ""
                raise ReportInputError(f"{p.name}: missing column(s) {', '.join(missing)}{hint}")
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise ReportInputError(f"{p.name}: not a UTF-8 CSV file ({exc.reason})") from exc
    return header, rows


def read_predictions(path: str | Path) -> dict[str, dict[str, ModelPredictions]]:
    """Read and validate ``predictions.csv``.

    Returns
    -------
    dict
        ``{model_key: {split: ModelPredictions}}``.

    Raises
    ------
    ReportInputError
        Missing file or columns, bad values, duplicate rows, a lesion whose label differs between models,
        or a lesion that is in both train and test (leakage).
    """
    p = Path(path)
    _, rows = _read_csv(p, "predictions file", PREDICTION_COLUMNS, expected_hint=True)
    if not rows:
        raise ReportInputError(f"{p.name}: no prediction rows")

    grouped: dict[tuple[str, str], list[tuple[str, str, int, float]]] = {}
    seen: set[tuple[str, str, str]] = set()
    label_of: dict[tuple[str, str], int] = {}
    for line_no, r in enumerate(rows, start=2):
        where = f"{p.name} line {line_no}"
        split, clf, mod = r["split"].strip(), r["classifier"].strip(), r["modality"].strip()
        lesion, patient = r["lesion_id"].strip(), r["patient_id"].strip()
        if split not in SPLITS:
            raise ReportInputError(f"{where}: split {split!r} not one of {', '.join(SPLITS)}")
        if clf not in CLASSIFIERS:
            raise ReportInputError(f"{where}: classifier {clf!r} not one of {', '.join(CLASSIFIERS)}")
        if mod not in MODALITIES:
            raise ReportInputError(f"{where}: modality {mod!r} not one of {', '.join(MODALITIES)}")
        if not lesion:
            raise ReportInputError(f"{where}: empty lesion_id")
        if r["y"].strip() not in ("0", "1"):
            raise ReportInputError(f"{where}: y must be 0 or 1, got {r['y']!r}")
        y = int(r["y"].strip())
        try:
            prob = float(r["prob"])
        except ValueError:
            raise ReportInputError(f"{where}: prob {r['prob']!r} is not a number") from None
        if not (math.isfinite(prob) and 0.0 <= prob <= 1.0):
            raise ReportInputError(f"{where}: prob {prob} outside [0, 1]")
        key = f"{clf}/{mod}"
        ident = (split, lesion, key)
        if ident in seen:
            raise ReportInputError(f"{where}: duplicate row for lesion {lesion!r}, model {key}, split {split}")
        seen.add(ident)
        prev = label_of.setdefault((split, lesion), y)
        if prev != y:
            raise ReportInputError(f"{where}: lesion {lesion!r} has label {y} here but {prev} for another model")
        grouped.setdefault((key, split), []).append((lesion, patient, y, prob))

    train_ids = {les for (s, les) in label_of if s == "train"}
    test_ids = {les for (s, les) in label_of if s == "test"}
    leaked = sorted(train_ids & test_ids)
    if leaked:
        raise ReportInputError(
            f"{p.name}: {len(leaked)} lesion(s) in both train and test (split must be by lesion), e.g. {leaked[0]!r}"
        )
    patients = {s: {r[1] for (k, sp), items in grouped.items() if sp == s for r in items if r[1]}
                for s in ("train", "test")}
    shared = sorted(patients["train"] & patients["test"])
    if shared:
        raise ReportInputError(
            f"{p.name}: {len(shared)} patient(s) in both train and test (split must be by patient), e.g. {shared[0]!r}"
        )

    out: dict[str, dict[str, ModelPredictions]] = {}
    for (key, split), items in grouped.items():
        items.sort(key=lambda t: t[0])
        out.setdefault(key, {})[split] = ModelPredictions(
            lesion_id=tuple(t[0] for t in items),
            patient_id=tuple(t[1] for t in items),
            y=np.array([t[2] for t in items], dtype=np.int64),
            prob=np.array([t[3] for t in items], dtype=np.float64),
        )
    return out


def _read_json(path: Path, what: str) -> Any:
    _need_file(path, what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportInputError(f"{path.name}: not valid JSON ({exc})") from exc


def read_thresholds(path: str | Path) -> dict[str, float]:
    """Read ``thresholds.json`` (``{"<classifier>/<modality>": float in [0, 1]}``).

    Raises
    ------
    ReportInputError
        Missing file, not a JSON object, a malformed key or a value outside [0, 1].
    """
    p = Path(path)
    raw = _read_json(p, "thresholds file")
    if not isinstance(raw, dict):
        raise ReportInputError(f"{p.name}: expected a JSON object of model -> threshold")
    out: dict[str, float] = {}
    for key, val in raw.items():
        clf, _, mod = str(key).partition("/")
        if clf not in CLASSIFIERS or mod not in MODALITIES:
            raise ReportInputError(f"{p.name}: key {key!r} is not '<classifier>/<modality>'")
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not 0.0 <= float(val) <= 1.0:
            raise ReportInputError(f"{p.name}: threshold for {key} must be a number in [0, 1], got {val!r}")
        out[str(key)] = float(val)
    return out


def read_synthetic_flag(path: str | Path) -> bool:
    """Read ``"synthetic"`` from ``metrics.json``.

    Raises
    ------
    ReportInputError
        Missing file, or no boolean ``synthetic`` key.
    """
    p = Path(path)
    raw = _read_json(p, "metrics file")
    if not isinstance(raw, dict) or not isinstance(raw.get("synthetic"), bool):
        raise ReportInputError(f"{p.name}: needs a boolean \"synthetic\" key")
    return bool(raw["synthetic"])


def read_lesions(path: str | Path) -> list[LesionRecord]:
    """Read ``lesions.csv`` (layout in the module docstring).

    Raises
    ------
    ReportInputError
        Missing file or columns, a split outside train/test/external, a label not 0/1, a count that is
        not a non-negative integer, or a lesion listed twice in one split.
    """
    p = Path(path)
    header, rows = _read_csv(p, "lesions file", _LESION_COLUMNS)
    out: list[LesionRecord] = []
    seen: set[tuple[str, str]] = set()
    extra = [c for c in LESION_CHARACTERISTICS if c in header]
    for line_no, r in enumerate(rows, start=2):
        where = f"{p.name} line {line_no}"
        split = r["split"].strip()
        if split not in SPLITS:
            raise ReportInputError(f"{where}: split {split!r} not one of {', '.join(SPLITS)}")
        if r["y"].strip() not in ("0", "1"):
            raise ReportInputError(f"{where}: y must be 0 or 1, got {r['y']!r}")
        counts = []
        for c in ("images_listed", "images_analysed"):
            v = r[c].strip()
            if not v.isdigit():
                raise ReportInputError(f"{where}: {c} must be a non-negative integer, got {v!r}")
            counts.append(int(v))
        key = (split, r["lesion_id"].strip())
        if key in seen:
            raise ReportInputError(f"{where}: lesion {key[1]!r} listed twice in {split}")
        seen.add(key)
        out.append(LesionRecord(split=split, lesion_id=key[1], patient_id=r["patient_id"].strip(),
                                y=int(r["y"].strip()), images_listed=counts[0], images_analysed=counts[1],
                                characteristics={c: (r[c] or "").strip() for c in extra}))
    return out


def _bundle_identity(root: Path) -> dict[str, Any]:
    """config.json, the manifest's version and SHA-256, and the radiomics settings, where present."""
    import hashlib

    import yaml

    out: dict[str, Any] = {}
    cfg = root / "config.json"
    if cfg.is_file():
        raw = _read_json(cfg, "bundle config")
        if isinstance(raw, dict):
            out["config"] = raw
    man = root / "manifest.json"
    if man.is_file():
        data = man.read_bytes()
        out["manifest_sha256"] = hashlib.sha256(data).hexdigest()
        try:
            out["version"] = str(json.loads(data).get("version", ""))
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
            raise ReportInputError(f"{man.name}: not valid JSON ({exc})") from exc
    met = root / "metrics.json"
    if met.is_file():
        raw = _read_json(met, "metrics file")
        if isinstance(raw, dict) and isinstance(raw.get("roi_auto_dice"), dict):
            out["metrics_roi"] = raw["roi_auto_dice"]
    rad = root / "radiomics.yaml"
    if rad.is_file():
        try:
            settings = yaml.safe_load(rad.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ReportInputError(f"{rad.name}: not valid YAML ({exc})") from exc
        if isinstance(settings, dict):
            out["radiomics"] = settings
    return out


def load_bundle_inputs(bundle: str | Path) -> EvaluationInputs:
    """Load the evaluation inputs from a trained bundle directory (layout in the module docstring).

    Raises
    ------
    ReportInputError
        The bundle directory or one of its required files is missing or malformed.
    """
    root = Path(bundle)
    if not root.is_dir():
        raise ReportInputError(f"bundle directory not found: {root}")
    pred = root / "evaluation" / "predictions.csv"
    thr = root / "evaluation" / "thresholds.json"
    met = root / "metrics.json"
    data = read_predictions(pred)
    thresholds = read_thresholds(thr)
    synthetic = read_synthetic_flag(met)
    raw = _read_json(met, "metrics file")
    provenance = {k: raw[k] for k in ("backbone", "backbone_init", "deep_mode", "training_budget", "device",
                                      "seed", "primary", "skipped_images", "n")
                  if isinstance(raw, dict) and k in raw}
    les = root / "evaluation" / "lesions.csv"
    thumbs = root / "evaluation" / "thumbs"
    shap = root / "evaluation" / "shap.json"
    auto_pred = root / "evaluation" / "predictions_auto_roi.csv"
    auto_cov = root / "evaluation" / "auto_roi.json"
    auto = read_predictions(auto_pred) if auto_pred.is_file() else None
    cov_raw = _read_json(auto_cov, "automatic ROI summary") if auto_cov.is_file() else None
    coverage = cov_raw.get("coverage") if isinstance(cov_raw, dict) else None
    return EvaluationInputs(
        data=data,
        thresholds=thresholds,
        synthetic=synthetic,
        sources={"predictions": str(pred), "thresholds": str(thr), "metrics": str(met)},
        shap_manifest=shap if shap.is_file() else None,
        bundle_root=root,
        provenance=provenance,
        lesions=read_lesions(les) if les.is_file() else None,
        bundle=_bundle_identity(root),
        thumbs_dir=thumbs if thumbs.is_dir() else None,
        auto_roi=auto,
        auto_roi_coverage=coverage if isinstance(coverage, dict) else None,
    )
