"""Per-image feature cost on this machine: preprocessing + ROI, radiomics, and each timm backbone.

Usage: ``.venv/bin/python bench/features.py [--images 24] [--threads 2] [--sizes 112,224]``

Images are phantom renderings (phantom, in memory). Backbones are freshly initialised (the
weights do not change the cost) and run in inference mode in batches of 16. Every row is compared with
a peer measured in the same run: radiomics and deep rows against ``resnet34`` at the same input size,
preprocessing against radiomics. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np


def _frames(n: int) -> list[tuple[np.ndarray, np.ndarray, float]]:
    from phantom import render_image, sample_lesion

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        spec = sample_lesion(rng, "GIST" if i % 2 else "leiomyoma", 0.4)
        im = render_image(rng, spec, view=i % 4)
        out.append((im.pixels, im.mask, im.mm_per_pixel))
    return out


def _time(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    best = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best.append(time.perf_counter() - t)
    return min(best)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="112,224")
    ap.add_argument("--backbones", default="deit_tiny_patch16_224,vit_small_patch16_224,resnet34,resnet50")
    args = ap.parse_args()

    import torch

    from models.deep_features import Net, NetConfig
    from models.preprocess import lesion_window, mask_to_work, preprocess
    from models.radiomics_features import RadiomicsExtractor
    from models.roi import auto_roi, roi_from_mask

    torch.set_num_threads(args.threads)
    frames = _frames(args.images)
    n = len(frames)

    pres: list[tuple[Any, Any]] = []

    def prep() -> None:
        pres.clear()
        for px, m, mpp in frames:
            pre = preprocess(px, mm_per_pixel=mpp)
            pres.append((pre, roi_from_mask(mask_to_work(m, pre))))

    rows: list[tuple[str, int, float, str]] = []
    t_prep = _time(prep, 1) / n
    t_auto = _time(lambda: [auto_roi(p) for p, _ in pres], 1) / n
    ex = RadiomicsExtractor()
    ex.extract(pres[0][0].image, pres[0][1].mask, spacing=pres[0][0].mm_per_pixel or 1.0)  # warm-up (imports)
    per = []
    for pre, roi in pres:
        t = time.perf_counter()
        ex.extract(pre.image, roi.mask, spacing=pre.mm_per_pixel or 1.0)
        per.append(time.perf_counter() - t)
    t_rad = statistics.median(per)
    n_feats = len(ex.extract(pres[0][0].image, pres[0][1].mask, spacing=pres[0][0].mm_per_pixel or 1.0))

    deep: dict[tuple[str, int], float] = {}
    for size in [int(s) for s in args.sizes.split(",")]:
        windows = [lesion_window(p.image, r.mask, size, mm_per_pixel=p.mm_per_pixel) for p, r in pres]
        for name in args.backbones.split(","):
            net = Net.build(NetConfig(name=name, image_size=size, batch_size=8, threads=args.threads))
            net.features(windows[:4])  # warm-up
            deep[(name, size)] = _time(lambda: net.features(windows), 2) / n

    for (name, size), t in deep.items():
        peer = deep.get(("resnet34", size))
        rows.append((f"deep {name}", size, t, f"{t / peer:.2f}x resnet34@{size}" if peer else "-"))
    for size in sorted({s for _, s in deep}):
        peer = deep.get(("resnet34", size))
        if peer:
            rows.append((f"radiomics ({n_feats} features)", size, t_rad, f"{t_rad / peer:.2f}x resnet34@{size}"))
    rows.insert(0, ("preprocess + SEG ROI", 256, t_prep, f"{t_prep / t_rad:.2f}x radiomics"))
    rows.insert(1, ("automatic ROI", 256, t_auto, f"{t_auto / t_rad:.2f}x radiomics"))

    print(f"{n} phantom images, torch threads {args.threads}, CPU, inference (no training)")
    print(f"{'stage':44s} {'input':>5s} {'ms/image':>9s}  ratio")
    for name, size, t, ratio in rows:
        print(f"{name:44s} {size:5d} {1000 * t:9.1f}  {ratio}")


if __name__ == "__main__":
    main()
