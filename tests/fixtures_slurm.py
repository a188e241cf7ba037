"""Fixtures for the Slurm tests: a real single-node Slurm (session) and sites using it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowbatch import api
from flowbatch.site import Site

from .services.slurm import SlurmCluster

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: a gentle but quick poll for the tests (the real defaults are 2 s .. 60 s)
TEST_POLL = {"floor": 0.1, "ceiling": 0.5}


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """slurmctld + slurmd on localhost, started once per session (installed if missing)."""
    cluster = SlurmCluster()
    try:
        cluster.start()
    except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"no Slurm test cluster: {exc}")
    yield cluster
    cluster.stop()


def slurm_config(**profile: Any) -> dict[str, Any]:
    """Site config with `executor: slurm` and a test profile (extra keys override)."""
    return {
        "executor": "slurm",
        "slurm": {"default": {"partition": "debug", "poll": TEST_POLL, **profile}},
    }


@pytest.fixture
def slurm_site(tmp_path: Path, slurm_cluster: SlurmCluster) -> Iterator[Site]:
    """A site whose default executor is Slurm, with helloworld installed."""
    from .conftest import make_site

    site = make_site(tmp_path / "site", slurm_config())
    api.install(site, EXAMPLES / "helloworld", workflow_id="helloworld")
    yield site
    site.close()
