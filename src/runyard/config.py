"""Server settings: defaults, overridden by RUNYARD_* environment variables, then by flags."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(default=Path(".runyard"), description="runs, logs, the database")
    jobs_dir: Path = Field(default=Path("jobs"), description="one NAME.toml per job")
    host: str = "127.0.0.1"
    database_url: str | None = Field(
        default=None, description="postgresql://… for PostgreSQL; default SQLite in data_dir"
    )
    tokens_file: Path | None = Field(default=None, description="bearer tokens (hashes) with roles")
    max_body_kb: int = Field(default=1024, ge=1, description="request bodies over it get 413")
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="a request's headers must arrive within it, or cut"
    )
    artifact_walk_max: int = Field(
        default=100_000, ge=100, description="directory entries one artifact listing may read"
    )
    artifact_threads: int = Field(default=2, ge=1, le=32, description="threads for listings")
    metrics_public: bool = Field(default=True, description="serve /metrics without a token")
    port: int = Field(default=8000, ge=0, le=65535)
    capacity: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    max_queue: int | None = Field(default=None, ge=1, description="global queue depth")
    jobs_refresh_s: float = Field(default=1.0, ge=0)
    fsync: bool = Field(default=False, description="fsync exit files and the database")
    shutdown_timeout_s: float = Field(default=10.0, gt=0)
    drain: bool = Field(default=False, description="on SIGTERM, wait for running programs")
    drain_timeout_s: float = Field(default=300.0, gt=0, description="then cancel what still runs")
    min_free_mb: int = Field(default=64, ge=0, description="refuse submissions below this")
    db_busy_timeout_ms: int = Field(default=5000, ge=0)
    supervisor_timeout_s: float = Field(
        # below a second, a loaded machine's spawns expire before they are read: re-queued
        default=10.0,
        ge=1.0,
        description="a supervisor request unanswered this long is an error",
    )
    retention_s: float | None = Field(default=None, gt=0, description="keep finished runs")
    retention_interval_s: float = Field(default=60.0, gt=0, description="retention sweep")
    max_upload_mb: int = Field(
        default=1024, ge=1, description="one upload (PUT /v1/uploads) at most, streamed"
    )
    max_uploads_mb: int | None = Field(
        default=20_480, ge=1, description="all uploads together (507 past it); none: no quota"
    )
    upload_ttl_s: float = Field(
        default=86_400.0, gt=0, description="an upload no run uses is removed after this long"
    )
    max_batch: int = Field(default=10_000, ge=1, description="runs one batch may create")
    max_batch_mb: int = Field(
        default=64, ge=1, description="params one batch may store, its runs together (MiB)"
    )
    max_wait_s: float = Field(default=300.0, ge=0, description="bound on Prefer: wait=N")
    heartbeat_s: float = Field(default=15.0, gt=0, description="idle stream keep-alive")
    stream_send_timeout_s: float = Field(
        default=30.0, gt=0,
        description="then drop a watcher; a client taking nothing for 2x this + heartbeat_s is cut",
    )  # fmt: skip
    json_depth_ceiling: int = Field(
        default=32, ge=1, le=128, description="most nesting a job file may allow a json param"
    )
    json_keys_ceiling: int = Field(
        default=10_000, ge=1, description="most keys per object a job file may allow a json param"
    )
    schedule_min_interval_s: float = Field(
        default=1.0, gt=0, description="shortest interval_s a schedule may have"
    )
    max_schedules: int = Field(
        default=1_000, ge=1, description="schedules a server holds (409 past it)"
    )
    stream_buffer_kb: int = Field(default=1024, ge=512, description="per watcher, then lagged")
    log_format: str = Field(default="auto", pattern="^(auto|json|console)$")
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
    lease_s: float = Field(default=15.0, ge=0.5, description="membership lease; renewed at 1/3")
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
    slurm_max_in_flight: int = Field(
        default=1000, ge=1, description="Slurm jobs submitted and not yet ended, at most"
    )
    slurm_submit_per_s: float = Field(default=20.0, gt=0, description="sbatch calls per second")
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
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name in cls.model_fields:
            key = f"RUNYARD_{name.upper()}"
            if key in env:
                values[name] = env[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "runyard.db"

    @property
    def on_postgres(self) -> bool:
        """Whether the store is a PostgreSQL database (a cluster's), not the SQLite file."""
        return (self.database_url or "").startswith(("postgresql://", "postgres://"))
