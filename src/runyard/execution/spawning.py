"""Starting one attempt's program for the supervisor: its files, its log, its process group."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from runyard import failpoints
from runyard.execution import sandbox
from runyard.execution.limits import hand_over, limiter
from runyard.execution.procinfo import boot_tick, spawned_start_time
from runyard.execution.protocol import ExitRecord, SpawnRequest


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
    sandboxed: bool = False
    init_pid: int | None = None  # a sandbox's init, the program's parent (sandbox.py)


def prepare(req: SpawnRequest) -> None:
    """The workspace's directories and files (params.json); OSError if they cannot be made."""
    failpoints.check("workspace")
    # os rather than pathlib: this runs once per spawn on the supervisor's only thread
    for directory in req.mkdirs:
        _mkdir(directory)
    for path, text in req.files.items():
        with open(path, "w", encoding="utf-8") as fh:  # noqa: PTH123
            fh.write(text)


def _mkdir(directory: str) -> None:
    """os.makedirs, without its stat of every parent first: the run's directory is usually
    new, its parents usually there — one mkdir(2) each in the common case."""
    try:
        os.mkdir(directory)  # noqa: PTH102
    except FileExistsError:
        if not os.path.isdir(directory):  # noqa: PTH112
            raise
    except FileNotFoundError:
        os.makedirs(directory, exist_ok=True)  # noqa: PTH103


def open_log(req: SpawnRequest) -> IO[bytes]:
    failpoints.check("log")
    return open(req.log, "ab")  # noqa: PTH123  closed by start()


def start(req: SpawnRequest, log: IO[bytes], started_at: float) -> Program:
    """Spawn the program in a session of its own, its output into `log` (closed here).
    OSError or KeyError (no such user) if it cannot start: see `not_started`."""
    with log:
        user = hand_over(req.run_as, req.cwd, req.progress) if req.run_as else None
        # only jobs with limits pay for a preexec_fn (it rules out vfork)
        limit = limiter(req.limits) if req.limits else None
        wrapped = None
        if req.sandbox is not None:  # bwrap starts as root; the program becomes the user
            wrapped, user = sandbox.wrap(req, req.sandbox, user), None
        tick = boot_tick()
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
        except BaseException:
            if wrapped is not None:
                os.close(wrapped.info)
            raise
        finally:
            if wrapped is not None:
                wrapped.close_passed()
        started = spawned_start_time(popen.pid, tick, boot_tick())
        init = wrapped.init_pid() if wrapped is not None else None
    cap = req.limits.get("max_log_mb")
    return Program(
        key=req.key,
        pid=popen.pid,
        pgid=popen.pid,
        start_time=started,
        started_at=started_at,
        exit_path=Path(req.exit),
        kill_grace_s=req.kill_grace_s,
        marker=req.env.get("RUNYARD_ATTEMPT_KEY", req.key),
        popen=popen,
        progress_path=req.env.get("RUNYARD_PROGRESS_FILE"),
        log_path=req.log,
        log_cap=int(cap * 2**20) if cap is not None else None,
        sandboxed=wrapped is not None,
        init_pid=init,
    )


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
