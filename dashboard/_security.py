"""Security headers for dashboard responses and the CSRF check of its forms.

Headers follow the OWASP Secure Headers Project: a strict Content-Security-Policy (no inline
script, nothing from other origins, no framing), ``X-Frame-Options: DENY`` for older browsers,
``X-Content-Type-Options: nosniff``, ``Referrer-Policy: same-origin`` (study UIDs in URLs never
leave in a Referer to another site; ``no-referrer`` would make browsers send ``Origin: null`` on
our own form posts, which the origin check refuses) and ``Cache-Control: no-store`` (pages hold
clinical data).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

__all__ = ["SECURITY_HEADERS", "SecurityHeaders", "csrf_ok", "same_origin"]

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; style-src 'self'; img-src 'self'; "
                                "script-src 'self'; form-action 'self'; frame-ancestors 'none'; "
                                "base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class SecurityHeaders(BaseHTTPMiddleware):
    """Adds :data:`SECURITY_HEADERS` to every response under ``prefix``."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        super().__init__(app)
        self.prefix = prefix

    async def dispatch(self, request: Request,
                       call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        if request.url.path.startswith(self.prefix):
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
        return response


def same_origin(request: Request) -> bool:
    """False when the browser says the request came from another origin (``Origin`` header, or
    ``Sec-Fetch-Site: cross-site``); requests without either (older clients) pass to the token."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    if origin == "null":  # sandboxed frames, file: pages, some redirects
        return False
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


def csrf_ok(expected: str, presented: str | None) -> bool:
    """Constant-time comparison of the session's CSRF token with the form's."""
    return bool(presented) and hmac.compare_digest(expected, str(presented))
