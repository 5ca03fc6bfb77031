"""No unverified unpickling anywhere in the product: checked on the source, so a new
``pickle.load``/``joblib.load`` (or a loader told to trust everything) fails CI."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("eusdx", "cli", "demo", "models", "phantom", "worker", "audit", "dicom_node")

#: (module alias root, attribute) calls that run code named by the file they read.
_UNSAFE_CALLS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("joblib", "load"),
                 ("dill", "load"), ("dill", "loads"), ("cloudpickle", "load"), ("cloudpickle", "loads"),
                 ("torch", "load"), ("pandas", "read_pickle"), ("pd", "read_pickle")}


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names]
            module = node.module if isinstance(node, ast.ImportFrom) else None
            for name in ([module] if module else []) + names:
                if name and name.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib"):
                    if module == "joblib" and set(names) <= {"Parallel", "delayed"}:
                        continue  # joblib's process pool, not its pickle file loader
                    bad.append(f"{rel}:{node.lineno} imports {name}")
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                if (func.value.id, func.attr) in _UNSAFE_CALLS:
                    bad.append(f"{rel}:{node.lineno} calls {func.value.id}.{func.attr}")
            for kw in node.keywords:
                if kw.arg in ("allow_pickle", "trusted") and isinstance(kw.value, ast.Constant) \
                        and kw.value.value is True:
                    bad.append(f"{rel}:{node.lineno} passes {kw.arg}=True")
    return bad


def test_product_never_unpickles() -> None:
    bad = []
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            bad += _violations(path)
    assert not bad, "\n".join(bad)


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import pickle\nimport joblib\nx = pickle.loads(b'')\ny = joblib.load('f')\n"
                      "import numpy as np\nz = np.load('f', allow_pickle=True)\n", encoding="utf-8")
    found = _violations(sample)
    assert len(found) == 5, found
