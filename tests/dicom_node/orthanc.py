"""A real Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) started by the tests.

Each instance gets its own JSON configuration on free loopback ports, its storage and index in a
temp folder, and the DICOMweb plugin from the Debian package. It serves as STOW-RS archive,
STOW-RS sender (``/dicom-web/servers/<name>/stow``) and Storage Commitment SCP (it answers
N-ACTION with an N-EVENT-REPORT on a new association to the modality it knows by AE title).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from tests.conftest import free_port, require_tool

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


class Orthanc:
    """``with Orthanc(tmp, modalities=..., dicomweb_servers=...) as o: o.rest(...)``."""

    def __init__(self, folder: Path, *, aet: str = "ORTHANC",
                 modalities: dict[str, list[Any]] | None = None,
                 dicomweb_servers: dict[str, dict[str, Any]] | None = None) -> None:
        self.folder = Path(folder)
        self.aet = aet
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.modalities = modalities or {}
        self.dicomweb_servers = dicomweb_servers or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.folder / "orthanc.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def address(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    def config(self) -> dict[str, Any]:
        return {
            "Name": "eusdx-test-orthanc",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomScuTimeout": 10,
            "StableAge": 1,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomModalities": self.modalities,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Servers": self.dicomweb_servers},
        }

    def start(self) -> Orthanc:
        exe = require_tool(ORTHANC)
        if not Path(DICOMWEB_PLUGIN).is_file():
            require_tool(DICOMWEB_PLUGIN)  # skips locally, fails in CI, naming the plugin
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(self.config(), indent=1))
        self.proc = subprocess.Popen([exe, str(path)], stdout=open(self.log_path, "wb"),
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {self.log_path.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/system", timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"Orthanc did not start: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def rest(self, method: str, path: str, **kwargs: Any) -> Any:
        r = requests.request(method, f"{self.url}{path}", timeout=60, **kwargs)
        r.raise_for_status()
        return r.json() if r.content else None

    def upload(self, path: Path) -> str:
        """POST one DICOM file; returns Orthanc's instance id."""
        return str(self.rest("POST", "/instances", data=Path(path).read_bytes())["ID"])

    def instances_of_study(self, study_uid: str) -> list[dict[str, Any]]:
        """Main DICOM tags of every instance Orthanc holds in that study."""
        found = self.rest("POST", "/tools/find", json={"Level": "Instance", "Expand": True,
                                                       "Query": {"StudyInstanceUID": study_uid}})
        return [dict(i.get("MainDicomTags", {}), ParentSeries=i.get("ParentSeries"))
                for i in found]

    def sop_classes(self, study_uid: str) -> dict[str, str]:
        """SOP Instance UID -> SOP Class UID of the instances of a study (via QIDO-RS)."""
        r = requests.get(f"{self.dicomweb}/studies/{study_uid}/instances", timeout=30)
        if r.status_code == 204 or not r.content:
            return {}
        r.raise_for_status()
        return {i["00080018"]["Value"][0]: i["00080016"]["Value"][0] for i in r.json()}
