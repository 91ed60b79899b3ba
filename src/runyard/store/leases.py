"""The store's units for servers' membership: each server's lease (register, renew), the
servers alive, and the attempts whose server's lease lapsed. Shared by both backends, as the
rest of the store's logic (logic.py)."""

from __future__ import annotations

import secrets
from typing import Any

from runyard.errors import ServerIdTakenError
from runyard.models import Attempt, ServerInfo
from runyard.store.rows import attempt_from_row
from runyard.store.units import Unit, count, execute, one, rows


def new_token(row: tuple[Any, ...] | None, now: float) -> str:
    """The lease token of a (re)registering server: its current one while its lease
    (row[6]) lasts, else a new one, which fences out whatever it wrote in its past life."""
    if row is not None and row[6] > now:
        return str(row[2])
    return secrets.token_hex(8)


def register_server(
    server_id: str, url: str, capacity: int, now: float, lease_s: float,
    instance: str | None = None,
) -> Unit[str]:  # fmt: skip
    yield execute("LOCK_SERVER_ID", server_id)  # two processes claiming one identity: in turn
    row = yield one("GET_SERVER", server_id)
    if row is not None and row[6] > now and instance is not None:
        held = yield one("GET_SERVER_INSTANCE", server_id)
        holder = None if held is None else held[0]
        if holder is not None and holder != instance:  # a restart is the same instance
            raise ServerIdTakenError(
                f"server id {server_id!r} is held by another live process ({holder}, serving "
                f"{row[1]}) for {row[6] - now:.0f} s more: give this one its own "
                "RUNYARD_SERVER_ID, or stop that one and start this after its lease"
            )
    token, expires = new_token(row, now), now + lease_s
    values = (url, token, capacity, now, now, expires, server_id)
    if row is None:
        yield execute("INSERT_SERVER", server_id, *values[:-1])
    else:
        yield execute("UPDATE_SERVER", *values)
    if instance is not None:
        yield execute("SET_SERVER_INSTANCE", instance, server_id)
    if row is None:
        return token
    if token != row[2]:  # a new life takes back the attempts nobody reaped
        yield execute("RETOKEN_ATTEMPTS", token, server_id, row[2])
    return token


def renew_server(server_id: str, token: str, now: float, lease_s: float) -> Unit[bool]:
    return int((yield count("RENEW_SERVER", now, now + lease_s, server_id, token, now))) > 0


def live_servers(now: float) -> Unit[list[ServerInfo]]:
    found = yield rows("LIVE_SERVERS", now)
    return [ServerInfo(*r) for r in found]


def orphaned_attempts(now: float) -> Unit[list[Attempt]]:
    found = yield rows("ORPHANED_ATTEMPTS", now)
    return [attempt_from_row(r) for r in found]
