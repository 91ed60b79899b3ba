"""Named failpoints for tests: crash points and injected write faults.

`RUNYARD_FAILPOINTS=before_spawn,store_commit=enospc,exit_file=eio`: at a bare name (a crash
point) the process SIGKILLs itself, exactly as a crash would (at a stop point, it SIGSTOPs
itself once); at `name=enospc|eio|eacces|emfile`
durable write at that point fails with that OSError, as a full or failing disk, or a place
made unwritable, would make it.

Switchable at runtime: only when RUNYARD_FAILPOINTS is set at all (`none` arms nothing but
enables switching), the process also honours DATA_DIR/failpoints (same syntax, commas or
newlines); its content replaces the variable's whenever its mtime changes, an empty file clears
every fault. Unset (production), every hook is one attribute test and the file is never looked
at, so nobody who can write into the data directory can inject faults into a real server.

Module state on purpose: the hooks sit in the store, the supervisor and the workspace code,
which must not each be handed a failpoint object for a test-only feature; the state is set
once from the environment and then only by the control file.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

ENV = "RUNYARD_FAILPOINTS"
CONTROL_FILE = "failpoints"

CRASH_POINTS = frozenset({"before_spawn", "after_spawn", "before_end", "after_cancel_flag"})
# Where the process stops itself (SIGSTOP, once), as a stop any process of its user may send
# would stop it there: the supervisor between a spawn and its answer.
STOP_POINTS = frozenset({"before_spawn_answer"})
# Every durable write that can fail, by where it happens.
WRITE_POINTS = frozenset(
    {
        "store_commit",  # a store write transaction commits (SQLite, PostgreSQL)
        "progress",  # progress events recorded into the store
        "exit_file",  # the supervisor writes an attempt's exit file
        "log",  # the supervisor opens an attempt's log for the program
        "workspace",  # a run's directory, workspace and params file are prepared
        "supervisor_log",  # the supervisor writes to its own log
        "upload",  # an upload's bytes are written to disk (services/uploads.py)
        "removal",  # a deleted run's files are set aside for removal (services/removal.py)
    }
)
POINTS = CRASH_POINTS | STOP_POINTS | WRITE_POINTS
FAULTS = {
    "enospc": errno.ENOSPC, "eio": errno.EIO, "eacces": errno.EACCES, "emfile": errno.EMFILE,
}  # fmt: skip


def parse(spec: str) -> tuple[frozenset[str], dict[str, int]]:
    """`a,b=enospc` → (crash points, {write point: errno}); unknown names are ignored so a
    typo in a test cannot break a server, and `none` is the explicit empty spec."""
    crashes: set[str] = set()
    faults: dict[str, int] = {}
    for item in spec.replace("\n", ",").split(","):
        name, _, fault = item.strip().partition("=")
        if name in CRASH_POINTS | STOP_POINTS and not fault:
            crashes.add(name)
        elif name in WRITE_POINTS and fault.lower() in FAULTS:
            faults[name] = FAULTS[fault.lower()]
    return frozenset(crashes), faults


class _Failpoints:
    def __init__(self, spec: str | None) -> None:
        self.armed = spec is not None
        self.crashes, self.faults = parse(spec or "")
        self._initial = (self.crashes, self.faults)
        self._control: Path | None = None
        self._seen: tuple[int, int] | None = None

    def watch(self, data_dir: Path) -> None:
        if self.armed:
            self._control = data_dir / CONTROL_FILE

    def refresh(self) -> None:
        if self._control is None:
            return
        try:
            st = os.stat(self._control)  # noqa: PTH116  one cheap syscall per hook, tests only
        except OSError:
            stamp = None
        else:
            stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._seen:
            return
        self._seen = stamp
        if stamp is None:
            self.crashes, self.faults = self._initial
            return
        try:
            self.crashes, self.faults = parse(self._control.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            self._seen = None  # half written: read it again next time


_STATE = _Failpoints(os.environ.get(ENV))


def armed() -> bool:
    return _STATE.armed


def watch(data_dir: Path) -> None:
    """Honour DATA_DIR/failpoints from now on (only when RUNYARD_FAILPOINTS is set)."""
    _STATE.watch(data_dir)


def hit(name: str) -> None:
    """A crash point: die here, as a crash would, when it is listed; a stop point: stop
    here, once."""
    if not _STATE.armed:
        return
    _STATE.refresh()
    if name in _STATE.crashes:
        if name in STOP_POINTS:
            _STATE.crashes -= {name}  # continued, it goes on
            os.kill(os.getpid(), signal.SIGSTOP)
            return
        os.kill(os.getpid(), signal.SIGKILL)


def check(name: str) -> None:
    """A durable write is about to happen at `name`: fail it as the disk would, when listed."""
    if not _STATE.armed:
        return
    _STATE.refresh()
    code = _STATE.faults.get(name)
    if code is not None:
        raise OSError(code, f"{os.strerror(code)} (failpoint {name})")
