"""Types of the answers' maps that fail once, not once per entry: the Python client checks a
server's answers with the same models (client_guards.valid), and an answer of a million bad
entries made a million validation errors (gigabytes). Lists stop at their first bad item
(`Field(fail_fast=True)`)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator


def _all(kind: type, name: str) -> BeforeValidator:
    def check(value: Any) -> Any:
        if isinstance(value, dict) and not all(type(v) is kind for v in value.values()):
            raise ValueError(f"every value must be {name}")  # one error for the whole map
        return value

    return BeforeValidator(check)


StrMap = Annotated[dict[str, str], _all(str, "a string")]
IntMap = Annotated[dict[str, int], _all(int, "an integer")]
