"""`runyard serve`: configure logging and run the app under uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import structlog
import uvicorn

from runyard.auth import AuthConfigError, load_tokens
from runyard.cli import log_output
from runyard.cli.connection_cap import ConnectionCap, default_max_connections, default_per_client
from runyard.cli.data_entries import entries_problem
from runyard.cli.early_stop import EarlyStop
from runyard.cli.header_timeout import with_header_timeout
from runyard.cli.listen import ListenError, bind_sockets, close
from runyard.cli.log_render import CHAIN, render_json
from runyard.cli.reset import reset
from runyard.cli.ws_guard import guarded_websocket
from runyard.config import Settings
from runyard.errors import FULL_ERRNOS
from runyard.runtime import Runtime, StartRefusedError
from runyard.store.schema_version import refusal_of
from runyard.store.sqlite import WAL_LIMIT_BYTES
from runyard.streams.hub import stream_grace_s

log = structlog.get_logger("runyard")
FORCED_TASKS_S = 1.0  # after a second signal, what requests may take to end once reset


def stall_s(settings: Settings) -> float:
    """How long a client may take none of an answer before it is cut (cli/write_stall.py).
    A stream's watcher that stopped reading is told first (api/sse.py): its next event or
    heartbeat comes within heartbeat_s of the stall, is given a send timeout, and its farewell
    another."""
    return 2 * settings.stream_send_timeout_s + settings.heartbeat_s


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def configure_logging(fmt: str) -> log_output.TurnFlushedLogger | None:
    """Logging set up for `fmt`; the logger that holds lines until its turn ends, if any
    (None: every line is written as it is logged)."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    binary = getattr(sys.stderr, "buffer", None)  # absent when stderr was replaced by text
    factory: Any = structlog.PrintLoggerFactory(sys.stderr)
    sink = None
    if use_json and binary is not None:
        processors: list[structlog.typing.Processor] = [render_json]  # CHAIN's steps in one
        sink = log_output.TurnFlushedLogger(binary)
        factory = log_output.factory(sink)
    else:
        text: structlog.typing.Processor = structlog.dev.ConsoleRenderer()
        processors = [*CHAIN, structlog.processors.JSONRenderer() if use_json else text]
    structlog.configure(
        processors=processors,
        logger_factory=factory,
        # below INFO a call returns at once, before any processor runs
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=True,
    )
    # uvicorn's records through the same logger: they keep their place among the JSON lines
    handler = log_output.Handler(sink) if sink is not None else logging.StreamHandler(sys.stderr)
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[handler])
    if sink is not None:
        # what Python itself would write to stderr while serving (a warning, a thread's
        # traceback) goes the same way, not by a write that could wait on a stalled reader
        logging.captureWarnings(True)
        threading.excepthook = _thread_failed
        sys.unraisablehook = _unraisable
    return sink


def _thread_failed(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    exc = (args.exc_type, args.exc_value, args.exc_traceback)
    name = args.thread.name if args.thread is not None else None
    log.error("thread_failed", thread=name, exc_info=exc)


def _unraisable(args: Any) -> None:
    """An exception nobody could catch (a finaliser's, a __del__'s): logged, not printed."""
    exc = (args.exc_type, args.exc_value, args.exc_traceback)
    try:
        what = repr(args.object)[:200]
    except Exception:  # its repr fails too: a hook that raised would print to stderr
        what = f"<{type(args.object).__name__} object>"
    log.error("unraisable", message=args.err_msg, object=what, exc_info=exc)


class RunyardServer(uvicorn.Server):
    """uvicorn, told about shutdown first: submissions get 503 from the first signal on, and
    with `drain` the server keeps answering reads while running programs finish."""

    def __init__(
        self, config: uvicorn.Config, runtime: Runtime, flush_logs: Callable[[], None],
        early: EarlyStop | None = None,
    ) -> None:  # fmt: skip
        super().__init__(config)
        self.runtime = runtime
        self.flush_logs = flush_logs
        self.early = early
        self._drain_started = False
        self._reloads: set[asyncio.Task[None]] = set()
        self._forced = asyncio.Event()  # a second signal while shutting down
        self.refused: str | None = None  # why the start was refused (runtime.open)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.runtime.begin_shutdown()
        loop = self.runtime.loop
        if self.runtime.settings.drain and not self._drain_started and loop is not None:
            self._drain_started = True  # a second signal skips the wait
            loop.call_soon_threadsafe(lambda: loop.create_task(self._drain_then_exit(sig)))
            return
        super().handle_exit(sig, frame)
        if self.force_exit and loop is not None:
            loop.call_soon_threadsafe(self._forced.set)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:  # what may refuse the start, before the app's: uvicorn logs its traceback
            await self.runtime.open()
        except StartRefusedError as exc:
            self.refused, self.should_exit = str(exc), True
            return
        await super().startup(sockets)
        if sockets is not None and self.started:
            # uvicorn says where it listens only for sockets it bound itself (cli/listen.py)
            self._log_started_message(sockets)
        # What start-up built (the app, its routes and schemas, the modules) lives as long as
        # the server: out of the cyclic collector's sight, a full collection walks only what
        # serving made (measured at C = 8: two full collections of ~30 ms per 4000 runs, the
        # loop stopped meanwhile). Objects frozen are still freed when nothing refers to them.
        gc.collect()
        gc.freeze()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Streams and waits first, while their connections are open: each stream sends a
        # whole `shutdown` event and ends, each `Prefer: wait` answers with its run as it is
        # (uvicorn would wait for them, then cut them off with a bare 500).
        self.runtime.release_waiters()
        await self._unless_forced(self.runtime.close_streams())
        await super().shutdown(sockets)
        stopped = getattr(self.lifespan, "shutdown_event", None)  # uvicorn's, when it did stop
        if self.force_exit and not (stopped is not None and stopped.is_set()):
            await self._forced_end()

    async def _unless_forced(self, wait: Coroutine[Any, Any, None]) -> None:
        waiting = asyncio.ensure_future(wait)
        forced = asyncio.ensure_future(self._forced.wait())
        await asyncio.wait((waiting, forced), return_when=asyncio.FIRST_COMPLETED)
        for task in (waiting, forced):
            task.cancel()
        await asyncio.gather(waiting, forced, return_exceptions=True)

    async def _forced_end(self) -> None:
        """A second signal (Ctrl-C twice) skips the waits for connections, not the runtime's
        stop, which uvicorn skips too: the store is closed and the starts it holds written,
        else the next start has more to recover. Every connection is reset first, so each
        request ends as its client's leaving, not cancelled mid-way with a traceback when the
        loop closes."""
        for connection in list(self.server_state.connections):
            reset(connection.transport)
        if self.server_state.tasks:
            await asyncio.wait(set(self.server_state.tasks), timeout=FORCED_TASKS_S)
        await self.lifespan.shutdown()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # SIGHUP reloads the tokens file (revocation without a restart) instead of ending us
        kept = self.early.hand_over() if self.early is not None else []
        previous = signal.signal(signal.SIGHUP, self._hangup)
        try:
            with super().capture_signals():
                for sig in kept:  # asked for while it started: to its handlers now
                    signal.raise_signal(sig)
                try:
                    yield
                finally:
                    # uvicorn raises a stopping signal again as this ends; SIGTERM's default
                    # action ends the process there, before atexit: the held lines first
                    self.flush_logs()
        finally:
            signal.signal(signal.SIGHUP, previous)

    def _hangup(self, sig: int, frame: FrameType | None) -> None:
        loop = self.runtime.loop
        if loop is not None:
            loop.call_soon_threadsafe(self._start_reload, loop)

    def _start_reload(self, loop: asyncio.AbstractEventLoop) -> None:
        task = loop.create_task(reload_tokens(self.runtime))
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _drain_then_exit(self, sig: int) -> None:
        try:
            await self.runtime.drain()
        finally:
            super().handle_exit(sig, None)


async def reload_tokens(runtime: Runtime) -> None:
    """Read the tokens file again and swap it in; a broken file keeps the tokens in force."""
    path = runtime.settings.tokens_file
    if path is None:
        log.warning("tokens_not_reloaded", reason="the server was started without a tokens file")
        return
    try:
        entries = await asyncio.to_thread(load_tokens, path)
    except AuthConfigError as exc:
        failure = str(exc)
    else:
        runtime.auth.replace(entries)
        log.info("tokens_reloaded", path=str(path), tokens=len(entries))
        return
    log.error("tokens_not_reloaded", reason=failure, kept=len(runtime.auth.entries))


def tokens_problem(settings: Settings) -> str | None:
    """Why the tokens file cannot be used (unreadable, not TOML, a role unknown, ...)."""
    try:
        load_tokens(settings.tokens_file)
    except AuthConfigError as exc:
        return str(exc)
    return None


def cluster_config_problem(settings: Settings) -> str | None:
    """Why this configuration must not start, for a server joining a cluster."""
    if settings.on_postgres and not settings.cluster_secret and load_tokens(settings.tokens_file):
        return (
            "tokens are configured for a server over PostgreSQL (a cluster) but "
            "RUNYARD_CLUSTER_SECRET is not set: servers could not relay a caller's requests "
            "to each other with the caller's role. Set the same RUNYARD_CLUSTER_SECRET (16 or "
            "more characters) on every server; see docs/scale-out.md."
        )
    return None


WS_MAX_MESSAGE = 64 * 1024  # bytes of one message a WebSocket client may send
WS_PING_S = 10.0  # a WebSocket peer is pinged this often, and closed if silent this long
START_ROOM = 256 * 1024  # what opening the database needs at least (its WAL index: 32 KiB)


def data_dir_problem(settings: Settings) -> str | None:
    """Why the data directory cannot hold this server's files (a file in its place, a parent
    that cannot be entered or written), said before anything starts."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"the data directory {settings.data_dir} cannot be used: {exc.strerror or exc}"
    # A disk too full for the database's own files (its WAL and index): the store could not
    # even open. Said here, plainly, rather than as a traceback from the store's first pragma.
    try:
        with tempfile.TemporaryFile(dir=settings.data_dir) as probe:
            probe.write(b"\0" * START_ROOM)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        if exc.errno in FULL_ERRNOS:
            return (
                f"the disk of the data directory {settings.data_dir} is full "
                f"({exc.strerror}): free some space, then start again"
            )
        # read-only (EROFS), not ours to write (EACCES): the store opened read-only, for
        # good (a remount did not mend it), or the supervisor's log failed the start
        return f"the data directory {settings.data_dir} cannot be written: {exc.strerror or exc}"
    database = None if settings.on_postgres else settings.database_path
    for path in (database, *(_sidecars(database) if database is not None else ())):
        if path is not None and path.exists() and not os.access(path, os.W_OK):
            return f"{path} cannot be written (its mode or owner): the store would be read-only"
    return entries_problem(settings.data_dir, database)


def _sidecars(database: Path) -> tuple[Path, Path]:
    return database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")


def schema_problem(settings: Settings) -> str | None:
    """Why this server's SQLite database must not be served (a newer runyard migrated it, or
    it cannot be read as a database), said before anything starts rather than as a traceback
    from the store's opening."""
    if settings.on_postgres:
        return None  # older servers of a cluster keep serving a newer schema (scale-out.md)
    return refusal_of(settings.database_path)


def bound_or_refused(settings: Settings) -> list[socket.socket]:
    """The server's sockets (bound; they listen once it serves), when nothing stands in the
    way of serving; otherwise a refusal in one line (and one log line), status 2, before
    anything started. The sockets come before the data directory is looked at: a port in use
    creates nothing there."""
    sockets: list[socket.socket] = []
    try:
        problem = tokens_problem(settings) or cluster_config_problem(settings)
        if problem is None:
            sockets = bind_sockets(settings.host, settings.port)
        problem = problem or data_dir_problem(settings) or schema_problem(settings)
    except (AuthConfigError, ListenError) as exc:
        problem = str(exc)
    if problem is not None:
        close(sockets)
        log.error("refusing_to_start", reason=problem)
        print(f"runyard: refusing to start: {problem}", file=sys.stderr)  # noqa: T201
        raise SystemExit(2)
    return sockets


def serve(settings: Settings, early: EarlyStop | None = None) -> None:
    from runyard.api.app import create_app

    logs = configure_logging(settings.log_format)
    sockets = bound_or_refused(settings)
    log.info(
        "starting",
        host=settings.host,
        port=settings.port,
        jobs_dir=str(settings.jobs_dir),
        data_dir=str(settings.data_dir),
        capacity=settings.capacity,
        auth="none: bound to loopback only" if is_loopback(settings.host) else "none (--insecure)",
    )
    if not settings.on_postgres and settings.min_free_mb * 2**20 < WAL_LIMIT_BYTES:
        # the reserve is what the database's WAL may grow into before it is bounded: a
        # smaller one lets the WAL fill the disk, and then nothing is written to shrink it
        log.warning("min_free_below_wal_bound", min_free_mb=settings.min_free_mb,
                    wal_bound_mb=WAL_LIMIT_BYTES // 2**20)  # fmt: skip
    runtime = Runtime(settings)
    most = settings.max_connections or default_max_connections()
    connections = ConnectionCap(
        most, settings.max_connections_per_client or default_per_client(most),
        runtime.metrics.connections_cut,
    )  # fmt: skip
    config = uvicorn.Config(
        create_app(settings, runtime),
        host=settings.host,
        port=settings.port,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_timeout_s)),
        log_config=None,
        access_log=False,
        proxy_headers=False,
        # the streams had half the shutdown time; every connection has the other half to end
        http=with_header_timeout(
            settings.header_timeout_s,
            stall_s(settings),
            connections,
            stream_grace_s(settings.shutdown_timeout_s),
        ),
        # runyard reads no client message but a close: a message is bounded small, nothing
        # is inflated, and a peer that stops answering pings is closed (cli/ws_guard.py)
        ws=guarded_websocket(stream_grace_s(settings.shutdown_timeout_s)),
        ws_max_size=WS_MAX_MESSAGE,
        ws_per_message_deflate=False,
        ws_ping_interval=WS_PING_S,
        ws_ping_timeout=WS_PING_S,
    )
    flush_logs = logs.flush_at_exit if logs is not None else _nothing
    server = RunyardServer(config, runtime, flush_logs, early)
    server.run(sockets=sockets)
    if server.refused is not None:  # logged as `refusing_to_start`
        close(sockets)
        print(f"runyard: refusing to start: {server.refused}", file=sys.stderr)  # noqa: T201
        raise SystemExit(2)


def _nothing() -> None:
    """Lines written as logged: nothing held to flush."""
