"""What the kernel takes as a program's arguments, checked when a run is submitted.

Linux refuses an exec (E2BIG) with an argument over MAX_ARG_STRLEN (32 pages: 131,072 bytes
with its NUL), or with arguments and environment together over ARG_MAX (a quarter of the stack
limit, 2 MiB by default). A job may allow params that render so (a str param of
`max_length = 200000` in its command, a few json params in one argument): such a run was
accepted, 202, and failed as it started, exit code 126 and "Argument list too long" in its
log. The submission is refused instead, 422 naming the params and the limit, and nothing is
stored.

At load, each argument's worst case is taken from what its params allow; only a job whose
worst case could pass a limit renders its command at each submission (most jobs pay nothing).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from runyard.jobs.params import DEFAULT_STR_MAX, JSON_MAX_BYTES, ParamDecl, ParamError
from runyard.jobs.template import BUILTINS, placeholders, render, render_value

MAX_ARG_BYTES = 32 * 4096 - 1  # MAX_ARG_STRLEN, less its NUL
PATH_BYTES = 1024  # what a run's own paths (`{workspace}`) are taken to take at most
ENV_BYTES = 16 * 1024  # the environment runyard gives a program, beside the job's own
INT_BYTES = 4301  # Python reads no integer of more digits (sys.int_info.str_digits_check)


def args_budget() -> int:
    """What arguments and environment may take together on this host (ARG_MAX)."""
    try:
        found = os.sysconf("SC_ARG_MAX")
    except (OSError, ValueError):
        found = -1
    return found if found > 0 else 2 * 2**20


def _env_bytes(env: Mapping[str, str]) -> int:
    """The program's environment: the job's variables and what runyard adds (ENV_BYTES)."""
    return ENV_BYTES + sum(len(k.encode()) + len(v.encode()) + 2 for k, v in env.items())


def _most_bytes(decl: ParamDecl) -> int:
    """The most bytes a value of `decl` renders to (template.render_value)."""
    if decl.type == "str":
        return 4 * (decl.max_length or DEFAULT_STR_MAX)  # UTF-8: four bytes a character at most
    if decl.type == "json":
        # compact UTF-8 is what max_length bounds; the command gets it ASCII-escaped, up to
        # three times as long (a four-byte character is a twelve-byte surrogate pair)
        return 3 * (decl.max_length or JSON_MAX_BYTES)
    if decl.type == "enum":
        return max(len(render_value(c).encode()) for c in decl.choices or [""])
    if decl.type == "int":
        return INT_BYTES
    if decl.type == "file":
        return PATH_BYTES
    return 32  # a float's repr, a bool


def may_pass_limits(
    command: list[str], params: Mapping[str, ParamDecl], env: Mapping[str, str]
) -> bool:
    """Whether the largest values the params allow could make an exec of `command` fail."""
    worst = [
        len(element.encode()) + sum(
            PATH_BYTES if name in BUILTINS else _most_bytes(params[name])
            for name in placeholders(element) if name in BUILTINS or name in params
        )
        for element in command
    ]  # fmt: skip
    total = sum(w + 1 + 8 for w in worst) + _env_bytes(env)  # each with its NUL and pointer
    return max(worst, default=0) > MAX_ARG_BYTES or total > args_budget()


def fixed_problem(command: list[str], env: Mapping[str, str]) -> str | None:
    """Why no run of a job could ever start, whatever its params: an argument whose own text
    (its placeholders rendered empty) or an environment variable (`NAME=value`, which the
    kernel holds to the same MAX_ARG_STRLEN) is over the limit, or the two together over
    ARG_MAX. Such a job loaded, and each run of it was accepted and failed to start (126,
    "Argument list too long"), or each submit was refused naming params it did not have."""
    for name, value in env.items():
        if (size := len(name.encode()) + 1 + len(value.encode())) > MAX_ARG_BYTES:
            return f"env.{name}: {size} bytes, over the {MAX_ARG_BYTES} a variable may have"
    least = render(command, _Nothing())
    for i, element in enumerate(least):
        if (size := len(element.encode())) > MAX_ARG_BYTES:
            return (
                f"command[{i}]: {size} bytes before any param, over the {MAX_ARG_BYTES} a "
                "program's argument may have (Linux's MAX_ARG_STRLEN)"
            )
    total = sum(len(a.encode()) + 1 + 8 for a in least) + _env_bytes(env)
    if total > (budget := args_budget()):
        return (
            f"command: with env, {total} bytes before any param, over the {budget} a program "
            "may be given (ARG_MAX)"
        )
    return None


class _Nothing(dict[str, str]):
    """Every placeholder rendered empty."""

    def __missing__(self, key: str) -> str:
        return ""


def check_argv(
    command: list[str], params: Mapping[str, ParamDecl], env: Mapping[str, str],
    values: Mapping[str, Any], jobs_dir: str,
) -> None:  # fmt: skip
    """ParamError naming the params whose values make the command too long to exec."""
    given = {
        **values, "jobs_dir": jobs_dir, "workspace": "w" * PATH_BYTES,
        "run_id": "0" * 26, "attempt": 99,
    }  # fmt: skip
    argv = render(command, given)
    for i, (element, rendered) in enumerate(zip(command, argv, strict=True)):
        size = len(rendered.encode())
        if size > MAX_ARG_BYTES:
            names = [n for n in placeholders(element) if n in params] or ["params"]
            raise ParamError([(
                name, f"rendered into the command's argument {i}, it makes {size} bytes, over "
                f"the {MAX_ARG_BYTES} a program's argument may have (Linux's MAX_ARG_STRLEN)",
            ) for name in names])  # fmt: skip
    total = sum(len(a.encode()) + 1 + 8 for a in argv) + _env_bytes(env)
    if total > (budget := args_budget()):
        names = sorted({n for element in command for n in placeholders(element) if n in params})
        raise ParamError([(
            name, f"the command's arguments and environment would make {total} bytes, over the "
            f"{budget} a program may be given (ARG_MAX)",
        ) for name in names or ["params"]])  # fmt: skip
