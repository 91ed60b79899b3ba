"""Self-fencing: the supervisor's watch over its server's lease in a cluster.

In a cluster (PostgreSQL) every attempt is held under its server's lease token. After each
renewal the server tells its supervisor "lease TOKEN is valid until T" (op `lease`), and each
spawn names the lease it starts under. The supervisor is a separate process: it keeps running
when its server is paused, partitioned or hung. When T passes with no renewal, it stops the
programs of the attempts held under that token itself (marked `killed_by: "fenced"`, which the
server records as lost), and refuses to start anything more under it. Other servers reap an
expired lease's attempts only after the lease plus a margin (`RUNYARD_REAP_MARGIN_S`), longer
than the fence's kill grace: by then the programs are gone, so a retry elsewhere never runs
beside them.

Every registration gives the server a new token (one process's life). A restart within the
lease adopts the programs still running here: the first word of its new token moves them from
the lease they were held under to the new one (`_succeeded`), since the store moved them too.

Single-server SQLite sends no leases: nothing here ever acts.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import struct
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeGuard

_TOKEN = re.compile(r"[0-9A-Za-z_-]{1,64}")
_MAX_GRACE_S = 3600.0


class LeaseLapsedError(Exception):
    """A spawn under a lease that lapsed: refused (the reply's error names this class)."""


@dataclass(frozen=True, slots=True)
class Lease:
    until: float  # monotonic deadline on this host
    grace_s: float  # SIGTERM, then SIGKILL this much later


class LeaseWatch:
    """Leases by token and the token each running attempt was started under. `schedule(delay,
    token)` asks the owner's loop to call `lapsed(token, ...)` after `delay` seconds."""

    def __init__(
        self,
        schedule: Callable[[float, str], None],
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._schedule = schedule
        self._monotonic = monotonic
        self._wall = wall
        self.leases: dict[str, Lease] = {}
        self.token_of: dict[str, str] = {}  # attempt key -> lease token
        self._warden: int | None = None  # the warden's pipe: told each new deadline

    def tell(self, fd: int) -> None:
        """From now on, write each later deadline (monotonic, 8 bytes) to `fd`, non-blocking:
        the warden's, which fences in the supervisor's stead if it is stopped past it."""
        self._warden = fd

    def op_lease(self, msg: dict[str, Any]) -> dict[str, Any]:
        """`{"op": "lease", "token": T, "until": wall-clock seconds, "grace_s": G}`."""
        self.renewed(msg)
        return {"ok": True}

    def renewed(self, msg: dict[str, Any]) -> str:
        token, until, grace_s = msg.get("token"), msg.get("until"), msg.get("grace_s", 5.0)
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise ValueError("lease: token must be 1-64 letters, digits, '_' or '-'")
        if not (_finite(until) and _finite(grace_s) and 0 <= grace_s <= _MAX_GRACE_S):
            raise ValueError("lease: until and grace_s must be finite numbers")
        # The wall-clock T becomes a monotonic deadline once, here: a clock step later does
        # not move it.
        now = self._monotonic()
        deadline = now + (float(until) - self._wall())
        known = self.leases.get(token)
        if known is None:
            self._succeeded(token, deadline, now)
        if known is None or deadline > known.until:
            self.leases[token] = Lease(deadline, float(grace_s))
            self._schedule(max(0.0, deadline - now), token)
            if self._warden is not None:
                latest = max(lease.until for lease in self.leases.values())
                with contextlib.suppress(OSError):  # full or gone: it has a later one, or none
                    os.write(self._warden, struct.pack("d", latest))
        return token

    def _succeeded(self, token: str, deadline: float, now: float) -> None:
        """A token not heard of before is a new registration of this supervisor's server: the
        store gave it every attempt of the server as it registered, so what is held under a
        lease still lasting (a restart within it: these programs are adopted) is held under
        the new one from now on. Those of a lapsed lease are being fenced, and stay so; so
        do those of a later lease than this one (an old token told again, out of turn)."""
        moved = {t for t, lease in self.leases.items() if now < lease.until <= deadline}
        for key, held in self.token_of.items():
            if held in moved:
                self.token_of[key] = token

    def admit(self, key: str, lease: object) -> None:
        """Before a spawn: the attempt is held under its lease from now on, or LeaseLapsedError
        if that lease lapsed. A spawn without a lease (one server, SQLite) always goes ahead."""
        if lease is None:
            return
        if not isinstance(lease, dict):
            raise ValueError("spawn: lease must be an object")  # noqa: TRY004  a ValueError
        token = self.renewed(lease)
        if self.leases[token].until <= self._monotonic():
            raise LeaseLapsedError(
                f"this server's lease {token} lapsed: nothing starts under it until the server "
                "rejoins the cluster"
            )
        self.token_of[key] = token

    def lapsed(self, token: str, now: float, running: Collection[str]) -> tuple[list[str], float]:
        """The attempts to stop now that `token`'s timer fired, and the kill grace: none if
        the lease was renewed meanwhile (a stale timer)."""
        for key in [k for k in self.token_of if k not in running]:
            del self.token_of[key]  # ended: forget it
        lease = self.leases.get(token)
        if lease is None or lease.until > now:
            return [], 0.0
        held = set(self.token_of.values())
        for old in [t for t, x in self.leases.items() if x.until <= now and t not in held]:
            if old != token:
                del self.leases[old]  # lapsed and holding nothing: forget it
        return [k for k, t in self.token_of.items() if t == token], lease.grace_s


def _finite(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
