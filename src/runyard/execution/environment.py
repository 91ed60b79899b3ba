"""The minimal environment a program gets: never the server's own (tokens, database URLs)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from runyard.execution.layout import RunPaths

PASSED_THROUGH = ("PATH", "HOME", "LANG", "TZ")
DEFAULTS = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


def program_env(
    *,
    run_id: str,
    attempt: int,
    paths: RunPaths,
    job_env: Mapping[str, str],
    server_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    source = os.environ if server_env is None else server_env
    env = {name: source[name] for name in PASSED_THROUGH if name in source}
    for name, value in DEFAULTS.items():
        env.setdefault(name, value)
    env.update(job_env)
    env.update(
        {
            "RUNYARD_RUN_ID": run_id,
            "RUNYARD_ATTEMPT": str(attempt),
            "RUNYARD_ATTEMPT_KEY": f"{run_id}.{attempt}",
            "RUNYARD_WORKSPACE": str(paths.workspace),
            "RUNYARD_PARAMS_FILE": str(paths.params_file),
            "RUNYARD_PROGRESS_FILE": str(paths.progress_file(attempt)),
            "RUNYARD_ARTIFACTS_DIR": str(paths.artifacts_dir),
        }
    )
    return env
