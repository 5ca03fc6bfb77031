"""The audit HMAC key: one per installation, never the built-in one outside development.

Patient identifiers are pseudonymised as HMAC-SHA256 (RFC 2104) with a secret key. Patient IDs
have little entropy, so a pseudonym made with a *public* key is reversed by trying every ID; the
built-in development key therefore only works with ``dev_mode`` on.

Where the key comes from, first match wins:

1. ``audit_hmac_secret`` (``EUSDX_AUDIT_HMAC_SECRET``, e.g. from a container secret) when it is
   not the built-in value;
2. the key file ``audit_hmac_key_path``, which ``eusdx db upgrade`` creates on first run
   (32 random bytes from :func:`secrets.token_bytes`, owner-only ``0600``);
3. the built-in development key (refused by ``eusdx serve`` / ``eusdx worker`` unless ``dev_mode``).

Key file (JSON)::

    {"format": "eusdx-audit-keys/1", "current": "<key id>",
     "keys": {"<key id>": {"secret": "<64 hex>", "created": "<UTC ISO time>"}, ...}}

A key id is the first 16 hex digits of SHA-256 of the key, so the same key always has the same id,
whichever source it came from. Rotation adds a new key and makes it current; old keys stay in the
file so that a pseudonym written before the rotation can still be checked
(:meth:`KeyRing.matching_key`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eusdx.durable import atomic_write_bytes
from eusdx.errors import ConfigError

__all__ = [
    "BUILTIN_AUDIT_SECRET",
    "KEY_FILE_FORMAT",
    "KeyRing",
    "key_id",
    "load_keyring",
    "require_own_key",
    "create_key_file",
    "rotate_key_file",
]

#: The development key that ships in the source. Public, so never good enough for patient data.
BUILTIN_AUDIT_SECRET = "eusdx-embedded-default-secret"
KEY_FILE_FORMAT = "eusdx-audit-keys/1"
#: Values copied from examples that are as public as the built-in key.
_PLACEHOLDERS = ("change-me", "changeme", "<long random")
_MIN_SECRET_BYTES = 16


def key_id(secret: bytes) -> str:
    """Stable identifier of a key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(secret).hexdigest()[:16]


@dataclass(frozen=True)
class KeyRing:
    """The current pseudonymisation key plus older ones kept for verification.

    ``source`` says where the current key came from: ``setting``, ``file`` or ``builtin``.
    """

    current: str
    keys: Mapping[str, bytes] = field(repr=False)
    source: str = "builtin"
    path: Path | None = field(default=None)

    @property
    def secret(self) -> bytes:
        """The current key's bytes."""
        return self.keys[self.current]

    @property
    def builtin(self) -> bool:
        return self.source == "builtin"

    def pseudonym(self, value: str, kid: str | None = None) -> str:
        """HMAC-SHA256 hex of ``value`` with the current key (or key ``kid``)."""
        secret = self.keys[kid or self.current]
        return hmac.new(secret, value.encode("utf-8"), hashlib.sha256).hexdigest()

    def matching_key(self, value: str, pseudonym: str) -> str | None:
        """The id of the key that turns ``value`` into ``pseudonym``, or ``None``."""
        for kid in self.keys:
            if hmac.compare_digest(self.pseudonym(value, kid), pseudonym):
                return kid
        return None


def _weak(secret: str) -> str | None:
    low = secret.strip().lower()
    if secret == BUILTIN_AUDIT_SECRET:
        return "is the built-in development key that ships in the source"
    if any(low.startswith(p) for p in _PLACEHOLDERS):
        return "is a placeholder copied from an example"
    if len(secret.encode("utf-8")) < _MIN_SECRET_BYTES:
        return f"is shorter than {_MIN_SECRET_BYTES} bytes"
    return None


def _read_file(path: Path) -> tuple[str, dict[str, bytes], dict[str, Any]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the audit key file {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"audit key file {path} is not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != KEY_FILE_FORMAT:
        raise ConfigError(f"audit key file {path} is not in format {KEY_FILE_FORMAT}")
    keys: dict[str, bytes] = {}
    for kid, entry in (doc.get("keys") or {}).items():
        try:
            secret = bytes.fromhex(entry["secret"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"audit key file {path}: key {kid} has no valid hex secret") from None
        if key_id(secret) != kid:
            raise ConfigError(f"audit key file {path}: key id {kid} does not match its secret")
        keys[kid] = secret
    current = doc.get("current")
    if current not in keys:
        raise ConfigError(f"audit key file {path}: current key {current!r} is not in the file")
    return str(current), keys, doc


def load_keyring(settings: Any) -> KeyRing:
    """The key ring for ``settings`` (``audit_hmac_secret``, ``audit_hmac_key_path``).

    Raises
    ------
    ConfigError
        The key file exists but cannot be read or is malformed.
    """
    secret = settings.audit_hmac_secret.get_secret_value()
    path = Path(settings.hmac_key_path)
    file_keys: dict[str, bytes] = {}
    file_current = None
    if path.is_file():
        file_current, file_keys, _ = _read_file(path)
    if secret != BUILTIN_AUDIT_SECRET:
        raw = secret.encode("utf-8")
        return KeyRing(key_id(raw), {**file_keys, key_id(raw): raw}, "setting", None)
    if file_current is not None:
        return KeyRing(file_current, file_keys, "file", path)
    raw = BUILTIN_AUDIT_SECRET.encode("utf-8")
    return KeyRing(key_id(raw), {key_id(raw): raw}, "builtin", None)


def require_own_key(settings: Any, command: str) -> KeyRing:
    """Refuse to run ``command`` with a public or weak pseudonymisation key.

    Raises
    ------
    ConfigError
        The key is the built-in one, a placeholder or too short, and ``dev_mode`` is off.
    """
    ring = load_keyring(settings)
    if settings.dev_mode:
        return ring
    if ring.builtin:
        raise ConfigError(
            f"{command} refuses the built-in audit HMAC key: run `eusdx db upgrade` to create a "
            f"per-installation key in {settings.hmac_key_path}, or set audit_hmac_secret "
            "(or dev_mode = true for demos and development only)")
    if ring.source == "setting":
        problem = _weak(settings.audit_hmac_secret.get_secret_value())
        if problem:
            raise ConfigError(f"{command} refuses audit_hmac_secret: it {problem} "
                              "(use at least 32 random bytes, e.g. `openssl rand -hex 32`)")
    return ring


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _write(path: Path, current: str, keys: Mapping[str, bytes], created: Mapping[str, str]) -> None:
    doc = {"format": KEY_FILE_FORMAT, "current": current,
           "keys": {kid: {"secret": k.hex(), "created": created.get(kid, _now())}
                    for kid, k in keys.items()}}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode("ascii"), mode=0o600)


def create_key_file(path: Path) -> tuple[str, bool]:
    """Create the key file with one random 256-bit key unless it exists.

    Returns
    -------
    (key id, created)
        The current key's id and whether the file was created now.
    """
    path = Path(path)
    if path.exists():
        current, _, _ = _read_file(path)
        return current, False
    secret = secrets.token_bytes(32)
    kid = key_id(secret)
    _write(path, kid, {kid: secret}, {})
    return kid, True


def rotate_key_file(path: Path) -> str:
    """Add a new random key to the file and make it current; old keys stay for verification.

    Raises
    ------
    ConfigError
        The file does not exist (run ``eusdx db upgrade`` first) or is malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"audit key file {path} does not exist; `eusdx db upgrade` creates it")
    _, keys, doc = _read_file(path)
    created = {kid: str(entry.get("created", "")) for kid, entry in doc["keys"].items()}
    secret = secrets.token_bytes(32)
    kid = key_id(secret)
    _write(path, kid, {**keys, kid: secret}, created)
    return kid
