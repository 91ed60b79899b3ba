"""Uploads nobody uses expire: `upload_ttl_s` after they were last uploaded or a run stopped
using them. A marker whose run is no longer stored (deleted, removed by retention, or a
submit that failed after its marker was made) is dropped first — but only once it is older
than a submit can take, so a run being stored right now keeps its upload."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from runyard.background import Periodic
from runyard.errors import ConflictError
from runyard.services.uploads.record import Upload
from runyard.services.uploads.store import Uploads

log = structlog.get_logger(__name__)

MARKER_GRACE_S = 300.0  # a marker younger than this may belong to a run being stored

RunExists = Callable[[str], Awaitable[bool]]
Pinned = Callable[[], set[str]]  # uploads kept whatever their age: those schedules name


class UploadExpiry:
    def __init__(
        self, uploads: Uploads, run_exists: RunExists, *, ttl_s: float,
        pinned: Pinned = set, pins: asyncio.Lock | None = None,
    ) -> None:  # fmt: skip
        self.pinned = pinned
        # held from a look at what is pinned to the removal it allows, as a schedule holds it
        # from the check of its uploads to its save (scheduling/scheduler.py)
        self.pins = pins or asyncio.Lock()
        self.uploads = uploads
        self.run_exists = run_exists
        self.ttl_s = ttl_s
        # often enough that an upload outlives its TTL by a fraction of it
        self.interval_s = max(0.2, min(600.0, ttl_s / 4))
        self.expired_total = 0
        self._periodic = Periodic("upload-expiry", self.interval_s, self.sweep)

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def sweep(self) -> int:
        """Expire what is due; returns how many uploads were removed."""
        now = time.time()  # compared with files' mtimes: the wall clock
        before = now - self.ttl_s
        await asyncio.to_thread(self.uploads.remove_leftovers)
        uploads = await asyncio.to_thread(self.uploads.all)
        async with self.pins:
            expired = await self._expire(uploads, before, now)
        if expired:
            self.expired_total += expired
            log.info("uploads_expired", uploads=expired)
        return expired

    async def _expire(self, uploads: list[Upload], before: float, now: float) -> int:
        expired = 0
        pinned = self.pinned()
        for upload in uploads:
            if upload.id in pinned:
                continue  # a schedule names it: its next run may need it
            if await asyncio.to_thread(self.uploads.last_used, upload.id) >= before:
                continue  # used lately: nothing to decide yet
            await self._drop_dead_markers(upload.id, now)
            expired += await asyncio.to_thread(self.uploads.expire, upload.id, before)
        return expired

    async def delete(self, upload_id: str) -> None:
        """An operator's removal of an upload nothing needs: NotFoundError if there is none,
        ConflictError while a schedule names it or a stored run uses it (its inputs stay
        readable). The disk an unused upload held was otherwise back only upload_ttl_s later."""
        async with self.pins:
            await self._delete(upload_id)

    async def _delete(self, upload_id: str) -> None:
        await self.uploads.get(upload_id)  # NotFoundError
        if upload_id in self.pinned():
            raise ConflictError(f"upload {upload_id} is named by a schedule: delete it first")
        await self._drop_dead_markers(upload_id, time.time())
        users = [run_id for run_id, _ in await asyncio.to_thread(self.uploads.markers, upload_id)]
        if users or not await asyncio.to_thread(self.uploads.remove_unused, upload_id):
            shown = ", ".join(users[:3]) if users else "a run being stored"
            raise ConflictError(
                f"upload {upload_id} is used by {len(users) or 1} run(s) ({shown}); it can be "
                "deleted once they are", runs=len(users) or 1,
            )  # fmt: skip
        log.info("upload_deleted", upload_id=upload_id)

    async def _drop_dead_markers(self, upload_id: str, now: float) -> None:
        for run_id, made_at in await asyncio.to_thread(self.uploads.markers, upload_id):
            if made_at > now - MARKER_GRACE_S:
                continue  # a run being stored may hold it: kept
            if not await self.run_exists(run_id):  # every marker looked at: none piles up
                await self.uploads.release([upload_id], run_id)
