"""The Slurm executor's pure parts and its polling policy, with a scripted command runner."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from flowbatch.config import load_config
from flowbatch.errors import ConfigError, TemplateError
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
from flowbatch.slurm_profile import SlurmProfile
from flowbatch.spec.resources import check_mem, parse_seconds
from flowbatch.spec.template import parse_template

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


def test_failing_squeue_is_tolerated_then_reported() -> None:
    bad = CommandResult(1, "", "slurm_load_jobs error: Unable to contact slurm controller")
    runner = Scripted({"squeue": [bad]})
    clock = Clock()
    ex = executor(runner, clock, failures=2)
    for _ in range(2):
        assert ex.poll(HANDLES) == {}
        clock.now += 10
    probes = ex.poll(HANDLES)
    assert {p.liveness for p in probes.values()} == {Liveness.GONE}
    assert "squeue failed 3 times in a row" in probes["a"].raw
    assert "Unable to contact slurm controller" in probes["a"].raw


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
