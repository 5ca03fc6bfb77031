"""Open a study in the real OHIF Viewer (prebuilt ``@ohif/app``) in headless Chromium.

Pieces, each small:

* :func:`ohif_dist` finds the ``dist/`` that ``scripts/install-ohif.sh`` unpacked (pinned version).
* :func:`dicomjson_index` writes OHIF's ``dicomjson`` data-source index for a folder of DICOM files:
  studies -> series -> instances, each instance with ``metadata`` (the dataset as keyword -> value,
  sequences as lists of objects, PN as ``{"Alphabetic": ...}``, bulk data left out) and ``url``
  (``dicomweb:`` + the file's HTTP URL, which OHIF's WADO-URI loader fetches and decodes).
* :class:`ViewerServer` serves ``dist/`` and the data on 127.0.0.1 with a free port, answers unknown
  paths with ``index.html`` (OHIF routes in the browser) and replaces ``app-config.js`` with a config
  whose only data source is ``dicomjson``.
* :func:`open_in_chromium` drives ``/usr/bin/chromedriver`` with selenium and returns the page text,
  the SVG annotation text, the browser console and a screenshot.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import DSfloat, IS, PersonName

REPO = Path(__file__).resolve().parents[2]
OHIF_VERSION = "3.13.2"
_BULK_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}

APP_CONFIG = """window.config = {
  routerBasename: '/',
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: false,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: false,
  maxNumberOfWebWorkers: 1,
  showErrorDetails: 'always',
  defaultDataSourceName: 'dicomjson',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomjson',
      sourceName: 'dicomjson',
      configuration: { friendlyName: 'eusdx test data', name: 'json' },
    },
  ],
};
"""


def ohif_dist() -> Path | None:
    """The unpacked OHIF ``dist/`` (``$EUSDX_OHIF_DIST`` or ``var/ohif/<version>/dist``), if installed."""
    given = os.environ.get("EUSDX_OHIF_DIST")
    path = Path(given) if given else REPO / "var" / "ohif" / OHIF_VERSION / "dist"
    return path if (path / "index.html").is_file() else None


def _json_value(elem: Any) -> Any:
    value = elem.value
    if elem.VR == "SQ":
        return [naturalize(item) for item in value]
    if elem.VR == "PN":
        names = value if isinstance(value, MultiValue) else [value]
        out = [{"Alphabetic": str(n)} for n in names if n is not None]
        return out[0] if len(out) == 1 else out
    if isinstance(value, (MultiValue, list, tuple)):  # pydicom gives FL/FD multi-values as plain lists
        return [_scalar(v) for v in value]
    return _scalar(value)


def _scalar(value: Any) -> Any:
    if isinstance(value, (DSfloat, float)):
        return float(value)
    if isinstance(value, (IS, int)):
        return int(value)
    if isinstance(value, PersonName):
        return {"Alphabetic": str(value)}
    return str(value) if value is not None else None


def naturalize(ds: Dataset) -> dict[str, Any]:
    """A dataset as OHIF's naturalized metadata: keyword -> value; bulk data and private tags left out."""
    out: dict[str, Any] = {}
    for elem in ds:
        if elem.tag.is_private or elem.tag.group == 0x0002 or elem.VR in _BULK_VRS or not elem.keyword:
            continue
        if elem.value is None or elem.value == "":
            continue
        out[elem.keyword] = _json_value(elem)
    return out


def dicomjson_index(files: list[Path], base_url: str) -> dict[str, Any]:
    """OHIF ``dicomjson`` index of the given files, each served at ``<base_url>/<file name>``."""
    studies: dict[str, dict[str, Any]] = {}
    for path in sorted(files):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        study = studies.setdefault(str(ds.StudyInstanceUID), {
            "StudyInstanceUID": str(ds.StudyInstanceUID), "StudyDate": str(ds.get("StudyDate", "")),
            "StudyTime": str(ds.get("StudyTime", "")), "PatientName": str(ds.get("PatientName", "")),
            "PatientID": str(ds.get("PatientID", "")), "AccessionNumber": str(ds.get("AccessionNumber", "")),
            "StudyDescription": str(ds.get("StudyDescription", "")), "NumInstances": 0, "Modalities": "",
            "series": {},
        })
        series = study["series"].setdefault(str(ds.SeriesInstanceUID), {
            "SeriesInstanceUID": str(ds.SeriesInstanceUID), "SeriesNumber": int(ds.get("SeriesNumber", 0) or 0),
            "SeriesDescription": str(ds.get("SeriesDescription", "")), "Modality": str(ds.Modality),
            "instances": [],
        })
        series["instances"].append({"metadata": naturalize(ds), "url": f"dicomweb:{base_url}/{path.name}"})
        study["NumInstances"] += 1
    out = []
    for study in studies.values():
        series_list = list(study.pop("series").values())
        study["Modalities"] = "\\".join(sorted({s["Modality"] for s in series_list}))
        study["series"] = series_list
        out.append(study)
    return {"studies": out}


class _Handler(http.server.SimpleHTTPRequestHandler):
    data_dir: Path
    dist: Path

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test output
        pass

    def translate_path(self, path: str) -> str:
        clean = path.split("?", 1)[0].split("#", 1)[0]
        if clean.startswith("/eusdx-data/"):
            return str(self.data_dir / Path(clean).name)
        return super().translate_path(path)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        clean = self.path.split("?", 1)[0]
        if clean == "/app-config.js":
            body = APP_CONFIG.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/javascript")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if not clean.startswith("/eusdx-data/") and not Path(self.translate_path(self.path)).exists():
            self.path = "/index.html"  # OHIF routes in the browser
        super().do_GET()


@dataclass
class ViewerServer:
    """OHIF ``dist/`` plus ``/eusdx-data/<file>`` on 127.0.0.1, in a thread."""

    dist: Path
    data_dir: Path
    port: int

    def __post_init__(self) -> None:
        handler = type("Handler", (_Handler,), {"data_dir": self.data_dir, "dist": self.dist})
        factory = functools.partial(handler, directory=str(self.dist))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), factory)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ViewerServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass(frozen=True)
class ViewerPage:
    """What the browser showed: annotation text, page text, console lines, the screenshot path."""

    svg_text: list[str]
    body_text: str
    console: list[dict[str, Any]]
    screenshot: Path


def open_in_chromium(url: str, screenshot: Path, *, wait_for: str, timeout: float = 180.0) -> ViewerPage:
    """Open ``url`` in headless Chromium; wait until an SVG text contains ``wait_for`` or an error shows."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900",
                "--enable-unsafe-swiftshader", "--use-angle=swiftshader", "--no-first-run",
                "--disable-background-networking", "--disable-component-update"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    console: list[dict[str, Any]] = []
    try:
        driver.get(url)
        deadline = time.monotonic() + timeout
        svg_text: list[str] = []
        body = ""
        while time.monotonic() < deadline:
            console.extend(driver.get_log("browser"))
            svg_text = driver.execute_script(
                "return Array.from(document.querySelectorAll('svg text')).map(t => t.textContent);")
            body = driver.execute_script("return document.body ? document.body.innerText : '';")
            if any(wait_for in t for t in svg_text) or "Something went wrong" in body:
                time.sleep(2)  # let the viewport finish painting before the screenshot
                svg_text = driver.execute_script(
                    "return Array.from(document.querySelectorAll('svg text')).map(t => t.textContent);")
                break
            time.sleep(1)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot))
        console.extend(driver.get_log("browser"))
        return ViewerPage(svg_text=svg_text, body_text=body, console=console, screenshot=screenshot)
    finally:
        driver.quit()


def write_index(files: list[Path], data_dir: Path, base_url: str) -> Path:
    """Copy nothing: the files stay where they are; write ``index.json`` next to them."""
    index = data_dir / "index.json"
    index.write_text(json.dumps(dicomjson_index(files, base_url)))
    return index
