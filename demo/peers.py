"""The demo's stand-ins for a PACS: a C-STORE SCP that receives our SRs and an SCU that forwards studies.

DCMTK is preferred because it is an independent implementation (and always called by full path: the
venv's pynetdicom ships its own ``storescu``/``storescp`` that would shadow it); pynetdicom stands in
when DCMTK is absent, so the demo still runs on a machine without it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydicom

__all__ = [
    "DCMTK_STORESCU",
    "DCMTK_STORESCP",
    "STORESCU_TS_OPTION",
    "PacsReceiver",
    "free_port",
    "send_study",
    "study_files_by_syntax",
    "terminate",
    "wait_listening",
]

DCMTK_STORESCU = "/usr/bin/storescu"
DCMTK_STORESCP = "/usr/bin/storescp"

#: storescu option that proposes a file's own transfer syntax (plus the uncompressed ones).
STORESCU_TS_OPTION: dict[str, str] = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dcmtk_available() -> bool:
    return os.access(DCMTK_STORESCU, os.X_OK) and os.access(DCMTK_STORESCP, os.X_OK)


def study_files_by_syntax(folder: Path, exclude_sop_classes: tuple[str, ...] = ()) -> dict[str, list[Path]]:
    """Group a study folder's files by transfer syntax: storescu proposes one compressed syntax per
    SOP class, so a study mixing JPEG, RLE and uncompressed files goes in one association per group.
    Files whose SOP Class UID is in ``exclude_sop_classes`` are left out."""
    groups: dict[str, list[Path]] = {}
    for path in sorted(Path(folder).iterdir()):
        if path.is_file():
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if str(ds.get("SOPClassUID", "")) in exclude_sop_classes:
                continue
            groups.setdefault(str(ds.file_meta.TransferSyntaxUID), []).append(path)
    return groups


def send_study(folder: Path, host: str, port: int, *, calling_ae: str = "DEMOPACS",
               called_ae: str = "EUSDX", timeout: float = 120.0, exclude_sop_classes: tuple[str, ...] = ()) -> int:
    """Send every file of a study folder (but those of ``exclude_sop_classes``); returns the number sent.

    Raises
    ------
    RuntimeError
        The peer refused the association or an instance (the message says which tool and why).
    """
    groups = study_files_by_syntax(folder, exclude_sop_classes)
    if dcmtk_available():
        for ts, files in sorted(groups.items()):
            cmd = [DCMTK_STORESCU, "-aet", calling_ae, "-aec", called_ae, "-R",
                   STORESCU_TS_OPTION.get(ts, "-xe"), host, str(port), *map(str, files)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "TCP_NODELAY": "1"})
            if proc.returncode != 0:
                raise RuntimeError(f"storescu failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
    else:
        _send_pynetdicom(groups, host, port, calling_ae, called_ae)
    return sum(len(files) for files in groups.values())


def _send_pynetdicom(groups: dict[str, list[Path]], host: str, port: int, calling_ae: str,
                     called_ae: str) -> None:
    from pynetdicom import AE

    for ts, files in sorted(groups.items()):
        datasets = [pydicom.dcmread(p) for p in files]
        ae = AE(ae_title=calling_ae)
        for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
            ae.add_requested_context(sop_class, [ts])
        assoc = ae.associate(host, port, ae_title=called_ae)
        if not assoc.is_established:
            raise RuntimeError(f"association to {called_ae}@{host}:{port} was not accepted")
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds)
                if not status or status.Status != 0:
                    raise RuntimeError(f"C-STORE of {ds.SOPInstanceUID} failed: {status}")
        finally:
            assoc.release()


class PacsReceiver:
    """A C-STORE SCP on a free port that writes what it receives into ``out_dir``."""

    def __init__(self, out_dir: Path, *, ae_title: str = "DEMOPACS", port: int | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.ae_title = ae_title
        self.port = port or free_port()
        self.kind = "DCMTK storescp" if dcmtk_available() else "pynetdicom SCP"
        self._proc: subprocess.Popen[bytes] | None = None
        self._server: Any = None

    def start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if dcmtk_available():
            cmd = [DCMTK_STORESCP, "-aet", self.ae_title, "-od", str(self.out_dir), "-uf", "+xa",
                   str(self.port)]
            self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True)
        else:
            self._server = self._start_pynetdicom()
        wait_listening(self.port, proc=self._proc)

    def _start_pynetdicom(self) -> Any:
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        def on_store(event: Any) -> int:
            ds = event.dataset
            ds.file_meta = event.file_meta
            ds.save_as(self.out_dir / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
            return 0x0000

        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        return ae.start_server(("127.0.0.1", self.port), block=False,
                               evt_handlers=[(evt.EVT_C_STORE, on_store)])

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._server is not None:
            self._server.shutdown()

    def received(self) -> list[Path]:
        return sorted(p for p in self.out_dir.iterdir() if p.is_file())


def wait_listening(port: int, timeout: float = 15.0, proc: subprocess.Popen[Any] | None = None) -> None:
    """Poll until something accepts connections on ``127.0.0.1:port`` (or ``proc`` died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def terminate(procs: Sequence[subprocess.Popen[Any]], timeout: float = 30.0) -> None:
    """SIGTERM each process (graceful shutdown), then SIGKILL what is still there."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
