"""Who made a bundle: Ed25519 signatures over its manifest, checked before anything is loaded.

The manifest lists the SHA-256 of every bundle file, so a signature over the manifest's bytes
covers the whole bundle. ``eusdx train --signing-key`` (or ``eusdx bundle sign``) writes
``manifest.sig``::

    {"format": "eusdx-bundle-signature/1", "algorithm": "Ed25519", "key": "<key id>",
     "signature": "<base64 of Ed25519(manifest.json bytes)>"}

The worker accepts a bundle only when the signature verifies with one of the public keys in
``bundle_trusted_keys`` and, when ``bundle_sha256`` is set, the manifest's SHA-256 equals that pin.
Unsigned bundles are accepted with ``dev_mode`` only. Ed25519: RFC 8032, via ``cryptography``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from eusdx.durable import atomic_write_bytes
from eusdx.ed25519 import create_private_key, key_id, load_private_key, load_public_key, write_public_key
from eusdx.errors import ConfigError, DataError

__all__ = [
    "SIGNATURE_FILE",
    "SIGNATURE_FORMAT",
    "BundleTrust",
    "SignatureError",
    "generate_key_pair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "sign_manifest",
]

SIGNATURE_FILE = "manifest.sig"
SIGNATURE_FORMAT = "eusdx-bundle-signature/1"


class SignatureError(DataError):
    """A bundle signature that is missing, malformed, from an untrusted key or does not verify."""


def generate_key_pair(private_path: Path, public_path: Path) -> str:
    """Write a new Ed25519 key pair (private PKCS#8 PEM 0600, public PEM); return the key id.

    Raises
    ------
    ConfigError
        Either file exists already (a signing key is never overwritten).
    """
    for p in (private_path, public_path):
        if Path(p).exists():
            raise ConfigError(f"{p} exists; refusing to overwrite a key")
    key = create_private_key(private_path)
    assert key is not None  # checked above
    write_public_key(public_path, key.public_key())
    return key_id(key.public_key())


def sign_manifest(bundle_dir: Path, private_key: Ed25519PrivateKey | str | Path) -> str:
    """Sign ``bundle_dir/manifest.json`` into ``manifest.sig``; return the key id."""
    key = (private_key if isinstance(private_key, Ed25519PrivateKey)
           else load_private_key(private_key, "bundle signing key"))
    raw = (Path(bundle_dir) / "manifest.json").read_bytes()
    doc = {"format": SIGNATURE_FORMAT, "algorithm": "Ed25519", "key": key_id(key.public_key()),
           "signature": base64.b64encode(key.sign(raw)).decode("ascii")}
    atomic_write_bytes(Path(bundle_dir) / SIGNATURE_FILE, (json.dumps(doc, indent=2) + "\n").encode("ascii"))
    return str(doc["key"])


@dataclass(frozen=True)
class BundleTrust:
    """What a loader accepts: signatures by ``keys`` (``{key id: public key}``), an optional
    manifest SHA-256 ``pin``, and (development only) unsigned bundles."""

    keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)
    pin: str = ""
    allow_unsigned: bool = False

    @classmethod
    def from_paths(cls, paths: Iterable[str | Path], *, pin: str = "",
                   allow_unsigned: bool = False) -> BundleTrust:
        keys = {}
        for p in paths:
            public = load_public_key(p, "trusted bundle key")
            keys[key_id(public)] = public
        return cls(keys, pin.strip().lower(), allow_unsigned)

    @classmethod
    def from_settings(cls, settings: Any) -> BundleTrust:
        """From ``bundle_trusted_keys``, ``bundle_sha256`` and ``dev_mode``.

        Raises
        ------
        ConfigError
            Neither trusted keys nor a pin are configured and ``dev_mode`` is off, or a key file
            cannot be read.
        """
        trust = cls.from_paths(settings.bundle_trusted_keys, pin=settings.bundle_sha256,
                               allow_unsigned=bool(settings.dev_mode))
        if not trust.keys and not trust.pin and not trust.allow_unsigned:
            raise ConfigError("no bundle_trusted_keys (or bundle_sha256 pin) configured: the worker "
                              "cannot prove where a bundle comes from (dev_mode = true for demos only)")
        return trust

    def check(self, root: Path, manifest_raw: bytes) -> str | None:
        """Check the signature (and pin) of a bundle whose manifest bytes are ``manifest_raw``.

        Returns
        -------
        str or None
            The id of the key that signed it, or ``None`` for an accepted unsigned/pinned bundle.

        Raises
        ------
        SignatureError
            Pin mismatch, missing or malformed signature, a key not in ``keys``, or a signature
            that does not verify.
        """
        digest = hashlib.sha256(manifest_raw).hexdigest()
        if self.pin and digest != self.pin:
            raise SignatureError(f"bundle {root}: manifest SHA-256 {digest} is not the pinned "
                                 f"bundle_sha256 {self.pin}")
        sig_path = root / SIGNATURE_FILE
        if not sig_path.is_file():
            if self.keys and not self.allow_unsigned:
                raise SignatureError(f"bundle {root}: {SIGNATURE_FILE} is missing (unsigned bundle)")
            return None
        try:
            doc = json.loads(sig_path.read_text(encoding="ascii"))
            kid = str(doc["key"])
            signature = base64.b64decode(doc["signature"], validate=True)
            if doc.get("format") != SIGNATURE_FORMAT or doc.get("algorithm") != "Ed25519":
                raise ValueError("unknown format or algorithm")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SignatureError(f"bundle {root}: {SIGNATURE_FILE} is malformed ({exc})") from exc
        public = self.keys.get(kid)
        if public is None:
            if not self.keys:
                return None  # trust by pin alone, or dev mode without keys: the signer does not matter
            raise SignatureError(f"bundle {root}: signed by key {kid}, which is not in bundle_trusted_keys")
        try:
            public.verify(signature, manifest_raw)
        except InvalidSignature:
            raise SignatureError(f"bundle {root}: the signature by key {kid} does not match "
                                 "manifest.json (manifest changed after signing)") from None
        return kid
