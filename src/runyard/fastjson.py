"""JSON on the hot paths (stored values, supervisor messages, exit and params files): orjson,
several times cheaper than json, with json deciding whatever orjson would refuse or change —
a lone surrogate's escape, an integer past 64 bits (orjson reads one as a float), NaN — so
that what json used to write and read is written and read back exactly as before."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import orjson

# 19 digits or more may be an integer past 64 bits: such text is json's to read. Spelled with
# a leading single digit class, which the regex engine uses to skip ahead to the next digit,
# where `\d{19}` counted digits from every position: 3-4x cheaper on a stored job spec, read
# back with every claimed and every ended run.
_LONG_NUMBER = re.compile(r"[0-9][0-9]{18}")
_LONG_NUMBER_BYTES = re.compile(rb"[0-9][0-9]{18}")


def loads(text: str | bytes, parse_constant: Callable[[str], Any] | None = None) -> Any:
    """`parse_constant` as json's: given, it decides NaN and Infinity (a strict reader
    refuses them); orjson refuses them always, so they reach json either way."""
    pattern = _LONG_NUMBER if isinstance(text, str) else _LONG_NUMBER_BYTES
    if not pattern.search(text):  # type: ignore[arg-type]
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text, parse_constant=parse_constant)


def dumps(value: Any, *, indent: bool = False) -> bytes:
    """Compact (or indented by two), UTF-8."""
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0)
    except TypeError:
        text = json.dumps(value, indent=2) if indent else json.dumps(value, separators=(",", ":"))
        return text.encode()
