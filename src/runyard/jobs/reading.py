"""Reading one TOML file (a job file, the tokens file) into data, bounded before any parsing: a
regular file (through links, never a FIFO or a device), at most a given size of it, nested at
most MAX_DEPTH levels. tomllib recurses once per level of arrays and inline tables (a 2 KB
file of brackets exhausts the stack) and takes time quadratic in a dotted key's parts (a 100
KB key, a minute), so both are measured on the text first."""

from __future__ import annotations

import codecs
import errno
import re
import tomllib
from pathlib import Path
from typing import Any

from runyard.regular_files import read_regular

MAX_JOB_FILE_BYTES = 256 * 1024
# Levels of tables, arrays and inline tables, the document itself counted; also the most
# parts a dotted key may have. A spec deeper than this was already refused after parsing.
MAX_DEPTH = 64
# Faults of the moment, not of the file: its last load stands until a scan can read it.
PASSING = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EIO, errno.EAGAIN,
                     errno.EINTR, errno.ENOBUFS, errno.ESTALE})  # fmt: skip

# The tokens that decide what tomllib will see as structure: strings and comments (whose
# brackets, dots and quotes are text), brackets, dots, bare-key characters; exactly as
# tomllib delimits them (a multi-line string may end in up to two more quotes).
_TOKENS = re.compile(
    r'''(?P<text>"""(?:[^"\\]|\\[\s\S]|"(?!""))*"""(?:"{0,2})'''
    r"""|'''[\s\S]*?'''(?:'{0,2})"""
    r'''|"(?:[^"\\\n]|\\.)*"'''
    r"""|'[^'\n]*'"""
    r"""|\#[^\n]*)"""
    r"""|(?P<open>[\[{])|(?P<close>[\]}])|(?P<dot>\.)|(?P<key>[A-Za-z0-9_\- \t]+)"""
    r"""|(?P<quote>["'])|(?P<other>[^"'\#\[\]{}.A-Za-z0-9_\- \t]+)"""
)


class UnreadableError(Exception):
    """Why the file gives no TOML data. `passing`: a fault of this moment (no descriptor
    left, EIO), so the file is read again at the next scan and its last load stands."""

    def __init__(self, message: str, *, passing: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.passing = passing


def read_job_toml(path: Path) -> dict[str, Any]:
    """The job file's TOML data, or UnreadableError saying why not. Blocking (a scan's
    thread)."""
    return read_toml(path, MAX_JOB_FILE_BYTES)


def read_toml(path: Path, max_bytes: int) -> dict[str, Any]:
    """The file's TOML data, or UnreadableError saying why not. Blocking."""
    try:
        raw = read_regular(path, max_bytes + 1, follow_links=True)
    except OSError as exc:
        raise UnreadableError(f"cannot read: {exc.strerror or exc}",
                              passing=exc.errno in PASSING) from None  # fmt: skip
    if len(raw) > max_bytes:
        raise UnreadableError(f"file is over {max_bytes} bytes")
    if raw.startswith(codecs.BOM_UTF8):
        raise UnreadableError("starts with a byte order mark: save it as UTF-8 without one")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableError(f"not valid UTF-8: {exc.reason} at byte {exc.start}") from None
    if (why := nesting_problem(text)) is not None:
        raise UnreadableError(why)
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:  # ValueError: an int of 4,300+ digits
        raise UnreadableError(f"not valid TOML: {exc}") from None
    except RecursionError:  # never seen once the nesting is measured: the stack is bounded
        raise UnreadableError(f"nested deeper than {MAX_DEPTH} levels") from None
    if too_deep(data, MAX_DEPTH):
        raise UnreadableError(f"nested deeper than {MAX_DEPTH} levels (tables, arrays and keys)")
    return data


def nesting_problem(text: str) -> str | None:
    """Why `text` would cost tomllib too much (brackets nested deeper than MAX_DEPTH, a dotted
    key of more parts), or None. Strings and comments are skipped as tomllib skips them; a
    quote that opens no string ends the look (tomllib stops there too, at an error)."""
    depth = dots = 0
    for token in _TOKENS.finditer(text):
        kind = token.lastgroup
        if kind == "open":
            depth += 1
            if depth >= MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels (at line {_line(text, token)})"
        elif kind == "dot":
            dots += 1
            if dots >= MAX_DEPTH:
                return f"a dotted key of more than {MAX_DEPTH} parts (at line {_line(text, token)})"
            continue
        elif kind == "close":
            depth = max(0, depth - 1)
        elif kind == "quote":
            return None
        if kind in ("open", "close", "other"):
            dots = 0  # a key's parts are joined only by dots, spaces and quoted parts
    return None


def too_deep(data: Any, limit: int) -> bool:
    """Whether `data` nests tables and arrays deeper than `limit` (itself counted), walked
    without recursion: keys and tables add up to more than either bound alone."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _line(text: str, token: re.Match[str]) -> int:
    return text.count("\n", 0, token.start()) + 1
