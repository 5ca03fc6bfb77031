"""The operator guide's TLS recipe works: its openssl commands make certificates that a real
`eusdx serve` accepts with the guide's settings, and the guide's DCMTK echoscu line succeeds with
the client certificate while a peer without one is refused."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.conftest import TEST_AUDIT_SECRET, free_port, require_tool
from tests.deploy._refs import DOCS

VENV_BIN = Path(sys.executable).parent


def _section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def _blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)\n```", section, re.S)


@pytest.mark.slow
@pytest.mark.dcmtk
def test_documented_tls_setup_accepts_the_pacs_and_refuses_others(tmp_var: Path) -> None:
    echoscu = require_tool("/usr/bin/echoscu")
    openssl = require_tool("openssl")
    bash = require_tool("bash")
    tls = _section((DOCS / "operator-guide.md").read_text(encoding="utf-8"), "## 4. TLS")
    make, *rest = _blocks(tls, "sh")
    workdir = tmp_var / "tls"
    workdir.mkdir()
    # The guide's certificate commands, without the `sudo install` lines that put them in /etc.
    script = "\n".join(line for line in make.splitlines() if not line.startswith("sudo "))
    assert "openssl" in script
    env = {k: v for k, v in os.environ.items() if not k.startswith("EUSDX_")}
    env["PATH"] = f"{Path(openssl).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run([bash, "-euc", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    (toml_block,) = _blocks(tls, "toml")
    conf = tomllib.loads(toml_block.replace("/etc/eusdx/tls/", f"{workdir}/"))
    assert conf["tls_require_client_cert"] is True
    port = free_port()
    config = tmp_var / "eusdx.toml"
    lines = [f"{k} = {str(v).lower()}" if isinstance(v, bool) else f'{k} = "{v}"' for k, v in conf.items()]
    lines += [
        f"dicom_port = {port}",
        'allowed_aes = ["PACS1"]',
        f'database_url = "sqlite:///{tmp_var / "audit.db"}"',
        f'spool_dir = "{tmp_var / "spool"}"',
        f'queue_dir = "{tmp_var / "queue"}"',
        'log_format = "text"',
        f'audit_hmac_secret = "{TEST_AUDIT_SECRET}"',
    ]
    config.write_text("\n".join(lines) + "\n")

    (echo_line,) = [line for b in rest for line in b.splitlines() if "echoscu" in line]
    argv = shlex.split(echo_line)
    assert argv[0] == "/usr/bin/echoscu"
    argv = [echoscu, *argv[1:-2], "127.0.0.1", str(port)]

    log = (tmp_var / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(VENV_BIN / "eusdx"), "--config", str(config), "serve", "--no-worker", "--no-http"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_var,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            ok = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, timeout=60)
            if ok.returncode == 0:
                break
            assert proc.poll() is None, (tmp_var / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, ok.stderr[-1000:]
            time.sleep(0.5)
        # same peer, TLS but no client certificate: refused (tls_require_client_cert = true)
        anonymous = [echoscu, "-aet", "PACS1", "-aec", "EUSDX", "+tla", "+cf", "ca.crt", "127.0.0.1", str(port)]
        assert subprocess.run(anonymous, cwd=workdir, capture_output=True, timeout=60).returncode != 0
        # plain TCP against the TLS port: refused
        plain = [echoscu, "-aet", "PACS1", "-aec", "EUSDX", "127.0.0.1", str(port)]
        assert subprocess.run(plain, cwd=workdir, capture_output=True, timeout=60).returncode != 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
