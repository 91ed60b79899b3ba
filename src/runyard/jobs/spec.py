"""A job as declared in `jobs/NAME.toml`: what may be run, how, and with which params."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from runyard import fastjson
from runyard.bounds import json_problem
from runyard.errors import field_path
from runyard.jobs import input_places, retry_on, run_needs
from runyard.jobs.argv_bounds import check_argv, fixed_problem, may_pass_limits
from runyard.jobs.chat import OpenAIOptions
from runyard.jobs.params import (
    JsonCeiling,
    ParamDecl,
    ParamError,
    build_params_model,
    check_json,
    params_schema,
    validate_params,
)
from runyard.jobs.reading import MAX_DEPTH, UnreadableError, read_job_toml
from runyard.jobs.sandbox import Sandbox, SandboxPolicy, check
from runyard.jobs.template import BUILTINS, TemplateError, placeholders, render

JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_PARAMS = 256
MAX_SCHEMA_BYTES = 256 * 1024  # a job file's own bound too (reading.py)


class Backoff(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    base_s: float = Field(default=1.0, ge=0, le=86400)
    factor: float = Field(default=2.0, ge=1, le=100)
    max_s: float = Field(default=300.0, ge=0, le=86400 * 7)
    jitter: float = Field(default=0.1, ge=0, le=1)


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    cpus: float | None = Field(default=None, gt=0)
    gpus: int | None = Field(default=None, ge=0)
    memory_mb: int | None = Field(default=None, gt=0)


# sbatch options a job file may add beyond its [slurm] fields: placement and scheduling only,
# never what would move the job's output, identity or script (those are runyard's)
SLURM_OPTIONS = frozenset({
    "constraint", "exclude", "nodelist", "nodes", "ntasks", "ntasks-per-node", "mem-per-cpu",
    "gres", "licenses", "reservation", "exclusive", "comment", "wckey", "nice",
    "cpus-per-gpu", "gpus-per-node", "hint", "mail-type", "mail-user", "begin", "deadline",
})  # fmt: skip
SLURM_NAME = re.compile(r"^[A-Za-z0-9_.:+-]{1,64}$")
SLURM_VALUE = re.compile(r"^[A-Za-z0-9_.,:=+@/%\[\]-]{0,256}$")


class SlurmOptions(BaseModel):
    """A job's [slurm] table: where its runs go on the cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    partition: str | None = Field(default=None, pattern=SLURM_NAME.pattern)
    account: str | None = Field(default=None, pattern=SLURM_NAME.pattern)
    qos: str | None = Field(default=None, pattern=SLURM_NAME.pattern)
    requeue: bool = Field(default=False, description="Slurm may requeue it (preemption)")
    options: dict[str, str] = Field(default_factory=dict, description="allowlisted sbatch options")

    @field_validator("options")
    @classmethod
    def _allowlisted(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if name not in SLURM_OPTIONS:
                allowed = ", ".join(sorted(SLURM_OPTIONS))
                raise ValueError(f"sbatch option {name!r} is not allowed (allowed: {allowed})")
            if not SLURM_VALUE.fullmatch(value):
                raise ValueError(f"sbatch option {name!r} has characters not allowed")
        return v


# The most an rlimit holds (a signed 64-bit count), in the units of the limits below: a
# value past it loaded cleanly, then failed every run inside the child's setrlimit.
RLIMIT_MAX = 2**63 - 1
RLIMIT_MAX_MB = RLIMIT_MAX // 2**20


class Limits(BaseModel):
    """Enforced on the program with rlimits set before it starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    memory_mb: int | None = Field(
        default=None, gt=0, le=RLIMIT_MAX_MB, description="address space (RLIMIT_AS)"
    )
    cpu_s: int | None = Field(
        default=None, gt=0, le=RLIMIT_MAX - 5, description="CPU seconds (RLIMIT_CPU)"
    )  # its hard limit is 5 s above
    open_files: int | None = Field(default=None, ge=8, le=1_048_576, description="RLIMIT_NOFILE")
    max_log_mb: float | None = Field(
        default=None, gt=0, le=RLIMIT_MAX_MB,
        description="cap on the log (RLIMIT_FSIZE: every file it writes)",
    )  # fmt: skip
    on_log_cap: Literal["cut", "kill"] = "cut"


# The validation context of a spec read back from a run (JobSpec.from_stored)
STORED = MappingProxyType({"stored": True})


class JobSpec(BaseModel):
    """The validated contents of one job file. Unknown keys are load errors, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    command: list[str] = Field(min_length=1)
    params: dict[str, ParamDecl] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0)
    kill_grace_s: float = Field(default=10.0, ge=0, le=3600)
    max_attempts: int = Field(default=1, ge=1, le=100)
    # exit codes 1..255, "lost", "timeout", signal names: checked item by item (jobs/retry_on.py)
    retry_on: list[int | str] = Field(default_factory=lambda: list[int | str](["lost"]))
    backoff: Backoff = Field(default_factory=Backoff)
    concurrency: int | None = Field(default=None, ge=1)
    priority: int = Field(default=0, ge=-1000, le=1000)
    max_queue: int | None = Field(default=None, ge=1)  # 0 would refuse every run: none queues
    workspace: str = "empty"
    artifacts: list[str] = Field(default_factory=lambda: ["outputs/**"])
    env: dict[str, str] = Field(default_factory=dict)
    retention_s: float | None = Field(default=None, gt=0, description="keep finished runs")
    resources: Resources = Field(default_factory=Resources)
    limits: Limits = Field(default_factory=Limits)
    run_as: str | None = Field(default=None, pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    executor: Literal["local", "slurm"] = "local"
    slurm: SlurmOptions | None = None
    openai: OpenAIOptions | None = None
    sandbox: Sandbox | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not JOB_NAME.fullmatch(v):
            raise ValueError("job names are letters, digits, '_', '-', '.' (at most 64)")
        return v

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> JobSpec:
        """A spec stored with a run: what a load accepted then, read back as it was, though an
        older version's load took what this one refuses (`retry_on = [0]`)."""
        return cls.model_validate(data, context=STORED)

    @field_validator("retry_on", mode="before")
    @classmethod
    def _retry_on(cls, v: Any, info: ValidationInfo) -> Any:
        stored = isinstance(info.context, Mapping) and info.context.get("stored") is True
        return retry_on.check(v, stored=stored)

    @field_validator("params")
    @classmethod
    def _param_names(cls, v: dict[str, ParamDecl]) -> dict[str, ParamDecl]:
        for name in v:
            if not PARAM_NAME.fullmatch(name):
                raise ValueError(f"param name {name!r} is not an identifier")
            if name in BUILTINS:
                raise ValueError(f"param name {name!r} is reserved for runyard's own values")
        if (why := input_places.overlap(v)) is not None:  # cannot both be staged
            raise ValueError(why)
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not ENV_NAME.fullmatch(key) or key.startswith("RUNYARD_"):
                raise ValueError(f"env name {key!r} is invalid or reserved")
        return v

    @field_validator("artifacts")
    @classmethod
    def _artifacts(cls, v: list[str]) -> list[str]:
        for pattern in v:
            if pattern.startswith("/") or ".." in pattern.split("/") or "\0" in pattern:
                raise ValueError(f"artifact pattern {pattern!r} must stay inside the workspace")
        return v

    @field_validator("workspace")
    @classmethod
    def _workspace(cls, v: str) -> str:
        if v != "empty" and not v.startswith(("copy:", "git:")):
            raise ValueError("workspace is `empty`, `copy:DIR` or `git:REPO[@REF]`")
        if v.startswith(("copy:", "git:")) and not v.split(":", 1)[1]:
            raise ValueError("workspace source is empty")
        return v

    @property
    def has_files(self) -> bool:
        """Whether a run of it takes file params (staged before its program starts)."""
        return any(decl.type == "file" for decl in self.params.values())

    @model_validator(mode="after")
    def _executor(self) -> JobSpec:
        if self.slurm is not None and self.executor != "slurm":
            raise ValueError('a [slurm] table needs executor = "slurm"')
        if self.executor == "slurm" and (
            self.run_as or self.limits.model_dump(exclude_none=True).keys() - {"on_log_cap"}
        ):
            raise ValueError("run_as and [limits] are local; on Slurm use resources and [slurm]")
        if self.executor == "slurm" and self.sandbox is not None:
            raise ValueError(
                "[sandbox] is local: the Slurm executor runs no sandbox (docs/slurm.md)"
            )
        return self

    @model_validator(mode="after")
    def _openai(self) -> JobSpec:
        if self.openai is not None:
            self.openai.check(self.params)
        return self

    @model_validator(mode="after")
    def _placeholders(self) -> JobSpec:
        for element in self.command:
            try:
                names = placeholders(element)
            except TemplateError as exc:
                raise ValueError(str(exc)) from None
            for name in names:
                if name not in self.params and name not in BUILTINS:
                    raise ValueError(f"command placeholder {{{name}}} names no declared param")
        return self


@dataclass(frozen=True, slots=True)
class Job:
    """A loaded job: its spec plus what runyard derives from it once per load."""

    spec: JobSpec
    path: Path
    params_model: type[BaseModel]
    schema: dict[str, Any]
    snapshot: dict[str, Any]  # the spec as JSON data, stored with each run (made once per load)
    # whether the largest values its params allow could make its command too long to exec:
    # then each submission's command is rendered and measured (argv_bounds.py)
    argv_bound: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    def validate_params(self, params: dict[str, Any]) -> dict[str, Any]:
        values = validate_params(self.params_model, self.spec.params, params)
        if self.argv_bound:
            spec = self.spec
            check_argv(spec.command, spec.params, spec.env, values, str(self.path.parent))
        return values

    def argv(self, values: dict[str, Any]) -> list[str]:
        return render(self.spec.command, values)


MAX_LOAD_ERROR = 4000  # characters of a load error: a file of thousands of mistakes says so
MAX_PROBLEMS = 10  # problems named in one, the rest counted


class LoadError(Exception):
    def __init__(
        self, path: Path, message: str, *, of_host: bool = False, passing: bool = False
    ) -> None:
        if len(message) > MAX_LOAD_ERROR:  # listed, logged and shown in every /v1/jobs
            message = message[: MAX_LOAD_ERROR - 1] + "\u2026"
        super().__init__(f"{path.name}: {message}")
        self.path = path
        self.message = message
        self.of_host = of_host  # the host's fault (no bwrap, a missing bind): looked at again
        # a fault of this moment (no descriptor left, EIO): the file's last load stands
        self.passing = passing


def _describe(exc: ValidationError) -> str:
    """The first MAX_PROBLEMS problems, and how many more (a probe: 250 KB of unknown keys
    made a 1.1 MB error, listed whole by every `GET /v1/jobs` and logged at each edit)."""
    errors = exc.errors()
    parts = []
    for err in errors[:MAX_PROBLEMS]:
        loc = field_path(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    if len(errors) > MAX_PROBLEMS:
        parts.append(f"and {len(errors) - MAX_PROBLEMS} more")
    return "; ".join(parts)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return read_job_toml(path)
    except UnreadableError as exc:
        raise LoadError(path, exc.message, passing=exc.passing) from None


def _check_defaults(path: Path, spec: JobSpec, model: type[BaseModel]) -> None:
    try:
        model.model_validate({})
    except ValidationError as exc:
        # required params are missing from {} by design; any other error is a bad default
        bad = [e for e in exc.errors() if e["type"] != "missing"]
        if bad:
            where = ", ".join(f"params.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in bad)
            raise LoadError(path, f"a default does not fit its param ({where})") from None
    try:
        for name, decl in spec.params.items():
            if decl.type == "json" and "default" in decl.model_fields_set:
                check_json(name, decl, decl.default)
    except ParamError as exc:
        raise LoadError(path, f"a default does not fit its param ({exc})") from None


def load_job(
    path: Path, ceiling: JsonCeiling | None = None, sandbox: SandboxPolicy | None = None
) -> Job:
    """Parse and validate one job file. Every problem is a LoadError naming the file.
    `sandbox`: the server's policy (require_sandbox, its own directories, bubblewrap)."""
    data = _read_toml(path)
    if "name" in data:
        raise LoadError(path, "`name` comes from the file name; remove it")
    try:
        spec = JobSpec.model_validate({"name": path.stem, **data})
    except ValidationError as exc:
        raise LoadError(path, _describe(exc)) from None
    spec = _sandboxed(path, spec, sandbox or SandboxPolicy())
    if (need := run_needs.unmet(spec, path.parent)) is not None:
        raise LoadError(path, need[0], of_host=need[1])
    _check_bounds(path, spec, ceiling or JsonCeiling())
    model = build_params_model(spec.name, spec.params)
    _check_defaults(path, spec, model)
    schema = params_schema(model)
    if (size := len(fastjson.dumps(schema))) > MAX_SCHEMA_BYTES:
        raise LoadError(
            path, f"its params' schema would take {size} bytes, over {MAX_SCHEMA_BYTES} (it is "
            "in every listing of the jobs): fewer params, or fewer distinct json bounds",
        )  # fmt: skip
    return Job(
        spec=spec, path=path, params_model=model, schema=schema,
        snapshot=spec.model_dump(mode="json"),
        argv_bound=may_pass_limits(spec.command, spec.params, spec.env),
    )  # fmt: skip


def _check_bounds(path: Path, spec: JobSpec, ceiling: JsonCeiling) -> None:
    """What a load refuses and a spec stored with a run (`from_stored`) keeps: an older
    version's load took it."""
    if len(spec.params) > MAX_PARAMS:
        # each is in every listing of the jobs and every run's validation (a probe: 10,000
        # params took 1.2 s to load, 5,000 json ones made a 63 MB listing)
        raise LoadError(path, f"params: {len(spec.params)} of them, over {MAX_PARAMS}")
    for name, decl in spec.params.items():
        if (problem := decl.load_problem(name)) is not None:
            raise LoadError(path, problem)
        if decl.type == "json":
            try:
                decl.check_ceiling(name, ceiling)
            except ValueError as exc:
                raise LoadError(path, str(exc)) from None
    # The spec is stored with every run and its strings reach argv and the environment: a
    # control character (NUL above all) would fail each submit, so it fails the load instead.
    found = json_problem(spec.model_dump(mode="json"), max_depth=MAX_DEPTH, max_keys=100_000)
    if found is not None:
        raise LoadError(path, f"{found[0]}: {found[1]}")
    if (never := fixed_problem(spec.command, spec.env)) is not None:
        raise LoadError(path, never)


def _sandboxed(path: Path, spec: JobSpec, policy: SandboxPolicy) -> JobSpec:
    """The spec with the sandbox it runs in: its own, or the default one the server requires.
    A sandbox this host cannot give is the job's load error, never a run that fails later."""
    if spec.sandbox is None and policy.required:
        if spec.executor == "slurm":
            raise LoadError(path, "the server requires a sandbox (require_sandbox); the Slurm "
                            "executor runs no sandbox (docs/slurm.md)")  # fmt: skip
        spec = spec.model_copy(update={"sandbox": Sandbox()})
    if spec.sandbox is not None and (why := check(spec.sandbox, policy)) is not None:
        raise LoadError(path, why, of_host=True)
    return spec
