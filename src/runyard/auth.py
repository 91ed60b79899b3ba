"""Bearer tokens with roles, stored as SHA-256 hashes and compared in constant time.

The tokens file (TOML) holds only hashes:

    [[token]]
    name = "ci"
    role = "submit"          # read < submit < admin
    sha256 = "9f86d0...."

`runyard token create NAME --role ROLE --file FILE` makes a token, prints it once and appends
its hash. With no tokens configured, authentication is off and the server binds to loopback.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path


class Role(enum.IntEnum):
    READ = 1
    SUBMIT = 2
    ADMIN = 3


@dataclass(frozen=True, slots=True)
class TokenEntry:
    name: str
    role: Role
    sha256: bytes


class AuthConfigError(Exception):
    pass


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def load_tokens(path: Path | None) -> list[TokenEntry]:
    if path is None:
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AuthConfigError(f"cannot read tokens file {path}: {exc}") from None
    entries = []
    for i, item in enumerate(data.get("token", [])):
        try:
            role = Role[str(item["role"]).upper()]
            raw = bytes.fromhex(str(item["sha256"]))
        except (KeyError, ValueError) as exc:
            raise AuthConfigError(f"{path}: token {i}: {exc}") from None
        if len(raw) != 32:
            raise AuthConfigError(f"{path}: token {i}: sha256 must be 64 hex digits")
        entries.append(TokenEntry(str(item.get("name", f"token-{i}")), role, raw))
    return entries


class Authenticator:
    def __init__(self, entries: list[TokenEntry]) -> None:
        self.entries = entries

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    def identify(self, token: str) -> TokenEntry | None:
        """The entry whose hash matches. Every entry is compared (compare_digest, no early
        exit), so timing says nothing about which token, or how much of one, was right."""
        presented = digest(token)
        found = None
        for entry in self.entries:
            if hmac.compare_digest(presented, entry.sha256):
                found = entry
        return found


def create_token(path: Path, name: str, role: Role) -> str:
    """Append a new token's hash to `path` (made 0600) and return the token itself."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise ValueError("token names are letters, digits, '_', '-', '.' (at most 64)")
    token = "ry_" + secrets.token_urlsafe(32)
    line = (
        f'\n[[token]]\nname = "{name}"\nrole = "{role.name.lower()}"\n'
        f'sha256 = "{digest(token).hex()}"\n'
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line)
    path.chmod(0o600)
    return token
