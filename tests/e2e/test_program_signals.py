"""A program starts with every signal at its default, whatever the server was started with.
An ignored signal stays ignored across exec: a server started from a script as a background
job (SIGINT and SIGQUIT ignored), under nohup (SIGHUP), or by a harness that ignores SIGUSR1
handed that on to every program, which then ran on through `kill -USR1 $$` and succeeded."""

from __future__ import annotations

import signal

import pytest

from runyard.models import RunState

pytestmark = pytest.mark.e2e

IGNORED = (signal.SIGUSR1, signal.SIGQUIT, signal.SIGALRM, signal.SIGTERM, signal.SIGRTMIN + 1)
IGNORING = [
    "-c",
    "import runpy, signal, sys\n"
    f"for sig in {[int(s) for s in IGNORED]}:\n"
    "    signal.signal(sig, signal.SIG_IGN)\n"
    "sys.argv[0] = 'runyard'\n"
    "runpy.run_module('runyard', run_name='__main__')\n",
]
SHOW = "grep '^SigIgn' /proc/self/status; kill -USR1 $$; sleep 5"


@pytest.mark.parametrize("extra", ["", "[limits]\nmemory_mb = 512\n"], ids=["posix_spawn", "popen"])
def test_signals_the_server_was_started_with_ignored_are_not_ignored_by_programs(
    start_server, write_job, jobs_dir, extra: str
) -> None:
    write_job("selfkill", f'command = ["sh", "-c", "{SHOW}"]\n{extra}')
    server = start_server(jobs_dir, entry=IGNORING)
    with server.client() as c:
        run = server.wait_run(c, c.submit("selfkill").id, timeout=60)
        log = c.logs(run.id)[0].decode()
    assert run.state is RunState.FAILED, (run.reason, log)
    assert "SIGUSR1" in (run.reason or ""), run.reason
    label, mask = log.split()[:2]
    assert label == "SigIgn:", log
    assert [sig for sig in IGNORED if int(mask, 16) >> (sig - 1) & 1] == [], log
