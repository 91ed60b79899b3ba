"""A log's byte range sent piece by piece from the descriptor the request holds: a request
holds one piece (64 KiB) however large its range, and closes the log however it ends."""

from __future__ import annotations

import asyncio

import structlog
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from runyard.api.client_gone import cut
from runyard.services.log_ranges import LogRange, read_piece

log_ = structlog.get_logger(__name__)


class ShortLogError(RuntimeError):
    def __init__(self, sent: int, announced: int) -> None:
        super().__init__(f"the log got shorter while it was sent: {sent} of {announced} bytes")


class LogRangeResponse(Response):
    def __init__(self, log: LogRange, media_type: str) -> None:
        self.log = log
        headers = {
            "Content-Length": str(log.end - log.start),
            "X-Next-Offset": str(log.end),
            "X-Log-Size": str(log.size),
            "Content-Security-Policy": "sandbox; default-src 'none'; frame-ancestors 'none'",
        }
        super().__init__(None, media_type=media_type, headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        log = self.log
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})  # fmt: skip
            if scope.get("method") == "HEAD":  # the headers (size, next offset) alone
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            at = log.start
            while True:
                piece = await asyncio.to_thread(read_piece, log, at)
                if not piece and at < log.end:
                    # the file got shorter (its program cut its log back): less than the
                    # Content-Length announced is left, so the answer is cut, not ended
                    log_.warning("log_shrank", path=scope.get("path"), sent=at - log.start,
                                 announced=log.end - log.start)  # fmt: skip
                    if not await cut(scope, receive):
                        raise ShortLogError(at - log.start, log.end - log.start)
                    return
                at += len(piece)
                more = at < log.end
                await send({"type": "http.response.body", "body": piece, "more_body": more})
                if not more:
                    return
        finally:
            log.close()
