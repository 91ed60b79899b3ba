"""An artifact's bytes to a file: written beside it under a temporary name and renamed over
it only once whole, so that an interrupted download leaves nothing behind (it left a
truncated file under the final name, and a download again over a good copy cut it first)
and a body past what the listing said is refused as it grows (one without end filled the
disk)."""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from runyard.client_guards import paced

if TYPE_CHECKING:
    import httpx


def save(resp: httpx.Response, dest: Path, size: int | None) -> Path:
    """`resp`'s body into `dest`, at most `size` bytes when the listing said how many."""
    over = f"the server sent more of {dest.name!r} than the {size} bytes its listing says"
    # made as `dest` would be (the umask's mode, not mkstemp's 0600), under a name nobody has
    part = dest.with_name(f".{dest.name[:100]}.{secrets.token_hex(6)}.part")
    fh = part.open("xb")
    try:
        with fh:
            for chunk in paced(resp, size, over):
                fh.write(chunk)
        part.replace(dest)
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink()
        raise
    return dest
