"""A supervisor that dies leaves nothing running: its warden (its parent, a subreaper above
it) ends every program it ran and everything those left, with no server needed. Its programs
used to run on under init: on a cluster, the other servers (which cannot see this host's
processes) reaped their attempts once the lease lapsed and retried them elsewhere, and a run
had two live programs (a probe with servers in their own PID namespaces)."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import psutil
import pytest

from runyard.execution.protocol import LOG_NAME
from runyard.models import RunState
from runyard.schemas import RunView
from tests import web
from tests.support import ServerProcess, processes_of, supervisors_of, wait_for, warden_of

pytestmark = pytest.mark.e2e

# sh, its sleep, and a sleep that left the program's session
ESCAPER = 'command = ["sh", "-c", "setsid sleep 600 & echo started; sleep 600"]\n'


def escaping(server: ServerProcess) -> tuple[RunView, psutil.Process, psutil.Process]:
    """An escaper run, its three processes up; its supervisor and that one's warden."""
    with server.client() as c:
        run = c.submit("escaper")
    wait_for(lambda: len(processes_of(server.data_dir)) == 3, what="sh, sleep, escapee")
    (supervisor,) = supervisors_of(server.data_dir)
    return run, supervisor, warden_of(supervisor)


@pytest.mark.parametrize("server_too", [True, False], ids=["with-the-server", "alone"])
def test_a_killed_supervisor_leaves_no_program_running(
    start_server, write_job, jobs_dir: Path, server_too: bool
) -> None:
    write_job("escaper", ESCAPER)
    write_job("quick", 'command = ["true"]\n')
    server = start_server(jobs_dir)
    run, supervisor, warden = escaping(server)
    if server_too:  # nobody left to reconcile: the warden alone
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    supervisor.kill()
    wait_for(lambda: processes_of(server.data_dir) == [], what="the programs ended")
    warden.wait(10)  # and then it leaves (a timeout raises)
    said = (server.data_dir / LOG_NAME).read_text()
    found = re.search(rf"warden: the supervisor {supervisor.pid} killed by signal 9; (\d+) ", said)
    assert found is not None, said[-2000:]
    assert int(found[1]) >= 2  # sh, its group, what left it: as they came (it said 0)
    if server_too:
        server = start_server(jobs_dir)
    with server.client() as c:
        done = server.wait_run(c, run.id)
    assert done.state is RunState.FAILED  # lost, and `lost` is not retried
    assert (done.reason or "").startswith("lost"), done.reason


def test_sigterm_to_every_runyard_process_leaves_no_program_running(
    start_server, write_job, jobs_dir: Path
) -> None:
    """A probe: `pkill -f DATA_DIR` (SIGTERM to the server, the supervisor and the warden, the
    warden first, as its pid is lower) left the programs running under init, with nothing in
    supervisor.log: the warden died of the SIGTERM before its supervisor. It leaves only
    after its supervisor, whatever it is sent but SIGKILL, and ends what that one ran."""
    write_job("escaper", ESCAPER)
    server = start_server(jobs_dir)
    _, supervisor, warden = escaping(server)
    for sig in (signal.SIGVTALRM, signal.SIGPWR, signal.SIGSYS, signal.SIGRTMIN, signal.SIGABRT):
        warden.send_signal(sig)  # none of them ends it either (a probe: each did)
    for proc in (warden, supervisor):
        proc.terminate()
    server.stop()  # SIGTERM, as the others
    wait_for(lambda: processes_of(server.data_dir) == [], what="the programs ended")
    warden.wait(10)
    said = (server.data_dir / LOG_NAME).read_text()
    assert f"warden: the supervisor {supervisor.pid} killed by signal 15" in said, said[-2000:]


def test_a_supervisor_whose_warden_is_killed_says_so_and_is_replaced(
    start_server, write_job, jobs_dir
) -> None:
    """A program of the same user can kill the warden (it is the supervisor's parent): the
    supervisor, told by the kernel, says at once that its programs would outlive it now, in
    its log and in the server's readiness. A parent cannot be given back, so once none of its
    programs runs it leaves, and the server's next supervisor comes with a warden: it used
    to stay unguarded for good, and ready said nothing of it."""
    write_job("escaper", ESCAPER)
    write_job("quick", 'command = ["true"]\n')
    server = start_server(jobs_dir)
    run, supervisor, warden = escaping(server)
    ready = f"{server.url}/health/ready"
    with server.client() as c:
        warden.kill()
        log = server.data_dir / LOG_NAME
        wait_for(lambda: f"the warden {warden.pid} is gone" in log.read_text(), what="said")
        said = wait_for(lambda: web.get(ready).json()["checks"].get("warden"), what="unready")
        assert f"the warden {warden.pid} is gone" in said
        assert supervisor.is_running()  # its program runs: it stays, and serves
        # but starts no program more: one would be unguarded too (under a steady load it
        # never ran dry, and was never replaced)
        held = c.submit("quick")
        wait_for(lambda: "the warden" in (c.run(held.id).reason or ""), what="refused")
        assert c.run(held.id).state is RunState.QUEUED
        assert len(processes_of(server.data_dir)) == 3  # the escaper's, no other
        # and claims none meanwhile: each queued run was claimed, refused and re-queued at
        # its backoff (1 s, 2 s, ... a minute), an attempt each time (a probe: 1,440 a day)
        time.sleep(4)  # three of those backoffs
        assert c.run(held.id).attempt == 1
        c.cancel(run.id)
        assert server.wait_run(c, run.id).state is RunState.CANCELLED
        supervisor.wait(20)  # nothing runs: it leaves
        wait_for(lambda: web.get(ready).status_code == 200, what="ready again")
        (after,) = supervisors_of(server.data_dir)
        assert after.pid != supervisor.pid and warden_of(after).is_running()
        done = server.wait_run(c, held.id)
        assert (done.state, done.attempt) == (RunState.SUCCEEDED, 2)  # the next one ran it
        again = c.submit("escaper")  # served by the new one, guarded
        wait_for(lambda: len(processes_of(server.data_dir)) == 3, what="its processes")
        c.cancel(again.id)
        assert server.wait_run(c, again.id).state is RunState.CANCELLED


def test_a_supervisor_stopped_past_its_lease_is_fenced_by_its_warden(
    start_server, write_job, jobs_dir: Path, database: str
) -> None:
    """A cluster's server SIGKILLed, its supervisor SIGSTOPped (a debugger, a stuck host):
    stopped, the supervisor cannot stop its programs when the lease runs out, and the other
    servers, reaping a margin later, would retry them beside them (a probe: three runs with
    two live attempts). Its warden, told each lease deadline, kills it then, and so ends them."""
    write_job("escaper", ESCAPER)
    env = {"RUNYARD_DATABASE_URL": database, "RUNYARD_LEASE_S": "1.5"}
    server = start_server(jobs_dir, env=env)
    _, supervisor, warden = escaping(server)
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL  # no renewal any more
    supervisor.suspend()
    wait_for(lambda: processes_of(server.data_dir) == [], what="the programs ended")
    warden.wait(10)
    said = (server.data_dir / LOG_NAME).read_text()
    assert f"warden: the supervisor {supervisor.pid} is stopped past its lease: killed" in said
