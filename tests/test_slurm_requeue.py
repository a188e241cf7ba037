"""A job Slurm requeues after it started (``scontrol requeue``, a node failure or a
preemption with requeue, ``scontrol requeuehold``): its RUNNING run is PENDING and queued
again (the same job and attempt, its start cleared), RUNNING again when the job starts
again, and it ends with what the last execution of its script did.

What the real Slurm (22.05, tests/services/slurm.py) does on ``scontrol requeue`` of a
running job: squeue shows it COMPLETING (RestartCnt 1), then PENDING (BeginTime), with a
begin time two minutes on (``scontrol update jobid=N starttime=now`` lets it go at once);
the batch script gets SIGTERM, and run.sh's TERM trap appends ``exit 143`` to
``status/markers``; the second execution appends a second ``started`` line and its own
markers. A job submitted with ``--no-requeue`` is refused ("Requested operation is
presently disabled"); flowbatch's jobs are requeueable by Slurm's default (JobRequeue=1).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from flowbatch import api, lifecycle
from flowbatch.daemon import Daemon, cancel_run
from flowbatch.executors.commands import CommandResult
from flowbatch.executors.slurm import SlurmExecutor
from flowbatch.lifecycle import iso
from flowbatch.render.script import read_markers
from flowbatch.runs import RunRecord, State

from .conftest import drop, make_site, run_until_idle, write_template
from .fixtures_slurm import slurm_config
from .services.slurm import SlurmCluster
from .test_slurm import runs_by_name, scancel, tick_until
from .test_slurm_unit import Scripted, ok

# -- on the real Slurm -----------------------------------------------------------------------

#: the first execution waits (it is requeued meanwhile); the second one runs for 2 s and
#: writes how many executions there were
TEMPLATE = """
workflow:
  steps:
    - name: work
      action:
        commands:
          - echo ran >> executions
          - test "$$(wc -l < executions)" -gt 1 || sleep 300
          - sleep 2
          - >-
            printf '{"execution": %s}' "$$(wc -l < executions)" > r.json
results:
  file: r.json
  schema: [{name: execution, label: Execution, dtype: int}]
"""


def scontrol(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=30)


ONCE = """
workflow:
  steps:
    - name: work
      action:
        commands:
          - echo ran >> executions
          - >-
            printf '{"execution": %s}' "$$(wc -l < executions)" > r.json
results:
  file: r.json
  schema: [{name: execution, label: Execution, dtype: int}]
"""


def test_a_requeue_of_a_finished_job_does_not_run_its_ended_run_again(
    tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    """Slurm takes `scontrol requeue` of a COMPLETED job (an admin requeueing an array to
    rerun its failed tasks requeues its finished ones too): its script ran again in the
    ended run's folder, the files no longer those recorded (found by review). The daemon
    marks the ended run closed, and the script, run again, exits at once."""
    site = make_site(tmp_path / "site", slurm_config())
    write_template(tmp_path / "tpl", ONCE)
    api.install(site, tmp_path / "tpl", workflow_id="once")
    drop(site, "r.yaml", {"workflow": "once", "name": "r"})
    run_until_idle(site, timeout=60)
    ended = runs_by_name(site)["r"]
    assert ended["state"] == "SUCCESS" and ended["results"] == {"execution": 1}
    run_dir, job = Path(ended["run_dir"]), ended["handle"]["job_id"]
    assert (run_dir / "status" / "closed").is_file()
    markers = (run_dir / "status" / "markers").read_bytes()
    requeued = scontrol("requeue", job)
    assert requeued.returncode == 0, requeued.stderr  # Slurm takes a finished job
    assert scontrol("update", f"jobid={job}", "starttime=now").returncode == 0

    err = run_dir / "logs" / f"slurm-{job}.err"
    deadline = time.monotonic() + 90
    while "this run has ended (status/closed): it is not run again" not in (
        err.read_text() if err.exists() else ""
    ):
        assert time.monotonic() < deadline, (run_dir / "executions").read_text()
        # its begin time (two minutes on) is checked every few seconds
        scontrol("update", f"jobid={job}", "starttime=now")
        time.sleep(0.5)
    time.sleep(1)  # had the script gone on, its next commands came at once
    assert (run_dir / "executions").read_text() == "ran\n"
    assert (run_dir / "status" / "markers").read_bytes() == markers
    assert json.loads((run_dir / "r.json").read_text()) == {"execution": 1}


@pytest.mark.parametrize("planted", ["mkfifo status/closed", "ln -s /nonexistent status/closed"])
def test_what_a_run_leaves_at_its_closed_mark_neither_hangs_nor_fools_the_daemon(
    tmp_path: Path, slurm_cluster: SlurmCluster, planted: str
) -> None:
    """The run's program owns its folder while it runs: a FIFO it left at status/closed
    held the daemon's tick for ever when the mark was opened for writing (found by
    review), and a dangling link is no mark to run.sh's `[ -e ]`. The mark is a file."""
    site = make_site(tmp_path / "site", slurm_config())
    write_template(
        tmp_path / "tpl",
        f"workflow:\n  steps:\n    - name: work\n      action:\n        commands: [{planted}]\n",
    )
    api.install(site, tmp_path / "tpl", workflow_id="planted")
    drop(site, "r.yaml", {"workflow": "planted", "name": "r"})
    run_until_idle(site, timeout=60)
    ended = runs_by_name(site)["r"]
    assert ended["state"] == "SUCCESS", ended["messages"]
    mark = Path(ended["run_dir"]) / "status" / "closed"
    assert mark.is_file() and not mark.is_symlink()


@pytest.mark.parametrize(
    ("requeue", "said"),
    [
        (["requeue"], "PENDING (BeginTime)"),
        # requeued and held, then released by an admin
        (["requeuehold", "state=SpecialExit"], "SPECIAL_EXIT (job requeued in held state)"),
    ],
)
def test_a_job_slurm_requeues_makes_its_run_pending_then_running_then_ends_with_the_rerun(
    tmp_path: Path, slurm_cluster: SlurmCluster, requeue: list[str], said: str
) -> None:
    """`scontrol requeue` (or `requeuehold`) of the running job: the run goes RUNNING ->
    PENDING (Slurm's reason in its history, no start, still launched: one sbatch in all),
    RUNNING again with the later start once the job runs again, and SUCCESS with the
    result of the second execution, although the first one's TERM trap left `exit 143`
    in its markers."""
    site = make_site(tmp_path / "site", slurm_config())
    write_template(tmp_path / "tpl", TEMPLATE)
    api.install(site, tmp_path / "tpl", workflow_id="rq")
    drop(site, "r.yaml", {"workflow": "rq", "name": "r"})
    daemon = Daemon(site)
    daemon.start()
    slurm = daemon.executors["slurm"]
    assert isinstance(slurm, SlurmExecutor)
    job = ""
    try:

        def run() -> dict[str, Any]:
            return runs_by_name(site).get("r", {})

        def executions() -> int:
            found = run()
            path = Path(found["run_dir"]) / "executions" if found else None
            return len(path.read_text().splitlines()) if path and path.exists() else 0

        tick_until(daemon, lambda: run().get("state") == "RUNNING" and executions() == 1, 60)
        first = run()
        job = first["handle"]["job_id"]
        run_dir = Path(first["run_dir"])
        time.sleep(1.1)  # Slurm's StartTime is in whole seconds: the next one is later
        requeued = scontrol(*requeue, job)
        assert requeued.returncode == 0, requeued.stderr
        tick_until(daemon, lambda: run()["state"] == "PENDING")
        waiting = run()
        change = waiting["history"][-1]
        assert change["state"] == "PENDING"
        assert change["message"] == (
            f"Slurm requeued job {job} ({said}): the run waits in the queue to run again"
        )
        assert waiting["started_at"] is None
        assert waiting["handle"]["queued"] is True and waiting["handle"]["job_id"] == job
        assert site.store.load(first["id"]).attempt == 1
        assert change["message"] in waiting["messages"]
        (row,) = api.list_runs(site)
        assert (row["state"], row["started_at"]) == ("PENDING", None)  # the index too
        assert api.list_runs(site, state="RUNNING") == []
        # the killed execution's TERM trap wrote its exit marker: not the run's end
        lines = (run_dir / "status" / "markers").read_text().splitlines()
        assert lines[0].startswith("started ") and lines[-1].startswith("exit 143 "), lines
        assert read_markers(run_dir).exit is not None
        record = site.store.load(first["id"])
        assert lifecycle.run_markers(run_dir, record).exit is None
        assert daemon.runner.launched() == [daemon.runner.active[first["id"]]]
        changes = len(waiting["history"])
        for _ in range(10):  # a second of ticks: still waiting, the change written once
            daemon.tick()
            time.sleep(0.1)
        assert run()["state"] == "PENDING" and len(run()["history"]) == changes
        if requeue[0] == "requeuehold":
            assert scontrol("release", job).returncode == 0
        released = scontrol("update", f"jobid={job}", "starttime=now")
        assert released.returncode == 0, released.stderr
        tick_until(daemon, lambda: run()["state"] == "RUNNING", 60)
        again = run()
        assert again["started_at"] > first["started_at"], (again["started_at"], first)
        run_until_idle(site, timeout=60, daemon=daemon)
    finally:
        daemon.stop()
        if job:
            scancel(job)
        site.close()
    done = run()
    assert done["state"] == "SUCCESS", done["messages"]
    assert done["results"] == {"execution": 2}
    assert [c["state"] for c in done["history"]] == [
        "PENDING",
        "RUNNING",
        "PENDING",
        "RUNNING",
        "SUCCESS",
    ]
    assert site.store.load(done["id"]).attempt == 1 and done["handle"]["job_id"] == job
    assert done["handle"]["requeues"] == 1
    assert slurm.calls["sbatch"] == 1  # never submitted again
    assert done["steps"][0]["exit_code"] == 0
    markers = (run_dir / "status" / "markers").read_text()
    assert markers.count("started ") == 2 and "exit 143 " in markers
    assert done["started_at"] > first["started_at"]  # the second execution's times


# -- the same with a scripted Slurm ------------------------------------------------------------

POLL = {"floor": 0, "ceiling": 0.01}
NO_ACCOUNTING = CommandResult(1, "", "Slurm accounting storage is disabled")
WORKFLOW = "workflow:\n  steps:\n    - name: s\n      action: {commands: ['true']}\n"


def requeue_daemon(
    tmp_path: Path, squeue: str, template: str = WORKFLOW, **profile: Any
) -> tuple[Daemon, Scripted]:
    """A daemon whose Slurm is scripted: sbatch gives job 41, squeue says ``squeue``."""
    config = {"executor": "slurm", "slurm": {"default": {"poll": POLL, **profile}}}
    site = make_site(tmp_path / "site", config)
    api.install(site, write_template(tmp_path / "tpl", template), workflow_id="wf")
    daemon = Daemon(site)
    daemon.start()
    runner = Scripted({"sbatch": [ok("41\n")], "squeue": [ok(squeue)], "scancel": [ok("")]})
    script(daemon, runner)
    return daemon, runner


def script(daemon: Daemon, runner: Scripted) -> None:
    slurm = daemon.executors["slurm"]
    assert isinstance(slurm, SlurmExecutor)
    slurm._runner = runner


def killed_execution(daemon: Daemon, run: RunRecord, at: float) -> str:
    """The markers the first execution left when a requeue ended it: its TERM trap's exit
    marker (as on the real Slurm)."""
    path = daemon.site.store.run_dir(run) / "status" / "markers"
    text = f"started 4242 {at:.6f} node1\nstart 01 {at:.6f}\nexit 143 {at + 1:.6f} 1\n"
    path.write_text(text)
    return text


def sbatches(runner: Scripted) -> int:
    return [line.split()[0] for line in runner.lines].count("sbatch")


def stop(daemon: Daemon) -> None:
    for r in list(daemon.runner.active.values()):
        daemon.runner._transition(r, State.CANCELED, messages=["test over"])
    daemon.stop()
    daemon.site.close()


def running_then_requeued(
    tmp_path: Path, template: str = WORKFLOW, **profile: Any
) -> tuple[Daemon, Scripted, RunRecord, int]:
    """A run whose job 41 started, ran its script (the markers the killed execution left)
    and was requeued: PENDING (BeginTime). Returns the daemon, its Slurm, the run and the
    job's first start."""
    daemon, runner = requeue_daemon(tmp_path, "41|PENDING|Priority|x|0|\n", template, **profile)
    drop(daemon.site, "a.yaml", {"workflow": "wf", "name": "a"})
    daemon.tick()
    (run,) = daemon.runner.launched()
    assert run.queued
    began = int(time.time())  # not before the run was taken in (squeue: whole seconds)
    runner.answers["squeue"] = [ok(f"41|RUNNING|None|x|0|{began}|\n")]
    daemon.tick()
    assert (run.state, run.started_at) == (State.RUNNING, iso(began))
    killed_execution(daemon, run, began + 0.5)
    runner.answers["squeue"] = [ok(f"41|PENDING|BeginTime|x|0|{began + 120}|\n")]
    daemon.tick()
    return daemon, runner, run, began


def next_second() -> int:
    """Squeue's next whole second, waited for."""
    time.sleep(1.01 - time.time() % 1)
    return int(time.time())


def test_a_requeue_makes_the_run_pending_and_queued_once_then_running_again(
    tmp_path: Path,
) -> None:
    """The change RUNNING -> PENDING is made once (not at every poll), in run.json and
    the index: the same job and attempt, queued (launched, never submitted again), no
    start; the next start of the job makes it RUNNING with that start."""
    daemon, runner, run, began = running_then_requeued(tmp_path)
    try:
        assert (run.state, run.started_at, run.queued, run.attempt) == (
            State.PENDING,
            None,
            True,
            1,
        )
        said = (
            "Slurm requeued job 41 (PENDING (BeginTime)): the run waits in the queue to run again"
        )
        assert run.history[-1] == {"state": "PENDING", "at": run.history[-1]["at"], "message": said}
        assert run.messages == [said]
        assert run.handle and run.handle["job_id"] == "41" and run.handle["requeues"] == 1
        assert run.handle["superseded"] == [4242, began + 0.5]
        record = daemon.site.store.load(run.id)
        assert (record.state, record.started_at, record.handle) == (
            State.PENDING,
            None,
            run.handle,
        )
        (row,) = api.list_runs(daemon.site)
        assert (row["state"], row["started_at"]) == ("PENDING", None)
        assert daemon.runner.launched() == [run] and daemon.runner.pending() == []
        written = (daemon.site.store.run_dir(run) / "run.json").stat().st_mtime_ns
        for _ in range(5):
            daemon.tick()
        assert len(run.history) == 3 and run.messages == [said]
        assert (daemon.site.store.run_dir(run) / "run.json").stat().st_mtime_ns == written
        assert sbatches(runner) == 1
        again = next_second()
        runner.answers["squeue"] = [ok(f"41|RUNNING|None|x|0|{again}|\n")]
        daemon.tick()
        assert (run.state, run.started_at, run.queued) == (State.RUNNING, iso(again), False)
        assert again > began
        assert [c["state"] for c in run.history] == ["PENDING", "RUNNING", "PENDING", "RUNNING"]
        (row,) = api.list_runs(daemon.site)
        assert (row["state"], row["started_at"]) == ("RUNNING", iso(again))
        assert sbatches(runner) == 1
    finally:
        stop(daemon)


def test_configuring_moves_no_run_and_an_older_versions_running_run_waits_with_its_job(
    tmp_path: Path,
) -> None:
    """CONFIGURING (nodes allocated, the script not started) keeps a queued run PENDING
    and a RUNNING one RUNNING. A RUNNING run whose handle has none of the new keys (an
    earlier version made runs RUNNING at submission) and whose job waits, its script
    never run, is PENDING and queued with its job, not said to be requeued."""
    daemon, runner = requeue_daemon(tmp_path, "41|CONFIGURING|None|x|0|\n")
    try:
        drop(daemon.site, "a.yaml", {"workflow": "wf", "name": "a"})
        daemon.tick()
        daemon.tick()
        (run,) = daemon.runner.launched()
        assert run.state == State.PENDING and run.queued
        runner.answers["squeue"] = [ok(f"41|RUNNING|None|x|0|{int(time.time())}|\n")]
        daemon.tick()
        assert run.state == State.RUNNING
        runner.answers["squeue"] = [ok("41|CONFIGURING|None|x|0|\n")]
        daemon.tick()
        assert run.state == State.RUNNING and len(run.history) == 2
        # as an earlier version left it: RUNNING from its submission, no queued key
        assert run.handle is not None
        run.handle = {k: v for k, v in run.handle.items() if k not in ("status", "queued")}
        daemon.site.store.write(run)
        daemon.stop()
        daemon = Daemon(daemon.site)
        daemon.start()
        runner = Scripted({"squeue": [ok("41|PENDING|Priority|x|0|\n")], "scancel": [ok("")]})
        script(daemon, runner)
        daemon.tick()
        run = daemon.runner.active[run.id]
        assert (run.state, run.queued, run.started_at) == (State.PENDING, True, None)
        assert run.history[-1]["message"] == (
            "Slurm job 41 waits in the queue (PENDING (Priority)): the run waits with it"
        )
        assert sbatches(runner) == 0
    finally:
        stop(daemon)


TIMED = "timeLimit: 2s\n" + WORKFLOW


def test_the_time_limit_does_not_run_while_the_job_waits_requeued(tmp_path: Path) -> None:
    """The Runner's own time limit (for an executor that does not enforce it itself)
    counts from the run's start: a requeued run has none while its job waits, and is
    not ended as over its time meanwhile."""
    daemon, runner, run, _began = running_then_requeued(tmp_path, TIMED)
    slurm = daemon.executors["slurm"]
    assert isinstance(slurm, SlurmExecutor)
    slurm.enforces_time_limit = False
    try:
        assert run.time_limit == 2
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            daemon.tick()
            time.sleep(0.1)
        assert run.state == State.PENDING, run.messages
        assert run.started_at is None
        assert not any(line.startswith("scancel") for line in runner.lines)
        assert not daemon.runner._over_time(run)  # no start: no time runs, however long
    finally:
        stop(daemon)


def test_a_cancel_of_a_requeued_run_ends_its_job(tmp_path: Path) -> None:
    """`runs cancel` of a run whose job waits requeued: scancel of its job, CANCELED,
    and its times not those of the execution the requeue ended (its exit marker)."""
    daemon, runner, run, began = running_then_requeued(tmp_path)
    try:
        assert run.state == State.PENDING and run.queued
        requeued_at = run.history[-1]["at"]
        cancel_run(daemon.site, daemon.runner, run.id, 0, "not needed")
        assert run.state == State.CANCELED and run.messages[-1] == "not needed"
        assert "scancel 41" in runner.lines
        assert run.finished_at and run.finished_at >= requeued_at
        assert run.finished_at != iso(began + 1.5)  # the killed execution's exit marker
        assert daemon.runner.launched() == []
    finally:
        stop(daemon)


def test_a_daemon_restarted_while_its_run_is_requeued_polls_it_and_never_submits_it(
    tmp_path: Path,
) -> None:
    """After a restart the requeued run is launched at once (its job polled, its slot of
    max_jobs 1 held: another run waits), never submitted again; it becomes RUNNING when
    its job starts, and ends by the markers of its second execution."""
    daemon, runner, run, began = running_then_requeued(tmp_path, max_jobs=1)
    site = daemon.site
    daemon.stop()
    daemon = Daemon(site)
    runner = Scripted(
        {
            "sbatch": [ok("99\n")],
            "squeue": [ok(f"41|PENDING|BeginTime|x|0|{began + 120}|\n")],
            "scancel": [ok("")],
            "sacct": [NO_ACCOUNTING],
        }
    )
    script(daemon, runner)
    daemon.start()
    try:
        requeued = daemon.runner.active[run.id]
        assert (requeued.state, requeued.queued) == (State.PENDING, True)
        assert daemon.runner.launched() == [requeued]
        drop(site, "b.yaml", {"workflow": "wf", "name": "b"})
        for _ in range(3):
            daemon.tick()
        assert any(line.startswith("squeue") for line in runner.lines)
        assert sbatches(runner) == 0  # neither it nor b: its slot is held
        (other,) = daemon.runner.pending()
        assert other.name == "b"
        again = int(time.time())
        runner.answers["squeue"] = [ok(f"41|RUNNING|None|x|0|{again}|\n")]
        daemon.tick()
        assert requeued.state == State.RUNNING and requeued.started_at == iso(again)
        run_dir = site.store.run_dir(requeued)
        with (run_dir / "status" / "markers").open("a") as markers:
            now = time.time()
            markers.write(f"started 777 {now:.6f} node2\nstart 01 {now:.6f}\n")
            markers.write(f"end 01 0 {now:.6f}\nexit 0 {now:.6f} 0\n")
        runner.answers["squeue"] = [ok(f"41|COMPLETED|None|x|0|{again}|\n")]
        daemon.tick()
        assert requeued.state == State.SUCCESS, requeued.messages
        assert requeued.steps[0]["exit_code"] == 0 and requeued.handle
        assert requeued.handle["job_id"] == "41"
        assert sbatches(runner) == 1  # b's, once the slot was free
    finally:
        stop(daemon)


def test_a_stale_exit_marker_of_the_requeued_execution_does_not_end_the_run(
    tmp_path: Path,
) -> None:
    """The execution a requeue ended wrote `exit 143`: while the job waits, that is not
    the run's end. A job that then leaves the queue without running again is lost (here
    retried), not an ERROR with the killed execution's exit code."""
    template = WORKFLOW + "retries: 1\n"
    daemon, runner, run, _began = running_then_requeued(tmp_path, template)
    try:
        runner.answers["squeue"] = [ok(""), ok("42|PENDING|Priority|x|0|\n")]
        runner.answers["sacct"] = [NO_ACCOUNTING]
        runner.answers["sbatch"] = [ok("42\n")]
        for _ in range(10):
            daemon.tick()
            if run.attempt == 2:
                break
        assert (run.state, run.attempt) == (State.PENDING, 2), run.messages
        said = run.history[-1]["message"]
        assert said.startswith("retry 1 of 1 after: its job ended after a requeue, before its")
        assert "143" not in said and "SIGTERM" not in said
    finally:
        stop(daemon)


def test_a_second_execution_lost_is_lost_not_ended_by_the_first_ones_exit_marker(
    tmp_path: Path,
) -> None:
    """The job ran again (a second `started` line) and was then lost without an exit
    marker: the run is lost, the first execution's `exit 143` is not its end."""
    daemon, runner, run, _began = running_then_requeued(tmp_path)
    try:
        runner.answers["squeue"] = [ok(f"41|RUNNING|None|x|0|{int(time.time())}|\n")]
        daemon.tick()
        assert run.state == State.RUNNING
        with (daemon.site.store.run_dir(run) / "status" / "markers").open("a") as markers:
            markers.write(f"started 777 {time.time():.6f} node2\n")
        runner.answers["squeue"] = [ok("")]
        runner.answers["sacct"] = [NO_ACCOUNTING]
        for _ in range(3):
            daemon.tick()
        assert run.state == State.ERROR
        assert run.messages[-1].startswith(
            "lost: the run's process ended without writing its exit marker"
        ), run.messages
    finally:
        stop(daemon)


def test_markers_are_those_of_the_last_execution(tmp_path: Path) -> None:
    """A `started` line starts the markers afresh; an execution a requeue ended counts
    for nothing while it is the last one (older handles have no such key)."""
    folder = tmp_path / "run"
    (folder / "status").mkdir(parents=True)
    path = folder / "status" / "markers"
    path.write_text("started 1 100.5 n1\nstart 01 100.6\nend 01 0 101\nexit 143 102 2\n")
    first = read_markers(folder)
    assert first.exit == (143, 102.0, 2) and first.steps[1].exit_code == 0
    assert read_markers(folder, superseded=(1, 100.5)).started is None
    assert read_markers(folder, superseded=(1, 100.5)).exit is None
    assert read_markers(folder, superseded=(2, 100.5)).exit == (143, 102.0, 2)
    with path.open("a") as more:
        more.write("started 2 200 n2\nstart 01 200.1\n")
    second = read_markers(folder, superseded=(1, 100.5))
    assert second.started == (2, 200.0, "n2") and second.exit is None
    assert second.steps[1].start == 200.1 and second.steps[1].exit_code is None
    assert read_markers(folder) == second


def test_a_job_that_writes_its_own_end_markers_and_kills_its_script_is_no_success(
    slurm_site: Any, tmp_path: Path
) -> None:
    """Found by the re-review: as for a local run, a participant's step wrote the end
    markers the script would and SIGKILLed it; the organiser's scoring step never ran,
    and its own score was ranked. Slurm's record of the batch script's exit status is
    not the run's to write: the run is an ERROR saying so."""
    from .test_leftovers import FORGED, FORGER

    api.install(slurm_site, write_template(tmp_path / "t", FORGER), workflow_id="wf")
    drop(
        slurm_site,
        "r.yaml",
        {"workflow": "wf", "arguments": {"code": "sub.sh"}},
        files={"sub.sh": FORGED},
    )
    run_until_idle(slurm_site, timeout=120)
    (run,) = [r for r in api.list_runs(slurm_site) if r["workflow"] == "wf"]
    shown = api.show_run(slurm_site, run["id"])
    assert shown["state"] == "ERROR", shown
    assert "killed by SIGKILL, though its markers say it ended well" in shown["messages"][0]
