"""Dashboard sessions: a token is exchanged once for a signed, expiring session cookie.

The cookie holds ``{"n": name, "r": role, "e": expiry (epoch s), "c": CSRF token, "i": id}`` as
base64url JSON followed by an HMAC-SHA256 of it (RFC 2104, ``hmac.compare_digest`` on check). It is
``HttpOnly`` (no script can read it), ``SameSite=Strict`` (no cross-site request carries it) and
``Secure`` on HTTPS. Only the token's configured name and role are kept; the token itself never
leaves the login request. The role is re-checked against the token table's roles on every request.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import secrets
import time

from audit.auth import ROLES

__all__ = ["Session", "SessionSigner", "COOKIE", "LOGIN_COOKIE"]

COOKIE = "eusdx_session"
#: Double-submit cookie protecting the login form itself (there is no session yet).
LOGIN_COOKIE = "eusdx_login"


@dataclasses.dataclass(frozen=True)
class Session:
    """A logged-in principal: token name, role, CSRF token of the session, expiry."""

    name: str
    role: str
    csrf: str
    expires: float
    id: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Issues and checks session cookies with one key.

    ``key`` empty: a random key for this process (sessions end when the server restarts).
    """

    def __init__(self, key: str, *, minutes: int) -> None:
        raw = key.encode("utf-8") if key else secrets.token_bytes(32)
        # Derive, so the configured text is never used as the MAC key directly.
        self._key = hashlib.sha256(b"eusdx-dashboard-session|" + raw).digest()
        self.lifetime = int(minutes) * 60

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, name: str, role: str, *, now: float | None = None) -> tuple[str, Session]:
        """Return ``(cookie value, session)`` for a principal that just logged in."""
        now = time.time() if now is None else now
        session = Session(name=name, role=role, csrf=secrets.token_urlsafe(24),
                          expires=now + self.lifetime, id=secrets.token_urlsafe(9))
        payload = _b64(json.dumps({"n": name, "r": role, "c": session.csrf,
                                   "e": int(session.expires), "i": session.id},
                                  separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}", session

    def check(self, value: str | None, *, now: float | None = None) -> Session | None:
        """The session of a cookie value, or ``None`` when missing, forged, expired or malformed."""
        if not value or value.count(".") != 1:
            return None
        payload, mac = value.split(".")
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            data = json.loads(_unb64(payload))
            session = Session(name=str(data["n"]), role=str(data["r"]), csrf=str(data["c"]),
                              expires=float(data["e"]), id=str(data["i"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.role not in ROLES:
            return None
        if (time.time() if now is None else now) >= session.expires:
            return None
        return session

    def login_token(self) -> tuple[str, str]:
        """``(cookie value, form value)`` of the login form's double-submit CSRF pair."""
        nonce = secrets.token_urlsafe(24)
        return f"{nonce}.{self._mac('login|' + nonce)}", nonce

    def login_ok(self, cookie: str | None, form_value: str | None) -> bool:
        """Whether the login form's CSRF value matches the cookie set with the form."""
        if not cookie or not form_value or cookie.count(".") != 1:
            return False
        nonce, mac = cookie.split(".")
        return (hmac.compare_digest(mac, self._mac("login|" + nonce))
                and hmac.compare_digest(nonce, form_value))
