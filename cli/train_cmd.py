"""``eusdx train``: turn a labelled manifest into a versioned model bundle with its evaluation files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from eusdx.errors import UsageError

__all__ = ["register"]


def train_cmd(
    ctx: typer.Context,
    manifest: Annotated[Path, typer.Option("--manifest", "-m", help="training manifest CSV")],
    out: Annotated[Path, typer.Option("--out", "-o", help="bundles folder (a version dir + 'current' link)")],
    external: Annotated[
        Optional[Path], typer.Option("--external", show_default="none: no external validation", help="external-validation manifest (another centre)")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="split / CV / network seed")] = 0,
    backbone: Annotated[
        Optional[str],
        typer.Option("--backbone", show_default="vit_small_patch16_224 on GPU, deit_tiny_patch16_224 on CPU",
                     help="timm model name"),
    ] = None,
    backbone_weights: Annotated[
        Optional[Path], typer.Option("--backbone-weights", show_default="none: random initialisation", help="local pretrained weights file for the backbone")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda")] = "auto",
    image_size: Annotated[Optional[int], typer.Option("--image-size", show_default="224 on GPU, 112 on CPU, 64 with --fast", help="network input, pixels")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", show_default="8 on GPU, 3 on CPU, 1 with --fast", help="fine-tuning epochs over the augmented set")] = None,
    augment: Annotated[int, typer.Option("--augment", help="training-set enlargement factor (paper 002: 5)")] = 5,
    end_to_end: Annotated[
        Optional[bool], typer.Option("--end-to-end/--no-end-to-end", show_default="on with a GPU, off on CPU and with --fast", help="also train ResNet34/50 end to end")
    ] = None,
    selector: Annotated[
        str, typer.Option("--selector", help="feature selection: lasso (lambda.min), lasso-1se, mrmr or none")
    ] = "lasso",
    deep_mode: Annotated[
        str, typer.Option("--deep-mode", help="cross-fit (fine-tune per patient fold) or frozen (no fine-tuning)")
    ] = "cross-fit",
    backbone_folds: Annotated[int, typer.Option("--backbone-folds", help="patient folds for cross-fitting")] = 3,
    primary: Annotated[str, typer.Option("--primary", help="model the worker uses, classifier/modality")] = "svm/combined",
    aggregation: Annotated[str, typer.Option("--aggregation", help="image -> lesion: mean, median or max")] = "mean",
    max_frames: Annotated[int, typer.Option("--max-frames", help="frames kept per cine (0 = all)")] = 2,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="worker processes / torch threads")] = 2,
    cache: Annotated[Optional[Path], typer.Option("--cache", show_default="OUT/cache", help="feature cache folder")] = None,
    fast: Annotated[
        bool, typer.Option("--fast", help="smallest settings that run every stage (tests, smoke bundles only)")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
    signing_key: Annotated[
        Optional[Path], typer.Option("--signing-key", show_default="none: an unsigned bundle", help="Ed25519 private key (PEM) that signs the bundle "
                                     "(`eusdx bundle keygen`); workers load only signed bundles")
    ] = None,
) -> None:
    """Train radiomics, deep, combined, late-fusion (and end-to-end) models; write a bundle."""
    from cli.context import settings_from

    settings_from(ctx)
    if selector not in ("lasso", "lasso-1se", "mrmr", "none"):
        raise UsageError(f"--selector must be lasso, lasso-1se, mrmr or none, got {selector!r}")
    if deep_mode not in ("cross-fit", "frozen"):
        raise UsageError(f"--deep-mode must be cross-fit or frozen, got {deep_mode!r}")
    if backbone_folds < 2:
        raise UsageError(f"--backbone-folds must be >= 2, got {backbone_folds}")
    if aggregation not in ("mean", "median", "max"):
        raise UsageError(f"--aggregation must be mean, median or max, got {aggregation!r}")
    if augment < 0 or jobs < 1 or max_frames < 0:
        raise UsageError("--augment and --max-frames must be >= 0, --jobs >= 1")
    from models.training import TrainConfig, train

    make = TrainConfig.fast if fast else TrainConfig
    if fast:
        # --fast supplies its own values for these unless given explicitly.
        image_size = 64 if image_size is None else image_size
        epochs = 1 if epochs is None else epochs
        end_to_end = False if end_to_end is None else end_to_end
        augment, max_frames = min(augment, 1), min(max_frames or 2, 2)
    cfg = make(
        seed=seed, backbone=backbone, backbone_weights=str(backbone_weights) if backbone_weights else None,
        device=device, image_size=image_size, epochs=epochs, augment_factor=augment, end_to_end=end_to_end,
        selector=selector, primary=primary, aggregation=aggregation, jobs=jobs,
        max_frames_per_series=max_frames or None, progress=not quiet, deep_mode=deep_mode,
        backbone_folds=backbone_folds,
    )
    if signing_key is not None:
        from models.signing import load_private_key

        load_private_key(signing_key)  # a bad key fails now, not after an hour of training
    result = train(manifest, out, external=external, cache=cache, config=cfg, signing_key=signing_key)
    m = result.metrics
    signed = "signed" if signing_key is not None else "UNSIGNED: workers refuse it outside dev_mode"
    typer.echo(f"bundle {result.bundle_dir} (synthetic={m['synthetic']}, {signed}, "
               f"{m['timings_s']['total']:.0f} s)")
    init = m.get("backbone_init") or {}
    typer.echo(f"backbone {m.get('backbone')}: {init.get('description', 'initialisation unknown')}; "
               f"deep features {m.get('deep_mode')}")
    for split in ("test", "external"):
        aucs = m["auc"].get(split) or {}
        if aucs:
            typer.echo(f"{split} AUC: " + ", ".join(f"{k}={v:.3f}" for k, v in sorted(aucs.items()) if v is not None))


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to the CLI."""
    app.command("train")(train_cmd)
