"""A node down or drained for maintenance, and a request for more nodes than a partition
has, against the real single-node Slurm (tests/services/slurm.py).

Slurm 22.05, for a job of one node while the partition's only node is drained (or down):
``PENDING`` with, in place of the reason, "Nodes required for job are DOWN, DRAINED or
reserved for jobs in higher priority partitions"; for ``--nodes=2`` in a partition of
one node (sbatch takes it under EnforcePartLimits=NO): ``PENDING (PartitionNodeLimit)``,
drained or not. Slurm documents PartitionNodeLimit as also meaning that required nodes
are DOWN or DRAINED: flowbatch ends such a job's run only when its node count is over
its partition's (TotalNodes, MaxNodes, MinNodes), and waits out a maintenance.

The node is the whole test session's (and other sessions' on this machine): it is
drained for a few seconds only, and resumed in a ``finally`` whatever happens. It is
never set DOWN here: that would end the other tests' running jobs (NODE_FAIL).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowbatch import api
from flowbatch.daemon import Daemon

from .conftest import drop, run_until_idle
from .services.slurm import SlurmCluster
from .test_robust import needs_root
from .test_slurm import runs_by_name, scancel, sleep_site, tick_until

#: scontrol's changes of nodes are the cluster admin's (root, here)
pytestmark = needs_root

NODE = "localhost"
#: what squeue shows for a one-node job while the partition's nodes are drained or down
DRAINED = "Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority"


def scontrol(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=30)


def resume() -> None:
    """The node takes jobs again (nothing to do when it already does)."""
    done = scontrol("update", f"nodename={NODE}", "state=resume")
    assert done.returncode == 0 or "invalid node state" in done.stderr.lower(), done.stderr


@pytest.fixture
def drained(slurm_cluster: SlurmCluster) -> Iterator[None]:
    """The cluster's node drained for the test (its running jobs go on), then resumed."""
    made = scontrol("update", f"nodename={NODE}", "state=drain", "reason=flowbatch-test")
    assert made.returncode == 0, made.stderr
    try:
        yield
    finally:
        resume()


def test_a_drained_node_makes_the_run_wait_with_slurms_words_then_run(
    tmp_path: Path, drained: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node maintenance is no end: the run stays PENDING (its job submitted, waiting in
    Slurm's queue), its status showing Slurm's words, for longer than NEVER_START (here
    1 s), and runs once the node is resumed."""
    from flowbatch.executors import slurm as slurm_module

    monkeypatch.setattr(slurm_module, "NEVER_START", 1.0, raising=False)
    site = sleep_site(tmp_path)
    drop(site, "r.yaml", {"workflow": "sleep", "name": "r"})
    daemon = Daemon(site)
    daemon.start()
    job = ""
    try:

        def status() -> str:
            handle = runs_by_name(site).get("r", {}).get("handle") or {}
            return str(handle.get("status", ""))

        # Slurm gives the reason at its next scheduling pass: on a loaded machine that took
        # longer than the 30 s default (seen once in a full run beside other work)
        tick_until(daemon, lambda: DRAINED in status(), timeout=120)
        run = runs_by_name(site)["r"]
        job = run["handle"]["job_id"]
        assert status() == f"PENDING ({DRAINED} partitions)"
        until = time.monotonic() + 3  # NEVER_START three times over
        while time.monotonic() < until:
            daemon.tick()
            time.sleep(0.1)
        run = runs_by_name(site)["r"]
        assert run["state"] == "PENDING" and DRAINED in status(), run
        assert run["handle"]["queued"] and run["started_at"] is None
        resume()
        run_until_idle(site, timeout=60, daemon=daemon)
    finally:
        resume()
        daemon.stop()
        if job:
            scancel(job)
        site.close()
    run = runs_by_name(site)["r"]
    assert run["state"] == "SUCCESS", run["messages"]
    assert run["handle"]["job_id"] == job  # the same job, never submitted again


def test_more_nodes_than_the_partition_has_ends_the_run_with_slurms_reason(
    tmp_path: Path, slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--nodes=2`` in a partition of one node: sbatch takes it, and it pends for ever
    (PartitionNodeLimit). Past NEVER_START (here 1 s) its node count is checked against
    the partition's: over it, the job is cancelled and the run is an ERROR that says
    so, with the numbers, not retried."""
    from flowbatch.executors import slurm as slurm_module

    monkeypatch.setattr(slurm_module, "NEVER_START", 1.0, raising=False)
    site = sleep_site(tmp_path, extra=["--nodes=2"])
    drop(site, "r.yaml", {"workflow": "sleep", "name": "r", "retries": 1})
    try:
        run_until_idle(site, timeout=30)
    finally:
        for run in api.list_runs(site):
            job = (api.show_run(site, run["id"]).get("handle") or {}).get("job_id")
            if job:
                scancel(job)
        site.close()
    run = runs_by_name(site)["r"]
    assert run["state"] == "ERROR", run
    (message,) = run["messages"]
    job = run["handle"]["job_id"]
    assert f"Slurm will not start job {job}: it has been PENDING (PartitionNodeLimit)" in message
    assert "(it asks 2 nodes; partition debug has 1 node)" in message
    assert "flowbatch cancelled it" in message
    assert not any("retry" in str(h.get("message")) for h in run["history"])  # no retry
