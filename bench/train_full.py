"""The acceptance run of issue 5: 300 phantom patients, default settings, external validation, resume.

Usage::

    .venv/bin/python bench/train_full.py --work /tmp/eusdx-train-bench [--patients 300] [--seed 2]
        [--external-seed 3] [--external-patients 60] [-- extra eusdx train options]

Writes the cohorts (once), runs ``eusdx train`` with a fresh cache, then again on the same cache
(resume), and prints wall times, the load average during each run, and test/external AUC for every
classifier x modality from the bundle's metrics.json. Asserts nothing; results are phantom-only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _cohort(path: Path, patients: int, seed: int, centre: str) -> Path:
    manifest = path / "manifest.csv"
    if not manifest.is_file():
        from phantom import generate_cohort

        generate_cohort(path, patients, seed, centre=centre, progress=True)
    return manifest


def _run(cmd: list[str], log: Path) -> tuple[float, float]:
    t = time.perf_counter()
    with log.open("w") as fh:
        subprocess.run(cmd, check=True, stdout=fh, stderr=subprocess.STDOUT)
    return time.perf_counter() - t, os.getloadavg()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--patients", type=int, default=300)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--external-patients", type=int, default=60)
    ap.add_argument("--external-seed", type=int, default=3)
    ap.add_argument("extra", nargs="*")
    args = ap.parse_args()
    work = args.work
    internal = _cohort(work / f"internal-{args.patients}-s{args.seed}", args.patients, args.seed, "internal")
    external = _cohort(work / f"external-{args.external_patients}-s{args.external_seed}", args.external_patients,
                       args.external_seed, "ext")
    out = work / "bundles"
    shutil.rmtree(out, ignore_errors=True)
    eusdx = str(Path(sys.executable).with_name("eusdx"))
    cmd = [eusdx, "train", "--manifest", str(internal), "--external", str(external), "--out", str(out),
           "--seed", str(args.seed), *args.extra]
    t_fresh, load_fresh = _run(cmd, work / "train-fresh.log")
    metrics = json.loads((out / "current" / "metrics.json").read_text())
    t_resume, load_resume = _run(cmd, work / "train-resume.log")
    resumed = json.loads((out / "current" / "metrics.json").read_text())
    print(f"fresh run : {t_fresh:7.1f} s (5-min load average after it {load_fresh:.1f})")
    print(f"resume    : {t_resume:7.1f} s (load {load_resume:.1f}); backbone from cache: {resumed['backbone_from_cache']}")
    print("stage timings (fresh):", {k: round(v, 1) for k, v in metrics["timings_s"].items()})
    print("counts:", metrics["n"])
    print("automatic ROI Dice vs SEG:", metrics["roi_auto_dice"])
    print(f"{'model':28s} {'test AUC':>8s} {'ext AUC':>8s} {'train OOF':>9s}")
    for key in sorted(metrics["auc"]["test"]):
        row = [metrics["auc"].get(sp, {}).get(key) for sp in ("test", "external", "train")]
        print(f"{key:28s} " + " ".join(f"{v:8.3f}" if v is not None else "       -" for v in row))


if __name__ == "__main__":
    main()
