"""Bearer tokens with roles, from ``Settings.api_tokens`` entries ``name:role:sha256hex(token)``.

Only the SHA-256 of each token is configured and kept; a presented token is hashed and compared
with every entry using ``hmac.compare_digest`` (no early exit, so timing does not tell which entry
was close). Token values are never logged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
from collections.abc import Iterable

from eusdx.errors import ConfigError

__all__ = ["ROLES", "Principal", "TokenTable", "hash_token"]

#: ``sender``: may store instances over STOW-RS (a PACS or modality pushing studies).
ROLES = ("worklist", "qa", "admin", "sender")
_ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9_.@-]{1,64}):(?P<role>[a-z]+):(?P<digest>[0-9a-fA-F]{64})$")


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token, as written in ``api_tokens``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who called: the token's configured name and role."""

    name: str
    role: str


class TokenTable:
    """The configured tokens.

    Raises
    ------
    ConfigError
        An entry is not ``name:role:sha256hex`` or names an unknown role (the message gives the
        entry's position and name, never its digest).
    """

    def __init__(self, entries: Iterable[str]) -> None:
        self._entries: list[tuple[Principal, bytes]] = []
        for index, entry in enumerate(entries, start=1):
            m = _ENTRY.match(entry.strip())
            if not m:
                name = entry.split(":", 1)[0][:64]
                raise ConfigError(f"api_tokens entry {index} ({name!r}) is not "
                                  "name:role:sha256hex(token)")
            if m["role"] not in ROLES:
                raise ConfigError(f"api_tokens entry {index} ({m['name']!r}) has unknown role "
                                  f"{m['role']!r}; roles are {', '.join(ROLES)}")
            self._entries.append((Principal(m["name"], m["role"]),
                                  bytes.fromhex(m["digest"].lower())))

    def __len__(self) -> int:
        return len(self._entries)

    def match(self, token: str) -> Principal | None:
        """The principal whose digest matches ``token``, or ``None``."""
        presented = hashlib.sha256(token.encode("utf-8")).digest()
        found: Principal | None = None
        for principal, digest in self._entries:
            if hmac.compare_digest(presented, digest) and found is None:
                found = principal
        return found
