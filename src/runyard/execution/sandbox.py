"""A sandboxed attempt's program under bubblewrap, as the supervisor starts it.

What the program sees: the system read-only, its workspace (read-write, file inputs
read-only), its progress file, a private /tmp, a /proc of its own pid namespace, a minimal
/dev; no data, runs or jobs directory, no home directories; no network unless the job says
`network = "host"` (and without it no /run either: no Unix socket of the host's daemons).

Supervision keeps its meaning (docs/security.md):
- `bwrap` is the supervised process and leads the attempt's process group, as the program
  would; its pid-1 init and the program stay in that group (no `--new-session`: there is no
  terminal to steal, stdin is /dev/null).
- SIGTERM (cancel, timeout, fencing) goes to the group's members but bwrap and its init
  (`kills.signal_members`): bwrap stays up to report the program's end, and the program may
  clean up within the grace. Sent again shortly while no member but those two exists yet (a
  sandbox still being set up), so it is never lost.
- SIGKILL of bwrap kills the whole sandbox: `--die-with-parent` kills its init, whose death
  ends the pid namespace. Nothing the program started outlives it.
- bwrap exits with the program's code, or 128+N when a signal N killed it: `exit_status`
  reads 129..192 of a sandboxed program as that signal, as a shell does, so a sandboxed
  program SIGKILLed reads `signal 9` like any other (one that exits 137 itself reads so too).
- peak memory and CPU: the program is the child of bwrap's init, which reaps it; the init's
  own usage (reaped by the supervisor, its subreaper, once bwrap ends) holds the program's.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
from dataclasses import dataclass
from typing import Any

from runyard.execution.protocol import SpawnRequest
from runyard.execution.readiness import readable

WRITABLE = ("workspace", "tmp")
# the host's own places a program never sees: other users' files, daemons' sockets, temp files
HIDDEN = ("/home", "/root", "/var/tmp")  # noqa: S108  hidden, not used
TMP = "/tmp"  # noqa: S108  the sandbox's own, a fresh tmpfs
KEPT_FOR_SETPRIV = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")
INPUTS = "inputs"  # inputs.py stages file params there, read-only
INFO_TIMEOUT_S = 5.0  # bwrap says its init's pid right after clone(2); a hang is a failure


@functools.cache
def tool(name: str) -> str:
    """The host's path of `name` (read once per supervisor): bwrap, and setpriv inside it."""
    return shutil.which(name) or name


def argv(
    sandbox: dict[str, Any], program: list[str], cwd: str, progress: str | None, info_fd: int,
    user: tuple[int, int] | None = None,
) -> tuple[list[str], list[int]]:  # fmt: skip
    """Blocking (a stat per hidden place): the bwrap command line that runs `program`, and the
    descriptors it names (the caller passes them to bwrap, then closes them).

    The run's own places are bound from descriptors opened here, by the supervisor: what is
    bound is what was opened, whatever the path names by the time bwrap reads it."""
    writable = set(sandbox.get("writable", WRITABLE))
    network = sandbox.get("network", "none")
    args = [tool("bwrap"), "--die-with-parent", *_namespaces(network, user), "--cap-drop", "ALL"]
    if user is not None:  # for setpriv, which drops them with root (see _namespaces)
        args += [item for cap in KEPT_FOR_SETPRIV for item in ("--cap-add", cap)]
    args += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    args += ["--perms", "1777", "--tmpfs", TMP]
    hidden = [*HIDDEN, *([] if network == "host" else ["/run"]), *sandbox.get("hide", [])]
    masked = _hide(args, hidden)
    for path in sandbox.get("ro", []):
        args += ["--ro-bind", path, path]
    for path in sandbox.get("rw", []):
        args += ["--bind", path, path]
    fds = _own_places(args, cwd, progress, writable="workspace" in writable)
    if "tmp" not in writable:
        masked.append(TMP)
    # empty and read-only once the binds under them are made (a remount is not recursive)
    for path in masked:
        args += ["--remount-ro", path]
    args += ["--chdir", cwd, "--info-fd", str(info_fd), "--"]
    if user is not None:
        uid, gid = user
        args += [tool("setpriv"), f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                 "--inh-caps=-all", "--bounding-set=-all", "--"]  # fmt: skip
    return [*args, *program], fds


def findable(command: str, path: str | None, hidden: list[str], bound: list[str]) -> None:
    """Blocking (stats along PATH): FileNotFoundError unless bwrap's execvp will find
    `command`: on the host (the sandbox sees its system) and not under a place hidden from it
    unless bound back (`bound`: the workspace first, then the binds). Otherwise bwrap would
    start and fail with 1; this way the attempt is not started (127), as without a sandbox."""
    cwd = bound[0]
    if "/" in command:
        candidates = [os.path.join(cwd, command)]  # noqa: PTH118  absolute stays absolute
    else:
        dirs = (path if path is not None else os.defpath).split(os.pathsep)
        candidates = [os.path.join(cwd, d, command) for d in dirs]  # noqa: PTH118
    why = "No such file or directory"
    for where in candidates:
        if not os.access(where, os.X_OK) or os.path.isdir(where):  # noqa: PTH112
            continue
        real = os.path.realpath(where)
        place = next((p for p in hidden if _under(real, p)), None)
        if place is None or any(_under(real, b) for b in bound):
            return
        why = f"hidden from the sandbox ({place})"  # execvp goes on to the next directory
    raise FileNotFoundError(errno.ENOENT, why, command)


def _under(path: str, place: str) -> bool:
    return path == place or path.startswith(place.rstrip("/") + "/")


def _namespaces(network: str, user: tuple[int, int] | None) -> list[str]:
    """All of them, and the host's network if asked. With `run_as`, no user namespace: one
    made by root maps only root, so the program could not become the user inside it; bwrap
    stays root (it reaches the run's places by name), and setpriv becomes the user, dropping
    every capability, before the program starts."""
    if user is None:
        return ["--unshare-all", "--share-net"] if network == "host" else ["--unshare-all"]
    spaces = ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    return spaces if network == "host" else [*spaces, "--unshare-net"]


def _hide(args: list[str], paths: list[str]) -> list[str]:
    """An empty tmpfs over each directory, /dev/null over each file; the directories."""
    masked = []
    for path in paths:
        if os.path.isdir(path):  # noqa: PTH112  hot path: a stat, no Path per spawn
            args += ["--tmpfs", path]
            masked.append(path)
        elif os.path.exists(path):  # noqa: PTH110
            args += ["--ro-bind", "/dev/null", path]
    return masked


def _own_places(args: list[str], cwd: str, progress: str | None, *, writable: bool) -> list[int]:
    """The workspace (its file inputs read-only) and the progress file, bound from
    descriptors; OSError if one cannot be opened (then none is left open)."""
    fds: list[int] = []
    try:
        _bind_fd(args, fds, cwd, writable=writable)
        inputs = f"{cwd}/{INPUTS}"
        if os.path.isdir(inputs):  # noqa: PTH112
            _bind_fd(args, fds, inputs, writable=False)
        if progress is not None:
            _bind_fd(args, fds, progress, writable=True)
    except OSError:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def _bind_fd(args: list[str], fds: list[int], path: str, *, writable: bool) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    fds.append(fd)
    args += ["--bind-fd" if writable else "--ro-bind-fd", str(fd), path]


@dataclass(frozen=True, slots=True)
class Wrapped:
    """A sandboxed spawn's command line, the descriptors bwrap is given, and the read end of
    its `--info-fd` (the pid of its init)."""

    argv: list[str]
    passed: tuple[int, ...]
    info: int

    def close_passed(self) -> None:
        """Once bwrap has them (or could not start): they are its, not ours."""
        for fd in self.passed:
            os.close(fd)

    def init_pid(self) -> int | None:
        return init_pid(self.info)


def wrap(req: SpawnRequest, box: dict[str, Any], user: tuple[int, int] | None) -> Wrapped:
    """Blocking: `req`'s program under bwrap, in the sandbox `box` (req.sandbox), as `user`
    (run_as: uid, gid) if set. OSError if its command cannot be found (as Popen would say: the
    attempt is not started, 127) or its places cannot be opened; then nothing is left open."""
    hidden = [*HIDDEN, TMP, *([] if box.get("network") == "host" else ["/run"])]
    bound = [req.cwd, *box.get("ro", []), *box.get("rw", [])]
    findable(req.argv[0], req.env.get("PATH"), [*hidden, *box.get("hide", [])], bound)
    if req.progress is not None:  # it must exist to be bound
        os.close(os.open(req.progress, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
    info_read, info_write = os.pipe()
    try:
        args, fds = argv(box, req.argv, req.cwd, req.progress, info_write, user)
    except OSError:
        os.close(info_read)
        os.close(info_write)
        raise
    return Wrapped(args, (info_write, *fds), info_read)


def init_pid(fd: int) -> int | None:
    """Blocking, bounded: read bwrap's `--info-fd` (JSON, then EOF) for its init's pid."""
    raw = b""
    try:
        while len(raw) < 65536:
            if not readable(fd, INFO_TIMEOUT_S):
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            raw += chunk
    finally:
        os.close(fd)
    # {"child-pid": N, ...}: parsed by hand, the one field we read
    _, found, rest = raw.partition(b'"child-pid":')
    digits = rest.split(b",", 1)[0].split(b"}", 1)[0].strip()
    return int(digits) if found and digits.isdigit() else None


def usage(rusage: Any) -> tuple[int, float]:
    """(peak RSS in KiB, CPU seconds) of a reaped process and what it reaped."""
    return int(rusage.ru_maxrss), rusage.ru_utime + rusage.ru_stime


def reap_init(pid: int, reaped: tuple[int, float] | None) -> tuple[int, float]:
    """Blocking, briefly: the usage of a sandbox's init, which reaped the program. bwrap has
    ended, so the init is the supervisor's child now (its subreaper) and was just SIGKILLed
    with the group. `reaped`: its usage if the supervisor's reaping loop got it first."""
    if reaped is not None:
        return reaped
    try:
        _, _, rusage = os.wait4(pid, 0)
    except ChildProcessError:
        return 0, 0.0  # bwrap reaped it itself: its usage is in bwrap's
    return usage(rusage)


def exit_status(code: int) -> tuple[int | None, int | None]:
    """(exit code, signal) of a sandboxed program from bwrap's wait status code
    (os.waitstatus_to_exitcode): 128+N is signal N; bwrap itself killed is its signal."""
    if code < 0:
        return None, -code
    if 128 < code <= 128 + 64:
        return None, code - 128
    return code, None
