"""What an executor is asked to start for a claimed attempt: its Launch, from the run and its
job's spec, with only what the executor needs (a local run pays for no cluster placement)."""

from __future__ import annotations

from typing import Any

from runyard import upload_refs
from runyard.execution.base import Launch
from runyard.jobs.spec import JobSpec
from runyard.models import Claim


def launch_of(claim: Claim, spec: JobSpec) -> Launch:
    run = claim.run
    return Launch(
        run_id=run.id,
        attempt=claim.attempt.number,
        command=spec.command,
        params=run.params,
        workspace=spec.workspace,
        env=spec.env,
        timeout_s=spec.timeout_s,
        kill_grace_s=spec.kill_grace_s,
        limits=_limits(spec),
        run_as=spec.run_as,
        executor=spec.executor,
        **(_placement(spec) if spec.executor != "local" else {}),
        inputs=_inputs(spec, run.params) if spec.has_files else None,
        input_paths=_input_paths(spec) if spec.has_files else None,
        sandbox=spec.sandbox.model_dump() if spec.sandbox is not None else None,
    )


def _limits(spec: JobSpec) -> dict[str, object] | None:
    """The job's limits, or None when it sets none (on_log_cap alone limits nothing)."""
    limits = spec.limits.model_dump(exclude_none=True)
    return limits if set(limits) - {"on_log_cap"} else None


def _placement(spec: JobSpec) -> dict[str, Any]:
    """What a cluster executor places the run by (nothing a local run pays for)."""
    return {
        "slurm": spec.slurm.model_dump() if spec.slurm is not None else {},
        "resources": spec.resources.model_dump(exclude_none=True),
    }


def _input_paths(spec: JobSpec) -> dict[str, str]:
    return {n: d.path for n, d in spec.params.items() if d.type == "file" and d.path is not None}


def _inputs(spec: JobSpec, params: dict[str, Any]) -> dict[str, str]:
    """The run's file params: name -> `ID` or `ID/NAME` (the value is `upload:ID[/NAME]`,
    checked at submit; execution/inputs.py stages the file under NAME, if given)."""
    return {
        name: str(params[name])[len(upload_refs.PREFIX) :]
        for name, decl in spec.params.items()
        if decl.type == "file" and name in params
    }
