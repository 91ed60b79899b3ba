"""Health tells the truth: readiness follows the data directory's writability."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest

from tests.support import wait_for

pytestmark = pytest.mark.e2e


def test_ready_names_an_unwritable_data_dir_and_recovers(start_server) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr is needed to make a directory read-only for root")
    server = start_server()
    ready = f"{server.url}/health/ready"
    assert httpx.get(ready).status_code == 200
    subprocess.run(["chattr", "+i", str(server.data_dir)], check=True)
    try:
        wait_for(lambda: httpx.get(ready).status_code == 503, timeout=10, what="not ready")
        body = httpx.get(ready).json()
        assert "data_dir" in body["checks"]
        assert "not writable" in body["checks"]["data_dir"]
        assert httpx.get(f"{server.url}/health/live").status_code == 200
    finally:
        subprocess.run(["chattr", "-i", str(server.data_dir)], check=True)
    wait_for(lambda: httpx.get(ready).status_code == 200, timeout=10, what="ready again")


def test_health_reports_capacity(start_server) -> None:
    server = start_server(capacity=3)
    body = httpx.get(f"{server.url}/health").json()
    assert body["capacity"] == 3
    assert body["active"] == 0
    assert body["busy"] is False
    assert body["scheduler"]["status"] == "running"
    assert body["snapshot_at"]
