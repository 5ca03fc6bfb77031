"""What the HTTP channels (``stowrs``, ``webhook``) share: one configured ``requests`` session per
destination, and the rule that sorts HTTP answers into permanent and transient refusals.

Rule (RFC 9110 15.5/15.6): 4xx means the request itself is wrong and sending it again cannot
help, except 408 Request Timeout and 429 Too Many Requests (both invite a retry); 5xx and every
network error (refused connection, timeout, TLS handshake failure) are transient.
"""

from __future__ import annotations

from typing import Any

import requests

from eusdx.config import Destination
from eusdx.failures import DeliveryError

__all__ = ["session_for", "refusal", "network_failure", "RETRYABLE_4XX"]

RETRYABLE_4XX = (408, 429)


def session_for(destination: Destination) -> requests.Session:
    """A session with the destination's credentials and certificate checks.

    Certificates are always verified (``tls_ca`` when given, else the system store or the
    ``REQUESTS_CA_BUNDLE`` of the environment) unless the destination sets ``tls_verify = false``
    (then, and with ``tls_ca``, the environment's proxy and CA variables are not read);
    ``tls_client_cert``/``tls_client_key`` present a client certificate (mutual TLS).
    """
    session = requests.Session()
    if destination.bearer_token is not None:
        session.headers["Authorization"] = f"Bearer {destination.bearer_token.get_secret_value()}"
    elif destination.username is not None and destination.password is not None:
        session.auth = (destination.username, destination.password.get_secret_value())
    if not destination.tls_verify:
        session.verify = False
    elif destination.tls_ca is not None:
        session.verify = str(destination.tls_ca)
    if not destination.tls_verify or destination.tls_ca is not None:
        # requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE win over session.verify; a
        # destination's own certificate settings must not be replaced by the environment.
        session.trust_env = False
    if destination.tls_client_cert is not None and destination.tls_client_key is not None:
        session.cert = (str(destination.tls_client_cert), str(destination.tls_client_key))
    return session


def refusal(what: str, response: Any, detail: str = "") -> DeliveryError:
    """A :class:`DeliveryError` for a non-success HTTP answer (permanent for 4xx but 408/429)."""
    code = int(response.status_code)
    reason = str(getattr(response, "reason", "") or "").strip()
    permanent = 400 <= code < 500 and code not in RETRYABLE_4XX
    text = f"{what} answered HTTP {code}{' ' + reason if reason else ''}"
    if detail:
        text += f": {detail}"
    return DeliveryError(text, permanent=permanent)


def network_failure(what: str, exc: BaseException) -> DeliveryError:
    """A transient :class:`DeliveryError` for a request that got no HTTP answer."""
    kind = "TLS check failed" if isinstance(exc, requests.exceptions.SSLError) else \
        "timed out" if isinstance(exc, requests.exceptions.Timeout) else \
        "could not be reached"
    return DeliveryError(f"{what} {kind}: {type(exc).__name__}")
