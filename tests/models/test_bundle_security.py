"""Bundles whose origin is proven, and that cannot run code when read.

Each test plays an attacker who can write the bundle folder (and so can recompute every SHA-256
in the manifest) but does not hold the trusted signing key.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from eusdx.config import load_settings
from eusdx.errors import ConfigError
from models.bundle import BundleError, BundleTrust, load_bundle, sha256_file, verify_bundle
from models.safe_store import UnsafeModelFile, dump_models, load_models
from models.signing import generate_key_pair, sign_manifest
from tests.conftest import bundle_public_key


class _Payload:
    """Unpickling this creates ``path`` (a stand-in for any code an attacker wants to run)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.path, "w"))


class _EvilState:
    """An object that acts when its state is restored (what skops would call on load)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __setstate__(self, state: dict[str, str]) -> None:
        Path(state["path"]).write_text("owned")


@pytest.fixture
def trust(tiny_bundle: Path) -> BundleTrust:
    return BundleTrust.from_paths([bundle_public_key(tiny_bundle)])


@pytest.fixture
def attacker_key(tmp_path: Path) -> Path:
    generate_key_pair(tmp_path / "attacker.pem", tmp_path / "attacker.pub.pem")
    return tmp_path / "attacker.pem"


def _copy(tiny_bundle: Path, dst: Path) -> Path:
    shutil.copytree(Path(tiny_bundle).resolve(), dst)
    return dst


def _rehash(bundle: Path, *, add: dict[str, Path] | None = None, drop: tuple[str, ...] = ()) -> None:
    """What an attacker does after replacing files: make the manifest consistent again."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    for rel in drop:
        manifest["files"].pop(rel, None)
    for rel in list(manifest["files"]):
        manifest["files"][rel] = sha256_file(bundle / rel)
    for rel in add or {}:
        manifest["files"][rel] = sha256_file(bundle / rel)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def test_payload_really_runs_when_unpickled(tmp_path: Path) -> None:
    """The attack is real: plain unpickling of the payload creates the file."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


def test_malicious_pickle_bundle_refused_before_any_code_runs(
        tiny_bundle: Path, tmp_path: Path, trust: BundleTrust, attacker_key: Path) -> None:
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Payload(marker))
    # 1. models.skops replaced by a pickle, manifest rehashed and re-signed with the attacker's key
    b = _copy(tiny_bundle, tmp_path / "b1")
    (b / "models.skops").write_bytes(evil)
    _rehash(b)
    sign_manifest(b, attacker_key)
    with pytest.raises(BundleError, match="not in bundle_trusted_keys"):
        load_bundle(b, trust=trust)
    # 2. the same bundle loaded with no origin check at all: the safe loader still refuses it
    with pytest.raises(BundleError, match="not a skops model file"):
        load_bundle(b)
    with pytest.raises(BundleError, match="not a skops model file"):
        verify_bundle(b)
    # 3. a format-1 style bundle that lists a pickled models.joblib
    b = _copy(tiny_bundle, tmp_path / "b3")
    (b / "models.joblib").write_bytes(evil)
    _rehash(b, add={"models.joblib": b / "models.joblib"})
    with pytest.raises(BundleError, match=r"models\.joblib is a pickle-based format"):
        load_bundle(b)
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["format"] = "eusdx-bundle/1"
    (b / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="eusdx-bundle/1 stores pickled models"):
        load_bundle(b)
    # 4. a skops file that names a type outside the trusted list
    b = _copy(tiny_bundle, tmp_path / "b4")
    dump_models({"svm/combined": _EvilState(marker)}, b / "models.skops")
    _rehash(b)
    with pytest.raises(BundleError, match=r"not trusted: .*_EvilState"):
        load_bundle(b)
    with pytest.raises(UnsafeModelFile, match="_EvilState"):
        load_models(b / "models.skops")
    assert not marker.exists()


def test_manifest_resigned_with_untrusted_key_refused(
        tiny_bundle: Path, tmp_path: Path, trust: BundleTrust, attacker_key: Path) -> None:
    assert load_bundle(tiny_bundle, trust=trust).version  # the genuine bundle loads
    b = _copy(tiny_bundle, tmp_path / "b")
    config = json.loads((b / "config.json").read_text())
    config["threshold"] = 0.99  # quietly call every GIST a leiomyoma
    (b / "config.json").write_text(json.dumps(config))
    _rehash(b)
    # the genuine signature no longer matches the changed manifest
    with pytest.raises(BundleError, match="does not match manifest.json"):
        load_bundle(b, trust=trust)
    # re-signed by the attacker: a key the configuration does not trust
    sign_manifest(b, attacker_key)
    with pytest.raises(BundleError, match=r"signed by key [0-9a-f]{16}, which is not in bundle_trusted_keys"):
        load_bundle(b, trust=trust)
    # signature removed: unsigned bundles are refused where keys are configured
    (b / "manifest.sig").unlink()
    with pytest.raises(BundleError, match="manifest.sig is missing"):
        load_bundle(b, trust=trust)


def test_pinned_digest_admits_exactly_one_bundle(tiny_bundle: Path, tmp_path: Path) -> None:
    raw = (Path(tiny_bundle) / "manifest.json").read_bytes()
    pin = hashlib.sha256(raw).hexdigest()
    assert verify_bundle(tiny_bundle, trust=BundleTrust(pin=pin)) == pin
    with pytest.raises(BundleError, match="is not the pinned bundle_sha256"):
        verify_bundle(tiny_bundle, trust=BundleTrust(pin="0" * 64))


def test_worker_trust_needs_keys_or_a_pin_outside_dev_mode(tmp_path: Path, tiny_bundle: Path) -> None:
    with pytest.raises(ConfigError, match="no bundle_trusted_keys"):
        BundleTrust.from_settings(load_settings(None, spool_dir=tmp_path / "spool"))
    assert BundleTrust.from_settings(load_settings(None, dev_mode=True)).allow_unsigned
    settings = load_settings(None, bundle_trusted_keys=str(bundle_public_key(tiny_bundle)))
    assert len(BundleTrust.from_settings(settings).keys) == 1


def test_worker_refuses_to_start_with_a_resigned_bundle(
        tiny_bundle: Path, tmp_path: Path, attacker_key: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import TEST_AUDIT_SECRET, bundle_trust_env

    b = _copy(tiny_bundle, tmp_path / "b")
    sign_manifest(b, attacker_key)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EUSDX_")}
    env.update(EUSDX_BUNDLE=str(b), EUSDX_QUEUE_DIR=str(tmp_path / "q"), EUSDX_SPOOL_DIR=str(tmp_path / "spool"),
               EUSDX_DATABASE_URL=f"sqlite:///{tmp_path}/audit.db", EUSDX_AUDIT_HMAC_SECRET=TEST_AUDIT_SECRET,
               **bundle_trust_env(tiny_bundle))
    proc = subprocess.run([str(Path(sys.executable).with_name("eusdx")), "worker"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "not in bundle_trusted_keys" in proc.stderr


@pytest.mark.parametrize("split_at", [None, 5])
def test_every_pipeline_round_trips_through_the_safe_format(tmp_path: Path, split_at: int | None) -> None:
    """Every classifier/selector pipeline training can produce is stored and read back by the
    safe loader with the same probabilities: a new estimator type must be added to the trusted
    list on purpose (and fails here until it is)."""
    import numpy as np

    from models import classifiers as C

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 10))
    y = np.r_[np.zeros(20), np.ones(20)].astype(int)
    models = {f"{c}/{s}": C.make_pipeline(c, selector=s, k=4, split_at=split_at).fit(x, y)
              for c in C.CLASSIFIERS for s in ("lasso", "mrmr", "none")}
    models["lr-stacker/late-fusion"] = {"model": C.fit_stacker(rng.random((40, 3)), y)[0], "inputs": ["a"]}
    dump_models(models, tmp_path / "models.skops")
    back = load_models(tmp_path / "models.skops")
    for key, model in models.items():
        if isinstance(model, dict):
            continue
        assert np.allclose(model.predict_proba(x), back[key].predict_proba(x)), key
