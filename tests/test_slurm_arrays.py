"""Sweeps as Slurm job arrays, against the real single-node Slurm (tests/services/slurm.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flowbatch import api
from flowbatch.daemon import Daemon, cancel_run
from flowbatch.site import Site

from .conftest import drop, make_site, run_until_idle, write_template
from .fixtures_slurm import slurm_config
from .services.slurm import SlurmCluster
from .test_slurm import logged, path_shim, scancel, tick_until

TEMPLATE = """
workflow:
  steps:
    - name: s
      action:
        commands:
          - sleep $[[seconds]]
          - test $[[x]] -ne 13
          - >-
            printf '{"v": %s}' $[[x]] > r.json
parameters:
  - {name: x, dtype: int}
  - {name: seconds, dtype: int, defaultValue: 0}
results:
  file: r.json
  schema: [{name: v, label: V, dtype: int}]
"""


def crash_once_after_launch(site: Site) -> None:
    """``flowbatch daemon --once`` killed (SIGKILL) right after its first launch (the
    sbatch done, its answer not recorded)."""
    crashed = subprocess.run(
        [sys.executable, "-m", "flowbatch", "--site", str(site.root), "daemon", "--once"],
        env={**os.environ, "FLOWBATCH_CRASH_AT": "launched:1"},
        capture_output=True,
        timeout=60,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr


def sweep_site(tmp_path: Path, **profile: Any) -> Site:
    site = make_site(tmp_path / "site", slurm_config(**profile))
    write_template(tmp_path / "tpl", TEMPLATE)
    api.install(site, tmp_path / "tpl", workflow_id="wf")
    return site


def runs_by_x(site: Site) -> dict[int, dict[str, Any]]:
    runs = [api.show_run(site, r["id"]) for r in api.list_runs(site)]
    return {r["arguments"]["x"]: r for r in runs}


@pytest.fixture
def shim_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every sbatch/squeue/sacct/scancel call is logged there (then the real one runs)."""
    log = tmp_path / "commands.log"
    monkeypatch.setenv("PATH", f"{path_shim(tmp_path / 'shim', log)}:{os.environ['PATH']}")
    return log


def test_a_20_point_sweep_is_one_job_array(
    tmp_path: Path, slurm_cluster: SlurmCluster, shim_log: Path
) -> None:
    site = sweep_site(tmp_path)
    drop(site, "s.yaml", {"workflow": "wf", "sweep": {"x": list(range(100, 120))}})
    run_until_idle(site, timeout=60)
    assert logged(shim_log, "sbatch") == 1
    runs = runs_by_x(site)
    assert sorted(runs) == list(range(100, 120))
    array_ids = {r["handle"]["array_job"] for r in runs.values()}
    assert len(array_ids) == 1
    (array_id,) = array_ids
    for x, run in runs.items():
        assert run["state"] == "SUCCESS", (x, run["messages"])
        assert run["results"]["v"] == x  # each task ran its own run folder
        task = run["handle"]["array_task"]
        assert run["handle"]["job_id"] == f"{array_id}_{task}"
        assert (Path(run["run_dir"]) / "logs" / f"slurm-{array_id}_{task}.out").exists()


def test_chunks_of_8_make_3_arrays_and_a_failing_point_fails_alone(
    tmp_path: Path, slurm_cluster: SlurmCluster, shim_log: Path
) -> None:
    site = sweep_site(tmp_path, max_array_size=8, array_throttle=2)
    drop(site, "s.yaml", {"workflow": "wf", "sweep": {"x": list(range(6, 26))}})
    run_until_idle(site, timeout=80)
    sbatch = [line for line in shim_log.read_text().splitlines() if line.startswith("sbatch")]
    assert len(sbatch) == 3
    scripts = [Path(line.split()[-1]).read_text() for line in sbatch]
    assert [s.count("#SBATCH --array=") for s in scripts] == [1, 1, 1]
    assert ["#SBATCH --array=0-7%2" in s for s in scripts] == [True, True, False]
    assert "#SBATCH --array=0-3%2" in scripts[2]
    runs = runs_by_x(site)
    assert len({r["handle"]["array_job"] for r in runs.values()}) == 3
    bad = runs.pop(13)
    assert bad["state"] == "ERROR"
    assert bad["messages"][0] == "step 1 (s) failed with exit code 1"
    assert any("FAILED" in m for m in bad["messages"])  # Slurm's word on that task
    for x, run in runs.items():
        assert run["state"] == "SUCCESS", (x, run["messages"])
        assert run["results"]["v"] == x


def test_cancel_one_task_of_an_array(tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    site = sweep_site(tmp_path)
    drop(
        site, "s.yaml", {"workflow": "wf", "sweep": {"x": [1, 2, 3]}, "arguments": {"seconds": 60}}
    )
    daemon = Daemon(site)
    daemon.start()
    jobs: list[str] = []
    try:
        tick_until(daemon, lambda: len(daemon.runner.launched()) == 3)
        runs = runs_by_x(site)
        jobs = [r["handle"]["job_id"] for r in runs.values()]
        cancel_run(site, daemon.runner, runs[2]["id"], 0, "not this one")
        assert runs_by_x(site)[2]["state"] == "CANCELED"
        job = runs[2]["handle"]["job_id"]
        tick_until(daemon, lambda: slurm_cluster.job_state(job) in ("CANCELLED", ""))
        for _ in range(3):
            daemon.tick()
        after = runs_by_x(site)
        # the others go on: PENDING while their tasks wait in Slurm's queue, then RUNNING
        assert {after[1]["state"], after[3]["state"]} <= {"PENDING", "RUNNING"}
        assert slurm_cluster.job_state(runs[1]["handle"]["job_id"]) in ("RUNNING", "PENDING")
        # one task cancelled outside flowbatch: only that run ends, CANCELED
        scancel(runs[3]["handle"]["job_id"])
        tick_until(daemon, lambda: runs_by_x(site)[3]["state"] not in ("PENDING", "RUNNING"))
        third = runs_by_x(site)[3]
        assert third["state"] == "CANCELED", third["messages"]
        # running: Slurm's CANCELLED; pending: the task left the queue before it started
        assert third["messages"][0].startswith("cancelled outside flowbatch: Slurm ")
        assert runs_by_x(site)[1]["state"] in ("PENDING", "RUNNING")
    finally:
        scancel(*jobs)
        daemon.stop()


def test_crash_between_array_submission_and_record(
    tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    """SIGKILL right after the array's sbatch returned: every run of it was recorded as
    an intent; the next daemon adopts the array's tasks by name, no second array."""
    site = sweep_site(tmp_path)
    drop(site, "s.yaml", {"workflow": "wf", "sweep": {"x": [1, 2, 3]}})
    crash_once_after_launch(site)
    before = [site.store.load(r["id"]) for r in api.list_runs(site)]
    assert {r.state.value for r in before} == {"PENDING"}
    assert all(r.handle and r.handle["submitting"] for r in before)
    names = {r.handle["job_name"] for r in before if r.handle}
    assert len(names) == 1
    run_until_idle(site, timeout=60)
    runs = runs_by_x(site)
    assert all(r["state"] == "SUCCESS" for r in runs.values()), runs
    assert all(r["handle"]["adopted"] for r in runs.values())
    listed = subprocess.run(
        ["squeue", "-h", "-r", "-t", "all", "--name", names.pop(), "-O", "JobArrayID"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert sorted(listed) == sorted(r["handle"]["job_id"] for r in runs.values())
