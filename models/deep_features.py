"""timm backbones: fine-tuning on the training split, pooled features, end-to-end classification.

No weights are ever downloaded. A backbone starts either from a local weights file
(``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH), num_classes=0)``)
or fresh (``pretrained=False``); training fine-tunes it on the training split with a two-class head,
early-stopping on an inner validation split (by lesion), and the fine-tuned weights are saved as
safetensors in the bundle. Gray work-image windows are fed as three identical channels.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eusdx.errors import DataError, UsageError

from .preprocess import random_augment

__all__ = [
    "NetConfig",
    "Net",
    "resolve_device",
    "create_backbone",
    "train_net",
    "seed_everything",
    "improves",
    "DEFAULT_GPU_BACKBONE",
    "DEFAULT_CPU_BACKBONE",
]

log = logging.getLogger(__name__)

DEFAULT_GPU_BACKBONE = "vit_small_patch16_224"
DEFAULT_CPU_BACKBONE = "deit_tiny_patch16_224"
_MEAN, _STD = 0.5, 0.25


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``.

    Raises
    ------
    UsageError
        When ``cuda`` is asked for and no GPU is present, or the name is unknown.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError("device cuda requested but no GPU is available")
        return device
    if device != "cpu":
        raise UsageError(f"unknown device {device!r}; use auto, cpu or cuda")
    return device


def seed_everything(seed: int, threads: int | None = None) -> None:
    """Seed torch/numpy and ask for deterministic kernels (CPU runs repeat bit for bit)."""
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)


def _accepts_img_size(name: str) -> bool:
    return any(t in name for t in ("vit", "deit", "beit", "eva", "swin", "cait", "xcit"))


def create_backbone(name: str, *, image_size: int, weights: str | Path | None = None) -> Any:
    """A timm model with its classifier removed (``num_classes=0``: pooled features out).

    Parameters
    ----------
    name : str
        Any timm model name.
    image_size : int
        Input side; Transformers are built for it (position embeddings resampled).
    weights : path, optional
        Local pretrained weights file; without it the model is freshly initialised.

    Raises
    ------
    UsageError
        Unknown model name, or the weights file is missing.
    """
    import timm

    if not timm.is_model(name):
        raise UsageError(f"unknown timm model {name!r}")
    kwargs: dict[str, Any] = {"num_classes": 0}
    if _accepts_img_size(name):
        kwargs["img_size"] = image_size
    if weights is not None:
        w = Path(weights)
        if not w.is_file():
            raise UsageError(f"backbone weights file not found: {w}")
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(w)}, **kwargs)
    return timm.create_model(name, pretrained=False, **kwargs)


@contextlib.contextmanager
def _strict_fp32() -> Any:
    """Turn TF32 off in cuDNN convolutions and CUDA matmuls for the duration (restored afterwards)."""
    import torch

    old_cudnn, old_mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old_cudnn, old_mm


@dataclass
class NetConfig:
    """How a network is built and trained (saved in the bundle)."""

    name: str
    image_size: int = 112
    epochs: int = 1
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05
    augment_factor: int = 5
    patience: int = 3
    select_on: str = "auc"
    seed: int = 0
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return dict(self.__dict__)


@dataclass
class Net:
    """A backbone plus a two-class head; ``features`` gives pooled features, ``predict_proba`` P(GIST)."""

    config: NetConfig
    model: Any  # torch.nn.Sequential(backbone, head)
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def backbone(self) -> Any:
        return self.model[0]

    def _batches(self, images: Sequence[np.ndarray], device: str) -> Any:
        import torch

        bs = max(1, self.config.batch_size * (4 if device.startswith("cuda") else 2))
        for i in range(0, len(images), bs):
            yield _to_tensor(images[i : i + bs]).to(device)

    def _run(self, images: Sequence[np.ndarray], device: str, head: bool, amp: bool | None) -> np.ndarray:
        import torch

        if len(images) == 0:
            width = 2 if head else int(self.backbone.num_features)
            return np.zeros((0, width), dtype=np.float32)
        model = self.model.to(device).eval()
        out = []
        cuda = device.startswith("cuda")
        use_amp = cuda if amp is None else (amp and cuda)
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            stack.enter_context(torch.autocast(device_type="cuda", enabled=use_amp))
            if cuda and not use_amp:
                stack.enter_context(_strict_fp32())
            for x in self._batches(images, device):
                z = model[0](x)
                if head:
                    z = torch.softmax(model[1](z).float(), dim=1)
                out.append(z.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def features(self, images: Sequence[np.ndarray], device: str = "cpu", *, amp: bool | None = None) -> np.ndarray:
        """(n, d) pooled backbone features of uint8 (S, S) windows.

        ``amp``: mixed precision (float16 autocast) on CUDA; ``None`` = on for CUDA, as deployed. ``False`` on
        CUDA runs strict float32 (TF32 off in cuDNN and matmul), so features match the CPU's to float32
        rounding. Ignored on the CPU, which always runs float32.
        """
        return self._run(images, device, head=False, amp=amp)

    def predict_proba(self, images: Sequence[np.ndarray], device: str = "cpu", *,
                      amp: bool | None = None) -> np.ndarray:
        """(n,) P(GIST) from the network's own head (end-to-end classification); ``amp`` as in ``features``."""
        return self._run(images, device, head=True, amp=amp)[:, 1]

    def state_dict(self) -> dict[str, Any]:
        """Tensors to save (safetensors needs contiguous tensors)."""
        return {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}

    @classmethod
    def build(cls, config: NetConfig, weights: str | Path | None = None) -> "Net":
        """Fresh (or locally pretrained) backbone + new linear head."""
        import torch

        seed_everything(config.seed, config.threads)
        backbone = create_backbone(config.name, image_size=config.image_size, weights=weights)
        head = torch.nn.Linear(int(backbone.num_features), 2)
        return cls(config=config, model=torch.nn.Sequential(backbone, head))

    @classmethod
    def load(cls, config: NetConfig, path: str | Path) -> "Net":
        """Rebuild from a safetensors file written by :meth:`save`.

        Raises
        ------
        DataError
            When the tensors do not fit the architecture.
        """
        from safetensors.torch import load_file

        net = cls.build(config)
        try:
            net.model.load_state_dict(load_file(str(path)))
        except (RuntimeError, KeyError) as exc:
            raise DataError(f"weights {Path(path).name} do not fit {config.name}: {exc}") from exc
        net.model.eval()
        return net

    def save(self, path: str | Path) -> None:
        """Write the weights as safetensors."""
        from safetensors.torch import save_file

        save_file(self.state_dict(), str(path), metadata={"timm_name": self.config.name})


def _to_tensor(images: Sequence[np.ndarray]) -> Any:
    import torch

    arr = np.stack([np.asarray(i, dtype=np.float32) for i in images]) / 255.0
    x = torch.from_numpy((arr - _MEAN) / _STD)[:, None]
    return x.expand(-1, 3, -1, -1).contiguous()


#: Two validation scores closer than this are a tie (AUCs of the same ranking can differ in the last bits).
SCORE_TOL = 1e-9


def improves(new: tuple[float, float], best: tuple[float, float] | None, tol: float = SCORE_TOL) -> bool:
    """Is ``new`` better than ``best``? Both ``(primary, loss)``, lower is better.

    The primary score (``-AUC``, or 0 when selecting on loss) must be lower by more than ``tol``; within
    ``tol`` it is a tie and the loss decides, again by more than ``tol``. A plain tuple ``<`` would let a
    floating-point difference of 1e-16 in the AUC override a worse loss.
    """
    if best is None:
        return True
    if new[0] < best[0] - tol:
        return True
    return abs(new[0] - best[0]) <= tol and new[1] < best[1] - tol


def _val_loss_auc(net: Net, images: Sequence[np.ndarray], y: np.ndarray, groups: np.ndarray,
                  device: str) -> tuple[float, float]:
    from sklearn.metrics import roc_auc_score

    p = net.predict_proba(images, device)
    # Lesion-level: the model is used per lesion, so early stopping looks at lesion means.
    ug, inv = np.unique(groups, return_inverse=True)
    pl = np.bincount(inv, weights=p) / np.bincount(inv)
    yl = np.bincount(inv, weights=y) / np.bincount(inv)
    eps = 1e-6
    loss = float(-np.mean(yl * np.log(pl + eps) + (1 - yl) * np.log(1 - pl + eps)))
    auc = float(roc_auc_score(yl, pl)) if len(np.unique(yl)) == 2 else float("nan")
    return loss, auc


def train_net(
    config: NetConfig,
    train_images: Sequence[np.ndarray],
    y_train: np.ndarray,
    val_images: Sequence[np.ndarray],
    y_val: np.ndarray,
    val_groups: np.ndarray,
    *,
    device: str = "cpu",
    weights: str | Path | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> Net:
    """Supervised fine-tuning with paper-002 augmentation and early stopping on the inner validation set.

    One epoch is one pass over the training set enlarged ``augment_factor`` times (each copy a random
    rotation/flip/CLAHE/log/sigmoid variant, drawn on the fly). The validation set is evaluated after
    every pass over the originals; the weights with the best lesion-level validation AUC (ties: lower
    loss; ``select_on="loss"``: lowest loss) are kept, and training stops after ``patience`` passes
    without improvement.

    Raises
    ------
    DataError
        When the training set lacks one of the classes.
    """
    import torch
    from tqdm import tqdm

    y_train = np.asarray(y_train, dtype=np.int64)
    if len(np.unique(y_train)) < 2:
        raise DataError("training images hold one class only; cannot fine-tune")
    net = Net.build(config, weights=weights)
    model = net.model.to(device)
    rng = np.random.default_rng(config.seed)
    n = len(train_images)
    factor = max(0, int(config.augment_factor))
    total = max(1, config.epochs) * n * (1 + factor)
    steps = math.ceil(total / config.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps, pct_start=0.15)
    counts = np.bincount(y_train, minlength=2).astype(np.float32)
    weight = torch.tensor(counts.sum() / (2 * np.maximum(counts, 1)), device=device)
    scaler = torch.amp.GradScaler("cuda", enabled=device.startswith("cuda"))
    order = np.concatenate([rng.permutation(n) for _ in range(max(1, config.epochs) * (1 + factor))])
    best: tuple[tuple[float, float], dict[str, Any]] | None = None
    bad = 0
    seen = 0
    bar = tqdm(total=steps, desc=desc or f"fine-tune {config.name}", file=sys.stderr,
               disable=not progress, leave=False)
    for step in range(steps):
        idx = order[step * config.batch_size : (step + 1) * config.batch_size]
        if len(idx) == 0:
            break
        model.train()
        batch = [random_augment(train_images[i], rng, factor) if factor else train_images[i] for i in idx]
        x = _to_tensor(batch).to(device)
        yt = torch.from_numpy(y_train[idx]).to(device)
        with torch.autocast(device_type="cuda", enabled=device.startswith("cuda")):
            loss = torch.nn.functional.cross_entropy(model(x).float(), yt, weight=weight)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        seen += len(idx)
        if seen >= n or step == steps - 1:
            seen = 0
            if len(val_images):
                vloss, vauc = _val_loss_auc(net, val_images, np.asarray(y_val), np.asarray(val_groups), device)
            else:
                vloss, vauc = float(loss.detach()), float("nan")
            net.history.append({"step": step + 1, "train_loss": float(loss.detach()), "val_loss": vloss, "val_auc": vauc})
            log.info("fine-tune %s step %d val_loss %.4f val_auc %.3f", config.name, step + 1, vloss, vauc)
            # Keep the weights with the best lesion-level validation AUC (ties: lower loss), or the
            # lowest loss when select_on="loss" or the AUC is undefined.
            score = (-vauc, vloss) if config.select_on == "auc" and np.isfinite(vauc) else (0.0, vloss)
            if improves(score, None if best is None else best[0]):
                best = (score, copy.deepcopy(model.state_dict()))
                bad = 0
            else:
                bad += 1
                if bad >= config.patience:
                    break
    bar.close()
    if best is not None:
        model.load_state_dict(best[1])
    model.eval()
    return net

