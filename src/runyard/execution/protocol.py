"""What the server and the supervisor say to each other: JSON lines over a Unix socket.

Requests carry `req`, echoed by the reply; events (`exited`) carry none. Exit records are
also written to the attempt's exit file, which stays the durable truth if an event is missed.
"""

from __future__ import annotations

import json
import signal as _signal
from dataclasses import asdict, dataclass, fields
from typing import Any

SOCKET_NAME = "supervisor.sock"
LOCK_NAME = "supervisor.lock"
LOG_NAME = "supervisor.log"
MAX_LINE = 4 * 1024 * 1024


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError("message is not an object")  # noqa: TRY004  callers catch ValueError
    return value


@dataclass(frozen=True, slots=True)
class ExitRecord:
    """How one attempt's program ended, as the supervisor saw it."""

    key: str
    pid: int | None
    exit_code: int | None  # None when killed by a signal or never started
    signal: int | None
    killed_by: str | None  # "cancel" or "timeout" when the supervisor sent the signals
    started_at: float | None
    ended_at: float
    peak_rss_kb: int | None = None
    cpu_s: float | None = None
    error: str | None = None  # the program could not be started
    progress_bytes: int | None = None  # size of its progress file (None: unknown)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExitRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def describe(self) -> str:
        if self.error:
            return self.error
        if self.signal is not None:
            try:
                name = _signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            why = {"SIGXFSZ": " (log over limits.max_log_mb)", "SIGXCPU": " (over limits.cpu_s)"}
            return f"killed by {name}{why.get(name, '')}"
        return f"exit code {self.exit_code}"
