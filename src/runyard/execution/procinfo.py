"""Process identity: (pid, start time), the same number psutil's create_time() gives, read
straight from /proc (the supervisor does this once per spawn: it must be cheap)."""

from __future__ import annotations

import os
from functools import cache


@cache
def _boot_time() -> float:
    with open("/proc/stat", "rb") as fh:  # noqa: PTH123  hot path, no pathlib
        for line in fh:
            if line.startswith(b"btime"):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


@cache
def _ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def start_time(pid: int) -> float:
    """Seconds since the epoch at which `pid` started; raises OSError if it does not exist."""
    fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    try:
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = data[data.rindex(b")") + 2 :].split()
    return _boot_time() + int(fields[19]) / _ticks()
