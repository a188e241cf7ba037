"""What a local run's script leaves running in its process group (``server &``, ``nohup x
&``, a forgotten ``sleep 1000 &``) ends with the script, as a Slurm batch job's processes
end with its script: for the daemon's own children (the group killed before the script is
reaped), for another user's run of a root daemon, for post-processing runs, and for runs a
restarted daemon adopted (only processes proven the run's). A process that made its own
session (``setsid``) is not reached, and no process outside the run's group is signalled.
Real processes and daemons; nothing of the kill is mocked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flowbatch import api
from flowbatch.daemon import Daemon
from flowbatch.executors.base import Liveness
from flowbatch.executors.local import LocalExecutor, process_start
from flowbatch.postproc import postproc_root
from flowbatch.site import Site

from .conftest import drop, make_site, only_run, run_until_idle, write_template

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="runs as another user need root")


def one_step(command: str) -> str:
    return (
        "workflow:\n  steps:\n    - name: work\n"
        f"      action: {{commands: [{json.dumps(command)}]}}\n"
    )


def gated(gate: Path, body: str) -> str:
    """``body``, then a wait until ``gate`` exists: the test looks at the run's processes
    while it runs, then lets it end."""
    return f"{body}; while [ ! -e {gate} ]; do sleep 0.05; done"


LEFTOVER = "sleep 300 & echo $! > leftover.pid"
ESCAPED = "setsid sleep 300 & echo $! > escaped.pid"


def state_of(pid: int) -> tuple[str, float] | None:
    """The state letter and start time of ``pid``; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return text[text.rindex(b")") + 2 :].split()[0].decode(), process_start(pid)


def running(pid: int, start: float) -> bool:
    """Whether the process that began at ``start`` still runs as ``pid`` (a zombie has
    ended: here pid 1 may never reap what was reparented to it)."""
    seen = state_of(pid)
    return seen is not None and seen[0] != "Z" and seen[1] == start


def ended_soon(pid: int, start: float, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while running(pid, start):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def strays() -> Iterator[list[tuple[int, float]]]:
    """Processes a test started or saw (pid, start time): whatever still runs at the end
    is killed (on the code before this change, a run's leftovers outlived it)."""
    seen: list[tuple[int, float]] = []
    yield seen
    for pid, start in seen:
        if running(pid, start):
            os.kill(pid, signal.SIGKILL)


def written_pid(path: Path) -> int | None:
    """The PID a run wrote to ``path`` (``echo $! > path``), None until it is complete."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return int(text) if text.endswith("\n") else None


class Stage:
    """A ``run_until_idle`` tick callback: once the run wrote the pid files ``names`` in
    a folder ``folders()`` lists, checks that those processes run (each ``escaped`` one
    in a session of its own already), notes them, and opens the gate."""

    def __init__(
        self,
        folders: Callable[[], list[Path]],
        gate: Path,
        strays: list[tuple[int, float]],
        names: tuple[str, ...] = ("leftover",),
    ) -> None:
        self.folders, self.gate, self.strays, self.names = folders, gate, strays, names
        self.seen: dict[str, tuple[int, float]] = {}

    def __call__(self, _daemon: Daemon | None = None) -> None:
        if self.gate.exists():
            return
        for folder in self.folders():
            pids = [written_pid(folder / f"{name}.pid") for name in self.names]
            if None in pids:
                continue
            if "escaped" in self.names:
                escaped = pids[self.names.index("escaped")]
                if escaped is not None and os.getsid(escaped) != escaped:
                    return  # not through setsid yet
            for name, pid in zip(self.names, pids, strict=True):
                assert pid is not None
                seen = state_of(pid)
                assert seen is not None and seen[0] != "Z", f"{name} {pid} not running: {seen}"
                self.seen[name] = (pid, seen[1])
                self.strays.append((pid, seen[1]))
            self.gate.touch()
            return


def run_folders(site: Site, workflow: str = "wf") -> Callable[[], list[Path]]:
    def folders() -> list[Path]:
        runs = site.layout.runs_dir(workflow)
        if not runs.is_dir():
            return []
        return [p for p in runs.iterdir() if not p.name.startswith(".")]

    return folders


def test_a_runs_leftover_ends_with_its_script(
    site: Site, tmp_path: Path, strays: list[tuple[int, float]]
) -> None:
    """``sleep 300 &``: alive while the run runs, ended once its script has; the run
    itself is a SUCCESS, and a process of the same user outside the run's group lives."""
    gate = tmp_path / "go"
    write_template(tmp_path / "t", one_step(gated(gate, LEFTOVER)))
    api.install(site, tmp_path / "t", workflow_id="wf")
    drop(site, "r.yaml", {"workflow": "wf"})
    outside = subprocess.Popen(["sleep", "300"], start_new_session=True)
    strays.append((outside.pid, process_start(outside.pid)))
    try:
        stage = Stage(run_folders(site), gate, strays)
        run_until_idle(site, each_tick=stage)
        assert stage.seen, "the run's leftover was never seen running"
        run = only_run(site)
        assert run["state"] == "SUCCESS", run["messages"]
        pid, start = stage.seen["leftover"]
        assert ended_soon(pid, start), f"the leftover {pid} outlived its run"
        assert outside.poll() is None  # the same user's process in another group
    finally:
        outside.kill()
        outside.wait()


@needs_root
def test_a_root_daemon_ends_the_leftovers_of_another_users_run(
    public_tmp: Path, tmp_path: Path, strays: list[tuple[int, float]]
) -> None:
    """A root daemon's run as its owner (nobody): its leftover, that user's process,
    ends with the script, before the run folder is taken back."""
    site = make_site(public_tmp / "site")
    try:
        gate = public_tmp / "go"  # nobody can look there
        write_template(tmp_path / "t", one_step(gated(gate, LEFTOVER)))
        api.install(site, tmp_path / "t", workflow_id="wf")
        path = drop(site, "r.yaml", {"workflow": "wf"})
        os.chown(path, NOBODY, NOBODY)
        stage = Stage(run_folders(site), gate, strays)
        run_until_idle(site, each_tick=stage)
        assert stage.seen, "the run's leftover was never seen running"
        run = only_run(site)
        assert run["state"] == "SUCCESS", run["messages"]
        assert run["owner_uid"] == NOBODY
        pid, start = stage.seen["leftover"]
        assert ended_soon(pid, start), f"the leftover {pid} outlived its run"
        assert Path(run["run_dir"]).stat().st_uid == 0  # taken back
    finally:
        site.close()


def test_a_process_that_made_its_own_session_is_not_reached(
    site: Site, tmp_path: Path, strays: list[tuple[int, float]]
) -> None:
    """The documented limit (as Slurm's without cgroups): ``setsid`` takes a process out
    of the run's group, and it outlives the run; the leftover that stayed in the group
    is ended."""
    gate = tmp_path / "go"
    write_template(tmp_path / "t", one_step(gated(gate, f"{ESCAPED}; {LEFTOVER}")))
    api.install(site, tmp_path / "t", workflow_id="wf")
    drop(site, "r.yaml", {"workflow": "wf"})
    stage = Stage(run_folders(site), gate, strays, names=("escaped", "leftover"))
    run_until_idle(site, each_tick=stage)
    assert stage.seen, "the run's processes were never seen running"
    assert only_run(site)["state"] == "SUCCESS"
    pid, start = stage.seen["leftover"]
    assert ended_soon(pid, start), f"the leftover {pid} outlived its run"
    escaped, began = stage.seen["escaped"]
    time.sleep(0.2)
    assert running(escaped, began), "the process in a session of its own was ended"


def test_a_post_processing_runs_leftover_ends_with_its_script(
    public_site: Site, public_tmp: Path, tmp_path: Path, strays: list[tuple[int, float]]
) -> None:
    """Post-processing runs go through the local executor: the same for them."""
    site = public_site  # post-processing runs as another user (conftest)
    gate = public_tmp / "go"
    template = f"""
workflow:
  steps:
    - name: score
      action:
        commands: ["mkdir -p results && echo '{{\\"s\\": 1}}' > results/r.json"]
results:
  file: results/r.json
  schema: [{{name: s, label: S, dtype: int}}]
postproc:
  workflow:
    steps:
      - name: plot
        action:
          commands: [{json.dumps(gated(gate, LEFTOVER))}]
  inputs: {{files: [results/r.json]}}
"""
    api.install(site, write_template(tmp_path / "t", template), workflow_id="wf")
    drop(site, "a.yaml", {"workflow": "wf", "group": "a"})

    def folders() -> list[Path]:
        root = postproc_root(site, "wf")
        return [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []

    stage = Stage(folders, gate, strays)
    run_until_idle(site, each_tick=stage)
    assert stage.seen, "the post-processing run's leftover was never seen running"
    pid, start = stage.seen["leftover"]
    assert ended_soon(pid, start), f"the leftover {pid} outlived its post-processing run"


def start_daemon(site: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "flowbatch", "--site", str(site), "daemon"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_an_adopted_runs_leftover_ends_when_its_end_is_seen(
    tmp_path: Path, strays: list[tuple[int, float]]
) -> None:
    """A daemon killed (SIGKILL) while the run runs; the next one adopts the run, whose
    script is not its child. When the script's end is seen, the leftover is ended; a
    process of the same user, started since, outside the group, lives on."""
    site = make_site(tmp_path / "site")
    gate = tmp_path / "go"
    write_template(tmp_path / "t", one_step(gated(gate, LEFTOVER)))
    api.install(site, tmp_path / "t", workflow_id="wf")
    drop(site, "r.yaml", {"workflow": "wf"})
    site.close()
    first = start_daemon(site.root, tmp_path / "first.log")
    folders = run_folders(site)
    try:
        deadline = time.monotonic() + 30
        while True:  # running, its handle recorded, its leftover started
            found = folders()
            if found and written_pid(found[0] / "leftover.pid") is not None:
                record = json.loads((found[0] / "run.json").read_text())
                if record["state"] == "RUNNING" and record.get("handle"):
                    break
            assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()
            time.sleep(0.05)
    finally:
        first.kill()
        first.wait()
    folder = folders()[0]
    pid = int((folder / "leftover.pid").read_text())
    start = process_start(pid)
    strays.append((pid, start))
    assert running(pid, start)
    outside = subprocess.Popen(["sleep", "300"], start_new_session=True)
    strays.append((outside.pid, process_start(outside.pid)))
    site = Site(site.root)
    try:
        run_until_idle(site, each_tick=lambda _d: gate.touch())
        run = only_run(site)
        assert run["state"] == "SUCCESS", run["messages"]
        assert ended_soon(pid, start), f"the adopted run's leftover {pid} outlived it"
        assert outside.poll() is None
    finally:
        site.close()
        outside.kill()
        outside.wait()


def test_an_adopted_group_is_ended_only_while_its_id_is_the_runs(
    strays: list[tuple[int, float]],
) -> None:
    """The rules for a group whose leader was never this daemon's child: nothing while a
    process other than the run's script has the group's id as its PID (a live one, or a
    zombie of another start), nothing of a process started before the script or of
    another user; once the id is free (the script reaped by its new parent), the run's
    user's processes in the group are ended, and only they."""
    ex = LocalExecutor()
    # a group of its own whose leader starts its members (only a process of the group's
    # session may join it), one of them another user's when this is root
    starts = "sleep 300 & echo $!; "
    if os.geteuid() == 0:
        starts += f"setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups sleep 300 & echo $!; "
    leader = subprocess.Popen(
        ["bash", "-c", starts + "exec sleep 300"], start_new_session=True, stdout=subprocess.PIPE
    )
    assert leader.stdout is not None
    pids = [int(leader.stdout.readline()) for _ in range(starts.count("&"))]
    leader.stdout.close()
    for pid in pids[1:]:  # nobody's once setpriv has changed its user (on a busy machine,
        # not yet when its pid is printed: then it is still root's, as the run's are)
        deadline = time.monotonic() + 10
        while os.stat(f"/proc/{pid}").st_uid != NOBODY:
            assert time.monotonic() < deadline, f"{pid} never became nobody's"
            time.sleep(0.01)
    begun = process_start(leader.pid)
    outside = subprocess.Popen(["sleep", "300"], start_new_session=True)  # same user
    member, others = pids[0], [*pids[1:], outside.pid]
    strays.extend((pid, process_start(pid)) for pid in [leader.pid, *pids, outside.pid])
    started = dict(strays)
    assert os.getpgid(member) == leader.pid
    handle = {
        "pid": leader.pid,
        "pgid": leader.pid,
        "start": begun,
        "host": ex.host,
        "uid": os.geteuid(),
        "script": "/nowhere/run.sh",  # the leader is not running it: never adopted
    }

    def poll(**change: object) -> None:
        probe = ex.poll([("r", {**handle, **change})])["r"]
        assert probe.liveness == Liveness.FINISHED

    def alive(*pids: int) -> bool:
        return all(running(pid, started[pid]) for pid in pids)

    try:
        poll()  # a live process has the group's id as its PID
        assert alive(leader.pid, member, *others)
        os.kill(leader.pid, signal.SIGKILL)
        os.waitid(os.P_PID, leader.pid, os.WEXITED | os.WNOWAIT)  # a zombie, not reaped
        poll(start=begun - 100)  # a zombie that is not the script that began then
        assert alive(member, *others)
        leader.wait()  # reaped: the id is free, held by the group's members alone
        poll(start=time.time() + 100)  # the members began before such a script
        assert alive(member, *others)
        poll()
        assert ended_soon(member, started[member]), "the run's process in its group lives"
        time.sleep(0.2)
        assert alive(*others), "a process not the run's was ended"
    finally:
        leader.kill()
        leader.wait()
        outside.kill()
        outside.wait()


FORGER = r"""
workflow:
  steps:
    - name: solve
      action:
        commands:
          - bash $[[code]]
    - name: score
      action:
        commands:
          - >-
            echo '{"score": 0.25}' > results.json
parameters:
  - {name: code, dtype: file, target: sub.sh}
results:
  file: results.json
  schema: [{name: score, label: Score, dtype: float}]
"""

#: a participant's code that writes the end markers the script would and kills it:
#: the organiser's scoring step never runs, its own score is the run's
FORGED = r"""
echo '{"score": 999}' > results.json
read -r _ pid _ < status/markers
printf 'end 01 0 %s\nexit 0 %s 0\n' "$EPOCHREALTIME" "$EPOCHREALTIME" >> status/markers
kill -9 "$pid"
"""


def test_a_run_that_writes_its_own_end_markers_and_kills_its_script_is_no_success(
    site: Site, tmp_path: Path
) -> None:
    """Found by review: the markers are the run's to write; the script's own exit status
    (the kernel's, for a local run) is not. A run whose markers say it ended well while
    its script was killed is an ERROR saying so, and ranks nowhere."""
    api.install(site, write_template(tmp_path / "t", FORGER), workflow_id="wf")
    drop(
        site,
        "r.yaml",
        {"workflow": "wf", "arguments": {"code": "sub.sh"}},
        files={"sub.sh": FORGED},
    )
    run_until_idle(site)
    (run,) = api.list_runs(site)
    shown = api.show_run(site, run["id"])
    assert shown["state"] == "ERROR", shown
    assert "killed by SIGKILL, though its markers say it ended well" in shown["messages"][0]
    board = json.loads((site.layout.workflow_results("wf") / "leaderboard.json").read_text())
    assert board["ranking"] == []
