"""Slurm executor end to end against a real single-node Slurm (tests/services/slurm.py)."""

from __future__ import annotations

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
from .fixtures_slurm import slurm_config
from .services.slurm import SlurmCluster
from .test_robust import _user, needs_root


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


def test_crash_between_submission_and_record(tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    """The daemon is SIGKILLed right after sbatch returned, before the job id is recorded:
    the next daemon finds the job by its name and does not submit it again."""
    site = sleep_site(tmp_path)
    drop(site, "r.yaml", {"workflow": "sleep", "name": "r", "arguments": {"seconds": 1}})
    env = {**os.environ, "FLOWBATCH_CRASH_AT": "launched:1"}
    crashed = subprocess.run(
        [sys.executable, "-m", "flowbatch", "--site", str(site.root), "daemon", "--once"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
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


# -- states and cancel -----------------------------------------------------------------------


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
        assert re.search(r"scheduler:\s+PENDING \((Resources|Priority)\)", shown.output), (
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
        jobs[:] = [r.handle["job_id"] for r in daemon.runner.running() if r.handle]

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
    run_until_idle(site, timeout=180)
    run = runs_by_name(site)["slow"]
    assert run["state"] == "ERROR"
    assert any("TIMEOUT" in m for m in run["messages"]), run["messages"]


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
    assert (run_dir / "sbatch.sh").stat().st_uid == user.pw_uid
    assert (run_dir / "logs").stat().st_uid == user.pw_uid
    # a second submission into the folder, where the user has planted a link
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
