"""An answer's head (status line and headers) whole within the request's read timeout.

httpx's timeouts are per read: a server, or anything in between, that sent its head a byte
every few seconds held a CLI command or an SDK call for as long as it trickled, each byte
inside the timeout. The client's connections go through `HeadTransport`, whose network reads
are bounded by one deadline per request, armed at its first read (once the request is
written: an upload takes what it takes) and disarmed when the head is in. The body has its
own guard (`client_guards.paced`: a minimum rate after a grace)."""

from __future__ import annotations

import contextlib
import contextvars
import ssl
import time
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import httpcore
import httpx


@dataclass
class _Head:
    budget_s: float
    until: float | None = None  # armed at the first read


# per thread and per task: a client shared by threads bounds each one's request alone
_HEAD: contextvars.ContextVar[_Head | None] = contextvars.ContextVar("runyard_head", default=None)


@contextlib.contextmanager
def head_within(request: httpx.Request) -> Iterator[None]:
    """The reads of `request`'s answer until the head is in (while this block runs) end at
    its read timeout, counted from the first; no read timeout, no deadline."""
    budget = (request.extensions.get("timeout") or {}).get("read")
    token = _HEAD.set(_Head(float(budget)) if budget is not None else None)
    try:
        yield
    finally:
        _HEAD.reset(token)


def _left(timeout: float | None) -> float | None:
    head = _HEAD.get()
    if head is None:
        return timeout
    now = time.monotonic()
    if head.until is None:
        head.until = now + head.budget_s
    left = head.until - now
    if left <= 0:
        _given_up(head)
    return left if timeout is None else min(timeout, left)


def _given_up(head: _Head) -> typing.NoReturn:
    raise httpcore.ReadTimeout(
        f"the answer's head did not come whole within {head.budget_s:g} s (a server that "
        "sends it a little at a time): given up"
    )


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            return self._inner.read(max_bytes, _left(timeout))
        except httpcore.ReadTimeout:
            head = _HEAD.get()
            if head is not None and head.until is not None and time.monotonic() >= head.until:
                _given_up(head)  # the deadline's wait, not a read's: said so
            raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:  # fmt: skip
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:  # fmt: skip
        return _Stream(self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:  # fmt: skip
        return _Stream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class HeadTransport(httpx.HTTPTransport):
    """httpx's transport (TLS as `verify` says, its default limits), its connections opened
    through `_Backend`. httpx takes no network backend: the pool it made is replaced by one
    made alike with httpcore's public constructor (a test fails if this stops working)."""

    def __init__(self, verify: ssl.SSLContext | bool = True) -> None:
        # not httpx's __init__: all it does is make a pool, and a TLS context for it (tens of
        # ms of CPU), both made here
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_Backend(),
        )
