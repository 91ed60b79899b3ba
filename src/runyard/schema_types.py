"""The wire format's shared types: labels as requests take them, and the answers' maps that
fail once, not once per entry (the Python client checks a server's answers with the same
models, client_guards.valid, and an answer of a million bad entries made a million
validation errors: gigabytes). Lists stop at their first bad item (`Field(fail_fast=True)`)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StringConstraints, WithJsonSchema

from runyard.bounds import CRON_PATTERN, LABEL_KEY_PATTERN, LINE_PATTERN
from runyard.scheduling.cron import MAX_CRON_LENGTH, cron_problem


def _all(kind: type, name: str) -> BeforeValidator:
    def check(value: Any) -> Any:
        if isinstance(value, dict) and not all(type(v) is kind for v in value.values()):
            raise ValueError(f"every value must be {name}")  # one error for the whole map
        return value

    return BeforeValidator(check)


StrMap = Annotated[dict[str, str], _all(str, "a string")]
IntMap = Annotated[dict[str, int], _all(int, "an integer")]

MAX_LABELS = 32
MAX_LABEL_VALUE = 256
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, StringConstraints(max_length=MAX_LABEL_VALUE, pattern=LINE_PATTERN)]
# Published as propertyNames + additionalProperties: pydantic's default (patternProperties)
# would let a schema reader think any other key is fine too.
Labels = Annotated[
    dict[LabelKey, LabelValue],
    Field(max_length=MAX_LABELS),
    WithJsonSchema({
        "type": "object", "maxProperties": MAX_LABELS,
        "propertyNames": {"pattern": LABEL_KEY_PATTERN},
        "additionalProperties": {"type": "string", "maxLength": MAX_LABEL_VALUE,
                                 "pattern": LINE_PATTERN},
        "description": f"KEY -> VALUE, at most {MAX_LABELS}",
    }),
]  # fmt: skip


def _cron_said(value: Any) -> Any:
    """A cron expression's problem in words, before the pattern's check: the OpenAPI pattern
    (its shape) answered most refusals with the pattern itself, never reaching "has 6 fields,
    not five" or "is not a macro" (a probe)."""
    fits = isinstance(value, str) and len(value) <= MAX_CRON_LENGTH
    if fits and (problem := cron_problem(value)) is not None:
        raise ValueError(f"{value!r}: {problem}")
    return value


Cron = Annotated[
    str,
    BeforeValidator(_cron_said),
    StringConstraints(max_length=MAX_CRON_LENGTH, pattern=CRON_PATTERN),
]
