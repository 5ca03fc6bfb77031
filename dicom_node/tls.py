"""DICOM TLS (PS3.15 Annex B secure transport) contexts for the listener and the exporter."""

from __future__ import annotations

import ssl

from eusdx.config import Settings
from eusdx.errors import ConfigError

__all__ = ["server_context", "client_context"]


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The listener's TLS context, or ``None`` when ``tls_cert`` is unset (plain TCP).

    Raises
    ------
    ConfigError
        Certificate without key, client verification without a CA, or unreadable PEM files.
    """
    if settings.tls_cert is None:
        if settings.tls_require_client_cert:
            raise ConfigError("tls_require_client_cert needs tls_cert, tls_key and tls_ca")
        return None
    if settings.tls_key is None:
        raise ConfigError("tls_cert is set but tls_key is not")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
        if settings.tls_ca is not None:
            ctx.load_verify_locations(cafile=str(settings.tls_ca))
            ctx.verify_mode = (
                ssl.CERT_REQUIRED if settings.tls_require_client_cert else ssl.CERT_OPTIONAL
            )
        elif settings.tls_require_client_cert:
            raise ConfigError("tls_require_client_cert needs tls_ca to verify client certificates")
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate/key/CA: {exc}") from exc
    return ctx


def client_context(settings: Settings) -> ssl.SSLContext:
    """TLS context for exporting: verify the PACS against ``tls_ca``; present our certificate
    when ``tls_cert``/``tls_key`` are set. Host names are not checked (PACS are addressed by IP
    in most hospitals); the CA pins who may answer.

    Raises
    ------
    ConfigError
        ``tls_ca`` is missing or a PEM file cannot be read.
    """
    if settings.tls_ca is None:
        raise ConfigError("export_tls needs tls_ca to verify the destination")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=str(settings.tls_ca))
        if settings.tls_cert is not None and settings.tls_key is not None:
            ctx.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate/key/CA: {exc}") from exc
    return ctx
