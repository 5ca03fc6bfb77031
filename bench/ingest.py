"""Ingest benchmark: how fast do receivers take C-STOREs from DCMTK storescu? (not a test)

Data (synthetic, written once to a temp folder): ``--frames`` single-frame RGB ultrasound
images of 640x480 (0.92 MB each, Explicit VR Little Endian, one study) and one ``--cine``-frame
Ultrasound Multi-frame cine of the same frame size. Each is sent over ONE association by
``/usr/bin/storescu`` (environment ``TCP_NODELAY=1``: DCMTK >= 3.6.2 keeps Nagle on unless
told) to, in the same run, interleaved:

a. ``/usr/bin/storescp``            DCMTK, writes files, no fsync, no audit
b. ``python -m pynetdicom storescp`` pynetdicom's stock app, default options (16 KB PDU)
c. ``eusdx serve --no-worker``       full durability: temp file + fsync + rename + dir fsync,
                                     header parse, SHA-256, SQLite audit row (synchronous=FULL)

Each cell is the median wall time of ``storescu`` over ``--repeat`` runs (fresh output folders).
Usage: ``python bench/ingest.py [--frames 200] [--cine 100] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from eusdx.demo.peers import free_port, wait_listening

ROWS, COLS = 480, 640
US = "1.2.840.10008.5.1.4.1.1.6.1"
US_MF = "1.2.840.10008.5.1.4.1.1.3.1"
STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"


def _image(study: str, series: str, frames: int, pixels: bytes) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = US_MF if frames > 1 else US
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Modality, ds.BodyPartExamined, ds.SeriesDescription = "US", "STOMACH", "EUS bench"
    ds.PatientID, ds.PatientName = "BENCH", "Bench^Phantom"
    ds.Rows, ds.Columns = ROWS, COLS
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.FrameTime = 33.3
    ds.PixelData = pixels
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def make_data(root: Path, frames: int, cine: int) -> tuple[list[Path], Path]:
    rng = np.random.default_rng(7)
    study, series = generate_uid(), generate_uid()
    frame_bytes = ROWS * COLS * 3
    files = []
    (root / "frames").mkdir(parents=True)
    for i in range(frames):
        px = rng.integers(0, 256, frame_bytes, dtype=np.uint8).tobytes()
        path = root / "frames" / f"f{i:04d}.dcm"
        _image(study, series, 1, px).save_as(path, enforce_file_format=True)
        files.append(path)
    px = rng.integers(0, 256, frame_bytes * cine, dtype=np.uint8).tobytes()
    cine_path = root / "cine.dcm"
    _image(study, generate_uid(), cine, px).save_as(cine_path, enforce_file_format=True)
    return files, cine_path


class Receiver:
    def __init__(self, name: str, start: Callable[[Path, int], subprocess.Popen[bytes]],
                 aet: str) -> None:
        self.name, self._start, self.aet = name, start, aet

    def run(self, work: Path, files: list[Path]) -> float:
        """Start fresh, send ``files`` in one association, return storescu's wall time."""
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        port = free_port()
        proc = self._start(work, port)
        try:
            wait_listening(port, timeout=90.0)
            env = dict(os.environ, TCP_NODELAY="1")
            t0 = time.perf_counter()
            out = subprocess.run([STORESCU, "-aec", self.aet, "127.0.0.1", str(port),
                                  *map(str, files)], env=env, capture_output=True, text=True)
            elapsed = time.perf_counter() - t0
            if out.returncode != 0:
                raise RuntimeError(f"{self.name}: storescu failed: {out.stderr[-500:]}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        return elapsed


def dcmtk(work: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([STORESCP, "-aet", "DCMTK", "-od", str(work), str(port)],
                            env=dict(os.environ, TCP_NODELAY="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pynetdicom_app(work: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "pynetdicom", "storescp", str(port),
                             "-aet", "PYNETDICOM", "-od", str(work)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def eusdx(work: Path, port: int, *, chunked: bool = False) -> subprocess.Popen[bytes]:
    env = dict(os.environ, EUSDX_SPOOL_DIR=str(work / "spool"),
               EUSDX_RECEIVE_CHUNKED="true" if chunked else "false",
               EUSDX_DATABASE_URL=f"sqlite:///{work}/audit.db",
               EUSDX_QUEUE_DIR=str(work / "queue"), EUSDX_DICOM_HOST="127.0.0.1",
               EUSDX_DICOM_PORT=str(port), EUSDX_STUDY_QUIET_SECONDS="3600",
               EUSDX_LOG_LEVEL="WARNING")
    exe = str(Path(sys.executable).with_name("eusdx"))
    return subprocess.Popen([exe, "serve", "--no-worker", "--no-http"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--cine", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=["dcmtk", "pynetdicom", "eusdx", "eusdx-chunked"],
                    action="append")
    ap.add_argument("--chunked", action="store_true",
                    help="also run eusdx with receive_chunked=true (written while arriving)")
    ap.add_argument("--tmpfs", action="store_true",
                    help="also run eusdx with spool and audit DB on /dev/shm: same code path, "
                         "fsync is free there, so the row shows the software cost alone")
    args = ap.parse_args(argv)
    receivers = [Receiver("DCMTK storescp", dcmtk, "DCMTK"),
                 Receiver("pynetdicom storescp", pynetdicom_app, "PYNETDICOM"),
                 Receiver("eusdx serve", eusdx, "EUSDX")]
    if args.tmpfs:
        def on_tmpfs(work: Path, port: int) -> subprocess.Popen[bytes]:
            shutil.rmtree(shm, ignore_errors=True)
            shm.mkdir(parents=True)
            return eusdx(shm, port)
        receivers.append(Receiver("eusdx serve (tmpfs)", on_tmpfs, "EUSDX"))
    if args.chunked or (args.only and "eusdx-chunked" in args.only):
        receivers.append(Receiver("eusdx serve (chunked)",
                                  lambda w, p: eusdx(w, p, chunked=True), "EUSDX"))
    keys = {"DCMTK storescp": "dcmtk", "pynetdicom storescp": "pynetdicom",
            "eusdx serve": "eusdx", "eusdx serve (chunked)": "eusdx-chunked",
            "eusdx serve (tmpfs)": "eusdx"}
    if args.only:
        receivers = [r for r in receivers if keys[r.name] in args.only]
    root = Path(tempfile.mkdtemp(prefix="eusdx-bench-"))
    shm = Path(f"/dev/shm/eusdx-bench-{os.getpid()}")
    try:
        files, cine = make_data(root / "data", args.frames, args.cine)
        frame_mb = files[0].stat().st_size / 1e6
        cine_mb = cine.stat().st_size / 1e6
        times: dict[str, dict[str, list[float]]] = {r.name: {"frames": [], "cine": []}
                                                    for r in receivers}
        for _ in range(args.repeat):  # interleaved, so drift hits every receiver alike
            for r in receivers:
                times[r.name]["frames"].append(r.run(root / "out", files))
                times[r.name]["cine"].append(r.run(root / "out", [cine]))
        med = {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}
        print(f"\n{args.frames} x {frame_mb:.2f} MB RGB US frames, one association; "
              f"cine: {args.cine} frames, {cine_mb:.0f} MB; median of {args.repeat} runs; "
              "sender DCMTK storescu TCP_NODELAY=1\n")
        head = f"{'receiver':22} {'frames s':>9} {'images/s':>9} {'MB/s':>7} {'cine s':>8}"
        ref_names = [n for n in ("DCMTK storescp", "pynetdicom storescp") if n in med]
        for ref in ref_names:
            head += f" {'vs ' + ref.split()[0]:>16}"
        print(head)
        for name, m in med.items():
            row = (f"{name:22} {m['frames']:9.2f} {args.frames / m['frames']:9.1f} "
                   f"{args.frames * frame_mb / m['frames']:7.1f} {m['cine']:8.2f}")
            for ref in ref_names:
                ratio_f = med[ref]["frames"] / m["frames"]
                ratio_c = med[ref]["cine"] / m["cine"]
                row += f" {ratio_f:7.2f}/{ratio_c:<7.2f} ".rjust(17)
            print(row)
        print("\nratios: speed relative to the reference (>1 = faster), frames/cine; "
              "DCMTK and pynetdicom do not fsync or audit, eusdx does both.")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
