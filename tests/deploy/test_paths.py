"""Every path a containerised eusdx process uses lies on a mounted volume with the right access.

The containers run with a read-only root file system, so a path that resolves outside the
mounts (for example a new default like ``./var/...``) would fail at run time only. The paths are
computed by the real ``Settings`` from each container's environment.
"""

from __future__ import annotations

import os
import re
from pathlib import PurePosixPath
from typing import Any

import pytest

from tests.deploy._refs import DEPLOY, K8S, load_compose, load_yaml_docs

_INTERP = re.compile(r"\$\{(?P<var>[A-Z0-9_]+)(?::?-(?P<default>[^}]*))?\}")
Mounts = dict[str, bool]  # mount path -> writable


def _settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    from eusdx.config import load_settings

    for key in [k for k in os.environ if k.startswith("EUSDX_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("EUSDX_") and not key.endswith("_FILE"):
            monkeypatch.setenv(key, value)
    return load_settings()


def _mount_for(path: PurePosixPath, mounts: Mounts) -> tuple[str, bool] | None:
    best = None
    for mount, writable in mounts.items():
        if path == PurePosixPath(mount) or PurePosixPath(mount) in path.parents:
            if best is None or len(mount) > len(best[0]):
                best = (mount, writable)
    return best


def _require(where: str, what: str, path: Any, mounts: Mounts, *, write: bool) -> None:
    p = PurePosixPath(str(path))
    assert p.is_absolute(), f"{where}: {what} is relative ({p}); the working directory is read-only"
    found = _mount_for(p, mounts)
    assert found is not None, f"{where}: {what} {p} is on the read-only root file system"
    if write:
        assert found[1], f"{where}: {what} {p} is on the read-only mount {found[0]}"


def _check_roles(where: str, role: str, settings: Any, mounts: Mounts) -> None:
    for key in ("tls_cert", "tls_key", "tls_ca"):
        if getattr(settings, key) is not None:
            _require(where, key, getattr(settings, key), mounts, write=False)
    if role in ("node", "analysis", "export"):
        _require(where, "outbox", settings.outbox_path, mounts, write=True)
    if role == "node":
        _require(where, "spool", settings.spool_dir, mounts, write=True)
    if role == "analysis":
        _require(where, "spool", settings.spool_dir, mounts, write=False)
        _require(where, "bundle", settings.bundle, mounts, write=False)


def _role(words: list[str]) -> str | None:
    if "serve" in words:
        return "node"
    if "worker" in words:
        queues = words[words.index("--queues") + 1] if "--queues" in words else "analysis,export"
        return "analysis" if "analysis" in queues else "export"
    return None


# --- Compose ----------------------------------------------------------------------------------


def _compose_mounts(spec: dict[str, Any]) -> Mounts:
    mounts: Mounts = {}
    for vol in spec.get("volumes") or []:
        parts = _INTERP.sub(lambda m: m["default"] or "", vol).split(":")
        mounts[parts[1]] = not (len(parts) > 2 and "ro" in parts[2].split(","))
    for secret in spec.get("secrets") or []:
        name = secret if isinstance(secret, str) else secret.get("target", secret["source"])
        mounts[f"/run/secrets/{name}"] = False
    for tmp in spec.get("tmpfs") or []:
        mounts[tmp.split(":")[0]] = True
    if not spec.get("read_only"):
        mounts["/"] = True
    return mounts


@pytest.mark.parametrize("service", ["node", "analysis-0", "analysis-1", "export-worker"])
def test_compose_paths_are_on_volumes(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_compose(DEPLOY / "compose.yaml")["services"][service]
    env = {k: _INTERP.sub(lambda m: m["default"] or "", str(v)) for k, v in spec["environment"].items()}
    role = _role(spec["command"])
    assert role is not None
    _check_roles(f"compose {service}", role, _settings(env, monkeypatch), _compose_mounts(spec))


def test_compose_analysis_and_export_share_the_outbox_volume() -> None:
    services = load_compose(DEPLOY / "compose.yaml")["services"]
    sources = {
        name: {v.split(":")[0] for v in spec.get("volumes") or []}
        for name, spec in services.items()
        if _role(spec.get("command") or []) in ("node", "analysis", "export")
    }
    assert all("outbox" in s for s in sources.values()), sources


# --- Kubernetes -------------------------------------------------------------------------------


def _k8s() -> list[dict[str, Any]]:
    return [d for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml" for d in load_yaml_docs(p)]


def _k8s_cases() -> list[tuple[str, str]]:
    out = []
    for d in _k8s():
        if d["kind"] not in ("Deployment", "Job"):
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            if _role([str(w) for w in c.get("command") or []]):
                out.append((d["metadata"]["name"], c["name"]))
    return out


@pytest.mark.parametrize(("deployment", "container"), _k8s_cases())
def test_kubernetes_paths_are_on_volumes(deployment: str, container: str, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = _k8s()
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "eusdx-config"]
    (dep,) = [d for d in docs if d["metadata"]["name"] == deployment and d["kind"] in ("Deployment", "Job")]
    (c,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == container]
    env: dict[str, str] = {}
    for src in c.get("envFrom") or []:
        assert src["configMapRef"]["name"] == "eusdx-config"
        env.update(cm["data"])
    for e in c.get("env") or []:
        env[e["name"]] = e.get("value", "secret-value-placeholder")
    env.pop("EUSDX_DATABASE_URL", None)
    env.pop("EUSDX_API_TOKENS", None)  # secret values: their format is checked elsewhere
    mounts: Mounts = {m["mountPath"]: not m.get("readOnly", False) for m in c.get("volumeMounts") or []}
    if not (c.get("securityContext") or {}).get("readOnlyRootFilesystem"):
        mounts["/"] = True
    role = _role([str(w) for w in c["command"]])
    assert role is not None
    _check_roles(f"{deployment}/{container}", role, _settings(env, monkeypatch), mounts)


def test_a_path_off_the_volumes_is_reported() -> None:
    with pytest.raises(AssertionError, match="read-only root file system"):
        _require("x", "outbox", "/var/lib/eusdx/outbox", {"/var/lib/eusdx/spool": True}, write=True)
    with pytest.raises(AssertionError, match="read-only mount"):
        _require("x", "spool", "/s/a", {"/s": False}, write=True)
    with pytest.raises(AssertionError, match="is relative"):
        _require("x", "queue", "var/queue", {"/": True}, write=True)


# Keys whose value must be the same in every process: the worker records the destinations of an
# SR when it submits it to the outbox the node sends from, and both sides resolve the same paths.
_SHARED = ("export_destinations", "ae_title", "spool_dir", "outbox_path", "broker_url", "export_tls")


def test_every_compose_process_sees_the_same_shared_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    services = load_compose(DEPLOY / "compose.yaml")["services"]
    seen: dict[str, tuple[Any, ...]] = {}
    for name, spec in services.items():
        if _role(spec.get("command") or []) is None:
            continue
        env = {k: _INTERP.sub(lambda m: m["default"] or "", str(v)) for k, v in spec["environment"].items()}
        settings = _settings(env, monkeypatch)
        seen[name] = tuple(str(getattr(settings, key)) for key in _SHARED)
    assert len(set(seen.values())) == 1, seen


def test_every_kubernetes_process_sees_the_same_shared_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = _k8s()
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "eusdx-config"]
    seen: dict[str, tuple[Any, ...]] = {}
    for deployment, container in _k8s_cases():
        (dep,) = [d for d in docs if d["metadata"]["name"] == deployment and d["kind"] in ("Deployment", "Job")]
        (c,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == container]
        env = dict(cm["data"])
        for e in c.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            env[e["name"]] = f"secret:{ref['key']}" if ref else e["value"]
        if "serve" in c["command"] or "worker" in c["command"]:
            assert env.get("EUSDX_BROKER_URL") == "secret:broker-url", f"{deployment} has no broker"
        env = {k: v for k, v in env.items() if not v.startswith("secret:") or k == "EUSDX_BROKER_URL"}
        if deployment == "eusdx-db-upgrade":
            continue
        settings = _settings(env, monkeypatch)
        seen[deployment] = tuple(str(getattr(settings, key)) for key in _SHARED)
    assert len(seen) >= 3 and len(set(seen.values())) == 1, seen
