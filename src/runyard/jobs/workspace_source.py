"""A job's `workspace` as written: `empty`, `copy:DIR` or `git:REPO[@REF]`, read the same way
where the job is loaded (its mistakes are the file's load error) and where a run's workspace
is made (execution/workspace.py)."""

from __future__ import annotations


def split_source(spec: str) -> tuple[str, str, str | None]:
    """(kind, source as written, git ref or None); ValueError naming what is wrong."""
    kind, _, rest = spec.partition(":")
    if kind not in ("copy", "git"):
        raise ValueError("workspace is `empty`, `copy:DIR` or `git:REPO[@REF]`")
    ref = None
    if kind == "git" and "@" in rest:
        rest, ref = rest.rsplit("@", 1)
        if not ref or ref.startswith("-"):
            raise ValueError(f"invalid git ref {ref!r}")
    if not rest:
        raise ValueError("workspace source is empty")
    if "://" in rest or rest.startswith("-"):
        raise ValueError("workspace sources are local paths")
    return kind, rest, ref
