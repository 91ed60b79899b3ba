"""The minimal environment a program gets: never the server's own (tokens, database URLs)."""

from __future__ import annotations

import os
from collections.abc import Mapping

PASSED_THROUGH = ("PATH", "HOME", "LANG", "TZ")
DEFAULTS = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


def base_env(server_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """What every program inherits from the server: a few harmless variables, or defaults."""
    source = os.environ if server_env is None else server_env
    env = {name: source[name] for name in PASSED_THROUGH if name in source}
    for name, value in DEFAULTS.items():
        env.setdefault(name, value)
    return env


def program_env(
    *,
    run_id: str,
    attempt: int,
    workspace: str,
    outputs: str,
    params_file: str,
    progress: str,
    job_env: Mapping[str, str],
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """`base` (base_env(), read once by the caller) with the job's variables and the run's."""
    env = dict(base_env() if base is None else base)
    env.update(job_env)
    env["RUNYARD_RUN_ID"] = run_id
    env["RUNYARD_ATTEMPT"] = str(attempt)
    env["RUNYARD_ATTEMPT_KEY"] = f"{run_id}.{attempt}"
    env["RUNYARD_WORKSPACE"] = workspace
    env["RUNYARD_PARAMS_FILE"] = params_file
    env["RUNYARD_PROGRESS_FILE"] = progress
    env["RUNYARD_ARTIFACTS_DIR"] = outputs
    return env
