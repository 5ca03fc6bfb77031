"""The systemd units: restart policy, hardening, paths, and `systemd-analyze verify` when present."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy._refs import DEPLOY, REPO, SYSTEMD, parse_unit, systemd_units

UNITS = ("eusdx-node.service", "eusdx-worker@.service", "eusdx-export-worker.service")
Unit = dict[str, dict[str, list[str]]]


def _unit(name: str) -> Unit:
    return parse_unit(SYSTEMD / name)


def _one(unit: Unit, section: str, key: str) -> str:
    values = unit.get(section, {}).get(key)
    assert values, f"[{section}] {key} missing"
    return values[-1]


def _seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix) and text[: -len(suffix)].strip().replace(".", "").isdigit():
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


def _env_file() -> dict[str, str]:
    out = {}
    for line in (DEPLOY / "eusdx.example.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_the_three_units_exist_and_nothing_else() -> None:
    assert tuple(sorted(p.name for p in systemd_units())) == tuple(sorted(UNITS))


@pytest.mark.parametrize("name", UNITS)
def test_restart_policy_and_graceful_stop(name: str) -> None:
    unit = _unit(name)
    assert _one(unit, "Service", "Restart") in ("on-failure", "always")
    assert _seconds(_one(unit, "Service", "RestartSec")) >= 1
    assert _one(unit, "Service", "KillSignal") == "SIGTERM"
    assert _seconds(_one(unit, "Service", "TimeoutStopSec")) >= 60
    assert _one(unit, "Install", "WantedBy") == "multi-user.target"
    # a crash loop must stop eventually rather than hammer the PACS and the DB
    assert int(_one(unit, "Unit", "StartLimitBurst")) >= 1


def test_worker_stop_timeout_covers_the_task_time_limit() -> None:
    from eusdx.config import Settings

    limit = Settings.model_fields["task_time_limit_seconds"].default
    stop = _seconds(_one(_unit("eusdx-worker@.service"), "Service", "TimeoutStopSec"))
    assert stop > limit, "systemd would SIGKILL a study Celery is still allowed to finish"


@pytest.mark.parametrize("name", UNITS)
def test_hardening(name: str) -> None:
    svc = _unit(name)["Service"]
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "EnvironmentFile": "/etc/eusdx/eusdx.env",
    }
    for key, value in expected.items():
        assert svc.get(key, [None])[-1] == value, f"{name}: {key} should be {value}"
    assert svc["User"][-1] not in ("root", "0")
    assert "/var/lib/eusdx" in " ".join(svc["ReadWritePaths"]).split()
    assert svc["MemoryMax"][-1][:-1].isdigit() and svc["MemoryMax"][-1][-1] in "KMGT"
    assert svc["SystemCallFilter"][-1] == "@system-service"


@pytest.mark.parametrize("name", UNITS)
def test_no_capabilities_unless_the_dicom_port_is_privileged(name: str) -> None:
    svc = _unit(name)["Service"]
    port = int(_env_file()["EUSDX_DICOM_PORT"])
    if name == "eusdx-node.service" and port < 1024:
        assert svc["CapabilityBoundingSet"][-1] == "CAP_NET_BIND_SERVICE"
    else:
        assert svc["CapabilityBoundingSet"][-1] == "", f"{name} keeps capabilities it does not need"
        assert svc["AmbientCapabilities"][-1] == ""


def test_state_paths_of_the_env_file_are_writable() -> None:
    env = _env_file()
    for name in UNITS:
        writable = " ".join(_unit(name)["Service"]["ReadWritePaths"]).split()
        for key in ("EUSDX_SPOOL_DIR", "EUSDX_BUNDLE"):
            path = Path(env[key])
            assert any(path.is_relative_to(w.lstrip("-")) for w in writable), f"{name}: {key} read-only"


def test_gpu_worker_template_binds_its_instance_to_one_gpu() -> None:
    svc = _unit("eusdx-worker@.service")["Service"]
    assert "CUDA_VISIBLE_DEVICES=%i" in svc["Environment"]
    assert "/dev/nvidia%i rw" in svc["DeviceAllow"]
    assert svc["PrivateDevices"][-1] == "no" and svc["DevicePolicy"][-1] == "closed"
    assert "--queues analysis" in svc["ExecStart"][-1]
    for other in ("eusdx-node.service", "eusdx-export-worker.service"):
        assert _unit(other)["Service"]["PrivateDevices"][-1] == "yes"


def test_only_the_node_migrates_the_schema() -> None:
    assert "db upgrade" in _one(_unit("eusdx-node.service"), "Service", "ExecStartPre")
    for name in ("eusdx-worker@.service", "eusdx-export-worker.service"):
        unit = _unit(name)
        assert "ExecStartPre" not in unit["Service"]
        assert "eusdx-node.service" in _one(unit, "Unit", "After")


def test_parser_rejects_lines_outside_a_section(tmp_path: Path) -> None:
    bad = tmp_path / "bad.service"
    bad.write_text("ExecStart=/bin/true\n")
    with pytest.raises(ValueError, match="cannot parse line"):
        parse_unit(bad)


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed; the Python checks above still ran")
    eusdx = REPO / ".venv" / "bin" / "eusdx"
    if not eusdx.exists():
        pytest.skip(f"{eusdx} missing: the units' ExecStart cannot be resolved")
    # verify checks that ExecStart exists: point it at this checkout's eusdx.
    for unit in systemd_units():
        text = unit.read_text().replace("/opt/eusdx/venv/bin/eusdx", str(eusdx))
        (tmp_path / unit.name).write_text(text)
    (tmp_path / "eusdx-worker@0.service").write_text((tmp_path / "eusdx-worker@.service").read_text())
    targets = [str(tmp_path / n) for n in ("eusdx-node.service", "eusdx-worker@0.service", "eusdx-export-worker.service")]
    out = subprocess.run(
        [tool, "verify", "--man=no", *targets], capture_output=True, text=True, timeout=120, check=False
    )
    # verify exits 0 on unknown keys and bad values, so any message counts as a failure.
    messages = (out.stdout + out.stderr).strip()
    assert out.returncode == 0 and not messages, messages


def test_systemd_analyze_verify_is_strict_enough(tmp_path: Path) -> None:
    """The check above must fail on the mistakes it is there for: a typo'd key or a bad value."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed")
    bad = tmp_path / "bad.service"
    bad.write_text("[Service]\nExecStart=/bin/true\nNoNewPrivilege=yes\nProtectSystem=maybe\n")
    out = subprocess.run([tool, "verify", "--man=no", str(bad)], capture_output=True, text=True, timeout=60)
    assert "Unknown key" in out.stderr and "NoNewPrivilege" in out.stderr


def test_systemd_analyze_security_exposure_is_low(tmp_path: Path) -> None:
    """`systemd-analyze security --offline` rates every unit "OK" (exposure below 2.5 of 10)."""
    import re

    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed")
    eusdx = REPO / ".venv" / "bin" / "eusdx"
    if not eusdx.exists():
        pytest.skip(f"{eusdx} missing")
    for unit in systemd_units():
        (tmp_path / unit.name).write_text(unit.read_text().replace("/opt/eusdx/venv/bin/eusdx", str(eusdx)))
    (tmp_path / "eusdx-worker@0.service").write_text((tmp_path / "eusdx-worker@.service").read_text())
    for name in ("eusdx-node.service", "eusdx-worker@0.service", "eusdx-export-worker.service"):
        out = subprocess.run(
            [tool, "security", "--offline=yes", "--no-pager", str(tmp_path / name)],
            capture_output=True, text=True, timeout=120, check=False,
        )
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", out.stdout + out.stderr)
        assert m, (out.stdout + out.stderr)[-1000:]
        assert float(m[1]) < 2.5, f"{name}: exposure {m[1]}"
