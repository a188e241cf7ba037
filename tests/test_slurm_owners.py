"""Lookups by job name see only the jobs of the user who submits the run's, against the
real single-node Slurm (tests/services/slurm.py).

A job name is no secret (``fb-<site>-<run id>``, and run ids are on the leaderboards),
and squeue lists every user's jobs: another user's job of a run's name must never be
adopted as the run's (nor cancelled by the run's ``scancel --name``). The other users'
jobs here are held (``--hold``): they never take the cluster's cores.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

from flowbatch import api
from flowbatch.daemon import Daemon
from flowbatch.executors.base import Launch
from flowbatch.executors.slurm import SlurmExecutor

from .conftest import drop, make_site, run_until_idle, write_template
from .fixtures_slurm import slurm_config
from .fixtures_ssh import SshEnv
from .services.slurm import SlurmCluster
from .test_robust import _user, needs_root
from .test_slurm import (
    SLEEP_TEMPLATE,
    crash_right_after_sbatch,
    jobs_named,
    one_tick,
    real,
    runs_by_name,
    scancel,
    sleep_site,
)
from .test_slurm_arrays import TEMPLATE as SWEEP_TEMPLATE
from .test_slurm_arrays import crash_once_after_launch

OTHER = pwd.getpwuid(65534).pw_name  # nobody


def held_job(name: str, user: str | None, *extra: str) -> str:
    """A held job named ``name`` of ``user`` (None: this process's own, root): listed by
    squeue, never started."""
    argv = [real("sbatch"), "--parsable", "--hold", "-J", name, "-o", "/dev/null", "-D", "/"]
    argv += [*extra, "--wrap", "true"]
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)
    return out.stdout.strip().split(";")[0]


def state_of(job_id: str) -> str:
    out = subprocess.run(
        [real("squeue"), "-h", "-t", "all", "-j", job_id, "-O", "State"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


@needs_root
def test_a_job_of_the_runs_name_submitted_by_another_user_is_not_adopted(
    tmp_path: Path, public_tmp: Path, slurm_cluster: SlurmCluster
) -> None:
    """A root daemon is killed right after its sbatch of fbrunner's run, before the job
    id is recorded; meanwhile root itself (the daemon's user) and another user submit a
    job of the run's name, both newer. The next daemon adopts fbrunner's own job: the
    lookup asks for the jobs of the user who submits the run's (its owner, by uid)."""
    owner = _user("fbrunner")
    site = make_site(public_tmp / "site", slurm_config())
    write_template(tmp_path / "tpl", SLEEP_TEMPLATE)
    api.install(site, tmp_path / "tpl", workflow_id="sleep")
    # still running at the next daemon's first tick (a job of 0 s may have ended by
    # then on a busy machine, its run no longer active: seen once in a full suite)
    doc = {"workflow": "sleep", "name": "r", "arguments": {"seconds": 5}}
    request = drop(site, "r.yaml", doc)
    os.chown(request, owner.pw_uid, owner.pw_gid)
    crash_right_after_sbatch(site)
    before = site.store.load(api.list_runs(site)[0]["id"])
    assert before.handle is not None
    name = before.handle["job_name"]
    (own,) = jobs_named(name)
    others = [held_job(name, None), held_job(name, OTHER)]
    daemon = Daemon(site)
    daemon.start()
    try:
        daemon.tick()
        (run,) = daemon.runner.active.values()
        assert run.handle is not None
        assert run.handle["job_id"] == own and run.handle.get("adopted") is True, run.handle
        assert run.handle["uid"] == owner.pw_uid  # the intent said whose job to look for
        run_until_idle(site, timeout=60, daemon=daemon)
        assert [state_of(job) for job in others] == ["PENDING", "PENDING"]  # left alone
    finally:
        daemon.stop()
        scancel(*others)
        site.close()
    assert runs_by_name(site)["r"]["state"] == "SUCCESS"


@needs_root
def test_a_cancel_by_name_leaves_another_users_job_of_that_name(
    tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    """A PENDING run with only its intent (its job name) is cancelled: ``scancel --name``
    ends the run's own job, never another user's job of that name (root's scancel
    could)."""
    site = sleep_site(tmp_path)
    drop(site, "r.yaml", {"workflow": "sleep", "name": "r", "arguments": {"seconds": 120}})
    crash_right_after_sbatch(site)
    run = site.store.load(api.list_runs(site)[0]["id"])
    assert run.handle is not None
    name = run.handle["job_name"]
    (own,) = jobs_named(name)
    other = held_job(name, OTHER)
    try:
        api.request_cancel(site, run.id, "not needed")
        one_tick(site)  # the cancel is applied before anything is dispatched
        assert api.show_run(site, run.id)["state"] == "CANCELED"
        assert state_of(own) in ("CANCELLED", "COMPLETING")
        assert state_of(other) == "PENDING"
    finally:
        scancel(own, other)
        site.close()


@needs_root
def test_an_array_of_the_sweeps_name_submitted_by_another_user_is_not_adopted(
    tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    """As for a single job: the daemon is killed right after the array's sbatch, another
    user submits an array of that name; the next daemon adopts its own array's tasks."""
    site = make_site(tmp_path / "site", slurm_config())
    write_template(tmp_path / "tpl", SWEEP_TEMPLATE)
    api.install(site, tmp_path / "tpl", workflow_id="wf")
    drop(site, "s.yaml", {"workflow": "wf", "sweep": {"x": [1, 2]}})
    crash_once_after_launch(site)
    before = [site.store.load(r["id"]) for r in api.list_runs(site)]
    (name,) = {r.handle["job_name"] for r in before if r.handle}
    own = {job.split("_")[0] for job in jobs_named(name)}
    other = held_job(name, OTHER, "--array=0-1")
    daemon = Daemon(site)
    daemon.start()
    try:
        daemon.tick()
        # from each run's record: a loaded machine may have seen the tasks end already,
        # in that same tick (the run then left the active ones)
        arrays = {(site.store.load(r.id).handle or {}).get("array_job") for r in before}
        assert arrays == own, arrays
        run_until_idle(site, timeout=60, daemon=daemon)
        assert state_of(f"{other}_0") == "PENDING"
    finally:
        daemon.stop()
        scancel(other)
        site.close()
    states = {api.show_run(site, r["id"])["state"] for r in api.list_runs(site)}
    assert states == {"SUCCESS"}


@needs_root
def test_via_ssh_the_lookup_sees_the_jobs_of_the_hosts_user(
    ssh: SshEnv, slurm_cluster: SlurmCluster, public_tmp: Path
) -> None:
    """Over SSH the host's configured user (fbtest) submits: an earlier submission of the
    run is looked for among fbtest's jobs, not root's (the daemon's) nor anyone else's."""
    config = ssh.config()
    config.update(slurm_config(via="a"))
    site = make_site(public_tmp / "site", config)
    slurm = SlurmExecutor(
        "slurm", "default", site.config.slurm["default"], site_name="site", config=site.config
    )
    run_dir = public_tmp / "run"
    job = Launch("r1", run_dir, "run.sh")
    job.handle = slurm.intent(job)
    name = job.handle["job_name"]
    jobs = [held_job(name, "fbtest"), held_job(name, None), held_job(name, OTHER)]
    try:
        handle = slurm.launch(job)
        assert handle["job_id"] == jobs[0] and handle["adopted"] is True
        assert not run_dir.exists()  # nothing submitted
    finally:
        scancel(*jobs)
        slurm.close()
        site.close()
