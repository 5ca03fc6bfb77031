"""The methods section of the report, generated from the bundle itself (TRIPOD+AI item 12, CLAIM 13-27).

Every value is read from the bundle: ``manifest.json`` (version and SHA-256: the identifiers the DICOM
SR carries as the algorithm version), ``config.json`` (backbone, its initialisation, preprocessing and
ROI settings, feature selection, aggregation, seeds, library versions, training-data fingerprint),
``radiomics.yaml`` (the feature settings the bundle was trained with) and ``metrics.json``. Nothing is
typed in by hand, so the section cannot drift from the model it describes; an item the bundle lacks
is shown as "not recorded in this bundle".
"""

from __future__ import annotations

import json
from typing import Any

from models.report.inputs import EvaluationInputs

__all__ = ["methods_section", "NOT_RECORDED"]

NOT_RECORDED = "not recorded in this bundle"


def _flat(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(obj, dict):
        out: list[tuple[str, str]] = []
        for k, v in obj.items():
            out += _flat(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(obj, list):
        return [(prefix, ", ".join(json.dumps(v) if isinstance(v, (dict, list)) else str(v) for v in obj))]
    return [(prefix, "null" if obj is None else str(obj))]


def _get(d: dict[str, Any], *path: str) -> Any:
    cur: Any = d
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


def _text(v: Any) -> str:
    if v is None or v == "" or v == {}:
        return NOT_RECORDED
    if isinstance(v, dict):
        return "; ".join(f"{k}={val}" for k, val in _flat(v))
    return str(v)


def _stability(cfg: dict[str, Any]) -> str:
    if "radiomics_stability" not in cfg:
        return NOT_RECORDED
    st = cfg["radiomics_stability"]
    if not st:
        return "off (no stability section in radiomics.yaml)"
    if st.get("skipped"):
        return f"skipped: {st['skipped']}"
    return (f"ICC(1,1) >= {st['icc_min']} under ROI erosion/dilation by {st['perturb_px']} px on {st['images']} "
            f"training images: {st['kept']} kept, {len(st['dropped'])} dropped")


def methods_section(inputs: EvaluationInputs, data: dict[str, Any]) -> dict[str, Any]:
    """``{"identity": [...], "items": [[item, value], ...], "radiomics": [[setting, value], ...],
    "libraries": [[name, version], ...], "paragraph": str}`` for the report dictionary."""
    b = inputs.bundle
    cfg: dict[str, Any] = b.get("config") or {}
    tc: dict[str, Any] = cfg.get("train_config") or {}
    prov = inputs.provenance
    init = cfg.get("backbone_init") or prov.get("backbone_init") or {}
    backbone = cfg.get("backbone") or {}
    backbone_name = backbone.get("name") if isinstance(backbone, dict) else None
    backbone_name = backbone_name or prov.get("backbone")
    init_txt = NOT_RECORDED
    if isinstance(init, dict) and init:
        init_txt = str(init.get("description") or init.get("kind"))
        if init.get("sha256"):
            init_txt += f" (weights SHA-256 {init['sha256']})"
    seed = tc.get("seed", prov.get("seed"))
    identity = [
        ["Bundle version (SR algorithm version)", _text(b.get("version"))],
        ["Bundle manifest SHA-256 (SR)", _text(b.get("manifest_sha256"))],
        ["Model name (SR)", _text(cfg.get("model_name"))],
        ["Primary model", _text(cfg.get("primary") or prov.get("primary"))],
        ["Decision threshold", _text(cfg.get("threshold"))
         + ("" if not cfg.get("threshold_source") else f" ({cfg['threshold_source']})")],
        ["Training-data fingerprint", _text(cfg.get("training_fingerprint"))],
    ]
    items = [
        ["Backbone", _text(backbone_name)],
        ["Backbone settings", _text(backbone if isinstance(backbone, dict) else None)],
        ["Backbone initialisation", init_txt],
        ["Deep features", _text(cfg.get("deep_mode") or prov.get("deep_mode"))],
        ["Lesion window", _text(cfg.get("window"))],
        ["Preprocessing", _text(cfg.get("preprocess"))],
        ["ROI", _text(cfg.get("roi"))],
        ["Feature selection", _text(tc.get("selector"))],
        ["Cross-validation folds (grouped by patient)", _text(tc.get("cv_splits"))],
        ["Hyper-parameter grid search", _text(tc.get("grid_search"))],
        ["Image-to-lesion aggregation", _text(cfg.get("aggregation"))],
        ["Test fraction (patients)", _text(tc.get("test_size"))],
        ["Radiomics stability filter", _stability(cfg)],
        ["Seed", _text(seed)],
        ["Radiomics features in the model", _text(len(cfg["radiomics_features"]) if isinstance(
            cfg.get("radiomics_features"), list) else None)],
        ["Deep features in the model", _text(len(cfg["deep_features"]) if isinstance(
            cfg.get("deep_features"), list) else None)],
        ["Bootstrap", f"{data['bootstrap']['n_boot']} patient-clustered replicates, seed {data['bootstrap']['seed']}, "
                      "percentile intervals"],
    ]
    radiomics = [[k, v] for k, v in _flat(b.get("radiomics") or {})]
    libs = sorted((str(k), str(v)) for k, v in (cfg.get("libraries") or {}).items())
    paragraph = (
        f"Lesions were classified by {_text(cfg.get('model_name'))} (bundle {_text(b.get('version'))}). "
        f"Deep features came from a {_text(backbone_name)} backbone ({init_txt}); radiomics followed the "
        f"settings listed below ({len(radiomics) or 'no'} settings, from the bundle's radiomics.yaml). "
        f"Features were selected by {_text(tc.get('selector'))} inside patient-grouped cross-validation "
        f"({_text(tc.get('cv_splits'))} folds); image outputs were aggregated per lesion by "
        f"{_text(cfg.get('aggregation'))}. Seed {_text(seed)}. The decision threshold was fixed on the "
        "training partition's out-of-fold predictions before the test and external sets were scored."
    )
    return {"identity": identity, "items": items, "radiomics": radiomics, "libraries": [list(x) for x in libs],
            "paragraph": paragraph, "available": bool(cfg)}
