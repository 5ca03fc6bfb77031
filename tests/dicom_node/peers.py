"""Real DCMTK peers started by the tests: storescp as a PACS on a free port."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from tests.conftest import free_port, require_tool


def wait_for(cond, timeout: float = 15.0) -> None:
    """Poll ``cond()`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {port}")


class DcmtkStoreSCP:
    """``/usr/bin/storescp`` writing what it receives into ``out_dir``."""

    def __init__(self, out_dir: Path, *, port: int | None = None, aet: str = "PACS",
                 bit_preserving: bool = False, extra: list[str] | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.aet = aet
        self.bit_preserving = bit_preserving
        self.extra = list(extra or [])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "DcmtkStoreSCP":
        exe = require_tool("/usr/bin/storescp")
        cmd = [exe, "-aet", self.aet, "-od", str(self.out_dir), "-uf", "+xa"]
        if self.bit_preserving:
            cmd.append("+B")
        cmd.extend(self.extra)
        cmd.append(str(self.port))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_listening(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def __enter__(self) -> "DcmtkStoreSCP":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def received(self, sop_uid: str) -> Path:
        """The file storescp wrote for ``sop_uid`` (``-uf``: named by SOP Instance UID)."""
        found = [p for p in self.out_dir.glob(f"*.{sop_uid}") if p.is_file()]
        assert found, f"storescp holds no {sop_uid}"
        return max(found, key=lambda p: p.stat().st_mtime_ns)  # the latest copy

    def files(self) -> list[Path]:
        return sorted(p for p in self.out_dir.iterdir() if p.is_file())
