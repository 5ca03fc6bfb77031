"""deploy/Dockerfile against pyproject.toml: every package and file the build needs is copied."""

from __future__ import annotations

import re
import tomllib

from tests.deploy._refs import DEPLOY, REPO

DOCKERFILE = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
IGNORE = [
    line.strip()
    for line in (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _packages() -> list[str]:
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted({p.rstrip("*").rstrip(".") for p in include})


def test_every_package_of_pyproject_is_copied_and_not_ignored() -> None:
    for pkg in _packages():
        assert re.search(rf"^COPY {pkg}/ {pkg}/$", DOCKERFILE, re.M), f"Dockerfile does not copy {pkg}/"
        assert f"!{pkg}/" in IGNORE, f"Dockerfile.dockerignore hides {pkg}/ from the build context"


def test_files_pip_install_reads_are_in_the_context() -> None:
    needed = ["pyproject.toml"]
    readme = PYPROJECT["project"].get("readme")
    if isinstance(readme, str):
        needed.append(readme)
    for name in needed:
        assert re.search(rf"^COPY .*\b{re.escape(name)}\b", DOCKERFILE, re.M), name
        assert f"!{name}" in IGNORE, name
    assert IGNORE[0] == "**", "the ignore file must start from 'exclude all' (no .venv, var/ in the context)"


def test_base_image_user_and_entrypoint() -> None:
    froms = re.findall(r"^FROM\s+(\S+)", DOCKERFILE, re.M)
    assert froms and all(f == "${PYTHON_IMAGE}" for f in froms)
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in DOCKERFILE
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"
    assert re.search(r'^ENTRYPOINT \["/usr/bin/tini", "--", "/usr/local/bin/eusdx-entrypoint"\]$', DOCKERFILE, re.M)
    assert "COPY deploy/docker-entrypoint.sh /usr/local/bin/eusdx-entrypoint" in DOCKERFILE
    # the uid the Kubernetes securityContext and the Compose secret note rely on
    assert "--uid 10001" in DOCKERFILE


def test_torch_pins_come_from_pyproject() -> None:
    deps = PYPROJECT["project"]["dependencies"]
    pins = [d for d in deps if d.startswith(("torch==", "torchvision=="))]
    assert len(pins) == 2, "the Dockerfile installs torch/torchvision by their == pins first"


def test_the_pin_extraction_of_the_build_stage_runs() -> None:
    """Run the Dockerfile's own `pins=$(python -c ...)` line against this pyproject.toml."""
    import os
    import subprocess
    import sys

    m = re.search(r"^\s*(pins=\$\(python -c .*\));\s*\\$", DOCKERFILE, re.M)
    assert m, "the build stage no longer derives the torch pins from pyproject.toml"
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(
        ["sh", "-c", f'{m.group(1)}; printf %s "$pins"'], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=60, check=True,
    )
    deps = PYPROJECT["project"]["dependencies"]
    expected = [d.split(";")[0].strip() for d in deps if d.startswith(("torch==", "torchvision=="))]
    assert out.stdout.split() == expected
