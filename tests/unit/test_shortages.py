"""What waiting may cure, told from what it never will; the last such refusal, as readiness
shows it."""

from __future__ import annotations

import errno

import pytest

from runyard.execution import shortages
from runyard.execution.shortages import LastShortage, fork_shortage, shortage


def test_room_is_a_shortage_a_place_is_not() -> None:
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EMFILE, errno.ENOMEM):
        assert shortage(OSError(code, "x"))
    for code in (errno.EACCES, errno.EEXIST, errno.ENOTDIR, errno.ELOOP):
        assert not shortage(OSError(code, "x"))
    assert not shortage(KeyError("nobody"))  # no such user: the run's own
    assert fork_shortage(OSError(errno.EAGAIN, "no process slot"))
    assert not shortage(OSError(errno.EAGAIN, "x"))  # a write that would block is no shortage


def test_the_last_shortage_is_shown_until_a_success_or_its_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    last = LastShortage()
    assert last.shown("spawn") == {}
    last.failed("cannot start: [Errno 12] Cannot allocate memory")
    assert last.shown("spawn") == {"spawn": "cannot start: [Errno 12] Cannot allocate memory"}
    last.succeeded()
    assert last.shown("spawn") == {}
    last.failed("again")
    monkeypatch.setattr(shortages, "SHOWN_S", -1.0)  # nobody retried within its time
    assert last.shown("spawn") == {}
