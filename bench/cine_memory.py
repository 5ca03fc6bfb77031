"""Peak memory of loading a long cine in the worker: frame-level decoding vs a whole-cine array.

Data (synthetic, written once to a temp folder, streamed to disk frame by frame): one Ultrasound
Multi-frame Image per size in ``--frames`` (default 50, 300, 1000), 600 x 800 pixels, native
YBR_FULL_422 (0.96 MB a frame, the layout of the reported 300-frame, 288 MB cine), a speckled fan
in every frame. Each measurement runs in a fresh Python process that imports everything first, then
records its resident set (VmRSS, the baseline) and, after the work, its peak (VmHWM):

a. eusdx      ``worker.frames.load_study`` (``cine_max_frames`` 8): header read with large values
              left in the file, only the 8 sampled frames read and decoded
              (``models.pixels.decode_frames``), each checked for a sector and calibrated.
b. peer       what the worker did before: ``pydicom.dcmread`` the file, ``ds.pixel_array`` (every
              frame, YBR converted to RGB), then the 8 sampled frames taken from it.

The table prints peak minus baseline in MB for both and their ratio (peer / eusdx). The peer is
left out above ``--peer-max-frames`` (default 300): it needs about 14x the pixel data.
Usage: ``python bench/cine_memory.py [--frames 50 300 1000] [--peer-max-frames 300]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROWS, COLS = 600, 800
US_MF = "1.2.840.10008.5.1.4.1.1.3.1"
SAMPLED = 8


def _fan(rng: np.random.Generator) -> np.ndarray:
    """A B-mode-like frame: speckle inside a fan, black outside."""
    r, c = np.mgrid[0:ROWS, 0:COLS]
    dr, dc = r - 20.0, c - COLS / 2
    radius, angle = np.hypot(dr, dc), np.degrees(np.arctan2(dc, dr))
    fan = (radius > 40) & (radius < ROWS - 40) & (np.abs(angle) < 35)
    speckle = rng.gamma(2.0, 40.0, size=(ROWS, COLS)).clip(0, 255)
    return np.where(fan, speckle, 0).astype(np.uint8)


def write_cine(path: Path, frames: int, seed: int = 0) -> None:
    """Stream a native YBR_FULL_422 cine to ``path`` (never the whole pixel data in memory)."""
    ds = Dataset()
    ds.SOPClassUID = US_MF
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "US"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Rows, ds.Columns = ROWS, COLS
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = frames
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = US_MF
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    rng = np.random.default_rng(seed)
    base = _fan(rng)
    frame_bytes = ROWS * COLS * 2
    with open(path, "ab") as fh:
        fh.write(struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\x00\x00" + struct.pack("<I", frame_bytes * frames))
        for k in range(frames):
            y = np.roll(base, k % 7, axis=1)
            packed = np.empty((ROWS, COLS // 2, 4), dtype=np.uint8)
            packed[..., 0], packed[..., 1] = y[:, 0::2], y[:, 1::2]
            packed[..., 2:] = 128  # grey: no chroma
            fh.write(packed.tobytes())


_CHILD = r"""
import json, sys
from pathlib import Path

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024.0
    raise KeyError(key)

mode, spool, study, path = sys.argv[1:5]
import numpy as np, pydicom
from models.preprocess import has_sector
from worker.frames import load_study, sample_indices
from models.pixels import decode_frames
base = status("VmRSS:")
if mode == "eusdx":
    study = load_study(Path(spool), study, cine_max_frames=8, has_sector=has_sector)
    n = len(study.frames)
else:
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    picks = sample_indices(int(ds.NumberOfFrames), 8)
    frames = [np.ascontiguousarray(arr[i]) for i in picks]
    n = sum(bool(has_sector(f)) for f in frames)
print(json.dumps({"base": base, "peak": status("VmHWM:"), "frames": n}))
"""


def measure(mode: str, spool: Path, study: str, path: Path) -> dict[str, float]:
    """Run one measurement in a fresh interpreter; returns baseline and peak RSS in MB."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(spool), study, str(path)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[50, 300, 1000])
    ap.add_argument("--peer-max-frames", type=int, default=300)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="eusdx-cine-bench-"))
    try:
        print(f"{'frames':>6} {'file MB':>8} {'eusdx base':>10} {'eusdx +MB':>9} {'peer +MB':>9} "
              f"{'peer/eusdx':>10} {'sampled':>7}")
        for n in args.frames:
            import pydicom

            spool = root / f"spool{n}"
            spool.mkdir()
            tmp = root / f"cine{n}.dcm"
            write_cine(tmp, n)
            uid = str(pydicom.dcmread(tmp, stop_before_pixels=True).StudyInstanceUID)
            sop = str(pydicom.dcmread(tmp, stop_before_pixels=True).SOPInstanceUID)
            (spool / uid).mkdir()
            path = spool / uid / f"{sop}.dcm"
            tmp.rename(path)
            ours = measure("eusdx", spool, uid, path)
            ours_mb = ours["peak"] - ours["base"]
            if n <= args.peer_max_frames:
                peer = measure("peer", spool, uid, path)
                peer_mb = peer["peak"] - peer["base"]
                peer_txt, ratio = f"{peer_mb:9.0f}", f"{peer_mb / max(ours_mb, 1.0):10.1f}"
            else:
                peer_txt, ratio = f"{'skipped':>9}", f"{'-':>10}"
            size = path.stat().st_size / 1e6
            print(f"{n:>6} {size:8.0f} {ours['base']:10.0f} {ours_mb:9.0f} {peer_txt} {ratio} "
                  f"{int(ours['frames']):>7}", flush=True)
            shutil.rmtree(spool)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
