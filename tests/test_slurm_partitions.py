"""A partition drained or made inactive by an admin (maintenance), against the real
single-node Slurm (tests/services/slurm.py): its runs wait, and go out once it is back.

Each test uses a partition of its own (the cluster is shared by the other tests, and by
other test sessions on this machine), made UP again in a ``finally`` whatever happens.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from flowbatch import api
from flowbatch.daemon import Daemon
from flowbatch.executors.slurm import SlurmExecutor
from flowbatch.lifecycle import iso

from .conftest import drop, run_until_idle, write_template
from .services.slurm import SlurmCluster
from .test_robust import needs_root
from .test_slurm import jobs_named, runs_by_name, sleep_site, tick_until
from .test_slurm_arrays import TEMPLATE as SWEEP_TEMPLATE

#: scontrol's changes of partitions are the cluster admin's (root, here)
pytestmark = needs_root

#: what sbatch says (Slurm 22.05) for a partition in State=DRAIN or State=INACTIVE
CLOSED = "Required partition not available (inactive or drain)"


def scontrol(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def partition(slurm_cluster: SlurmCluster) -> Iterator[str]:
    """A partition of this test's own on the cluster's node, UP again at the end (then
    removed when Slurm lets it: not while it still lists the jobs that ran there)."""
    name = f"fbmaint{os.getpid()}"
    scontrol("delete", f"partitionname={name}")
    made = scontrol("create", f"partitionname={name}", "nodes=localhost", "state=UP")
    assert made.returncode == 0 or "already exists" in made.stderr.lower(), made.stderr
    try:
        yield name
    finally:
        scontrol("update", f"partitionname={name}", "state=UP")
        scontrol("delete", f"partitionname={name}")


@pytest.mark.parametrize("state", ["INACTIVE", "DRAIN"])
def test_runs_wait_for_a_partition_closed_for_maintenance_then_run(
    tmp_path: Path, partition: str, state: str
) -> None:
    """sbatch refuses every job while the partition is INACTIVE or DRAIN: a run and a
    sweep (a job array) for it wait PENDING with Slurm's words, with few sbatch calls,
    while a request over the node's memory (in another partition) is an ERROR with
    Slurm's message, as one for a partition that does not exist is; once an
    admin makes the partition UP they are submitted and succeed."""
    site = sleep_site(tmp_path, partition=partition)
    write_template(tmp_path / "sweep-tpl", SWEEP_TEMPLATE)
    api.install(site, tmp_path / "sweep-tpl", workflow_id="wf")
    assert scontrol("update", f"partitionname={partition}", f"state={state}").returncode == 0
    drop(site, "r.yaml", {"workflow": "sleep", "name": "r"})
    drop(site, "s.yaml", {"workflow": "wf", "name": "s", "sweep": {"x": [1, 2]}})
    big = {"partition": "debug", "mem": "64G"}  # an open partition, over the node's memory
    drop(site, "big.yaml", {"workflow": "sleep", "name": "big", "resources": big})
    drop(site, "nope.yaml", {"workflow": "sleep", "name": "nope", "resources": {"partition": "x"}})
    daemon = Daemon(site)
    daemon.start()
    try:

        def all_wait() -> bool:
            runs = [site.store.load(r["id"]) for r in api.list_runs(site)]
            mine = [r for r in runs if r.name not in ("big", "nope")]
            assert {r.state.value for r in mine} <= {"PENDING"}, [r.messages for r in mine]
            return len(runs) == 5 and all(CLOSED in str(r.waiting) for r in mine)

        tick_until(daemon, all_wait, timeout=30)
        slurm = daemon.executors["slurm"]
        assert isinstance(slurm, SlurmExecutor)
        before = slurm.calls["sbatch"]
        (first,) = [r for r in api.list_runs(site) if r["name"] == "r"]
        record = site.store.run_dir(site.store.load(first["id"])) / "run.json"
        written = record.stat().st_ino, record.stat().st_mtime_ns
        deadline = time.monotonic() + 1
        ticks = 0
        while time.monotonic() < deadline:  # a second of ticks: all still wait
            daemon.tick()
            ticks += 1
            time.sleep(0.02)
        assert slurm.calls["sbatch"] - before <= 6 < ticks  # one try at a time, backing off
        # a waiting run's record is not rewritten at each tick (its note is unchanged)
        assert (record.stat().st_ino, record.stat().st_mtime_ns) == written
        records = [site.store.load(r["id"]) for r in api.list_runs(site)]
        waiting = [r for r in records if r.name not in ("big", "nope")]
        assert len(waiting) == 3 and {r.state.value for r in waiting} == {"PENDING"}
        (single,) = [r for r in records if r.name == "r"]
        said = str(single.waiting)
        assert f"partition '{partition}' takes no jobs now (drained or inactive)" in said
        assert f"Slurm said: sbatch: error: Batch job submission failed: {CLOSED}" in said
        big = runs_by_name(site)["big"]
        assert big["state"] == "ERROR"  # over the node's memory: refused for good
        assert "Requested node configuration is not available" in big["messages"][0]
        nope = runs_by_name(site)["nope"]
        assert nope["state"] == "ERROR" and "invalid partition" in nope["messages"][0].lower()
        assert scontrol("update", f"partitionname={partition}", "state=UP").returncode == 0
        run_until_idle(site, timeout=60, daemon=daemon)
    finally:
        daemon.stop()
        site.close()
    runs = [api.show_run(site, r["id"]) for r in api.list_runs(site)]
    (single,) = [r for r in runs if r["name"] == "r"]
    assert single["state"] == "SUCCESS", single["messages"]
    assert site.store.load(single["id"]).waiting is None  # the note went when it started
    sweep = [r for r in runs if r["workflow"] == "wf"]
    assert len(sweep) == 2 and {r["state"] for r in sweep} == {"SUCCESS"}
    assert len({r["handle"]["array_job"] for r in sweep}) == 1  # one array, as planned


def test_a_run_whose_job_waits_in_the_queue_starts_when_its_job_does(
    tmp_path: Path, partition: str
) -> None:
    """A partition in State=DOWN takes jobs, which pend (PartitionDown): the run is PENDING
    while its job waits, with Slurm's reason, and not submitted again. Once its job runs,
    the run is RUNNING, its started_at when the job started (Slurm's StartTime), not when
    it was submitted nor when the daemon saw it."""
    site = sleep_site(tmp_path, partition=partition)
    assert scontrol("update", f"partitionname={partition}", "state=DOWN").returncode == 0
    drop(site, "r.yaml", {"workflow": "sleep", "name": "r", "arguments": {"seconds": 2}})
    daemon = Daemon(site)
    daemon.start()

    def status() -> str:
        runs = api.list_runs(site)
        handle = site.store.load(runs[0]["id"]).handle if runs else None
        return str((handle or {}).get("status"))

    try:
        tick_until(daemon, lambda: status() == "PENDING (PartitionDown)")
        (run,) = daemon.runner.active.values()
        submitted = datetime.fromisoformat(str(run.created_at))
        job = str((run.handle or {})["job_id"])
        until = time.monotonic() + 1.0  # in the queue for a second, polled meanwhile
        while time.monotonic() < until:
            daemon.tick()
            time.sleep(0.1)
        run = site.store.load(run.id)
        assert (run.state.value, run.started_at) == ("PENDING", None)
        assert run.launched and run.handle and run.handle["job_id"] == job  # submitted once
        assert [c["state"] for c in run.history] == ["PENDING"]
        assert scontrol("update", f"partitionname={partition}", "state=UP").returncode == 0
        tick_until(daemon, lambda: status() == "RUNNING")
        run = site.store.load(run.id)  # as written in run.json
        assert run.state.value == "RUNNING" and not (run.handle or {}).get("queued")
        assert (run.handle or {})["job_id"] == job
        start = subprocess.run(
            ["squeue", "-h", "-t", "all", "-j", job, "-O", "StartTime"],
            env={**os.environ, "SLURM_TIME_FORMAT": "%s"},
            capture_output=True,
            text=True,
        ).stdout.strip()
        assert run.started_at == iso(float(start))
        # a second in the queue, and Slurm's StartTime has whole seconds: the job's start
        # is in a later second than the submission's
        started = datetime.fromisoformat(run.started_at).timestamp()
        assert started >= int(submitted.timestamp()) + 1, (submitted, run.started_at)
        run_until_idle(site, timeout=60, daemon=daemon)
    finally:
        daemon.stop()
        site.close()
    assert runs_by_name(site)["r"]["state"] == "SUCCESS"


def test_a_queued_run_is_polled_after_a_restart_and_never_submitted_again(
    tmp_path: Path, partition: str
) -> None:
    """A run whose job waits in Slurm's queue (a partition in State=DOWN) is PENDING and
    launched: a daemon started after the one that submitted it polls that job, submits
    nothing, and the run becomes RUNNING, then SUCCESS, in that job. `runs show` names
    the job and Slurm's reason while it waits."""
    from click.testing import CliRunner

    from flowbatch.cli import main

    site = sleep_site(tmp_path, partition=partition)
    assert scontrol("update", f"partitionname={partition}", "state=DOWN").returncode == 0
    drop(site, "r.yaml", {"workflow": "sleep", "name": "r", "arguments": {"seconds": 1}})
    daemon = Daemon(site)
    daemon.start()
    try:
        tick_until(daemon, lambda: "PartitionDown" in str(runs_by_name(site).get("r")))
    finally:
        daemon.stop()
    run = runs_by_name(site)["r"]
    job = run["handle"]["job_id"]
    assert (run["state"], run["handle"]["queued"]) == ("PENDING", True)
    shown = CliRunner().invoke(main, ["--site", str(site.root), "runs", "show", run["id"]])
    assert f"job {job}: PENDING (PartitionDown)" in shown.output, shown.output

    again = Daemon(site)
    again.start()
    try:
        until = time.monotonic() + 2.0  # several polls while the job still waits
        while time.monotonic() < until:
            again.tick()
            time.sleep(0.1)
        assert [r.id for r in again.runner.launched()] == [run["id"]]
        assert not again.runner.pending()  # not waiting for a launch: it has its job
        assert scontrol("update", f"partitionname={partition}", "state=UP").returncode == 0
        run_until_idle(site, timeout=60, daemon=again)
    finally:
        again.stop()
        site.close()
    run = runs_by_name(site)["r"]
    assert run["state"] == "SUCCESS" and run["handle"]["job_id"] == job, run["messages"]
    assert [c["state"] for c in run["history"]] == ["PENDING", "RUNNING", "SUCCESS"]
    assert list(jobs_named(run["handle"]["job_name"])) == [job]  # one job, ever


def test_a_queued_sweep_goes_out_once_and_a_cancel_ends_its_task(
    tmp_path: Path, partition: str
) -> None:
    """The three runs of a sweep whose array waits in the queue are all PENDING and
    launched after one sbatch (none is submitted again at later ticks); a cancel of one
    ends its task in Slurm and that run only, the others run once the partition is up."""
    from flowbatch.daemon import cancel_run

    from .test_slurm_arrays import runs_by_x, sweep_site

    site = sweep_site(tmp_path, partition=partition)
    assert scontrol("update", f"partitionname={partition}", "state=DOWN").returncode == 0
    drop(site, "s.yaml", {"workflow": "wf", "sweep": {"x": [1, 2, 3]}})
    daemon = Daemon(site)
    daemon.start()
    try:
        tick_until(daemon, lambda: len(daemon.runner.launched()) == 3)
        until = time.monotonic() + 1.5
        while time.monotonic() < until:
            daemon.tick()
            time.sleep(0.1)
        runs = runs_by_x(site)
        assert {r["state"] for r in runs.values()} == {"PENDING"}
        assert all(r["handle"]["queued"] for r in runs.values())
        (array,) = {r["handle"]["array_job"] for r in runs.values()}
        name = runs[1]["handle"]["job_name"]
        assert len(jobs_named(name, tasks=True)) == 3  # its three tasks
        cancel_run(site, daemon.runner, runs[2]["id"], 0, "not this one")
        assert runs_by_x(site)[2]["state"] == "CANCELED"
        task = runs[2]["handle"]["job_id"]
        assert task.startswith(f"{array}_")
        tick_until(daemon, lambda: jobs_named(name, tasks=True).get(task) in (None, "CANCELLED"))
        assert scontrol("update", f"partitionname={partition}", "state=UP").returncode == 0
        run_until_idle(site, timeout=90, daemon=daemon)
    finally:
        daemon.stop()
        site.close()
    runs = runs_by_x(site)
    assert {x: r["state"] for x, r in runs.items()} == {1: "SUCCESS", 2: "CANCELED", 3: "SUCCESS"}
    assert {r["handle"]["array_job"] for r in runs.values()} == {array}  # submitted once


def test_a_submission_interrupted_by_a_crash_is_adopted_as_the_daemon_starts(
    tmp_path: Path, partition: str
) -> None:
    """The daemon is SIGKILLed right after sbatch returned (the run has its intent
    only); its job waits in the queue (the partition is DOWN). The next daemon finds the
    job by its name as it starts, before any tick: the run is launched with that job
    (counted, polled), and it runs in it once the partition is up: one job, ever."""
    from .test_slurm import crash_right_after_sbatch

    site = sleep_site(tmp_path, partition=partition)
    assert scontrol("update", f"partitionname={partition}", "state=DOWN").returncode == 0
    drop(site, "r.yaml", {"workflow": "sleep", "name": "r", "arguments": {"seconds": 1}})
    crash_right_after_sbatch(site)
    before = site.store.load(api.list_runs(site)[0]["id"])
    assert before.handle and before.handle["submitting"] and "job_id" not in before.handle
    (job,) = jobs_named(before.handle["job_name"], tasks=True)
    daemon = Daemon(site)
    daemon.start()
    try:
        assert [r.id for r in daemon.runner.launched()] == [before.id]  # no tick yet
        run = site.store.load(before.id)
        assert run.queued and run.handle and run.handle["job_id"] == job
        assert scontrol("update", f"partitionname={partition}", "state=UP").returncode == 0
        run_until_idle(site, timeout=60, daemon=daemon)
    finally:
        daemon.stop()
        site.close()
    run = site.store.load(before.id)
    assert run.state.value == "SUCCESS" and run.handle and run.handle["job_id"] == job
    assert list(jobs_named(before.handle["job_name"], tasks=True)) == [job]


#: sbatch's words (Slurm 22.05) for a user at their association's MaxSubmitJobs
FULL_QUEUE = """#!/bin/bash
# the user's queue is full for the first {full} submissions (their other jobs end meanwhile)
n=$(cat {count} 2>/dev/null || echo 0); echo $((n+1)) > {count}
if [ "$n" -lt {full} ]; then
  echo "sbatch: error: AssocMaxSubmitJobLimit" >&2
  echo "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy \
(job submit limit, user's size and/or time limits)" >&2
  exit 1
fi
exec {real} "$@"
"""


def test_runs_wait_while_their_users_slurm_queue_is_full_then_run(
    tmp_path: Path, slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sbatch refusing a job because its user has as many jobs queued as their
    association allows (MaxSubmitJobs) refuses nothing for good: the limit clears as
    their other jobs end. A run and a sweep wait PENDING with Slurm's words and go out
    later (found by review: both ended ERROR, "check the resources"). The cluster here
    keeps no accounting, so the refusal is sbatch's own words from a shim; the jobs that
    go out after it are real."""
    shim = tmp_path / "shim"
    shim.mkdir()
    real = subprocess.run(["bash", "-c", "command -v sbatch"], capture_output=True, text=True)
    (shim / "sbatch").write_text(
        FULL_QUEUE.format(full=4, count=tmp_path / "count", real=real.stdout.strip())
    )
    (shim / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}:{os.environ['PATH']}")
    site = sleep_site(tmp_path)
    write_template(tmp_path / "sweep-tpl", SWEEP_TEMPLATE)
    api.install(site, tmp_path / "sweep-tpl", workflow_id="wf")
    drop(site, "r.yaml", {"workflow": "sleep", "name": "r"})
    drop(site, "s.yaml", {"workflow": "wf", "name": "s", "sweep": {"x": [1, 2]}})
    daemon = Daemon(site)
    daemon.start()
    try:

        def all_wait() -> bool:
            runs = [site.store.load(r["id"]) for r in api.list_runs(site)]
            assert {r.state.value for r in runs} <= {"PENDING"}, [r.messages for r in runs]
            return len(runs) == 3 and all("MaxSubmitJobs" in str(r.waiting) for r in runs)

        tick_until(daemon, all_wait, timeout=30)
        said = str(site.store.load(api.list_runs(site)[0]["id"]).waiting)
        assert "as many jobs in Slurm's queue as their association or QOS allows" in said
        assert "sbatch: error: AssocMaxSubmitJobLimit" in said
        run_until_idle(site, timeout=90, daemon=daemon)
    finally:
        daemon.stop()
        site.close()
    runs = [api.show_run(site, r["id"]) for r in api.list_runs(site)]
    assert {r["state"] for r in runs} == {"SUCCESS"}, [r["messages"] for r in runs]
    assert int((tmp_path / "count").read_text()) > 4  # refused, then submitted for real
