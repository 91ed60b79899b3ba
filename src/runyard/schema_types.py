"""The wire format's shared types: labels as requests take them, and the answers' maps that
fail once, not once per entry (the Python client checks a server's answers with the same
models, client_guards.valid, and an answer of a million bad entries made a million
validation errors: gigabytes). Lists stop at their first bad item (`Field(fail_fast=True)`)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StringConstraints, WithJsonSchema

from runyard.bounds import CRON_PATTERN, LABEL_KEY_PATTERN, LINE_PATTERN
from runyard.scheduling.cron import MAX_CRON_LENGTH


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


# A cron expression: its shape published (the pattern), its check the scheduler's own
# (scheduling/timing.py), which refuses all the pattern does and says what is wrong, with the
# field named where it was sent. Checked by the pattern first, most refusals were the pattern
# itself ("String should match pattern '^(@(yearly|…"): never "has 6 fields, not five" nor
# "is not a macro" (a probe).
Cron = Annotated[
    str,
    StringConstraints(max_length=MAX_CRON_LENGTH),
    WithJsonSchema({"type": "string", "maxLength": MAX_CRON_LENGTH, "pattern": CRON_PATTERN}),
]
