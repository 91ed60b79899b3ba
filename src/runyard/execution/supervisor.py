"""The supervisor: one small process per data directory, parent and subreaper of every program.

It outlives the API server. It spawns each program in its own process group, reaps it, enforces
its timeout, and writes its exit status atomically to the attempt's exit file before telling
any connected server. Single-threaded: one selector loop over the socket (connections.py), a
SIGCHLD wake-up pipe and a timer heap (timers.py); spawning, kills and exit files have modules
of their own; its process starts in supervisor_process.py.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runyard import failpoints
from runyard.execution import kills, leftovers, sandbox, spawning
from runyard.execution.connections import Client, Connections
from runyard.execution.diskwrites import probe, say
from runyard.execution.exit_files import REWRITE_EVERY_S, ExitFiles
from runyard.execution.lease_watch import LeaseWatch
from runyard.execution.limits import mark_cut
from runyard.execution.protocol import SOCKET_NAME, ExitRecord, SpawnRequest, decode, run_of
from runyard.execution.shortages import LastShortage, fork_shortage, shortage, unplaced
from runyard.execution.spawning import Program
from runyard.execution.timers import Timers

TERM_AGAIN_S = 0.01  # a sandbox being made has no program to SIGTERM yet: sent again this soon


# a spawn refused for no fault of its run's: the server puts the run back in the queue
REQUEUE = {"requeue": True}
HELD = {**REQUEUE, "held": True}  # and no spawn will start here: the server claims none


class Supervisor:
    def __init__(self, data_dir: Path, idle_exit_s: float, fsync: bool) -> None:
        self.data_dir = data_dir
        self.idle_exit_s = idle_exit_s
        self.sel = selectors.DefaultSelector()
        self.programs: dict[int, Program] = {}
        self.by_key: dict[str, Program] = {}
        self.by_run: dict[str, Program] = {}  # by run id: one live attempt of each at most
        # a sandbox's init (bwrap's pid 1), reaped by us once bwrap ends: its usage is the
        # program's (sandbox.py); pid -> (max RSS KiB, CPU s) once reaped, None until then
        self.init_usage: dict[int, tuple[int, float] | None] = {}
        self.conns = Connections(self.sel, self.handle, self._client_gone)
        self.timers = Timers()
        self.leftovers = leftovers.Leftovers(self.timers, self.programs)
        self.idle_since = time.monotonic()
        # The last failure of each kind of durable write (point -> why), until one succeeds:
        # the server's readiness reports them (op_ping), and a ping probes whether they cleared.
        self.write_errors: dict[str, str] = {}
        self.spawn_short = LastShortage()  # a fork refused for want of room: no probe makes one
        self.exits = ExitFiles(
            fsync, self.write_errors, lambda key: self.timers.add(REWRITE_EVERY_S, "rewrite", key)
        )
        # Self-fencing in a cluster (lease_watch.py): programs stop when their lease lapses.
        self.leases = LeaseWatch(lambda delay, token: self.timers.add(delay, "lease", token))
        # why its death would leave its programs running (supervisor_process.watch_warden)
        self.unguarded: str | None = None

    # -- set-up -----------------------------------------------------------------------------

    def listen(self) -> socket.socket:
        path = self.data_dir / SOCKET_NAME
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # stale: we hold the lock, so no live supervisor owns it
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(path))
        path.chmod(0o600)
        srv.listen(64)
        srv.setblocking(False)
        self.sel.register(srv, selectors.EVENT_READ, "accept")
        return srv

    def install_signals(self) -> None:
        rsock, wsock = socket.socketpair()
        rsock.setblocking(False)
        wsock.setblocking(False)
        # a storm of SIGCHLD (a program forking thousands) fills the pipe: the loop reaps
        # them all at its next turn anyway, so a wake-up more is not news (each was logged)
        signal.set_wakeup_fd(wsock.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        # The server's terminal or group must not take the programs down with it, nor what
        # we were started with ignored reach them: caught, not ignored (an exec keeps what is
        # ignored; programs must start with the defaults).
        for sig in (signal.SIGINT, signal.SIGHUP, *spawning.inherited_ignored()):
            signal.signal(sig, lambda *_: None)
        self._wake_pair = (rsock, wsock)
        self.sel.register(rsock, selectors.EVENT_READ, "signal")

    # -- main loop --------------------------------------------------------------------------

    def unoccupied(self) -> bool:
        # a sweep still due is of what an ended program left: leaving before it, the
        # supervisor left that running for good (orphaned to init, nobody's to kill)
        return not self.programs and not self.exits.unwritten and not self.leftovers.pending

    def idle(self) -> bool:
        return self.unoccupied() and not self.conns.clients

    def serve_forever(self) -> None:
        while True:
            now = time.monotonic()
            self.fire_timers(now)
            # What this turn said goes out in one send per server, before the wait is decided:
            # a send that finds its server gone drops it, and the last one dropped here left a
            # wait with no end (nobody to tell, no idle exit), the supervisor idle for good.
            self.conns.flush_pending()
            if self.unguarded is not None and self.unoccupied() and self.leave(self.unoccupied):
                say("the warden is gone: leaving while nothing runs, for a supervisor with one")
                return  # its server starts the next, and a warden with it
            if self.idle():
                if now - self.idle_since >= self.idle_exit_s and self.leave(self.idle):
                    return
                timeout: float | None = max(0.0, self.idle_exit_s - (now - self.idle_since))
            else:
                timeout = None
            until = self.timers.wait_s(now)
            if until is not None:
                timeout = until if timeout is None else min(timeout, until)
            for key, mask in self.sel.select(timeout):
                self.dispatch(key, mask)

    def leave(self, still: Callable[[], bool]) -> bool:
        """Stop listening, unless `still` fails once what waits is served: a server connecting
        this very moment (in the backlog: dropped unheard by the exit, its first request met
        with EOF), or a spawn already sent. Then the idle time starts again once it has gone."""
        for key, mask in self.sel.select(0):
            self.dispatch(key, mask)
        if not still():
            return False
        for key in list(self.sel.get_map().values()):
            if key.data == "accept":
                self.sel.unregister(key.fileobj)
                key.fileobj.close()  # type: ignore[union-attr]  # from here on: refused
        return True

    def dispatch(self, key: selectors.SelectorKey, mask: int) -> None:
        if key.data == "accept":
            self.conns.accept(key.fileobj)  # type: ignore[arg-type]
        elif key.data == "signal":
            with contextlib.suppress(BlockingIOError):
                self._wake_pair[0].recv(4096)
            self.reap()
        else:
            self.conns.ready(key.fd, mask)
            # A read's burst of spawn requests keeps this loop from select for milliseconds:
            # what ended meanwhile goes out with the burst's replies, in one send, not a turn
            # later. Not after each request: a send per exit woke the server once per run
            # (A/B, a batch: its CPU per run -24 %, runs/s +8.5 %).
            if mask & selectors.EVENT_READ and self.reap():
                self.conns.flush_pending()

    def _client_gone(self) -> None:
        if not self.conns.clients and not self.programs:
            self.idle_since = time.monotonic()

    def handle(self, client: Client, line: bytes) -> None:
        msg: dict[str, Any] = {}
        try:
            msg = decode(line)
            op = msg["op"]
            reply = {
                "spawn": self.op_spawn,
                "signal": self.op_signal,
                "list": self.op_list,
                "ping": self.op_ping,
                "lease": self.leases.op_lease,
            }[op](msg)
        except Exception as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        reply["req"] = msg.get("req")
        self.conns.send(client, reply)

    # -- operations -------------------------------------------------------------------------

    def refused(self, req: SpawnRequest) -> dict[str, Any] | None:
        """Why the spawn `req` must not start, if it must not."""
        if req.key in self.by_key:
            return {"ok": False, "error": f"attempt {req.key} is already running"}
        if (live := self.by_run.get(run_of(req.key))) is not None:
            # one whose spawn the server gave up on (late_spawns.py), being stopped: never two
            return {"ok": False, "error": f"attempt {live.key} of its run still runs", **REQUEUE}
        if self.unguarded is not None:  # no program more that may outlive it unwatched
            return {"ok": False, "error": f"not started here: {self.unguarded}", **HELD}
        if req.deadline is not None and time.time() > req.deadline:
            # its server gave up on the answer and re-queues it: a program nobody would track
            return {"ok": False, "error": "the spawn request expired before it was read", **REQUEUE}
        return None

    def op_spawn(self, msg: dict[str, Any]) -> dict[str, Any]:
        req = SpawnRequest.parse(msg)
        if (refusal := self.refused(req)) is not None:
            return refusal
        self.leases.admit(req.key, req.lease)  # LeaseLapsedError: its server was fenced
        try:
            spawning.prepare(req)
        except OSError as exc:
            return self.write_failed("workspace", f"cannot prepare the workspace: {exc}", exc)
        self.write_errors.pop("workspace", None)
        started_at = time.time()
        set_aside: list[str] = []
        try:
            log = spawning.open_log(req, set_aside)
        except OSError as exc:
            return self.write_failed("log", f"cannot open the attempt's log: {exc}", exc)
        self.write_errors.pop("log", None)
        try:
            prog = spawning.start(req, log, started_at)
        except (OSError, KeyError) as exc:
            return self.start_failed(req, exc)
        self.spawn_short.succeeded()
        self.programs[prog.pid] = prog
        self.by_key[req.key] = self.by_run[run_of(req.key)] = prog
        if prog.init_pid is not None:
            self.init_usage[prog.init_pid] = None
        if req.timeout_s:
            self.timers.add(req.timeout_s, "timeout", req.key)
        reply: dict[str, Any] = {
            "ok": True, "pid": prog.pid, "pgid": prog.pgid, "start_time": prog.start_time,
            "started_at": started_at,
        }  # fmt: skip
        if set_aside:
            reply["set_aside"] = set_aside
        failpoints.hit("before_spawn_answer")
        return reply

    def op_signal(self, msg: dict[str, Any]) -> dict[str, Any]:
        prog = self.by_key.get(str(msg["key"]))
        if prog is None:
            return {"ok": False, "error": "no such running attempt"}
        self.terminate(prog, str(msg.get("reason", "cancel")))
        return {"ok": True}

    def op_list(self, _msg: dict[str, Any]) -> dict[str, Any]:
        attempts = [
            {"key": p.key, "pid": p.pid, "start_time": p.start_time, "started_at": p.started_at}
            for p in self.programs.values()
        ]
        # Ended, but the exit file is not written yet: still ours, so not read as lost; the
        # `exited` event is sent again once the file is written.
        attempts += [
            {"key": k, "pid": r.pid, "start_time": None, "started_at": r.started_at, "ended": True}
            for k, (_, r) in self.exits.unwritten.items()
        ]
        return {"ok": True, "attempts": attempts}

    def op_ping(self, _msg: dict[str, Any]) -> dict[str, Any]:
        """Cheap liveness for the server's readiness, with the durable writes now failing."""
        for point in list(self.write_errors):
            if point != "exit_file" and probe(self.data_dir, point):
                self.write_errors.pop(point, None)
        errors = {**self.write_errors, **self.spawn_short.shown("spawn")}
        if self.unguarded is not None:
            errors["warden"] = self.unguarded
        return {"ok": True, "pid": os.getpid(), "programs": len(self.programs),
                "write_errors": errors}  # fmt: skip

    def start_failed(self, req: SpawnRequest, exc: OSError | KeyError) -> dict[str, Any]:
        if fork_shortage(exc):  # no memory, descriptors or process slot now: not the run's fault
            self.spawn_short.failed(why := f"cannot start: {exc}")
            return {"ok": False, "error": why, "shortage": True}
        record = spawning.not_started(req, exc)  # no such command, user, permission, ...
        self.exits.write(req.exit, record)
        self.conns.broadcast({"op": "exited", **record.to_dict()})
        return {"ok": False, "error": record.error, "exited": True}

    def write_failed(self, point: str, why: str, exc: OSError) -> dict[str, Any]:
        """A spawn refused because `point` could not be written: retried later if for want
        of room (`shortage`), the run's failure otherwise."""
        self.write_errors[point] = why
        say(why)
        waits = shortage(exc) or unplaced(exc, self.data_dir / "runs")
        return {"ok": False, "error": why, "write_error": point, "shortage": waits}

    # -- timers and kills -------------------------------------------------------------------

    def fire_timers(self, now: float) -> None:
        for kind, key in self.timers.due(now):
            if kind == "rewrite":
                self.rewrite_exit(key)
                continue
            if kind == "lease":
                # what ended meanwhile ends as it did (stopped past the deadline, the timer
                # can come before the SIGCHLD is read): a program that exited 0 was recorded
                # killed by the fence, lost, and run again (a probe)
                self.reap()
                self.fence(*self.leases.lapsed(key, now, self.by_key))
                continue
            if kind in leftovers.KINDS:
                self.leftovers.fire(kind, key)
                continue
            prog = self.by_key.get(key)
            if prog is None:
                continue
            if kind == "timeout":
                self.terminate(prog, "timeout")
            elif kind == "term":
                self.send_term(prog)
            elif kind == "kill":
                self.kill_all(prog)

    def terminate(self, prog: Program, reason: str) -> None:
        """SIGTERM to the group now, SIGKILL to it and its escapees after the grace period."""
        if prog.killed_by is not None:
            return
        prog.killed_by = reason
        self.send_term(prog)
        self.timers.add(prog.kill_grace_s, "kill", prog.key)

    def send_term(self, prog: Program) -> None:
        if not prog.sandboxed:
            kills.kill_group(prog.pgid, signal.SIGTERM)
        elif not kills.signal_members(
            prog.pgid, signal.SIGTERM, {prog.pid, prog.init_pid or prog.pid}
        ):
            # the sandbox is still being made: its program is not there yet to be told
            self.timers.add(TERM_AGAIN_S, "term", prog.key)

    def fence(self, keys: list[str], grace_s: float) -> None:
        """Their server's lease lapsed: stop them before another server may retry them."""
        for key in keys:
            prog = self.by_key[key]
            say(f"lease lapsed: stopping {key} (self-fenced)")
            if prog.killed_by is None:
                prog.kill_grace_s = min(prog.kill_grace_s, grace_s)
                self.terminate(prog, "fenced")
            else:  # already stopping (cancel, timeout): no longer than the fence allows
                self.timers.add(grace_s, "kill", key)

    def kill_all(self, prog: Program) -> None:
        kills.kill_group(prog.pgid)
        self.leftovers.escaped(prog.marker)

    # -- reaping and exit records -----------------------------------------------------------

    def reap(self) -> bool:
        """Every child that ended; whether any of them was a program (an exit to tell)."""
        ended = False
        while True:
            try:
                pid, status, rusage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return ended
            if pid == 0:
                return ended
            prog = self.programs.pop(pid, None)
            if prog is not None:
                self.finish(prog, status, rusage)
                ended = True
            elif pid in self.init_usage:
                self.init_usage[pid] = sandbox.usage(rusage)

    def finish(self, prog: Program, status: int, rusage: Any) -> None:
        self.by_key.pop(prog.key, None)
        self.by_run.pop(run_of(prog.key), None)
        code = prog.reaped(status)
        # The run ends with its main process: nothing it leaves behind may outlive it.
        kills.kill_group(prog.pgid)
        peak, cpu = sandbox.usage(rusage)
        if prog.sandboxed:
            exit_code, sig = sandbox.exit_status(code)
            init_peak, init_cpu = self.reap_init(prog)
            peak, cpu = max(peak, init_peak), cpu + init_cpu
        else:
            exit_code, sig = (code, None) if code >= 0 else (None, -code)
        self.leftovers.ended(prog.marker)
        record = ExitRecord(
            key=prog.key,
            pid=prog.pid,
            exit_code=exit_code,
            signal=sig,
            killed_by=prog.killed_by,
            started_at=prog.started_at,
            ended_at=time.time(),
            peak_rss_kb=peak,
            cpu_s=round(cpu, 6),
            progress_bytes=spawning.progress_size(prog.progress_path),
            log_cut=mark_cut(prog.log_path, prog.log_cap),
        )
        self.exits.write(prog.exit_path, record)
        self.conns.broadcast({"op": "exited", **record.to_dict()})
        if not self.programs and not self.conns.clients:
            self.idle_since = time.monotonic()

    def reap_init(self, prog: Program) -> tuple[int, float]:
        if prog.init_pid is None:
            return 0, 0.0
        return sandbox.reap_init(prog.init_pid, self.init_usage.pop(prog.init_pid, None))

    def rewrite_exit(self, key: str) -> None:
        record = self.exits.rewrite(key)
        if record is None:
            return
        # again, for a server that could not record it the first time (its store was full
        # too): recording an end is idempotent
        self.conns.broadcast({"op": "exited", **record.to_dict()})
        if self.idle():
            self.idle_since = time.monotonic()
