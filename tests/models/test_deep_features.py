"""timm backbones: local weights only, fine-tuning, features, safetensors round trip, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eusdx.errors import UsageError
from models.deep_features import Net, NetConfig, create_backbone, resolve_device, train_net


def _images(n: int, size: int = 32, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    imgs = []
    for label in y:
        im = rng.integers(0, 80, size=(size, size)).astype(np.uint8)
        r = 10 if label else 4  # "GIST" blobs are bigger
        yy, xx = np.mgrid[:size, :size]
        im[np.hypot(yy - size / 2, xx - size / 2) < r] = 200
        imgs.append(im)
    return imgs, y


def test_unknown_model_and_missing_weights_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown timm model"):
        create_backbone("no_such_net", image_size=32)
    with pytest.raises(UsageError, match="weights file not found"):
        create_backbone("resnet10t", image_size=32, weights=tmp_path / "none.safetensors")
    with pytest.raises(UsageError, match="unknown device"):
        resolve_device("tpu")


def test_local_pretrained_file_is_loaded_without_download(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    src = create_backbone("resnet10t", image_size=32)
    with torch.no_grad():
        for p in src.parameters():
            p.fill_(0.0125)
    path = tmp_path / "pretrained.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    loaded = create_backbone("resnet10t", image_size=32, weights=path)
    for a, b in zip(src.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


def test_fine_tune_features_and_round_trip(tmp_path: Path) -> None:
    imgs, y = _images(24)
    cfg = NetConfig(name="deit_tiny_patch16_224", image_size=32, epochs=1, batch_size=8, augment_factor=1, seed=3,
                    threads=1)
    net = train_net(cfg, imgs[:16], y[:16], imgs[16:], y[16:], np.arange(16, 24), progress=False)
    assert net.history and {"val_loss", "val_auc"} <= set(net.history[0])
    f = net.features(imgs)
    assert f.shape == (24, 192) and np.isfinite(f).all()
    p = net.predict_proba(imgs)
    assert p.shape == (24,) and ((p >= 0) & (p <= 1)).all()
    net.save(tmp_path / "w.safetensors")
    again = Net.load(cfg, tmp_path / "w.safetensors")
    assert np.allclose(again.features(imgs), f, atol=1e-5)
    # Deterministic on CPU: the same seed trains the same weights.
    net2 = train_net(cfg, imgs[:16], y[:16], imgs[16:], y[16:], np.arange(16, 24), progress=False)
    assert np.allclose(net2.features(imgs), f, atol=1e-5)


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    from eusdx.errors import DataError

    a = Net.build(NetConfig(name="resnet10t", image_size=32))
    a.save(tmp_path / "r.safetensors")
    with pytest.raises(DataError, match="do not fit"):
        Net.load(NetConfig(name="deit_tiny_patch16_224", image_size=32), tmp_path / "r.safetensors")


def test_early_stopping_treats_float_ties_as_ties() -> None:
    from models.deep_features import improves

    auc = 0.1 + 0.2  # 0.30000000000000004: the same ranking can give AUCs that differ in the last bits
    best = (-0.3, 0.50)
    assert not improves((-auc, 0.60), best)  # equal AUC, worse loss: not better
    assert not improves((-0.3 - 1e-15, 0.60), best)
    assert improves((-auc, 0.40), best)  # equal AUC, lower loss: better
    assert improves((-0.31, 0.90), best)  # clearly higher AUC wins whatever the loss
    assert not improves((-0.29, 0.10), best)
    assert not improves((0.0, 0.5), (0.0, 0.5))
    assert improves((0.0, 0.4), None)
