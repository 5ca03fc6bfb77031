"""DICOM TLS contexts for the listener and the exporter: PS3.15 Annex B, the Non-downgrading BCP 195
TLS Secure Transport Connection Profile.

What the profile asks and where it is done here:

* TLS 1.2 or later only; no fallback to TLS 1.0/1.1 or SSL (``minimum_version = TLSv1_2``; a peer
  that offers only an older version fails the handshake and never reaches the DICOM layer).
* The cipher suites BCP 195 (RFC 7525 section 4.2, kept by RFC 9325) recommends for TLS 1.2:
  ephemeral (EC)DHE key exchange with AES-GCM, :data:`BCP195_TLS12_CIPHERS`; TLS 1.3 suites are
  all AEAD and are left at OpenSSL's defaults. No compression (RFC 7525 section 3.3).
* Peer authentication with X.509 certificates: the listener verifies client certificates against
  ``tls_ca`` (required with ``tls_require_client_cert``); the exporter always verifies the PACS
  against ``tls_ca`` and, unless ``export_tls_check_hostname`` is off, that the certificate names
  the destination's host name or IP address (RFC 6125; ``ssl.SSLContext.check_hostname``).

DCMTK's ``storescu``/``storescp`` use the same profile by default (``+py``, ``--profile-bcp195-nd``).
"""

from __future__ import annotations

import ssl

from eusdx.config import Settings
from eusdx.errors import ConfigError

__all__ = ["BCP195_TLS12_CIPHERS", "server_context", "client_context"]

#: OpenSSL names of the TLS 1.2 suites of RFC 7525 section 4.2 (TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
#: TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, TLS_DHE_RSA_WITH_AES_128_GCM_SHA256,
#: TLS_DHE_RSA_WITH_AES_256_GCM_SHA384) and their ECDSA-certificate twins.
BCP195_TLS12_CIPHERS: tuple[str, ...] = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384",
)


def _apply_profile(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(":".join(BCP195_TLS12_CIPHERS))
    ctx.options |= ssl.OP_NO_COMPRESSION
    return ctx


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
    ctx = _apply_profile(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
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
    """TLS context for exporting: verify the PACS against ``tls_ca`` and (by default) that its
    certificate names the host we connect to; present our certificate when
    ``tls_cert``/``tls_key`` are set. Pass the destination host as pynetdicom's
    ``tls_args=(context, host)`` so the name is checked.

    Raises
    ------
    ConfigError
        ``tls_ca`` is missing or a PEM file cannot be read.
    """
    if settings.tls_ca is None:
        raise ConfigError("export_tls needs tls_ca to verify the destination")
    ctx = _apply_profile(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.check_hostname = settings.export_tls_check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=str(settings.tls_ca))
        if settings.tls_cert is not None and settings.tls_key is not None:
            ctx.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate/key/CA: {exc}") from exc
    return ctx
