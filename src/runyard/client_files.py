"""Which params of a job take a file: only those may be given one (a `Path`, the CLI's
`-p NAME=@PATH`), uploaded and sent as `upload:ID`. Any other param took the upload's id as
its text and ran with it, silently (a probe: `-p text=@/etc/hostname` on a str param ran the
program with `upload:427f93ca…`)."""

from __future__ import annotations

from typing import Any

from runyard.jobs.params import UPLOAD_REF


def not_file_params(params_schema: dict[str, Any], names: list[str]) -> list[str]:
    """Those of `names` that the job's params schema does not declare as file params (a
    file param's value is `upload:ID`: its property has that pattern)."""
    return [n for n in names if property_of(params_schema, n).get("pattern") != UPLOAD_REF]


def property_of(params_schema: dict[str, Any], name: str) -> dict[str, Any]:
    """A param's JSON Schema in its job's params schema; {} if the job declares no such param
    (or the server sent something else)."""
    properties = params_schema.get("properties")
    prop = properties.get(name) if isinstance(properties, dict) else None
    return prop if isinstance(prop, dict) else {}
