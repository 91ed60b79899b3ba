"""What the server and the supervisor say to each other: JSON lines over a Unix socket.

Requests carry `req`, echoed by the reply; events (`exited`) carry none. Exit records are
also written to the attempt's exit file, which stays the durable truth if an event is missed.
Both are data from outside (a program can write into its run directory, a disk can damage a
file): they are parsed against a strict schema, never trusted as they come.
"""

from __future__ import annotations

import math
import re
import signal as _signal
from dataclasses import dataclass, field, fields
from typing import Any

from runyard import fastjson

SOCKET_NAME = "supervisor.sock"
LOCK_NAME = "supervisor.lock"
LOG_NAME = "supervisor.log"
MAX_LINE = 4 * 1024 * 1024
MAX_EXIT_FILE = 64 * 1024  # a real exit record is ~300 bytes; anything far bigger is damage

# `RUN_ID.N`: run ids are ULIDs (letters and digits), attempts count from 1.
KEY_PATTERN = re.compile(r"[0-9A-Za-z_-]{1,64}\.[1-9][0-9]{0,8}")
_KILLED_BY = re.compile(r"[a-z][a-z_-]{0,31}")  # "cancel", "timeout", "fenced", ...
_MAX_TIME = 253402300799.0  # 9999-12-31: any later "timestamp" is damage
_MAX_ERROR = 4096
_INT32 = 2**31 - 1
_MAX_COUNT = 2**53  # sizes and kilobytes: exact in JSON and in every store column


def run_of(key: str) -> str:
    """The run of attempt key RUN_ID.N."""
    return key.rpartition(".")[0]


class BadExitRecordError(ValueError):
    """An exit record (file or event) that does not follow the schema."""


class BadRequestError(ValueError):
    """A request to the supervisor that does not follow the schema: refused, nothing done."""


def _reject_constant(name: str) -> float:
    # json accepts NaN and Infinity by default; no peer of ours ever writes them
    raise ValueError(f"{name} is not JSON")


def loads_strict(raw: bytes | str) -> Any:
    """JSON without NaN/Infinity; nesting too deep for the parser is a ValueError too.

    fastjson: orjson first, json for what it refuses (json decides, and gives the reason)."""
    try:
        return fastjson.loads(raw, _reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def encode(message: dict[str, Any]) -> bytes:
    """One line; a message is never lost to its encoding (fastjson falls back to json)."""
    return fastjson.dumps(message) + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    value = loads_strict(line)
    if not isinstance(value, dict):
        raise ValueError("message is not an object")  # noqa: TRY004  callers catch ValueError
    return value


def _int(data: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    # `type(...) is int`: a bool is an int to Python, never to us
    if type(value) is not int or not low <= value <= high:
        raise BadExitRecordError(f"{name} is not an integer in [{low}, {high}]")
    return value


def _number(data: dict[str, Any], name: str, high: float) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value) or not 0 <= value <= high:
        raise BadExitRecordError(f"{name} is not a number in [0, {high:g}]")
    return float(value)


def _time(data: dict[str, Any], name: str) -> float:
    value = _number(data, name, _MAX_TIME)
    if value is None:
        raise BadExitRecordError(f"{name} is missing")
    return value


def _flag(data: dict[str, Any], name: str) -> bool | None:
    value = data.get(name)
    if value is not None and not isinstance(value, bool):
        raise BadExitRecordError(f"{name} is not true or false")
    return value


def _text(data: dict[str, Any], name: str, pattern: re.Pattern[str] | None = None) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > _MAX_ERROR or "\0" in value:
        raise BadExitRecordError(f"{name} is not a string of 1 to {_MAX_ERROR} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise BadExitRecordError(f"{name} is not of the form {pattern.pattern}")
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
    log_cut: bool | None = None  # its log reached limits.max_log_mb and was cut there

    def to_dict(self) -> dict[str, Any]:
        # every field is a scalar: no deep copy (asdict) needed, and this runs twice per exit
        return {name: getattr(self, name) for name in _EXIT_FIELDS}

    @classmethod
    def parse(cls, data: object, key: str | None = None) -> ExitRecord:
        """A record from untrusted data, or BadExitRecordError saying what is wrong.

        `key`: the attempt the record must belong to. An exit file's attempt is known from
        where the file lives, never from what it says: a record naming another attempt is as
        unreadable as garbage (it could otherwise end somebody else's run). Unknown fields are
        ignored, so a newer supervisor can add some.
        """
        if not isinstance(data, dict):
            raise BadExitRecordError("not a JSON object")
        own = _text(data, "key", KEY_PATTERN)
        if own is None:
            raise BadExitRecordError("key is missing")
        if key is not None and own != key:
            raise BadExitRecordError("key names another attempt")
        exit_code = _int(data, "exit_code", 0, 255)
        signal = _int(data, "signal", 1, 64)
        error = _text(data, "error")
        if exit_code is not None and signal is not None:
            raise BadExitRecordError("both exit_code and signal are set")
        if exit_code is None and signal is None and error is None:
            raise BadExitRecordError("none of exit_code, signal and error is set")
        peak = _int(data, "peak_rss_kb", 0, _MAX_COUNT)
        return cls(
            key=own,
            pid=_int(data, "pid", 1, _INT32),
            exit_code=exit_code,
            signal=signal,
            killed_by=_text(data, "killed_by", _KILLED_BY),
            started_at=_number(data, "started_at", _MAX_TIME),
            ended_at=_time(data, "ended_at"),
            peak_rss_kb=peak,
            cpu_s=_number(data, "cpu_s", _MAX_TIME),
            error=error,
            progress_bytes=_int(data, "progress_bytes", 0, _MAX_COUNT),
            log_cut=_flag(data, "log_cut"),
        )

    @classmethod
    def from_file(cls, raw: bytes, key: str) -> ExitRecord:
        """An exit file's content, which must be attempt `key`'s record."""
        if len(raw) > MAX_EXIT_FILE:
            raise BadExitRecordError(f"over {MAX_EXIT_FILE} bytes")
        try:
            data = loads_strict(raw.decode("utf-8"))
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise BadExitRecordError(f"not JSON: {_clip(str(exc))}") from None
        return cls.parse(data, key)

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
        cut = " (log cut at limits.max_log_mb)" if self.log_cut else ""
        return f"exit code {self.exit_code}{cut}"


@dataclass(frozen=True, slots=True)
class UnreadableExit:
    """An attempt ended, but its record could not be read: it ends `lost`, saying why."""

    key: str  # the attempt, known from where the record was found
    why: str  # e.g. "unreadable exit file (key names another attempt)"


def _want(data: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = data.get(name, default)
    if value is default:
        return value
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadRequestError(f"spawn: {name} has the wrong type")
    return value


def _strings(value: object, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequestError(f"spawn: {name} must be a list of strings")
    return value


def _string_map(value: object, name: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise BadRequestError(f"spawn: {name} must map strings to strings")
    return value


def _seconds(data: dict[str, Any], name: str, default: float | None) -> float | None:
    value = _want(data, name, (int, float), default)
    if value is None or value is default:
        return value
    if not math.isfinite(value) or value < 0:
        raise BadRequestError(f"spawn: {name} must be a finite number of seconds, at least 0")
    return float(value)


@dataclass(frozen=True, slots=True)
class SpawnRequest:
    """`{"op": "spawn", ...}`: start one attempt's program. Built by the executor, parsed
    strictly by the supervisor (a wrong type is refused, not guessed at)."""

    key: str  # RUN_ID.N
    argv: list[str]  # rendered: each element one argument
    cwd: str
    env: dict[str, str]  # the whole environment: nothing of the supervisor's leaks in
    log: str  # appended to, stdout and stderr together
    exit: str  # where the exit record is written, atomically
    mkdirs: list[str] = field(default_factory=list)  # made before the spawn
    files: dict[str, str] = field(default_factory=dict)  # path -> text, written before it
    timeout_s: float | None = None  # None or 0: no timeout
    kill_grace_s: float = 10.0
    limits: dict[str, Any] = field(default_factory=dict)  # JobSpec.limits: limits.py
    run_as: str | None = None
    progress: str | None = None  # the progress file, given to `run_as` before the spawn
    lease: dict[str, Any] | None = None  # the cluster lease it starts under (lease_watch.py)
    deadline: float | None = None  # wall clock; set by the client: refused when read later
    # run under bubblewrap (sandbox.py): network, ro, rw, writable, hide (the server's places)
    sandbox: dict[str, Any] | None = None

    def to_message(self) -> dict[str, Any]:
        # shallow: its dicts are serialised as they are, no deep copy (asdict) per spawn
        message = {"op": "spawn", **{f.name: getattr(self, f.name) for f in fields(self)}}
        del message["deadline"]  # the client stamps each request with its own
        return message

    @classmethod
    def parse(cls, data: dict[str, Any]) -> SpawnRequest:
        """BadRequestError unless `data` is a well-formed spawn request; unknown keys (`op`,
        `req`, newer fields) are ignored."""
        key = data.get("key")
        if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
            raise BadRequestError("spawn: key must be RUN_ID.N")
        argv = _strings(data.get("argv"), "argv")
        if not argv:
            raise BadRequestError("spawn: argv is empty")
        for name in ("cwd", "log", "exit"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise BadRequestError(f"spawn: {name} must be a path")
        return cls(
            key=key,
            argv=argv,
            cwd=data["cwd"],
            env=_string_map(data.get("env"), "env"),
            log=data["log"],
            exit=data["exit"],
            mkdirs=_strings(data.get("mkdirs", []), "mkdirs"),
            files=_string_map(data.get("files", {}), "files"),
            timeout_s=_seconds(data, "timeout_s", None),
            kill_grace_s=_seconds(data, "kill_grace_s", 10.0) or 0.0,
            limits=dict(_want(data, "limits", dict, None) or {}),
            run_as=_want(data, "run_as", str, None),
            progress=_want(data, "progress", str, None),
            lease=_want(data, "lease", dict, None),
            deadline=_seconds(data, "deadline", None),
            sandbox=_sandbox(data.get("sandbox")),
        )


def _sandbox(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequestError("spawn: sandbox must be an object")
    if value.get("network") not in ("none", "host"):
        raise BadRequestError("spawn: sandbox.network must be none or host")
    for name in ("ro", "rw", "hide"):
        for path in _strings(value.get(name, []), f"sandbox.{name}"):
            if not path.startswith("/") or "\0" in path:
                raise BadRequestError(f"spawn: sandbox.{name} holds a path that is not absolute")
    writable = _strings(value.get("writable", []), "sandbox.writable")
    if not set(writable) <= {"workspace", "tmp"}:
        raise BadRequestError("spawn: sandbox.writable names only workspace and tmp")
    return value


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_EXIT_FIELDS = tuple(f.name for f in fields(ExitRecord))
