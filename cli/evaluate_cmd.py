"""``eusdx evaluate``: build the paper-style evaluation report (HTML + PNG + report.json).

Either from a trained bundle (``--bundle B``: ``evaluation/predictions.csv``, ``evaluation/thresholds.json``,
``metrics.json`` and optionally ``evaluation/shap.json``) or from loose files (``--predictions P`` with
optional ``--thresholds`` and ``--metrics``). ``--features F --model M`` add a SHAP explanation of one
model (a skops file, ``models.safe_store``) on those feature rows.

A bundle is verified like the worker verifies it (signature against ``bundle_trusted_keys``, pin,
every file's SHA-256, trusted model types) before any of its files is read; estimators are read
with the same safe loader, so no file given to this command can run code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from eusdx.errors import UsageError

__all__ = ["register"]


def evaluate_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder for report.html, report.json, PNGs")],
    bundle: Annotated[Path | None, typer.Option("--bundle", "-b", show_default="none: give --predictions", help="trained bundle folder")] = None,
    predictions: Annotated[
        Path | None, typer.Option("--predictions", "-p", show_default="none: read them from --bundle", help="predictions.csv (instead of --bundle)")
    ] = None,
    thresholds: Annotated[
        Path | None, typer.Option("--thresholds", show_default="none: Youden on the training split", help="thresholds.json (with --predictions)")
    ] = None,
    metrics: Annotated[
        Path | None, typer.Option("--metrics", show_default="none", help="metrics.json with \"synthetic\" (with --predictions)")
    ] = None,
    features: Annotated[
        Path | None, typer.Option("--features", show_default="none: no SHAP", help="features CSV (lesion_id + feature columns) for SHAP")
    ] = None,
    model: Annotated[Path | None, typer.Option("--model", show_default="none: no SHAP", help="skops estimator to explain with SHAP")] = None,
    background: Annotated[
        Path | None, typer.Option("--background", show_default="the --features file", help="background features CSV for SHAP")
    ] = None,
    shap_name: Annotated[
        str | None, typer.Option("--shap-model", show_default="the --model file's name", help="<classifier>/<modality> label of --model")
    ] = None,
    ci_method: Annotated[
        str, typer.Option("--ci-method", help="binomial CI: wilson, wald, clopper-pearson, agresti-coull, jeffreys")
    ] = "wilson",
    alpha: Annotated[float, typer.Option("--alpha", help="1 - confidence level")] = 0.05,
    prevalence: Annotated[
        float | None, typer.Option("--prevalence", show_default="0.5, assumed and stated in the report",
                                   help="deployment prevalence of GIST for PPV/NPV and decision curves")
    ] = None,
    n_boot: Annotated[int, typer.Option("--n-boot", help="patient-clustered bootstrap replicates")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="bootstrap seed")] = 20160,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress messages")] = False,
) -> None:
    """Build the evaluation report (Table 1, flow, tables 2-4 with bootstrap CIs, ROC, calibration, decision
    curves, misclassified lesions, automatic vs SEG ROI, SHAP, methods from the bundle)."""
    from models.report import EvaluationInputs, build_report, load_bundle_inputs
    from models.report.explain import ShapEntry
    from models.report.inputs import read_predictions, read_synthetic_flag, read_thresholds
    from stats import PROPORTION_METHODS

    if (bundle is None) == (predictions is None):
        raise UsageError("give exactly one of --bundle or --predictions")
    if bundle is not None and (thresholds is not None or metrics is not None):
        raise UsageError("--thresholds/--metrics go with --predictions; a bundle carries its own")
    if (features is None) != (model is None):
        raise UsageError("--features and --model go together")
    if background is not None and features is None:
        raise UsageError("--background needs --features and --model")
    if ci_method not in PROPORTION_METHODS:
        raise UsageError(f"--ci-method must be one of {', '.join(PROPORTION_METHODS)}, got {ci_method!r}")
    if not 0.0 < alpha < 1.0:
        raise UsageError(f"--alpha must be in (0, 1), got {alpha}")
    if prevalence is not None and not 0.0 < prevalence < 1.0:
        raise UsageError(f"--prevalence must lie strictly between 0 and 1, got {prevalence}")
    if n_boot < 10:
        raise UsageError(f"--n-boot must be at least 10, got {n_boot}")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")

    if bundle is not None:
        from cli.context import settings_from
        from models.bundle import BundleTrust, verify_bundle

        sealed = (bundle / "manifest.json").is_file()
        if sealed:
            verify_bundle(bundle, trust=BundleTrust.from_settings(settings_from(ctx)))
        inputs = load_bundle_inputs(bundle)
        if not sealed:
            # Loose evaluation files in a folder: nothing to verify them against; estimators are
            # still read only through the safe loader (models.safe_store).
            typer.echo(f"evaluate: warning: {bundle} has no manifest.json, so its origin and "
                       "contents are not verified", err=True)
    else:
        assert predictions is not None
        sources = {"predictions": str(predictions)}
        thr = read_thresholds(thresholds) if thresholds is not None else {}
        if thresholds is not None:
            sources["thresholds"] = str(thresholds)
        synthetic = read_synthetic_flag(metrics) if metrics is not None else None
        if metrics is not None:
            sources["metrics"] = str(metrics)
        inputs = EvaluationInputs(data=read_predictions(predictions), thresholds=thr, synthetic=synthetic,
                                  sources=sources)

    shap_entries = None
    if features is not None and model is not None:
        shap_entries = [ShapEntry(model=shap_name or model.stem, estimator=model, features=features,
                                  background=background)]

    def progress(msg: str) -> None:
        if not quiet:
            print(f"evaluate: {msg}", file=sys.stderr, flush=True)

    result = build_report(inputs, out, ci_method=ci_method, alpha=alpha, shap_entries=shap_entries,
                          progress=progress, prevalence=prevalence, n_boot=n_boot, seed=seed)
    typer.echo(str(result.html))


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command to the CLI."""
    app.command("evaluate")(evaluate_cmd)
