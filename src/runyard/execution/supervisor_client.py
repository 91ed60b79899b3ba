"""The server's connection to the supervisor: start it if none answers, then talk JSON lines."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from runyard import failpoints
from runyard.execution.base import (
    ExecutorGoneError,
    ExecutorTimeoutError,
    ExecutorUnavailableError,
)
from runyard.execution.procinfo import peer_pid, stopped
from runyard.execution.protocol import LOG_NAME, MAX_LINE, SOCKET_NAME, decode, encode
from runyard.execution.readiness import readable

log = structlog.get_logger(__name__)

EventHandler = Callable[[dict[str, Any]], Awaitable[None]]
# Environment the supervisor keeps from the server's: no secrets, only what it needs (with
# PYTHONPATH: it must import the very runyard the server runs, wherever that comes from).
SUPERVISOR_ENV = ("PATH", "HOME", "LANG", "TZ", "PYTHONPATH", failpoints.ENV)
# A request carries its deadline; the server waits this much longer for the reply. A spawn
# the supervisor reads past its deadline is refused; but one read in time may be answered
# after the server gave up (the supervisor stopped, or slow, between the spawn and its
# answer): that answer is still awaited (late_spawns.py), and the program it started stopped.
REPLY_MARGIN_S = 2.0
# requests whose late answer still matters: a program may have been started
BINDING_OPS = frozenset({"spawn"})
# a supervisor found stopped (SIGSTOP) this long is continued: a stop made on purpose, to look
# at it, is left alone that long
STOPPED_GRACE_S = 30.0


class SupervisorUnavailableError(ExecutorUnavailableError):
    """The supervisor is not connected or does not answer (503 when it reaches a client)."""


class SupervisorGoneError(SupervisorUnavailableError, ExecutorGoneError):
    """The connection closed with this request unanswered (the supervisor died, or was killed:
    by the very program it had just spawned, perhaps)."""


class SupervisorTimeoutError(SupervisorUnavailableError, ExecutorTimeoutError):
    """The supervisor is connected but did not answer in time (paused, hung or swamped)."""


def _unreachable(exc: OSError) -> str:
    if isinstance(exc, BlockingIOError):
        return "it accepts no connection (stopped or hung, its backlog full)"
    if isinstance(exc, ConnectionRefusedError):
        # launch_supervisor found the data directory's lock held: a supervisor owns it
        return "its socket refuses connections, and the data directory's lock is held"
    return exc.strerror or str(exc)


def launch_supervisor(data_dir: Path, *, fsync: bool, timeout_s: float = 30.0) -> str:
    """Blocking: spawn a supervisor for `data_dir` and wait until it listens (or says another
    one already does). Returns "ready" or "busy"."""
    read_fd, write_fd = os.pipe()
    os.set_inheritable(write_fd, True)
    argv = [
        sys.executable,
        "-m",
        "runyard.execution.supervisor_process",
        "--data-dir",
        str(data_dir),
    ]
    argv += ["--ready-fd", str(write_fd)] + (["--fsync"] if fsync else [])
    log_fd = os.open(data_dir / LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        pid = os.posix_spawn(
            sys.executable,
            argv,
            {k: v for k, v in os.environ.items() if k in SUPERVISOR_ENV},
            file_actions=[
                (os.POSIX_SPAWN_DUP2, devnull, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(write_fd)
        os.close(log_fd)
        os.close(devnull)
    try:
        os.waitpid(pid, 0)  # the first process forks the real supervisor and exits at once
        word = os.read(read_fd, 64).decode().strip() if readable(read_fd, timeout_s) else ""
    finally:
        os.close(read_fd)
    if word not in ("ready", "busy"):
        raise SupervisorUnavailableError(f"the supervisor did not start; see {data_dir / LOG_NAME}")
    return word


@dataclass(frozen=True, slots=True)
class Sent:
    """A request written to the supervisor, its answer to come (`SupervisorClient.reply`)."""

    req: int
    future: asyncio.Future[dict[str, Any]]
    timeout_s: float
    op: str


class SupervisorClient:
    """Requests are answered in order of `req`; `exited` events go to `on_event`. When the
    connection drops, `on_disconnect` runs: the caller reconciles from the exit files."""

    def __init__(
        self,
        data_dir: Path,
        on_event: EventHandler,
        on_disconnect: Callable[[], Awaitable[None]],
        *,
        fsync: bool = False,
        timeout_s: float = 10.0,
        stopped_grace_s: float = STOPPED_GRACE_S,
    ) -> None:
        self.data_dir = data_dir
        self.stopped_grace_s = stopped_grace_s
        self.on_event = on_event
        self.on_disconnect = on_disconnect
        self.fsync = fsync
        self.timeout_s = timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._req = itertools.count(1)
        self._read_task: asyncio.Task[None] | None = None
        self._closing = False
        # which supervisor was first found stopped, and when (monotonic)
        self._stopped_since: tuple[int, float] | None = None

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    def continue_if_stopped(self) -> bool:
        """A supervisor that does not answer because it has been stopped (SIGSTOP: any process
        of its user may send it, one of its programs included) for `stopped_grace_s` is
        continued: stopped, it held every run (no timeout fired, no cancel, no spawn) until
        someone sent SIGCONT by hand. The grace leaves a stop an operator makes on purpose (to
        look at it) alone for a while; it is timed across connections to the same process.
        Whether it is stopped still. In a thread: it reads /proc."""
        pid = self.peer_pid()
        try:
            is_stopped = pid is not None and stopped(pid)
        except (OSError, ValueError, IndexError):
            is_stopped = False  # gone: a lost supervisor is handled as ever
        if not is_stopped or pid is None:
            self._stopped_since = None
            return False
        now = time.monotonic()
        if self._stopped_since is None or self._stopped_since[0] != pid:
            self._stopped_since = (pid, now)
        stopped_s = now - self._stopped_since[1]
        if stopped_s < self.stopped_grace_s:
            return True
        self._stopped_since = None
        try:
            os.kill(pid, signal.SIGCONT)
        except OSError:
            return False  # gone meanwhile
        log.warning("supervisor_continued", pid=pid, stopped_s=round(stopped_s))
        return False

    def peer_pid(self) -> int | None:
        """The connected supervisor's pid, as the kernel says."""
        sock = self._writer.get_extra_info("socket") if self._writer is not None else None
        return (peer_pid(sock) or None) if sock is not None else None

    async def connect(self) -> None:
        """Connect to the running supervisor, starting one first if none answers."""
        path = self.data_dir / SOCKET_NAME
        for attempt in range(3):
            try:
                self._reader, self._writer = await asyncio.open_unix_connection(
                    str(path), limit=MAX_LINE
                )
                break
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if attempt == 2:
                    raise SupervisorUnavailableError(
                        f"cannot reach the supervisor: {_unreachable(exc)}"
                    ) from None
                try:
                    word = await asyncio.to_thread(
                        launch_supervisor, self.data_dir, fsync=self.fsync
                    )
                except OSError as exc:  # its log cannot be opened, it cannot be spawned
                    raise SupervisorUnavailableError(
                        f"cannot start a supervisor: {exc.strerror or exc}"
                    ) from None
                log.info("supervisor_started" if word == "ready" else "supervisor_found")
            except OSError as exc:
                # its listen backlog full (a stopped supervisor that accepts nobody: EAGAIN),
                # the socket's mode: no new supervisor would do better; the caller retries
                raise SupervisorUnavailableError(
                    f"cannot reach the supervisor: {_unreachable(exc)}"
                ) from None
        if await asyncio.to_thread(self.continue_if_stopped):
            # Connected into the backlog of a supervisor that cannot answer: every request
            # would wait its timeout (the start's reconcile, then its health build, held the
            # port closed for 17 s). Out of reach instead, at once, as if it had refused: the
            # caller connects again later, and it is continued once stopped past the grace.
            pid = self.peer_pid()
            await self.close()
            raise SupervisorUnavailableError(
                f"the supervisor (pid {pid}) is stopped (SIGSTOP, or held by a tracer); it "
                f"is continued once stopped for {self.stopped_grace_s:g} s"
            )
        self._closing = False
        self._read_task = asyncio.create_task(self._read_loop(), name="supervisor-reader")

    async def close(self) -> None:
        self._closing = True
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        if self._read_task is not None:
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._read_task
        self._writer = None

    async def request(
        self, message: dict[str, Any], timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Send one request and wait for its reply, at most `timeout_s` (default: the client's)
        plus a margin: a paused or hung supervisor is an error, never a caller that waits
        forever. The request carries its deadline; the supervisor refuses a spawn it reads
        late."""
        return await self.reply(self.send(message, timeout_s))

    def send(self, message: dict[str, Any], timeout_s: float | None = None) -> Sent:
        """`request`'s first half: the request written now, in the caller's step (no await);
        `reply` waits for its answer."""
        if self._writer is None or self._writer.is_closing():
            raise SupervisorUnavailableError("not connected to the supervisor")
        timeout = self.timeout_s if timeout_s is None else timeout_s
        req = next(self._req)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req] = fut
        try:
            self._writer.write(encode({**message, "req": req, "deadline": time.time() + timeout}))
        except BaseException:
            self._pending.pop(req, None)
            raise
        return Sent(req, fut, timeout, str(message.get("op")))

    async def reply(self, sent: Sent) -> dict[str, Any]:
        """The answer to a request `send` wrote, within its timeout plus a margin. A spawn's
        answer that does not come in time is still expected: its future stays with the
        caller, who hands it on (late_spawns.py) and `forget`s it once settled."""
        binding = sent.op in BINDING_OPS
        given_up = False
        try:
            async with asyncio.timeout(sent.timeout_s + REPLY_MARGIN_S):
                if self._writer is not None:
                    await self._writer.drain()
                # shielded: the timeout must not cancel a future its answer may yet settle
                # (read in the very turn the timeout fires, or later)
                return await (asyncio.shield(sent.future) if binding else sent.future)
        except TimeoutError:
            if sent.future.done() and not sent.future.cancelled():
                return sent.future.result()  # answered as the time ran out
            given_up = binding and self.connected
            raise SupervisorTimeoutError(
                f"the supervisor did not answer {sent.op!r} within {sent.timeout_s:g} s"
            ) from None
        finally:
            if not given_up:
                self._pending.pop(sent.req, None)

    def forget(self, sent: Sent) -> None:
        """A request `reply` gave up on is settled (answered, or its connection gone)."""
        self._pending.pop(sent.req, None)

    async def ping(self, timeout_s: float) -> dict[str, Any]:
        """A cheap round trip for readiness: the supervisor's pid and its failing writes."""
        return await self.request({"op": "ping"}, timeout_s)

    async def _read_loop(self) -> None:
        reader = self._reader
        if reader is None:
            return
        try:
            while line := await reader.readline():
                # it speaks, so it runs: a later stop is timed from when it is found (a
                # probe: a stop seen once, then ended by hand, had the next one continued
                # at once, counted from the first)
                self._stopped_since = None
                msg = decode(line)
                req = msg.get("req")
                if req is not None:
                    fut = self._pending.get(req)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
                else:
                    await self.on_event(msg)
        except ConnectionError as exc:  # how a killed supervisor's socket ends: no traceback
            log.warning("supervisor_connection_error", error=str(exc))
        except ValueError as exc:  # a line that is not our protocol: worth its traceback
            log.exception("supervisor_connection_error", error=str(exc))
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(SupervisorGoneError("the supervisor went away"))
            self._writer = None
            if not self._closing:
                await self.on_disconnect()
