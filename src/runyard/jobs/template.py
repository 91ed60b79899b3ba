"""argv templates: `{name}` placeholders filled in place, each element staying one argument."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|\{|\}")

# Values runyard itself provides; a param may not take these names.
BUILTINS = frozenset({"jobs_dir", "workspace", "run_id", "attempt"})


class TemplateError(ValueError):
    pass


def placeholders(element: str) -> list[str]:
    names = []
    for m in _PLACEHOLDER.finditer(element):
        tok = m.group(0)
        if m.group(1):
            names.append(m.group(1))
        elif tok in ("{", "}"):
            raise TemplateError(
                f"unbalanced brace in {element!r} (write {{{{ or }}}} for a literal)"
            )
    return names


def render_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def render(command: list[str], values: Mapping[str, Any]) -> list[str]:
    """Substitute placeholders; never splits or joins elements, so no value becomes an option."""

    def sub(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok == "{{":
            return "{"
        if tok == "}}":
            return "}"
        return render_value(values[m.group(1)])

    return [_PLACEHOLDER.sub(sub, element) for element in command]
