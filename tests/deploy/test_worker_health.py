"""The worker health checks of Compose and Kubernetes, run against a real `eusdx worker` and Redis.

The check is a Celery broadcast ping to ``eusdx@<hostname>``; it only works while the worker's
node name and the probe agree, which is exactly the kind of drift these tests are for.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TEST_AUDIT_SECRET
from tests.deploy._refs import DEPLOY, K8S, load_compose, load_yaml_docs

VENV_BIN = Path(sys.executable).parent


def _compose_probe() -> tuple[list[str], str]:
    data = load_compose(DEPLOY / "compose.yaml")
    spec = data["services"]["export-worker"]
    kind, script = spec["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    # Compose turns "$$" into a literal "$" before the shell sees it.
    return list(spec["command"]), script.replace("$$", "$")


def _k8s_probe(name: str) -> str:
    (dep,) = [d for d in load_yaml_docs(K8S / name) if d["kind"] == "Deployment"]
    cmd = dep["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["exec"]["command"]
    assert cmd[:2] == ["sh", "-c"]
    return str(cmd[2])


def _probe(script: str, env: dict[str, str], hostname: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", script],
        env={**env, "HOSTNAME": hostname},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.redis
@pytest.mark.slow  # starts a real prefork worker: ~10-40 s on a busy machine
def test_worker_healthchecks_answer_for_a_running_worker(redis_url: str, tmp_var: Path) -> None:
    command, compose_script = _compose_probe()
    assert command[0] == "eusdx"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EUSDX_")}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        EUSDX_BROKER_URL=redis_url,
        EUSDX_DATABASE_URL=f"sqlite:///{tmp_var / 'audit.db'}",
        EUSDX_SPOOL_DIR=str(tmp_var / "spool"),
        EUSDX_BUNDLE=str(tmp_var / "bundles" / "current"),
        EUSDX_LOG_FORMAT="text",
        EUSDX_AUDIT_HMAC_SECRET=TEST_AUDIT_SECRET,
    )
    host = socket.gethostname()
    log = (tmp_var / "worker.log").open("w")
    proc = subprocess.Popen(
        [str(VENV_BIN / "eusdx"), *command[1:]], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_var
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            out = _probe(compose_script, env, host)
            if out.returncode == 0:
                break
            assert proc.poll() is None, (tmp_var / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"worker never answered the health check: {out.stderr}"
            time.sleep(0.5)
        for manifest in ("worker-export.yaml", "worker-gpu.yaml"):
            ok = _probe(_k8s_probe(manifest), env, host)
            assert ok.returncode == 0, ok.stderr
        # a container whose worker is not there must fail the check
        other = _probe(compose_script, env, "no-such-host")
        assert other.returncode != 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("worker ignored SIGTERM for 60 s (systemd/K8s would SIGKILL it)")
        log.close()
    assert proc.returncode == 0, (tmp_var / "worker.log").read_text()[-3000:]
