"""What a restarted (or cancelling) root daemon finds in Slurm by a run's job name, against
the real single-node Slurm (tests/services/slurm.py): an intent an older flowbatch wrote
(no ``uid``), a run of a uid without an entry in the account database, and the record a
refused submission leaves in squeue.

Seen on Slurm 22.05 (the evidence these tests stand on):

- ``squeue --user 59999 --name N`` for a uid without a passwd entry: "squeue: error:
  Invalid user: 59999", exit status 0, nothing listed, even where that uid has a job
  named N; ``scancel --name N --user 59999``: "scancel: error: Invalid user name: 59999",
  exit 1.
- sbatch as such a uid takes the job; slurmctld then logs "_fill_cred_gids: getpwuid
  failed for uid=59999", "Can not create job credential, attempting to requeue batch
  JobId=..." and requeues it: PENDING (BeginTime), tried again every two minutes, for
  ever.
- ``sbatch --mem=64G`` on a node of 1000 MB: exit 1, "Memory specification can not be
  satisfied / Batch job submission failed: Requested node configuration is not
  available", and a job of that name stays listed ``FAILED BadConstraints`` (exit code
  0:1) for MinJobAge; an array's tasks too (``15_0``, ``15_1``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from flowbatch import api
from flowbatch.runs import RunRecord
from flowbatch.site import Site

from .conftest import drop, make_site, run_until_idle, write_template
from .fixtures_slurm import slurm_config
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
)
from .test_slurm_owners import OTHER, held_job, state_of
from .test_slurm_unit import unknown_uid

#: a root daemon submits as the runs' owners
pytestmark = needs_root

#: how the daemon words a run of a uid Slurm cannot look up
NO_ACCOUNT = "has no entry in the account database"


def submitted_then_crashed(site: Site) -> tuple[RunRecord, str, str]:
    """The site's one run, its daemon killed right after its sbatch: the run as recorded,
    its job's name and the one job of that name Slurm holds."""
    crash_right_after_sbatch(site)
    run = site.store.load(api.list_runs(site)[0]["id"])
    assert run.handle is not None
    name = run.handle["job_name"]
    (own,) = jobs_named(name)
    return run, name, own


def owned_site(tmp_path: Path, public_tmp: Path, uid: int, **request: object) -> Site:
    """A Slurm site (where any user can reach its runs' folders) with one request of the
    `sleep` workflow owned by ``uid``."""
    site = make_site(public_tmp / "site", slurm_config())
    write_template(tmp_path / "tpl", SLEEP_TEMPLATE)
    api.install(site, tmp_path / "tpl", workflow_id="sleep")
    path = drop(site, "r.yaml", {"workflow": "sleep", "name": "r", **request})
    os.chown(path, uid, uid)
    return site


def cancel_all(name: str) -> None:
    """Every job of that name (any user's), as the cluster's admin."""
    subprocess.run([real("scancel"), "--name", name], check=False, capture_output=True)


def wait_for_state(job: str, states: set[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while state_of(job) not in states:
        assert time.monotonic() < deadline, (job, state_of(job))
        time.sleep(0.2)


# -- 1. an intent recorded before the uid was -------------------------------------------------


def test_a_cancel_by_name_of_an_older_intent_finds_the_owners_job(
    tmp_path: Path, public_tmp: Path, slurm_cluster: SlurmCluster
) -> None:
    """A root daemon killed right after its sbatch of fbrunner's run; the intent in
    run.json is an older flowbatch's (no ``uid``). The run is cancelled: ``scancel
    --name`` asks for the owner's jobs (from the run's record), not root's: fbrunner's
    job ends, root's own held job of that name is left alone."""
    owner = _user("fbrunner")
    site = owned_site(tmp_path, public_tmp, owner.pw_uid, arguments={"seconds": 120})
    run, name, own = submitted_then_crashed(site)
    assert run.handle is not None and run.handle.pop("uid") == owner.pw_uid
    site.store.write(run)  # as an older flowbatch recorded it
    other = held_job(name, None)  # root's (the daemon's user's) job of the run's name
    try:
        api.request_cancel(site, run.id, "not needed")
        one_tick(site)
        assert api.show_run(site, run.id)["state"] == "CANCELED"
        wait_for_state(own, {"CANCELLED"})
        assert state_of(other) == "PENDING"
    finally:
        scancel(own, other)
        site.close()


# -- 3. a uid without an entry in the account database ---------------------------------------


def test_a_run_of_a_uid_without_an_account_ends_with_why(
    tmp_path: Path, public_tmp: Path, slurm_cluster: SlurmCluster
) -> None:
    """sbatch takes the job of a uid without a passwd entry; Slurm requeues it for ever
    (PENDING (BeginTime)), and the run stayed RUNNING with it. It ends in ERROR saying
    why, and its job is cancelled."""
    uid = unknown_uid()
    site = owned_site(tmp_path, public_tmp, uid)
    name = ""
    try:
        run_until_idle(site, timeout=30)
        run = runs_by_name(site)["r"]
        name = run["handle"]["job_name"]
    finally:
        for r in api.list_runs(site):
            cancel_all(f"fb-site-{r['id']}")
        site.close()
    assert run["state"] == "ERROR", run
    # a job that Slurm started, then requeued (slurmctld could not make its credential),
    # said so first: the run waited with it (found by CI: seen once)
    *before, message = run["messages"]
    assert all("waits in the queue" in m for m in before), before
    job = run["handle"]["job_id"]
    assert message.startswith(f"Slurm will not start job {job}: it is PENDING (BeginTime), ")
    assert f"its user, uid {uid} (the run's owner), {NO_ACCOUNT}" in message
    assert message.endswith("flowbatch cancelled it")
    assert jobs_named(name) == {job: "CANCELLED"}


def test_an_interrupted_submission_of_such_a_uid_is_found_and_not_submitted_twice(
    tmp_path: Path, public_tmp: Path, slurm_cluster: SlurmCluster
) -> None:
    """The daemon is killed right after sbatch of such a uid's run: the next one looked
    for it with ``squeue --user <uid>``, which lists nothing for that uid ("Invalid
    user"), and submitted it a second time. It finds the job (looked up by name, kept
    by uid) and ends the run with why."""
    uid = unknown_uid()
    site = owned_site(tmp_path, public_tmp, uid)
    _, name, own = submitted_then_crashed(site)
    try:
        run_until_idle(site, timeout=30)
    finally:
        cancel_all(name)
        site.close()
    shown = runs_by_name(site)["r"]
    assert shown["state"] == "ERROR", shown
    assert shown["handle"]["job_id"] == own and shown["handle"]["adopted"] is True
    *before, last = shown["messages"]  # a requeue of a job Slurm had started: said first
    assert NO_ACCOUNT in last and all("waits in the queue" in m for m in before), before
    assert jobs_named(name) == {own: "CANCELLED"}  # one job: not submitted twice


def test_a_cancel_by_name_of_such_a_uids_run_cancels_its_job(
    tmp_path: Path, public_tmp: Path, slurm_cluster: SlurmCluster
) -> None:
    """``scancel --name ... --user <uid>`` fails for such a uid ("Invalid user name"),
    and the cancel was kept and sent again for ever, the job left queued: the uid's jobs
    of that name are looked up and cancelled by id."""
    uid = unknown_uid()
    site = owned_site(tmp_path, public_tmp, uid)
    run, name, own = submitted_then_crashed(site)
    other = held_job(name, OTHER)  # another user's job of that name: left alone
    try:
        api.request_cancel(site, run.id, "not needed")
        one_tick(site)
        assert api.show_run(site, run.id)["state"] == "CANCELED"
        wait_for_state(own, {"CANCELLED"})
        assert state_of(other) == "PENDING"
        assert not (site.root / "slurm-abandoned" / "default").is_dir() or not any(
            (site.root / "slurm-abandoned" / "default").iterdir()
        )  # nothing left to send again
    finally:
        cancel_all(name)
        site.close()


# -- 4. the record a refused submission leaves ------------------------------------------------

#: sbatch, then (once, when it was refused) the daemon that ran it is killed: the
#: flowbatch process among the shim's ancestors, found by walking up from the shim's
#: parent (never by name), SIGKILLed as a crash would end it
KILL_AFTER_REFUSAL = """#!/bin/bash
{real} "$@"
rc=$?
if [ "$rc" -ne 0 ] && [ -e {flag} ]; then
  rm -f {flag}
  p=$PPID
  while [ "$p" -gt 1 ]; do
    if tr '\\0' ' ' < /proc/$p/cmdline | grep -q -- '-m flowbatch'; then
      kill -KILL "$p"
      break
    fi
    p=$(sed 's/.*) //' /proc/$p/stat | cut -d' ' -f2)
  done
fi
exit $rc
"""


def crash_right_after_a_refusal(site: Site, tmp_path: Path) -> None:
    """A `daemon --once` SIGKILLed right after sbatch refused its first submission,
    before the run's ERROR was recorded."""
    shim = tmp_path / "shim"
    shim.mkdir()
    flag = tmp_path / "kill-once"
    flag.touch()
    sbatch = shim / "sbatch"
    sbatch.write_text(KILL_AFTER_REFUSAL.format(real=real("sbatch"), flag=flag))
    sbatch.chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"}
    crashed = subprocess.run(
        [sys.executable, "-m", "flowbatch", "--site", str(site.root), "daemon", "--once"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert crashed.returncode == -9, crashed.stderr
    assert not flag.exists()


def test_a_refused_submission_is_not_adopted_after_a_crash(
    tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    """More memory than the node has: sbatch refuses, and leaves a FAILED BadConstraints
    job of the run's name in squeue. A daemon killed right after that refusal adopted
    that job at its restart, and the run ended "lost: the run's script never started"
    (or was retried). It is submitted again instead, and ends as an uninterrupted daemon
    ends it: an ERROR with sbatch's refusal, not retried."""
    site = make_site(tmp_path / "site", slurm_config())
    write_template(tmp_path / "tpl", SLEEP_TEMPLATE)
    api.install(site, tmp_path / "tpl", workflow_id="sleep")
    big = {"mem": "64G"}
    drop(site, "r.yaml", {"workflow": "sleep", "name": "r", "retries": 1, "resources": big})
    crash_right_after_a_refusal(site, tmp_path)
    before = site.store.load(api.list_runs(site)[0]["id"])
    assert before.state.value == "PENDING" and before.handle and before.handle["submitting"]
    name = before.handle["job_name"]
    assert list(jobs_named(name).values()) == ["FAILED"]
    try:
        run_until_idle(site, timeout=30)
    finally:
        site.close()
    run = runs_by_name(site)["r"]
    assert run["state"] == "ERROR", run
    assert site.store.load(run["id"]).attempt == 1, run  # not retried
    assert "adopted" not in (run["handle"] or {}), run
    (message,) = run["messages"]
    assert message.startswith(f"sbatch refused run {run['id']}"), message
    assert "Requested node configuration is not available" in message
