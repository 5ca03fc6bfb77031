"""UIDs of the objects eusdx creates, under one configurable organisation root.

DICOM UIDs (PS3.5 chapter 9) are ``<org root>.<suffix>``, digits and dots, at most 64 characters.
Two kinds of root:

* ``2.25`` (the default, setting ``uid_root``): the suffix is a UUID written as one decimal
  integer (PS3.5 B.2, ISO/IEC 9834-8). Derived UIDs use a name-based UUID (SHA-1, RFC 9562
  version 5) of the derivation text in eusdx's own namespace, so they need no registered root.
* an organisation's registered root (e.g. ``1.2.826.0.1.3680043.10.999``): the suffix is the
  SHA-512 of the derivation text as a decimal integer, cut to 64 characters in total.

:func:`derived_uid` is deterministic: a retry of the same work reproduces the same UID, so a
resent SR replaces itself in PACS instead of duplicating. :func:`new_uid` is random.

The same module is the one gate for UIDs that arrive from outside (:func:`is_valid_uid`,
:func:`check_uid`): a UID a peer sends becomes a file-system path component only through it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid

from eusdx.errors import DataError

__all__ = ["DEFAULT_UID_ROOT", "UUID_ROOT", "InvalidUID", "check_root", "check_uid", "derived_uid",
           "is_valid_uid", "new_uid"]

UUID_ROOT = "2.25"
DEFAULT_UID_ROOT = UUID_ROOT
#: eusdx's namespace for name-based UUIDs (uuid5 of the product URL in the URL namespace).
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:eusdx:uid")
_ROOT_RE = re.compile(r"[1-9][0-9]*(?:\.(?:0|[1-9][0-9]*))*")
_MAX_UID = 64
_MAX_ROOT = 30  # leaves >= 33 digits (> 100 bits) for the suffix
# Received UIDs: digits and dots only, no empty component: "..", "/", "" and leading/trailing dots
# cannot pass. Leading zeros inside a component are tolerated because real modalities send them.
_RECEIVED_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")
# PS3.5 9.1 exactly: no component with a leading zero (what the objects we write must reference)
_STRICT_RE = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")


class InvalidUID(DataError):
    """A UID that is not digits and dots of at most 64 characters."""


def is_valid_uid(value: object, *, strict: bool = False) -> bool:
    """True when ``value`` is a string usable as a UID and as a path component.

    ``strict`` also refuses components with a leading zero (PS3.5 9.1), which real modalities
    send and the node therefore stores, but which a UID referenced from our SR must not have.
    """
    pattern = _STRICT_RE if strict else _RECEIVED_RE
    return isinstance(value, str) and 0 < len(value) <= _MAX_UID and pattern.fullmatch(value) is not None


def check_uid(value: object, name: str = "UID") -> str:
    """Return ``value`` if it is a valid (received) UID.

    Raises
    ------
    InvalidUID
        ``value`` is empty, too long, or contains anything but digits and dots; the message
        names ``name`` and shows at most the first 80 characters of the value.
    """
    if not is_valid_uid(value):
        raise InvalidUID(f"invalid {name} {str(value)[:80]!r}: it is not a valid UID "
                         "(digits and dots, <= 64)")
    return str(value)


def check_root(root: str) -> str:
    """Return ``root`` without a trailing dot.

    Raises
    ------
    ValueError
        Not digits and dots, a component with a leading zero, or longer than 30 characters.
    """
    root = root.rstrip(".")
    if not _ROOT_RE.fullmatch(root) or len(root) > _MAX_ROOT:
        raise ValueError(f"UID root {root!r} is not digits and dots without leading zeros "
                         f"of at most {_MAX_ROOT} characters")
    return root


def _join(parts: tuple[str, ...]) -> str:
    if not parts or any(not isinstance(p, str) for p in parts):
        raise ValueError("derived_uid needs at least one text part")
    # "|" keeps ("ab", "c") and ("a", "bc") apart.
    return "|".join(parts)


def derived_uid(root: str, *parts: str) -> str:
    """The UID for ``parts`` under ``root``; the same inputs always give the same UID.

    Parameters
    ----------
    root
        ``2.25`` or a registered organisation root (``Settings.uid_root``).
    *parts
        What the object is, e.g. ``(study_uid, bundle_version, "sr")``.
    """
    root = check_root(root)
    name = _join(parts)
    if root == UUID_ROOT:
        return f"{UUID_ROOT}.{uuid.uuid5(_NAMESPACE, name).int}"
    digest = int(hashlib.sha512(name.encode("utf-8")).hexdigest(), 16)
    return f"{root}.{digest}"[:_MAX_UID]


def new_uid(root: str) -> str:
    """A fresh random UID under ``root`` (UUID version 4 for ``2.25``)."""
    root = check_root(root)
    if root == UUID_ROOT:
        return f"{UUID_ROOT}.{uuid.uuid4().int}"
    room = _MAX_UID - len(root) - 1
    return f"{root}.{secrets.randbelow(10 ** room - 10 ** (room - 1)) + 10 ** (room - 1)}"
