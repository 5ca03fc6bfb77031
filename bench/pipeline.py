"""Benchmark of the worker pipeline: per-stage time for a 10-image phantom study, and end-to-end latency.

Usage::

    .venv/bin/python bench/pipeline.py --bundle var/bundles/current [--images 10] [--repeat 3] [--runs 5]

Part 1 runs the stages in this process on CPU (decode, sector check, preprocess+ROI, radiomics, deep
features, classify, SR build, export hand-off) ``--repeat`` times and prints the median of each, plus
images/s. Part 2 is the deployment default end to end: DCMTK ``storescu`` sends a new 10-image study to
the node (embedded queue + worker in the same process), the SR goes to a DCMTK ``storescp`` acting as
PACS; latency = SR file written at the PACS - last C-STORE done - quiet period. The peer for Part 2 is
``storescu`` sending the same study straight to ``storescp`` (the network/transfer floor).

Phantom data: these timings say how fast the software is, nothing about clinical performance.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo.peers import free_port  # noqa: E402

SR_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.22"}
_PROPOSE = {"1.2.840.10008.1.2.4.50": "-xy", "1.2.840.10008.1.2.5": "-xr", "1.2.840.10008.1.2.4.70": "-xs",
            "1.2.840.10008.1.2.4.80": "-xt", "1.2.840.10008.1.2.4.90": "-xv", "1.2.840.10008.1.2.4.91": "-xw"}


def make_study(cohort: Path, out: Path, n_images: int) -> str:
    """A new study of ``n_images`` single-frame phantom images (new UIDs, no SEG: automatic ROI)."""
    stills = []
    for path in sorted((cohort / "studies").glob("*/*.dcm")):
        ds = pydicom.dcmread(path)
        if ds.SOPClassUID == pydicom.uid.UltrasoundImageStorage:
            stills.append(ds)
        if len(stills) >= n_images:
            break
    if not stills:
        raise SystemExit("the phantom cohort has no still images")
    study_uid, series_uid = generate_uid(), generate_uid()
    folder = out / study_uid
    folder.mkdir(parents=True)
    for i in range(n_images):
        ds = copy.deepcopy(stills[i % len(stills)])
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.PatientID, ds.PatientName = "BENCH0001", "Bench^Phantom"
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return study_uid


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def bench_stages(bundle_path: Path, cohort: Path, work: Path, n_images: int, repeat: int, *,
                 device: str = "cpu", processes: int | None = None, bundle: Any = None,
                 all_radiomics: bool = False) -> dict[str, Any]:
    """Part 1: median seconds per stage over ``repeat`` runs of one study on ``device``, the
    frames analysed on ``processes`` worker processes (None: the bundle's default, every core)."""
    from dicom_node.export import submit
    from eusdx.config import load_settings
    from models.bundle import Frame, load_bundle
    from models.dicom_io import mm_per_pixel_from_dataset
    from worker.frames import decode_frames, sample_indices
    from worker.model_cache import warm_up
    from worker.sr.builder import AlgorithmInfo, AnalysedImage, StudyResult, build_report

    t = time.perf_counter()
    if bundle is None:
        bundle = load_bundle(bundle_path)
    load_s = time.perf_counter() - t
    if processes is not None:
        bundle.use_processes(processes, all_radiomics=all_radiomics)
    warm_s = warm_up(bundle, device)
    spool = work / f"stage-spool-{device}-{processes}"
    study_uid = make_study(cohort, spool, n_images)
    settings = load_settings(spool_dir=spool, outbox_dir=work / f"stage-outbox-{device}-{processes}",
                             queue_dir=work / "q")
    stages: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        stages.setdefault(name, []).append(seconds)

    for run in range(repeat):
        t = time.perf_counter()
        decoded = []
        for path in sorted((spool / study_uid).glob("*.dcm")):
            ds = pydicom.dcmread(path)
            n = int(ds.get("NumberOfFrames", 1) or 1)
            idx = sample_indices(n, settings.cine_max_frames) if "NumberOfFrames" in ds else [0]
            for i, px in zip(idx, decode_frames(ds, idx)):
                decoded.append((ds, i, px))
        add("decode", time.perf_counter() - t)
        t = time.perf_counter()
        kept = [d for d in decoded if bundle.has_sector(d[2])]
        add("sector check", time.perf_counter() - t)
        frames = [Frame(pixels=px, key=f"{ds.SOPInstanceUID}#{i + 1}", mm_per_pixel=mm_per_pixel_from_dataset(ds))
                  for ds, i, px in kept]
        t = time.perf_counter()
        results = bundle.predict(frames, device=device)
        add("predict (total)", time.perf_counter() - t)
        for stage in ("preprocess", "roi", "radiomics", "deep", "classify"):
            add(f"  {stage}", sum(float(r.timings.get(stage, 0.0)) for r in results))
        by_key = {f.key: d for f, d in zip(frames, kept)}
        t = time.perf_counter()
        p = bundle.lesion_probability(results)
        images = [AnalysedImage(by_key[r.key][0], r) for r in results]
        sr = build_report(StudyResult(study_uid, images, p, bundle.label_for(p), AlgorithmInfo.from_bundle(bundle)))
        add("SR build", time.perf_counter() - t)
        t = time.perf_counter()
        if run > 0:  # the outbox deduplicates by SOP UID: give later runs their own
            sr.SOPInstanceUID = generate_uid()
        submit(settings, sr, study_uid)
        add("export hand-off", time.perf_counter() - t)
    medians = {k: _median(v) for k, v in stages.items()}
    total = sum(v for k, v in medians.items() if not k.startswith("  "))
    return {"bundle": bundle.model_name, "version": bundle.version, "load_s": load_s, "warm_s": warm_s,
            "device": device, "processes": processes,
            "images": n_images, "analysed": len(results), "stages": medians, "total": total,
            "images_per_s": n_images / total if total else float("nan")}


def _storescu(port: int, aet: str, folder: Path) -> None:
    groups: dict[str, list[str]] = {}
    for f in sorted(folder.glob("*.dcm")):
        ts = str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        groups.setdefault(ts, []).append(str(f))
    for ts, files in groups.items():
        option = [_PROPOSE[ts]] if ts in _PROPOSE else []
        subprocess.run(["/usr/bin/storescu", "-aec", aet, "-R", *option, "127.0.0.1", str(port), *files],
                       check=True, capture_output=True, timeout=120)


def _wait_sr(folder: Path, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in folder.iterdir():
            try:
                if str(pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID) in SR_CLASSES:
                    return time.monotonic()
            except Exception:
                continue  # still being written
        time.sleep(0.02)
    raise SystemExit("no SR arrived at the PACS in time")


@contextlib.contextmanager
def deployment(bundle_path: Path, work: Path, quiet: float) -> Iterator[tuple[Any, Path]]:
    """The deployment default, started: a DCMTK ``storescp`` PACS, the node and the embedded queue +
    worker with the bundle warm; yields (settings, PACS folder). Shared by Part 2 and bench/curves.py."""
    from audit import AuditLog
    from dicom_node.app import Node
    from eusdx.config import load_settings
    from eusdx.durable import sha256_file
    from worker.embedded import start_embedded

    pacs_dir = work / "pacs"
    pacs_dir.mkdir()
    pacs_port = free_port()
    pacs = subprocess.Popen(["/usr/bin/storescp", "-aet", "PACS", "-od", str(pacs_dir), "+xa", str(pacs_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    settings = load_settings(
        dicom_host="127.0.0.1", dicom_port=free_port(), spool_dir=work / "var" / "spool",
        queue_dir=work / "var" / "queue", outbox_dir=work / "var" / "outbox",
        database_url=f"sqlite:///{work / 'var' / 'audit.db'}", bundle=bundle_path, device="cpu",
        # the caller named this bundle, so its manifest digest is pinned (models.signing), and the
        # audit gets its own key (the built-in one is refused outside dev_mode)
        bundle_sha256=sha256_file(Path(bundle_path) / "manifest.json"),
        audit_hmac_secret=secrets.token_hex(32),
        study_quiet_seconds=quiet, export_destinations=[f"PACS@127.0.0.1:{pacs_port}"],
        log_level="WARNING",
    )
    audit = AuditLog.from_settings(settings)
    audit.ensure_schema()
    service = start_embedded(settings)
    service.runtime.bundle()  # loaded and warm before the first study, as after start-up
    node = Node(settings, audit, service.enqueuer)
    node.start()
    try:
        yield settings, pacs_dir
    finally:
        node.stop()
        service.stop()
        audit.close()
        pacs.terminate()
        pacs.wait(10)


def bench_end_to_end(bundle_path: Path, cohort: Path, work: Path, n_images: int, runs: int,
                     quiet: float) -> dict[str, Any]:
    """Part 2: latency from the last C-STORE to the SR at the PACS, minus the quiet period."""
    latencies, peers = [], []
    with deployment(bundle_path, work, quiet) as (settings, pacs_dir):
        for run in range(runs):
            sent = work / f"e2e-{run}"
            study_uid = make_study(cohort, sent, n_images)
            # peer: the same files straight to the PACS (transfer floor), into a separate folder
            peer_dir = work / f"peer-{run}"
            peer_dir.mkdir()
            peer_port = free_port()
            peer = subprocess.Popen(["/usr/bin/storescp", "-od", str(peer_dir), "+xa", str(peer_port)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)
            t = time.monotonic()
            _storescu(peer_port, "ANY-SCP", sent / study_uid)
            peers.append(time.monotonic() - t)
            peer.terminate()
            peer.wait(10)
            for old in pacs_dir.iterdir():
                old.unlink()
            _storescu(settings.dicom_port, settings.ae_title, sent / study_uid)
            last_store = time.monotonic()
            arrived = _wait_sr(pacs_dir, 600)
            latencies.append(arrived - last_store - quiet)
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"runs": runs, "latencies": latencies, "median": _median(latencies), "p95": p95,
            "peer_median": _median(peers), "quiet": quiet}


def _print_stages(stages: dict[str, Any], title: str) -> None:
    print(f"# {title}")
    print(f"bundle {stages['version']}: {stages['bundle']} (warm-up {stages['warm_s']:.2f}s, "
          f"analysed {stages['analysed']} images)")
    print(f"{'stage':<22}{'seconds':>10}{'share':>8}")
    for name, value in stages["stages"].items():
        print(f"{name:<22}{value:>10.3f}{value / stages['total']:>8.0%}")
    print(f"{'total':<22}{stages['total']:>10.3f}")


def compare(args: argparse.Namespace) -> int:
    """Before/after in one run: processes=1 and processes=0 alternate, each ``--repeat`` times."""
    import os

    from models.bundle import load_bundle
    from phantom import generate_cohort

    print(f"load average at start {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="eusdx-bench-") as tmp:
        work = Path(tmp)
        generate_cohort(work / "cohort", 4, 5)
        bundle = load_bundle(args.bundle)
        runs: dict[int, list[dict[str, Any]]] = {1: [], 0: []}
        for rep in range(args.repeat):
            for processes in (1, 0):
                runs[processes].append(bench_stages(args.bundle, work / "cohort", work / f"r{rep}", args.images,
                                                    1, processes=processes, bundle=bundle,
                                                    all_radiomics=processes == 1))
        bundle.close()
    result = {}
    for processes, label in ((1, "before: frames one after another in the worker process, every radiomics "
                                 "feature"),
                             (0, "after: frames on the pool (one process per core), only the radiomics "
                                 "features the model uses")):
        rs = runs[processes]
        merged = dict(rs[0])
        merged["stages"] = {k: _median([r["stages"][k] for r in rs]) for k in rs[0]["stages"]}
        merged["total"] = _median([r["total"] for r in rs])
        result[processes] = merged
        _print_stages(merged, f"{label}; {args.images}-image study, CPU, median of {args.repeat}")
        print()
    print(f"predict: {result[1]['stages']['predict (total)']:.3f}s -> {result[0]['stages']['predict (total)']:.3f}s "
          f"({result[1]['stages']['predict (total)'] / result[0]['stages']['predict (total)']:.2f}x); "
          f"total {result[1]['total']:.3f}s -> {result[0]['total']:.3f}s "
          f"({result[1]['total'] / result[0]['total']:.2f}x); load average at end {os.getloadavg()[0]:.1f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="trained bundle (version dir or current)")
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="Part 1 repetitions")
    parser.add_argument("--runs", type=int, default=5, help="Part 2 end-to-end runs (0 = skip)")
    parser.add_argument("--quiet", type=float, default=2.0, help="study quiet period for Part 2, s")
    parser.add_argument("--compare", action="store_true",
                        help="Part 1 twice in the same run, interleaved: as before issue 21 (frames one after "
                             "another in this process, every radiomics feature) and after (frame pool on "
                             "every core, only the features the model uses)")
    args = parser.parse_args(argv)
    if args.compare:
        return compare(args)
    from phantom import generate_cohort

    with tempfile.TemporaryDirectory(prefix="eusdx-bench-") as tmp:
        work = Path(tmp)
        generate_cohort(work / "cohort", 4, 5)
        stages = bench_stages(args.bundle, work / "cohort", work, args.images, args.repeat)
        print(f"# pipeline stages, {stages['images']}-image phantom study, CPU, median of {args.repeat}")
        print(f"bundle {stages['version']}: {stages['bundle']} (load {stages['load_s']:.2f}s, "
              f"warm-up {stages['warm_s']:.2f}s, analysed {stages['analysed']} images)")
        print(f"{'stage':<22}{'seconds':>10}{'share':>8}")
        for name, value in stages["stages"].items():
            print(f"{name:<22}{value:>10.3f}{value / stages['total']:>8.0%}")
        print(f"{'total':<22}{stages['total']:>10.3f}")
        print(f"throughput: {stages['images_per_s']:.2f} images/s")
        top = max((k for k in stages["stages"] if k.startswith("  ")), key=lambda k: stages["stages"][k])
        print(f"dominant model stage: {top.strip()}")
        if args.runs > 0:
            e2e = bench_end_to_end(args.bundle, work / "cohort", work, args.images, args.runs, args.quiet)
            print(f"\n# end to end, last C-STORE -> SR at PACS minus quiet period ({e2e['quiet']:g}s), "
                  f"{e2e['runs']} runs")
            print("latencies: " + ", ".join(f"{v:.2f}" for v in e2e["latencies"]))
            print(f"median {e2e['median']:.2f}s, p95 {e2e['p95']:.2f}s (goal < 10 s); "
                  f"peer storescu->storescp of the same study: {e2e['peer_median']:.2f}s "
                  f"(ratio {e2e['median'] / e2e['peer_median']:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
