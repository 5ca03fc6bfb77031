"""Fixtures every test folder may use: free ports, real services, external tools.

Locally a missing tool or service skips the tests that need it; in CI (``EUSDX_REQUIRE_TOOLS=1``) it
fails them instead, so a green CI always means the real peers were exercised.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REQUIRE_TOOLS = os.environ.get("EUSDX_REQUIRE_TOOLS") == "1"
POSTGRES_URL = os.environ.get("EUSDX_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("EUSDX_TEST_REDIS", "redis://127.0.0.1:6379/0")
#: Audit HMAC key of every test that starts ``eusdx serve`` or ``eusdx worker``: they refuse the
#: built-in development key (``eusdx.keys``). Known to the tests only, never used for patient data.
TEST_AUDIT_SECRET = "eusdx-tests-only-audit-hmac-key-3f9a1c"
#: File name of the public half of the session's bundle signing key (see ``tiny_bundle``).
BUNDLE_PUBLIC_KEY = "bundle-signing.pub.pem"


def _missing(what: str) -> None:
    if REQUIRE_TOOLS:
        pytest.fail(f"{what} is required in CI but missing")
    pytest.skip(f"{what} not available")


def require_tool(path: str) -> str:
    """Return the absolute path of an external tool, or skip/fail when it is missing.

    DCMTK tools must be called by full path (``/usr/bin/storescu``): pynetdicom installs its own
    ``storescu``/``storescp``/``echoscu`` into the venv, which would shadow DCMTK's.
    """
    resolved = path if os.path.isabs(path) else shutil.which(path)
    if not resolved or not os.access(resolved, os.X_OK):
        _missing(path)
    return str(resolved)


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>`` (not a package) as a module, e.g. ``load_script("config_table.py")``."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / name
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema on the PostgreSQL at 127.0.0.1:5432, dropped afterwards."""
    if not _reachable("127.0.0.1", 5432):
        _missing("PostgreSQL at 127.0.0.1:5432")
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def redis_url() -> str:
    """A Redis database number no other test uses at the same time, flushed before use."""
    if not _reachable("127.0.0.1", 6379):
        _missing("Redis at 127.0.0.1:6379")
    import redis

    db = 1 + (os.getpid() % 14)
    url = REDIS_URL.rsplit("/", 1)[0] + f"/{db}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def tmp_var(tmp_path: Path) -> Path:
    """A private ``var/`` (spool, audit DB, bundles) for one test."""
    var = tmp_path / "var"
    (var / "spool").mkdir(parents=True)
    return var


# Shared by the worker, reliability and demo tests: built once per session, whoever asks first.
@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three phantom patients (one study each: 3 images + 3 SEGs)."""
    from phantom import generate_cohort

    out = tmp_path_factory.mktemp("phantom")
    generate_cohort(out, 3, 7)
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle trained ONCE per session on 16 phantom patients with minimal settings.

    ``EUSDX_TEST_BUNDLE`` may point at an already trained bundle (local reruns); CI trains it.
    """
    import os

    given = os.environ.get("EUSDX_TEST_BUNDLE")
    if given:
        return Path(given)
    from phantom import generate_cohort
    from models.signing import generate_key_pair
    from models.training import TrainConfig, train

    root = tmp_path_factory.mktemp("tiny-bundle")
    generate_key_pair(root / "bundle-signing.pem", root / BUNDLE_PUBLIC_KEY)
    manifest = generate_cohort(root / "cohort", 16, 11)
    config = TrainConfig(seed=0, device="cpu", epochs=1, e2e_epochs=1, end_to_end=False, cv_splits=2,
                         jobs=1, progress=False, max_frames_per_series=2, image_size=64, grid_search=False,
                         backbone_folds=2)
    result = train(manifest, root / "bundles", config=config, signing_key=root / "bundle-signing.pem")
    return result.bundle_dir


def bundle_public_key(bundle: Path) -> Path:
    """The public key that verifies ``tiny_bundle`` (next to its ``bundles`` folder).

    With ``EUSDX_TEST_BUNDLE`` set, ``EUSDX_TEST_BUNDLE_KEY`` names it.
    """
    given = os.environ.get("EUSDX_TEST_BUNDLE_KEY")
    if given:
        return Path(given)
    return Path(bundle).resolve().parent.parent / BUNDLE_PUBLIC_KEY


def bundle_trust_env(bundle: Path) -> dict[str, str]:
    """``EUSDX_*`` variables that make a worker trust ``tiny_bundle``'s signer."""
    return {"EUSDX_BUNDLE_TRUSTED_KEYS": str(bundle_public_key(bundle))}
