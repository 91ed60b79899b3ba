"""Idempotency keys: what a request sent again under its key must ask for, to be answered
with what the key made rather than a 409."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from runyard.models import Run


def request_hash(
    job: str, params: dict[str, Any], priority: int | None, labels: dict[str, str]
) -> str:
    canonical = json.dumps(
        {"job": job, "params": params, "priority": priority, "labels": labels},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def json_numbers(value: Any) -> Any:
    """`value` with each whole float as its integer, where a double holds every integer (as
    a param's value is read, jobs/params.py `_whole`): JSON has one kind of number."""
    if type(value) is float and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_numbers(v) for v in value]
    return value


def asks_for(
    run: Run, job: str, params: dict[str, Any], priority: int | None, labels: dict[str, str]
) -> bool:
    """Whether a request asks for `run`, read without its job (its file removed or broken
    since): its params completed with the defaults of the job as the run stored it, the
    priority left out the job's then, compared as JSON (`true` is no `1`)."""
    declared = run.spec.get("params") if isinstance(run.spec, dict) else None
    defaults = {
        name: decl.get("default")
        for name, decl in (declared if isinstance(declared, dict) else {}).items()
        if isinstance(decl, dict)
    }
    resolved = run.spec.get("priority", 0) if priority is None else priority
    asked = {"job": job, "labels": labels, "params": {**defaults, **params}}
    had = {"job": run.job, "labels": run.labels, "params": run.params}
    return _canonical(asked) == _canonical(had) and resolved == run.priority


def _canonical(value: Any) -> str:
    return json.dumps(json_numbers(value), sort_keys=True, separators=(",", ":"), default=repr)
