"""GPU check of the deep-feature stage (issue 21, item 4): batched features on CUDA in float32 and mixed precision,
the study's SR probability from them against the CPU's, and the stage table.

The lent GPU machine has PyTorch, timm, numpy, scipy and scikit-image but none of pydicom, pyradiomics, SimpleITK
or XGBoost, and reaches no package registry. So the check runs in three steps, and only the network part moves:

1. ``prepare`` (here, CPU): makes a phantom cohort, trains a small bundle, builds a new 10-image study (no SEG, so
   the automatic ROI runs), runs the whole study through ``Bundle.predict`` on the CPU with every stage timed, and
   keeps what the network sees (the lesion windows), the radiomics matrix and the CPU's features and probabilities
   in ``--work`` (default ``bench/gpu-in``, ignored by git, carried to the device).
2. ``device`` (the GPU machine): loads the bundle's backbone from the carried safetensors and computes the features
   of the same windows on CUDA in strict float32 (TF32 off) and with float16 autocast, batched, with CUDA-event
   timings (median of repeats after warm-up), plus a large batch for throughput; writes ``$OUT/gpu_features.npz``
   and ``$OUT/gpu_timings.json``.
3. ``compare`` (here): feeds the GPU features into the same bundle's classifiers and aggregation, and prints the
   table: per-image and study |dp| against the CPU, labels, and the stage table with the deep stage on each device.

Phantom data: the numbers say how the software behaves on a GPU, nothing about patients.

Usage::

    .venv/bin/python bench/gpu_check.py prepare
    # device:  python3 bench/gpu_check.py device --work bench/gpu-in --out "$OUT"
    .venv/bin/python bench/gpu_check.py compare --gpu-dir /path/to/fetched/out
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_WORK = ROOT / "bench" / "gpu-in"


def _prepare(work: Path, n_images: int, patients: int) -> None:
    import pydicom

    from bench.pipeline import make_study
    from models.bundle import Frame, load_bundle
    from models.dicom_io import mm_per_pixel_from_dataset
    from phantom import generate_cohort
    from models.training import TrainConfig, train
    from worker.frames import decode_frames

    work.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="gpu-prepare-"))
    t = time.perf_counter()
    manifest = generate_cohort(tmp / "cohort", patients, 11)
    config = TrainConfig.fast(seed=0, device="cpu", image_size=112, cv_splits=2, jobs=1, progress=False)
    bundle_dir = train(manifest, tmp / "bundles", config=config).bundle_dir
    print(f"prepared cohort ({patients} patients) and bundle in {time.perf_counter() - t:.0f} s", flush=True)
    bundle = load_bundle(bundle_dir)
    bundle.warm_up("cpu")
    study_uid = make_study(tmp / "cohort", tmp / "study", n_images)

    stages: dict[str, float] = {}
    t = time.perf_counter()
    frames = []
    for path in sorted((tmp / "study" / study_uid).glob("*.dcm")):
        ds = pydicom.dcmread(path)
        (px,) = decode_frames(ds, [0])
        frames.append(Frame(pixels=px, key=str(ds.SOPInstanceUID), mm_per_pixel=mm_per_pixel_from_dataset(ds)))
    stages["decode"] = time.perf_counter() - t

    # Spy on what the classifier and the network are given (bench only: the product never does this).
    seen: dict[str, Any] = {}
    net_features = bundle._net.features
    probabilities = bundle._probabilities

    def spy_features(windows: Any, device: str = "cpu", **kw: Any) -> np.ndarray:
        seen["windows"] = np.stack(windows)
        t0 = time.perf_counter()
        out = net_features(windows, device, **kw)
        seen["deep_s"] = time.perf_counter() - t0
        return out

    def spy_probabilities(key: str, Xr: np.ndarray, Xd: np.ndarray, windows: Any, device: str) -> np.ndarray:
        seen.setdefault("Xr", Xr)
        seen.setdefault("Xd", Xd)
        seen.setdefault("key", key)
        return probabilities(key, Xr, Xd, windows, device)

    bundle._net.features = spy_features  # type: ignore[method-assign]
    bundle._probabilities = spy_probabilities  # type: ignore[method-assign]
    t = time.perf_counter()
    results = bundle.predict(frames, device="cpu")
    stages["predict (total)"] = time.perf_counter() - t
    for stage in ("preprocess", "roi", "radiomics", "classify"):
        stages[f"  {stage}"] = sum(float(r.timings.get(stage, 0.0)) for r in results)
    stages["  deep"] = float(seen["deep_s"])
    p_images = np.array([r.probability for r in results])
    p_study = bundle.lesion_probability(results)

    shutil.copy(bundle.root / "backbone.safetensors", work / "backbone.safetensors")
    (work / "backbone.json").write_text(json.dumps(bundle.config["backbone"], indent=2))
    np.savez_compressed(work / "inputs.npz", windows=seen["windows"], Xr=seen["Xr"], Xd_cpu=seen["Xd"],
                        p_images_cpu=p_images)
    (work / "reference.json").write_text(json.dumps({
        "bundle_dir": str(bundle_dir), "bundle_version": bundle.version, "model": seen["key"],
        "threshold": bundle.threshold, "p_study_cpu": p_study, "label_cpu": bundle.label_for(p_study),
        "images": n_images, "analysed": len(results), "cpu_stages_s": stages,
        "cpu": f"{os.cpu_count()} cores here, load {os.getloadavg()[0]:.1f}",
    }, indent=2))
    print(json.dumps({"p_study_cpu": p_study, "analysed": len(results), "stages": stages}, indent=2))


def _device(work: Path, out: Path, repeats: int) -> None:
    import torch

    from models.deep_features import Net, NetConfig

    out.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device")
    cfg = NetConfig(**json.loads((work / "backbone.json").read_text()))
    net = Net.load(cfg, work / "backbone.safetensors")
    data = np.load(work / "inputs.npz")
    windows = list(data["windows"])
    timings: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                               "images": len(windows)}

    def timed(amp: bool | None, images: list[np.ndarray]) -> tuple[np.ndarray, float]:
        net.features(images, "cuda", amp=amp)  # warm-up: kernels, cuDNN plans, allocator
        torch.cuda.synchronize()
        times = []
        result = None
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = net.features(images, "cuda", amp=amp)  # includes host->device copy and back
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        return result, statistics.median(times)

    t = time.perf_counter()
    cpu_there = net.features(windows, "cpu")
    timings["cpu_there_s"] = time.perf_counter() - t
    fp32, timings["fp32_s"] = timed(False, windows)
    amp, timings["amp_s"] = timed(True, windows)
    big = windows * max(1, 1024 // len(windows))
    _, timings["fp32_big_s"] = timed(False, big)
    _, timings["amp_big_s"] = timed(True, big)
    timings["big_images"] = len(big)
    rel = float(np.linalg.norm(fp32 - cpu_there) / np.linalg.norm(cpu_there))
    timings["fp32_vs_cpu_there_rel"] = rel
    np.savez_compressed(out / "gpu_features.npz", fp32=fp32, amp=amp, cpu_there=cpu_there)
    (out / "gpu_timings.json").write_text(json.dumps(timings, indent=2))
    print(json.dumps(timings, indent=2))


def _compare(work: Path, gpu_dir: Path) -> None:
    from models.bundle import ImageResult, load_bundle

    ref = json.loads((work / "reference.json").read_text())
    timings = json.loads((gpu_dir / "gpu_timings.json").read_text())
    data = np.load(work / "inputs.npz")
    gpu = np.load(gpu_dir / "gpu_features.npz")
    bundle = load_bundle(ref["bundle_dir"])
    windows = list(data["windows"])
    rows = []
    for name, Xd in (("cpu (here)", data["Xd_cpu"]), ("cuda fp32", gpu["fp32"]), ("cuda amp fp16", gpu["amp"])):
        p = bundle._probabilities(ref["model"], data["Xr"], Xd.astype(np.float64), windows, "cpu")
        results = [ImageResult(key=str(i), probability=float(v), label="", roi_polygon=[], roi_source="",
                               roi_confidence=0.0, timings={}) for i, v in enumerate(p)]
        study = bundle.lesion_probability(results)
        rows.append((name, float(np.max(np.abs(p - data["p_images_cpu"]))), study,
                     abs(study - ref["p_study_cpu"]), bundle.label_for(study)))
    print(f"\nGPU {timings['gpu']} (torch {timings['torch']}); bundle {ref['bundle_version']}, model {ref['model']}; "
          f"synthetic phantom data")
    print(f"{'features':<16}{'max |dp| image':>16}{'P(GIST) study':>15}{'|dp| study':>12}  label")
    for name, dpi, study, dps, label in rows:
        print(f"{name:<16}{dpi:>16.2e}{study:>15.6f}{dps:>12.2e}  {label}")
    n = timings["images"]
    print(f"\nstage table, {ref['analysed']} of {n} images analysed (CPU stages: {ref['cpu']})")
    cpu = ref["cpu_stages_s"]
    for k, v in cpu.items():
        print(f"  {k:<22}{v * 1000:>10.1f} ms")
    print(f"  deep on cuda fp32     {timings['fp32_s'] * 1000:>10.1f} ms   (amp {timings['amp_s'] * 1000:.1f} ms; "
          f"ratio to CPU here {cpu['  deep'] / timings['fp32_s']:.1f}x)")
    print(f"  batch of {timings['big_images']}: fp32 {timings['big_images'] / timings['fp32_big_s']:.0f} img/s, "
          f"amp {timings['big_images'] / timings['amp_big_s']:.0f} img/s")
    est = sum(v for k, v in cpu.items() if not k.startswith("  ")) - cpu["  deep"] + timings["fp32_s"]
    print(f"  study-to-result with the deep stage on the GPU (CPU stages as measured here): {est:.2f} s")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK)
    p.add_argument("--images", type=int, default=10)
    p.add_argument("--patients", type=int, default=16)
    d = sub.add_parser("device")
    d.add_argument("--work", type=Path, default=DEFAULT_WORK)
    d.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out")))
    d.add_argument("--repeats", type=int, default=20)
    c = sub.add_parser("compare")
    c.add_argument("--work", type=Path, default=DEFAULT_WORK)
    c.add_argument("--gpu-dir", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.cmd == "prepare":
        _prepare(args.work, args.images, args.patients)
    elif args.cmd == "device":
        _device(args.work, args.out, args.repeats)
    else:
        _compare(args.work, args.gpu_dir)


if __name__ == "__main__":
    main()
