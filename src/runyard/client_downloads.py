"""Artifacts to files. An artifact's bytes are written beside it under a temporary name and
renamed over it only once whole, so that an interrupted download leaves nothing behind (it
left a truncated file under the final name, and a download again over a good copy cut it
first) and a body past what the listing said is refused as it grows (one without end filled
the disk). A listing that left declared entries out is never taken for all of them: what it
left out is gathered over its pages, and a download of "all" that was not all raises."""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from runyard.client_guards import paced

if TYPE_CHECKING:
    import httpx

    from runyard.schemas import ArtifactList

MAX_NAMED = 1000  # entries left out kept by name over a whole listing; past that, counted


@dataclass
class LeftOut:
    """What a listing's pages said they left out: each entry named once (a directory read in
    part is named on every page that reads it), those past MAX_NAMED or the server's 100 a
    page counted, and the pages that said `partial` without naming anything (an older
    server's, for a directory it read in part). The first page's `partial` alone is not
    counted: it also says that `workspace_bytes` counts only part of the workspace."""

    named: dict[tuple[str, str], None] = field(default_factory=dict)  # (path, reason)
    omitted: int = 0
    unexplained: int = 0
    pages: int = 0

    def add(self, page: ArtifactList) -> None:
        for s in page.skipped:
            if (s.path, s.reason) in self.named:
                continue
            if len(self.named) < MAX_NAMED:
                self.named[s.path, s.reason] = None
            else:
                self.omitted += 1
        self.omitted += max(page.skipped_omitted, 0)
        if page.partial and not page.skipped and page.skipped_omitted <= 0 and self.pages:
            self.unexplained += 1
        self.pages += 1

    def __bool__(self) -> bool:
        return bool(self.named) or self.omitted > 0 or self.unexplained > 0

    def summary(self) -> str:
        """What was left out, in a few words: "3 entries (its `skipped`)"."""
        n = len(self.named) + self.omitted
        said = [f"{n} {'entry' if n == 1 else 'entries'} (its `skipped`)"] if n else []
        if self.unexplained:
            said.append(f"what {self.unexplained} of its pages said `partial` of, unnamed")
        return " and ".join(said)


class PartialListingError(Exception):
    """Every artifact listed was downloaded, but the listing left declared entries out
    (`left_out` says which): a download of all of them did not get all of them."""

    def __init__(self, left_out: LeftOut) -> None:
        self.left_out = left_out
        super().__init__(f"not every declared artifact was downloaded: the listing left out "
                         f"{left_out.summary()}")  # fmt: skip


def all_listed(pages: Iterable[ArtifactList]) -> Iterator[ArtifactList]:
    """The pages, then, once the last was taken (its files saved), PartialListingError if
    any of them left declared entries out."""
    left_out = LeftOut()
    for page in pages:
        left_out.add(page)
        yield page
    if left_out:
        raise PartialListingError(left_out)


def save(resp: httpx.Response, dest: Path, size: int | None) -> Path:
    """`resp`'s body into `dest`: at most its Content-Length (httpx holds it to that; the
    server sets it as it opens the file, so one that grew since it was listed is whole), or
    without one, at most `size`, the listing's."""
    length = resp.headers.get("content-length", "")
    cap = int(length) if length.isascii() and length.isdigit() and len(length) < 19 else size
    over = f"the server sent more of {dest.name!r} than the {cap} bytes it said"
    # made as `dest` would be (the umask's mode, not mkstemp's 0600), under a short name
    # nobody has (the file's own, lengthened, could pass the 255 bytes a name may take)
    part = dest.with_name(f".runyard-{secrets.token_hex(8)}.part")
    fh = part.open("xb")
    try:
        with fh:
            for chunk in paced(resp, cap, over):
                fh.write(chunk)
        if dest.exists():
            shutil.copymode(dest, part)  # replaced, it keeps its mode (0600 stays 0600)
        part.replace(dest)
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink()
        raise
    return dest
