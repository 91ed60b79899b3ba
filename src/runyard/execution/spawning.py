"""Starting one attempt's program for the supervisor: its files, its log, its process group."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from runyard import failpoints, rlimits
from runyard.execution import sandbox
from runyard.execution.diskwrites import say
from runyard.execution.limits import LimitRefusedError, hand_over, limiter
from runyard.execution.procinfo import boot_tick, spawned_start_time
from runyard.execution.protocol import ExitRecord, SpawnRequest


@dataclass
class Program:
    key: str
    pid: int
    pgid: int
    start_time: float
    started_at: float
    exit_path: str  # a str, not a Path: one per spawn, only ever joined and opened
    kill_grace_s: float
    marker: str  # RUNYARD_ATTEMPT_KEY value, to find descendants that left the group
    popen: subprocess.Popen[bytes] | None  # None when posix_spawn started it
    progress_path: str | None
    log_path: str = ""
    log_cap: int | None = None
    killed_by: str | None = None
    sandboxed: bool = False
    init_pid: int | None = None  # a sandbox's init, the program's parent (sandbox.py)

    def reaped(self, status: int) -> int:
        """Its exit code, from wait4's status. A Popen hears it too: it must never wait for
        the pid itself (by then somebody else's)."""
        code = os.waitstatus_to_exitcode(status)
        if self.popen is not None:
            self.popen.returncode = code
        return code


def prepare(req: SpawnRequest) -> None:
    """The workspace's directories and files (params.json); OSError if they cannot be made."""
    failpoints.check("workspace")
    # os rather than pathlib: this runs once per spawn on the supervisor's only thread
    for directory in req.mkdirs:
        _mkdir(directory)
    for path, text in req.files.items():
        _write_anew(path, text.encode())


def _write_anew(path: str, data: bytes) -> None:
    """A file of runyard's in the workspace, made anew at each attempt. The workspace is the
    program's (its own user's, with `run_as`): whatever an earlier attempt left under the name,
    a symlink or a hard link to another file, gives way, and nothing is written through it by
    the supervisor, which may be root."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)  # in a new run's directory, nothing is in the way
    except FileExistsError:  # O_EXCL refuses a link too, whatever it points to
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # noqa: PTH108
        fd = os.open(path, flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _mkdir(directory: str) -> None:
    """os.makedirs, without its stat of every parent first: the run's directory is usually
    new, its parents usually there — one mkdir(2) each in the common case. What is there
    already must be a directory itself, not a link to one: a link put at a run's directory
    (or a workspace made one by its program) had the supervisor, which may be root, make the
    run's files wherever it led (a probe: a queued run's log, exit file and workspace were
    all written in the link's target, and the run succeeded)."""
    try:
        os.mkdir(directory)  # noqa: PTH102
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(directory).st_mode):
            raise
    except FileNotFoundError:
        os.makedirs(directory, exist_ok=True)  # noqa: PTH103


# open(path, "ab")'s, but only ever a new file: an attempt number is given out once
LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
STALE = ".stale-"  # what a file of a forgotten attempt is renamed to end with, and a time


def open_log(req: SpawnRequest, set_aside: list[str]) -> int:
    """The attempt's log, a descriptor closed by `start`: a file object would cost three more
    system calls (fstat, lseek, ioctl) and two objects per spawn, for nothing read or written.

    The store gives out each attempt number once, so a file already under this attempt's
    names is never its own: it is of an attempt the store no longer knows (its record lost,
    as a torn WAL without fsync loses it). Its log, exit record and progress file are renamed
    aside (their names added to `set_aside`), so that none is taken for this attempt's end,
    nor its log continued by this one's."""
    failpoints.check("log")
    try:
        return os.open(req.log, LOG_FLAGS, 0o666)
    except FileExistsError:  # O_EXCL: a link planted under the name is moved aside too
        stamp = f"{STALE}{time.time_ns()}"
        for name in (req.log, req.exit, req.progress):
            if name is not None:
                path = Path(name)
                with contextlib.suppress(FileNotFoundError):
                    aside = path.rename(path.with_name(path.name + stamp))
                    set_aside.append(f"{path.parent.name}/{aside.name}")  # ID/attempt-N…
        return os.open(req.log, LOG_FLAGS, 0o666)


def start(req: SpawnRequest, log: int, started_at: float) -> Program:
    """Spawn the program in a session of its own, its output into descriptor `log` (closed
    here). OSError or KeyError (no such user) if it cannot start: see `not_started`."""
    popen = None
    try:
        user = hand_over(req.run_as, req.cwd, req.progress) if req.run_as else None
        tick = boot_tick()
        pid, init = None, None
        if user is None and not req.limits and req.sandbox is None:
            with contextlib.suppress(NotImplementedError):  # a libc without POSIX_SPAWN_SETSID
                pid = spawn(req.argv, req.cwd, req.env, log)
        if pid is None:
            popen, init = _popen(req, log, user)
            pid = popen.pid
        started = spawned_start_time(pid, tick, boot_tick())
    finally:
        os.close(log)
    cap = req.limits.get("max_log_mb")
    return Program(
        key=req.key,
        pid=pid,
        pgid=pid,
        start_time=started,
        started_at=started_at,
        exit_path=req.exit,
        kill_grace_s=req.kill_grace_s,
        marker=req.env.get("RUNYARD_ATTEMPT_KEY", req.key),
        popen=popen,
        progress_path=req.env.get("RUNYARD_PROGRESS_FILE"),
        log_path=req.log,
        log_cap=int(cap * 2**20) if cap is not None else None,
        sandboxed=req.sandbox is not None,  # wrapped by bwrap (its init may be unknown)
        init_pid=init,
    )


def _popen(
    req: SpawnRequest, log: int, user: tuple[int, int] | None
) -> tuple[subprocess.Popen[bytes], int | None]:
    """A program that needs what only Popen does (a preexec_fn for limits, a change of user,
    bubblewrap's descriptors): the Popen and its sandbox's init, if any."""
    # only jobs with limits pay for a preexec_fn (it rules out vfork). It runs after the
    # change of user, but bwrap's before: only a root supervisor's child that stays root
    # (or becomes bwrap) may raise its hard limits
    may_raise = rlimits.may_raise(req.run_as, req.sandbox is not None)
    limit = limiter(req.limits, may_raise=may_raise) if req.limits else None
    wrapped = None
    if req.sandbox is not None:  # bwrap starts as root; the program becomes the user
        wrapped, user = sandbox.wrap(req, req.sandbox, user), None
    try:
        popen = subprocess.Popen(
            wrapped.argv if wrapped else req.argv,
            cwd=req.cwd,
            env=req.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            pass_fds=wrapped.passed if wrapped else (),
            preexec_fn=limit,  # noqa: PLW1509  the supervisor is single-threaded
            user=user[0] if user else None,
            group=user[1] if user else None,
            extra_groups=[] if user else None,
        )
    except subprocess.SubprocessError as exc:
        if wrapped is not None:
            os.close(wrapped.info)
        # only the preexec_fn fails so (exec and its other steps raise OSError): the limits
        raise LimitRefusedError(
            errno.EPERM, "the job's [limits] could not be set (the run's log says which)"
        ) from exc
    except BaseException:
        if wrapped is not None:
            os.close(wrapped.info)
        raise
    finally:
        if wrapped is not None:
            wrapped.close_passed()
    return popen, wrapped.init_pid() if wrapped is not None else None


# Popen(restore_signals=True) sets these back to the default in the child; Python ignores them
RESTORED_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
# What a handler may not take the place of: the kernel's to deliver (a fault signal that
# returns to its handler faults again, for ever)
NOT_CAUGHT = frozenset({
    signal.SIGKILL, signal.SIGSTOP, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE,
    signal.SIGILL, signal.SIGTRAP, signal.SIGSYS, *RESTORED_SIGNALS,
})  # fmt: skip


def inherited_ignored() -> list[int]:
    """The signals the supervisor was started with ignored (a nohup's SIGHUP, a script's
    SIGINT and SIGQUIT for a job it sent to the background, whatever its caller ignored).
    An ignored signal stays ignored across exec, on every spawn path: each would reach every
    program, which then ran on through a `kill -USR1` or a SIGQUIT. The supervisor catches
    them instead (doing nothing, as ignoring did), and a caught signal is back to its default
    in the program."""
    found = []
    for sig in signal.valid_signals():
        if sig in NOT_CAUGHT:
            continue
        try:
            if signal.getsignal(sig) == signal.SIG_IGN:
                found.append(int(sig))
        except (OSError, ValueError):  # one the C library keeps for itself
            continue
    return found


def spawn(argv: list[str], cwd: str, env: Mapping[str, str], log_fd: int) -> int:
    """posix_spawn the program as Popen would (cwd, a new session, stdin from /dev/null, stdout
    and stderr to the log, the executable looked up in the program's own PATH): the pid.

    Why not Popen: the supervisor is single-threaded, and each spawn holds it until the child
    has exec'd. Popen's way there is longer (its Python, an error pipe, the child's own sweep
    of descriptors and signals); glibc's posix_spawn does the least a child can. Measured on a
    2-core VM: 153 -> 96 us per spawn alone, 350 -> 164 us with 8 programs running. No sweep
    of descriptors is needed: all the supervisor's are close-on-exec (`seal_descriptors`)."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, log_fd, 1),
        (os.POSIX_SPAWN_DUP2, log_fd, 2),
    ]
    # posix_spawn has no chdir: the supervisor's own, and back (it uses no relative path
    # meanwhile; single-threaded, nobody else sees it)
    home = _home()  # opened before the first chdir, whatever called first
    os.chdir(cwd)
    try:
        pid = _spawn_found(argv, env, actions)
    finally:
        try:
            os.fchdir(home)
        except OSError as exc:  # never seen (an O_PATH descriptor); a started program
            say(f"cannot return to the supervisor's directory: {exc}")  # must not be lost
    return pid


def _spawn_found(argv: list[str], env: Mapping[str, str], actions: list[Any]) -> int:
    """posix_spawn the first of `argv[0]`'s candidates that can be executed."""
    missing: OSError | None = None
    refused: OSError | None = None
    for path in _candidates(argv[0], env):
        try:
            return os.posix_spawn(
                path, argv, env, file_actions=actions, setsid=True, setsigdef=RESTORED_SIGNALS
            )
        except (FileNotFoundError, NotADirectoryError) as exc:
            missing = exc
        except OSError as exc:  # as execvp: the first other error is the one reported
            refused = refused or exc
    raise refused or missing or FileNotFoundError(errno.ENOENT, "no PATH", argv[0])


def _candidates(name: str, env: Mapping[str, str]) -> list[str]:
    """Where Popen would look for `name`: itself if it has a slash, else along env's PATH."""
    if "/" in name:  # os.path.dirname(name) is not empty, as Popen tests it
        return [name]
    return [os.path.join(d, name) for d in os.get_exec_path(env)]  # noqa: PTH118


@cache
def _home() -> int:
    """The supervisor's working directory, held open to return to after each spawn (O_PATH:
    a directory it may enter but not read will do). Opened at start (`seal_descriptors`)."""
    return os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def seal_descriptors() -> None:
    """Make every descriptor above stderr close-on-exec: what the supervisor inherited (or a
    library opened without O_CLOEXEC) never reaches a program. Once, at start, when the
    supervisor is still in its own directory: it is held open then (`_home`)."""
    _home()
    for entry in Path("/proc/self/fd").iterdir():
        fd = int(entry.name)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                continue  # the listing's own descriptor, closed by now


def not_started(req: SpawnRequest, exc: OSError | KeyError) -> ExitRecord:
    """The exit record of a program that could not start: 127 if there is no such command
    (as a shell says), 126 for anything else."""
    return ExitRecord(
        key=req.key,
        pid=None,
        exit_code=127 if getattr(exc, "errno", None) == errno.ENOENT else 126,
        signal=None,
        killed_by=None,
        started_at=None,
        ended_at=time.time(),
        error=f"cannot start {req.argv[0]!r}: {getattr(exc, 'strerror', None) or exc}",
    )


def progress_size(path: str | None) -> int:
    if path is None:
        return 0
    try:
        return os.stat(path).st_size  # noqa: PTH116  hot path
    except OSError:
        return 0
