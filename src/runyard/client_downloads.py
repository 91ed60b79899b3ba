"""An artifact's bytes to a file: written beside it under a temporary name and renamed over
it only once whole, so that an interrupted download leaves nothing behind (it left a
truncated file under the final name, and a download again over a good copy cut it first)
and a body past what the listing said is refused as it grows (one without end filled the
disk)."""

from __future__ import annotations

import contextlib
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from runyard.client_guards import paced

if TYPE_CHECKING:
    import httpx


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
