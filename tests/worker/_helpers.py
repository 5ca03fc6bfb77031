"""Shared helpers of the worker tests: fake model results, SR validators, source images."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from tests.conftest import require_tool

SHA = "0123456789abcdef" * 4


@dataclass(frozen=True)
class FakeResult:
    """Has the fields of ``models.bundle.ImageResult`` the SR builder reads."""

    key: str
    probability: float
    label: str
    roi_polygon: list[tuple[float, float]]
    roi_source: str = "automatic"
    roi_confidence: float = 0.8
    timings: dict[str, float] = field(default_factory=dict)


def us_image() -> Dataset:
    """A real ultrasound instance from pydicom-data (640x480 RGB, Ultrasound Image Storage)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("US1_UNCR.dcm", download=False)
    assert path is not None, "pydicom-data US1_UNCR.dcm missing"
    return pydicom.dcmread(path)


def dciodvfy_errors(path: Path) -> list[str]:
    """Lines dciodvfy reports as errors (warnings are allowed)."""
    tool = require_tool("/usr/bin/dciodvfy")
    out = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    return [line for line in text.splitlines() if line.startswith("Error")]


def dsrdump(path: Path) -> str:
    """The content tree as DCMTK's dsrdump prints it; fails the test when dsrdump cannot read the file."""
    tool = require_tool("/usr/bin/dsrdump")
    out = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "E: " not in out.stderr and "W: " not in out.stderr, out.stderr
    return out.stdout
