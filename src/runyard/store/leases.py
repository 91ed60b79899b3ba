"""The store's units for servers' membership: each server's lease (register, renew), the
servers alive, and the attempts whose server's lease lapsed. Shared by both backends, as the
rest of the store's logic (logic.py)."""

from __future__ import annotations

import secrets

from runyard.errors import ServerIdTakenError
from runyard.models import Attempt, ServerInfo
from runyard.store.rows import attempt_from_row, is_time
from runyard.store.units import Unit, count, execute, one, rows


def register_server(
    server_id: str, url: str, capacity: int, now: float, lease_s: float,
    instance: str | None = None, holding: str | None = None,
) -> Unit[tuple[str, float | None]]:  # fmt: skip
    yield execute("LOCK_SERVER_ID", server_id)  # two processes claiming one identity: in turn
    # the row locked as it is read: a renewal of the life being replaced, which takes no
    # advisory lock, then waits for this registration and finds its token gone, rather than
    # moving the lease's end after it was read here (the end recorded as the replaced one)
    row = yield one("GET_SERVER_FOR_UPDATE", server_id)
    # a lease whose end nobody can read refuses no registration (it stopped every start), but
    # the life it records may still run: its end taken as a whole lease from now
    unreadable = row is not None and not is_time(row[6])
    previous = now + lease_s if unreadable or row is None else float(row[6])
    if row is not None and not unreadable and row[6] > now:
        if holding is not None and holding != row[2]:
            # This process held the id and another took it over since (a copy of its data
            # directory, or a restart it did not know of): taking it back now would fence that
            # one while it runs, and be fenced in turn by it, for ever.
            raise ServerIdTakenError(
                f"server id {server_id!r} was taken over by another process (serving "
                f"{row[1]}) whose lease lasts {row[6] - now:.0f} s more: this one claims "
                "nothing more, its supervisor stops its programs as its own lease ends, and it "
                "rejoins once the other's lease lapses"
            )
        held = None if instance is None else (yield one("GET_SERVER_INSTANCE", server_id))
        holder = None if held is None else held[0]
        if holder is not None and holder != instance:  # a restart is the same instance
            raise ServerIdTakenError(
                f"server id {server_id!r} is held by another live process ({holder}, serving "
                f"{row[1]}) for {row[6] - now:.0f} s more: give this one its own "
                "RUNYARD_SERVER_ID, or stop that one and start this after its lease"
            )
    # A token is one process's life, never shared: a copy of a live server's data directory
    # given the same token renewed that lease beside it, and neither was ever fenced. The
    # process it replaces, if alive, fails its next renewal and stops.
    token, expires = secrets.token_hex(8), now + lease_s
    if row is None:
        yield execute("INSERT_SERVER", server_id, url, token, capacity, now, now, expires)
    else:
        yield execute("UPDATE_SERVER", url, token, capacity, now, now, expires, previous, server_id)
    if instance is not None:
        yield execute("SET_SERVER_INSTANCE", instance, server_id)
    if row is None:
        return token, None
    yield execute("RETOKEN_ATTEMPTS", token, server_id, token)
    return token, previous


def renew_server(server_id: str, token: str, now: float, lease_s: float) -> Unit[bool]:
    return int((yield count("RENEW_SERVER", now, now + lease_s, server_id, token, now))) > 0


def live_servers(now: float) -> Unit[list[ServerInfo]]:
    found = yield rows("LIVE_SERVERS", now)
    return [ServerInfo(*r) for r in found]


def orphaned_attempts(now: float) -> Unit[list[Attempt]]:
    found = yield rows("ORPHANED_ATTEMPTS", now)
    return [attempt_from_row(r) for r in found]
