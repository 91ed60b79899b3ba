"""Idempotency keys: what a request sent again under its key must ask for, to be answered
with what the key made rather than a 409."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from runyard.models import Run

_ABSENT = object()  # a param the stored run does not have


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
    since): what the request gives is what the run has (a param left out took its default
    then, a priority left out the job's)."""
    given = json_numbers({"job": job, "labels": labels, "params": params})
    had = json_numbers({"job": run.job, "labels": run.labels,
                        "params": {k: run.params.get(k, _ABSENT) for k in params}})  # fmt: skip
    return given == had and (priority is None or priority == run.priority)
