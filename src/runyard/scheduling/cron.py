"""The cron language schedules take: standard five-field cron (Vixie/POSIX) or an @-macro,
checked field by field before croniter reads it. Its syntax is decided here; what it means
(the next fire times) is croniter's."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# The request schema's bound too: a list of every minute, written out, takes 170 characters.
MAX_CRON_LENGTH = 200

MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
MONTHS = {m: i for i, m in enumerate(_MONTHS, 1)}
DAYS = {d: i for i, d in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}


@dataclass(frozen=True)
class Field:
    name: str
    low: int
    high: int
    names: dict[str, int] = field(default_factory=dict)


FIELDS = (
    Field("minute", 0, 59),
    Field("hour", 0, 23),
    Field("day-of-month", 1, 31),
    Field("month", 1, 12, MONTHS),
    Field("day-of-week", 0, 7, DAYS),  # 0 and 7 are both Sunday, as in Vixie cron
)

# Anything else is croniter's own extension (L, W, #, ?, H, a sixth field of seconds) or no
# cron at all: croniter reads some of it in ways nobody would guess (`5-1` wraps around,
# `*/10**21` is minute 0), so it never sees it.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NOT_IN_FIELD = re.compile(r"[^0-9A-Za-z*,/-]")
_DIGITS = re.compile(r"[0-9]+", re.ASCII)


def cron_problem(expr: str) -> str | None:
    """Why `expr` is not a cron expression schedules take, or None; a field's problem starts
    with its name (`minute: ...`)."""
    if problem := _text_problem(expr):
        return problem
    if expr.startswith("@"):
        return None if expr in MACROS else f"is not a macro; these are: {', '.join(MACROS)}"
    return _fields_problem(expr)


def croniter_form(expr: str) -> str:
    """`expr` (one `cron_problem` takes) as croniter must read it: each field but a bare `*`
    written out as the values it names, in order (day-of-week's 7 as 0). croniter reads some
    of cron's forms its own way: a range of one value (`30-30`, `MON-MON`) as the whole field
    (`30-30 * * * *` fired every minute), a day-of-week `N/STEP` as ending at Saturday (`6/1`
    never fired on a Sunday) and `7/6` as Saturdays too, a list holding `*` (`1,*`) as its
    `*` alone; a list of values it reads as cron does. Which of the day fields must match is
    decided from `expr` as written (`timing._iter`)."""
    if expr.startswith("@"):
        return expr
    fields = zip(FIELDS, expr.split(" "), strict=True)
    return " ".join(
        text if text == "*" else ",".join(map(str, field_values(spec, text)))
        for spec, text in fields
    )


def field_values(spec: Field, text: str) -> list[int]:
    """The values a field (one `cron_problem` takes) names, in order; day-of-week's 7 as 0."""
    found: set[int] = set()
    for item in text.split(","):
        base, _, step = item.partition("/")
        ends = [spec.low, spec.high] if base == "*" else [_value(spec, e) for e in base.split("-")]
        low = ends[0]
        high = ends[-1] if len(ends) == 2 or not step else spec.high  # `N/STEP`: N to the end
        if low is not None and high is not None:  # always, in a field cron_problem takes
            found.update(range(low, high + 1, int(step) if step else 1))
    if spec.name == "day-of-week" and 7 in found:
        found = (found - {7}) | {0}
    return sorted(found)


def _text_problem(expr: str) -> str | None:
    if not expr.strip(" "):
        return "is empty"
    if len(expr) > MAX_CRON_LENGTH:
        return f"is longer than {MAX_CRON_LENGTH} characters"
    if not expr.isascii():
        return f"holds {next(c for c in expr if not c.isascii())!r}: cron is ASCII only"
    if control := _CONTROL.search(expr):
        return f"holds {control.group()!r}: fields are separated by single spaces"
    return None


def _fields_problem(expr: str) -> str | None:
    parts = expr.split(" ")
    if "" in parts:
        return "has an empty field: fields are separated by single spaces, none before or after"
    if len(parts) != len(FIELDS):
        names = ", ".join(spec.name for spec in FIELDS)
        return f"has {len(parts)} fields, not five ({names})"
    for spec, text in zip(FIELDS, parts, strict=True):
        if problem := _field_problem(spec, text):
            return f"{spec.name}: {problem}"
    return None


def _field_problem(spec: Field, text: str) -> str | None:
    if other := _NOT_IN_FIELD.search(text):
        return f"{other.group()!r} is not standard cron (digits, names, * , - and / only)"
    for item in text.split(","):
        if not item:
            return "an empty item in its list"
        # one list item: `*`, `N` or `A-B` (A <= B), each with an optional `/STEP`
        base, *steps = item.split("/")
        if problem := _step_problem(spec, item, steps) or _base_problem(spec, base):
            return problem
    return None


def _step_problem(spec: Field, item: str, steps: list[str]) -> str | None:
    if len(steps) > 1:
        return f"{item!r} has more than one step"
    # a step longer than the field takes its first value only; croniter took any, and read
    # a huge one (`*/10**21`) as that too
    span = spec.high - spec.low + 1
    if steps and not 1 <= (_number(steps[0]) or 0) <= span:
        return f"step {steps[0]!r} is not a number from 1 to {span}"
    return None


def _base_problem(spec: Field, base: str) -> str | None:
    if base == "*":
        return None
    ends = base.split("-")
    if len(ends) > 2 or "" in ends:
        return f"{base!r} is not a value or a range A-B"
    values = [_value(spec, end) for end in ends]
    for end, value in zip(ends, values, strict=True):
        if value is None:
            return _value_problem(spec, end)
    low, high = values[0], values[-1]
    if low is not None and high is not None and low > high:
        # croniter reads `5-1` as wrapping around (0-1 and 5-59); cron refuses it
        return f"the range {base!r} runs backwards ({low} > {high})"
    return None


def _number(text: str) -> int | None:
    # within MAX_CRON_LENGTH, so never a string too long for int()
    return int(text) if _DIGITS.fullmatch(text) else None


def _value(spec: Field, text: str) -> int | None:
    value = _number(text)
    if value is None:
        value = spec.names.get(text.upper())
    return value if value is not None and spec.low <= value <= spec.high else None


def _value_problem(spec: Field, text: str) -> str:
    expected = f"a number from {spec.low} to {spec.high}"
    if spec.names:
        first, *_, last = spec.names
        expected += f" or a name {first}-{last}"
    return f"{text!r} is not {expected}"
