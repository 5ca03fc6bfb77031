"""Imports flow one way (DESIGN.md): checked on the source, so a stray import fails CI."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("dicom_node", "worker", "models", "audit", "migrations", "eusdx", "dashboard")

# package -> first-party packages it must never import
FORBIDDEN = {
    "models": {"dicom_node", "worker", "audit", "migrations", "dashboard"},
    "dicom_node": {"worker", "models", "dashboard"},
    # audit may use models.stats for the live-performance report (issue 3, item 6), nothing else of models
    "audit": {"dicom_node", "worker", "dashboard"},
    "migrations": {"dicom_node", "worker", "models", "dashboard"},
    # the web dashboard sits above audit: it may use audit, eusdx's ground modules and the
    # statistics / report plotting of models, never the node, the worker or the rest of models
    "dashboard": {"dicom_node", "worker"},
    "worker": {"dashboard"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if top in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
            if package == "audit" and top == "models" and name not in {"models", "models.stats"}:
                bad.append(f"{path.relative_to(ROOT)} imports {name} (audit may use models.stats only)")
            if package == "dashboard" and top == "models" and not name.startswith(
                    ("models.stats", "models.report.plots")):
                bad.append(f"{path.relative_to(ROOT)} imports {name} "
                           "(dashboard may use models.stats and models.report.plots only)")
            if package == "dashboard" and top == "eusdx" and name.startswith("eusdx.cli"):
                bad.append(f"{path.relative_to(ROOT)} imports {name} (the CLI sits above it)")
    assert not bad, "\n".join(bad)


def test_only_the_cli_imports_worker() -> None:
    offenders = []
    for package in PACKAGES:
        if package in ("worker", "eusdx"):
            continue
        for path in (ROOT / package).rglob("*.py"):
            if any(n.split(".")[0] == "worker" for n in _imports(path)):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders


def test_torch_is_pinned_exactly() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '"torch==2.14.1"' in text
    assert '"torchvision==0.29.1"' in text


def test_no_hub_downloads_of_weights() -> None:
    pattern = re.compile(r"pretrained\s*=\s*True")
    bad = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for lineno, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line) and "pretrained_cfg_overlay" not in line and "file=" not in line:
                    bad.append(f"{path.relative_to(ROOT)}:{lineno}")
    assert not bad, bad
