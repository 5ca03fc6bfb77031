"""UID validation: the one gate between peer-supplied text and a file-system path."""

from __future__ import annotations

import re

from eusdx.errors import DataError

__all__ = ["InvalidUID", "check_uid", "is_valid_uid"]

# Digits and dots only, no empty component: "..", "/", "" and leading/trailing dots cannot pass.
# Leading zeros inside a component are tolerated because real modalities send them.
_UID_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_MAX_LEN = 64


class InvalidUID(DataError):
    """A UID that is not digits and dots of at most 64 characters."""


def is_valid_uid(value: object) -> bool:
    """True when ``value`` is a string usable as a UID and as a path component."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= _MAX_LEN
        and _UID_RE.fullmatch(value) is not None
    )


def check_uid(value: object, name: str = "UID") -> str:
    """Return ``value`` if it is a valid UID.

    Raises
    ------
    InvalidUID
        ``value`` is empty, too long, or contains anything but digits and dots; the message
        names ``name`` and shows at most the first 80 characters of the value.
    """
    if not is_valid_uid(value):
        raise InvalidUID(f"{name} {str(value)[:80]!r} is not a valid UID (digits and dots, <= 64)")
    return str(value)
