"""DICOM TLS (PS3.15 Annex B, Non-downgrading BCP 195 profile): server certificate, client-certificate
verification and export with DCMTK peers using +tls/+py on both sides; TLS 1.0/1.1 refused."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
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
    """A throw-away CA and certificates it signed (RSA 2048, SHA-256): ``server`` names
    127.0.0.1/localhost, ``client`` is a client, ``impostor`` names another host."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=eusdx test CA", cwd=d)
    names = {"server": "IP:127.0.0.1,DNS:localhost", "client": "DNS:client",
             "impostor": "DNS:pacs.elsewhere.example"}
    for name, san in names.items():
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-sha256",
                 "-extfile", f"{name}.ext", cwd=d)
    return d


def test_tls_with_client_certificate(start_node, pki):
    node, audit, _ = start_node(tls_cert=pki / "server.pem", tls_key=pki / "server.key",
                                tls_ca=pki / "ca.pem", tls_require_client_cert=True)
    path = data_file("SC_rgb.dcm")
    # +py: DCMTK's Non-downgrading BCP 195 profile (its default, named to say what is tested)
    ok = storescu(node.port, path, extra=["-R", "-xe", "+tls", str(pki / "client.key"),
                                          str(pki / "client.pem"), "+cf", str(pki / "ca.pem"), "+py"])
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

    tls = ["+tls", str(pki / "server.key"), str(pki / "server.pem"), "+cf", str(pki / "ca.pem"), "+py"]
    with DcmtkStoreSCP(tmp_path / "pacs", extra=tls) as pacs:
        settings = make_settings(export_destinations=[f"PACS@127.0.0.1:{pacs.port}"],
                                 export_tls=True, tls_ca=pki / "ca.pem",
                                 tls_cert=pki / "client.pem", tls_key=pki / "client.key")
        study = generate_uid()
        item = export.submit(settings, make_sr(study), study)
        runner = ExportRunner(settings, audit_for(settings))
        assert runner.run_once() == [(item, f"PACS@127.0.0.1:{pacs.port}", "sent")]
        assert len(pacs.files()) == 1


def _handshake(port: int, version: ssl.TLSVersion, ciphers: str) -> str:
    """A Python ``ssl`` client pinned to one TLS version; returns the negotiated cipher or raises."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    ctx.set_ciphers(ciphers)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw) as tls:
            return str(tls.cipher()[0])


def _legacy_server(pki: Path, version: ssl.TLSVersion) -> tuple[int, threading.Thread]:
    """A control server that does accept ``version``: proves this machine's OpenSSL can still
    speak it, so a refusal by eusdx comes from eusdx's profile and not from the library."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ctx.maximum_version = version
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def serve() -> None:
        with srv:
            conn, _ = srv.accept()
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass  # the client decides the test; a failed control handshake shows there

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1],
                         ids=["TLSv1.0", "TLSv1.1"])
def test_tls10_and_tls11_clients_are_refused(start_node, pki, version):
    legacy = "ALL:@SECLEVEL=0"
    port, thread = _legacy_server(pki, version)
    try:
        _handshake(port, version, legacy)  # the client really speaks it
    except ssl.SSLError as exc:
        pytest.skip(f"this OpenSSL cannot speak {version.name} even at SECLEVEL=0: {exc}")
    thread.join(5)
    node, audit, _ = start_node(tls_cert=pki / "server.pem", tls_key=pki / "server.key",
                                tls_ca=pki / "ca.pem")
    with pytest.raises(ssl.SSLError, match=r"(?i)version|protocol|handshake"):
        _handshake(node.port, version, legacy)
    # a TLS 1.2 client with a suite outside BCP 195 (RSA key exchange, CBC) is refused too
    with pytest.raises(ssl.SSLError):
        _handshake(node.port, ssl.TLSVersion.TLSv1_2, "AES128-SHA:@SECLEVEL=0")
    # the profile's own suites are accepted
    assert _handshake(node.port, ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-AES128-GCM-SHA256") == \
        "ECDHE-RSA-AES128-GCM-SHA256"
    assert rows(audit, "select 1 from instances") == []


def test_export_checks_the_destination_host_name(make_settings, audit_for, pki, tmp_path):
    """A PACS certificate from the trusted CA that names another host is refused on export (the
    check ``export_tls_check_hostname = false`` switches off for sites that cannot issue names)."""
    from pydicom.uid import generate_uid

    from dicom_node import export
    from dicom_node.export import ExportRunner
    from tests.dicom_node.peers import DcmtkStoreSCP
    from tests.dicom_node.test_export import make_sr

    tls = ["+tls", str(pki / "impostor.key"), str(pki / "impostor.pem"), "+cf", str(pki / "ca.pem"),
           "-ic"]
    with DcmtkStoreSCP(tmp_path / "pacs", extra=tls) as pacs:
        dest = f"PACS@127.0.0.1:{pacs.port}"
        settings = make_settings(export_destinations=[dest], export_tls=True, tls_ca=pki / "ca.pem",
                                 export_max_attempts=1)
        study = generate_uid()
        export.submit(settings, make_sr(study), study)
        runner = ExportRunner(settings, audit_for(settings))
        (result,) = runner.run_once()
        assert result[2] != "sent"
        assert pacs.files() == []
        lax = make_settings(export_destinations=[dest], export_tls=True, tls_ca=pki / "ca.pem",
                            export_tls_check_hostname=False)
        study = generate_uid()
        item = export.submit(lax, make_sr(study), study)
        assert ExportRunner(lax, audit_for(lax)).run_once()[-1] == (item, dest, "sent")
        assert len(pacs.files()) == 1
