"""A sweep's job array refused (its partition closed for maintenance), then submitted a
few runs at a time, against the real single-node Slurm (tests/services/slurm.py): each run
only ever gets a task that was submitted for it."""

from __future__ import annotations

from pathlib import Path

from flowbatch import api
from flowbatch.daemon import Daemon
from flowbatch.runs import RunRecord

from .conftest import drop, run_until_idle
from .test_robust import needs_root
from .test_slurm import tick_until
from .test_slurm_arrays import runs_by_x, sweep_site
from .test_slurm_partitions import CLOSED, partition, scontrol

#: scontrol's changes of partitions are the cluster admin's (root, here)
pytestmark = needs_root

__all__ = ["partition"]  # the fixture


def test_runs_of_a_refused_array_that_go_a_few_at_a_time_run_their_own_tasks(
    tmp_path: Path, partition: str
) -> None:
    """sbatch refuses a sweep's array of 3 runs (its partition is INACTIVE): the runs wait
    with their intents (the array's name and their task). Once the partition is UP there
    is room for one run only (the profile's max_jobs, two other runs hold the rest): it
    goes alone; the two others go later. Neither may take a task of the first run's array
    (never submitted for them: they would end CANCELED, "left the queue before it
    started"): every run succeeds, in a task that ran its own folder."""
    site = sweep_site(tmp_path, partition=partition, max_jobs=3)
    assert scontrol("update", f"partitionname={partition}", "state=INACTIVE").returncode == 0
    drop(site, "s.yaml", {"workflow": "wf", "name": "s", "sweep": {"x": [1, 2, 3]}})
    daemon = Daemon(site)
    daemon.start()
    try:

        def records() -> list[RunRecord]:
            return [site.store.load(r["id"]) for r in api.list_runs(site)]

        def all_wait() -> bool:
            runs = records()
            return len(runs) == 3 and all(CLOSED in str(r.waiting) for r in runs)

        tick_until(daemon, all_wait)
        planned = {(r.handle or {}).get("job_name") for r in records()}
        assert len(planned) == 1 and None not in planned  # one array for the three
        busy = {"partition": "debug"}
        for name in ("b1", "b2"):  # two runs hold 2 of the 3 jobs the profile may have
            request = {"workflow": "wf", "name": name, "arguments": {"x": 7, "seconds": 3}}
            drop(site, f"{name}.yaml", {**request, "resources": busy})
        tick_until(daemon, lambda: len(daemon.runner.launched()) == 2)
        assert scontrol("update", f"partitionname={partition}", "state=UP").returncode == 0
        tick_until(daemon, lambda: len(daemon.runner.launched()) == 3)
        sweep = [r for r in records() if r.sweep]
        assert sorted(r.launched for r in sweep) == [False, False, True]  # one submitted
        (alone,) = [r.arguments["x"] for r in sweep if r.launched]
        run_until_idle(site, timeout=60, daemon=daemon)
    finally:
        daemon.stop()
        site.close()
    runs = runs_by_x(site)
    for x in (1, 2, 3):
        run = runs[x]
        assert run["state"] == "SUCCESS", (x, run["messages"])
        assert run["results"]["v"] == x
        job = run["handle"]["job_id"]
        assert not run["handle"].get("adopted")
        assert (Path(run["run_dir"]) / "logs" / f"slurm-{job}.out").exists()  # its task
    assert runs[7]["state"] == "SUCCESS"
    # the first went alone, in an array of its own; the two others later, together when
    # both blocking runs' ends were seen by one poll, else one at a time (2 or 3 arrays)
    first = runs[alone]["handle"]["array_job"]
    assert all(runs[x]["handle"]["array_job"] != first for x in (1, 2, 3) if x != alone)
