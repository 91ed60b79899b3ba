from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from runyard.tree_removal import remove_tree
from tests.slurm_cluster import stop_shared_cluster
from tests.support import EXAMPLE_JOBS, ServerProcess, free_port, kill_everything

# Tests that run side by side (pytest-xdist) but must not compete with each other for the
# machine: lease and self-fencing timings, the small tmpfs that a run fills, hundreds of
# streams at once. One group runs on one worker, in turn. The browser tests share a group
# so that one Chromium serves each module.
XDIST_GROUPS = {
    "test_cluster.py": "timing",
    "test_cluster_lives.py": "timing",
    "test_self_fencing.py": "timing",
    "test_disk_full.py": "timing",
    "test_stream_resources.py": "timing",
    "test_stream_shutdown.py": "timing",
    "test_dashboard.py": "browser",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = XDIST_GROUPS.get(item.path.name)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session", autouse=True)
def _slurm_cluster_stopped() -> Iterator[None]:
    """Whatever started this process's Slurm cluster (tests/slurm_cluster.py), it stops here."""
    yield
    stop_shared_cluster()


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Path:
    """A writable jobs directory for tests that declare their own jobs."""
    d = tmp_path / "jobs"
    d.mkdir()
    return d


@pytest.fixture
def write_job(jobs_dir: Path) -> Callable[[str, str], Path]:
    def write(name: str, toml: str) -> Path:
        path = jobs_dir / f"{name}.toml"
        path.write_text(toml)
        return path

    return write


@pytest.fixture
def start_server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ServerProcess]]:
    """Start real `runyard serve` processes on loopback ports; all are stopped afterwards and
    every process of their runs (and their supervisor) is killed."""
    if "database" in request.fixturenames:
        # set up first so it is dropped last: servers (and the e2e leak check, which still
        # talks to them) must be done with it before it goes, whatever the parameter order
        request.getfixturevalue("database")
    started: list[ServerProcess] = []
    data_dirs: set[Path] = set()

    def start(
        jobs: Path = EXAMPLE_JOBS,
        *,
        capacity: int = 4,
        data_dir: Path | None = None,
        env: dict[str, str] | None = None,
        entry: list[str] | None = None,
        port: int | None = None,
        health: str = "/health/ready",
    ) -> ServerProcess:
        data = data_dir or tmp_path / "data"
        data_dirs.add(data)
        server = ServerProcess(
            data_dir=data,
            jobs_dir=jobs,
            port=port or free_port(),
            capacity=capacity,
            log_path=tmp_path / f"server-{len(started)}.log",
            env=env or {},
            entry=entry or ["-m", "runyard"],
            health=health,
        )
        started.append(server)  # first: one that never got ready is stopped all the same
        return server.start()

    yield start
    for server in started:
        if server.proc is not None:
            server.stop()
    for data in data_dirs:
        kill_everything(data)


@pytest.fixture
def deep_trees(tmp_path: Path) -> Iterator[Path]:
    """For a test that makes directories deeper than Python's recursion limit: removes its
    tmp_path without recursion afterwards (list it before start_server, so servers are gone
    first). pytest's own clean-up of old temporary directories would otherwise fail on them
    in a later session (shutil.rmtree recurses on Python 3.11)."""
    yield tmp_path
    with contextlib.suppress(OSError):
        remove_tree(tmp_path)


@pytest.fixture
def examples_copy(tmp_path: Path) -> Path:
    """The example jobs and programs copied, for tests that must not touch the repo."""
    dest = tmp_path / "examples"
    shutil.copytree(EXAMPLE_JOBS.parent, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest / "jobs"


POSTGRES = os.environ.get(
    "RUNYARD_TEST_POSTGRES", "host=127.0.0.1 port=5432 dbname=test user=postgres"
)


@pytest.fixture
def database() -> Iterator[str]:
    """A PostgreSQL database of its own on the machine's server, dropped afterwards."""
    name = f"ry_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
