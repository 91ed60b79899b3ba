"""Where a job's file inputs land in the workspace, and what may not share a place: two files
cannot both be staged at one path, nor one inside the other.

A file param with no `path` lands in a folder of its own, `inputs/NAME/`, under the name the
run gives the file (`upload:ID/NAME`) or the upload's; one with a `path` lands there. runyard
writes `params.json` and makes `outputs/` (the artifacts) in every workspace. A probe found
each of these shared with a `path` at load time and fought over at run time: a param reading
another's file while `params.json` named its own (a path inside the other's folder), a
staged input replaced by the params file, every run failing on `outputs`. Compared each with
each: sorted neighbours alone miss `x` and `x/y` with `x-y` between them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

INPUTS = "inputs"  # execution/inputs.py stages there
RUNYARDS = {"params.json": "runyard's params file", "outputs": "the artifacts folder"}


class FileDecl(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def path(self) -> str | None: ...


def _inside(inner: str, outer: str) -> bool:
    return inner == outer or inner.startswith(f"{outer}/")


def overlap(params: Mapping[str, FileDecl]) -> str | None:
    """What two places of the job's inputs (or one and runyard's own) overlap, said; None if
    none does."""
    places = [(f"{INPUTS}/{n}" if d.path is None else d.path, f"file param {n!r}")
              for n, d in params.items() if d.type == "file"]  # fmt: skip
    taken = [*places, *((place, what) for place, what in RUNYARDS.items())]
    for i, (here, first) in enumerate(places):
        for there, second in taken[i + 1 :]:
            if _inside(here, there) or _inside(there, here):
                return f"{first} and {second}: {here!r} and {there!r} overlap"
    return None
