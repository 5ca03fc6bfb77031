"""Imports flow one way (DESIGN.md, issue 22): checked on the source, so a stray import fails CI.

The layers, top-down (a package may import only the packages named in its row of ``ALLOWED``):

    cli, demo                     the roof: the ``eusdx`` command and ``eusdx demo``; nothing imports them
    dashboard                     web pages over the audit (and two plotting/statistics modules of models)
    worker                        the per-study pipeline: models + dicom_node (export) + audit
    dicom_node                    DICOM networking: audit
    audit                         the audit trail and its Alembic migrations (audit/migrations)
    models, phantom               the ML a worker loads; the synthetic data generator
    eusdx                         the ground floor: config, errors, logs, failures, durable writes, UIDs, keys

Every import is counted, also those inside functions (a lazy import is still an arrow).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: The ground floor: imports no package of this repository.
GROUND = "eusdx"

#: package -> first-party packages it may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    GROUND: set(),
    # pure statistics (issue 22): numpy/scipy/pandas and the standard library, no project package at all
    "stats": set(),
    "phantom": {GROUND},
    "models": {GROUND, "stats"},
    # the audit knows no models (issue 22): its live-performance report uses the statistics of stats
    "audit": {GROUND, "stats"},
    "dicom_node": {GROUND, "audit"},
    "worker": {GROUND, "audit", "dicom_node", "models"},
    # the dashboard sits above audit: the statistics and the report plotting of models, nothing else of it
    "dashboard": {GROUND, "audit", "models", "stats"},
    # the demo drives the CLI as a subprocess (``python -m cli.main``), never by import
    "demo": {GROUND, "worker"},
    "cli": {GROUND, "phantom", "models", "audit", "dicom_node", "worker", "dashboard", "demo", "stats"},
}

#: Modules of an allowed package that are the only ones a package may reach (prefix match).
ONLY_MODULES: dict[tuple[str, str], tuple[str, ...]] = {
    ("dashboard", "models"): ("models.report.plots",),
}

PACKAGES = tuple(sorted(ALLOWED))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _first_party_edges() -> dict[str, dict[str, list[str]]]:
    """package -> imported first-party package -> ["file imports module", ...]."""
    edges: dict[str, dict[str, list[str]]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in sorted(_imports(path)):
                top = name.split(".")[0]
                if top != package and top in ALLOWED:
                    edges.setdefault(package, {}).setdefault(top, []).append(
                        f"{path.relative_to(ROOT)} imports {name}")
    return edges


def test_every_top_level_package_has_a_layer() -> None:
    found = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name != "tests"}
    assert found == set(ALLOWED), f"add new packages to ALLOWED: {sorted(found ^ set(ALLOWED))}"


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_one_way(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if top == package or top not in ALLOWED:
                continue
            if top not in ALLOWED[package]:
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
            only = ONLY_MODULES.get((package, top))
            if only and not (name.startswith(only)):
                bad.append(f"{path.relative_to(ROOT)} imports {name} ({package} may use {', '.join(only)} only)")
    assert not bad, "\n".join(bad)


def test_the_ground_imports_no_project_package() -> None:
    bad = [line for lines in _first_party_edges().get(GROUND, {}).values() for line in lines]
    assert not bad, "\n".join(bad)


def test_the_audit_imports_no_models() -> None:
    bad = _first_party_edges().get("audit", {}).get("models", [])
    assert not bad, "\n".join(bad)


STATS_ALLOWED = {"numpy", "scipy", "pandas", "__future__"}


def test_stats_is_pure() -> None:
    """stats imports only numpy/scipy/pandas, the standard library and itself (issue 22)."""
    import sys

    bad = []
    for path in sorted((ROOT / "stats").rglob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if top in STATS_ALLOWED or top == "stats" or top in sys.stdlib_module_names:
                continue
            bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_models_and_audit_reach_statistics_through_stats() -> None:
    """models and audit use the top-level stats package; the old models.stats is gone."""
    assert (ROOT / "stats" / "__init__.py").is_file()
    assert not (ROOT / "models" / "stats").exists()
    edges = _first_party_edges()
    assert "stats" in edges.get("models", {}) and "stats" in edges.get("audit", {})


def test_no_package_cycles() -> None:
    """No first-party package reaches itself through the imports of others (e.g. audit <-> migrations)."""
    edges = _first_party_edges()

    def path_back(start: str, node: str, seen: list[str]) -> list[str] | None:
        for nxt in sorted(edges.get(node, {})):
            if nxt == start:
                return [*seen, nxt]
            if nxt not in seen:
                found = path_back(start, nxt, [*seen, nxt])
                if found:
                    return found
        return None

    cycles = [" -> ".join(c) for p in PACKAGES if (c := path_back(p, p, [p]))]
    assert not cycles, "\n".join(cycles)


def test_nothing_imports_the_entry_points() -> None:
    edges = _first_party_edges()
    bad = [line for src, targets in edges.items() if src not in ("cli", "demo")
           for dst in ("cli", "demo") for line in targets.get(dst, [])]
    # demo may not import the CLI either: it runs it as a subprocess, as a user would
    bad += edges.get("demo", {}).get("cli", [])
    assert not bad, "\n".join(bad)


def test_only_the_cli_and_demo_import_worker() -> None:
    offenders = [line for src, targets in _first_party_edges().items() if src not in ("cli", "demo")
                 for line in targets.get("worker", [])]
    assert not offenders, "\n".join(offenders)


def test_the_rules_catch_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: a ground module importing the CLI is found."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from cli.main import app\n    import worker.tasks\n", encoding="utf-8")
    assert _imports(probe) == {"cli.main", "worker.tasks"}


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
