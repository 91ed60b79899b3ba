"""`runyard serve` with a setting it cannot use (a variable or a flag) refuses in one line per
problem, naming the setting as it was written and what it must be, with status 2 (as every
refusal to start) and no traceback, before anything is created. A probe found a pydantic
traceback for most of them, and values that passed the model to fail once serving started
(`RUNYARD_SHUTDOWN_TIMEOUT_S=inf`; a capacity past SQLite's integers, after the whole
runtime had started)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import free_port

pytestmark = pytest.mark.e2e

HUGE = "99999999999999999999"  # past SQLite's INTEGER (and any sane capacity)
MAX_CAPACITY = 4_194_304  # documented in docs/operations.md (config.MAX_CAPACITY)

CASES = {
    "log_format": ({"RUNYARD_LOG_FORMAT": "xml"}, [],
                   ["RUNYARD_LOG_FORMAT=xml: must be 'auto', 'json' or 'console'"]),
    "fsync": ({"RUNYARD_FSYNC": "maybe"}, [],
              ["RUNYARD_FSYNC=maybe: must be true or false (or 1/0, yes/no, on/off)"]),
    "max_schedules": ({"RUNYARD_MAX_SCHEDULES": "0"}, [],
                      ["RUNYARD_MAX_SCHEDULES=0: must be at least 1"]),
    "nan": ({"RUNYARD_JOBS_REFRESH_S": "nan"}, [],
            ["RUNYARD_JOBS_REFRESH_S=nan: must be a number, not nan"]),
    "shutdown_inf": ({"RUNYARD_SHUTDOWN_TIMEOUT_S": "inf"}, [],
                     ["RUNYARD_SHUTDOWN_TIMEOUT_S=inf: must be a finite number"]),
    "capacity_0": ({}, ["--capacity", "0"], ["--capacity 0: must be at least 1"]),
    "capacity_negative": ({}, ["--capacity", "-1"], ["--capacity -1: must be at least 1"]),
    "capacity_huge": ({}, ["--capacity", HUGE],
                      [f"--capacity {HUGE}: must be at most {MAX_CAPACITY}"]),
    "host_with_port": ({}, ["--host", "127.0.0.1:8000"],
                       ["--host 127.0.0.1:8000: must be a host name or an address without a "
                        "port (the port: --port)"]),
    "host_url": ({"RUNYARD_HOST": "http://example.com"}, [],
                 ["RUNYARD_HOST=http://example.com: must be a host name or an address, not a "
                  "URL (127.0.0.1, ::1, myhost)"]),
    "host_brackets": ({}, ["--host", "[localhost]"],
                      ["--host [localhost]: brackets hold an IPv6 address, such as [::1]"]),
    "host_unresolvable": ({}, ["--host", "no-such-host.invalid"],
                          ["cannot listen on no-such-host.invalid:{port}: Name or service not "
                           "known"]),
    "several": ({"RUNYARD_LOG_FORMAT": "xml", "RUNYARD_HEARTBEAT_S": "nan"},
                ["--port", "70000", "--drain-timeout", "0"],
                ["--port 70000: must be at most 65535",
                 "--drain-timeout 0: must be greater than 0",
                 "RUNYARD_HEARTBEAT_S=nan: must be a number, not nan",
                 "RUNYARD_LOG_FORMAT=xml: must be 'auto', 'json' or 'console'"]),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_a_setting_serve_cannot_use_is_one_line_naming_it(
    case: str, jobs_dir: Path, tmp_path: Path
) -> None:
    environ, flags, said = CASES[case]
    data = tmp_path / "data"
    argv = ["serve", "--jobs", str(jobs_dir), "--data-dir", str(data)]
    port = free_port()
    if "--port" not in flags:
        argv += ["--port", str(port)]
    done = subprocess.run(
        [sys.executable, "-m", "runyard", *argv, *flags],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path),
             "RUNYARD_LOG_FORMAT": "json", **environ},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "Traceback" not in out
    # an unresolvable host without tokens: the name, not the missing tokens, is the problem
    said = [line.replace("{port}", str(port)) for line in said]
    assert done.stderr.splitlines() == [f"runyard: refusing to start: {line}" for line in said]
    assert not data.exists()  # nothing started, nothing written
