"""Bearer tokens with roles, stored as SHA-256 hashes and compared in constant time.

The tokens file (TOML) holds only hashes:

    [[token]]
    name = "ci"
    role = "submit"          # read < submit < admin
    sha256 = "9f86d0...."

`runyard token create NAME --role ROLE --file FILE` makes a token, prints it once and appends
its hash. With no tokens configured, authentication is off and the server binds to loopback.
SIGHUP reloads the file (revocation without a restart; see docs/operations.md).

Between servers of a cluster a relayed request carries no token at all, but a *relay claim*:
who asked (principal and role, never more), signed with the cluster secret over the method,
the exact path and query, both servers, a timestamp and a nonce (see `RelaySigner`).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from runyard.jobs.reading import UnreadableError, read_toml


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


# Thousands of tokens (each about 150 bytes): a file past this is not a tokens file.
MAX_TOKENS_FILE_BYTES = 1024 * 1024


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_RULE = "token names are letters, digits, '_', '-', '.' (at most 64)"


def load_tokens(path: Path | None) -> list[TokenEntry]:
    if path is None:
        return []
    try:
        # bounded as a job file is: a FIFO, a device, a huge or deeply nested file is refused
        # with its reason, never read without end nor a crash of the start or of a reload
        data = read_toml(path, MAX_TOKENS_FILE_BYTES)
    except UnreadableError as exc:
        raise AuthConfigError(f"cannot read tokens file {path}: {exc.message}") from None
    tokens = data.get("token", [])
    if not isinstance(tokens, list):  # `[token]` (a table), `token = "abc"`: not `[[token]]`
        raise AuthConfigError(f"{path}: `token` must be a list of tables, each [[token]]")
    entries = []
    for i, item in enumerate(tokens):
        if not isinstance(item, dict):
            raise AuthConfigError(f"{path}: token {i}: a table ([[token]]) is expected")
        try:
            role = Role[str(item["role"]).upper()]
            raw = bytes.fromhex(str(item["sha256"]))
        except (KeyError, ValueError) as exc:
            raise AuthConfigError(f"{path}: token {i}: {exc}") from None
        if len(raw) != 32:
            raise AuthConfigError(f"{path}: token {i}: sha256 must be 64 hex digits")
        name = item.get("name", f"token-{i}")
        # as `token create` names one: a name is shown in logs, `/v1/me` and relayed claims
        if not isinstance(name, str) or not TOKEN_NAME.fullmatch(name):
            raise AuthConfigError(f"{path}: token {i}: its name: {NAME_RULE}")
        entries.append(TokenEntry(name, role, raw))
    return entries


class Authenticator:
    def __init__(self, entries: list[TokenEntry], *, required: bool = False) -> None:
        self.entries = entries
        # once on, authentication stays on: revoking every token locks everyone out, it
        # never opens the server to anyone; and a server given a tokens file has it on, its
        # tokens or none (an empty file, every token revoked, then a restart, opened it)
        self._required = required or bool(entries)

    @property
    def enabled(self) -> bool:
        return self._required or bool(self.entries)

    def replace(self, entries: list[TokenEntry]) -> None:
        """Swap in a reloaded tokens file (one assignment: a request sees old or new)."""
        self._required = self._required or bool(entries)
        self.entries = entries

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
    if not TOKEN_NAME.fullmatch(name):
        raise ValueError(NAME_RULE)
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


RELAY_HEADER = "x-runyard-relay"
RELAY_VALIDITY_S = 30.0  # a relayed request is sent at once; this bounds clock skew and replay
_RELAY_VERSION = "v1"
_MAX_NONCES = 200_000  # nonces seen within the validity window (only signed claims get in)


@dataclass(frozen=True, slots=True)
class RelayClaim:
    """What a relaying server asserts about the request it forwards."""

    origin: str  # the server the client talked to
    target: str  # the server it was relayed to
    principal: str
    role: Role
    signed: bool  # False only without a cluster secret: then it authorises nothing


class RelaySigner:
    """Signs relay claims and checks them, with the cluster secret as the HMAC-SHA256 key.

    The signature covers the method, the exact request target (path and query, as sent), both
    servers, the role, the principal, a timestamp and a nonce: a claim cannot be moved to
    another path, method or server, replayed (nonces are remembered while valid, and a claim
    issued before this signer was made is refused), or kept (it is valid `validity_s` around
    its timestamp). Compared with `hmac.compare_digest`. Without a secret claims are
    unsigned: they still stop a relay from being relayed again, but never authorise anything.
    """

    def __init__(
        self,
        secret: str | None,
        server_id: str,
        *,
        validity_s: float = RELAY_VALIDITY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = secret.encode() if secret else None
        self.server_id = server_id
        self.validity_s = validity_s
        self._clock = clock
        self._seen: dict[str, float] = {}  # nonce -> when it may be forgotten
        # The nonces seen die with the process: a claim issued before this one started may
        # have been used by the one before it, so it is refused. No allowance for clock skew:
        # the validity window's would be the very window a replay needs. A relaying host whose
        # clock lags this one's has its relays refused only in the first moments after a
        # restart, which its callers retry (api/proxy.py answers them 503). Rounded as `sign`
        # writes the time, so no claim issued after this, on this clock, reads as before it.
        self.started_at = float(f"{clock():.3f}")

    def _mac(self, fields: list[str], method: str, target_path: bytes) -> str:
        assert self._key is not None  # noqa: S101  callers check
        message = b"\n".join([b"runyard-relay", method.encode(), target_path,
                              *(f.encode() for f in fields)])  # fmt: skip
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign(self, method: str, target_path: bytes, target: str, principal: str, role: Role) -> str:
        """The header value for a request `method target_path` relayed to server `target`."""
        fields = [
            _RELAY_VERSION, self.server_id, target, role.name.lower(),
            f"{self._clock():.3f}", secrets.token_hex(16), quote(principal, safe=""),
        ]  # fmt: skip
        sig = self._mac(fields, method, target_path) if self._key else "-"
        return " ".join([*fields, sig])

    def verify(self, header: str, method: str, target_path: bytes) -> RelayClaim | None:
        """The claim if `header` is a valid relay claim addressed to this server for exactly
        this request; None for anything else (a client's forgery is simply not a claim)."""
        parts = header.split(" ")
        claim = self._parse(parts)
        if claim is None or self._key is None:
            return claim
        expected = self._mac(parts[:7], method, target_path)
        if not hmac.compare_digest(expected.encode(), parts[7].encode()):
            return None
        now, issued = self._clock(), float(parts[4])
        if not abs(now - issued) <= self.validity_s:  # also false for NaN
            return None
        if issued < self.started_at:
            return None
        return self._first_use(parts[5], now, claim)

    def _parse(self, parts: list[str]) -> RelayClaim | None:
        if len(parts) != 8 or parts[0] != _RELAY_VERSION:
            return None
        _, origin, target, role_name, ts_text, nonce, principal, _ = parts
        try:
            role = Role[role_name.upper()]
            float(ts_text)
        except (KeyError, ValueError):
            return None
        if target != self.server_id or len(nonce) != 32:
            return None
        return RelayClaim(origin, target, unquote(principal), role, signed=False)

    def _first_use(self, nonce: str, now: float, claim: RelayClaim) -> RelayClaim | None:
        while self._seen:  # insertion order is time order: forget from the oldest on
            oldest = next(iter(self._seen))
            if self._seen[oldest] >= now:
                break
            del self._seen[oldest]
        if nonce in self._seen or len(self._seen) >= _MAX_NONCES:
            return None
        self._seen[nonce] = now + 2 * self.validity_s
        return RelayClaim(claim.origin, claim.target, claim.principal, claim.role, signed=True)
