"""Sweeps as Slurm job arrays, and Slurm over SSH: the pure parts, with a scripted runner."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from flowbatch.config import load_config
from flowbatch.errors import ExecutorUnavailable, FlowbatchError
from flowbatch.executors import build_executors
from flowbatch.executors.base import Launch, LaunchesMany, Liveness
from flowbatch.executors.commands import CommandResult
from flowbatch.executors.slurm import SlurmExecutor
from flowbatch.executors.slurm_script import (
    ARRAY_TEMPLATE_NAME,
    ArrayTask,
    BatchArray,
    array_log_paths,
    default_template,
    render_batch_script,
    slurm_time,
)
from flowbatch.executors.slurm_states import parse_squeue
from flowbatch.executors.ssh_pool import HostUnreachable

from .test_slurm_unit import CLOSED, Clock, Scripted, executor, ok

GOLDEN = Path(__file__).parent / "data" / "golden" / "sbatch-array.sh"


def golden_array() -> BatchArray:
    folder = "/srv/bench/slurm-arrays/fb-bench-0123456789ab-array"
    output, error = array_log_paths(folder)
    runs = "/srv/bench/results/sweep/runs"
    return BatchArray(
        job_name="fb-bench-0123456789ab-array",
        site="bench",
        run_id="0123456789ab",
        run_dir=folder,
        output=output,
        error=error,
        partition="debug",
        time=slurm_time(600),
        cpus=2,
        mem="1G",
        extra=["--exclusive"],
        modules=["python/3.11"],
        array="0-2%2",
        tasks=[
            ArrayTask(0, "0123456789ab", f"{runs}/0123456789ab"),
            ArrayTask(1, "0123456789ab-1", f"{runs}/0123456789ab-1"),
            ArrayTask(2, "0123456789ab-2", f"{runs}/it's here"),
        ],
    )


def test_array_script_matches_golden_file() -> None:
    text = render_batch_script(golden_array(), default_template(ARRAY_TEMPLATE_NAME))
    if os.environ.get("FLOWBATCH_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_array_script_maps_each_task_to_its_run_folder(tmp_path: Path) -> None:
    """The rendered case runs in bash: task N cds into run N; an unknown task fails."""
    batch = golden_array()
    for task in batch.tasks:
        task.run_dir = str(tmp_path / task.run_id)
        Path(task.run_dir).mkdir()
        (Path(task.run_dir) / "run.sh").write_text("pwd > where.txt\n")
    script = tmp_path / "a.sh"
    script.write_text(render_batch_script(batch, default_template(ARRAY_TEMPLATE_NAME)))
    for task in batch.tasks:
        rc = os.system(f"SLURM_ARRAY_TASK_ID={task.index} bash {script}")
        assert rc == 0
        assert (Path(task.run_dir) / "where.txt").read_text().strip() == task.run_dir
    assert os.WEXITSTATUS(os.system(f"SLURM_ARRAY_TASK_ID=7 bash {script} 2>/dev/null")) == 91


def test_array_value_must_be_one_word() -> None:
    batch = golden_array()
    batch.array = "0-2 --uid=0"
    with pytest.raises(FlowbatchError, match="cannot go on an #SBATCH line"):
        render_batch_script(batch, default_template(ARRAY_TEMPLATE_NAME))


def jobs(tmp_path: Path, count: int, **kw: object) -> list[Launch]:
    out = []
    for i in range(count):
        run_id = "sw" if i == 0 else f"sw-{i}"
        (tmp_path / run_id).mkdir(exist_ok=True)
        out.append(Launch(run_id, tmp_path / run_id, "run.sh", **kw))  # type: ignore[arg-type]
    return out


def test_intents_chunk_by_max_array_size_with_throttle(tmp_path: Path) -> None:
    runner = Scripted({"sbatch": [ok("50\n"), ok("51\n"), ok("52\n")]})
    ex = executor(runner, Clock(), max_array_size=8, array_throttle=3)
    ex.site_root = tmp_path
    assert isinstance(ex, LaunchesMany)
    batch = jobs(tmp_path, 20)
    intents = ex.intents(batch)
    names = [i["job_name"] for i in intents]
    assert names == ["fb-s-sw-array"] * 8 + ["fb-s-sw-8-array"] * 8 + ["fb-s-sw-16-array"] * 4
    assert [i["array_task"] for i in intents] == [*range(8), *range(8), *range(4)]
    assert all(i["submitting"] for i in intents)
    handles = ex.launch_many(batch)
    assert [line.split()[0] for line in runner.lines] == ["sbatch"] * 3
    assert [h["job_id"] for h in handles if isinstance(h, dict)][7:10] == ["50_7", "51_0", "51_1"]
    script = (tmp_path / "slurm-arrays" / "fb-s-sw-16-array" / "sbatch.sh").read_text()
    assert "#SBATCH --array=0-3%3" in script
    link = tmp_path / "slurm-arrays" / "fb-s-sw-16-array" / "3"
    assert link.resolve() == (tmp_path / "sw-19").resolve()
    assert "#SBATCH --output=" + str(link.parent) + "/%a/logs/slurm-%A_%a.out" in script


def test_an_interrupted_array_is_adopted_by_name_or_planned_again(tmp_path: Path) -> None:
    name = "fb-s-sw-array"
    runner = Scripted(
        {
            "squeue": [ok(f"70_0|COMPLETED|None|{name}|0|\n70_2|PENDING|Priority|{name}|0|\n")],
            "sbatch": [ok("80\n")],
        }
    )
    ex = executor(runner, Clock())
    ex.site_root = tmp_path
    batch = jobs(tmp_path, 3)
    for job, intent in zip(batch, ex.intents(batch), strict=True):
        job.handle = intent  # what a crash after recording left in run.json
    assert [i["array_size"] for i in ex.intents(batch)] == [3] * 3
    assert [i["job_name"] for i in ex.intents(batch)] == [name] * 3  # the plan is kept
    assert runner.lines == []  # a whole plan is looked for when it is launched
    handles = ex.launch_many(batch)
    assert [h["job_id"] for h in handles if isinstance(h, dict)] == ["70_0", "70_1", "70_2"]
    assert all(h["adopted"] for h in handles if isinstance(h, dict))
    assert not any(line.startswith("sbatch") for line in runner.lines)
    # some runs of that plan without the others (room for fewer now): the array is looked
    # for while planning (once), and found: they adopt their tasks
    runner.lines.clear()
    assert [i["job_name"] for i in ex.intents(batch[1:])] == [name] * 2
    handles = ex.launch_many(batch[1:])
    assert [h["job_id"] for h in handles if isinstance(h, dict)] == ["70_1", "70_2"]
    assert [line.split()[0] for line in runner.lines] == ["squeue"]
    # not found: that array never reached Slurm. Tasks 1 and 2 of it (task 0 was
    # cancelled) are planned again, under a name no intent of the old plan has
    runner.answers["squeue"] = [ok("")]
    again = "fb-s-sw-1-array.1"
    planned = [
        (i["job_name"], i["array_task"], i["array_size"], i["array_plan"])
        for i in ex.intents(batch[1:])
    ]
    assert planned == [(again, 0, 2, 1), (again, 1, 2, 1)]
    handles = ex.launch_many(batch[1:])
    assert [h["job_id"] for h in handles if isinstance(h, dict)] == ["80_0", "80_1"]
    assert all(h["job_name"] == again for h in handles if isinstance(h, dict))
    script = (tmp_path / "slurm-arrays" / again / "sbatch.sh").read_text()
    assert "#SBATCH --array=0-1\n" in script


def test_a_refused_array_is_an_error_for_each_of_its_runs(tmp_path: Path) -> None:
    runner = Scripted({"sbatch": [CommandResult(1, "", "sbatch: error: invalid partition")]})
    ex = executor(runner, Clock())
    ex.site_root = tmp_path
    out = ex.launch_many(jobs(tmp_path, 2))
    assert all(isinstance(e, FlowbatchError) and "invalid partition" in e.reason for e in out)


def test_an_array_for_a_drained_partition_waits_with_its_runs(tmp_path: Path) -> None:
    """sbatch refuses the array because its partition is drained or inactive: every run of
    it waits (PENDING, with Slurm's words), and is submitted once the partition is back."""
    from flowbatch.executors.base import LaunchDeferred

    from .test_slurm_unit import CLOSED

    runner = Scripted({"sbatch": [CLOSED], "squeue": [ok("")]})
    clock = Clock()
    ex = executor(runner, clock)
    ex.site_root = tmp_path
    batch = jobs(tmp_path, 3)
    out = ex.launch_many(batch)
    assert all(isinstance(e, LaunchDeferred) for e in out), out
    assert all("Required partition not available" in str(e) for e in out)
    for job, intent in zip(batch, ex.intents(batch), strict=True):
        job.handle = intent  # as the Runner recorded them
    runner.answers["sbatch"] = [ok("90\n")]
    assert all(isinstance(e, LaunchDeferred) for e in ex.launch_many(batch))  # too soon
    assert [line.split()[0] for line in runner.lines] == ["sbatch"]
    clock.now += 10
    handles = ex.launch_many(batch)  # its sbatch was refused: no lookup needed
    assert [line.split()[0] for line in runner.lines] == ["sbatch", "sbatch"]
    assert [h["job_id"] for h in handles if isinstance(h, dict)] == ["90_0", "90_1", "90_2"]


def test_array_tasks_are_polled_and_cancelled_one_by_one() -> None:
    runner = Scripted(
        {
            "squeue": [ok("5_0|RUNNING|None|n|0|\n5_1|PENDING|JobArrayTaskLimit|n|0|\n")],
            "scancel": [ok("")],
        }
    )
    ex = executor(runner, Clock())
    probes = ex.poll([("a", {"job_id": "5_0"}), ("b", {"job_id": "5_1"})])
    assert probes["a"].liveness == probes["b"].liveness == Liveness.ALIVE
    assert probes["b"].detail["status"] == "PENDING (JobArrayTaskLimit)"
    assert runner.lines[0].startswith("squeue -h -t all -j 5_0,5_1 -r -O 'JobArrayID:")
    ex.cancel({"job_id": "5_1"}, "enough")
    assert runner.lines[-1] == "scancel 5_1"
    # only the intent: the array is found by name, and only this task is cancelled
    runner.answers["squeue"] = [ok("9_0|PENDING|None|arr|0|\n9_1|PENDING|None|arr|0|\n")]
    ex.cancel({"job_name": "arr", "array_task": 1, "submitting": True}, "enough")
    assert runner.lines[-1] == "scancel 9_1"


def test_a_pending_task_gone_from_squeue_was_cancelled(tmp_path: Path) -> None:
    """scancel of a pending array task removes it from squeue with no record at all (a
    plain job stays CANCELLED): without accounting, a task that never started and left
    the queue is CANCELED; a task that started is judged by its markers."""
    runner = Scripted(
        {"squeue": [ok("")], "sacct": [CommandResult(1, "", "accounting storage is disabled")]}
    )
    ex = executor(runner, Clock())
    (tmp_path / "b" / "status").mkdir(parents=True)
    (tmp_path / "b" / "status" / "started").write_text("12 1.0 h\n")
    probes = ex.poll(
        [
            ("a", {"job_id": "5_0", "run_dir": str(tmp_path / "a")}),
            ("b", {"job_id": "5_1", "run_dir": str(tmp_path / "b")}),
            ("c", {"job_id": "6", "run_dir": str(tmp_path / "a")}),
        ]
    )
    assert "scancel of a pending task" in probes["a"].detail["canceled"]
    assert "canceled" not in probes["b"].detail and "canceled" not in probes["c"].detail


def test_collapsed_pending_tasks_parse_to_their_array_id() -> None:
    """Without -r squeue collapses pending tasks; such a line never matches a task id."""
    parsed = parse_squeue("7_[2-5%2]|PENDING|JobArrayTaskLimit|n|0|\n7_1|RUNNING|None|n|0|\n")
    assert set(parsed) == {"7_[2-5%2]", "7_1"}


# -- via: <ssh host> -------------------------------------------------------------------------


def test_via_ssh_host_uses_the_pooled_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "flowbatch.yaml").write_text(
        "ssh:\n  login1:\n    hostname: 127.0.0.9\n    user: u\n    remote_root: /tmp/x\n"
        "slurm:\n  default:\n    via: login1\n  nowhere:\n    via: login2\n"
    )
    config = load_config(tmp_path)
    seen: list[str] = []
    fake = Scripted({"sbatch": [ok("12\n")]}, where="ssh:login1")
    import flowbatch.executors.ssh as ssh_module

    def runner_for(conf: object, host: str) -> Scripted:
        seen.append(host)
        return fake

    monkeypatch.setattr(ssh_module, "ssh_runner", runner_for)
    executors = build_executors(config, lambda: None, site_root=tmp_path)
    slurm = executors["slurm"]
    assert isinstance(slurm, SlurmExecutor)
    (tmp_path / "r").mkdir()
    handle = slurm.launch(Launch("r", tmp_path / "r", "run.sh", uid=1234))
    assert handle["job_id"] == "12" and handle["via"] == "login1" and seen == ["login1"]
    assert fake.lines[0].startswith("sbatch --parsable ")
    assert fake.uids == [None]  # over SSH the host's configured user submits
    # a profile naming no ssh host: its commands fail with the reason
    other = executors["slurm:nowhere"]
    assert isinstance(other, SlurmExecutor)
    with pytest.raises(FlowbatchError, match="'login2' is not an ssh host"):
        other.launch(Launch("r", tmp_path / "r", "run.sh"))


def test_an_unreachable_submit_host_makes_the_launch_wait(tmp_path: Path) -> None:
    class Down:
        where = "ssh:login1"

        def run(self, command: str, **kw: object) -> CommandResult:
            raise HostUnreachable("ssh host login1 unreachable: connection refused")

    prof = executor(Scripted(), Clock()).profile
    ex = SlurmExecutor("slurm", "default", prof, site_name="s", runner=Down(), clock=Clock())
    with pytest.raises(ExecutorUnavailable, match="connection refused"):
        ex.launch(Launch("r", tmp_path, "run.sh"))
    probes = ex.poll([("a", {"job_id": "1"})])  # a failed squeue: unknown, asked again
    assert probes["a"].liveness == Liveness.UNKNOWN and "connection refused" in probes["a"].raw


def test_an_array_is_submitted_by_its_runs_user_who_makes_their_logs(tmp_path: Path) -> None:
    """As a single job is: the runs' owner submits (a root daemon's local runner changes
    to that user), after making each run's logs/ (Slurm opens the output there)."""
    runner = Scripted({"sbatch": [ok("60\n")]})
    ex = executor(runner, Clock())
    ex.site_root = tmp_path
    batch = jobs(tmp_path, 3, uid=1234)
    ex.launch_many(batch)
    assert runner.uids == [1234]
    assert runner.prefixes == ["xargs -0 -r mkdir -p --"]  # the folders on stdin
    assert runner.inputs[0] == "".join(f"{j.run_dir / 'logs'}\0" for j in batch)
    (tmp_path / "b").mkdir()
    mixed = [*jobs(tmp_path, 1, uid=1), *jobs(tmp_path / "b", 1, uid=2)]
    out = ex.launch_many(mixed)
    assert all(isinstance(o, FlowbatchError) for o in out)  # never one user's job as another's


class FakeArrays:
    """A scripted Slurm that keeps the job arrays it took: sbatch reads the array's
    script (its job name, ``--array`` tasks and each task's run folder), squeue lists every
    task of the arrays of a name (``--name``, as ``squeue -r`` does) or of the ids asked."""

    where = "test"

    def __init__(self) -> None:
        self.closed = False  # sbatch refuses: the partition is drained
        self.next_id = 90
        self.tasks: dict[str, tuple[str, Path]] = {}  # "<id>_<task>" -> (name, run folder)
        self.lines: list[str] = []

    def run(self, command: str, **kw: object) -> CommandResult:
        line = command.rpartition(" && ")[2]
        self.lines.append(line)
        args = line.split()
        if args[0] == "sbatch":
            if self.closed:
                return CLOSED
            return ok(f"{self._submit(Path(args[-1]).read_text())}\n")
        if args[0] == "squeue":
            if "--name" in args:
                name = args[args.index("--name") + 1]
                ids = [i for i, (n, _) in self.tasks.items() if n == name]
            else:
                ids = [i for i in args[args.index("-j") + 1].split(",") if i in self.tasks]
            return ok("".join(f"{i}|PENDING|None|{self.tasks[i][0]}|0|\n" for i in ids))
        return ok("")

    def _submit(self, script: str) -> int:
        name = re.search(r"^#SBATCH --job-name=(\S+)$", script, re.M)
        spec = re.search(r"^#SBATCH --array=(\S+)$", script, re.M)
        assert name is not None and spec is not None
        folders = dict(re.findall(r"^  (\d+)\) cd '([^']*)'", script, re.M))
        array_id, self.next_id = self.next_id, self.next_id + 1
        for part in spec.group(1).split("%")[0].split(","):
            first, _, last = part.partition("-")
            for task in range(int(first), int(last or first) + 1):
                self.tasks[f"{array_id}_{task}"] = (name.group(1), Path(folders[str(task)]))
        return array_id


def tick(ex: SlurmExecutor, batch: list[Launch], *, recorded: bool = True) -> list[object]:
    """What the Runner does for these PENDING runs of a sweep (Runner._launch_sweep): each
    run's intent recorded, then launch_many; a handle replaces the intent, unless the daemon
    was killed before it recorded it (``recorded``). ``batch`` carry their earlier handles."""
    intents = ex.intents(batch)
    out = ex.launch_many(batch)
    for job, intent, result in zip(batch, intents, out, strict=True):
        job.handle = result if recorded and isinstance(result, dict) else intent
    return out


@pytest.mark.parametrize("killed", [False, True])
def test_a_run_never_adopts_an_array_task_not_submitted_for_it(
    tmp_path: Path, killed: bool
) -> None:
    """An array planned for 3 runs is refused (its partition was drained: the runs wait with
    their intents: the array's name and their task); at the next try there is room for one
    run only, submitted alone (``killed``: and the daemon is killed before it records the
    handle; the next one finds that job by name). The other two must not take tasks of
    that array (they never existed: the runs would end CANCELED): they are submitted, each
    into a task of its own run folder."""
    from flowbatch.executors.base import LaunchDeferred

    slurm = FakeArrays()
    clock = Clock()
    profile = executor(Scripted(), clock).profile

    def daemon() -> SlurmExecutor:
        ex = SlurmExecutor("slurm", "default", profile, site_name="s", runner=slurm, clock=clock)
        ex.site_root = tmp_path
        return ex

    ex = daemon()
    batch = jobs(tmp_path, 3)
    slurm.closed = True
    assert all(isinstance(e, LaunchDeferred) for e in tick(ex, batch))
    assert {j.handle["job_name"] for j in batch if j.handle} == {"fb-s-sw-array"}
    slurm.closed = False
    clock.now += 10
    (first,) = tick(ex, batch[:1], recorded=not killed)  # room for one run
    assert isinstance(first, dict) and first["job_id"] == "90_0"
    if killed:
        ex = daemon()
        assert batch[0].handle is not None and batch[0].handle["submitting"]
        (first,) = tick(ex, batch[:1])
        assert isinstance(first, dict) and first["adopted"] and first["job_id"] == "90_0"
    clock.now += 10
    rest = tick(ex, batch[1:])
    assert all(isinstance(h, dict) for h in rest), rest
    for job in batch:
        assert job.handle is not None and job.handle["job_id"] in slurm.tasks, job.handle
        assert slurm.tasks[job.handle["job_id"]][1] == job.run_dir  # its own task
    assert not any(h.get("adopted") for h in rest if isinstance(h, dict))
    assert [line.split()[0] for line in slurm.lines].count("sbatch") == 3
