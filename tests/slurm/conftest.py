from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.slurm_cluster import SlurmCluster


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A real one-node Slurm cluster for the session of an xdist worker (about 1.2 s to
    start, 0.1-0.3 s to stop). Its jobs run as root; submit them with `cluster.env`."""
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster
