"""In a cluster, a run may be claimed by a server that does not hold its uploads (they went to
the server the client talked to). Before the spawn, the claiming server fetches each missing
upload from a live member that has it — as that member's own relay (auth.RelaySigner: a claim
with the read role, signed for that one request), streamed into its own uploads under the same
caps, and kept only if its bytes hash to the id asked for: a member cannot hand over other
bytes than the run named. The fetched upload is marked as the run's, so it lives as long as
the run here too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from urllib.parse import quote

import structlog

from runyard import upload_refs
from runyard.auth import RELAY_HEADER, RelaySigner, Role
from runyard.clock import Clock
from runyard.errors import RunyardError
from runyard.execution.base import ExecutorUnavailableError, LaunchError
from runyard.models import ServerInfo
from runyard.services.peers import Peers
from runyard.services.uploads.incoming import Incoming, UploadTooLargeError
from runyard.services.uploads.names import UPLOAD_ID
from runyard.services.uploads.store import UploadQuotaError, Uploads
from runyard.store import Store

log = structlog.get_logger(__name__)


class UploadNowhereError(LaunchError):
    """No live member holds the upload: the run cannot have its input (it fails)."""


class InputFetcher:
    def __init__(
        self,
        uploads: Uploads,
        store: Store,
        clock: Clock,
        signer: RelaySigner,
        peers: Peers,
    ) -> None:
        self.uploads = uploads
        self.store = store
        self.clock = clock
        self.signer = signer
        self.peers = peers
        self.fetched_total = 0

    async def ensure(self, run_id: str, inputs: Iterable[str]) -> None:
        """Every upload a launch's inputs name (`ID` or `ID/NAME`), fetched from another
        member if missing; LaunchError (naming the upload and why) when no live member
        gives it."""
        for upload_id in sorted({upload_refs.upload_id(tail) for tail in inputs}):
            if not UPLOAD_ID.fullmatch(upload_id):
                raise LaunchError(f"inputs: {upload_id[:80]!r} is not an upload id")
            if not await asyncio.to_thread(self.uploads.blob(upload_id).is_file):
                await self._fetch(upload_id)
            await self.uploads.reference({upload_id: [run_id]})

    async def fetch(self, upload_id: str) -> bool:
        """Whether a live member gave the upload (a submit naming one sent to another
        server, as a load balancer may do). A member that could not answer is a 503, this
        server's full disk or quota a 507: not the client's 'no such upload'."""
        try:
            await self._fetch(upload_id)
        except UploadNowhereError:
            return False
        return True

    async def _fetch(self, upload_id: str) -> None:
        """UploadNowhereError when every live member says it has no such upload;
        ExecutorUnavailableError when one could not say (tried again later); this server's
        own storage errors (quota, disk) as they are."""
        import httpx  # a cluster's member only: loaded with its client (runtime.py)

        me = self.signer.server_id
        members = [s for s in await self.store.live_servers(self.clock.now()) if s.id != me]
        why, unsure = [], False
        # a member's word on the size that this server has no room for: the next member is
        # asked all the same (a member that says 10**15 bytes, broken or lying, made every
        # fetch a 413 for a file of 23 bytes, a probe); raised only if none gives it
        no_room: RunyardError | None = None
        for server in members:
            try:
                if await self._from(server, upload_id):
                    self.fetched_total += 1
                    log.info("input_fetched", upload_id=upload_id, server=server.id)
                    return
                why.append(f"{server.id}: not there")
            except (UploadTooLargeError, UploadQuotaError) as exc:
                why.append(f"{server.id}: {exc.detail}")
                no_room = no_room or exc
            except (httpx.HTTPError, ValueError) as exc:
                why.append(f"{server.id}: {exc}")
                unsure = True
        if no_room is not None and not unsure:
            raise no_room
        detail = (
            f"inputs: upload {upload_id} is not on this server, and no live member gave it "
            f"({'; '.join(why) or 'no other member is live'})"
        )
        raise ExecutorUnavailableError(detail) if unsure else UploadNowhereError(detail)

    def _headers(self, path: str, server: ServerInfo) -> dict[str, str]:
        me = f"server {self.signer.server_id}"
        return {RELAY_HEADER: self.signer.sign("GET", path.encode(), server.id, me, Role.READ)}

    async def _from(self, server: ServerInfo, upload_id: str) -> bool:
        """Whether `server` gave the upload (False: it has none by that id)."""
        base = server.url.rstrip("/")
        path = f"/v1/uploads/{quote(upload_id)}"
        client = self.peers.to(server)
        meta = await client.get(base + path, headers=self._headers(path, server))
        if meta.status_code == 404:
            return False
        meta.raise_for_status()
        about = meta.json()
        size = about.get("size") if isinstance(about, dict) else None
        if type(size) is not int or size < 0:  # no answer of a runyard server's
            raise ValueError(f"its answer names no size ({str(size)[:40]})")
        # room for it here, before a byte is fetched (else each member would send it in vain)
        self.uploads.check_room(size, self.uploads.stored_bytes)
        path += "/content"
        incoming = await self.uploads.open()
        try:
            async with client.stream(
                "GET", base + path, headers=self._headers(path, server)
            ) as resp:
                if resp.status_code == 404:
                    await incoming.discard()
                    return False
                resp.raise_for_status()
                async for chunk in resp.aiter_bytes():
                    await incoming.write(chunk)
            await incoming.close()
            _same_bytes(incoming, upload_id)
        except BaseException:
            await incoming.discard()
            raise
        await self.uploads.keep(incoming, str(about.get("name") or "upload"))
        return True


def _same_bytes(incoming: Incoming, upload_id: str) -> None:
    if incoming.digest.hexdigest() != upload_id:
        raise ValueError("its bytes do not hash to the upload's id: not kept")
