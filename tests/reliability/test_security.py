"""Security checks not already covered elsewhere (see the report for the existing tests):

* every route of the HTTP API (enumerated from its OpenAPI schema, so a new route is checked
  too) refuses a missing/invalid token with 401 and a wrong role with 403;
* SQL-injection and path-traversal values in every query and path parameter of every route:
  never a 5xx, never a changed table, the hash chain still verifies;
* token values never appear in the logs or in the audit rows of the reads.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from audit import AuditLog
from audit.auth import hash_token
from audit.chain import verify_chain
from audit.http import create_app
from eusdx.config import load_settings
from tests.audit.data import STUDY_A, populate

TOKENS = {"worklist": "wl-SECRET-token-0001", "qa": "qa-SECRET-token-0002",
          "admin": "admin-SECRET-token-0003"}
PAYLOADS = ["' OR '1'='1", "1; DROP TABLE instances; --", "\" OR 1=1 --", "../../etc/passwd",
            "..%2F..%2Fetc%2Fpasswd", "1.2.3/../../..", "%00", "'||(SELECT 1)||'",
            "1 UNION SELECT row_hash FROM chain_head", "\\..\\..\\windows"]
OPEN = {"/healthz", "/metrics", "/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"}


@pytest.fixture
def api(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[tuple[TestClient, AuditLog]]:
    log = AuditLog(f"sqlite:///{tmp_path / 'audit.db'}", "security-secret")
    log.ensure_schema()
    populate(log)
    settings = load_settings(
        database_url=log.database_url,
        api_tokens=[f"ris:worklist:{hash_token(TOKENS['worklist'])}",
                    f"quality:qa:{hash_token(TOKENS['qa'])}",
                    f"root:admin:{hash_token(TOKENS['admin'])}"],
    )
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(log, settings), raise_server_exceptions=False) as client:
        yield client, log
    log.close()


def _routes(client: TestClient) -> list[tuple[str, list[dict]]]:  # type: ignore[type-arg]
    schema = client.get("/openapi.json").json()
    out = []
    for path, ops in schema["paths"].items():
        if "get" in ops and path not in OPEN:
            out.append((path, ops["get"].get("parameters", [])))
    assert len(out) >= 8, out
    return out


def _url(path: str, params: list[dict], value: str | None = None) -> str:  # type: ignore[type-arg]
    for p in params:
        if p["in"] == "path":
            path = path.replace("{" + p["name"] + "}", value if value is not None else STUDY_A)
    return path


def test_every_route_needs_a_token_of_the_right_role(api) -> None:
    client, _ = api
    for path, params in _routes(client):
        url = _url(path, params)
        assert client.get(url).status_code == 401, url
        bad = client.get(url, headers={"Authorization": "Bearer not-a-token"})
        assert bad.status_code == 401, url
        assert client.get(url, headers={"Authorization": "Basic " + TOKENS["admin"]}
                          ).status_code == 401, url
        codes = {role: client.get(url, headers={"Authorization": f"Bearer {tok}"}).status_code
                 for role, tok in TOKENS.items()}
        assert codes["admin"] in (200, 404), (url, codes)  # admin may read everything
        allowed = [r for r, c in codes.items() if c != 403]
        assert all(codes[r] == 403 for r in TOKENS if r not in allowed), (url, codes)
        if "/audit/" in url:
            assert codes["worklist"] == 403, (url, codes)


def _counts(log: AuditLog) -> dict[str, int]:
    with log.engine.connect() as conn:
        tables = [t for t in sa.inspect(conn).get_table_names() if t not in ("qa_events",
                                                                           "chain_head")]
        return {t: conn.execute(sa.text(f'SELECT count(*) FROM "{t}"')).scalar_one()
                for t in tables}


def test_injection_and_traversal_in_every_parameter(api) -> None:
    client, log = api
    before = _counts(log)
    hdr = {"Authorization": f"Bearer {TOKENS['admin']}"}
    tried = 0
    for path, params in _routes(client):
        for value in PAYLOADS:
            for p in params:
                if p["in"] == "path":
                    r = client.get(_url(path, params, value), headers=hdr)
                elif p["in"] == "query":
                    r = client.get(_url(path, params), params={p["name"]: value}, headers=hdr)
                else:
                    continue
                tried += 1
                assert r.status_code < 500, (path, p["name"], value, r.status_code, r.text)
                if r.status_code >= 400:
                    assert r.headers["content-type"].startswith("application/problem+json")
                for leak in ("Traceback", "OperationalError", "sqlalchemy", "sqlite3"):
                    assert leak not in r.text, (path, p["name"], value, r.text[:300])
    assert tried > 50
    assert _counts(log) == before
    with log.engine.connect() as conn:
        assert verify_chain(conn).broken is None


def test_token_values_never_logged_or_stored(api, caplog: pytest.LogCaptureFixture) -> None:
    client, log = api
    for role, tok in TOKENS.items():
        for path, params in _routes(client):
            client.get(_url(path, params), headers={"Authorization": f"Bearer {tok}"})
            client.get(_url(path, params), headers={"Authorization": f"Bearer {tok}x"})
    text = "\n".join(r.getMessage() + " " + str(r.__dict__) for r in caplog.records)
    with log.engine.connect() as conn:
        rows = " ".join(str(r) for r in conn.execute(sa.text("SELECT * FROM qa_events")))
    for tok in TOKENS.values():
        assert tok not in text and tok not in rows
        assert tok[:12] not in rows  # not even a prefix
    assert "ris" in rows or "api:ris" in rows  # the reads are audited, by name


@pytest.mark.dcmtk
def test_tls_refuses_client_certificate_of_another_ca(start_node, tmp_path: Path) -> None:
    """tests/dicom_node/test_tls.py covers no client certificate and plain TCP; here the client
    has a valid certificate from a CA the node does not trust."""
    import subprocess

    from tests.conftest import require_tool
    from tests.dicom_node.conftest import rows, storescu
    from tests.dicom_node.dicomfiles import data_file

    openssl = require_tool("/usr/bin/openssl")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=tmp_path, check=True, capture_output=True, timeout=60)

    for ca in ("ca", "rogue"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out",
            f"{ca}.pem", "-days", "2", "-subj", f"/CN={ca}")
    for name, ca in (("server", "ca"), ("client", "ca"), ("intruder", "rogue")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
            f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-sha256")
    node, audit, _ = start_node(tls_cert=tmp_path / "server.pem", tls_key=tmp_path / "server.key",
                                tls_ca=tmp_path / "ca.pem", tls_require_client_cert=True)
    path = data_file("SC_rgb.dcm")

    def send(who: str) -> int:
        return storescu(node.port, path, extra=["-R", "-xe", "+tls", str(tmp_path / f"{who}.key"),
                                                str(tmp_path / f"{who}.pem"), "+cf",
                                                str(tmp_path / "ca.pem")]).returncode

    assert send("intruder") != 0
    assert rows(audit, "select 1 from instances") == []
    assert send("client") == 0
    assert len(rows(audit, "select 1 from instances where status='stored'")) == 1
