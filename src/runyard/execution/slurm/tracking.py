"""What the Slurm executor knows of each job it placed, and what it keeps of it on disk.

A job file beside the attempt's log (`attempt-N.slurm.json`) records the job id, and later
why runyard stopped it: written before anything depends on it, so that a restarted server
re-adopts the job (no second submission) and still knows a cancel it asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runyard import fastjson
from runyard.execution.diskwrites import write_exit_file

# States after which the job may still run again or is running: not an end.
LIVE = frozenset({
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
    "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD",
})  # fmt: skip
NAME_PREFIX = "runyard:"
MAX_JOB_FILE = 64 * 1024


@dataclass(slots=True)
class Tracked:
    key: str
    job_id: str
    timeout_s: float | None
    kill_grace_s: float
    requeue: bool
    killed_by: str | None = None  # runyard stopped it: "cancel", "timeout", "fenced"
    state: str = "PENDING"
    reason: str = ""
    running_since: float | None = None  # monotonic: when a poll first saw it RUNNING
    ended_since: float | None = None  # monotonic: when Slurm first said it ended or vanished
    termed_at: float | None = None  # monotonic: when runyard's stop was sent (0: plain kill)
    restarts: int = 0

    def live(self, state: str) -> bool:
        # a preempted job Slurm may requeue comes back under the same id
        return state in LIVE or (state == "PREEMPTED" and self.requeue)

    def to_file(self) -> dict[str, object]:
        return {
            "key": self.key, "job_id": self.job_id, "timeout_s": self.timeout_s,
            "kill_grace_s": self.kill_grace_s, "requeue": self.requeue,
            "killed_by": self.killed_by,
        }  # fmt: skip


def job_name(server_id: str, key: str) -> str:
    """The Slurm job name: which server placed it and for which attempt, so that a restarted
    server finds its own jobs (and only those) in one squeue."""
    return f"{NAME_PREFIX}{server_id}:{key}"


def key_of(name: str, server_id: str) -> str | None:
    prefix = f"{NAME_PREFIX}{server_id}:"
    return name[len(prefix) :] if name.startswith(prefix) else None


def names_attempt(name: str, key: str) -> bool:
    """Whether a Slurm job name is runyard's for attempt `key` (placed by any server)."""
    return name.startswith(NAME_PREFIX) and name.endswith(f":{key}")


def write_job_file(path: str, tracked: Tracked) -> None:
    """Blocking, atomic (temporary file, rename); OSError if the disk refuses it."""
    write_exit_file(Path(path), fastjson.dumps(tracked.to_file()), fsync=False)


def read_job_file(path: str, key: str, job_id: str | None = None) -> Tracked | None:
    """Blocking: the attempt's job file if it is there, readable and this attempt's."""
    try:
        with open(path, "rb") as fh:  # noqa: PTH123
            raw = fh.read(MAX_JOB_FILE + 1)
        data = fastjson.loads(raw.decode()) if len(raw) <= MAX_JOB_FILE else None
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    found = str(data.get("job_id", ""))
    if not found.isdigit() or (job_id is not None and found != job_id):
        return None
    timeout = data.get("timeout_s")
    grace = data.get("kill_grace_s")
    killed_by = data.get("killed_by")
    return Tracked(
        key=key, job_id=found,
        timeout_s=float(timeout) if isinstance(timeout, int | float) else None,
        kill_grace_s=float(grace) if isinstance(grace, int | float) else 10.0,
        requeue=data.get("requeue") is True,
        killed_by=killed_by if killed_by in ("cancel", "timeout", "fenced") else None,
    )  # fmt: skip
