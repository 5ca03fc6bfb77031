"""Ingest benchmark: how fast do receivers take C-STOREs from DCMTK storescu? (not a test)

Data (synthetic, written once to a temp folder): ``--frames`` single-frame RGB ultrasound
images of 640x480 (0.92 MB each, Explicit VR Little Endian, one study) and one ``--cine``-frame
Ultrasound Multi-frame cine of the same frame size. ``/usr/bin/storescu`` (environment
``TCP_NODELAY=1``: DCMTK >= 3.6.2 keeps Nagle on unless told) sends the frames over ONE
association, and again split over ``--assocs`` (4) concurrent associations (one storescu each),
and the cine over one association, to, in the same run, interleaved:

a. ``/usr/bin/storescp``            DCMTK, writes files, no fsync, no audit
b. ``python -m pynetdicom storescp`` pynetdicom's stock app, default options (16 KB PDU)
c. ``Orthanc`` (Debian 1.10)         the durable peer: an archive that fsyncs every stored file
                                     (``SyncStorageArea``, its default) and commits its SQLite
                                     index before answering; started by the bench from a generated
                                     JSON config on loopback free ports, storage + index in a tmp dir
d. ``eusdx serve --no-worker``       full durability: temp file + fsync + rename + dir fsync,
                                     header parse, SHA-256, SQLite audit row (synchronous=FULL)

Each cell is the median wall time (first storescu start to last storescu exit) over
``--repeat`` runs, each on a freshly started receiver with empty storage. Ratios are speed
relative to a peer of the same run (> 1 = faster than the peer).
Usage: ``python bench/ingest.py [--frames 200] [--cine 100] [--assocs 4] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
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

from demo.peers import free_port, wait_listening

ROWS, COLS = 480, 640
US = "1.2.840.10008.5.1.4.1.1.6.1"
US_MF = "1.2.840.10008.5.1.4.1.1.3.1"
STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
ORTHANC = "/usr/sbin/Orthanc"


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
                 aet: str, storage: Callable[[Path], Path] | None = None) -> None:
        self.name, self._start, self.aet = name, start, aet
        self._storage = storage or (lambda work: work)  # where the receiver keeps the instances

    def run(self, work: Path, files: list[Path], assocs: int = 1) -> float:
        """Start fresh, send ``files`` split over ``assocs`` concurrent associations (one
        storescu each), return the wall time from the first start to the last exit."""
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        port = free_port()
        proc = self._start(work, port)
        try:
            wait_listening(port, timeout=90.0, proc=proc)
            env = dict(os.environ, TCP_NODELAY="1")
            groups = [files[i::assocs] for i in range(assocs) if files[i::assocs]]
            t0 = time.perf_counter()
            senders = [subprocess.Popen([STORESCU, "-aec", self.aet, "127.0.0.1", str(port),
                                         *map(str, group)], env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True) for group in groups]
            errors = [s.communicate()[1] for s in senders]
            elapsed = time.perf_counter() - t0
            for sender, err in zip(senders, errors):
                if sender.returncode != 0:
                    raise RuntimeError(f"{self.name}: storescu failed: {err[-500:]}")
            # every receiver must really hold every instance (a file of the instance's size)
            smallest = min(f.stat().st_size for f in files) * 0.9
            store = self._storage(work)
            held = sum(1 for p in store.rglob("*") if p.is_file() and p.stat().st_size >= smallest
                       and "index" not in p.relative_to(store).parts and not p.name.startswith("audit"))
            if held != len(files):
                raise RuntimeError(f"{self.name}: holds {held} of {len(files)} instances")
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


def orthanc_config(work: Path, port: int) -> dict[str, object]:
    """Orthanc's JSON configuration for the bench: DICOM on loopback ``port``, HTTP off, no
    plugins, storage and SQLite index under ``work``; ``SyncStorageArea`` (fsync of every stored
    file) is Orthanc's default and stated explicitly; storage compression off (its default)."""
    return {
        "Name": "eusdx-bench", "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "index"), "StorageCompression": False,
        "SyncStorageArea": True, "Plugins": [], "HttpServerEnabled": False,
        "HttpPort": free_port(), "RemoteAccessAllowed": False, "DicomServerEnabled": True,
        "DicomAet": "ORTHANC", "DicomCheckCalledAet": False, "DicomPort": port,
        "DicomAlwaysAllowStore": True, "DicomModalities": {}, "SaveJobs": False,
    }


def orthanc(work: Path, port: int) -> subprocess.Popen[bytes]:
    config = work / "orthanc.json"
    config.write_text(json.dumps(orthanc_config(work, port), indent=1), encoding="utf-8")
    return subprocess.Popen([ORTHANC, str(config)], cwd=work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def eusdx(work: Path, port: int, *, chunked: bool = False) -> subprocess.Popen[bytes]:
    env = dict(os.environ, EUSDX_SPOOL_DIR=str(work / "spool"),
               EUSDX_RECEIVE_CHUNKED="true" if chunked else "false",
               EUSDX_DATABASE_URL=f"sqlite:///{work}/audit.db",
               EUSDX_QUEUE_DIR=str(work / "queue"), EUSDX_DICOM_HOST="127.0.0.1",
               EUSDX_DICOM_PORT=str(port), EUSDX_STUDY_QUIET_SECONDS="3600",
               EUSDX_LOG_LEVEL="WARNING",
               # its own audit key: serve refuses the built-in one outside dev_mode (issue 20)
               EUSDX_AUDIT_HMAC_SECRET=secrets.token_hex(32))
    exe = str(Path(sys.executable).with_name("eusdx"))
    return subprocess.Popen([exe, "serve", "--no-worker", "--no-http"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


MODES = ("1 assoc", "N assocs", "cine")


def _table(med: dict[str, dict[str, float]], frames: int, assocs: int, frame_mb: float) -> str:
    """One table: images/s per mode and speed ratios against every peer of the same run."""
    lines = [f"{'receiver':24} {'1 assoc':>8} {str(assocs) + ' assocs':>9} {'cine':>7}   "
             f"{'(images/s; cine: MB/s)'}"]
    for name, m in med.items():
        lines.append(f"{name:24} {frames / m['1 assoc']:8.1f} {frames / m['N assocs']:9.1f} "
                     f"{m['cine_mb'] / m['cine']:7.1f}")
    lines.append("")
    peers = [n for n in ("Orthanc", "DCMTK storescp", "pynetdicom storescp") if n in med]
    lines.append(f"{'ratio (x faster)':24} " + " ".join(
        f"{'vs ' + p.split()[0] + ' ' + mode:>20}" for p in peers for mode in ("1", str(assocs))))
    for name, m in med.items():
        cells = []
        for peer in peers:
            for mode in ("1 assoc", "N assocs"):
                cells.append(f"{med[peer][mode] / m[mode]:20.2f}")
        lines.append(f"{name:24} " + " ".join(cells))
    lines.append(f"\n{frames} frames of {frame_mb:.2f} MB; 1 assoc = one storescu; {assocs} assocs = "
                 f"{assocs} storescu at once, frames split evenly")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--cine", type=int, default=100)
    ap.add_argument("--assocs", type=int, default=4, help="concurrent associations (2nd column)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=["dcmtk", "pynetdicom", "orthanc", "eusdx", "eusdx-chunked"],
                    action="append")
    ap.add_argument("--chunked", action="store_true",
                    help="also run eusdx with receive_chunked=true (written while arriving)")
    ap.add_argument("--tmpfs", action="store_true",
                    help="also run eusdx with spool and audit DB on /dev/shm: same code path, "
                         "fsync is free there, so the row shows the software cost alone")
    args = ap.parse_args(argv)
    receivers = [Receiver("DCMTK storescp", dcmtk, "DCMTK"),
                 Receiver("pynetdicom storescp", pynetdicom_app, "PYNETDICOM"),
                 Receiver("Orthanc", orthanc, "ORTHANC"),
                 Receiver("eusdx serve", eusdx, "EUSDX")]
    if args.tmpfs:
        def on_tmpfs(work: Path, port: int) -> subprocess.Popen[bytes]:
            shutil.rmtree(shm, ignore_errors=True)
            shm.mkdir(parents=True)
            return eusdx(shm, port)
        receivers.append(Receiver("eusdx serve (tmpfs)", on_tmpfs, "EUSDX", storage=lambda _work: shm))
    if args.chunked or (args.only and "eusdx-chunked" in args.only):
        receivers.append(Receiver("eusdx serve (chunked)",
                                  lambda w, p: eusdx(w, p, chunked=True), "EUSDX"))
    keys = {"DCMTK storescp": "dcmtk", "pynetdicom storescp": "pynetdicom", "Orthanc": "orthanc",
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
        times: dict[str, dict[str, list[float]]] = {r.name: {m: [] for m in MODES}
                                                    for r in receivers}
        load = os.getloadavg()
        for _ in range(args.repeat):  # interleaved, so drift hits every receiver alike
            for r in receivers:
                times[r.name]["1 assoc"].append(r.run(root / "out", files))
                times[r.name]["N assocs"].append(r.run(root / "out", files, args.assocs))
                times[r.name]["cine"].append(r.run(root / "out", [cine]))
        med = {n: {**{k: statistics.median(v) for k, v in t.items()}, "cine_mb": cine_mb}
               for n, t in times.items()}
        print(f"\n# ingest, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
              f"{os.cpu_count()} CPUs, load average at start {load[0]:.2f}, at end "
              f"{os.getloadavg()[0]:.2f}; median of {args.repeat} runs; sender DCMTK storescu "
              f"TCP_NODELAY=1; cine {args.cine} frames, {cine_mb:.0f} MB\n")
        print(_table(med, args.frames, args.assocs, frame_mb))
        print("DCMTK and pynetdicom write without fsync or audit; Orthanc fsyncs each file and "
              "commits its SQLite index; eusdx fsyncs file + directory and commits its audit row "
              "(synchronous=FULL) before Success.")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
