"""The supervisor's process: `python -m runyard.execution.supervisor_process --data-dir DIR`.

Started by the server (supervisor_client.launch_supervisor), it detaches at once, takes the
data directory's lock (a second one says "busy" and leaves), becomes the subreaper of every
program, and then serves (supervisor.py) until it has been idle long enough.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

from runyard import failpoints
from runyard.execution import spawning
from runyard.execution.diskwrites import say
from runyard.execution.protocol import LOCK_NAME
from runyard.execution.supervisor import Supervisor

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
WARDEN_GONE = signal.SIGUSR2  # sent to the supervisor by the kernel if its warden dies


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        say("warning: cannot become a subreaper")


def watch_warden(warden: int, sup: Supervisor) -> None:
    """Be told if the warden dies (killed: a program of the same user can), which leaves this
    supervisor's programs to run on under nobody if it dies too: said in its log at once, in
    the server's readiness until it is mended, and mended as soon as no program runs: it
    starts none more (each spawn is refused, to be re-queued), leaves, and its server starts
    another, with a warden. A process's parent cannot be given back to it; a supervisor left
    unguarded used to stay so for good, starting programs all along."""

    def gone(*_: object) -> None:
        sup.unguarded = (
            f"the warden {warden} is gone: if the supervisor dies, its programs run on; it is "
            "replaced once none runs"
        )
        say(
            f"warning: the warden {warden} is gone: if this supervisor dies, its programs will "
            "run on (run them as another user, or sandboxed, to keep them from it)"
        )

    signal.signal(WARDEN_GONE, gone)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, WARDEN_GONE, 0, 0, 0) != 0 or os.getppid() != warden:
        gone()  # could not be told, or gone already


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
    # (or a subreaper's). Then the warden above us (warden.py), which ends what we leave if
    # we die. Two forks per supervisor life, never per run.
    if os.fork() > 0:
        os._exit(0)
    become_subreaper()  # before the fork: nothing we leave may go past the warden to init
    warden = os.getpid()
    deadlines, tell = os.pipe()  # lease deadlines, to the warden (a cluster's)
    supervisor = os.fork()
    if supervisor > 0:
        os.close(tell)
        _become_warden(args, supervisor, deadlines)
    os.close(deadlines)
    os.set_blocking(tell, False)
    failpoints.watch(args.data_dir)
    lock = (args.data_dir / LOCK_NAME).open("a")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        ready(b"busy")  # another supervisor owns this data directory; use that one
        return 0
    become_subreaper()
    spawning.seal_descriptors()
    sup = Supervisor(args.data_dir, args.idle_exit_s, args.fsync)
    watch_warden(warden, sup)  # told from here on; a death before is seen by its getppid
    sup.leases.tell(tell)
    sup.install_signals()
    sup.listen()
    ready(b"ready")
    sup.serve_forever()
    return 0


def _become_warden(args: argparse.Namespace, supervisor: int, deadlines: int) -> NoReturn:
    """The first process of the two becomes the warden of the second, the supervisor: an
    exec, so that it is small and `ps` tells it from the supervisor."""
    if args.ready_fd >= 0:
        os.close(args.ready_fd)  # the supervisor's to answer (the server reads to its end)
    os.set_inheritable(deadlines, True)
    argv = [sys.executable, "-m", "runyard.execution.warden", "--data-dir", str(args.data_dir),
            "--supervisor", str(supervisor), "--deadlines", str(deadlines)]  # fmt: skip
    os.execv(sys.executable, argv)  # noqa: S606  our own interpreter, a fixed argv


if __name__ == "__main__":
    sys.exit(main())
