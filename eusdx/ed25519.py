"""Ed25519 key files (RFC 8032, via ``cryptography``): the one place that reads and writes them.

Used by :mod:`models.signing` (bundle signatures) and :mod:`audit.anchor` (audit chain anchors).
Private keys are PKCS#8 PEM without a passphrase, written owner-only (``0600``) and never
overwritten; public keys are SubjectPublicKeyInfo PEM. A key id is the first 16 hex digits of
SHA-256 of the raw 32-byte public key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from eusdx.durable import atomic_write_bytes
from eusdx.errors import ConfigError

__all__ = ["key_id", "create_private_key", "write_public_key", "load_private_key", "load_public_key"]


def key_id(public: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 of the raw public key."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def create_private_key(path: str | Path) -> Ed25519PrivateKey | None:
    """Write a new private key to ``path`` (0600, parent made 0700); ``None`` if ``path`` exists."""
    path = Path(path)
    if path.exists():
        return None
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_bytes(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()), mode=0o600)
    return key


def write_public_key(path: str | Path, public: Ed25519PublicKey) -> None:
    """Write ``public`` as PEM (0644)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, public.public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo), mode=0o644)


def load_private_key(path: str | Path, what: str = "signing key") -> Ed25519PrivateKey:
    """Read an Ed25519 private key.

    Raises
    ------
    ConfigError
        Missing, unreadable, not PEM or not Ed25519; the message names ``what`` and the file.
    """
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"the {what} {path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"the {what} {path} is not an Ed25519 key")
    return key


def load_public_key(path: str | Path, what: str = "public key") -> Ed25519PublicKey:
    """Read an Ed25519 public key. Raises :class:`ConfigError` naming ``what`` and the file."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"the {what} {path} is not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"the {what} {path} is not an Ed25519 public key")
    return key
