"""The Slurm executor's pure parts and its polling policy, with a scripted command runner."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowbatch import api
from flowbatch.config import load_config
from flowbatch.daemon import Daemon, cancel_run
from flowbatch.errors import ConfigError, ExecutorError, ExecutorUnavailable, TemplateError
from flowbatch.executors import executor_names
from flowbatch.executors.base import Launch, Liveness
from flowbatch.executors.commands import CommandResult
from flowbatch.executors.slurm import SlurmExecutor
from flowbatch.executors.slurm_script import (
    BatchJob,
    default_template,
    job_name,
    log_paths,
    render_batch_script,
    slurm_time,
)
from flowbatch.executors.slurm_states import parse_sacct, parse_squeue, probe_for
from flowbatch.executors.ssh_pool import HostUnreachable
from flowbatch.runs import State
from flowbatch.site import Site
from flowbatch.slurm_profile import SlurmProfile
from flowbatch.spec.resources import check_mem, parse_seconds
from flowbatch.spec.template import parse_template

from .conftest import drop, make_site, write_template

GOLDEN = Path(__file__).parent / "data" / "golden" / "sbatch-default.sh"


# -- the batch script ------------------------------------------------------------------------


def golden_job() -> BatchJob:
    run_dir = "/srv/bench/results/helloworld/runs/0123456789ab"
    output, error = log_paths(run_dir)
    return BatchJob(
        job_name=job_name("bench", "0123456789ab"),
        site="bench",
        run_id="0123456789ab",
        run_dir=run_dir,
        output=output,
        error=error,
        partition="debug",
        account="proj42",
        qos="normal",
        time=slurm_time(5400),
        cpus=4,
        mem="8G",
        gpus=1,
        extra=["--exclusive", "--constraint=haswell"],
        modules=["gcc/12.2", "python/3.11"],
    )


def test_default_batch_script_matches_golden_file() -> None:
    text = render_batch_script(golden_job(), default_template())
    if os.environ.get("FLOWBATCH_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_unset_resources_leave_no_sbatch_lines() -> None:
    job = golden_job()
    bare = BatchJob(job.job_name, job.site, job.run_id, job.run_dir, job.output, job.error)
    text = render_batch_script(bare, default_template())
    for option in ("--partition", "--time", "--mem", "--gres", "--account", "module load"):
        assert option not in text
    assert text.rstrip().endswith("exec bash 'run.sh'")


def test_paths_with_spaces_cannot_reach_sbatch_lines() -> None:
    job = golden_job()
    job.run_dir = "/srv/my bench/run"
    with pytest.raises(Exception, match="cannot go on an #SBATCH line"):
        render_batch_script(job, default_template())


def test_a_site_name_with_newlines_adds_no_line_to_the_batch_script() -> None:
    """The site's name (the config's ``site_name``, else its folder's) is in the script's
    first comment: with a newline in it, it added #SBATCH lines and commands to every
    job's script (found by review)."""
    job = golden_job()
    job.site = "bench\n#SBATCH --uid=0\ntouch /tmp/fb-pwned"
    text = render_batch_script(job, default_template())
    lines = text.splitlines()
    assert "touch /tmp/fb-pwned" not in lines and "#SBATCH --uid=0" not in lines
    assert len(lines) == len(render_batch_script(golden_job(), default_template()).splitlines())
    assert "of site bench\\n#SBATCH --uid=0\\ntouch /tmp/fb-pwned." in lines[1]


def test_a_broken_site_template_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot be rendered"):
        render_batch_script(golden_job(), "{{ no_such_value }}", source="site/sbatch.sh.j2")


# -- resources -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("1d", 86400),
        ("5:00", 300),
        ("1:30:00", 5400),
        ("1-12", 129600),
        ("1-00:30", 88200),
        ("2-00:00:01", 172801),
    ],
)
def test_time_forms(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize("text", ["10", 10, "1:75", "-5m", "soon", "0s", True])
def test_bad_times(text: object) -> None:
    with pytest.raises(ValueError):
        parse_seconds(text)


def test_slurm_time_and_mem() -> None:
    assert slurm_time(90) == "0-00:01:30"
    assert slurm_time(90061.2) == "1-01:01:02"
    assert check_mem(500) == "500M"
    assert check_mem("4gb") == "4G"
    for bad in ("0", "4 parsecs", "-1G", True):
        with pytest.raises(ValueError):
            check_mem(bad)


TEMPLATE = {"workflow": {"steps": [{"name": "s", "action": {"commands": ["true"]}}]}}


def test_template_resources_are_strict() -> None:
    ok = parse_template({**TEMPLATE, "resources": {"time": "10m", "cpus": 2}}, file="t.yaml")
    assert ok.resources is not None and ok.resources.time == 600 and ok.resources.cpus == 2
    with pytest.raises(TemplateError) as err:
        parse_template({**TEMPLATE, "resources": {"cpus": -1}}, file="t.yaml")
    assert err.value.field == "resources.cpus"
    with pytest.raises(TemplateError) as err:
        parse_template({**TEMPLATE, "resources": {"nodes": 2}}, file="t.yaml")
    assert err.value.field == "resources.nodes" and "unknown key" in err.value.reason


# -- profiles --------------------------------------------------------------------------------


def test_profiles_are_executors_and_validated(tmp_path: Path) -> None:
    (tmp_path / "flowbatch.yaml").write_text("slurm:\n  gpu:\n    gpus: 2\n    partition: gpu\n")
    config = load_config(tmp_path)
    assert executor_names(config) == ["local", "slurm", "slurm:gpu"]
    for bad, where in [
        ("slurm:\n  default:\n    mem: lots\n", "slurm.default.mem"),
        ("slurm:\n  default:\n    poll: {floor: 5, ceiling: 1}\n", "slurm.default.poll"),
        ('slurm:\n  default:\n    extra: ["--x\\n#SBATCH --y"]\n', "slurm.default.extra"),
        ("slurm:\n  default:\n    colour: blue\n", "slurm.default.colour"),
    ]:
        (tmp_path / "flowbatch.yaml").write_text(bad)
        with pytest.raises(ConfigError) as err:
            load_config(tmp_path)
        assert err.value.field == where, bad


# -- parsing and states ----------------------------------------------------------------------


def test_squeue_and_sacct_parsing() -> None:
    jobs = parse_squeue("1|PENDING|Priority|fb-s-a|0|\n2|TIMEOUT|TimeLimit|fb-s-b|15|\n")
    assert jobs["1"].state == "PENDING" and jobs["1"].reason == "Priority"
    assert jobs["2"].exit_code == "0:15" and jobs["2"].status_code() == 143
    acct = parse_sacct("7|CANCELLED by 0|0:15|fb-s-c\n8|OUT_OF_MEMORY|0:125|fb-s-d\n")
    assert acct["7"].state == "CANCELLED" and acct["7"].reason == "by 0"
    assert acct["8"].state == "OUT_OF_MEMORY"


@pytest.mark.parametrize(
    ("line", "liveness", "key", "text"),
    [
        ("1|PENDING|Priority|n|0|", Liveness.ALIVE, None, ""),
        ("1|RUNNING|None|n|0|", Liveness.ALIVE, None, ""),
        # requeued and held: back in the queue, not ended
        ("1|SPECIAL_EXIT|job requeued in held state|n|15|", Liveness.ALIVE, None, ""),
        # a state word a newer Slurm may have: no end while squeue lists the job
        ("1|SOME_NEW_STATE|None|n|0|", Liveness.ALIVE, None, ""),
        ("1|DEADLINE|None|n|0|", Liveness.FINISHED, "message", "DEADLINE"),
        ("1|TIMEOUT|TimeLimit|n|15|", Liveness.FINISHED, "message", "TIMEOUT (exit code 0:15"),
        ("1|OUT_OF_MEMORY|OutOfMemory|n|0|", Liveness.FINISHED, "message", "OUT_OF_MEMORY"),
        ("1|FAILED|NonZeroExitCode|n|768|", Liveness.FINISHED, "message", "exit code 3:0"),
        ("1|CANCELLED|None|n|15|", Liveness.FINISHED, "canceled", "outside flowbatch"),
        ("1|NODE_FAIL|NodeDown|n|0|", Liveness.FINISHED, "infra", "NODE_FAIL"),
        ("1|PREEMPTED|None|n|0|", Liveness.FINISHED, "infra", "PREEMPTED"),
    ],
)
def test_state_mapping(line: str, liveness: Liveness, key: str | None, text: str) -> None:
    probe = probe_for(parse_squeue(line)["1"])
    assert probe.liveness == liveness
    if key == "infra":
        assert probe.infra_failure and text in probe.infra_failure  # retried, else ERROR
    elif key:
        assert text in probe.detail[key]


# -- polling policy with a scripted runner ---------------------------------------------------


@dataclass
class Scripted:
    """A CommandRunner that answers from a script and records the command lines."""

    answers: dict[str, list[CommandResult]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)  # the Slurm command of each line
    prefixes: list[str] = field(default_factory=list)  # what ran before it in the line
    uids: list[int | None] = field(default_factory=list)
    inputs: list[str | None] = field(default_factory=list)  # what each line was fed
    where: str = "test"

    def run(
        self,
        command: str,
        *,
        input: str | None = None,
        timeout: float | None = None,
        uid: int | None = None,
    ) -> CommandResult:
        before, _, command = command.rpartition(" && ")
        self.lines.append(command)
        self.prefixes.append(before)
        self.uids.append(uid)
        self.inputs.append(input)
        queue = self.answers[command.split()[0]]
        return queue.pop(0) if len(queue) > 1 else queue[0]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def executor(runner: Scripted, clock: Clock, **profile: object) -> SlurmExecutor:
    prof = SlurmProfile.model_validate({"poll": {"floor": 1, "ceiling": 4}, **profile})
    return SlurmExecutor("slurm", "default", prof, site_name="s", runner=runner, clock=clock)


HANDLES = [("a", {"job_id": "1"}), ("b", {"job_id": "2"})]


def ok(text: str) -> CommandResult:
    return CommandResult(0, text, "")


def test_adaptive_interval_backs_off_and_resets() -> None:
    runner = Scripted({"squeue": [ok("1|RUNNING|None|n|0|\n2|PENDING|Priority|n|0|\n")]})
    clock = Clock()
    ex = executor(runner, clock)
    polled_at = []
    for _ in range(40):  # 20 s of ticks every 0.5 s
        if ex.poll(HANDLES):
            polled_at.append(clock.now - 1000)
        clock.now += 0.5
    gaps = [b - a for a, b in itertools.pairwise(polled_at)]
    assert gaps[0] == 1.0  # the floor after the first (changed) answer
    assert gaps == sorted(gaps) and max(gaps) <= 4.5  # grows, capped by the ceiling
    assert all(line.startswith("squeue") for line in runner.lines)
    ex._soon()  # what a submission or a cancel does
    assert ex._interval == 1


def test_failing_squeue_is_unknown_until_the_grace_then_an_infrastructure_failure() -> None:
    """A controller that does not answer says nothing about the jobs: UNKNOWN (asked
    again), and only once more than `failures` calls in a row failed for longer than
    `unreachable_grace` are the runs given up; a poll that answers starts over."""
    bad = CommandResult(1, "", "slurm_load_jobs error: Unable to contact slurm controller")
    good = ok("1|RUNNING|None|n|0|\n2|PENDING|Priority|n|0|\n")
    runner = Scripted({"squeue": [bad, bad, bad, good, bad, bad, bad, bad, bad]})
    clock = Clock()
    ex = executor(runner, clock, failures=2, unreachable_grace="30s")

    def poll() -> set[Liveness]:
        probes = ex.poll(HANDLES)
        clock.now += 10
        return {p.liveness for p in probes.values()}

    assert [poll() for _ in range(3)] == [{Liveness.UNKNOWN}] * 3  # 3 failures, 20 s
    assert poll() == {Liveness.ALIVE}  # it answered: the count and the time start over
    assert [poll() for _ in range(4)] == [{Liveness.UNKNOWN}] * 4  # 4 failures, but 30 s
    probes = ex.poll(HANDLES)  # 5 failures over 40 s
    assert {p.liveness for p in probes.values()} == {Liveness.GONE}
    why = probes["a"].infra_failure or ""  # retried (after its job is cancelled) or ERROR
    assert why.startswith("Slurm did not answer for 40 s (squeue failed 5 times in a row")
    assert "Unable to contact slurm controller" in why and "unreachable_grace 30 s" in why
    assert why.endswith("its job 1 is cancelled once Slurm answers")


def test_a_job_submitted_while_squeue_fails_gets_the_whole_grace(tmp_path: Path) -> None:
    """Only an answering squeue ends a streak of failures (a submission does not), but a
    job submitted during one is given up only a whole grace after its submission."""
    bad = CommandResult(1, "", f"slurm_load_jobs error: {UNREACHABLE}")
    runner = Scripted({"squeue": [bad], "sbatch": [ok("5\n")]})
    clock = Clock()
    ex = executor(runner, clock, failures=0, unreachable_grace=30)
    handles = [("old", {"job_id": "1"}), ("new", {"job_id": "5"})]
    assert ex.poll(handles[:1])["old"].liveness == Liveness.UNKNOWN  # the streak begins
    clock.now += 20
    assert ex.launch(Launch("new", tmp_path, "run.sh"))["job_id"] == "5"
    clock.now += 20
    probes = ex.poll(handles)
    assert probes["old"].liveness == Liveness.GONE and probes["old"].infra_failure
    assert probes["new"].liveness == Liveness.UNKNOWN
    clock.now += 15
    assert ex.poll(handles[1:])["new"].liveness == Liveness.GONE


def test_jobs_gone_from_squeue_ask_sacct_once_per_poll() -> None:
    runner = Scripted(
        {
            "squeue": [CommandResult(1, "", "slurm_load_jobs error: Invalid job id specified")],
            "sacct": [ok("1|TIMEOUT|0:15|n\n2|COMPLETED|0:0|n\n")],
        }
    )
    ex = executor(runner, Clock())
    probes = ex.poll(HANDLES)
    assert "TIMEOUT" in probes["a"].detail["message"]
    assert probes["b"].liveness == Liveness.FINISHED
    assert [line.split()[0] for line in runner.lines] == ["squeue", "sacct"]
    assert "-j 1,2" in runner.lines[1]


def test_no_accounting_means_markers_decide_and_sacct_is_not_asked_again() -> None:
    runner = Scripted(
        {
            "squeue": [CommandResult(1, "", "Invalid job id specified")],
            "sacct": [CommandResult(1, "", "Slurm accounting storage is disabled")],
        }
    )
    clock = Clock()
    ex = executor(runner, clock)
    first = ex.poll(HANDLES)
    clock.now += 10
    ex.poll(HANDLES)
    assert first["a"].liveness == Liveness.FINISHED and "left the queue" in first["a"].raw
    # a failed run says why no more is known (a scancel and a TIMEOUT while the daemon
    # was down read as a bare SIGTERM: found by review)
    said = first["a"].detail["message"]
    assert "no record of how it ended" in said and "scancel or the job's time limit" in said
    assert [line.split()[0] for line in runner.lines] == ["squeue", "sacct", "squeue"]


def test_launch_adopts_a_job_found_by_name(tmp_path: Path) -> None:
    name = job_name("s", "r1")
    runner = Scripted({"squeue": [ok(f"41|RUNNING|None|{name}|0|\n")], "sbatch": [ok("99\n")]})
    ex = executor(runner, Clock())
    job = Launch("r1", tmp_path, "run.sh", handle={"job_name": name, "submitting": True})
    handle = ex.launch(job)
    assert handle["job_id"] == "41" and handle["adopted"] is True
    assert not any(line.startswith("sbatch") for line in runner.lines)
    fresh = ex.launch(Launch("r2", tmp_path, "run.sh"))  # no earlier intent: submit
    assert fresh["job_id"] == "99" and runner.lines[-1].startswith("sbatch --parsable")


@pytest.mark.parametrize(("euid", "uid"), [(0, 1234), (1000, 1000)])
def test_lookups_by_name_ask_only_for_the_jobs_of_the_user_who_submits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, euid: int, uid: int
) -> None:
    """squeue --name lists every user's jobs, and root's scancel --name ends them: every
    lookup by name (an interrupted submission, an array task known by name only, a job
    given up on) and every cancel by name asks for the jobs of the user who submits the
    run's: its owner for a root daemon, else the daemon's own user (by uid)."""
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    name = job_name("s", "r1")
    runner = Scripted({"squeue": [ok("")], "sbatch": [ok("99\n")], "scancel": [ok("")]})
    ex = executor(runner, Clock())
    job = Launch("r1", tmp_path, "run.sh", uid=1234)
    job.handle = ex.intent(job)
    assert job.handle["uid"] == uid
    mine = f"--user {uid}"
    assert ex.launch(job)["job_id"] == "99"  # none of its user's: submitted
    assert f"--name {name} {mine} -O " in runner.lines[0]
    ex.cancel(job.handle, "not needed")  # an intent only
    assert runner.lines[-1] == f"scancel --name {name} {mine}"
    task = {**job.handle, "job_name": f"{name}-array", "array_task": 1}
    ex.cancel(task, "not needed")  # a task of an array known by name only
    assert f"--name {name}-array {mine} -O " in runner.lines[-1]
    ex.abandon({**task, "run_dir": "/r/1"}, "lost")
    ex.tend()
    assert f"--name {name}-array {mine} -O " in runner.lines[-1]


def test_via_ssh_lookups_by_name_ask_for_the_jobs_of_the_hosts_user(tmp_path: Path) -> None:
    """Over SSH the host's configured user submits: its jobs are looked at (by name, as
    squeue and scancel take it on any Slurm version), whoever the run's owner is."""
    (tmp_path / "flowbatch.yaml").write_text(
        "ssh:\n  login1:\n    hostname: 127.0.0.9\n    user: u\n    remote_root: /tmp/x\n"
        "slurm:\n  default:\n    via: login1\n"
    )
    config = load_config(tmp_path)
    runner = Scripted({"squeue": [ok("")], "sbatch": [ok("12\n")], "scancel": [ok("")]})
    prof = config.slurm["default"]
    ex = SlurmExecutor("slurm", "default", prof, site_name="s", runner=runner, config=config)
    job = Launch("r1", tmp_path, "run.sh", uid=1234)
    job.handle = ex.intent(job)
    assert "uid" not in job.handle
    ex.launch(job)
    assert "--name fb-s-r1 --user u -O " in runner.lines[0]
    ex.cancel(job.handle, "not needed")
    assert runner.lines[-1] == "scancel --name fb-s-r1 --user u"


UNREACHABLE = "Unable to contact slurm controller (connect failure)"


def test_an_abandoned_job_is_cancelled_and_must_end_before_its_run_is_submitted_again(
    tmp_path: Path,
) -> None:
    """A run given up on while Slurm did not answer (or retried after a node failure)
    hands its job over: scancel once Slurm answers, noted in the site folder so that a
    restarted daemon does it too, and the run is submitted again only once that job has
    ended. Other runs are not held up."""
    from flowbatch.executors.base import LaunchDeferred

    down = CommandResult(1, "", f"scancel: error: Kill job error on job id 7: {UNREACHABLE}")
    runner = Scripted({"scancel": [down], "sbatch": [ok("8\n")]})
    clock = Clock()
    prof = SlurmProfile.model_validate({"poll": {"floor": 1, "ceiling": 4}})

    def slurm() -> SlurmExecutor:
        return SlurmExecutor(
            "slurm", "default", prof, site_name="s", site_root=tmp_path, runner=runner, clock=clock
        )

    ex = slurm()
    run_dir = tmp_path / "r1"
    ex.abandon({"job_id": "7", "job_name": "fb-s-r1", "run_dir": str(run_dir)}, "lost")
    noted = tmp_path / "slurm-abandoned" / "default" / "7.json"
    assert noted.is_file()
    ex.tend()  # Slurm does not answer: kept
    assert runner.lines == ["scancel 7"]
    with pytest.raises(ExecutorUnavailable, match="must be cancelled first") as waits:
        ex.launch(Launch("r1", run_dir, "run.sh", attempt=2))
    assert not isinstance(waits.value, LaunchDeferred)  # the executor is away
    assert runner.lines == ["scancel 7"]  # not asked again before the interval has passed
    clock.now += 10
    with pytest.raises(ExecutorUnavailable, match="must be cancelled first"):
        ex.launch(Launch("r1", run_dir, "run.sh", attempt=2))
    other = ex.launch(Launch("r2", tmp_path / "r2", "run.sh"))  # another run goes on
    assert other["job_id"] == "8"
    assert [line.split()[0] for line in runner.lines] == ["scancel", "scancel", "sbatch"]

    # the daemon restarts; Slurm answers: cancelled, but the job is still ending
    runner.lines.clear()
    runner.answers["scancel"] = [ok("")]
    runner.answers["squeue"] = [ok("7|COMPLETING|None|fb-s-r1|0|\n")]
    again = slurm()
    retry = Launch("r1", run_dir, "run.sh", attempt=2)
    with pytest.raises(LaunchDeferred, match="has not ended yet"):
        again.launch(retry)
    assert json.loads(noted.read_text())["cancelled"] is True
    runner.answers["squeue"] = [ok("7|CANCELLED|None|fb-s-r1|15|\n")]
    clock.now += 10
    handle = again.launch(retry)
    assert handle["job_id"] == "8" and not noted.exists()
    assert handle["job_name"] == "fb-s-r1.2"  # never taken for the earlier attempt's job
    assert [line.split()[0] for line in runner.lines] == ["scancel", "squeue", "squeue", "sbatch"]


def test_a_cancel_slurm_does_not_take_is_sent_again_once_it_answers(tmp_path: Path) -> None:
    down = CommandResult(1, "", f"scancel: error: {UNREACHABLE}")
    runner = Scripted({"scancel": [down, ok("")], "squeue": [ok("")]})
    clock = Clock()
    ex = executor(runner, clock)
    ex.cancel({"job_name": "fb-s-r1", "submitting": True}, "not needed")  # an intent only
    mine = f"--user {os.geteuid()}"  # the daemon's own jobs (no uid in that intent)
    assert runner.lines == [f"scancel --name fb-s-r1 {mine}"]
    clock.now += 10
    ex.tend()
    assert runner.lines == [f"scancel --name fb-s-r1 {mine}"] * 2
    clock.now += 10
    ex.tend()  # done: nothing left to send
    assert len(runner.lines) == 2


@pytest.mark.parametrize(
    ("answer", "waits"),
    [
        (CommandResult(1, "", f"sbatch: error: Batch job submission failed: {UNREACHABLE}"), True),
        (CommandResult(124, "", "timed out after 60.0 s"), True),
        (CommandResult(1, "", "sbatch: error: invalid partition specified: nope"), False),
    ],
)
def test_a_submission_slurm_does_not_answer_waits(
    tmp_path: Path, answer: CommandResult, waits: bool
) -> None:
    """Not answered (or not in time) is not refused: the run waits, and its recorded
    intent finds the job by name should it have been submitted after all."""
    ex = executor(Scripted({"sbatch": [answer]}), Clock())
    with pytest.raises(ExecutorError) as err:
        ex.launch(Launch("r1", tmp_path, "run.sh"))
    assert isinstance(err.value, ExecutorUnavailable) is waits
    assert ("Slurm does not answer" in err.value.reason) is waits


#: pending reasons that never clear while the job's request and the cluster's configuration
#: stay as they are (the job is ended after NEVER_START), and some that do
NEVER_CLEAR = [
    "PartitionConfig",
    "PartitionTimeLimit",
    "MaxMemPerLimit",
    "AccountNotAllowed",
    "QOSNotAllowed",
    "ReservationDeleted",
    "AssocMaxNodePerJobLimit",  # Slurm 22.05's spelling
    "AssocMaxMemPerNode",
    "QOSMaxGRESPerJob",
    "QOSMinCpuNotSatisfied",
    # what squeue shows in place of AccountNotAllowed (the job's description)
    "Job's account not known, so it can't use this partition (p allows fbx)",
    "Job's account not permitted to use this partition (p allows a not b)",
    "Job's QOS not permitted to use this partition (p allows a not b)",
]
CLEAR = [
    "Resources",
    "Priority",
    "None",
    "PartitionDown",
    "PartitionInactive",
    "NodeDown",
    "ReqNodeNotAvail, UnavailableNodes:n1",
    # what squeue shows (Slurm 22.05) while the partition's nodes are drained or down
    "Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions",
    "JobHeldAdmin",
    "Dependency",
    "AssocGrpCpuLimit",
    "QOSGrpNodeLimit",
    "AssocMaxJobsLimit",
    "QOSMaxJobsPerUserLimit",
    "QOSMaxCpuPerUserLimit",
]


def test_only_reasons_that_never_clear_end_a_pending_job() -> None:
    """A job pending for a reason that does not clear by itself (a request its partition's
    configuration, QOS or association can never satisfy) is cancelled after NEVER_START
    and its run ends with Slurm's reason; one waiting for others' jobs, an admin's
    maintenance or a hold is left to wait."""
    from flowbatch.executors.slurm import NEVER_START

    for reason in NEVER_CLEAR + CLEAR:
        runner = Scripted({"squeue": [ok(f"5|PENDING|{reason}|n|0|\n")], "scancel": [ok("")]})
        clock = Clock()
        ex = executor(runner, clock)
        assert ex.poll([("a", {"job_id": "5"})])["a"].liveness == Liveness.ALIVE
        clock.now += NEVER_START + 1
        probe = ex.poll([("a", {"job_id": "5"})])["a"]
        if reason in CLEAR:
            assert probe.liveness == Liveness.ALIVE, reason
            assert not any(line.startswith("scancel") for line in runner.lines), reason
            continue
        assert probe.liveness == Liveness.FINISHED, reason
        assert f"it has been PENDING ({reason}) for 300 s" in probe.detail["refused"], reason
        assert runner.lines[-1] == "scancel 5", reason


CLOSED = CommandResult(
    1,
    "",
    "sbatch: error: Batch job submission failed: Required partition not available "
    "(inactive or drain)\n",
)


def test_a_partition_drained_or_inactive_makes_its_runs_wait(tmp_path: Path) -> None:
    """sbatch refuses every job of a partition an admin has drained or made inactive (for
    maintenance): its runs wait with Slurm's words (LaunchDeferred: the other partitions
    go on), one try at a time, less and less often, and go out once it takes jobs."""
    from flowbatch.executors.base import LaunchDeferred

    runner = Scripted({"sbatch": [CLOSED]})
    clock = Clock()
    ex = executor(runner, clock, partition="main")  # poll floor 1 s, ceiling 4 s
    with pytest.raises(LaunchDeferred) as waits:
        ex.launch(Launch("r1", tmp_path, "run.sh"))
    said = waits.value.summary()
    assert "partition 'main' takes no jobs now (drained or inactive)" in said
    assert "Required partition not available (inactive or drain)" in said
    assert "submitted once the partition takes jobs again" in said
    for run in ("r1", "r2"):  # not asked again before the interval has passed
        with pytest.raises(LaunchDeferred, match="Required partition not available"):
            ex.launch(Launch(run, tmp_path, "run.sh"))
    assert len(runner.lines) == 1
    runner.answers["sbatch"] = [ok("7\n")]
    other = Launch("r3", tmp_path, "run.sh", resources={"partition": "gpu"})
    assert ex.launch(other)["job_id"] == "7"  # another partition goes on
    runner.answers["sbatch"] = [CLOSED]
    tries = []
    for _ in range(12):  # 12 s: tried after 1, then 1.5, 2.25, 3.4, 4 s (the ceiling)
        clock.now += 1
        before = len(runner.lines)
        with pytest.raises(LaunchDeferred):
            ex.launch(Launch("r1", tmp_path, "run.sh"))
        tries.append(len(runner.lines) - before)
    assert tries == [1, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0], tries
    clock.now += 4
    runner.answers["sbatch"] = [ok("8\n")]
    assert ex.launch(Launch("r1", tmp_path, "run.sh"))["job_id"] == "8"  # open again
    assert ex.launch(Launch("r2", tmp_path, "run.sh"))["job_id"] == "8"  # at once


@pytest.mark.parametrize(
    "said",
    [
        "sbatch: error: invalid partition specified: nope",
        "sbatch: error: Memory specification can not be satisfied\n"
        "sbatch: error: Batch job submission failed: Requested node configuration is not "
        "available",
    ],
)
def test_an_unknown_partition_or_a_request_over_its_limits_stays_an_error(
    tmp_path: Path, said: str
) -> None:
    from flowbatch.executors.base import LaunchDeferred

    runner = Scripted({"sbatch": [CommandResult(1, "", said)]})
    ex = executor(runner, Clock())
    for _ in range(2):  # and no partition is taken for closed
        with pytest.raises(ExecutorError) as err:
            ex.launch(Launch("r1", tmp_path, "run.sh"))
        assert not isinstance(err.value, ExecutorUnavailable)
        assert said.splitlines()[-1] in err.value.reason
    assert len(runner.lines) == 2
    runner.answers["sbatch"] = [CLOSED]  # the cluster's default partition, drained
    with pytest.raises(LaunchDeferred, match="the cluster's default partition takes no jobs"):
        ex.launch(Launch("r1", tmp_path, "run.sh"))


# -- the runner with a scripted Slurm ---------------------------------------------------------

WORKFLOW = "workflow:\n  steps:\n    - name: s\n      action: {commands: ['true']}\n"


def slurm_daemon(tmp_path: Path, config: dict[str, object] | None = None) -> Daemon:
    site = make_site(tmp_path / "site", {"executor": "slurm", **(config or {})})
    api.install(site, write_template(tmp_path / "tpl", WORKFLOW), workflow_id="wf")
    daemon = Daemon(site)
    daemon.start()
    return daemon


class DropsSbatch(Scripted):
    """sbatch reaches slurmctld, but its answer is lost (the submit host's link drops)."""

    def run(self, command: str, **kw: object) -> CommandResult:
        if "sbatch" in command:
            self.lines.append("sbatch")
            raise HostUnreachable("ssh host login1: connection reset while sbatch ran")
        return super().run(command, **kw)  # type: ignore[arg-type]


def test_cancelling_a_pending_run_whose_submission_went_unanswered_cancels_its_job(
    tmp_path: Path,
) -> None:
    """The run waits PENDING with only its intent (the job name) recorded, and its job
    may exist: a cancel sends scancel by that name, it does not just mark the run."""
    daemon = slurm_daemon(tmp_path)
    runner = DropsSbatch({"scancel": [ok("")]})
    slurm = daemon.executors["slurm"]
    assert isinstance(slurm, SlurmExecutor)
    slurm._runner = runner
    try:
        drop(daemon.site, "r.yaml", {"workflow": "wf"})
        daemon.tick()
        (run,) = daemon.runner.active.values()
        assert run.state.value == "PENDING" and run.handle and run.handle["submitting"]
        assert "connection reset" in (run.waiting or "")
        cancel_run(daemon.site, daemon.runner, run.id, 0, "not needed")
        assert run.state.value == "CANCELED" and run.messages == ["not needed"]
        mine = f"--user {run.handle['uid']}"
        assert runner.lines == ["sbatch", f"scancel --name {run.handle['job_name']} {mine}"]
    finally:
        daemon.stop()
        daemon.site.close()


def test_a_run_starts_when_its_job_starts_not_when_it_was_submitted(tmp_path: Path) -> None:
    """squeue is asked for times in seconds since the epoch (whatever its time zone); a
    run whose job waits in the queue is PENDING (launched: never submitted again), and a
    pending job's estimated start changes nothing; once its job runs, the run is RUNNING
    and its started_at is Slurm's StartTime (written once)."""
    import time as _time

    from flowbatch.lifecycle import iso

    poll = {"floor": 0, "ceiling": 0.01}
    daemon = slurm_daemon(tmp_path, {"slurm": {"default": {"poll": poll}}})
    slurm = daemon.executors["slurm"]
    assert isinstance(slurm, SlurmExecutor)
    began = int(_time.time()) + 1  # not the submission: later
    soon = began + 3600
    runner = Scripted(
        {"sbatch": [ok("41\n")], "squeue": [ok(f"41|PENDING|Priority|x|0|{soon}|\n")]}
    )
    slurm._runner = runner
    try:
        drop(daemon.site, "a.yaml", {"workflow": "wf", "name": "a"})
        daemon.tick()
        daemon.tick()
        (run,) = daemon.runner.launched()
        assert run.handle and run.handle["status"] == "PENDING (Priority)"
        assert (run.state, run.started_at, run.queued) == (State.PENDING, None, True)
        assert daemon.site.store.load(run.id).handle == run.handle  # in run.json
        daemon.tick()
        assert [line.split()[0] for line in runner.lines].count("sbatch") == 1
        assert runner.prefixes[-1] == "export SLURM_TIME_FORMAT=%s"
        runner.answers["squeue"] = [ok(f"41|RUNNING|None|x|0|{began}|\n")]
        daemon.tick()
        assert run.handle["status"] == "RUNNING" and run.started_at == iso(began)
        assert run.state == State.RUNNING and "queued" not in run.handle
        assert [change["state"] for change in run.history] == ["PENDING", "RUNNING"]
        assert daemon.site.store.load(run.id).started_at == iso(began)  # in run.json
        (row,) = api.list_runs(daemon.site)
        assert (row["state"], row["started_at"]) == ("RUNNING", iso(began))  # the index
        written = (daemon.site.store.run_dir(run) / "run.json").stat().st_mtime_ns
        daemon.tick()
        assert (daemon.site.store.run_dir(run) / "run.json").stat().st_mtime_ns == written
        # a start before this attempt was queued (a controller's clock behind) is not taken
        runner.answers["squeue"] = [ok(f"41|RUNNING|None|x|0|{began - 7200}|\n")]
        daemon.tick()
        assert run.started_at == iso(began)
        # a time squeue printed in a local form is not taken
        status = parse_squeue("41|RUNNING|None|x|0|2026-01-02T03:04:05|\n")["41"]
        assert status.start is None
    finally:
        for r in list(daemon.runner.active.values()):
            daemon.runner._transition(r, State.CANCELED, messages=["test over"])
        daemon.stop()
        daemon.site.close()


def test_a_reload_keeps_unchanged_executors_and_the_old_one_for_its_running_runs(
    tmp_path: Path,
) -> None:
    """SIGHUP's reload: the local executor is kept with the new concurrency, an
    unchanged Slurm profile keeps its object, a new profile is usable at once, and a
    changed profile's running job is still watched by the object that submitted it
    (its submit host, its failures) until it ends, while new runs go to the new one."""
    poll = {"floor": 0, "ceiling": 0.01}
    config: dict[str, object] = {
        "local": {"concurrency": 1},
        "slurm": {"default": {"poll": poll}, "other": {"poll": poll}},
    }
    daemon = slurm_daemon(tmp_path, config)
    old = daemon.executors["slurm"]
    local, other = daemon.executors["local"], daemon.executors["slurm:other"]
    assert isinstance(old, SlurmExecutor)
    first = Scripted({"sbatch": [ok("41\n")], "squeue": [ok("41|RUNNING|None|x|0|\n")]})
    old._runner = first
    try:
        drop(daemon.site, "a.yaml", {"workflow": "wf", "name": "a"})
        daemon.tick()
        (a,) = daemon.runner.launched()
        changed = {
            "polling": {"interval": 0.2, "settle": 0.0},
            "local": {"concurrency": 3},
            "slurm": {
                "default": {"poll": poll, "partition": "big"},
                "other": {"poll": poll},
                "gpu": {"poll": poll, "gpus": 1},
            },
        }
        daemon.site.layout.config.write_text(yaml.safe_dump({"executor": "slurm", **changed}))
        daemon._reload()
        new = daemon.executors["slurm"]
        assert new is not old and isinstance(new, SlurmExecutor)
        assert new.profile.partition == "big"
        assert daemon.executors["local"] is local and local.limit == 3
        assert daemon.executors["slurm:other"] is other
        assert daemon.runner.executor_of(a) is old and daemon.runner.retired == [old]
        second = Scripted({"sbatch": [ok("42\n")], "squeue": [ok("42|RUNNING|None|x|0|\n")]})
        new._runner = second
        gpu = daemon.executors["slurm:gpu"]
        assert isinstance(gpu, SlurmExecutor)
        gpu._runner = Scripted({"sbatch": [ok("43\n")], "squeue": [ok("43|RUNNING|None|x|0|\n")]})
        drop(daemon.site, "b.yaml", {"workflow": "wf", "name": "b"})
        drop(daemon.site, "g.yaml", {"workflow": "wf", "name": "g", "executor": "slurm:gpu"})
        daemon.tick()
        running = {r.name: r for r in daemon.runner.launched()}
        assert set(running) == {"a", "b", "g"}, [r.messages for r in daemon.runner.active.values()]
        assert running["b"].handle and running["b"].handle["job_id"] == "42"
        assert running["g"].handle and running["g"].handle["job_id"] == "43"
        assert "--partition=big" in (second.inputs[0] or "")  # b's batch script
        assert [line.split()[0] for line in second.lines] == ["sbatch", "squeue"]
        assert "-j 41 " in first.lines[-1]  # a's job: still asked through its own object
        # a's job ends: the old object is let go
        first.answers["squeue"] = [ok("41|CANCELLED|None|x|15|\n")]
        daemon.tick()
        assert a.state.value == "CANCELED" and a.id not in daemon.runner.pinned
        assert daemon.runner.retired == []
    finally:
        for run in list(daemon.runner.active.values()):
            daemon.runner._transition(run, State.CANCELED, messages=["test over"])
        daemon.stop()
        daemon.site.close()


def test_a_rebuild_keeps_the_executors_whose_settings_did_not_change(tmp_path: Path) -> None:
    """What counts as a change: a Slurm profile goes with the ssh host it goes through
    and that host's jump hosts, an ssh host with its jump hosts."""
    from flowbatch.config import SiteConfig
    from flowbatch.executors import build_executors, rebuild_executors

    base = {
        "ssh": {
            "gate": {"hostname": "gate.example", "user": "u"},
            "login": {"hostname": "login.example", "user": "u", "jump_host": "gate"},
            "other": {"hostname": "other.example", "user": "u"},
        },
        "slurm": {"remote": {"via": "login"}, "here": {"partition": "debug"}},
    }
    old = SiteConfig.model_validate(base)
    current = build_executors(old, lambda: None, site_root=tmp_path)
    same = rebuild_executors(current, old, old, lambda: None, site_root=tmp_path)
    assert all(same[name] is current[name] for name in current)
    changed = SiteConfig.model_validate(
        {
            **base,
            "local": {"concurrency": 7},
            "ssh": {
                **base["ssh"],
                "gate": {"hostname": "gate.example", "user": "u", "port": 2222},
                "new": {"hostname": "new.example", "user": "u"},
            },
        }
    )
    after = rebuild_executors(current, old, changed, lambda: None, site_root=tmp_path)
    kept = {name for name in current if after.get(name) is current[name]}
    assert kept == {"local", "slurm", "slurm:here", "other"}
    assert after["local"].limit == 7
    assert set(after) == {*current, "new"}


def test_site_config_example_renders_like_the_default() -> None:
    """The commented example in site-config/ stays a working override."""
    example = Path(__file__).parent.parent / "site-config" / "sbatch.sh.j2"
    text = render_batch_script(golden_job(), example.read_text())
    default = render_batch_script(golden_job(), default_template())
    directives = [
        line for line in default.splitlines() if line.startswith(("#SBATCH", "module", "exec"))
    ]
    assert [
        line for line in text.splitlines() if line.startswith(("#SBATCH", "module", "exec"))
    ] == directives


@pytest.mark.parametrize("script_ended", [True, False])
def test_a_run_that_ended_while_slurm_did_not_answer_ends_by_its_markers(
    tmp_path: Path, script_ended: bool
) -> None:
    """Jobs go on while slurmctld is down and write their exit marker on the shared file
    system: past the grace, a run whose script ended is finished by its markers (SUCCESS,
    its job not cancelled), not lost; one without its exit marker is given up."""
    daemon = slurm_daemon(
        tmp_path,
        {
            "slurm": {
                "default": {
                    "poll": {"floor": 0, "ceiling": 0.01},
                    "failures": 0,
                    "unreachable_grace": "1s",
                }
            }
        },
    )
    slurm = daemon.executors["slurm"]
    assert isinstance(slurm, SlurmExecutor)
    clock = Clock()
    slurm._clock = clock
    bad = CommandResult(1, "", f"slurm_load_jobs error: {UNREACHABLE}")
    runner = Scripted(
        {"sbatch": [ok("41\n")], "squeue": [ok("41|RUNNING|None|x|0|\n")], "scancel": [ok("")]}
    )
    slurm._runner = runner
    try:
        drop(daemon.site, "a.yaml", {"workflow": "wf", "name": "a"})
        daemon.tick()
        (run,) = daemon.runner.launched()
        run_dir = daemon.site.store.run_dir(run)
        if script_ended:  # as the job's node would, on the shared file system
            subprocess.run(["bash", str(run_dir / "run.sh")], cwd=run_dir, check=True)
        runner.answers["squeue"] = [bad]
        for _ in range(3):
            clock.now += 2
            daemon.runner.poll()
        if script_ended:
            assert run.state.value == "SUCCESS", run.messages
            assert not any(line.startswith("scancel") for line in runner.lines)
        else:
            assert run.state.value == "ERROR"
            assert run.messages[0].startswith("lost: Slurm did not answer")
    finally:
        daemon.stop()
        daemon.site.close()


def test_jobs_given_up_on_are_cancelled_and_checked_in_one_call_each(tmp_path: Path) -> None:
    """An outage can give up every run of a profile: their jobs are cancelled by one
    scancel and looked at by one squeue, whatever their number, not one call per job."""
    runner = Scripted(
        {
            "scancel": [ok("")],
            "squeue": [ok("".join(f"{j}|CANCELLED|None|n|15|\n" for j in range(10, 15)))],
        }
    )
    ex = executor(runner, Clock())
    for job in range(10, 15):
        ex.abandon({"job_id": str(job), "run_dir": str(tmp_path / str(job))}, "lost")
    ex.tend()
    assert len(runner.lines) == 2 and runner.lines[0] == "scancel 10 11 12 13 14"
    assert runner.lines[1].startswith("squeue") and "-j 10,11,12,13,14" in runner.lines[1]
    assert not ex.has_abandoned()


def test_jobs_noted_under_a_removed_profile_are_named_at_start_and_by_doctor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A job noted to cancel under a Slurm profile (or processes under an SSH host) that
    the config then drops is read by no executor: the daemon says so at its start and
    `doctor` warns, with the job ids and what to do; put back, the profile's executor
    takes the note up again."""
    from click.testing import CliRunner

    from flowbatch.cli import main
    from flowbatch.executors import build_executors, stranded_notes

    gpu = {"gpu": {"gpus": 1}}
    site = make_site(tmp_path / "site", {"slurm": gpu})
    runner = Scripted({"scancel": [CommandResult(1, "", UNREACHABLE)]})
    ex = build_executors(site.config, lambda: None, site_root=site.root)["slurm:gpu"]
    assert isinstance(ex, SlurmExecutor)
    ex._runner = runner
    ex.abandon({"job_id": "41", "job_name": "fb-s-r1", "run_dir": str(tmp_path / "r1")}, "lost")
    ssh_notes = site.root / "ssh-abandoned" / "login9"
    ssh_notes.mkdir(parents=True)
    # as SSHExecutor._note_abandoned writes it
    note = {"handle": {"pid": 1234, "pgid": 1234, "host": "login9"}, "reason": "lost"}
    (ssh_notes / "1234.json").write_text(json.dumps(note))
    site.layout.config.write_text(yaml.safe_dump({"executor": "local"}))  # gpu dropped

    daemon = Daemon(Site(site.root))
    with caplog.at_level("ERROR", logger="flowbatch.daemon"):
        daemon.start()
    daemon.stop()
    said = [r.getMessage() for r in caplog.records if r.name == "flowbatch.daemon"]
    assert len(said) == 2, said
    slurm_line = next(line for line in said if "slurm-abandoned" in line)
    assert "job(s) 41 " in slurm_line and "no Slurm profile 'gpu'" in slurm_line
    assert "scancel" in slurm_line
    ssh_line = next(line for line in said if "ssh-abandoned" in line)
    assert "process group(s) 1234 " in ssh_line and "no ssh host 'login9'" in ssh_line

    out = CliRunner().invoke(main, ["--site", str(site.root), "doctor", "--json"]).output
    warned = [c for c in json.loads(out) if c["check"] == "abandoned jobs"]
    assert [c["status"] for c in warned] == ["warn", "warn"]
    assert "job(s) 41 " in warned[0]["detail"]

    site.layout.config.write_text(yaml.safe_dump({"executor": "local", "slurm": gpu}))
    config = load_config(site.root)
    back = build_executors(config, lambda: None, site_root=site.root)
    assert back["slurm:gpu"].has_abandoned()  # type: ignore[attr-defined]
    assert stranded_notes(config, site.root) == [ssh_line]


@pytest.mark.parametrize("retries", [1, 0])
def test_a_run_declared_lost_just_before_a_crash_is_lost_again_after_it(
    tmp_path: Path, retries: int
) -> None:
    """The daemon gave up on a run (Slurm did not answer past the grace), noted its job
    to cancel, and stopped before it recorded the run's retry: the next daemon cancels
    that job and retries the run (or makes it ERROR, no retry left), for the reason
    noted. The run became CANCELED: the job the new daemon had cancelled itself."""
    poll = {"floor": 0, "ceiling": 0.01}
    daemon = slurm_daemon(tmp_path, {"slurm": {"default": {"poll": poll}}})
    first = daemon.executors["slurm"]
    assert isinstance(first, SlurmExecutor)
    first._runner = Scripted({"sbatch": [ok("41\n")], "squeue": [ok("41|RUNNING|None|x|0|\n")]})
    drop(daemon.site, "r.yaml", {"workflow": "wf", "retries": retries})
    daemon.tick()
    (run,) = daemon.runner.launched()
    assert run.handle
    first.abandon(run.handle, f"run {run.id} lost: Slurm did not answer for 400 s")
    daemon.stop()  # the crash: the run's retry never written
    daemon.site.close()

    again = Daemon(Site(daemon.site.root))
    again.start()
    slurm = again.executors["slurm"]
    assert isinstance(slurm, SlurmExecutor)
    runner = Scripted(
        {
            "scancel": [ok("")],
            # 41: cancelled by this daemon; 42: the retry's job
            "squeue": [ok("41|CANCELLED|None|x|15|\n42|RUNNING|None|x|0|\n")],
            "sbatch": [ok("42\n")],
        }
    )
    slurm._runner = runner
    try:
        again.tick()
        again.tick()
        after = again.site.store.load(run.id)
        if retries:
            assert after.state.value in ("PENDING", "RUNNING"), after.messages
            assert after.attempt == 2
            assert any("Slurm did not answer for 400 s" in m for m in after.messages)
            commands = [line.split()[0] for line in runner.lines]
            assert commands[0] == "scancel" and commands.count("sbatch") == 1
        else:
            assert after.state.value == "ERROR", after.messages
            assert "lost: " in after.messages[-1] and "400 s" in after.messages[-1]
            assert "sbatch" not in [line.split()[0] for line in runner.lines]
    finally:
        for r in list(again.runner.active.values()):
            again.runner._transition(r, State.CANCELED, messages=["test over"])
        again.stop()
        again.site.close()


def test_abandoned_tasks_of_an_array_known_by_name_cost_one_squeue_and_one_scancel() -> None:
    """An array whose submission went unanswered, given up on: its tasks are known by the
    array's name only. Each task was looked up (squeue) and cancelled (scancel) on its
    own: 2,000 calls for a 1,000-task array after an outage."""
    name = "fb-s-abc-array"
    listing = "".join(f"77_{t}|PENDING|None|{name}|0|\n" for t in range(5))
    runner = Scripted({"squeue": [ok(listing)], "scancel": [ok("")]})
    ex = executor(runner, Clock())
    for task in range(5):
        ex.abandon({"job_name": name, "array_task": task, "run_dir": f"/r/{task}"}, "lost")
    ex.tend()
    assert [line.split()[0] for line in runner.lines] == ["squeue", "scancel"]
    assert runner.lines[1] == "scancel " + " ".join(f"77_{t}" for t in range(5))
    assert not ex.has_abandoned()


def test_an_interrupted_submission_is_looked_for_even_while_its_partition_is_closed(
    tmp_path: Path,
) -> None:
    """A run whose earlier sbatch went out (its answer lost) is looked for by name before
    anything else, also while its partition refuses new jobs (a drained partition runs
    the jobs it holds): its job is adopted, never submitted a second time once it has
    left the queue."""
    from flowbatch.executors.base import LaunchDeferred

    name = job_name("s", "r1")
    runner = Scripted({"sbatch": [CLOSED], "squeue": [ok(f"41|RUNNING|None|{name}|0||\n")]})
    ex = executor(runner, Clock(), partition="main")
    with pytest.raises(LaunchDeferred):  # another run's refusal: the partition is closed
        ex.launch(Launch("r0", tmp_path, "run.sh"))
    r1 = Launch("r1", tmp_path, "run.sh", handle={"job_name": name, "submitting": True})
    handle = ex.launch(r1)
    assert handle["job_id"] == "41" and handle["adopted"] is True
    assert [line.split()[0] for line in runner.lines] == ["sbatch", "squeue"]
    # the run whose sbatch was refused is not looked for at its next tries (no job of it
    # went out): no squeue a waiting run and tick during a maintenance
    r0 = Launch(
        "r0", tmp_path, "run.sh", handle={"job_name": job_name("s", "r0"), "submitting": True}
    )
    with pytest.raises(LaunchDeferred):
        ex.launch(r0)
    assert len(runner.lines) == 2


def test_an_intent_whose_write_failed_is_written_at_the_next_try(tmp_path: Path) -> None:
    """A sweep's intents are in run.json before its sbatch: one whose write failed (a
    full disk) is written at the next try, not taken as already there."""
    import errno

    site = make_site(tmp_path / "site", {"executor": "slurm"})
    sweep = "workflow:\n  steps:\n    - {name: s, action: {commands: ['echo ${x}']}}\n"
    sweep += "parameters:\n  - {name: x, dtype: int, defaultValue: 1}\n"
    api.install(site, write_template(tmp_path / "tpl", sweep), workflow_id="wf")
    daemon = Daemon(site)
    daemon.start()
    slurm = daemon.executors["slurm"]
    assert isinstance(slurm, SlurmExecutor)
    on_disk: dict[str, object] = {}

    class SeesDisk(Scripted):
        def run(self, command: str, **kw: Any) -> CommandResult:
            if "sbatch" in command:
                for r in api.list_runs(site):
                    on_disk[r["id"]] = site.store.load(r["id"]).handle
            return super().run(command, **kw)

    runner = SeesDisk({"sbatch": [ok("41\n")], "squeue": [ok("")], "sacct": [ok("")]})
    slurm._runner = runner
    real = site.store.write
    intents = [0]

    def write(run, **kw):  # type: ignore[no-untyped-def]
        if run.handle and run.handle.get("submitting"):
            intents[0] += 1
            if intents[0] == 2:  # the second run's intent, once
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(run, **kw)

    site.store.write = write  # type: ignore[method-assign]
    try:
        drop(site, "s.yaml", {"workflow": "wf", "name": "s", "sweep": {"x": [1, 2]}})
        with pytest.raises(OSError):
            daemon.tick()
        assert not any(line.startswith("sbatch") for line in runner.lines)
        daemon.tick()  # room again
        assert any(line.startswith("sbatch") for line in runner.lines)
        assert len(on_disk) == 2 and all(on_disk.values()), on_disk
    finally:
        daemon.stop()
        site.close()


# -- what lookups by name find: older intents, unknown users, refused submissions -------------


def recorded_run(tmp_path: Path, owner_uid: int, run_id: str = "r1") -> Path:
    """A run's folder with its record (run.json), as the store writes it."""
    from flowbatch.runs import RunRecord

    run_dir = tmp_path / "results" / "wf" / "runs" / run_id
    run_dir.mkdir(parents=True)
    record = RunRecord(
        run_id, "wf", "1", "g", None, owner_uid, "someone", "r.yaml", "2026-01-01T00:00:00+00:00"
    )
    (run_dir / "run.json").write_text(json.dumps(record.to_dict()))
    return run_dir


def test_an_intent_recorded_before_the_uid_was_looks_at_the_run_owners_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An intent (or an abandoned array task's note) written by a flowbatch that did not
    note the submitting user: a root daemon looked at root's own jobs of that name, and
    missed the run's, which its owner submitted. The run's record says who that is."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    run_dir = recorded_run(tmp_path, 4321)
    runner = Scripted({"squeue": [ok("")], "scancel": [ok("")]})
    prof = SlurmProfile.model_validate({"poll": {"floor": 1, "ceiling": 4}})
    ex = SlurmExecutor("slurm", "default", prof, site_name="s", site_root=tmp_path, runner=runner)
    old = {"job_name": "fb-s-r1", "profile": "default", "run_dir": str(run_dir), "submitting": True}
    ex.cancel(old, "not needed")  # a PENDING run whose submission went unanswered
    assert runner.lines == ["scancel --name fb-s-r1 --user 4321"]
    task = {**old, "job_name": "fb-s-r1-array", "array_task": 2}
    ex.abandon(task, "lost")
    noted = json.loads((tmp_path / "slurm-abandoned/default/fb-s-r1-array_2.json").read_text())
    assert noted["uid"] == 4321  # noted with the owner from now on
    ex.tend()
    assert "--name fb-s-r1-array --user 4321 -O " in runner.lines[-1]
    # a record that is not there (the run's folder removed): root's own, as before
    ex.cancel({**old, "run_dir": str(tmp_path / "gone")}, "not needed")
    assert runner.lines[-1] == "scancel --name fb-s-r1 --user 0"


def unknown_uid() -> int:
    """A uid without an entry in the account database."""
    import pwd

    uid = 59999
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
        uid += 1


#: what squeue (Slurm 22.05) answers `--user <uid>` for a uid the host does not know: an
#: error, exit status 0, and no job listed (even where that uid has jobs of that name)
INVALID_USER = CommandResult(0, "", "squeue: error: Invalid user: {uid}\n")


def test_a_lookup_for_a_user_squeue_does_not_know_asks_by_name_and_keeps_the_uids_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A root daemon's run of a uid without a passwd entry: ``squeue --user`` lists
    nothing, which read as "not submitted" (a second job). The jobs of that name are
    listed for every user instead, and only that uid's are taken."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    uid = unknown_uid()
    name = job_name("s", "r1")
    refused = CommandResult(0, "", INVALID_USER.stderr.format(uid=uid))
    listing = ok(f"41|PENDING|Priority|{name}|0|N/A|{uid}|\n42|PENDING|Priority|{name}|0|N/A|0|\n")
    runner = Scripted({"squeue": [refused, listing], "sbatch": [ok("99\n")]})
    ex = executor(runner, Clock())
    job = Launch("r1", tmp_path, "run.sh", uid=uid)
    job.handle = ex.intent(job)
    handle = ex.launch(job)
    assert handle["job_id"] == "41" and handle["adopted"] is True  # root's 42 is not its
    assert f"--name {name} --user {uid} -O " in runner.lines[0]
    assert "--user" not in runner.lines[1] and ",UserID:|" in runner.lines[1]
    assert not any(line.startswith("sbatch") for line in runner.lines)


def test_a_cancel_by_name_for_a_user_scancel_does_not_know_cancels_by_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``scancel --name ... --user <uid>`` fails for such a uid ("Invalid user name"),
    every time: the cancel was kept, and sent again, for ever. The uid's jobs of that
    name are looked up and cancelled by id."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    uid = unknown_uid()
    name = job_name("s", "r1")
    refused = CommandResult(1, "", f"scancel: error: Invalid user name: {uid}\n")
    listing = ok(f"41|PENDING|BeginTime|{name}|0|N/A|{uid}|\n42|PENDING|None|{name}|0|N/A|7|\n")
    invalid = CommandResult(0, "", INVALID_USER.stderr.format(uid=uid))
    runner = Scripted({"scancel": [refused, ok("")], "squeue": [invalid, listing]})
    ex = executor(runner, Clock())
    intent = ex.intent(Launch("r1", tmp_path, "run.sh", uid=uid))
    ex.cancel(intent, "not needed")
    assert runner.lines[0] == f"scancel --name {name} --user {uid}"
    assert runner.lines[-1] == "scancel 41"
    assert not ex.has_abandoned()


def test_a_job_slurm_requeues_because_its_user_is_unknown_ends_its_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """sbatch takes a job of a uid without a passwd entry, but slurmctld cannot make its
    credential ("getpwuid failed") and requeues it, PENDING (BeginTime), for ever: its run
    ends at once with why, and the job is cancelled. A known user's job waits."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    uid = unknown_uid()
    runner = Scripted({"squeue": [ok("5|PENDING|BeginTime|n|0|\n")], "scancel": [ok("")]})
    clock = Clock()
    ex = executor(runner, clock)
    known = ex.poll([("a", {"job_id": "5", "uid": 65534})])["a"]  # nobody: known
    assert known.liveness == Liveness.ALIVE
    clock.now += 10
    probe = ex.poll([("a", {"job_id": "5", "uid": uid})])["a"]
    assert probe.liveness == Liveness.FINISHED
    said = probe.detail["refused"]
    assert said.startswith("Slurm will not start job 5: it is PENDING (BeginTime), its user,")
    assert f"uid {uid} (the run's owner), has no entry in the account database" in said
    assert said.endswith("flowbatch cancelled it") and runner.lines[-1] == "scancel 5"


#: what a refused sbatch (more memory than a node has) leaves in squeue for MinJobAge
#: (Slurm 22.05): FAILED BadConstraints, exit status 1, started and ended at submission
REFUSED = "{id}|FAILED|BadConstraints|{name}|1|1764000000|0|\n"


def test_the_record_a_refused_submission_left_is_not_adopted(tmp_path: Path) -> None:
    """A daemon killed right after sbatch refused the run (its ERROR not recorded) finds,
    at its next start, a FAILED BadConstraints job of the run's name: not the run's
    (it never ran). The run is submitted again, and ends with sbatch's own refusal; a
    job that did go out since is still found."""
    name = job_name("s", "r1")
    said = (
        "sbatch: error: Memory specification can not be satisfied\n"
        "sbatch: error: Batch job submission failed: Requested node configuration is not "
        "available\n"
    )
    runner = Scripted(
        {
            "squeue": [ok(REFUSED.format(id=7, name=name))],
            "sbatch": [CommandResult(1, "", said)],
        }
    )
    ex = executor(runner, Clock())
    job = Launch("r1", tmp_path, "run.sh", handle={"job_name": name, "submitting": True})
    with pytest.raises(ExecutorError, match="Requested node configuration is not available"):
        ex.launch(job)
    assert [line.split()[0] for line in runner.lines] == ["squeue", "sbatch"]
    runner.answers["squeue"] = [ok(REFUSED.format(id=7, name=name) + f"9|RUNNING|None|{name}|0|")]
    assert ex.launch(job)["job_id"] == "9"  # a later submission that went out: adopted


def test_the_tasks_a_refused_array_left_are_not_adopted(tmp_path: Path) -> None:
    """The same for a sweep's job array: its tasks left FAILED BadConstraints."""
    from .test_slurm_arrays_unit import jobs

    runner = Scripted({"sbatch": [ok("60\n")]})
    ex = executor(runner, Clock())
    ex.site_root = tmp_path
    batch = jobs(tmp_path, 2)
    for job, intent in zip(batch, ex.intents(batch), strict=True):
        job.handle = intent
    name = batch[0].handle["job_name"] if batch[0].handle else ""
    left = "".join(REFUSED.format(id=f"15_{t}", name=name) for t in range(2))
    runner.answers["squeue"] = [ok(left)]
    handles = ex.launch_many(batch)
    assert [h["job_id"] for h in handles if isinstance(h, dict)] == ["60_0", "60_1"]
    assert [line.split()[0] for line in runner.lines] == ["squeue", "sbatch"]


def partitions(total: int, max_nodes: str = "UNLIMITED", min_nodes: int = 0) -> CommandResult:
    """``scontrol -a -o show partition`` (Slurm 22.05, trimmed)."""
    return ok(
        f"PartitionName=debug AllowGroups=ALL Default=YES MaxNodes={max_nodes} MaxTime=UNLIMITED "
        f"MinNodes={min_nodes} Nodes=n[1-{total}] State=UP TotalCPUs=8 TotalNodes={total}\n"
        "PartitionName=other MaxNodes=UNLIMITED MinNodes=0 State=UP TotalNodes=64\n"
    )


def show_job(nodes: str, partition: str = "debug") -> CommandResult:
    """``scontrol -o show job 5`` (Slurm 22.05, trimmed)."""
    return ok(
        "JobId=5 JobName=fb-s-r1 UserId=root(0) JobState=PENDING Reason=PartitionNodeLimit "
        f"Partition={partition} NodeList= NumNodes={nodes} NumCPUs=2 WorkDir=/tmp\n"
    )


@pytest.mark.parametrize(
    ("job", "sizes", "ends"),
    [
        # nodes of the partition down or drained: Slurm's documentation of the reason
        (show_job("2-2"), partitions(4), None),
        (show_job("2-2"), partitions(1), "it asks 2 nodes; partition debug has 1 node"),
        (show_job("3-3"), partitions(4, "2"), "it asks 3 nodes; partition debug allows 2"),
        (
            show_job("1-2"),
            partitions(4, min_nodes=3),
            "it asks 1-2 nodes; partition debug requires",
        ),
        # a job for either of two partitions: it fits the second one
        (show_job("8-8", "debug,other"), partitions(4), None),
        # scontrol does not tell: it waits, asked again after another NEVER_START
        (CommandResult(1, "", "slurm_load_jobs error: Invalid job id specified"), None, None),
    ],
)
def test_partition_node_limit_ends_a_job_only_over_its_partitions_size(
    job: CommandResult, sizes: CommandResult | None, ends: str | None
) -> None:
    """PartitionNodeLimit also means that nodes the job needs are down or drained (a
    maintenance, which ends): the job's run is ended only when its node count is over
    what its partition has or allows (scontrol's TotalNodes, MaxNodes, MinNodes)."""
    from flowbatch.executors.slurm import NEVER_START

    runner = Scripted(
        {
            "squeue": [ok("5|PENDING|PartitionNodeLimit|n|0|\n")],
            "scancel": [ok("")],
            "scontrol": [job, sizes or ok("")],
        }
    )
    clock = Clock()
    ex = executor(runner, clock)
    assert ex.poll([("a", {"job_id": "5"})])["a"].liveness == Liveness.ALIVE
    clock.now += NEVER_START + 1
    probe = ex.poll([("a", {"job_id": "5"})])["a"]
    asked = [line for line in runner.lines if line.startswith("scontrol")]
    assert asked[0] == "scontrol -o show job 5"
    if ends is None:
        assert probe.liveness == Liveness.ALIVE
        assert probe.detail["status"] == "PENDING (PartitionNodeLimit)"
        assert not any(line.startswith("scancel") for line in runner.lines)
        clock.now += 10  # not asked again at every poll
        ex.poll([("a", {"job_id": "5"})])
        assert [line for line in runner.lines if line.startswith("scontrol")] == asked
        return
    assert asked[1] == "scontrol -a -o show partition"
    assert probe.liveness == Liveness.FINISHED
    said = probe.detail["refused"]
    assert "it has been PENDING (PartitionNodeLimit) for 300 s" in said
    assert (
        f"it asks more nodes than the partition has or allows, or fewer than it requires ({ends}"
        in said
    )
    assert runner.lines[-1] == "scancel 5"


@pytest.mark.parametrize(
    "accounting",
    [
        CommandResult(1, "", "Slurm accounting storage is disabled"),  # markers decide
        ok("41|BOOT_FAIL|0:0|x\n"),  # an infrastructure failure
    ],
    ids=["left the queue", "boot failure"],
)
def test_a_job_lost_while_it_waited_in_the_queue_makes_a_new_attempt(
    tmp_path: Path, accounting: CommandResult
) -> None:
    """A run whose job left Slurm's queue before it started (no marker: its script never
    ran) is retried although it was PENDING already: a new attempt, PENDING again, whose
    job is submitted once. Before, PENDING -> PENDING was a no-op: the run stayed
    attached to the lost job for ever."""
    poll = {"floor": 0, "ceiling": 0.01}
    daemon = slurm_daemon(tmp_path, {"slurm": {"default": {"poll": poll}}})
    slurm = daemon.executors["slurm"]
    assert isinstance(slurm, SlurmExecutor)
    runner = Scripted(
        {
            "sbatch": [ok("41\n"), ok("42\n")],
            "squeue": [ok("41|PENDING|Priority|x|0|\n")],
            "scancel": [ok("")],
        }
    )
    slurm._runner = runner
    try:
        drop(daemon.site, "r.yaml", {"workflow": "wf", "retries": 1})
        daemon.tick()
        daemon.tick()
        (run,) = daemon.runner.launched()
        assert run.queued and run.handle and run.handle["job_id"] == "41"
        runner.answers["squeue"] = [ok(""), ok("42|PENDING|Priority|x|0|\n")]
        runner.answers["sacct"] = [accounting]
        for _ in range(20):
            daemon.tick()
            if run.handle and run.handle.get("job_id") == "42":
                break
        record = daemon.site.store.load(run.id)
        assert record.attempt == 2 and record.queued, record.messages
        assert record.handle and record.handle["job_id"] == "42"
        assert [c["state"] for c in record.history] == ["PENDING", "PENDING"]
        assert record.history[-1]["message"].startswith("retry 1 of 1 after: ")
        assert record.started_at is None
        assert [line.split()[0] for line in runner.lines].count("sbatch") == 2
        (row,) = api.list_runs(daemon.site)
        assert row["state"] == "PENDING"
    finally:
        for r in list(daemon.runner.active.values()):
            daemon.runner._transition(r, State.CANCELED, messages=["test over"])
        daemon.stop()
        daemon.site.close()


def test_a_retry_waiting_in_the_queue_has_no_start_of_the_attempt_before(tmp_path: Path) -> None:
    """A run lost to a node failure after its job started is retried: while the new
    attempt's job waits in the queue, the run shows no start (the first attempt's times
    went with it). Found by review."""
    import time as _time

    poll = {"floor": 0, "ceiling": 0.01}
    daemon = slurm_daemon(tmp_path, {"slurm": {"default": {"poll": poll}}})
    slurm = daemon.executors["slurm"]
    assert isinstance(slurm, SlurmExecutor)
    began = int(_time.time())
    runner = Scripted(
        {
            "sbatch": [ok("41\n"), ok("42\n")],
            "squeue": [ok(f"41|RUNNING|None|x|0|{began}|\n")],
            "scancel": [ok("")],
        }
    )
    slurm._runner = runner
    try:
        drop(daemon.site, "r.yaml", {"workflow": "wf", "retries": 1})
        daemon.tick()
        daemon.tick()
        (run,) = daemon.runner.launched()
        assert run.state == State.RUNNING and run.started_at
        failed = ok("41|NODE_FAIL|None|x|0|\n")
        runner.answers["squeue"] = [failed, failed, ok("42|PENDING|Priority|x|0|\n")]
        for _ in range(20):
            daemon.tick()
            if run.handle and run.handle.get("job_id") == "42":
                break
        record = daemon.site.store.load(run.id)
        assert (record.state, record.attempt, record.queued) == (State.PENDING, 2, True)
        assert (record.started_at, record.finished_at) == (None, None)
        (row,) = api.list_runs(daemon.site)
        assert (row["state"], row["started_at"]) == ("PENDING", None)
    finally:
        for r in list(daemon.runner.active.values()):
            daemon.runner._transition(r, State.CANCELED, messages=["test over"])
        daemon.stop()
        daemon.site.close()


class _Crash(Exception):
    """The daemon dies right after an sbatch returned, before the job id is recorded."""


def test_an_interrupted_submission_is_adopted_at_the_start_whatever_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose sbatch went out just before the daemon died has its intent only. The
    next daemon finds its job by name as it starts, before anything is dispatched: the
    run is launched (queued, polled, counted against max_jobs), not held back behind an
    older run that takes the one slot while its job runs unseen, and then submitted a
    second time once its job left squeue. Found by review."""
    from flowbatch.lifecycle import Runner

    poll = {"floor": 0, "ceiling": 0.01}
    daemon = slurm_daemon(
        tmp_path, {"slurm": {"default": {"poll": poll, "max_jobs": 1, "partition": "main"}}}
    )
    site = daemon.site
    slurm = daemon.executors["slurm"]
    assert isinstance(slurm, SlurmExecutor)
    slurm._runner = Scripted({"sbatch": [CLOSED, ok("42\n")], "squeue": [ok("")]})
    # d: older, for a partition closed for maintenance: it waits
    drop(site, "d.yaml", {"workflow": "wf", "name": "d", "resources": {"partition": "maint"}})
    daemon.tick()
    drop(site, "b.yaml", {"workflow": "wf", "name": "b"})
    original = Runner._launched

    def crash(self: Runner, run: Any, executor: Any, handle: Any) -> None:
        if run.name == "b":
            raise _Crash()
        original(self, run, executor, handle)

    monkeypatch.setattr(Runner, "_launched", crash)
    with pytest.raises(_Crash):
        daemon.tick()
    monkeypatch.setattr(Runner, "_launched", original)
    daemon.stop()
    b_id = next(r.id for r in daemon.runner.active.values() if r.name == "b")
    intent = site.store.load(b_id).handle or {}
    assert intent["submitting"] and "job_id" not in intent  # job 42 exists all the same

    again = Daemon(site)  # the partition is open again
    runner = Scripted(
        {"sbatch": [ok("43\n")], "squeue": [ok(f"42|PENDING|Priority|{intent['job_name']}|0|\n")]}
    )
    again.executors["slurm"]._runner = runner  # type: ignore[attr-defined]
    again.start()
    try:
        runs = {r.name: r for r in again.runner.active.values()}
        assert runs["b"].queued and runs["b"].handle, runs["b"].handle
        assert (runs["b"].handle["job_id"], runs["b"].handle["adopted"]) == ("42", True)
        assert site.store.load(b_id).handle == runs["b"].handle  # recorded
        runner.answers["squeue"] = [ok("42|RUNNING|None|x|0|\n")]
        again.tick()
        assert runs["b"].state == State.RUNNING
        assert not runs["d"].launched  # max_jobs 1: b's job holds the slot
        assert [line.split()[0] for line in runner.lines].count("sbatch") == 0
    finally:
        for r in list(again.runner.active.values()):
            again.runner._transition(r, State.CANCELED, messages=["test over"])
        again.stop()
        site.close()


def _intents(n: int, uids: Sequence[int], site: str = "s" * 40) -> list[tuple[str, dict[str, Any]]]:
    """Intents of PENDING runs (each run waiting for a drained partition has one)."""
    out = []
    for i in range(n):
        run_id = f"{i:012x}"
        handle = {"job_name": f"fb-{site}-{run_id}", "profile": "default", "via": "local"}
        out.append((run_id, {**handle, "submitting": True, "uid": uids[i % len(uids)]}))
    return out


def test_the_lookup_of_many_interrupted_submissions_is_split_and_asked_once_if_away() -> None:
    """At a start, thousands of intents (runs waiting for a drained partition) are looked
    for in several squeue calls, each --name under 32 KiB (one argument may have 128 KiB:
    over it exec failed, E2BIG, and the daemon did not start); a Slurm that does not
    answer is asked once, not once a submitting user (each call its whole timeout).
    Found by review."""
    from flowbatch.executors import slurm as slurm_module

    runner = Scripted({"squeue": [ok("")]})
    ex = executor(runner, Clock())
    intents = _intents(2500, [os.geteuid()])
    assert ex.find_submitted(intents) == {}
    names = [line.split("--name ")[1].split()[0] for line in runner.lines]
    assert len(names) >= 5 and all(len(n) <= slurm_module.NAMES_PER_CALL for n in names)
    assert sorted(",".join(names).split(",")) == sorted(h["job_name"] for _, h in intents)
    away = Scripted({"squeue": [CommandResult(124, "", "timed out after 30 s")]})
    ex = executor(away, Clock())
    assert ex.find_submitted(_intents(20, list(range(2000, 2020)))) == {}
    assert len(away.lines) == 1


def test_a_command_line_the_system_cannot_run_is_a_failed_command() -> None:
    """An argument over 128 KiB (E2BIG): a failed command, never an exception that stops
    the daemon's start."""
    from flowbatch.executors.commands import LocalRunner

    result = LocalRunner().run("echo " + "x" * 200_000)
    assert result.returncode == 126 and "cannot run" in result.stderr


def test_a_failing_lookup_of_interrupted_submissions_does_not_stop_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever goes wrong looking for interrupted submissions' jobs, the daemon starts;
    such a run's launch looks for its job again."""
    daemon = slurm_daemon(tmp_path)
    site = daemon.site
    daemon.executors["slurm"]._runner = DropsSbatch({"squeue": [ok("")]})  # type: ignore[attr-defined]
    drop(site, "r.yaml", {"workflow": "wf"})
    daemon.tick()  # its sbatch went out, the answer never came: only its intent
    daemon.stop()

    def broken(self: SlurmExecutor, handles: Any) -> dict[str, Any]:
        raise OSError(7, "Argument list too long")

    monkeypatch.setattr(SlurmExecutor, "find_submitted", broken)
    again = Daemon(site)
    again.start()
    try:
        (run,) = again.runner.pending()
        assert run.handle and run.handle["submitting"]
    finally:
        again.stop()
        site.close()


@pytest.mark.parametrize(
    ("said", "clears"),
    [
        ("sbatch: error: AssocMaxSubmitJobLimit", True),
        ("sbatch: error: QOSMaxSubmitJobPerUserLimit", True),
        ("sbatch: error: AssocGrpSubmitJobsLimit", True),  # the account's queue
        ("sbatch: error: QOSGrpSubmitJobsLimit", True),
        ("sbatch: error: Batch job submission failed: Invalid account", False),
        ("sbatch: error: AssocMaxWallDurationPerJobLimit", False),
    ],
)
def test_which_refusals_clear_as_jobs_end(said: str, clears: bool) -> None:
    from flowbatch.executors.slurm_states import submit_limit_reached

    assert submit_limit_reached(said) is clears
