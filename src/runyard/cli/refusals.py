"""The answers a connection is refused with before any application sees its request: whole
HTTP/1.1 answers (problem JSON, the connection closing), written by the protocol itself
(header_timeout.py, ws_guard.py)."""

from __future__ import annotations

import re
from typing import Any

import orjson

MAX_HEAD_BYTES = 64 * 1024  # a request line and its headers; nginx's default is 32 KiB


def problem_answer(status: str, problem: dict[str, Any], extra: str = "") -> bytes:
    """A whole answer, closing its connection; `extra`: more header lines, each ending CRLF."""
    body = orjson.dumps(problem)
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n{extra}\r\n"
    )
    return head.encode() + body


TOO_LARGE = problem_answer("431 Request Header Fields Too Large", {
    "type": "urn:runyard:problem:head-too-large",
    "title": "Request header fields too large",
    "status": 431,
    "detail": f"the request line and headers are over the limit of {MAX_HEAD_BYTES} bytes",
    "limit": MAX_HEAD_BYTES,
})  # fmt: skip


def malformed(reason: str) -> bytes:
    """The answer to bytes the HTTP parser refused, with its reason (httptools names what it
    found: "Duplicate Content-Length", "Invalid character in chunk size", ...)."""
    return problem_answer("400 Bad Request", {
        "type": "urn:runyard:problem:malformed-http",
        "title": "Malformed HTTP request",
        "status": 400,
        "detail": f"the request is not valid HTTP/1.1: {reason[:200]}",
    })  # fmt: skip


def unsupported_coding(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The answer to a request whose body comes in a transfer coding other than chunked
    alone (`gzip, chunked`): httptools reads the chunks and passes on what they hold as if
    nothing else had coded it, so a body another coding wraps was taken for the body itself.
    501, as RFC 9112 (6.1) has it for a coding the server does not know; None if it is fine."""
    given = [value for name, value in headers if name.lower() == b"transfer-encoding"]
    if not given:
        return None
    codings = [c.strip().lower() for c in b",".join(given).split(b",")]
    if codings == [b"chunked"]:
        return None
    shown = b", ".join(c for c in codings if c).decode("latin-1")[:100]
    return problem_answer("501 Not Implemented", {
        "type": "urn:runyard:problem:unsupported-transfer-coding",
        "title": "Unsupported transfer coding", "status": 501, "field": "header.Transfer-Encoding",
        "detail": f"Transfer-Encoding {shown!r}: only chunked is read, alone",
    })  # fmt: skip


def over_cap(detail: str) -> bytes:
    """The answer to a connection past a connection cap, sent before anything is read."""
    return problem_answer("503 Service Unavailable", {
        "type": "urn:runyard:problem:out-of-resources", "title": "Out of resources",
        "status": 503, "detail": detail,
    }, "retry-after: 1\r\n")  # fmt: skip


def unsupported_upgrade(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The answer to a request asking to switch to a protocol other than WebSocket (`h2c`,
    anything) while it carries a body: httptools ends the request at its head and leaves the
    rest of the connection to the new protocol, so the body was dropped (an upload stored
    empty) and, read later, parsed as a request of its own (a probe smuggled a submit in an
    upload's body). Without a body the request is answered, the upgrade ignored, and the
    connection closed after it (header_timeout.py); None then."""
    body = any(
        (name == b"content-length" and value.strip() not in (b"", b"0"))
        or name == b"transfer-encoding"
        for name, value in headers
    )
    if not body:
        return None
    return problem_answer("400 Bad Request", {
        "type": "urn:runyard:problem:unsupported-upgrade",
        "title": "Unsupported protocol upgrade", "status": 400, "field": "header.Upgrade",
        "detail": "a request with a body cannot ask to switch protocols (Connection: upgrade): "
                  "only WebSocket is spoken, on its own routes; send it without the upgrade",
    })  # fmt: skip


# RFC 3986's host (a reg-name, an IPv4 address or a bracketed IP literal) and port
_HOST = re.compile(rb"(\[[0-9A-Za-z:.%\-_~]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(:[0-9]*)?")


def unacceptable_head(version: str, headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The answer to a head no HTTP/1.1 server may serve (RFC 9112): another major version
    than 1 (505; `HTTP/2.0` and a request line without one were answered as 1.1), or, in
    1.1, a Host missing, given twice or not a host (400: `evil.example/x?y@z` was served). A
    proxy and the server could each take another Host for the request's."""
    if version not in ("1.0", "1.1"):
        return problem_answer("505 HTTP Version Not Supported", {
            "type": "urn:runyard:problem:http-version", "title": "HTTP version not supported",
            "status": 505, "detail": f"HTTP/{version[:10]} is not spoken here: HTTP/1.1 is",
        })  # fmt: skip
    hosts = [value for name, value in headers if name == b"host"]
    if version == "1.0" and not hosts:
        return None
    if len(hosts) == 1 and _HOST.fullmatch(hosts[0].strip()):
        return None
    why = "no Host" if not hosts else "Host given twice" if len(hosts) > 1 else "not a host"
    return problem_answer("400 Bad Request", {
        "type": "urn:runyard:problem:malformed-http", "title": "Malformed HTTP request",
        "status": 400, "field": "header.Host",
        "detail": f"the request is not valid HTTP/1.1: {why} (a request names its host once)",
    })  # fmt: skip
