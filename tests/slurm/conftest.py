from __future__ import annotations

import pytest

from tests.slurm_cluster import SlurmCluster, shared_cluster


@pytest.fixture
def slurm_cluster() -> SlurmCluster:
    """The real one-node Slurm cluster of this test process (started on first use, stopped
    at the end of the session). Its jobs run as root; submit them with `cluster.env`."""
    return shared_cluster()
