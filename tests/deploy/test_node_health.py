"""The node's health check of Compose (and the /healthz the probes use), run against `eusdx serve`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.deploy._refs import DEPLOY, K8S, load_compose, load_yaml_docs

VENV_BIN = Path(sys.executable).parent


@pytest.mark.slow  # starts the real daemon: a few seconds to ~30 s on a busy machine
def test_compose_healthcheck_passes_against_a_running_node(tmp_var: Path) -> None:
    node = load_compose(DEPLOY / "compose.yaml")["services"]["node"]
    kind, *argv = node["healthcheck"]["test"]
    assert kind == "CMD"
    configured = node["environment"]["EUSDX_HTTP_PORT"]
    http_port, dicom_port = free_port(), free_port()
    # The check is written for the container's port; run it against this test's port.
    argv = [a.replace(f":{configured}/", f":{http_port}/") for a in argv]
    assert argv[0] == "python"
    argv[0] = sys.executable
    (dep,) = [d for d in load_yaml_docs(K8S / "node.yaml") if d["kind"] == "Deployment"]
    probe = dep["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]

    env = {k: v for k, v in os.environ.items() if not k.startswith("EUSDX_")}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        EUSDX_DICOM_PORT=str(dicom_port),
        EUSDX_HTTP_PORT=str(http_port),
        EUSDX_HTTP_HOST="127.0.0.1",
        EUSDX_DATABASE_URL=f"sqlite:///{tmp_var / 'audit.db'}",
        EUSDX_SPOOL_DIR=str(tmp_var / "spool"),
        EUSDX_QUEUE_DIR=str(tmp_var / "queue"),
        EUSDX_LOG_FORMAT="text",
    )
    # First run, as the systemd unit's ExecStartPre and the Kubernetes db-upgrade job do: migrate
    # and create the per-installation audit key (serve refuses the built-in one).
    upgrade = subprocess.run([str(VENV_BIN / "eusdx"), "db", "upgrade"], env=env, cwd=tmp_var,
                             capture_output=True, text=True, timeout=120)
    assert upgrade.returncode == 0 and "audit HMAC key" in upgrade.stdout, upgrade.stderr
    log = (tmp_var / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(VENV_BIN / "eusdx"), *node["command"][1:], "--no-worker"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_var,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            check = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
            if check.returncode == 0:
                break
            assert proc.poll() is None, (tmp_var / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"node never became healthy: {check.stderr[-500:]}"
            time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{probe['path']}", timeout=5) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as resp:
            assert resp.status == 200 and b"# TYPE" in resp.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)  # compose.yaml gives the node 60 s (stop_grace_period)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("eusdx serve ignored SIGTERM for 60 s")
        log.close()
    assert proc.returncode == 0, (tmp_var / "serve.log").read_text()[-3000:]
