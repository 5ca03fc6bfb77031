"""The Compose files: services, GPU reservations, health checks, secrets, volumes, CPU override."""

from __future__ import annotations

import copy
import os
import re
from typing import Any

import pytest

from tests.deploy._refs import DEPLOY, load_compose

_INTERP = re.compile(r"\$\{(?P<var>[A-Z0-9_]+)(?::?-(?P<default>[^}]*))?\}")


def _base() -> dict[str, Any]:
    return load_compose(DEPLOY / "compose.yaml")


def _cpu() -> dict[str, Any]:
    return load_compose(DEPLOY / "compose.cpu.yaml")


def _is_reset(value: Any) -> bool:
    return isinstance(value, dict) and value.get("__compose_tag__") == "reset"


def merge(base: Any, override: Any) -> Any:
    """Compose's merge for the shapes we use: mappings merge, `!reset` removes, the rest replaces."""
    if isinstance(base, dict) and isinstance(override, dict) and not _is_reset(override):
        out = dict(base)
        for key, value in override.items():
            if _is_reset(value):
                out.pop(key, None)
            elif key in out:
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out
    return copy.deepcopy(override)


def _eusdx_services(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: spec
        for name, spec in data["services"].items()
        if isinstance(spec.get("command"), list) and spec["command"][:1] == ["eusdx"]
    }


def _gpu_devices(spec: dict[str, Any]) -> list[dict[str, Any]]:
    devices = (((spec.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices")
    return [] if not devices or _is_reset(devices) else list(devices)


def _resolve(value: str) -> str:
    """Apply ${VAR:-default} with an empty environment, as `docker compose config` would."""
    return _INTERP.sub(lambda m: m["default"] or "", value)


def test_expected_services_exist() -> None:
    services = _base()["services"]
    for name in ("redis", "postgres", "db-migrate", "node", "export-worker", "flower"):
        assert name in services, f"compose.yaml has no service {name}"
    analysis = [n for n, s in services.items() if "analysis" in (s.get("command") or [])]
    assert len(analysis) >= 2, "expected one analysis worker per GPU, at least two"


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, spec in _base()["services"].items():
        if name == "db-migrate":
            assert spec["restart"] == "no", "the migration is a one-off"
            continue
        test = (spec.get("healthcheck") or {}).get("test")
        assert test, f"service {name} has no healthcheck"


def test_node_healthcheck_hits_healthz_on_the_configured_http_port() -> None:
    node = _base()["services"]["node"]
    probe = " ".join(node["healthcheck"]["test"])
    port = node["environment"]["EUSDX_HTTP_PORT"]
    assert f"127.0.0.1:{port}/healthz" in probe
    assert node["environment"]["EUSDX_HTTP_HOST"] == "0.0.0.0"
    published = [_resolve(p) for p in node["ports"]]
    assert "11112:11112" in published
    assert any(p.endswith(f":{port}") for p in published)


def test_gpu_workers_reserve_distinct_nvidia_devices() -> None:
    services = _base()["services"]
    ids: list[str] = []
    for name, spec in services.items():
        if "analysis" not in (spec.get("command") or []):
            assert not _gpu_devices(spec), f"{name} reserves a GPU but is not an analysis worker"
            continue
        (dev,) = _gpu_devices(spec)
        assert dev["driver"] == "nvidia"
        assert "gpu" in dev["capabilities"]
        ids += dev["device_ids"]
        assert spec["environment"]["EUSDX_DEVICE"] == "cuda"
        assert spec["command"][spec["command"].index("--concurrency") + 1] == "1"
    assert len(ids) == len(set(ids)), f"two workers share a GPU: {ids}"


def test_depends_on_targets_exist_and_migration_gates_the_eusdx_services() -> None:
    services = _base()["services"]
    for name, spec in services.items():
        for target, cond in (spec.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            expected = "service_completed_successfully" if target == "db-migrate" else "service_healthy"
            assert cond["condition"] == expected, f"{name} -> {target}"
    for name in _eusdx_services(_base()):
        if name != "db-migrate":
            assert "db-migrate" in services[name]["depends_on"], f"{name} may start before the schema"


def test_secrets_are_declared_and_file_variables_point_at_mounted_secrets() -> None:
    data = _base()
    declared = set(data["secrets"])
    for name, spec in data["services"].items():
        mounted = {s if isinstance(s, str) else s["source"] for s in spec.get("secrets") or []}
        assert mounted <= declared, f"{name} uses undeclared secrets {mounted - declared}"
        for key, value in (spec.get("environment") or {}).items():
            if key.endswith("_FILE") or str(value).startswith("/run/secrets/"):
                secret = str(value).removeprefix("/run/secrets/")
                assert secret in mounted, f"{name}: {key} reads {value}, which is not mounted"
    for secret, spec in data["secrets"].items():
        assert spec["file"].startswith("./secrets/"), f"{secret} must live in deploy/secrets/"
    # The secret folder never lets key material into git.
    ignore = (DEPLOY / "secrets" / ".gitignore").read_text().split()
    assert ignore[0] == "*"


def test_volumes_are_declared_and_the_spool_is_shared() -> None:
    data = _base()
    declared = set(data["volumes"])
    mounts: dict[str, dict[str, str]] = {}
    for name, spec in data["services"].items():
        for vol in spec.get("volumes") or []:
            source, target, *_ = vol.split(":")
            if not source.startswith(("/", ".", "$")):
                assert source in declared, f"{name} mounts undeclared volume {source}"
            mounts.setdefault(name, {})[source] = target
    spool_dir = data["x-env"]["EUSDX_SPOOL_DIR"]
    assert mounts["node"]["spool"] == spool_dir
    for name, spec in data["services"].items():
        if "analysis" in (spec.get("command") or []):
            assert mounts[name]["spool"] == spool_dir, f"{name} cannot read the spool"


def test_containers_are_locked_down() -> None:
    for name, spec in _eusdx_services(_base()).items():
        assert spec["read_only"] is True, name
        assert spec["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in spec["security_opt"], name


def test_cpu_override_removes_every_gpu_reservation() -> None:
    base, cpu = _base(), _cpu()
    assert set(cpu["services"]) <= set(base["services"]), "override names a service compose.yaml lacks"
    merged = merge(base, cpu)
    running = 0
    for name, spec in merged["services"].items():
        assert not _gpu_devices(spec), f"{name} still reserves a GPU in CPU mode"
        if "analysis" in (spec.get("command") or []) and (spec.get("deploy") or {}).get("replicas", 1) > 0:
            running += 1
            assert spec["environment"]["EUSDX_DEVICE"] == "cpu"
            assert spec["environment"]["EUSDX_BROKER_URL"].startswith("redis://"), "env merge lost keys"
    assert running >= 1, "CPU mode has no analysis worker"
    assert merged["services"]["node"]["build"]["args"]["TORCH_INDEX_URL"].endswith("/whl/cpu")
    images = {s.get("image") for n, s in merged["services"].items() if n in _eusdx_services(merged)}
    assert len(images) == 1, f"CPU mode mixes images: {images}"


def test_merge_helper_applies_reset() -> None:
    # The helper is what the CPU test relies on; check it against Compose's documented semantics.
    base = {"a": {"b": [1], "c": 1}, "d": 1}
    over = {"a": {"b": {"__compose_tag__": "reset", "value": []}, "c": 2}}
    assert merge(base, over) == {"a": {"c": 2}, "d": 1}


@pytest.mark.parametrize("file", ["compose.yaml", "compose.cpu.yaml"])
def test_eusdx_environment_validates_against_settings(file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from eusdx.config import load_settings

    data = merge(_base(), _cpu()) if file == "compose.cpu.yaml" else _base()
    for name, spec in _eusdx_services(data).items():
        for key in [k for k in os.environ if k.startswith("EUSDX_")]:
            monkeypatch.delenv(key)
        for key, value in spec["environment"].items():
            if key.endswith("_FILE"):
                continue  # filled by the entrypoint from the secret (tests/deploy/test_entrypoint.py)
            monkeypatch.setenv(key, _resolve(str(value)))
        settings = load_settings()
        assert str(settings.spool_dir) == "/var/lib/eusdx/spool", name
        assert settings.broker_url == "redis://redis:6379/0", name
