"""The supervisor's lease watch (self-fencing): what it stops, when, and what it refuses."""

from __future__ import annotations

import pytest

from runyard.execution.lease_watch import LeaseLapsedError, LeaseWatch


class Clocks:
    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = 1_000_000.0

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


@pytest.fixture
def watch() -> tuple[LeaseWatch, Clocks, list[tuple[float, str]]]:
    clocks = Clocks()
    timers: list[tuple[float, str]] = []
    w = LeaseWatch(lambda d, t: timers.append((d, t)),
                   monotonic=lambda: clocks.mono, wall=lambda: clocks.wall)  # fmt: skip
    return w, clocks, timers


def lease(clocks: Clocks, token: str, in_s: float) -> dict[str, object]:
    return {"token": token, "until": clocks.wall + in_s, "grace_s": 1.0}


def test_a_lapsed_lease_stops_exactly_its_own_running_attempts(watch) -> None:
    w, clocks, timers = watch
    w.admit("r3.1", lease(clocks, "bb", 50))  # another life's lease, still valid
    w.admit("r1.1", lease(clocks, "aa", 5))  # an older one's, told out of turn: not bb's
    w.admit("r2.1", lease(clocks, "aa", 5))
    w.admit("r4.1", None)  # one server (SQLite): never fenced
    assert timers == [(50.0, "bb"), (5.0, "aa")]
    clocks.advance(5)
    running = {"r1.1", "r3.1", "r4.1"}  # r2.1 ended meanwhile
    assert w.lapsed("aa", clocks.mono, running) == (["r1.1"], 1.0)


def test_a_renewal_in_time_makes_the_old_timer_stale(watch) -> None:
    w, clocks, timers = watch
    w.admit("r1.1", lease(clocks, "aa", 5))
    clocks.advance(3)
    w.op_lease({"op": "lease", **lease(clocks, "aa", 5)})  # renewed: now valid 5 s more
    assert timers[-1] == (5.0, "aa")
    clocks.advance(2)  # the first timer fires
    assert w.lapsed("aa", clocks.mono, {"r1.1"}) == ([], 0.0)
    clocks.advance(3)
    assert w.lapsed("aa", clocks.mono, {"r1.1"}) == (["r1.1"], 1.0)


def test_an_older_renewal_never_shortens_a_lease(watch) -> None:
    w, clocks, timers = watch
    w.op_lease(lease(clocks, "aa", 10))
    w.op_lease(lease(clocks, "aa", 4))  # a spawn carrying what the server knew earlier
    assert timers == [(10.0, "aa")]


def test_a_new_life_holds_the_programs_of_a_lease_still_lasting_and_not_a_lapsed_ones(
    watch,
) -> None:
    """A restart within its lease registers a new life, with a new token: the store moved the
    server's attempts to it, and so does the supervisor, or it fenced at the old lease's end
    the programs the new life had just adopted. A lapsed lease's are being fenced: left so."""
    w, clocks, _ = watch
    w.admit("r1.1", lease(clocks, "zz", 1))
    clocks.advance(2)  # zz lapsed: its programs are being stopped
    w.admit("r2.1", lease(clocks, "aa", 5))
    w.op_lease({"op": "lease", **lease(clocks, "bb", 15)})  # the server restarted
    assert w.token_of == {"r1.1": "zz", "r2.1": "bb"}
    w.op_lease({"op": "lease", **lease(clocks, "cc", 10)})  # an older token, told late
    assert w.token_of == {"r1.1": "zz", "r2.1": "bb"}
    running = {"r1.1", "r2.1"}
    clocks.advance(5)
    assert w.lapsed("aa", clocks.mono, running)[0] == []  # nothing of its own left
    assert w.lapsed("zz", clocks.mono, running) == (["r1.1"], 1.0)
    clocks.advance(10)
    assert w.lapsed("bb", clocks.mono, running) == (["r2.1"], 1.0)


def test_nothing_starts_under_a_lapsed_lease(watch) -> None:
    w, clocks, _ = watch
    with pytest.raises(LeaseLapsedError, match="lapsed"):
        w.admit("r1.1", lease(clocks, "aa", -0.1))
    clocks.advance(1)
    w.admit("r1.2", lease(clocks, "bb", 5))  # the new life's lease: fine
    assert w.token_of == {"r1.2": "bb"}


@pytest.mark.parametrize(
    "bad",
    [
        {"token": "a b", "until": 1.0},
        {"token": "", "until": 1.0},
        {"token": "aa", "until": "soon"},
        {"token": "aa", "until": float("nan")},
        {"token": "aa", "until": True},
        {"token": "aa", "until": 1.0, "grace_s": -1},
        {"token": "aa", "until": 1.0, "grace_s": 1e9},
    ],
)
def test_a_malformed_lease_is_refused(watch, bad) -> None:
    w, _, timers = watch
    with pytest.raises(ValueError, match="lease"):
        w.op_lease(bad)
    assert timers == [] and w.leases == {}


def test_only_a_cluster_server_tells_its_supervisor_about_leases(tmp_path) -> None:
    from runyard.config import Settings
    from runyard.runtime import Runtime

    alone = Runtime(Settings(data_dir=tmp_path / "a", jobs_dir=tmp_path))
    assert alone.membership.holder is None  # SQLite: programs are never self-fenced
    clustered = Runtime(Settings(data_dir=tmp_path / "b", jobs_dir=tmp_path,
                                 database_url="postgresql://nobody@127.0.0.1:1/none"))  # fmt: skip
    assert clustered.membership.holder is clustered.executor
