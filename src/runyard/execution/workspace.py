"""Per-run workspaces: empty, a copy of a directory, or a cheap local git clone.

Everything here blocks (copies, git); the executor calls it from a worker thread.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from runyard import failpoints


class WorkspaceError(Exception):
    pass


def resolve_source(spec: str, jobs_dir: Path) -> tuple[str, Path, str | None]:
    """Split `copy:DIR` / `git:REPO[@REF]` into (kind, absolute source, ref)."""
    kind, _, rest = spec.partition(":")
    ref = None
    if kind == "git" and "@" in rest:
        rest, ref = rest.rsplit("@", 1)
        if not ref or ref.startswith("-"):
            raise WorkspaceError(f"invalid git ref {ref!r}")
    if "://" in rest or rest.startswith("-"):
        raise WorkspaceError("workspace sources are local paths")
    return kind, (jobs_dir / rest).resolve(), ref


def prepare(spec: str, jobs_dir: Path, target: Path) -> None:
    """Create `target` (which must not exist yet) from the job's workspace spec."""
    failpoints.check("workspace")
    if spec == "empty":
        target.mkdir(parents=True)
        return
    kind, source, ref = resolve_source(spec, jobs_dir)
    if kind == "copy":
        if not source.is_dir():
            raise WorkspaceError(f"workspace source {source} is not a directory")
        # symlinks are copied as links, never followed, so a copy pulls in nothing from outside
        shutil.copytree(source, target, symlinks=True)
        return
    _git_clone(source, target, ref)


def _git_clone(source: Path, target: Path, ref: str | None) -> None:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "GIT_TERMINAL_PROMPT": "0", "HOME": "/"}
    # A local clone hardlinks the object store: cheap, and no working tree is ever shared.
    steps = [
        ["git", "clone", "--quiet", "--no-checkout", "--", str(source), str(target)],
        ["git", "-C", str(target), "checkout", "--quiet", "--detach", ref or "HEAD", "--"],
    ]
    for argv in steps:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            raise WorkspaceError(f"{' '.join(argv[:2])} failed: {proc.stderr.strip()[:500]}")
