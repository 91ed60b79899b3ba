"""What starting an attempt takes, whoever starts it (the supervisor, or a Slurm job's
script): its argv rendered from the job's command, its environment, its files and paths."""

from __future__ import annotations

from typing import Any

from runyard import fastjson
from runyard.execution.base import Launch
from runyard.execution.environment import program_env
from runyard.execution.layout import AttemptFiles
from runyard.execution.protocol import SpawnRequest
from runyard.jobs.template import render
from runyard.models import attempt_key


def spawn_request(
    spec: Launch,
    runs_dir: str,
    jobs_dir: str,
    base: dict[str, str],
    lease: dict[str, Any] | None = None,
    staged: dict[str, dict[str, Any]] | None = None,
    hidden: tuple[str, ...] = (),
) -> SpawnRequest:
    """What starting `spec` takes, whoever starts it: its argv, environment, files, paths.
    `staged`: its file inputs (inputs.py); `{NAME}` is the staged file's path. `hidden`: the
    server's directories, never seen from a sandbox."""
    files = AttemptFiles.of(runs_dir, spec.run_id, spec.attempt)
    params = {**spec.params, **staged} if staged else spec.params
    values = {
        **spec.params,
        **{name: entry["path"] for name, entry in (staged or {}).items()},
        "jobs_dir": jobs_dir,
        "workspace": files.workspace,
        "run_id": spec.run_id,
        "attempt": spec.attempt,
    }
    env = program_env(
        run_id=spec.run_id, attempt=spec.attempt, workspace=files.workspace,
        outputs=files.outputs, params_file=files.params, progress=files.progress,
        job_env=spec.env, base=base,
    )  # fmt: skip
    return SpawnRequest(
        key=attempt_key(spec.run_id, spec.attempt),
        argv=render(spec.command, values),
        cwd=files.workspace,
        env=env,
        log=files.log,
        exit=files.exit,
        # parents first: one mkdir(2) each, never makedirs' walk up a missing parent
        mkdirs=[files.root, files.workspace, files.outputs],
        files={files.params: _params_text(params)},
        timeout_s=spec.timeout_s,
        kill_grace_s=spec.kill_grace_s,
        limits=spec.limits or {},
        run_as=spec.run_as,
        progress=files.progress,
        lease=lease,  # None with one server: never fenced
        sandbox={**spec.sandbox, "hide": list(hidden)} if spec.sandbox is not None else None,
    )


def _params_text(params: dict[str, Any]) -> str:
    """params.json as the program reads it: indented, UTF-8."""
    return fastjson.dumps(params, indent=True).decode() + "\n"
