"""Slurm executor end to end against a real single-node Slurm (tests/services/slurm.py)."""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from flowbatch import api, cli
from flowbatch.daemon import Daemon, cancel_run
from flowbatch.errors import FlowbatchError
from flowbatch.executors.base import Launch
from flowbatch.executors.slurm import SlurmExecutor
from flowbatch.site import Site

from .conftest import drop, make_site, only_run, run_until_idle, write_template
from .fixtures_slurm import TEST_POLL, slurm_config
from .services.slurm import SlurmCluster
from .test_robust import _user, needs_root, start_daemon, wait_for


def test_helloworld_on_slurm(slurm_site: Site) -> None:
    drop(
        slurm_site,
        "a.yaml",
        {"workflow": "helloworld", "group": "alice", "arguments": {"names": "n.txt"}},
        files={"n.txt": "Al\nBea\n"},
    )
    run_until_idle(slurm_site, timeout=60)
    run = only_run(slurm_site)
    assert run["state"] == "SUCCESS", run["messages"]
    assert run["executor"] == "slurm"
    handle = run["handle"]
    assert handle["job_name"] == f"fb-site-{run['id']}"
    assert handle["job_id"].isdigit()
    run_dir = Path(run["run_dir"])
    assert (run_dir / "results/greetings.txt").read_text() == "Hello Al!\nHello Bea!\n"
    assert run["results"]["max_line"] == "Hello Bea!"
    batch = (run_dir / "sbatch.sh").read_text()
    assert f"#SBATCH --chdir={run_dir}" in batch
    assert (run_dir / "logs" / f"slurm-{handle['job_id']}.out").exists()
    assert api.ranking(slurm_site, "helloworld")["ranking"][0]["group"] == "alice"


# -- helpers ---------------------------------------------------------------------------------

SLEEP_TEMPLATE = """
workflow:
  steps:
    - name: work
      action:
        commands:
          - sleep $[[seconds]]
          - exit $[[code]]
parameters:
  - {name: seconds, dtype: int, defaultValue: 0}
  - {name: code, dtype: int, defaultValue: 0}
"""


def sleep_site(tmp_path: Path, **profile: Any) -> Site:
    """A Slurm site with the `sleep` workflow (sleep N seconds, then exit CODE)."""
    site = make_site(tmp_path / "site", slurm_config(**profile))
    write_template(tmp_path / "tpl", SLEEP_TEMPLATE)
    api.install(site, tmp_path / "tpl", workflow_id="sleep")
    return site


def runs_by_name(site: Site) -> dict[str, dict[str, Any]]:
    return {r["name"]: api.show_run(site, r["id"]) for r in api.list_runs(site)}


def tick_until(daemon: Daemon, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        daemon.tick()
        time.sleep(0.05)


def one_tick(site: Site) -> None:
    """One tick of a daemon started for it (a cancel request is applied in it before
    anything is dispatched)."""
    daemon = Daemon(site)
    daemon.start()
    try:
        daemon.tick()
    finally:
        daemon.stop()


def scancel(*job_ids: str) -> None:
    subprocess.run(["scancel", *job_ids], check=False, capture_output=True)


# -- submission ------------------------------------------------------------------------------


def test_refused_submission_and_failing_job(tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    site = sleep_site(tmp_path)
    drop(site, "bad.yaml", {"workflow": "sleep", "name": "bad", "resources": {"partition": "nope"}})
    drop(site, "fail.yaml", {"workflow": "sleep", "name": "fail", "arguments": {"code": 3}})
    run_until_idle(site, timeout=60)
    runs = runs_by_name(site)
    bad, fail = runs["bad"], runs["fail"]
    assert bad["state"] == "ERROR"
    assert "sbatch refused run" in bad["messages"][0]
    assert "invalid partition" in bad["messages"][0].lower()
    assert fail["state"] == "ERROR"
    assert fail["messages"][0] == "step 1 (work) failed with exit code 3"
    job = fail["handle"]["job_id"]
    assert f"Slurm job {job} FAILED (exit code 3:0, reason NonZeroExitCode)" in fail["messages"]


def test_invalid_resources_are_refused_at_intake(
    tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    site = sleep_site(tmp_path)
    drop(site, "t.yaml", {"workflow": "sleep", "resources": {"time": "10", "cpus": 1}})
    drop(site, "m.yaml", {"workflow": "sleep", "resources": {"mem": "4 parsecs"}})
    run_until_idle(site, timeout=20)
    assert api.list_runs(site) == []
    rejected = site.layout.rejected
    time_err = yaml.safe_load((rejected / "t.yaml.error.yaml").read_text())
    assert time_err["field"] == "resources"
    assert time_err["reason"].startswith("time: not a time '10'")
    assert "Slurm's [D-]HH:MM" in time_err["reason"]
    mem_err = yaml.safe_load((rejected / "m.yaml.error.yaml").read_text())
    assert mem_err["reason"].startswith("mem: not a memory size '4 parsecs'")


def test_completed_without_markers_is_an_error(tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    """Slurm says COMPLETED 0:0, but the script never ran: the markers decide."""
    site = sleep_site(tmp_path)
    # a site override of the batch script that does not run run.sh (a broken cgroup
    # setup has the same effect on a real cluster)
    (site.root / "sbatch.sh.j2").write_text(
        "#!/bin/bash\n#SBATCH --job-name={{ job_name }}\n#SBATCH --chdir={{ run_dir }}\n"
        "#SBATCH --output={{ output }}\ntrue\n"
    )
    drop(site, "r.yaml", {"workflow": "sleep", "name": "r"})
    run_until_idle(site, timeout=30)
    run = runs_by_name(site)["r"]
    assert run["state"] == "ERROR"
    job = run["handle"]["job_id"]
    (message,) = run["messages"]
    assert f"Slurm job {job} COMPLETED" in message
    assert "the job script never ran" in message
    assert f"logs/slurm-{job}.err" in message


def crash_right_after_sbatch(site: Site) -> None:
    """A `daemon --once` SIGKILLed right after its first sbatch returned, before the job
    id was recorded (the fault point ``launched``)."""
    env = {**os.environ, "FLOWBATCH_CRASH_AT": "launched:1"}
    crashed = subprocess.run(
        [sys.executable, "-m", "flowbatch", "--site", str(site.root), "daemon", "--once"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr


def test_crash_between_submission_and_record(tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    """The daemon is SIGKILLed right after sbatch returned, before the job id is recorded:
    the next daemon finds the job by its name and does not submit it again."""
    site = sleep_site(tmp_path)
    drop(site, "r.yaml", {"workflow": "sleep", "name": "r", "arguments": {"seconds": 1}})
    crash_right_after_sbatch(site)
    before = site.store.load(api.list_runs(site)[0]["id"])
    assert before.state.value == "PENDING"
    assert before.handle is not None and before.handle["submitting"] is True
    name = before.handle["job_name"]
    run_until_idle(site, timeout=60)
    run = runs_by_name(site)["r"]
    assert run["state"] == "SUCCESS", run["messages"]
    assert run["handle"]["adopted"] is True
    jobs = subprocess.run(
        ["squeue", "-h", "-t", "all", "--name", name, "-o", "%i"], capture_output=True, text=True
    ).stdout.split()
    assert jobs == [run["handle"]["job_id"]]  # one job: not submitted twice


def jobs_named(name: str, *, tasks: bool = False) -> dict[str, str]:
    """Job id -> state of the cluster's jobs of that name (any state); ``tasks``: a
    pending array's tasks one by one (``squeue -r``), not as one line."""
    out = subprocess.run(
        [
            real("squeue"),
            "-h",
            *(["-r"] if tasks else []),
            "-t",
            "all",
            "--name",
            name,
            "-o",
            "%i %T",
        ],
        capture_output=True,
        text=True,
    ).stdout.split()
    return dict(zip(out[::2], out[1::2], strict=True))


def test_a_cancel_of_a_run_whose_submission_was_never_recorded_cancels_its_job(
    tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    """The daemon is SIGKILLed right after sbatch, before the job id is recorded; the
    run's owner cancels it before the next daemon's first tick. The run is PENDING with
    only its intent (the job name), and its job is queued or running: the cancel sends
    scancel by that name, so the job does not run on unwatched for a CANCELED run."""
    site = sleep_site(tmp_path)
    drop(site, "r.yaml", {"workflow": "sleep", "name": "r", "arguments": {"seconds": 120}})
    crash_right_after_sbatch(site)
    run = site.store.load(api.list_runs(site)[0]["id"])
    assert run.state.value == "PENDING" and run.handle and run.handle["submitting"] is True
    name = run.handle["job_name"]
    try:
        assert list(jobs_named(name).values()) in (["PENDING"], ["RUNNING"])
        api.request_cancel(site, run.id, "not needed")
        one_tick(site)  # the cancel is applied before anything is dispatched
        shown = api.show_run(site, run.id)
        assert shown["state"] == "CANCELED" and shown["messages"] == ["not needed"]
        deadline = time.monotonic() + 20
        while set(jobs_named(name).values()) - {"CANCELLED"}:
            assert time.monotonic() < deadline, jobs_named(name)
            time.sleep(0.2)
        assert len(jobs_named(name)) == 1  # and nothing submitted again
    finally:
        subprocess.run([real("scancel"), "--name", name], check=False, capture_output=True)


OUTAGE_SHIM = """#!/bin/bash
printf '%s %s\\n' "$(basename "$0")" "$*" >> {log}
if [ -e {flag} ]; then
  echo "$(basename "$0"): error: Unable to contact slurm controller (connect failure)" >&2
  exit 1
fi
exec {real} "$@"
"""

#: the first attempt runs long (it is still running when the controller is back), a retry
#: (its run folder has attempts/) is short
OUTAGE_TEMPLATE = """
workflow:
  steps:
    - name: work
      action:
        commands:
          - if [ -d attempts ]; then sleep 1; else sleep 120; fi
"""


#: the real Slurm commands, for the tests' own looks at the cluster (not through a shim)
@functools.cache
def real(command: str) -> str:
    """The scheduler command's own path, looked up at its first use, which comes after
    the ``slurm_cluster`` fixture installed Slurm (and before a test's shims are on
    PATH). Looked up at import, a fresh machine had none yet, and the outage shim then
    ran ``exec scancel``, itself, for ever (found by the first run there)."""
    found = shutil.which(command)
    assert found is not None, f"{command} is not installed"
    return found


def test_a_controller_outage_is_waited_out_and_a_long_one_cancels_the_jobs(
    tmp_path: Path, slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Slurm commands fail as they do while slurmctld is down or restarting. A short
    outage changes nothing: the runs' state is unknown, asked again. One longer than the
    profile's unreachable_grace gives the runs up: ERROR, or retried with `retries`;
    their jobs, still running, are cancelled once Slurm answers, and the retry is
    submitted only after its earlier job has ended: never two jobs of one run at once."""
    log, flag = tmp_path / "commands.log", tmp_path / "ctld-down"
    shim = tmp_path / "shim"
    shim.mkdir()
    for command in ("sbatch", "squeue", "scancel", "sacct"):
        text = OUTAGE_SHIM.format(log=log, flag=flag, real=real(command))
        (shim / command).write_text(text)
        (shim / command).chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}:{os.environ['PATH']}")
    site = make_site(tmp_path / "site", slurm_config(failures=1, unreachable_grace="3s"))
    write_template(tmp_path / "tpl", OUTAGE_TEMPLATE)
    api.install(site, tmp_path / "tpl", workflow_id="w")
    drop(site, "lost.yaml", {"workflow": "w", "name": "lost"})
    drop(site, "retried.yaml", {"workflow": "w", "name": "retried", "retries": 1})
    daemon = Daemon(site)
    daemon.start()
    jobs: dict[str, str] = {}

    def slurm_state(name: str) -> str:
        out = subprocess.run(
            [real("squeue"), "-h", "-t", "all", "-j", jobs[name], "-o", "%T"],
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def ticks(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            daemon.tick()
            time.sleep(0.05)

    try:

        def started() -> bool:
            runs = runs_by_name(site).values()
            return len(runs) == 2 and all(
                str((r.get("handle") or {}).get("status")) == "RUNNING" for r in runs
            )

        tick_until(daemon, started)
        jobs = {name: run["handle"]["job_id"] for name, run in runs_by_name(site).items()}
        # a short outage (more failed polls than `failures`, shorter than the grace)
        flag.touch()
        ticks(1.5)
        assert {r["state"] for r in runs_by_name(site).values()} == {"RUNNING"}
        # `runs show` says Slurm's word is unknown now, and why (it said RUNNING through
        # the outage; found by review)
        status = runs_by_name(site)["lost"]["handle"]["status"]
        assert status.startswith("unknown since ") and " UTC: squeue failed: " in status
        assert "Unable to contact slurm controller" in status
        flag.unlink()
        ticks(0.5)
        assert {r["state"] for r in runs_by_name(site).values()} == {"RUNNING"}
        assert runs_by_name(site)["lost"]["handle"]["status"] == "RUNNING"  # answered again
        # a long one: the runs are given up, their jobs go on
        flag.touch()
        tick_until(
            daemon,
            lambda: (
                runs_by_name(site)["lost"]["state"] == "ERROR"
                and runs_by_name(site)["retried"]["state"] == "PENDING"
            ),
            timeout=20,
        )
        lost, retried = runs_by_name(site)["lost"], runs_by_name(site)["retried"]
        (message,) = lost["messages"]
        assert message.startswith("lost: Slurm did not answer for "), message
        assert "Unable to contact slurm controller" in message
        assert f"its job {jobs['lost']} is cancelled once Slurm answers" in message
        ticks(0.5)
        retried = runs_by_name(site)["retried"]
        assert retried["state"] == "PENDING"
        assert f"the Slurm job {jobs['retried']} of an earlier attempt" in retried["waiting"]
        assert {slurm_state("lost"), slurm_state("retried")} == {"RUNNING"}
        assert logged(log, "sbatch") == 2  # nothing submitted beside the running jobs
        # Slurm answers again
        flag.unlink()
        tick_until(daemon, lambda: runs_by_name(site)["retried"]["state"] == "SUCCESS", 60)
        assert runs_by_name(site)["lost"]["state"] == "ERROR"
        assert slurm_state("lost") == "CANCELLED"
        assert slurm_state("retried") == "CANCELLED"
        lines = [line for line in log.read_text().splitlines() if not line.startswith("sacct")]
        cancel = lines.index(f"scancel {jobs['retried']}")
        resubmit = max(i for i, line in enumerate(lines) if line.startswith("sbatch"))
        # between the cancel and the new submission: squeue saw the earlier job ended
        assert cancel < resubmit
        assert any(f"-j {jobs['retried']} " in line for line in lines[cancel:resubmit])
        assert logged(log, "sbatch") == 3
        assert not any((site.root / "slurm-abandoned" / "default").iterdir())
    finally:
        flag.unlink(missing_ok=True)
        subprocess.run([real("scancel"), *jobs.values()], check=False, capture_output=True)
        daemon.stop()
        site.close()


def test_sighup_applies_slurm_profiles_to_the_running_daemon(
    tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    """A daemon process reloads flowbatch.yaml on SIGHUP, executors included: a profile
    added by the reload takes runs at once; a changed profile's job submitted before is
    watched to its end, and new runs get the new settings."""
    site = sleep_site(tmp_path)
    drop(site, "before.yaml", {"workflow": "sleep", "name": "before", "arguments": {"seconds": 3}})
    log = tmp_path / "d.log"
    proc = start_daemon(site.root, log=log)
    try:
        assert wait_for(lambda: runs_by_name(site).get("before", {}).get("state") == "RUNNING")
        config = slurm_config(time="10m")
        config["slurm"]["gpu"] = {"partition": "debug", "poll": TEST_POLL, "time": "20m"}
        site.layout.config.write_text(
            yaml.safe_dump({"polling": {"interval": 0.2, "settle": 0.0}, **config})
        )
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reloaded" in log.read_text(), timeout=10)
        drop(site, "after.yaml", {"workflow": "sleep", "name": "after"})
        drop(site, "gpu.yaml", {"workflow": "sleep", "name": "gpu", "executor": "slurm:gpu"})

        def done() -> bool:
            runs = runs_by_name(site)
            return len(runs) == 3 and all(
                r["state"] not in ("PENDING", "RUNNING") for r in runs.values()
            )

        assert wait_for(done, timeout=60), log.read_text()
        runs = runs_by_name(site)
        assert {n: r["state"] for n, r in runs.items()} == dict.fromkeys(runs, "SUCCESS"), {
            n: r["messages"] for n, r in runs.items()
        }
        assert runs["gpu"]["executor"] == "slurm:gpu"

        def batch(name: str) -> str:
            return (Path(runs[name]["run_dir"]) / "sbatch.sh").read_text()

        assert "--time" not in batch("before")
        assert "#SBATCH --time=0-00:10:00" in batch("after")
        assert "#SBATCH --time=0-00:20:00" in batch("gpu")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        site.close()


# -- states and cancel -----------------------------------------------------------------------


def test_a_job_requeued_and_held_is_no_end_of_its_run(
    tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    """`scontrol requeuehold state=SpecialExit`: Slurm puts the running job back in the
    queue, held, in state SPECIAL_EXIT. The run was finalized ERROR (its job left in the
    queue, which ran it again in the ended run's folder once released); it is PENDING
    again, queued, with Slurm's word, and ends with the execution that ran after the
    release."""
    site = sleep_site(tmp_path)
    drop(site, "r.yaml", {"workflow": "sleep", "name": "r", "arguments": {"seconds": 4}})
    daemon = Daemon(site)
    daemon.start()
    job = ""
    try:
        tick_until(daemon, lambda: "RUNNING" in str(runs_by_name(site).get("r", {}).get("handle")))
        run = runs_by_name(site)["r"]
        job = run["handle"]["job_id"]
        subprocess.run(["scontrol", "requeuehold", "state=SpecialExit", job], check=True)

        def held() -> bool:
            return "SPECIAL_EXIT" in str(runs_by_name(site)["r"].get("handle"))

        tick_until(daemon, held)
        for _ in range(10):  # a few seconds of ticks: held, still active
            daemon.tick()
            time.sleep(0.2)
        assert runs_by_name(site)["r"]["state"] == "PENDING"  # back in the queue, held
        subprocess.run(["scontrol", "release", job], check=True)
        subprocess.run(["scontrol", "update", f"jobid={job}", "starttime=now"], check=False)
        run_until_idle(site, timeout=60, daemon=daemon)
    finally:
        daemon.stop()
        if job:
            scancel(job)
    run = runs_by_name(site)["r"]
    assert run["state"] == "SUCCESS", run["messages"]


def test_a_job_slurm_will_never_start_ends_its_run_with_slurms_reason(
    tmp_path: Path, slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A time limit over the partition's: sbatch takes the job (EnforcePartLimits=NO,
    Slurm's default) and it pends for ever (PartitionTimeLimit), its run RUNNING for
    ever. Past NEVER_START (here 1 s) the job is cancelled and the run is an ERROR that
    says why, not retried (it would pend the same)."""
    from flowbatch.executors import slurm as slurm_module

    monkeypatch.setattr(slurm_module, "NEVER_START", 1.0, raising=False)
    name = f"fbtl{os.getpid()}"
    subprocess.run(["scontrol", "delete", f"partitionname={name}"], capture_output=True)
    subprocess.run(
        ["scontrol", "create", f"partitionname={name}", "nodes=localhost", "maxtime=1"],
        check=True,
    )
    try:
        site = sleep_site(tmp_path, partition=name, time="1h")
        drop(site, "r.yaml", {"workflow": "sleep", "name": "r", "retries": 1})
        run_until_idle(site, timeout=60)
    finally:
        subprocess.run(["scontrol", "delete", f"partitionname={name}"], capture_output=True)
    run = runs_by_name(site)["r"]
    assert run["state"] == "ERROR", run
    (message,) = run["messages"]
    assert "Slurm will not start job" in message and "PartitionTimeLimit" in message
    assert "time limit is over the partition's" in message and "cancelled it" in message
    assert not any("retry" in str(h.get("message")) for h in run["history"])  # no retry
    queued = subprocess.run(
        ["squeue", "-h", "-j", run["handle"]["job_id"], "-o", "%T"], capture_output=True, text=True
    ).stdout.strip()
    assert queued in ("", "CANCELLED"), queued


def test_a_request_its_partition_cannot_satisfy_ends_its_run_with_slurms_reason(
    tmp_path: Path, slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More CPUs per task than the node has: sbatch takes the job (Slurm 22.05), which
    pends for ever with the reason PartitionConfig; a partition whose AllowAccounts the
    job's account is not in: it pends for ever with Slurm's words in place of the reason
    code (AccountNotAllowed). Past NEVER_START (here 1 s) each job is cancelled and its run
    is an ERROR that says why, not retried."""
    from flowbatch.executors import slurm as slurm_module

    monkeypatch.setattr(slurm_module, "NEVER_START", 1.0, raising=False)
    node = subprocess.run(
        ["sinfo", "-h", "-N", "-n", "localhost", "-o", "%c"], capture_output=True, text=True
    )
    cpus = int(node.stdout.split()[0])  # the node's CPUs
    name = f"fbacct{os.getpid()}"
    subprocess.run(["scontrol", "delete", f"partitionname={name}"], capture_output=True)
    subprocess.run(
        ["scontrol", "create", f"partitionname={name}", "nodes=localhost", "allowaccounts=fbx"],
        check=True,
    )
    try:
        site = sleep_site(tmp_path)
        many = {"cpus": cpus + 1}
        drop(site, "c.yaml", {"workflow": "sleep", "name": "c", "retries": 1, "resources": many})
        acct = {"partition": name}
        drop(site, "a.yaml", {"workflow": "sleep", "name": "a", "retries": 1, "resources": acct})
        run_until_idle(site, timeout=20)
    finally:
        subprocess.run(["scontrol", "delete", f"partitionname={name}"], capture_output=True)
    runs = runs_by_name(site)
    said = {
        "c": ("PENDING (PartitionConfig)", "more CPUs per task than a node of it has"),
        "a": (
            f"PENDING (Job's account not known, so it can't use this partition ({name} "
            "allows fbx))",
            "its account may not use the partition",
        ),
    }
    for run_name, (status, why) in said.items():
        run = runs[run_name]
        assert run["state"] == "ERROR", run
        (message,) = run["messages"]
        assert f"Slurm will not start job {run['handle']['job_id']}: it has been {status}" in (
            message
        )
        assert why in message and "flowbatch cancelled it" in message
        assert not any("retry" in str(h.get("message")) for h in run["history"])  # no retry


def test_pending_reason_and_cancels(tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    """A job waiting for CPUs shows Slurm's reason; scancel from flowbatch and from outside
    both end as CANCELED."""
    site = sleep_site(tmp_path)
    cpus = os.cpu_count() or 1
    drop(
        site,
        "big.yaml",
        {
            "workflow": "sleep",
            "name": "big",
            "arguments": {"seconds": 60},
            "resources": {"cpus": cpus},
        },
    )
    daemon = Daemon(site)
    daemon.start()
    jobs: list[str] = []
    try:
        tick_until(
            daemon, lambda: "RUNNING" in str(runs_by_name(site).get("big", {}).get("handle"))
        )
        drop(site, "wait.yaml", {"workflow": "sleep", "name": "wait", "arguments": {"seconds": 60}})

        def waiting() -> bool:
            handle = runs_by_name(site).get("wait", {}).get("handle") or {}
            return str(handle.get("status", "")).startswith("PENDING (")

        tick_until(daemon, waiting)
        runs = runs_by_name(site)
        jobs = [runs[n]["handle"]["job_id"] for n in ("big", "wait")]
        shown = CliRunner().invoke(
            cli.main, ["--site", str(site.root), "runs", "show", runs["wait"]["id"]]
        )
        # Slurm's reason for the wait: Resources, or Priority behind the job ahead of it
        assert re.search(r"scheduler:\s+job \d+: PENDING \((Resources|Priority)\)", shown.output), (
            shown.output
        )
        # from outside flowbatch
        scancel(runs["wait"]["handle"]["job_id"])
        tick_until(daemon, lambda: runs_by_name(site)["wait"]["state"] == "CANCELED")
        wait = runs_by_name(site)["wait"]
        (message,) = wait["messages"]
        assert message.startswith(f"cancelled outside flowbatch: Slurm job {jobs[1]} CANCELLED")
        # from flowbatch: scancel
        cancel_run(site, daemon.runner, runs["big"]["id"], 0, "enough")
        big = runs_by_name(site)["big"]
        assert big["state"] == "CANCELED" and big["messages"] == ["enough"]
        assert slurm_cluster.job_state(jobs[0]) in ("CANCELLED", "COMPLETING")
    finally:
        scancel(*jobs)
        daemon.stop()


# -- the controller is not hammered ----------------------------------------------------------

SHIM = """#!/bin/bash
printf '%s %s\\n' "$(basename "$0")" "$*" >> {log}
exec {real} "$@"
"""


def path_shim(folder: Path, log: Path) -> Path:
    """Wrappers that log each scheduler command and then run the real one."""
    folder.mkdir()
    for command in ("sbatch", "squeue", "sacct", "scancel"):
        real = shutil.which(command)
        assert real, command
        path = folder / command
        path.write_text(SHIM.format(log=log, real=real))
        path.chmod(0o755)
    return folder


def logged(log: Path, command: str) -> int:
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text().splitlines() if line.split()[0] == command)


def test_one_squeue_per_tick_for_10_or_50_jobs(
    tmp_path: Path, slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "commands.log"
    shim = path_shim(tmp_path / "shim", log)
    monkeypatch.setenv("PATH", f"{shim}:{os.environ['PATH']}")
    # poll at every tick (floor 0) so that each tick shows its calls
    site = sleep_site(tmp_path, poll={"floor": 0, "ceiling": 1})
    daemon = Daemon(site)
    daemon.start()
    jobs: list[str] = []

    def submit(count: int, start: int) -> None:
        for i in range(start, start + count):
            drop(
                site,
                f"r{i}.yaml",
                {"workflow": "sleep", "name": f"r{i}", "arguments": {"seconds": 120}},
            )
        daemon.tick()  # intake + sbatch for each
        jobs[:] = [r.handle["job_id"] for r in daemon.runner.launched() if r.handle]

    def squeue_per_tick(ticks: int) -> list[int]:
        counts = []
        for _ in range(ticks):
            before = logged(log, "squeue")
            daemon.tick()
            counts.append(logged(log, "squeue") - before)
        return counts

    try:
        submit(10, 0)
        assert len(jobs) == 10 and logged(log, "sbatch") == 10
        assert squeue_per_tick(5) == [1] * 5
        submit(40, 10)
        assert len(jobs) == 50 and logged(log, "sbatch") == 50
        assert squeue_per_tick(5) == [1] * 5
        # sacct is asked at most once (here it answers "accounting storage is disabled")
        assert logged(log, "sacct") <= 1
        last = log.read_text().splitlines()[-1]
        assert last.startswith("squeue -h -t all -j ") and len(last.split()[5].split(",")) == 50
    finally:
        scancel(*jobs)
        daemon.stop()


def test_doctor_checks_slurm_profiles(tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    from flowbatch.doctor import diagnose

    good = make_site(tmp_path / "good", slurm_config())
    check = {c.name: c for c in diagnose(good.root)}["executor slurm"]
    assert check.status == "ok" and "debug" in check.detail, check.detail
    bad = make_site(tmp_path / "bad", slurm_config(partition="nosuchpartition"))
    check = {c.name: c for c in diagnose(bad.root)}["executor slurm"]
    assert check.status == "fail" and "nosuchpartition" in check.detail, check.detail


@pytest.mark.slow
def test_a_real_timeout(tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    """Slurm keeps time limits in whole minutes and checks them every ~30 s: this waits
    60-90 s for a real TIMEOUT, the one state that the other tests only see recorded."""
    site = sleep_site(tmp_path)
    drop(
        site,
        "slow.yaml",
        {
            "workflow": "sleep",
            "name": "slow",
            "arguments": {"seconds": 300},
            "resources": {"time": "0:01"},
        },
    )
    # beside it, one whose program outlives SIGTERM: Slurm SIGKILLs it after KillWait, and
    # its script writes no end. Slurm's TIMEOUT still makes it the run's own ERROR, never
    # a lost run retried into the same limit (found by review)
    write_template(
        tmp_path / "stubborn",
        "workflow:\n  steps:\n    - name: work\n"
        "      action:\n        commands: [\"trap '' TERM; sleep 300\"]\n",
    )
    api.install(site, tmp_path / "stubborn", workflow_id="stubborn")
    drop(
        site,
        "stubborn.yaml",
        {"workflow": "stubborn", "name": "stubborn", "retries": 1, "resources": {"time": "0:01"}},
    )
    run_until_idle(site, timeout=180)
    runs = runs_by_name(site)
    run = runs["slow"]
    assert run["state"] == "ERROR"
    assert any("TIMEOUT" in m for m in run["messages"]), run["messages"]
    stubborn = runs["stubborn"]
    assert stubborn["state"] == "ERROR", stubborn["messages"]
    assert site.store.load(stubborn["id"]).attempt == 1, stubborn["messages"]  # no retry
    assert stubborn["messages"][0].startswith("time limit exceeded: Slurm job "), stubborn
    assert "TIMEOUT" in stubborn["messages"][0]


WHO_TEMPLATE = """
workflow:
  steps:
    - name: who
      action:
        commands:
          - id -u > who.txt
"""


@needs_root
def test_a_root_daemon_submits_a_users_job_as_that_user(
    tmp_path: Path, public_tmp: Path, slurm_cluster: SlurmCluster
) -> None:
    """A root daemon submits another user's run as that user (as it starts a local run):
    the job runs as the user, never as root, and the daemon writes nothing into the
    user's run folder (the user writes the batch script and makes logs/ there). A
    planted sbatch.sh symlink in the folder is then the user's own business: it cannot
    make root overwrite its target."""
    user = _user("fbrunner")
    site = make_site(public_tmp / "site", slurm_config())
    write_template(tmp_path / "tpl", WHO_TEMPLATE)
    api.install(site, tmp_path / "tpl", workflow_id="who")
    request = drop(site, "r.yaml", {"workflow": "who"})
    os.chown(request, user.pw_uid, user.pw_gid)
    run_until_idle(site, timeout=60).stop()
    run = only_run(site)
    assert run["state"] == "SUCCESS", run["messages"]
    run_dir = Path(run["run_dir"])
    assert (run_dir / "who.txt").read_text().strip() == str(user.pw_uid)
    # the user wrote the batch script and Slurm the job's log, as the user, in the folder
    # handed to them; at the run's end the tree took it back (takeback.take_back)
    job_id = run["handle"]["job_id"]
    assert (run_dir / "sbatch.sh").is_file()
    assert (run_dir / "logs" / f"slurm-{job_id}.out").is_file()
    assert (run_dir / "logs").stat().st_uid == run_dir.parent.stat().st_uid
    # a second submission into the folder, handed to the user again as for a run, where
    # the user has planted a link
    os.chown(run_dir, user.pw_uid, user.pw_gid)
    victim = public_tmp / "root-owned.txt"
    victim.write_text("root's\n")
    (run_dir / "sbatch.sh").unlink()
    (run_dir / "sbatch.sh").symlink_to(victim)
    os.lchown(run_dir / "sbatch.sh", user.pw_uid, user.pw_gid)
    profile = site.config.slurm["default"]
    slurm = SlurmExecutor("slurm", "default", profile, site_name="site", config=site.config)
    with pytest.raises(FlowbatchError):  # the user's own write cannot reach root's file
        slurm.launch(Launch(run["id"], run_dir, "run.sh", uid=user.pw_uid))
    assert victim.read_text() == "root's\n"
    site.close()
