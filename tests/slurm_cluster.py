"""A real one-node Slurm cluster in a temporary directory, for the Slurm executor's tests.

The recipe is shared/slurm-local.md; scripts/slurm installs the packages. Everything the
cluster writes (configuration, state, spool, logs, pid files, munge's socket and key) stays in
the directory it is given, it listens on two free loopback ports, and every command reaches it
through `env` (SLURM_CONF), so nothing depends on /etc/slurm or collides with another cluster.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

import psutil

from tests.support import free_ports

# In the daemons' environment and in `env`: slurmstepd inherits it from slurmd, and a job
# from the sbatch that submitted it with `env` (--export=ALL, the default), so stop() finds
# what is left of jobs: slurmstepd detaches from slurmd, and a job's children that outlive
# their batch script (e.g. after `scancel --batch`) are orphans of pid 1.
MARKER = "RUNYARD_SLURM_CLUSTER"
START_TIMEOUT = 30.0  # the node is idle about 1.2 s after start here
STOP_TIMEOUT = 10.0
COMMAND_TIMEOUT = 30.0
POLL_TIMEOUT = 5.0  # one sinfo of the readiness poll; a controller not yet up may hang it
# the machine kind has 2 cores; declaring more than slurmd finds would make the node INVALID
NODE_CPUS = 2
REQUIRED = ("slurmctld", "slurmd", "sbatch", "sinfo", "munged", "munge", "unmunge")


class SlurmClusterError(RuntimeError):
    """The cluster could not be started (the message carries the daemons' logs)."""


class SlurmCluster:
    """Starts slurmctld, slurmd (and munged when the machine has none running) in `directory`;
    `stop()` ends them and whatever is left of their jobs. Usable as a context manager."""

    def __init__(
        self,
        directory: Path,
        *,
        min_job_age: int = 5,
        cred_expire: int = 5,
        kill_wait: int = 2,
    ) -> None:
        self.directory = directory
        self.min_job_age = min_job_age
        # also the delay before a requeued (e.g. preempted) job may start again; 5 is the
        # least Slurm accepts (below it falls back to its default, 120 s)
        self.cred_expire = cred_expire
        self.kill_wait = kill_wait
        self.node = socket.gethostname().split(".")[0]
        self.conf_path = directory / "slurm.conf"
        self.env: dict[str, str] = {
            **os.environ,
            "SLURM_CONF": str(self.conf_path),
            MARKER: str(directory),
        }
        self.munge_socket: Path | None = None  # None: the machine's munged, at its default
        self._munged_pid: int | None = None
        self._daemons: dict[str, subprocess.Popen[bytes]] = {}
        self._log_files: list[IO[bytes]] = []

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- start ---------------------------------------------------------------------------

    def start(self) -> SlurmCluster:
        """Start the daemons and return once the node is idle; on any failure, what was
        started is stopped again before the error propagates."""
        missing = [name for name in REQUIRED if shutil.which(name) is None]
        if missing:
            raise SlurmClusterError(f"missing {', '.join(missing)}: run scripts/slurm")
        try:
            self._make_dirs()
            self._start_munge()
            self.conf_path.write_text(self._slurm_conf())
            self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf_path)])
            self._spawn("slurmd", ["slurmd", "-D", "-N", self.node, "-f", str(self.conf_path)])
            self._wait_until_idle()
        except BaseException:
            self.stop()
            raise
        return self

    def _make_dirs(self) -> None:
        for sub in ("state", "spool", "log", "run", "munge"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)

    def _start_munge(self) -> None:
        """Reuse a munged that already answers at the default socket; otherwise start one of
        our own, with its socket, key, pid, seed and log in the directory."""
        if _munge_answers(None):
            return
        run_dir = self.directory / "munge"
        key = run_dir / "munge.key"
        # a key of its own: the cluster needs no /etc/munge and no munge user. 1024 bits, as
        # `mungekey` makes by default
        key.write_bytes(os.urandom(128))
        key.chmod(0o600)
        self.munge_socket = run_dir / "socket" / "munge.socket"
        # munged insists that every directory above its socket be searchable by all; a
        # pytest temporary directory is 0700, so its socket directory is 0755 and --force
        # turns the remaining complaint about the parents into a warning. It runs as root
        # (the key's owner) for the same reason: the munge user cannot enter the 0700 parents.
        self.munge_socket.parent.mkdir(mode=0o755, exist_ok=True)
        pid_file = run_dir / "munged.pid"
        # without -F, munged returns only once its socket accepts requests: no wait needed
        started = subprocess.run(
            [
                "munged",
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--pid-file={pid_file}",
                f"--seed-file={run_dir / 'munged.seed'}",
                f"--log-file={run_dir / 'munged.log'}",
            ],
            check=False,
            timeout=COMMAND_TIMEOUT,
            capture_output=True,
            text=True,
        )
        if started.returncode != 0:
            raise SlurmClusterError(f"munged failed: {started.stderr}\n{self.logs()}")
        self._munged_pid = int(pid_file.read_text())
        if not _munge_answers(self.munge_socket):
            raise SlurmClusterError(f"munged does not answer\n{self.logs()}")

    def _slurm_conf(self) -> str:
        d = self.directory
        auth_info = f"cred_expire={self.cred_expire}"
        if self.munge_socket is not None:
            auth_info += f",socket={self.munge_socket}"
        ctld_port, slurmd_port = free_ports(2)
        lines = [
            "ClusterName=runyard",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo={auth_info}",
            "SlurmUser=root",
            "SlurmdUser=root",
            # no cgroups: plain process tracking, no task binding (works in a container)
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "MpiDefault=none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "MailProg=/bin/true",
            f"StateSaveLocation={d / 'state'}",
            f"SlurmdSpoolDir={d / 'spool'}",
            f"SlurmctldLogFile={d / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={d / 'log' / 'slurmd.log'}",
            f"SlurmctldPidFile={d / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={d / 'run' / 'slurmd.pid'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ReturnToService=2",
            f"MinJobAge={self.min_job_age}",
            f"KillWait={self.kill_wait}",
            # the main scheduler and backfill test the whole queue every second instead of
            # every 60 s / 30 s: a job whose begin time passed (a requeued one) starts soon
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=1,bf_interval=1,sched_min_interval=0",
            "PreemptType=preempt/partition_prio",
            "PreemptMode=REQUEUE",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} State=UNKNOWN",
            "PartitionName=low Nodes=ALL Default=YES PriorityTier=1 MaxTime=INFINITE State=UP",
            "PartitionName=high Nodes=ALL PriorityTier=10 MaxTime=INFINITE State=UP",
        ]
        return "\n".join(lines) + "\n"

    def _spawn(self, name: str, argv: list[str]) -> None:
        # the daemons' own log files hold the detail; stdout/stderr catch what comes before
        log = (self.directory / "log" / f"{name}.out").open("ab")
        self._log_files.append(log)
        self._daemons[name] = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env
        )

    def _wait_until_idle(self) -> None:
        """Poll sinfo until the node is idle: Slurm has no readiness notification, so this
        bounded poll is the one wait of the start."""
        deadline = time.monotonic() + START_TIMEOUT
        state = ""
        while time.monotonic() < deadline:
            exited = {n: p.returncode for n, p in self._daemons.items() if p.poll() is not None}
            if exited:
                raise SlurmClusterError(f"daemons exited early {exited}\n{self.logs()}")
            state = self._node_state()
            if set(state.split()) == {"idle"}:  # a line per partition the node is in
                return
            time.sleep(0.2)
        raise SlurmClusterError(f"node not idle after {START_TIMEOUT} s ({state!r})\n{self.logs()}")

    def _node_state(self) -> str:
        argv = ["sinfo", "-h", "-N", "-o", "%T"]
        try:
            out = subprocess.run(
                argv,
                env=self.env,
                capture_output=True,
                text=True,
                check=False,
                timeout=POLL_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            return "no answer"
        return out.stdout.strip() or out.stderr.strip()

    # --- use -----------------------------------------------------------------------------

    def run(
        self, *argv: str, check: bool = False, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm command against this cluster (text output, bounded in time). It runs in
        the cluster's directory unless told otherwise: sbatch makes that the job's working
        directory and puts a job's default output (slurm-<id>.out) there, not in the repo."""
        return subprocess.run(
            argv,
            env=self.env,
            cwd=cwd or self.directory,
            capture_output=True,
            text=True,
            check=check,
            timeout=COMMAND_TIMEOUT,
        )

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job -o` as a dict ({} once the job is purged, MinJobAge and up to a
        minute after its end). The line is cut before each `Key=`, so a value may hold spaces
        (a path, Command's arguments) unless a word in it looks like a key."""
        out = self.run("scontrol", "show", "job", "-o", job_id)
        if out.returncode != 0:
            return {}
        fields = _FIELD_START.split(out.stdout.strip())
        return dict(field.split("=", 1) for field in fields if "=" in field)

    def release_requeued(self, job_id: str) -> None:
        """Let a requeued (e.g. preempted) job start as soon as it has resources instead of
        after cred_expire: a requeue sets its begin time to now + cred_expire + 1 (PENDING,
        Reason=BeginTime) and `scontrol release` leaves that as it is; `scontrol update
        StartTime=now` resets it. Only once the job is PENDING: while it is still COMPLETING,
        the requeue that follows would set the begin time again."""
        state = self.job(job_id).get("JobState")
        if state != "PENDING":
            raise SlurmClusterError(f"job {job_id} is {state}, not PENDING: not requeued yet")
        self.run("scontrol", "update", f"JobId={job_id}", "StartTime=now", check=True)

    def controller_pid(self) -> int:
        """slurmctld's pid: a test may pause it (SIGSTOP) to play a controller that is gone."""
        return self._daemons["slurmctld"].pid

    def daemon_pids(self) -> list[int]:
        """The pids of the daemons this cluster started (munged only when it is ours)."""
        pids = [p.pid for p in self._daemons.values()]
        return [*pids, self._munged_pid] if self._munged_pid is not None else pids

    def logs(self) -> str:
        """The tails of the daemons' logs, for error messages."""
        logs = sorted((self.directory / "log").glob("*"))
        paths = [*logs, self.directory / "munge" / "munged.log"]
        return "\n".join(f"--- {p.name}\n{_tail(p)}" for p in paths if p.exists())

    # --- stop ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything started, in reverse order; safe to call after a partial start
        and more than once."""
        for name in ("slurmd", "slurmctld"):
            proc = self._daemons.pop(name, None)
            if proc is not None:
                _terminate(proc)
        for log in self._log_files:
            log.close()
        self._log_files.clear()
        # slurmstepd and the jobs outlive slurmd (so that jobs survive a slurmd restart)
        _signal_and_wait(self._leftover_pids(), signal.SIGKILL)
        if self._munged_pid is not None:
            alive = _signal_and_wait([self._munged_pid], signal.SIGTERM)
            _signal_and_wait(alive, signal.SIGKILL)
            self._munged_pid = None

    def _leftover_pids(self) -> list[int]:
        """Processes with the marker (slurmstepd, slurmscriptd, jobs submitted with `env`)
        and their descendants (the processes of a job submitted without it)."""
        needle = f"{MARKER}={self.directory}".encode()
        pids: set[int] = set()
        for proc in psutil.process_iter():
            with contextlib.suppress(OSError, psutil.Error):
                environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
                if needle in environ.split(b"\0") and proc.pid != os.getpid():
                    pids.update([proc.pid, *(c.pid for c in proc.children(recursive=True))])
        return sorted(pids)


# where `scontrol show job -o` starts a field: a space before `Key=` (keys such as
# `AllocNode:Sid`, `CPUs/Task` hold ':' and '/')
_FIELD_START = re.compile(r" (?=[A-Za-z][\w:/]*=)")


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time; always reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _signal_and_wait(pids: list[int], sig: signal.Signals) -> list[int]:
    """Signal processes that are not our children (munged and slurmstepd detach) and wait
    for them to exit; returns those still running after STOP_TIMEOUT. Through pidfds: the
    signal cannot reach a reused pid, and a pidfd turns readable when its process exits,
    not when it is reaped (this machine's pid 1 reaps orphans up to seconds later)."""
    fds: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            fds[os.pidfd_open(pid)] = pid
    try:
        for fd in fds:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, sig)
        deadline = time.monotonic() + STOP_TIMEOUT
        while fds and (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select(list(fds), [], [], left)
            for fd in ready:
                os.close(fd)
                del fds[fd]
        return list(fds.values())
    finally:
        for fd in fds:
            os.close(fd)


def _munge_answers(sock: Path | None) -> bool:
    """Does a munged answer at `sock` (None: the default socket)? `munge -n | unmunge`."""
    opts = [] if sock is None else ["-S", str(sock)]
    try:
        cred = subprocess.run(["munge", "-n", *opts], capture_output=True, timeout=5, check=True)
        subprocess.run(
            ["unmunge", *opts], input=cred.stdout, capture_output=True, timeout=5, check=True
        )
    except (subprocess.SubprocessError, OSError):
        return False
    return True


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


_SHARED: SlurmCluster | None = None


def shared_cluster() -> SlurmCluster:
    """This test process's one cluster, started on first use (about 1.2 s) and stopped by
    `stop_shared_cluster` at the end of the session (tests/conftest.py)."""
    global _SHARED  # noqa: PLW0603  one per process, like the session it lives for
    if _SHARED is None:
        import tempfile

        cluster = SlurmCluster(Path(tempfile.mkdtemp(prefix="runyard-slurm-")))
        cluster.start()
        _SHARED = cluster
    return _SHARED


def stop_shared_cluster() -> None:
    global _SHARED  # noqa: PLW0603
    if _SHARED is not None:
        _SHARED.stop()
        shutil.rmtree(_SHARED.directory, ignore_errors=True)
        _SHARED = None
