"""The warden: `python -m runyard.execution.warden --data-dir DIR --supervisor PID`.

The supervisor's parent and a subreaper above it, and otherwise asleep (on the supervisor's
pidfd; in a cluster, until the lease deadline it was told last): when the supervisor is gone —
killed (SIGKILL, the OOM killer), crashed — every program it ran, and everything those left,
is reparented here, and the warden kills it all, then leaves. A supervisor found stopped
(SIGSTOP) when its lease runs out is killed, so the same follows: stopped, it cannot fence.

Without it, a supervisor killed with its server (a host's service stopped badly, both
SIGKILLed) left its programs running under init: on a cluster, where the other servers
cannot see or kill this host's processes, they reaped the attempts once the lease lapsed and
retried them, and the run had two live programs. What an unsupervised program does is
nobody's record any more (its attempt is `lost` either way), so ending it is always right.

Not one syscall per run (a wake-up per lease renewal, in a cluster): while the supervisor
lives, what its programs leave is reparented to the supervisor, the nearest subreaper. The
warden outliving its supervisor by the time the kills take also keeps the data directory's
next supervisor from meeting its predecessor's programs still running.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import struct
import sys
import time

from runyard.execution.diskwrites import say
from runyard.execution.kills import kill_group, orphans
from runyard.execution.procinfo import stopped


def _end_all() -> int:
    """Kill every child (the programs, reparented here) with its process group, and what
    each leaves (reparented here in turn), until none is left. Returns how many there were."""
    own_group = os.getpgrp()
    killed: set[int] = set()  # signalled, not reaped yet
    count = 0
    while True:
        for pid in orphans(()):
            if pid in killed:
                continue
            killed.add(pid)
            count += 1
            with contextlib.suppress(OSError):
                group = os.getpgid(pid)
                if group != own_group:
                    kill_group(group)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        try:
            ended, _ = os.waitpid(-1, 0)  # its own children, if any, are ours now
        except ChildProcessError:
            return count
        killed.discard(ended)  # reaped: its pid may be another's next


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exited with {os.waitstatus_to_exitcode(status)}"


def _stopped(pid: int) -> bool:
    try:
        return stopped(pid)
    except (OSError, IndexError):
        return False


def _last_deadline(data: bytes) -> float | None:
    whole = len(data) // 8 * 8  # the supervisor writes 8 bytes at a time (atomic on a pipe)
    return struct.unpack("d", data[whole - 8 : whole])[0] if whole else None


def _guard(supervisor: int, deadlines: int | None) -> None:
    """Until the supervisor has ended. In a cluster it tells each lease deadline it fences
    at: found stopped (SIGSTOP, a debugger) when one passes, it cannot stop its programs, and
    the other servers, whose reaping waits only a margin more, would retry them beside them;
    the warden kills it then, and so ends what it ran."""
    try:
        ended = os.pidfd_open(supervisor)
    except OSError:  # a kernel without pidfds: no lease kept, only the supervisor's end
        return
    poller = select.poll()
    poller.register(ended, select.POLLIN)
    if deadlines is not None:
        poller.register(deadlines, select.POLLIN)
    deadline: float | None = None
    while True:
        wait = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
        ready = poller.poll(wait)
        if not ready:  # a lease ran out with no renewal told
            deadline = None
            if _stopped(supervisor):
                say(f"warden: the supervisor {supervisor} is stopped past its lease: killed")
                with contextlib.suppress(OSError):
                    os.kill(supervisor, signal.SIGKILL)
            continue
        for fd, _ in ready:
            if fd == ended:
                os.close(ended)
                return
            data = os.read(fd, 4096)
            if not data:
                poller.unregister(fd)  # closed: the supervisor is ending
            elif (told := _last_deadline(data)) is not None:
                deadline = told


# Every signal but those it cannot or must not ignore: SIGKILL and SIGSTOP, and SIGCHLD
# (ignored, its children would be reaped for it and its waitpid never see the supervisor
# end). A list of the signals that end a process left some out (a probe: VTALRM, PWR, PROF,
# IO, RTMIN, STKFLT, XCPU, SYS, TRAP and ABRT each still killed it, the programs left under
# init); a fault of its own (a SIGSEGV the kernel raises) ends it all the same.
_OUTLIVED = sorted(set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runyard-warden")
    parser.add_argument("--data-dir", required=True)  # shown by ps: whose warden this is
    parser.add_argument("--supervisor", type=int, required=True)
    parser.add_argument("--deadlines", type=int, default=None)
    args = parser.parse_args(argv)
    # It leaves after its supervisor, never before: the server's terminal must not take it
    # down, nor a stop of every runyard process (`pkill -f DIR`, a service manager's SIGTERM
    # to the group) that reached it first — the programs ran on under init. SIGKILL stays.
    for sig in _OUTLIVED:
        with contextlib.suppress(OSError, ValueError):  # those the C library keeps for itself
            signal.signal(sig, signal.SIG_IGN)
    _guard(args.supervisor, args.deadlines)
    while True:
        try:
            _, status = os.waitpid(args.supervisor, 0)
            break
        except ChildProcessError:  # not ours (it cannot be): nothing to guard
            return 0
        except InterruptedError:
            continue
    leftovers = _end_all()
    if leftovers or not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
        say(f"warden: the supervisor {args.supervisor} {_describe(status)}; "
            f"{leftovers} process(es) it left killed")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
