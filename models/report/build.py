"""Build the whole evaluation report into a folder.

Output layout (``out_dir``)::

    report.html        self-contained page (inline CSS), images referenced by relative file name
    report.json        every number on the page (schema "eusdx-evaluation-report/1")
    table2.csv table3.csv table4.csv [external.csv table3_external.csv]
    roc_<split>.png calibration_<split>.png decision_<split>.png decision_prevalence_<split>.png
    delong_test.png brier.png
    gallery/<split>_<lesion>.png   (thumbnails of misclassified lesions, when the bundle has them)
    shap_<classifier>_<modality>.png/.csv   (when SHAP input exists)
"""

from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from models.report import plots
from models.report.auto_roi import auto_roi_section
from models.report.explain import (
    ShapEntry,
    explain_model,
    load_estimator,
    read_features_csv,
    read_shap_manifest,
    save_shap_outputs,
)
from models.report.gallery import misclassified_gallery
from models.report.html import render_html
from models.report.methods import methods_section
from models.report.inputs import EvaluationInputs, ReportInputError
from models.report.tables import compute_report_data, json_clean

__all__ = ["ReportResult", "build_report"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportResult:
    """Paths of what :func:`build_report` wrote."""

    html: Path
    json: Path
    figures: dict[str, Path]
    tables: dict[str, Path]


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    flat: list[dict[str, Any]] = []
    for r in rows:
        f: dict[str, Any] = {}
        for k, v in r.items():
            if isinstance(v, dict):
                for kk, vv in v.items():
                    f[f"{k}_{kk}"] = vv
            else:
                f[k] = v
        flat.append(f)
    cols: list[str] = []
    for f in flat:
        cols += [c for c in f if c not in cols]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for f in flat:
            w.writerow({k: ("" if v is None else v) for k, v in f.items()})
    return path


def _shap_section(entries: list[ShapEntry], out_dir: Path, synthetic: bool | None, max_explain: int,
                  progress: Callable[[str], None]) -> dict[str, Any]:
    done = []
    for e in entries:
        progress(f"SHAP {e.model}")
        est = load_estimator(e.estimator)
        ids, names, x = read_features_csv(e.features)
        bg = None
        if e.background is not None:
            _, bg_names, bg = read_features_csv(e.background)
            if bg_names != names:
                raise ReportInputError(f"{e.background.name}: columns differ from {e.features.name}")
        try:
            res = explain_model(est, x, names, bg, max_explain=max_explain)
        except ValueError as exc:
            raise ReportInputError(f"SHAP for {e.model}: {exc}") from exc
        stem = "shap_" + re.sub(r"[^A-Za-z0-9]+", "_", e.model).strip("_")
        png, csv_path = save_shap_outputs(res, out_dir, stem, e.model,
                                          banner=lambda fig: plots.draw_banner(fig, synthetic))
        log.info("shap done", extra={"model": e.model, "method": res.method, "seconds": round(res.seconds, 2)})
        done.append({
            "model": e.model, "method": res.method, "output": res.output,
            "n_explained": int(res.values.shape[0]), "n_background": res.n_background,
            "n_rows": len(ids), "n_lesions": len(set(ids)), "row_unit": "image",
            "n_features": len(names), "seconds": res.seconds, "png": png.name, "csv": csv_path.name,
            "top": [{"rank": r, "feature": f, "mean_abs_shap": v} for r, f, v in res.ranking(20)],
        })
    return {"available": True, "entries": done}


def build_report(
    inputs: EvaluationInputs,
    out_dir: str | Path,
    *,
    ci_method: str = "wilson",
    alpha: float = 0.05,
    shap_entries: list[ShapEntry] | None = None,
    shap_max_explain: int = 100,
    progress: Callable[[str], None] | None = None,
    prevalence: float | None = None,
    n_boot: int = 2000,
    seed: int = 20160,
) -> ReportResult:
    """Compute, draw and write the report.

    Parameters
    ----------
    inputs : EvaluationInputs
        From :func:`models.report.inputs.load_bundle_inputs` or assembled from loose files.
    out_dir : path
        Created if missing; existing report files in it are overwritten.
    ci_method, alpha
        Binomial CI method and 1 - confidence level.
    prevalence : float, optional
        Deployment prevalence of GIST for PPV/NPV and decision curves (default: an assumed 0.5, stated).
    n_boot, seed
        Patient-clustered bootstrap replicates and seed.
    shap_entries : list of ShapEntry, optional
        Models to explain; default: those in the bundle's ``evaluation/shap.json``, if any.
    progress : callable, optional
        Called with a short message before each step (the CLI prints them).

    Returns
    -------
    ReportResult

    Raises
    ------
    ReportInputError
        SHAP inputs missing or malformed.
    ValueError
        Unknown ``ci_method``.
    """
    say = progress or (lambda _msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say("statistics")
    data = compute_report_data(inputs, ci_method=ci_method, alpha=alpha, prevalence=prevalence, n_boot=n_boot,
                               seed=seed)
    data["methods"] = methods_section(inputs, data)
    data["gallery"] = misclassified_gallery(inputs, data["thresholds"], out)
    data["auto_roi"] = auto_roi_section(inputs, data["thresholds"], alpha)
    data["generated_utc"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    data["inputs"] = inputs.sources

    reason = "the bundle has no evaluation/shap.json and no --features/--model were given"
    if shap_entries is None and inputs.shap_manifest is not None and inputs.bundle_root is not None:
        shap_entries = read_shap_manifest(inputs.shap_manifest, inputs.bundle_root)
        reason = "evaluation/shap.json lists no models"
    if shap_entries:
        data["shap"] = _shap_section(shap_entries, out, data["synthetic"], shap_max_explain, say)
    else:
        data["shap"] = {"available": False, "reason": reason}

    say("figures")
    figures: dict[str, Path] = {}
    for split in data["splits"]:
        for name, fn in (("roc", plots.plot_roc), ("calibration", plots.plot_calibration),
                         ("decision", plots.plot_decision), ("decision_prevalence", plots.plot_decision_prevalence)):
            p = fn(data, split, out / f"{name}_{split}.png")
            if p is not None:
                figures[f"{name}_{split}"] = p
    for name, single in (("delong_test", plots.plot_delong), ("brier", plots.plot_brier)):
        p = single(data, out / f"{name}.png")
        if p is not None:
            figures[name] = p
    data["figures"] = {k: v.name for k, v in figures.items()}

    say("tables")
    tables = {
        "table2": _write_csv(out / "table2.csv", data["table2"]["rows"]),
        "table3": _write_csv(out / "table3.csv", data["table3"]["pairs"]),
        "table4": _write_csv(out / "table4.csv", data["table4"]["rows"]),
    }
    if data["external"]:
        tables["external"] = _write_csv(out / "external.csv", data["external"]["rows"])
    if data["table3_external"]:
        tables["table3_external"] = _write_csv(out / "table3_external.csv", data["table3_external"]["pairs"])

    clean = json_clean(data)
    json_path = out / "report.json"
    json_path.write_text(json.dumps(clean, indent=1, allow_nan=False), encoding="utf-8")
    html_path = out / "report.html"
    html_path.write_text(render_html(clean, {k: v.name for k, v in figures.items()}), encoding="utf-8")
    return ReportResult(html=html_path, json=json_path, figures=figures, tables=tables)
