"""What `runyard serve` loads: a server on its own never imports httpx, whose import brings its
own command line (click, rich's syntax and progress, pygments) — a third of a second of CPU
on every start. Only a cluster's relay and input fetch, and the Python client, load it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BUILD_A_SERVER = """
import json, sys
from pathlib import Path
import runyard.cli.main
from runyard.api.app import create_app
from runyard.config import Settings
root = Path(sys.argv[1])
(root / "jobs").mkdir()
create_app(Settings(data_dir=root / "data", jobs_dir=root / "jobs"))
print(json.dumps(sorted(m for m in ("httpx", "httpx_sse") if m in sys.modules)))
"""


def test_a_server_on_its_own_does_not_import_httpx(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", BUILD_A_SERVER, str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_the_client_loads_httpx_when_it_makes_one() -> None:
    code = "import sys\nfrom runyard.client import Client\nClient('http://127.0.0.1:9').close()\n"
    code += "print('httpx' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "True"


# The supervisor and the warden start with the server and outlive it: none of the server's
# heavy layers (a review found the supervisor importing `runyard.jobs`, whose package pulls
# the job registry and pydantic: its start took 300 ms of CPU instead of 50, its memory grew).
HEAVY = ("pydantic", "runyard.jobs", "runyard.store", "runyard.api", "fastapi", "starlette")


@pytest.mark.parametrize(
    "module", ["runyard.execution.supervisor_process", "runyard.execution.warden"]
)
def test_the_supervisors_processes_import_nothing_heavy(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        f"print(' '.join(sorted(m for m in sys.modules if m.startswith({HEAVY!r}))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
