"""Server settings: defaults, overridden by RUNYARD_* environment variables, then by flags.

Every number is bounded by the model, so that a value the server cannot use is refused at
start, named as it was given, rather than failing later in whatever first uses it."""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

INT64_MAX = 2**63 - 1  # what SQLite's INTEGER, PostgreSQL's bigint and a byte count hold
# Linux's most process ids (PID_MAX_LIMIT): more runs at once than that can never be running,
# and PostgreSQL keeps capacity in a 32-bit INTEGER column
MAX_CAPACITY = 4_194_304
SQLITE_MS_MAX = 2**31 - 1  # SQLite's busy timeout is a C int: a larger one silently became 0


def _not_nan(value: object) -> object:
    """NaN compares false with everything: as a duration it would be no bound and no wait."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return value  # not a number at all: the float type says so
    if math.isnan(number):
        raise ValueError("must be a number, not nan")
    return value


def _host(value: object) -> object:
    """An address to bind as a URL writes it is taken: "[::1]" is "::1". Anything that is
    no host name or address (a port, a scheme, a path, a space) is refused, named."""
    if not isinstance(value, str):
        return value  # the str type says so
    if value.startswith("[") and value.endswith("]"):
        inner = value[1:-1]
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise ValueError("brackets hold an IPv6 address, such as [::1]") from None
        return inner
    if not value:
        return value  # the default's: every address (uvicorn's and asyncio's "")
    if len(value) > 253:  # the longest a DNS name is
        raise ValueError("must be at most 253 characters")
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(value)
        return value
    if "://" in value or "/" in value:
        raise ValueError("must be a host name or an address, not a URL (127.0.0.1, ::1, myhost)")
    if value.count(":") == 1:
        raise ValueError("must be a host name or an address without a port (the port: --port)")
    if not value.isascii() or not all(c.isalnum() or c in "-._" for c in value):
        raise ValueError("must be a host name (letters, digits, '-', '.') or an IP address")
    return value


# Floats are finite unless declared otherwise (model_config). `OrNever` is a duration or a
# rate where inf means "never" or "no bound" and every use of it was checked to take it so
# (a lease that never lapses, an upload never removed, a wait without limit).
OrNever = Annotated[float, Field(allow_inf_nan=True), BeforeValidator(_not_nan)]
Count = Annotated[int, Field(le=INT64_MAX)]
KiB = Annotated[int, Field(le=INT64_MAX // 2**10)]  # its bytes still a 64-bit count
MiB = Annotated[int, Field(le=INT64_MAX // 2**20)]


class SettingsError(ValueError):
    """Settings that cannot be used: one line per problem, each naming the setting as it was
    given (its RUNYARD_* variable or its flag) and what it must be."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    data_dir: Path = Field(default=Path(".runyard"), description="runs, logs, the database")
    jobs_dir: Path = Field(default=Path("jobs"), description="one NAME.toml per job")
    host: Annotated[str, BeforeValidator(_host)] = "127.0.0.1"
    database_url: str | None = Field(
        default=None, description="postgresql://… for PostgreSQL; default SQLite in data_dir"
    )
    tokens_file: Path | None = Field(default=None, description="bearer tokens (hashes) with roles")
    max_body_kb: KiB = Field(default=1024, ge=1, description="request bodies over it get 413")
    header_timeout_s: OrNever = Field(
        default=10.0, gt=0, description="a request's headers must arrive within it, or cut"
    )
    artifact_walk_max: Count = Field(
        default=100_000, ge=100, description="directory entries one artifact listing may read"
    )
    artifact_threads: int = Field(default=2, ge=1, le=32, description="threads for listings")
    max_requests: int | None = Field(
        default=None, ge=1, le=1_000_000,
        description="requests at once, past which 503 (default: a quarter of what the descriptor "
        "limit allows)",
    )  # fmt: skip
    max_connections: int | None = Field(
        default=None, ge=2, le=10_000_000,
        description="connections open at once; past it the one idle longest is closed, or, "
        "none idle, the new one refused with 503 (default: half what the descriptor limit "
        "allows)",
    )  # fmt: skip
    max_connections_per_client: int | None = Field(
        default=None, ge=1, le=10_000_000,
        description="connections open at once from one address, past which 503 (default: "
        "half of max_connections)",
    )  # fmt: skip
    metrics_public: bool = Field(default=True, description="serve /metrics without a token")
    port: int = Field(default=8000, ge=0, le=65535)
    capacity: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=MAX_CAPACITY)
    max_queue: Count | None = Field(default=None, ge=1, description="global queue depth")
    jobs_refresh_s: OrNever = Field(default=1.0, ge=0, description="inf: read the jobs once")
    fsync: bool = Field(default=False, description="fsync exit files and the database")
    shutdown_timeout_s: float = Field(default=10.0, gt=0)  # finite: a stop must end
    drain: bool = Field(default=False, description="on SIGTERM, wait for running programs")
    drain_timeout_s: OrNever = Field(default=300.0, gt=0, description="then cancel what still runs")
    min_free_mb: MiB = Field(default=64, ge=0, description="refuse submissions below this")
    db_busy_timeout_ms: int = Field(default=5000, ge=0, le=SQLITE_MS_MAX)
    supervisor_timeout_s: OrNever = Field(
        # below a second, a loaded machine's spawns expire before they are read: re-queued
        default=10.0,
        ge=1.0,
        description="a supervisor request unanswered this long is an error",
    )
    supervisor_stopped_grace_s: float = Field(
        # finite: a supervisor stopped (SIGSTOP) by one of its programs holds every run
        default=30.0,
        gt=0,
        le=86400,
        description="a supervisor found stopped this long is continued (SIGCONT)",
    )
    retention_s: OrNever | None = Field(default=None, gt=0, description="keep finished runs")
    retention_interval_s: OrNever = Field(default=60.0, gt=0, description="retention sweep")
    max_upload_mb: MiB = Field(
        default=1024, ge=1, description="one upload (PUT /v1/uploads) at most, streamed"
    )
    max_uploads_mb: MiB | None = Field(
        default=20_480, ge=1, description="all uploads together (507 past it); none: no quota"
    )
    upload_ttl_s: OrNever = Field(
        default=86_400.0, gt=0, description="an upload no run uses is removed after this long"
    )
    max_batch: Count = Field(default=10_000, ge=1, description="runs one batch may create")
    max_batch_mb: MiB = Field(
        default=64, ge=1, description="params one batch may store, its runs together (MiB)"
    )
    max_wait_s: OrNever = Field(default=300.0, ge=0, description="bound on Prefer: wait=N")
    heartbeat_s: OrNever = Field(default=15.0, gt=0, description="idle stream keep-alive")
    stream_send_timeout_s: OrNever = Field(
        default=30.0, gt=0,
        description="then drop a watcher; a client taking nothing for 2x this + heartbeat_s is cut",
    )  # fmt: skip
    json_depth_ceiling: int = Field(
        default=32, ge=1, le=128, description="most nesting a job file may allow a json param"
    )
    json_keys_ceiling: Count = Field(
        default=10_000, ge=1, description="most keys per object a job file may allow a json param"
    )
    schedule_min_interval_s: float = Field(
        # no schedule's interval_s may exceed a leap year (schemas.py): a larger floor, or
        # inf (which also broke /openapi.json, where it is the published minimum), forbids all
        default=1.0,
        gt=0,
        le=366 * 86400,
        description="shortest interval_s a schedule may have",
    )
    max_schedules: Count = Field(
        default=1_000, ge=1, description="schedules a server holds (409 past it)"
    )
    stream_buffer_kb: KiB = Field(default=1024, ge=512, description="per watcher, then lagged")
    log_format: Literal["auto", "json", "console"] = "auto"
    require_sandbox: bool = Field(
        default=False,
        description="run every job in a bubblewrap sandbox; a job without a [sandbox] table "
        "gets the default one (docs/security.md)",
    )
    sandbox_check_s: float = Field(
        default=30.0, gt=0, le=3600,
        description="readiness probes bubblewrap this often while a job is sandboxed",
    )  # fmt: skip
    # several servers over one PostgreSQL (docs/scale-out.md)
    server_id: str = Field(
        default_factory=socket.gethostname, min_length=1, max_length=64,
        pattern=r"^[A-Za-z0-9._-]+$", description="this server's identity in the cluster",
    )  # fmt: skip
    advertise_url: str | None = Field(
        default=None, description="how other servers reach this one (default http://host:port)"
    )
    lease_s: OrNever = Field(default=15.0, ge=0.5, description="membership lease; renewed at 1/3")
    reap_margin_s: float = Field(
        default=5.0, ge=0.2, le=3600,
        description="others reap a lapsed lease's attempts this long after it expired; its "
        "supervisor stops them first (SIGTERM, SIGKILL half of it later): cover clock skew",
    )  # fmt: skip
    # running programs on Slurm (docs/slurm.md)
    slurm_shared_dir: Path | None = Field(
        default=None,
        description="a directory the Slurm compute nodes also see: with it, run directories "
        'live there and jobs may say executor = "slurm"',
    )
    slurm_poll_s: float = Field(
        default=5.0, ge=0.05, le=600, description="one squeue per period for all our jobs"
    )
    slurm_max_in_flight: Count = Field(
        default=1000, ge=1, description="Slurm jobs submitted and not yet ended, at most"
    )
    slurm_submit_per_s: OrNever = Field(
        default=20.0, gt=0, description="sbatch calls per second (inf: no limit)"
    )
    slurm_exit_grace_s: float = Field(
        default=30.0, ge=0, le=3600,
        description="after Slurm says a job ended, wait this long for its exit file (shared "
        "filesystems lag) before the attempt is lost",
    )  # fmt: skip
    cluster_secret: str | None = Field(
        default=None, min_length=16, description="credential servers use to proxy to each other"
    )

    @property
    def url(self) -> str:
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        host = socket.gethostname() if self.host in ("0.0.0.0", "::") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        flags: Mapping[str, str] | None = None,
        **overrides: object,
    ) -> Settings:
        """The settings from `environ` (os.environ) and `overrides` (None: not given); a value
        that cannot be used raises SettingsError, naming its variable, or its flag (`flags`:
        field name -> the flag the override came from)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        given: dict[str, str] = {}
        for name in cls.model_fields:
            key = f"RUNYARD_{name.upper()}"
            if key in env:
                values[name] = env[key]
                given[name] = f"{key}={_shown(env[key])}"
        for name, value in overrides.items():
            if value is not None:
                values[name] = value
                flag = (flags or {}).get(name, name)
                given[name] = f"{flag} {_shown(value)}"
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise SettingsError(problems_of(exc, given)) from None

    @property
    def database_path(self) -> Path:
        return self.data_dir / "runyard.db"

    @property
    def on_postgres(self) -> bool:
        """Whether the store is a PostgreSQL database (a cluster's), not the SQLite file."""
        return (self.database_url or "").startswith(("postgresql://", "postgres://"))


def _shown(value: object) -> str:
    """A value as the user wrote it, quoted when it would not read back as one word."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)  # a float flag's "0" arrives as 0.0
    text = str(value)
    if text and text.isprintable() and " " not in text and len(text) <= 80:
        return text
    return repr(text[:80])


# pydantic's wording where it would not tell an operator what to write
_SAID = {
    "bool_parsing": "must be true or false (or 1/0, yes/no, on/off)",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
}


def problems_of(exc: ValidationError, given: Mapping[str, str]) -> list[str]:
    """One line per problem: the setting as it was given (`given`: field -> `RUNYARD_X=v` or
    `--flag v`), then what it must be."""
    return [f"{_named(error, given)}: {_must(error)}" for error in exc.errors()]


def _named(error: ErrorDetails, given: Mapping[str, str]) -> str:
    field = str(error["loc"][0]) if error["loc"] else ""
    if field in given:
        return given[field]
    # a default that does not fit (server_id from a host name it cannot take)
    return f"RUNYARD_{field.upper()} (not set; its default {_shown(error['input'])})"


def _must(error: ErrorDetails) -> str:
    if error["type"] in _SAID:
        return _SAID[error["type"]]
    bound = error.get("ctx") or {}
    if error["type"] == "greater_than_equal":
        return f"must be at least {bound['ge']}"
    if error["type"] == "less_than_equal":
        return f"must be at most {bound['le']}"
    message = error["msg"].removeprefix("Value error, ")
    for start in ("Input should", "String should", "Value should"):
        if message.startswith(start):
            return "must" + message.removeprefix(start)
    return message
