"""pynetdicom internals live in one module (dicom_node/_pynetdicom.py), for one tested version range,
and the node never changes Python's process-wide temp directory (issue 22, point 3)."""

from __future__ import annotations

import re
import tempfile
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from packaging.specifiers import SpecifierSet

from dicom_node._pynetdicom import PYNETDICOM_TESTED
from dicom_node.spool import Spool
from tests.dicom_node import scu
from tests.dicom_node.conftest import rows
from tests.dicom_node.dicomfiles import us_instance

ROOT = Path(__file__).resolve().parents[2]
# a private name of pynetdicom: `pynetdicom._x`, `from pynetdicom import _x`, or an attribute the
# node used to reach into (the AE's server list, the ACSE provider, the config module)
_PRIVATE = re.compile(r"pynetdicom\._|from pynetdicom import [^\n]*\b_[a-z]|\._servers\b|\.acse\.|"
                      r"\b_config\.STORE_")


def test_installed_pynetdicom_is_in_the_tested_range_and_pinned_to_it() -> None:
    spec = SpecifierSet(",".join(PYNETDICOM_TESTED))
    assert version("pynetdicom") in spec
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(d for d in deps if d.startswith("pynetdicom"))
    assert SpecifierSet(pin.removeprefix("pynetdicom")) == spec


def test_no_module_but_the_compat_module_touches_pynetdicom_internals() -> None:
    offenders = []
    for package in ("dicom_node", "worker", "eusdx", "cli", "demo", "audit", "tests", "bench", "scripts"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "dicom_node" / "_pynetdicom.py" or path == Path(__file__):
                continue
            for lineno, line in enumerate(path.read_text().splitlines(), 1):
                if _PRIVATE.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_chunked_receive_writes_into_the_spool_without_touching_tempfile_tempdir(
        start_node: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    before = tempfile.tempdir
    sources: list[Path] = []
    place = Spool.place

    def recording(self: Spool, source: Path, study_uid: str, sop_uid: str) -> Path:
        sources.append(Path(source).parent)
        return place(self, source, study_uid, sop_uid)

    monkeypatch.setattr(Spool, "place", recording)
    node, audit, _ = start_node(receive_chunked=True)
    assert tempfile.tempdir == before, "the node changed Python's process-wide temp directory"
    ds = us_instance()
    assert scu.send(node.port, ds) == [0]
    assert sources == [node.spool.tmp_dir]
    assert rows(audit, "SELECT count(*) FROM instances")[0][0] == 1
    node.stop(timeout=5)
    assert tempfile.tempdir == before
