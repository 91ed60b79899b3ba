"""The supervisor as a real process: spawning, exit files, timeouts, escapees, idle exit."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from runyard.execution import supervisor_client
from runyard.execution.protocol import SOCKET_NAME
from runyard.execution.supervisor_client import SupervisorClient, SupervisorTimeoutError
from tests.support import kill_everything, supervisors_of, wait_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Harness:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.client = SupervisorClient(data_dir, self._event, self._gone)

    async def _event(self, msg: dict[str, Any]) -> None:
        await self.events.put(msg)

    async def _gone(self) -> None:
        await self.events.put({"op": "disconnected"})

    async def spawn(self, key: str, argv: list[str], **extra: Any) -> dict[str, Any]:
        ws = self.data_dir / key
        return await self.client.request({
            "op": "spawn", "key": key, "argv": argv, "cwd": str(ws),
            "env": {"PATH": os.environ["PATH"], "RUNYARD_ATTEMPT_KEY": key,
                    "RUNYARD_WORKSPACE": str(ws)},
            "log": str(self.data_dir / f"{key}.log"), "exit": str(self.data_dir / f"{key}.exit"),
            "mkdirs": [str(ws)], **extra,
        })  # fmt: skip

    async def next_exit(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.events.get(), timeout=30)


@pytest.fixture
async def sup(tmp_path: Path):
    h = Harness(tmp_path)
    await h.client.connect()
    yield h
    await h.client.close()
    kill_everything(tmp_path)


async def test_spawn_logs_and_exit_file(sup: Harness) -> None:
    reply = await sup.spawn("a.1", ["sh", "-c", "echo out; echo err >&2; exit 5"])
    assert reply["ok"]
    assert reply["pgid"] == reply["pid"]  # its own process group
    event = await sup.next_exit()
    assert event["op"] == "exited"
    assert event["key"] == "a.1"
    assert event["exit_code"] == 5
    record = json.loads((sup.data_dir / "a.1.exit").read_text())
    assert record["exit_code"] == 5
    assert record["pid"] == reply["pid"]
    assert (sup.data_dir / "a.1.log").read_bytes() == b"out\nerr\n"


async def test_programs_are_children_of_the_supervisor_not_the_server(sup: Harness) -> None:
    reply = await sup.spawn("b.1", ["sleep", "30"])
    proc = psutil.Process(reply["pid"])
    (supervisor,) = supervisors_of(sup.data_dir)
    assert proc.ppid() == supervisor.pid
    assert supervisor.pid != os.getpid()
    assert os.getsid(supervisor.pid) != os.getsid(0)  # its own session: outlives our terminal
    await sup.client.request({"op": "signal", "key": "b.1", "reason": "cancel"})
    event = await sup.next_exit()
    assert event["killed_by"] == "cancel"
    assert event["signal"] == 15


async def test_timeout_then_sigkill_after_grace(sup: Harness) -> None:
    await sup.spawn(
        "c.1", ["sh", "-c", "trap '' TERM; sleep 30 & wait; sleep 30"],
        timeout_s=0.2, kill_grace_s=0.2,
    )  # fmt: skip
    event = await sup.next_exit()
    assert event["killed_by"] == "timeout"
    assert event["signal"] == 9


async def test_escaped_descendants_die_with_the_run(sup: Harness) -> None:
    marker = sup.data_dir / "escapee.pid"
    await sup.spawn(
        # the run ends only once its escapee exists (a fixed pause lost that race under load)
        "d.1",
        [
            "sh",
            "-c",
            f"setsid sh -c 'echo $$ > {marker}.tmp; mv {marker}.tmp {marker}; "
            f"exec sleep 60' & while [ ! -e {marker} ]; do sleep 0.01; done",
        ],
    )
    await sup.next_exit()
    pid = int(marker.read_text())
    # the escapee left the group and the session; the supervisor found it by its environment
    # and sent SIGKILL, which a loaded machine may take a moment to carry out
    wait_for(lambda: _gone(pid), timeout=10, what="the escaped descendant to die")


def _gone(pid: int) -> bool:
    """Dead or a zombie; one that dies between two looks at it is dead (a CI flake took the
    second look's NoSuchProcess for a failure)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_unstartable_program_gets_an_exit_record(sup: Harness) -> None:
    reply = await sup.spawn("e.1", ["/no/such/binary"])
    assert reply["ok"] is False
    event = await sup.next_exit()
    assert event["exit_code"] == 127
    assert "cannot start" in event["error"]
    assert json.loads((sup.data_dir / "e.1.exit").read_text())["exit_code"] == 127


@pytest.fixture
async def sup_with_leaked_fd(tmp_path: Path):
    """A supervisor started by a process holding a descriptor without close-on-exec."""
    leaked = os.open(tmp_path, os.O_RDONLY)
    os.set_inheritable(leaked, True)
    h = Harness(tmp_path)
    try:
        await h.client.connect()
    finally:
        os.close(leaked)
    yield h, leaked
    await h.client.close()
    kill_everything(tmp_path)


async def test_a_program_starts_as_from_a_shell(sup_with_leaked_fd: tuple[Harness, int]) -> None:
    sup, leaked = sup_with_leaked_fd
    script = (
        f"test -e /proc/self/fd/{leaked} && echo leaked || echo sealed; "
        "readlink /proc/self/fd/0; pwd; grep SigIgn /proc/self/status"
    )
    await sup.spawn("s.1", ["sh", "-c", script])
    assert (await sup.next_exit())["exit_code"] == 0
    sealed, stdin, cwd, ignored = (sup.data_dir / "s.1.log").read_text().splitlines()
    assert sealed == "sealed"  # nothing of the supervisor's but 0, 1 and 2 reaches a program
    assert (stdin, cwd) == ("/dev/null", str(sup.data_dir / "s.1"))
    mask = int(ignored.split()[1], 16)
    # Python ignores SIGPIPE and SIGXFSZ, the supervisor SIGINT and SIGHUP: a program must not
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGHUP):
        assert not mask & (1 << (sig - 1)), sig


async def test_a_bare_command_is_looked_up_in_the_programs_own_path(
    sup: Harness, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "hello").write_text("#!/bin/sh\necho hello from $0\n")
    (bin_dir / "hello").chmod(0o755)
    (bin_dir / "locked").write_text("#!/bin/sh\n")  # there, but not executable
    env = {"PATH": f"/no/such/dir:{bin_dir}:{os.environ['PATH']}", "RUNYARD_ATTEMPT_KEY": "h.1"}
    assert (await sup.spawn("h.1", ["hello"], env=env))["ok"]
    assert (await sup.next_exit())["exit_code"] == 0
    assert (sup.data_dir / "h.1.log").read_text() == f"hello from {bin_dir / 'hello'}\n"
    env["RUNYARD_ATTEMPT_KEY"] = "h.2"
    assert (await sup.spawn("h.2", ["locked"], env=env))["ok"] is False
    refused = await sup.next_exit()
    assert (refused["exit_code"], "Permission denied" in refused["error"]) == (126, True)


def _real(path: str | Path) -> Path:
    return Path(path).resolve()


@pytest.fixture
def relative_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data dir named relative to the test's cwd, unique: found by its name among all."""
    monkeypatch.chdir(tmp_path)
    name = Path(f"rel-{secrets.token_hex(4)}")
    name.mkdir()
    return name


async def test_a_relative_data_dir_keeps_the_supervisor_where_it_started(
    tmp_path: Path, relative_dir: Path
) -> None:
    h = Harness(relative_dir)
    await h.client.connect()
    try:
        for key in ("r.1", "r.2"):  # the second spawn resolves its paths as the first did
            assert (await h.spawn(key, ["sh", "-c", "pwd"]))["ok"]
            assert (await h.next_exit())["exit_code"] == 0
            shown = (tmp_path / relative_dir / f"{key}.log").read_text().strip()
            assert _real(shown) == _real(tmp_path / relative_dir / key)
            record = json.loads((tmp_path / relative_dir / f"{key}.exit").read_text())
            assert record["exit_code"] == 0
        (supervisor,) = supervisors_of(relative_dir)
        assert _real(os.readlink(f"/proc/{supervisor.pid}/cwd")) == _real(tmp_path)
    finally:
        await h.client.close()
        kill_everything(relative_dir)


async def test_bad_requests_do_not_hurt_the_supervisor(sup: Harness) -> None:
    assert (await sup.client.request({"op": "nope"}))["ok"] is False
    assert (await sup.client.request({"op": "spawn"}))["ok"] is False
    assert (await sup.client.request({"op": "list"}))["ok"] is True


async def test_second_client_reuses_the_same_supervisor(sup: Harness) -> None:
    other = Harness(sup.data_dir)
    await other.client.connect()
    try:
        reply = await sup.spawn("f.1", ["sleep", "30"])
        listed = await other.client.request({"op": "list"})
        assert [a["key"] for a in listed["attempts"]] == ["f.1"]
        assert listed["attempts"][0]["pid"] == reply["pid"]
        assert len(supervisors_of(sup.data_dir)) == 1
    finally:
        await other.client.close()


async def test_supervisor_exits_when_idle_and_alone(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.client.connect()
    (supervisor,) = supervisors_of(tmp_path)
    await h.client.close()
    # nothing runs and nobody is connected: it leaves by itself, removing nothing it owns
    await asyncio.to_thread(supervisor.wait, 30)
    assert not supervisor.is_running()
    assert (tmp_path / SOCKET_NAME).exists()  # a stale socket is harmless: the next one rebinds


async def test_a_server_gone_before_its_answer_leaves_the_supervisor_free_to_exit(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    await h.client.connect()
    (supervisor,) = supervisors_of(tmp_path)
    await h.client.close()
    try:
        # the last server asks and leaves at once; the supervisor (stopped meanwhile) reads
        # the request only then, and the send of its answer finds nobody. It still leaves
        # when idle: it waited for ever, nobody connected to wake it.
        supervisor.suspend()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(tmp_path / SOCKET_NAME))
                s.sendall(b'{"op": "ping", "req": 1}\n')
        finally:
            supervisor.resume()
        await asyncio.to_thread(supervisor.wait, 30)
        assert not supervisor.is_running()
    finally:
        kill_everything(tmp_path)


# A supervisor idle long enough, a server connecting that very moment (in the listen
# backlog, not accepted yet): the supervisor's loop is entered with both already so.
LEAVING = """
import socket, sys, threading
from pathlib import Path
from runyard.execution.protocol import SOCKET_NAME
from runyard.execution.supervisor import Supervisor

sup = Supervisor(Path(sys.argv[1]), 0.2, False)
sup.listen()
sup.install_signals()
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.connect(str(Path(sys.argv[1]) / SOCKET_NAME))
server.sendall(b'{"op": "ping", "req": 7}\\n')
server.settimeout(10)
sup.idle_since -= 60


def hear() -> None:
    try:
        print(server.recv(65536).decode().strip() or "EOF", flush=True)
    except OSError as exc:
        print("no answer:", exc, flush=True)
    server.close()


listener = threading.Thread(target=hear)
listener.start()
sup.serve_forever()
listener.join()
"""


def test_a_server_connecting_as_the_supervisor_leaves_is_served(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", LEAVING, str(tmp_path)],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("{"), done.stdout  # not "no answer: timed out" (dropped)
    answer = json.loads(done.stdout)
    assert answer["ok"] and answer["req"] == 7  # heard, then left once idle again


@pytest.fixture
async def armed_sup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A supervisor that honours DATA_DIR/failpoints (it keeps RUNYARD_FAILPOINTS)."""
    monkeypatch.setenv("RUNYARD_FAILPOINTS", "none")
    h = Harness(tmp_path)
    await h.client.connect()
    yield h
    await h.client.close()
    kill_everything(tmp_path)


def set_faults(data_dir: Path, spec: str) -> None:
    (data_dir / "failpoints.tmp").write_text(spec or "none")
    (data_dir / "failpoints.tmp").replace(data_dir / "failpoints")


async def test_ping_answers_with_the_failing_writes(sup: Harness) -> None:
    reply = await sup.client.ping(5)
    assert reply["ok"]
    assert reply["write_errors"] == {}
    (supervisor,) = supervisors_of(sup.data_dir)
    assert reply["pid"] == supervisor.pid


async def test_a_spawn_read_after_its_deadline_starts_nothing(sup: Harness) -> None:
    """The server gave up waiting (a paused supervisor): the late spawn must not start a
    program nobody tracks."""
    reply = await sup.spawn("late.1", ["sleep", "30"])
    assert reply["ok"]  # the normal path: the client's deadline is in the future
    late = await sup.client.request(
        {"op": "spawn", "key": "tardy.1", "argv": ["sleep", "30"], "cwd": str(sup.data_dir),
         "env": {"PATH": os.environ["PATH"]}, "log": str(sup.data_dir / "tardy.1.log"),
         "exit": str(sup.data_dir / "tardy.1.exit")},
        timeout_s=-1.0,  # its deadline has passed when the supervisor reads it
    )  # fmt: skip
    assert not late["ok"]
    assert "expired" in late["error"]
    assert late["requeue"]  # no fault of its run's
    assert not (sup.data_dir / "tardy.1.log").exists()
    listed = await sup.client.request({"op": "list"})
    assert [a["key"] for a in listed["attempts"]] == ["late.1"]


async def test_no_second_attempt_of_a_run_starts_while_one_runs(sup: Harness) -> None:
    """An attempt whose spawn the server gave up on may still run (its answer came late, and
    it is being stopped): the run's retry is refused, to be tried again, until it has ended."""
    assert (await sup.spawn("twice.1", ["sleep", "30"]))["ok"]
    refused = await sup.spawn("twice.2", ["true"])
    assert not refused["ok"]
    assert refused["requeue"]
    assert "twice.1 of its run still runs" in refused["error"]
    assert not (sup.data_dir / "twice.2.log").exists()
    assert (await sup.client.request({"op": "signal", "key": "twice.1"}))["ok"]
    ended = await sup.next_exit()
    assert (ended["key"], ended["killed_by"]) == ("twice.1", "cancel")
    assert (await sup.spawn("twice.2", ["true"]))["ok"]


async def test_requests_to_a_stopped_supervisor_time_out(sup: Harness) -> None:
    (supervisor,) = supervisors_of(sup.data_dir)
    supervisor.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(SupervisorTimeoutError, match="did not answer 'list'"):
            await sup.client.request({"op": "list"}, timeout_s=0.2)
    finally:
        supervisor.send_signal(signal.SIGCONT)
    assert (await sup.client.ping(5))["ok"]  # and it answers again once resumed


async def stop(process: psutil.Process) -> None:
    """SIGSTOP, landed: a process woken to take it shows as running until it is scheduled
    (on a loaded machine, after a check that read it as not stopped: a CI failure)."""
    process.send_signal(signal.SIGSTOP)
    await asyncio.to_thread(
        wait_for, lambda: process.status() == psutil.STATUS_STOPPED, what="the stop to land"
    )


async def test_a_stop_ended_meanwhile_is_not_counted_into_the_next(
    sup: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe: a stop seen once and then ended by hand (SIGCONT) was remembered, so that the
    next stop, however much later, was continued at once, its grace counted from the first."""
    monkeypatch.setattr(supervisor_client, "STOPPED_GRACE_S", 0.5)
    (supervisor,) = supervisors_of(sup.data_dir)
    await stop(supervisor)
    try:
        await asyncio.to_thread(sup.client.continue_if_stopped)  # seen stopped: timed from now
        supervisor.send_signal(signal.SIGCONT)  # by hand, before its grace
        assert (await sup.client.ping(5))["ok"]
        await asyncio.sleep(0.6)  # longer than the grace since the first sighting
        await stop(supervisor)
        await asyncio.to_thread(sup.client.continue_if_stopped)  # a new stop: its own grace
        assert supervisor.status() == psutil.STATUS_STOPPED
    finally:
        supervisor.send_signal(signal.SIGCONT)


async def test_exit_file_fault_keeps_the_record_until_it_can_be_written(armed_sup: Harness) -> None:
    """The exit file cannot be written and neither can the supervisor's own log: it survives,
    says so on ping, lists the attempt as not lost, and writes the file once the fault clears,
    telling the server again."""
    sup = armed_sup
    (supervisor,) = supervisors_of(sup.data_dir)
    set_faults(sup.data_dir, "exit_file=enospc,supervisor_log=eio")
    assert (await sup.spawn("x.1", ["sh", "-c", "exit 3"]))["ok"]
    first = await sup.next_exit()
    assert first["exit_code"] == 3
    exit_file = sup.data_dir / "x.1.exit"
    assert not exit_file.exists()
    ping = await sup.client.ping(5)
    assert "No space left on device" in ping["write_errors"]["exit_file"]
    listed = await sup.client.request({"op": "list"})
    assert [(a["key"], a.get("ended")) for a in listed["attempts"]] == [("x.1", True)]
    set_faults(sup.data_dir, "")
    again = await sup.next_exit()
    assert again["key"] == "x.1"
    assert again["exit_code"] == 3
    assert json.loads(exit_file.read_text())["exit_code"] == 3
    assert (await sup.client.ping(5))["write_errors"] == {}
    assert supervisors_of(sup.data_dir) == [supervisor]


async def test_an_exit_file_whose_place_its_program_took_is_never_waited_for(
    sup: Harness,
) -> None:
    """A program can remove its run's directory (its workspace is inside), or put a directory
    where its exit file goes. The first is made again for the record; the second is given up
    at once, told by the event but never listed as running nor held as a write error (both
    were retried for ever, the attempt listed as running, readiness failing)."""
    gone = sup.data_dir / "r1" / "attempt-1.exit.json"
    gone.parent.mkdir()
    argv = ["sh", "-c", f"rm -rf {gone.parent}"]
    assert (await sup.spawn("z.1", argv, exit=str(gone)))["ok"]
    assert (await sup.next_exit())["exit_code"] == 0
    assert json.loads(gone.read_text())["exit_code"] == 0
    taken = sup.data_dir / "r2" / "attempt-1.exit.json"
    taken.parent.mkdir()
    argv = ["sh", "-c", f"mkdir -p {taken}/x; exit 4"]
    assert (await sup.spawn("z.2", argv, exit=str(taken)))["ok"]
    assert (await sup.next_exit())["exit_code"] == 4
    assert (await sup.client.request({"op": "list"}))["attempts"] == []
    assert (await sup.client.ping(5))["write_errors"] == {}


async def test_log_and_workspace_faults_refuse_the_spawn_and_clear(armed_sup: Harness) -> None:
    sup = armed_sup
    set_faults(sup.data_dir, "log=eio")
    reply = await sup.spawn("y.1", ["true"])
    assert not reply["ok"]
    assert reply["write_error"] == "log"
    assert reply["shortage"]  # a failing disk may come back: the server retries the run
    assert "Input/output error" in reply["error"]
    assert "log" in (await sup.client.ping(5))["write_errors"]
    set_faults(sup.data_dir, "workspace=enospc")
    reply = await sup.spawn("y.2", ["true"])
    assert reply["write_error"] == "workspace"
    assert reply["shortage"]
    assert not (sup.data_dir / "y.2").exists()
    set_faults(sup.data_dir, "workspace=eacces")
    reply = await sup.spawn("y.4", ["true"])
    assert reply["write_error"] == "workspace"
    assert not reply["shortage"]  # no wait makes a refused place writable: the run fails
    set_faults(sup.data_dir, "")
    assert (await sup.client.ping(5))["write_errors"] == {}  # the ping probes: cleared
    assert (await sup.spawn("y.3", ["true"]))["ok"]


def test_spawn_requests_are_built_and_parsed_strictly(tmp_path: Path) -> None:
    """The executor builds the request from a dataclass; the supervisor parses it back the same,
    and refuses one of the wrong shape instead of guessing at it."""
    from runyard.execution.protocol import BadRequestError, SpawnRequest

    request = SpawnRequest(
        key="r.1", argv=["sh", "-c", "true"], cwd=str(tmp_path), env={"PATH": "/bin"},
        log=str(tmp_path / "log"), exit=str(tmp_path / "exit"), timeout_s=3.0,
        limits={"cpu_s": 2}, lease={"token": "t", "until": 1.0, "grace_s": 1.0},
    )  # fmt: skip
    message = json.loads(json.dumps(request.to_message()))
    assert message["op"] == "spawn"
    assert "deadline" not in message  # the client stamps its own
    parsed = SpawnRequest.parse({**message, "req": 7, "deadline": 5.0})
    assert parsed == dataclasses.replace(request, deadline=5.0)
    for bad in (
        {"key": "no dot"},
        {"argv": []},
        {"argv": ["sh", 1]},
        {"env": {"A": 1}},
        {"cwd": None},
        {"timeout_s": "3"},
        {"timeout_s": float("inf")},
        {"kill_grace_s": True},
        {"limits": []},
        {"run_as": 0},
    ):
        with pytest.raises(BadRequestError):
            SpawnRequest.parse({**message, **bad})


def test_a_server_holding_a_thousand_descriptors_still_starts_its_supervisor(
    tmp_path: Path,
) -> None:
    """A server serving a thousand connections holds descriptors past select(2)'s reach
    (FD_SETSIZE, 1024): the pipe on which it hears its new supervisor say "ready" is one of
    them, and must still be waited on."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1200
    if soft != resource.RLIM_INFINITY and soft < wanted:
        assert hard == resource.RLIM_INFINITY or hard >= wanted, "this machine allows too few"
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    held: list[int] = []
    try:
        while not held or held[-1] < 1100:  # every descriptor made from here on is past it
            held.append(os.open(os.devnull, os.O_RDONLY))
        assert supervisor_client.launch_supervisor(tmp_path, fsync=False) == "ready"
        assert supervisors_of(tmp_path)
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        kill_everything(tmp_path)
