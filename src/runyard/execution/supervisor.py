"""The supervisor: one small process per data directory, parent and subreaper of every program.

It outlives the API server. It spawns each program in its own process group, reaps it, enforces
its timeout, and writes its exit status atomically to the attempt's exit file before telling
any connected server. Single-threaded: one selector loop over the socket, a SIGCHLD wake-up
pipe and a timer heap. Run as `python -m runyard.execution.supervisor --data-dir DIR`.

It is longer than most modules on purpose: the socket, reaping, timers and kills all act on one
loop's state (programs, clients, timers), and splitting them would scatter one state machine.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import fcntl
import heapq
import itertools
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runyard import failpoints
from runyard.execution.diskwrites import probe, say, write_exit_file
from runyard.execution.lease_watch import LeaseWatch
from runyard.execution.limits import hand_over, limiter, mark_cut
from runyard.execution.procinfo import start_time
from runyard.execution.protocol import (
    LOCK_NAME,
    MAX_LINE,
    SOCKET_NAME,
    ExitRecord,
    decode,
    encode,
)

PR_SET_CHILD_SUBREAPER = 36
MAX_CLIENT_BACKLOG = 64 * 1024 * 1024
REWRITE_EVERY_S = 1.0  # an exit file that could not be written is tried again this often


@dataclass
class Program:
    key: str
    pid: int
    pgid: int
    start_time: float
    started_at: float
    exit_path: Path
    kill_grace_s: float
    marker: str  # RUNYARD_ATTEMPT_KEY value, to find descendants that left the group
    popen: subprocess.Popen[bytes]
    progress_path: str | None
    log_path: str = ""
    log_cap: int | None = None
    killed_by: str | None = None


@dataclass
class Client:
    sock: socket.socket
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)


class Supervisor:
    def __init__(self, data_dir: Path, idle_exit_s: float, fsync: bool) -> None:
        self.data_dir = data_dir
        self.idle_exit_s = idle_exit_s
        self.fsync = fsync
        self.sel = selectors.DefaultSelector()
        self.programs: dict[int, Program] = {}
        self.by_key: dict[str, Program] = {}
        self.clients: dict[int, Client] = {}
        self.timers: list[tuple[float, int, str, str]] = []
        self._seq = itertools.count()
        self.idle_since = time.monotonic()
        # Exit records whose file could not be written (full or failing disk), by key: kept
        # and retried, and listed as still running meanwhile, so nothing reads them as lost.
        self.unwritten: dict[str, tuple[Path, ExitRecord]] = {}
        # The last failure of each kind of durable write (point -> why), until one succeeds:
        # the server's readiness reports them (op_ping), and a ping probes whether they cleared.
        self.write_errors: dict[str, str] = {}
        # Self-fencing in a cluster (lease_watch.py): programs stop when their lease lapses.
        self.leases = LeaseWatch(lambda delay, token: self.add_timer(delay, "lease", token))

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
        signal.set_wakeup_fd(wsock.fileno())
        signal.signal(signal.SIGCHLD, lambda *_: None)
        # The server's terminal or process group must not take the programs down with it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self._wake_pair = (rsock, wsock)
        self.sel.register(rsock, selectors.EVENT_READ, "signal")

    # -- main loop --------------------------------------------------------------------------

    def serve_forever(self) -> None:
        while True:
            now = time.monotonic()
            self.fire_timers(now)
            if not self.programs and not self.clients and not self.unwritten:
                if now - self.idle_since >= self.idle_exit_s:
                    return
                timeout = self.idle_exit_s - (now - self.idle_since)
            else:
                timeout = None
            if self.timers:
                until = max(0.0, self.timers[0][0] - now)
                timeout = until if timeout is None else min(timeout, until)
            for key, mask in self.sel.select(timeout):
                self.dispatch(key, mask)

    def dispatch(self, key: selectors.SelectorKey, mask: int) -> None:
        if key.data == "accept":
            self.accept(key.fileobj)  # type: ignore[arg-type]
        elif key.data == "signal":
            with contextlib.suppress(BlockingIOError):
                self._wake_pair[0].recv(4096)
            self.reap()
        else:
            client = self.clients.get(key.fd)
            if client is None:
                return
            if mask & selectors.EVENT_WRITE:
                self.flush(client)
            if mask & selectors.EVENT_READ:
                self.read(client)

    # -- clients ----------------------------------------------------------------------------

    def accept(self, srv: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError):
            sock, _ = srv.accept()
            sock.setblocking(False)
            self.clients[sock.fileno()] = Client(sock)
            self.sel.register(sock, selectors.EVENT_READ, "client")

    def drop(self, client: Client) -> None:
        self.clients.pop(client.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(client.sock)
        client.sock.close()
        if not self.clients and not self.programs:
            self.idle_since = time.monotonic()

    def read(self, client: Client) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.drop(client)
            return
        client.inbuf += data
        while (nl := client.inbuf.find(b"\n")) >= 0:
            line = bytes(client.inbuf[:nl])
            del client.inbuf[: nl + 1]
            self.handle(client, line)
        if len(client.inbuf) > MAX_LINE:
            self.drop(client)

    def send(self, client: Client, message: dict[str, Any]) -> None:
        client.outbuf += encode(message)
        if len(client.outbuf) > MAX_CLIENT_BACKLOG:
            self.drop(client)  # it stopped reading; it will reconcile from the exit files
            return
        self.flush(client)

    def flush(self, client: Client) -> None:
        try:
            sent = client.sock.send(client.outbuf)
            del client.outbuf[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.drop(client)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.outbuf else 0)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.modify(client.sock, events, "client")

    def broadcast(self, message: dict[str, Any]) -> None:
        for client in list(self.clients.values()):
            self.send(client, message)

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
        self.send(client, reply)

    # -- operations -------------------------------------------------------------------------

    def op_spawn(self, msg: dict[str, Any]) -> dict[str, Any]:
        key = str(msg["key"])
        if key in self.by_key:
            return {"ok": False, "error": f"attempt {key} is already running"}
        deadline = msg.get("deadline")
        if isinstance(deadline, (int, float)) and time.time() > deadline:
            # the server stopped waiting for this answer (we were paused or swamped) and has
            # re-queued the attempt: starting it now would make a program nobody tracks
            return {"ok": False, "error": "the spawn request expired before it was read"}
        self.leases.admit(key, msg.get("lease"))  # LeaseLapsedError: its server was fenced
        exit_path = Path(msg["exit"])
        try:
            failpoints.check("workspace")
            for directory in msg.get("mkdirs", []):
                Path(directory).mkdir(parents=True, exist_ok=True)
            for path, text in msg.get("files", {}).items():
                Path(path).write_text(text, encoding="utf-8")
        except OSError as exc:
            return self.write_failed("workspace", f"cannot prepare the workspace: {exc}")
        self.write_errors.pop("workspace", None)
        env = {str(k): str(v) for k, v in msg["env"].items()}
        limits = dict(msg.get("limits") or {})
        started_at = time.time()
        try:
            failpoints.check("log")
            log = Path(msg["log"]).open("ab")  # noqa: SIM115  closed below, once spawned
        except OSError as exc:
            return self.write_failed("log", f"cannot open the attempt's log: {exc}")
        self.write_errors.pop("log", None)
        try:
            user = hand_over(msg) if msg.get("run_as") else None
            with log:
                popen = subprocess.Popen(
                    [str(a) for a in msg["argv"]],
                    cwd=msg["cwd"],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    # only jobs with limits pay for a preexec_fn (it rules out vfork)
                    preexec_fn=limiter(limits) if limits else None,  # noqa: PLW1509  single-threaded
                    user=user[0] if user else None,
                    group=user[1] if user else None,
                    extra_groups=[] if user else None,
                )
        except (OSError, KeyError) as exc:
            record = ExitRecord(
                key=key,
                pid=None,
                exit_code=127 if getattr(exc, "errno", None) == errno.ENOENT else 126,
                signal=None,
                killed_by=None,
                started_at=None,
                ended_at=time.time(),
                error=f"cannot start {msg['argv'][0]!r}: {getattr(exc, 'strerror', None) or exc}",
            )
            self.write_exit(exit_path, record)
            self.broadcast({"op": "exited", **record.to_dict()})
            return {"ok": False, "error": record.error, "exited": True}
        prog = Program(
            key=key,
            pid=popen.pid,
            pgid=popen.pid,
            start_time=start_time(popen.pid),
            started_at=started_at,
            exit_path=exit_path,
            kill_grace_s=float(msg.get("kill_grace_s", 10.0)),
            marker=env.get("RUNYARD_ATTEMPT_KEY", key),
            popen=popen,
            progress_path=env.get("RUNYARD_PROGRESS_FILE"),
            log_path=str(msg["log"]),
            log_cap=int(limits["max_log_mb"] * 2**20) if "max_log_mb" in limits else None,
        )
        self.programs[prog.pid] = prog
        self.by_key[key] = prog
        if msg.get("timeout_s"):
            self.add_timer(float(msg["timeout_s"]), "timeout", key)
        return {
            "ok": True,
            "pid": prog.pid,
            "pgid": prog.pgid,
            "start_time": prog.start_time,
            "started_at": started_at,
        }

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
            for k, (_, r) in self.unwritten.items()
        ]
        return {"ok": True, "attempts": attempts}

    def op_ping(self, _msg: dict[str, Any]) -> dict[str, Any]:
        """Cheap liveness for the server's readiness, with the durable writes now failing."""
        for point in list(self.write_errors):
            if point != "exit_file" and probe(self.data_dir, point):
                self.write_errors.pop(point, None)
        return {"ok": True, "pid": os.getpid(), "programs": len(self.programs),
                "write_errors": dict(self.write_errors)}  # fmt: skip

    def write_failed(self, point: str, why: str) -> dict[str, Any]:
        self.write_errors[point] = why
        say(why)
        return {"ok": False, "error": why, "write_error": point}

    # -- signals, timers, reaping -----------------------------------------------------------

    def add_timer(self, delay: float, kind: str, key: str) -> None:
        heapq.heappush(self.timers, (time.monotonic() + delay, next(self._seq), kind, key))

    def fire_timers(self, now: float) -> None:
        while self.timers and self.timers[0][0] <= now:
            _, _, kind, key = heapq.heappop(self.timers)
            if kind == "rewrite":
                self.rewrite_exit(key)
                continue
            if kind == "lease":
                self.fence(*self.leases.lapsed(key, now, self.by_key))
                continue
            prog = self.by_key.get(key)
            if prog is None:
                continue
            if kind == "timeout":
                self.terminate(prog, "timeout")
            elif kind == "kill":
                self.kill_all(prog)

    def terminate(self, prog: Program, reason: str) -> None:
        """SIGTERM to the group now, SIGKILL to it and its escapees after the grace period."""
        if prog.killed_by is not None:
            return
        prog.killed_by = reason
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(prog.pgid, signal.SIGTERM)
        self.add_timer(prog.kill_grace_s, "kill", prog.key)

    def fence(self, keys: list[str], grace_s: float) -> None:
        """Their server's lease lapsed: stop them before another server may retry them."""
        for key in keys:
            prog = self.by_key[key]
            say(f"lease lapsed: stopping {key} (self-fenced)")
            if prog.killed_by is None:
                prog.kill_grace_s = min(prog.kill_grace_s, grace_s)
                self.terminate(prog, "fenced")
            else:  # already stopping (cancel, timeout): no longer than the fence allows
                self.add_timer(grace_s, "kill", key)

    def kill_all(self, prog: Program) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(prog.pgid, signal.SIGKILL)
        self.kill_escaped(prog.marker)

    def kill_escaped(self, marker: str) -> None:
        """SIGKILL descendants that left the program's group (setsid, daemonising). They were
        reparented to us, the subreaper; their environment still names the attempt."""
        import psutil

        needle = f"RUNYARD_ATTEMPT_KEY={marker}".encode()
        for pid in self.orphans():
            try:
                with Path(f"/proc/{pid}/environ").open("rb") as fh:
                    if needle not in fh.read().split(b"\0"):
                        continue
                proc = psutil.Process(pid)
                victims = [proc, *proc.children(recursive=True)]
            except (OSError, psutil.Error):
                continue
            for victim in victims:
                with contextlib.suppress(psutil.Error):
                    victim.kill()

    def orphans(self) -> list[int]:
        me = os.getpid()
        try:
            fd = os.open(f"/proc/{me}/task/{me}/children", os.O_RDONLY)
            try:
                children = [int(p) for p in os.read(fd, 65536).split()]
            finally:
                os.close(fd)
        except OSError:
            import psutil

            children = [c.pid for c in psutil.Process(me).children()]
        return [pid for pid in children if pid not in self.programs]

    def reap(self) -> None:
        while True:
            try:
                pid, status, rusage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            prog = self.programs.pop(pid, None)
            if prog is not None:
                self.finish(prog, status, rusage)

    def finish(self, prog: Program, status: int, rusage: Any) -> None:
        self.by_key.pop(prog.key, None)
        prog.popen.returncode = os.waitstatus_to_exitcode(status)
        # The run ends with its main process: nothing it leaves behind may outlive it.
        self.kill_all(prog)
        code = os.waitstatus_to_exitcode(status)
        record = ExitRecord(
            key=prog.key,
            pid=prog.pid,
            exit_code=code if code >= 0 else None,
            signal=-code if code < 0 else None,
            killed_by=prog.killed_by,
            started_at=prog.started_at,
            ended_at=time.time(),
            peak_rss_kb=int(rusage.ru_maxrss),
            cpu_s=round(rusage.ru_utime + rusage.ru_stime, 6),
            progress_bytes=_size(prog.progress_path),
        )
        if prog.log_cap is not None:
            with contextlib.suppress(OSError):  # a full disk must not stop the exit's record
                mark_cut(prog.log_path, prog.log_cap)
        self.write_exit(prog.exit_path, record)
        self.broadcast({"op": "exited", **record.to_dict()})
        if not self.programs and not self.clients:
            self.idle_since = time.monotonic()

    def write_exit(self, path: Path, record: ExitRecord) -> bool:
        """Write the exit file atomically. On failure (full or failing disk) the record is
        kept and written again every REWRITE_EVERY_S until it lands: the event tells a
        connected server at once, the file is what a later reconcile reads."""
        try:
            write_exit_file(path, json.dumps(record.to_dict()).encode(), fsync=self.fsync)
        except OSError as exc:
            if record.key not in self.unwritten:
                self.write_failed("exit_file", f"cannot write exit file {path}: {exc}")
                self.add_timer(REWRITE_EVERY_S, "rewrite", record.key)
            self.unwritten[record.key] = (path, record)
            return False
        self.unwritten.pop(record.key, None)
        if not self.unwritten:
            self.write_errors.pop("exit_file", None)
        return True

    def rewrite_exit(self, key: str) -> None:
        entry = self.unwritten.get(key)
        if entry is None:
            return
        if self.write_exit(*entry):
            say(f"exit file of {key} written after all")
            # again, for a server that could not record it the first time (its store was
            # full too): recording an end is idempotent
            self.broadcast({"op": "exited", **entry[1].to_dict()})
            if not self.programs and not self.clients and not self.unwritten:
                self.idle_since = time.monotonic()
        else:
            self.add_timer(REWRITE_EVERY_S, "rewrite", key)


def _size(path: str | None) -> int:
    if path is None:
        return 0
    try:
        return os.stat(path).st_size  # noqa: PTH116  hot path
    except OSError:
        return 0


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        say("warning: cannot become a subreaper")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runyard-supervisor")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--ready-fd", type=int, default=-1)
    parser.add_argument("--idle-exit-s", type=float, default=5.0)
    parser.add_argument("--fsync", action="store_true")
    args = parser.parse_args(argv)

    def ready(word: bytes) -> None:
        if args.ready_fd >= 0:
            with contextlib.suppress(OSError):
                os.write(args.ready_fd, word + b"\n")
                os.close(args.ready_fd)

    # Detach from the server: our parent exits now and we are nobody's child but init's
    # (or a subreaper's). This is one fork per supervisor life, never per run.
    if os.fork() > 0:
        os._exit(0)
    failpoints.watch(args.data_dir)
    lock = (args.data_dir / LOCK_NAME).open("a")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        ready(b"busy")  # another supervisor owns this data directory; use that one
        return 0
    become_subreaper()
    sup = Supervisor(args.data_dir, args.idle_exit_s, args.fsync)
    sup.install_signals()
    sup.listen()
    ready(b"ready")
    sup.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
