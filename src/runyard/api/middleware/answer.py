"""A problem JSON answer sent straight from middleware, before any route (or body) is read."""

from __future__ import annotations

import json

from starlette.types import Send


async def send_problem(
    send: Send, status: int, title: str, slug: str, detail: str,
    headers: list[tuple[bytes, bytes]] | None = None, field: str | None = None,
) -> None:  # fmt: skip
    """The connection is closed after it: the body the client may still be sending is never
    read, and nothing of it may be taken for the next request. Compact, as the routes' are."""
    body = problem_body(status, title, slug, detail, field)
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()), (b"connection", b"close"),
                    *(headers or [])],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def problem_body(status: int, title: str, slug: str, detail: str, field: str | None) -> bytes:
    problem: dict[str, object] = {
        "type": f"urn:runyard:problem:{slug}", "title": title, "status": status, "detail": detail,
    }  # fmt: skip
    if field is not None:
        problem["field"] = field
    return json.dumps(problem, separators=(",", ":")).encode()
