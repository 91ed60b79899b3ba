"""A server out of descriptors says so: 503 `out-of-resources`, never a 403 or a 404 about
a file that is there, an empty log, or a 200 cut short (an attacker's probe held 160
downloads open against a low descriptor limit)."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from tests import web

pytestmark = pytest.mark.e2e

WRITES = 'command = ["sh", "-c", "echo made > outputs/a.txt; echo logged"]\n'


def test_out_of_descriptors_is_503_for_artifacts_and_logs(
    start_server, write_job, jobs_dir: Path
) -> None:
    write_job("writes", WRITES)
    server = start_server(jobs_dir)
    assert server.proc is not None
    pid = server.proc.pid
    with web.Client(base_url=server.url, timeout=30) as http:  # one kept-alive connection
        run = http.post("/v1/runs", json={"job": "writes"}, headers={"prefer": "wait=30"}).json()
        assert run["state"] == "succeeded", run
        artifact = f"/v1/runs/{run['id']}/artifacts/outputs/a.txt"
        logs = f"/v1/runs/{run['id']}/logs"
        assert http.get(artifact).content == b"made\n"
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        # under what is open already: every new descriptor fails (EMFILE), whatever the others
        # the server closes meanwhile (a limit at what was open left one spare, at times)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (3, hard))
        try:
            for path in (artifact, logs):
                resp = http.get(path)
                assert resp.status_code == 503, (path, resp.status_code, resp.text)
                problem = resp.json()
                assert problem["type"].endswith("out-of-resources"), problem
                assert "EMFILE" in problem["detail"]
                assert resp.headers.get("retry-after")
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        assert http.get(artifact).content == b"made\n"  # back as soon as there are some
        assert http.get(logs).text == "logged\n"
