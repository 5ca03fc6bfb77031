"""DICOM TLS: server certificate, client-certificate verification, with DCMTK storescu +tls."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.dicom_node.conftest import rows, storescu
from tests.dicom_node.dicomfiles import data_file

pytestmark = pytest.mark.dcmtk


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([require_tool("/usr/bin/openssl"), *args], cwd=cwd, check=True,
                   capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A throw-away CA, a server and a client certificate (RSA 2048, SHA-256)."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=eusdx test CA", cwd=d)
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-sha256", cwd=d)
    return d


def test_tls_with_client_certificate(start_node, pki):
    node, audit, _ = start_node(tls_cert=pki / "server.pem", tls_key=pki / "server.key",
                                tls_ca=pki / "ca.pem", tls_require_client_cert=True)
    path = data_file("SC_rgb.dcm")
    ok = storescu(node.port, path, extra=["-R", "-xe", "+tls", str(pki / "client.key"),
                                          str(pki / "client.pem"), "+cf", str(pki / "ca.pem")])
    assert ok.returncode == 0, ok.stderr
    assert rows(audit, "select tls, accepted from associations where event='open'") == [
        (True, True)]
    anonymous = storescu(node.port, path, extra=["-R", "-xe", "+tla", "+cf",
                                                 str(pki / "ca.pem")])
    assert anonymous.returncode != 0
    plain = storescu(node.port, path, extra=["-R", "-xe"])
    assert plain.returncode != 0
    assert len(rows(audit, "select 1 from instances where status='stored'")) == 1


def test_export_over_tls_to_dcmtk(make_settings, audit_for, pki, tmp_path):
    """The exporter presents our client certificate and verifies the PACS against tls_ca."""
    from pydicom.uid import generate_uid

    from dicom_node import export
    from dicom_node.export import ExportRunner
    from tests.dicom_node.peers import DcmtkStoreSCP
    from tests.dicom_node.test_export import make_sr

    tls = ["+tls", str(pki / "server.key"), str(pki / "server.pem"), "+cf", str(pki / "ca.pem")]
    with DcmtkStoreSCP(tmp_path / "pacs", extra=tls) as pacs:
        settings = make_settings(export_destinations=[f"PACS@127.0.0.1:{pacs.port}"],
                                 export_tls=True, tls_ca=pki / "ca.pem",
                                 tls_cert=pki / "client.pem", tls_key=pki / "client.key")
        study = generate_uid()
        item = export.submit(settings, make_sr(study), study)
        runner = ExportRunner(settings, audit_for(settings))
        assert runner.run_once() == [(item, f"PACS@127.0.0.1:{pacs.port}", "sent")]
        assert len(pacs.files()) == 1
