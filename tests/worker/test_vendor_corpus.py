"""The vendor corpus end to end: DCMTK storescu -> ``eusdx serve`` (node + embedded worker) -> SR.

Every ultrasound file of ``pydicom-data`` and pydicom's own test files (tests/models/test_pixels.py,
``ULTRASOUND``) plus generated variants (a palette image whose overview region is listed first, a
native YBR_FULL_422 cine, 16-bit MONOCHROME1, a Deflated copy, conflicting calibration regions, a
forwarded study with vendor SR / KOS / GSPS / PDF) is sent as its own study, grouped by transfer
syntax (one storescu association per syntax). Each study must end ``reported`` (an SR at the PACS)
or ``failed`` with a specific reason; nothing may hang, crash the server, or fail as a bug. The
outcome table is printed (``-s``) for the issue note.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

from demo.peers import STORESCU_TS_OPTION
from tests.conftest import bundle_trust_env, free_port, require_tool
from tests.dicom_node.forwarded import NON_IMAGE, non_image
from tests.dicom_node.peers import wait_listening
from tests.models.test_pixels import ULTRASOUND, data_file
from tests.worker.conftest import SECRET

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk, pytest.mark.filterwarnings("ignore::UserWarning")]

EUSDX = str(Path(sys.executable).with_name("eusdx"))
TERMINAL = {"reported", "exported", "failed", "not-routed"}
#: failure reasons that name an input problem: "<failure class>: <sentence>" (eusdx.failures) in the
#: input class, never a programming error or an unclassified exception
_SPECIFIC = re.compile(r"^input: (?!an internal error).+$")


def _identify(ds: pydicom.Dataset, study_uid: str) -> None:
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = "US"
    ds.BodyPartExamined = "STOMACH"
    ds.PatientID = "CORPUS"
    ds.SeriesNumber = ds.InstanceNumber = 1


def _overview_first(ds: pydicom.Dataset) -> None:
    sector = ds.SequenceOfUltrasoundRegions[0]
    overview = copy.deepcopy(sector)
    overview.RegionLocationMinX0, overview.RegionLocationMinY0 = 0, 0
    overview.RegionLocationMaxX1, overview.RegionLocationMaxY1 = 60, 40
    overview.PhysicalDeltaX = overview.PhysicalDeltaY = float(sector.PhysicalDeltaX) * 5
    ds.SequenceOfUltrasoundRegions = Sequence([overview, *ds.SequenceOfUltrasoundRegions])


def _conflicting(ds: pydicom.Dataset) -> None:
    sector = ds.SequenceOfUltrasoundRegions[0]
    other = copy.deepcopy(sector)
    other.PhysicalDeltaX = other.PhysicalDeltaY = float(sector.PhysicalDeltaX) * 3
    ds.SequenceOfUltrasoundRegions = Sequence([sector, other])


def _mono1_16(ds: pydicom.Dataset) -> None:
    grey = np.asarray(ds.pixel_array).astype(np.uint16).mean(axis=-1).astype(np.uint16)
    ds.PixelData = (65535 - grey * 257).astype("<u2").tobytes()
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.SamplesPerPixel = 1
    del ds.PlanarConfiguration
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _deflated(ds: pydicom.Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian


#: generated variant -> (source file, how it is changed)
VARIANTS = {
    "palette-overview-region-first": ("OBXXXX1A.dcm", _overview_first),
    "palette-conflicting-regions": ("OBXXXX1A.dcm", _conflicting),
    "mono1-16bit": ("US1_UNCR.dcm", _mono1_16),
    "deflated-rgb": ("US1_UNCR.dcm", _deflated),
}


def build_corpus(folder: Path) -> dict[str, str]:
    """One study per corpus entry in ``folder``; returns ``{study UID: entry name}``."""
    folder.mkdir(parents=True)
    studies: dict[str, str] = {}

    def add(name: str, ds: pydicom.Dataset) -> str:
        uid = generate_uid()
        _identify(ds, uid)
        ds.save_as(folder / f"{name}.dcm")
        studies[uid] = name
        return uid

    for name in sorted(ULTRASOUND):
        add(name, pydicom.dcmread(data_file(name)))
    for name, (source, change) in VARIANTS.items():
        ds = pydicom.dcmread(data_file(source))
        change(ds)
        add(name, ds)
    from bench.cine_memory import write_cine

    cine = folder / "cine.tmp"
    write_cine(cine, 40)
    add("ybr422-native-cine-40", pydicom.dcmread(cine))
    cine.unlink()
    uid = add("forwarded-study", pydicom.dcmread(data_file("OBXXXX1A_2frame.dcm")))
    for n, kind in enumerate(k for k in NON_IMAGE if k != "private"):  # private: DCMTK won't send
        extra = non_image(kind, uid, n + 2)
        extra.save_as(folder / f"forwarded-{kind}.dcm", enforce_file_format=True)
    return studies


def _send_by_syntax(port: int, folder: Path) -> None:
    tool = require_tool("/usr/bin/storescu")
    groups: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.dcm")):
        ts = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        groups.setdefault(ts, []).append(str(path))
    for ts, files in sorted(groups.items()):
        out = subprocess.run([tool, "-aet", "PACSFWD", "-aec", "EUSDX", "-R", STORESCU_TS_OPTION[ts],
                              "127.0.0.1", str(port), *files], capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, (ts, out.stderr[-2000:])


def _states(db: Path) -> dict[str, tuple[str, str | None]]:
    with sqlite3.connect(db) as conn:
        found = conn.execute("select study_uid, state, reason from study_events order by seq").fetchall()
    last: dict[str, tuple[str, str | None]] = {}
    for uid, state, reason in found:
        last[uid] = (state, reason)
    return last


def test_vendor_corpus_through_serve(tmp_path: Path, tiny_bundle: Path) -> None:
    studies = build_corpus(tmp_path / "corpus")
    var = tmp_path / "var"
    (var / "spool").mkdir(parents=True)
    pacs_dir = tmp_path / "pacs"
    pacs_dir.mkdir()
    pacs_port, dicom_port = free_port(), free_port()
    pacs = subprocess.Popen([require_tool("/usr/bin/storescp"), "-aet", "PACS", "-od", str(pacs_dir),
                             "+xa", str(pacs_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EUSDX_")}
    env.update({
        "EUSDX_SPOOL_DIR": str(var / "spool"), "EUSDX_DATABASE_URL": f"sqlite:///{var}/audit.db",
        "EUSDX_QUEUE_DIR": str(var / "queue"), "EUSDX_OUTBOX_DIR": str(var / "outbox"),
        "EUSDX_DICOM_HOST": "127.0.0.1", "EUSDX_DICOM_PORT": str(dicom_port),
        "EUSDX_HTTP_PORT": str(free_port()), "EUSDX_STUDY_QUIET_SECONDS": "2",
        "EUSDX_BUNDLE": str(tiny_bundle), "EUSDX_DEVICE": "cpu", "EUSDX_AUDIT_HMAC_SECRET": SECRET,
        "EUSDX_EXPORT_DESTINATIONS": f"PACS@127.0.0.1:{pacs_port}", "EUSDX_LOG_FORMAT": "text",
        "OMP_NUM_THREADS": "1", **bundle_trust_env(tiny_bundle),
    })
    log_path = tmp_path / "serve.log"
    with open(log_path, "ab") as log:
        serve = subprocess.Popen([EUSDX, "serve"], env=env, cwd=tmp_path, stdout=log,
                                 stderr=subprocess.STDOUT)
    try:
        wait_listening(pacs_port, timeout=30)
        wait_listening(dicom_port, timeout=120)
        _send_by_syntax(dicom_port, tmp_path / "corpus")
        deadline = time.monotonic() + 900
        while True:
            states = _states(var / "audit.db")
            open_ = [studies[u] for u in studies if states.get(u, ("", None))[0] not in TERMINAL]
            if not open_:
                break
            assert serve.poll() is None, log_path.read_text()[-4000:]
            assert time.monotonic() < deadline, f"studies without an end: {open_}"
            time.sleep(1)
        reported = [u for u in studies if states[u][0] in ("reported", "exported")]
        srs = lambda: [p for p in pacs_dir.iterdir() if p.name.startswith("SR")]  # noqa: E731
        deadline = time.monotonic() + 120
        while len(srs()) < len(reported) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            serve.kill()
        pacs.terminate()
        pacs.wait(10)

    print(f"\n{'corpus entry':<36} {'outcome':<9} reason")
    for uid, name in sorted(studies.items(), key=lambda item: item[1]):
        state, reason = states[uid]
        print(f"{name:<36} {state:<9} {reason or ''}")
    assert len(srs()) == len(reported)
    for uid, name in studies.items():
        state, reason = states[uid]
        assert state != "not-routed", name
        if state == "failed":
            # a specific, input-level reason (never an internal error)
            assert reason and _SPECIFIC.match(reason), (name, reason)
    by_name = {name: states[uid] for uid, name in studies.items()}
    assert "calibration: ultrasound regions holding the sector disagree" in str(
        by_name["palette-conflicting-regions"][1])
    for name in ("OBXXXX1A.dcm", "palette-overview-region-first", "gdcm-US-ALOKA-16.dcm"):
        assert "no B-mode sector" not in str(by_name[name][1]), name  # the single-frame palette bug
    forwarded = next(uid for uid, name in studies.items() if name == "forwarded-study")
    with sqlite3.connect(var / "audit.db") as conn:
        kept = conn.execute("select count(*) from instances where study_uid = ? and status = 'stored'",
                            (forwarded,)).fetchone()[0]
    assert kept == 1 + len(NON_IMAGE) - 1
    shutil.rmtree(var / "spool", ignore_errors=True)
