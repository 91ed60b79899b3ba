"""A log's byte range sent piece by piece from the descriptor the request holds: a request
holds one piece (64 KiB) however large its range, and closes the log however it ends."""

from __future__ import annotations

import asyncio

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from runyard.services.log_ranges import LogRange, read_piece


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
                at += len(piece)
                more = bool(piece) and at < log.end
                await send({"type": "http.response.body", "body": piece, "more_body": more})
                if not more:
                    return
        finally:
            log.close()
