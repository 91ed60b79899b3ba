"""A job's `retry_on`: the ends of an attempt its run is retried after, checked strictly.

An item is an exit code from 1 to 255, "lost", "timeout", or the name of a signal the program
died of ("SIGKILL"). Lax coercion made `true`, "3" and 1.0 the exit code 1 or 3, and took 0,
-9 or 256, which no end ever matches: each is now its job file's load error, naming the item.
A signal is named, never written as 128+N: a shell's `exit 137` is an exit code its program
chose, and a program killed by SIGKILL has no exit code at all."""

from __future__ import annotations

import json
import signal
from typing import Any

WORDS = ("lost", "timeout")
EXIT_CODES = range(1, 256)  # 0 is success, never retried; a status is one byte
# No program dies of these: by default they are ignored or stop it, and a handler cannot make
# them end it (it would die of another signal, the one named then).
NEVER_FATAL = frozenset({
    "SIGCHLD", "SIGCONT", "SIGURG", "SIGWINCH", "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU",
})  # fmt: skip
# Named as `describe` and the exit record name them: one canonical name per number, so an
# alias (SIGIOT, SIGPOLL, SIGCLD) is refused with the name that matches, never kept unmatched.
# The real-time signals between SIGRTMIN and SIGRTMAX have no name of their own in Python:
# "SIGRTMIN+N", as kill -l and strsignal name them
REAL_TIME = {
    f"SIGRTMIN+{n - signal.SIGRTMIN}": n for n in range(signal.SIGRTMIN + 1, signal.SIGRTMAX)
}
SIGNALS = frozenset(s.name for s in signal.Signals) - NEVER_FATAL | frozenset(REAL_TIME)
ALIASES = {
    alias: sig.name for alias, sig in signal.Signals.__members__.items() if alias != sig.name
}
ALLOWED = (
    'allowed: exit codes 1 to 255, "lost", "timeout", or the name of a signal the program '
    'died of, in capitals with its SIG, such as "SIGKILL" or "SIGSEGV"'
)


def signal_trigger(number: int) -> str | None:
    """The retry_on item a death by signal `number` answers to ("SIGRTMIN+3" for a real-time
    one between SIGRTMIN and SIGRTMAX); None for a number no signal has."""
    if signal.SIGRTMIN < number < signal.SIGRTMAX:
        return f"SIGRTMIN+{number - signal.SIGRTMIN}"
    try:
        return signal.Signals(number).name
    except ValueError:
        return None


def check(items: Any, *, stored: bool = False) -> Any:
    """`items` if each is allowed, else ValueError naming every item that is not, and why.
    `stored`: a spec read back from a run, which an earlier load accepted as it is (an older
    version took 0 or 256): refused then, the run could neither start nor end."""
    if stored or not isinstance(items, list):
        return items  # not a list: the model's own list type says what is wrong
    bad = [f"{_shown(item)} ({why})" for item in items if (why := _wrong(item)) is not None]
    if bad:
        raise ValueError(f"{'; '.join(bad)} — {ALLOWED}")
    return items


def _wrong(item: object) -> str | None:
    """Why `item` is no retry_on item, or None if it is one."""
    if isinstance(item, bool):
        return "a boolean, not an exit code"
    if isinstance(item, int):
        return _wrong_code(item)
    if isinstance(item, float):
        return "not an integer"
    if not isinstance(item, str):
        return "neither an exit code nor a name"
    return _wrong_name(item)


def _wrong_code(item: int) -> str | None:
    if item in EXIT_CODES:
        return None
    if item == 0:
        return "exit code 0 is success, never retried"
    return 'exit codes are 1 to 255, and a signal is named, such as "SIGKILL"'


def _wrong_name(item: str) -> str | None:
    if item in WORDS or item in SIGNALS:
        return None
    if item.strip().lstrip("+-").isdigit():
        return "a string: an exit code is written without quotes"
    if item.lower() in WORDS:
        return f'write "{item.lower()}"'
    name = item.upper() if item.upper().startswith("SIG") else f"SIG{item.upper()}"
    name = ALIASES.get(name, name)
    if name in NEVER_FATAL:
        return f"no program dies of {name}: it is ignored or stops it by default"
    if name in SIGNALS:
        return f'write "{name}"'
    return "no such word or signal"


def _shown(item: object) -> str:
    """The item as a job file writes it (true, "3", 1.0), whatever its type."""
    try:
        return json.dumps(item)
    except (TypeError, ValueError):
        return repr(item)
