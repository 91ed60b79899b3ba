"""Slurm's command-line tools, called from threads of their own (never on the event loop),
with their output bounded, their transient failures retried and sbatch rate-limited.

Only the commands every Slurm site has (sbatch, squeue, scancel, scontrol; sacct where a probe
shows accounting works, for a lost job's reason only) and output formats
that 22.05 and later give alike: squeue's `-o` with `|` between fields (job names here never
hold one), `scontrol show job -o` (one line of Key=Value).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

# What Slurm says when its controller is busy or restarting: the same call may work shortly.
TRANSIENT = re.compile(
    r"Socket timed out|Resource temporarily unavailable|temporarily unable|"
    r"Unable to contact slurm controller|Connection refused|Transport endpoint|"
    r"Zero Bytes were transmitted|slurm_receive_msg|Communication connection failure"
)
MAX_OUTPUT = 64 * 1024 * 1024  # squeue of many thousand jobs fits with room to spare
CALL_TIMEOUT_S = 60.0
CALLS_AT_ONCE = 8  # Slurm calls in flight at once, each in a thread of the calls' own
RETRIES = 4
RETRY_BASE_S = 0.5
JOB_STATE = "|".join(["%i", "%j", "%T", "%r"])  # id, name, state, reason


class SlurmError(Exception):
    """A Slurm command failed for good; `message` is what it said (first line of stderr)."""

    def __init__(self, argv0: str, code: int, message: str) -> None:
        super().__init__(f"{argv0} failed ({code}): {message}")
        self.message = message


class SlurmUnavailableError(SlurmError):
    """The controller did not answer (after retries), or the command is not there."""


@dataclass(frozen=True, slots=True)
class QueuedJob:
    job_id: str
    name: str
    state: str  # PENDING, RUNNING, COMPLETED, CANCELLED, ...
    reason: str


class _Calls:
    """The calls in flight, each a process group of its own: a call that outlives its time is
    killed whole (what it started included: a wrapper's children, munge's helper), and so are
    all of them when the executor stops. Blocking: run in the calls' own threads."""

    def __init__(self) -> None:
        self._live: set[subprocess.Popen[str]] = set()
        self._lock = threading.Lock()
        self._closed = False  # then a call waiting for a thread never starts

    def run(
        self, argv: list[str], stdin: str | None, env: Mapping[str, str] | None, timeout_s: float
    ) -> tuple[int, str, str]:
        """One call, its output bounded (a runaway command is damage, not an answer)."""
        if self._closed:
            return 124, "", f"{argv[0]}: not called (the executor stopped)"
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env=dict(env) if env is not None else None, start_new_session=True,
            )  # fmt: skip
        except FileNotFoundError:
            return 127, "", f"{argv[0]}: command not found"
        with self._lock:
            self._live.add(proc)
            closed = self._closed
        try:
            out, err = proc.communicate(stdin, timeout=0 if closed else timeout_s)
        except subprocess.TimeoutExpired:
            _kill(proc)
            return 124, "", f"{argv[0]}: Socket timed out (no answer in {timeout_s:g} s)"
        finally:
            with self._lock:
                self._live.discard(proc)
        return proc.returncode, out[:MAX_OUTPUT], err[:4096]

    def close(self) -> None:
        """Every call in flight killed, none started from now on."""
        with self._lock:
            self._closed = True
            live = list(self._live)
        for proc in live:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)


def _kill(proc: subprocess.Popen[str]) -> None:
    """Its whole group, then its reaping; its pipes closed unread (something that left the
    group may hold them open for ever)."""
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0][:500] if lines else "no message"


# What sbatch and the batch shell get of the server's environment (it is exported to the job
# and kept in Slurm's state): how to find commands and the cluster, never the server's secrets.
SUBMIT_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ")


def submit_env(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k in SUBMIT_ENV or k.startswith("SLURM_")}


class SlurmCommands:
    """One Slurm cluster as its commands see it (SLURM_CONF etc. from `env`)."""

    def __init__(self, env: Mapping[str, str] | None = None, submit_per_s: float = 20.0) -> None:
        self.env = env
        self._submit_env = submit_env(os.environ if env is None else env)
        self.calls: dict[str, int] = {}  # per command, for /v1/status and the tests
        self._submit_gap_s = 1.0 / submit_per_s
        self._next_submit = 0.0
        self._submit_lock = asyncio.Lock()
        self._accounting: bool | None = None  # whether sacct answers (asked once)
        # Threads of their own: calls that hang (a hung NFS mount, munge) used to fill the
        # event loop's shared pool, and every request needing a thread waited behind them.
        self._threads = ThreadPoolExecutor(CALLS_AT_ONCE, thread_name_prefix="slurm")
        self._calls = _Calls()

    def close(self) -> None:
        """The executor stops: calls in flight are killed (their threads then free), and
        those waiting for a thread are not made; calls after this are made afresh."""
        calls, self._calls = self._calls, _Calls()
        calls.close()

    async def call(
        self,
        argv: list[str],
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
        retries: int = RETRIES,
        timeout_s: float = CALL_TIMEOUT_S,
    ) -> str:
        """stdout of a successful call; SlurmError (for good) or SlurmUnavailableError."""
        delay = RETRY_BASE_S
        loop = asyncio.get_running_loop()
        for attempt in range(retries + 1):
            code, out, err = await loop.run_in_executor(
                self._threads, self._calls.run, argv, stdin, env or self.env, timeout_s
            )
            # counted once answered: a poll and its squeue are counted in the same loop step
            self.calls[argv[0]] = self.calls.get(argv[0], 0) + 1
            if code == 0:
                return out
            message = _first_line(err or out)
            if code == 127:
                raise SlurmUnavailableError(argv[0], code, message)
            if not TRANSIENT.search(err):
                raise SlurmError(argv[0], code, message)
            if attempt == retries:
                raise SlurmUnavailableError(argv[0], code, message)
            log.warning("slurm_transient_error", command=argv[0], error=message, attempt=attempt)
            await asyncio.sleep(delay)  # the controller asked for time: back off
            delay *= 2
        raise AssertionError("unreachable")

    async def submit(
        self, options: list[str], script: str, *, name: str | None = None, user: str = ""
    ) -> str:
        """sbatch, at most `submit_per_s` per second; the job id. After a transient failure
        the submission may have gone through all the same: a job of that `name` already in
        the queue is the one (never two jobs for one attempt)."""
        delay = RETRY_BASE_S
        for attempt in range(RETRIES + 1):
            await self._pace()
            try:
                out = await self.call(["sbatch", *options], script, self._submit_env, 0)
            except SlurmUnavailableError as exc:
                if exc.message.endswith("command not found"):
                    raise
                # it may have gone through all the same: that job is the attempt's
                if name is not None and (found := await self.job_named(name, user)):
                    return found
                if attempt == RETRIES:
                    raise
                log.warning("slurm_submit_retried", error=exc.message, attempt=attempt)
                await asyncio.sleep(delay)
                delay *= 2
                continue
            job_id = out.strip().split(";")[0]  # --parsable: "ID" or "ID;CLUSTER"
            if not job_id.isdigit():
                raise SlurmError("sbatch", 0, f"unexpected answer {out[:200]!r}")
            return job_id
        raise AssertionError("unreachable")

    async def _pace(self) -> None:
        async with self._submit_lock:
            wait = self._next_submit - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # a rate, not an event: nothing to be told
            self._next_submit = time.monotonic() + self._submit_gap_s

    async def job_named(self, name: str, user: str) -> str | None:
        """The id of `user`'s job called `name`, if Slurm has one."""
        argv = ["squeue", "-h", "-t", "all", "--name", name, "-o", "%i"]
        out = await self.call([*argv, "-u", user] if user else argv)
        ids = [line.strip() for line in out.splitlines() if line.strip().isdigit()]
        return ids[0] if ids else None

    async def queue(self, user: str) -> list[QueuedJob]:
        """Every job of `user` Slurm still knows, ended ones too: one call, whatever their
        number."""
        out = await self.call(["squeue", "-h", "-t", "all", "-u", user, "-o", JOB_STATE])
        jobs = []
        for line in out.splitlines():
            parts = line.split("|")
            if len(parts) == 4 and parts[0].strip():
                jobs.append(QueuedJob(parts[0].strip(), parts[1], parts[2].strip(), parts[3]))
        return jobs

    async def cancel(self, job_id: str, *, signal: str | None = None) -> None:
        """scancel; with `signal`, only to the batch shell (which passes it to the program).
        A job Slurm no longer knows is not an error: it is already gone."""
        argv = ["scancel", *([f"--signal={signal}", "--batch"] if signal else []), job_id]
        try:
            await self.call(argv)
        except SlurmError as exc:
            if "Invalid job id" not in exc.message and "already completing" not in exc.message:
                raise

    async def ping(self, timeout_s: float = CALL_TIMEOUT_S) -> str:
        """`scontrol ping`: what it says when the controller answers (SlurmError if not),
        the call killed past `timeout_s` (readiness asks with its own short wait)."""
        out = await self.call(["scontrol", "ping"], retries=0, timeout_s=timeout_s)
        if "UP" not in out:
            raise SlurmUnavailableError("scontrol", 1, _first_line(out))
        return _first_line(out)

    async def show_job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job -o`: its Key=Value fields ({} once Slurm has purged it)."""
        try:
            out = await self.call(["scontrol", "show", "job", "-o", job_id])
        except SlurmError as exc:
            if "Invalid job id" in exc.message:
                return {}
            raise
        return dict(field.split("=", 1) for field in out.strip().split(" ") if "=" in field)

    async def accounting(self) -> bool:
        """Whether this cluster keeps accounting (`sacct` answers): probed once. Without
        slurmdbd, sacct says "accounting storage is disabled"."""
        if self._accounting is None:
            try:
                await self.call(["sacct", "-n", "-X", "-o", "JobID", "-j", "1"], retries=0)
                self._accounting = True
            except SlurmUnavailableError:
                return False  # the controller is silent: ask again later
            except SlurmError:
                self._accounting = False
        return self._accounting

    async def accounted(self, job_id: str) -> tuple[str, str] | None:
        """(State, ExitCode) of a job from accounting, if it has it."""
        out = await self.call(["sacct", "-n", "-X", "-P", "-o", "State,ExitCode", "-j", job_id])
        for line in out.splitlines():
            state, _, code = line.partition("|")
            if state.strip():
                return state.strip()[:64], code.strip()[:16]
        return None
