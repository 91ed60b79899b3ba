"""The Executor protocol: what runs an attempt's program, as the services see it.

`LocalExecutor` (a supervisor process per data directory) is one implementation; the contract
below, and tests/integration/test_executor_contract.py, hold for every one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from runyard.errors import UnavailableError
from runyard.execution.layout import RunPaths
from runyard.execution.protocol import ExitRecord, UnreadableExit
from runyard.execution.shortages import shortage

ExitHandler = Callable[[ExitRecord | UnreadableExit], Awaitable[None]]
LossHandler = Callable[[], Awaitable[None]]


class ExecutorUnavailableError(UnavailableError):
    """The executor cannot be reached or refused for a reason that is not the run's: nothing
    was started, the attempt goes back to the queue (503 when it reaches a client)."""


class ShortageError(ExecutorUnavailableError):
    """The attempt could not be prepared or started for want of room (a full or failing disk,
    memory, descriptors): the machine's fault, not the run's. It goes back to the queue, and
    runs once the room is back; readiness names what failed meanwhile."""


class ExecutorHeldError(ExecutorUnavailableError):
    """The executor starts nothing for now, whatever the run (a supervisor whose warden is
    gone, until it is replaced): no claim is made meanwhile, rather than each queued run
    claimed, refused and re-queued, an attempt a minute each (a probe: 1,440 a day a run)."""


class ExecutorGoneError(ExecutorUnavailableError):
    """The executor went away with a request of ours unanswered: what it was asked may have
    been done all the same (a spawn: its program may have run, and killed it)."""


class ExecutorTimeoutError(ExecutorUnavailableError):
    """The executor is connected but did not answer in time (paused, hung or swamped)."""


class NotWantedError(Exception):
    """Its run's cancel came while the attempt was being prepared (a workspace copied, its
    inputs staged or fetched): nothing was started, nor will be (a probe: the program was
    spawned once the copy was done, seconds after the cancel, then stopped)."""


def check_wanted(spec: Launch) -> None:
    """Before the spawn, once what the attempt needs is ready: NotWantedError if it is not."""
    if spec.still_wanted is not None and not spec.still_wanted():
        raise NotWantedError("cancelled before its program was started")


class LaunchError(Exception):
    """The attempt cannot be started for a reason of its own (its workspace cannot be
    prepared, its request is refused): the attempt ends failed with this message."""


def preparation_failed(exc: BaseException, what: str) -> LaunchError | ShortageError:
    """What an attempt's preparation that raised `exc` (its workspace, its inputs) is: the
    machine short of room (retried once there is room) or the run's own failure."""
    error = ShortageError if shortage(exc) else LaunchError
    return error(f"{what}: {exc}")


@dataclass(frozen=True, slots=True)
class ExecutorEvents:
    """Who the executor tells, given to `Executor.start`.

    `exited`: the attempts owner, told of every end straight from the backend (once per end
    the executor hears of; again, idempotently, for an end whose exit record could only be
    written late). Awaited in the executor's reading path, in the order the ends arrive: it
    must return promptly (hand lasting work, above all anything awaiting this executor, to a
    task of its own). An end it misses (disconnected, or it raised) stays in `read_exit`.
    `lost`: told when the connection to the backend breaks (never on `stop`); it reconnects
    with `Executor.reconnect` and reconciles from the exit files.
    """

    exited: ExitHandler
    lost: LossHandler


@dataclass(frozen=True, slots=True)
class Launch:
    """Everything needed to start one attempt."""

    run_id: str
    attempt: int
    command: list[str]  # argv template: `{name}` placeholders filled from params and builtins
    params: dict[str, Any]
    workspace: str  # "empty", or a workspace spec (workspace.py) prepared before the spawn
    env: dict[str, str]
    timeout_s: float | None  # None: no limit; else the attempt ends killed_by "timeout"
    kill_grace_s: float  # between SIGTERM and SIGKILL for cancel, timeout and fencing
    limits: dict[str, Any] | None = None
    run_as: str | None = None
    executor: str = "local"  # which executor runs it (the job's `executor`)
    slurm: dict[str, Any] | None = None  # the job's [slurm] table, for the slurm executor
    resources: dict[str, Any] | None = None  # cpus, gpus, memory_mb: placement on a cluster
    inputs: dict[str, str] | None = None  # file params: name -> upload id, staged before start
    input_paths: dict[str, str] | None = None  # name -> where it lands, where the job says
    sandbox: dict[str, Any] | None = None  # the job's [sandbox] table (jobs/sandbox.py)
    # asked after the attempt is prepared, before its spawn: False once its run's cancel came
    still_wanted: Callable[[], bool] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Started:
    """A program runs: what identifies it (a pid alone can be reused)."""

    pid: int
    pgid: int
    start_time: float  # the process's start time as the OS reports it (procinfo.start_time)
    started_at: float  # wall clock, when it was spawned


@dataclass(frozen=True, slots=True)
class RunningAttempt:
    """An attempt the executor holds: its program runs, or it ended and its exit record is
    not yet durable (`ended`), which is still the executor's to report, never lost."""

    key: str
    pid: int | None
    start_time: float | None
    started_at: float | None
    ended: bool = False


@dataclass(frozen=True, slots=True)
class ExecutorHealth:
    """The executor answers; the kinds of durable write now failing (point -> why)."""

    write_errors: dict[str, str] = field(default_factory=dict)


class Executor(Protocol):
    """Runs attempts' programs and reports how they end.

    Durability: the exit record in the run files (`read_exit`) is the truth; the `exited`
    event is how a connected server hears of it at once. An end missed while disconnected is
    found by listing (`running`) and reading exit records (recovery.py).
    Errors: `ExecutorUnavailableError` (and its `ExecutorTimeoutError`) when the backend
    cannot be reached or answers too late; `LaunchError` for an attempt that cannot start.
    """

    @property
    def healthy(self) -> bool:
        """Connected to the backend now (cheap, no I/O)."""
        ...

    async def start(self, events: ExecutorEvents) -> None:
        """Connect to the backend (starting it if needed) and tell it the lease held; from now
        on ends go to `events.exited` and a broken connection to `events.lost`.
        Raises ExecutorUnavailableError if it cannot be reached."""
        ...

    async def reconnect(self) -> None:
        """After `events.lost`: connect again, as `start` did, with the same events."""
        ...

    async def stop(self) -> None:
        """Disconnect; running programs go on (a later start adopts them through `running`).
        Events already received are delivered before it returns."""
        ...

    async def health(self, timeout_s: float) -> ExecutorHealth:
        """A round trip to the backend within `timeout_s`: it answers, with its failing
        writes. Raises ExecutorUnavailableError if it does not."""
        ...

    async def hold_lease(self, token: str, until: float, grace_s: float, timeout_s: float) -> None:
        """Cluster mode: this server's lease `token` is valid until `until` (wall clock). The
        backend stops the programs spawned under it if it lapses unrenewed, `grace_s` between
        SIGTERM and SIGKILL (killed_by "fenced"). Remembered and told again on every
        (re)connect; never raises (a backend not told keeps the last lease it knew)."""
        ...

    def paths(self, run_id: str) -> RunPaths:
        """Where the run's files are on this server: logs, exit records, workspace, artifacts."""
        ...

    async def launch(self, spec: Launch) -> Started | None:
        """Prepare the workspace (once per run) and spawn the attempt's program, its output
        appended to `paths(run_id).log(attempt)`. None when the backend tried and the program
        could not start (no such command): its exit record, with the reason, arrives through
        `events.exited` like any other end. Raises LaunchError (the attempt cannot start: it
        fails) or ExecutorUnavailableError (nothing started: it is re-queued)."""
        ...

    def launch_now(self, spec: Launch) -> Awaitable[Started | None] | None:
        """`launch`, when it can send what starts the program now, in the caller's step, with
        no await first: what it returns gives `launch`'s outcome (and raises its errors).
        None when it cannot: the caller awaits `launch`. Lets a claim's spawn go out before
        whatever else that step has queued (the answer to the submit that claimed it)."""
        ...

    async def cancel(self, run_id: str, attempt: int, reason: str = "cancel") -> bool:
        """Stop the attempt: SIGTERM to its process group, SIGKILL after its kill grace; its end
        is recorded with killed_by `reason`. False if the executor does not run it (or is
        unreachable); raises ExecutorTimeoutError if connected but silent."""
        ...

    async def running(self) -> dict[str, RunningAttempt]:
        """The attempts the backend holds, by attempt key. Each will report its end through
        `events.exited` to whoever is connected then (this is how attempts are adopted after a
        restart). Raises ExecutorUnavailableError."""
        ...

    async def read_exit(self, run_id: str, attempt: int) -> ExitRecord | UnreadableExit | None:
        """The attempt's durable exit record, checked to be this attempt's; UnreadableExit if
        one is there but damaged; None while it has none."""
        ...

    async def still_runs(
        self, run_id: str, attempt: int, pid: int | None, start_time: float | None
    ) -> bool:
        """Whether the attempt's program provably still runs, even if `running` does not hold
        it (whoever ran it died): `pid` and `start_time` as its start recorded them, never a
        pid alone. False when nothing of it is known to run. Recovery asks before it believes
        an exit file: a record is written only once its program has ended, so a file beside
        a program that still runs is not its record (the program may have written it)."""
        ...

    async def kill_leftovers(
        self, run_id: str, attempt: int, pid: int | None, start_time: float | None
    ) -> int:
        """Kill what is left of an attempt nobody supervises any more (only processes that are
        provably its own). Returns how many died."""
        ...
