"""An SSH run's remote wrapper killed from outside (the kernel's OOM killer, an admin's
``kill -9 <wrapper pid>``) while the run's script goes on: the run is not lost.

The wrapper is the session leader that waits for ``run.sh``, records its exit status and
KILLs its process group. Before this change, a poll that found it gone took the run as
ended: no exit status, so ERROR "lost", its remote folder removed under the still
running script, and the script and its leftovers left running on the host. Now, while
the wrapper's process group still has the script running, the run stays RUNNING; once
the script ended, its own exit marker decides (SUCCESS or ERROR, not "lost"), and the
poll KILLs what is left of the group, as the dead wrapper can no longer do. A cancel
still ends the whole group. Real OpenSSH servers on loopback (tests/fixtures_ssh.py):
the "remote" processes are this machine's, killed for real; nothing is mocked."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from flowbatch import api
from flowbatch.cli import main
from flowbatch.daemon import Daemon
from flowbatch.executors.base import Liveness
from flowbatch.executors.ssh import SSHExecutor
from flowbatch.render.script import read_markers
from flowbatch.site import Site

from .conftest import drop, only_run, run_until_idle, write_template
from .fixtures_ssh import SshEnv, ssh_site
from .test_leftovers import LEFTOVER, state_of
from .test_robust import wait_for
from .test_ssh import group_members, removed
from .test_ssh_leftovers import alive, ended_soon, run_leftover, running_handle
from .test_ssh_leftovers import strays as strays  # the fixture, reused

#: the step: ``body`` (a leftover in the background, or nothing), then a wait until the
#: test creates ``go`` in the run's remote folder, then ``out`` written and exit ``code``
TEMPLATE = """
workflow:
  steps:
    - name: work
      action:
        commands:
          - {body}; for i in $(seq 1200); do [ -e go ] && break; sleep 0.05; done; echo done > out; exit $[[code]]
parameters:
  - {{name: code, dtype: int, defaultValue: 0}}
"""

Strays = list[tuple[int, float]]


def staged(
    ssh: SshEnv, tmp_path: Path, strays: Strays, code: int = 0, body: str = ":"
) -> tuple[Site, Daemon, dict[str, Any], int]:
    """A site with one run ``r`` RUNNING on host a, its script started (its daemon
    started: the caller stops it): the daemon, the run's handle and its script's PID."""
    site = ssh_site(tmp_path / "site", ssh)
    api.install(
        site, write_template(tmp_path / "tpl", TEMPLATE.format(body=body)), workflow_id="wf"
    )
    drop(site, "r.yaml", {"workflow": "wf", "name": "r", "arguments": {"code": code}})
    d = Daemon(site)
    d.start()
    try:
        handle = running_handle(d)
        remote = Path(handle["remote_dir"])
        assert wait_for(lambda: read_markers(remote).started is not None, timeout=20)
        started = read_markers(remote).started
        assert started is not None
        script = started[0]
        seen = state_of(script)
        assert seen is not None and seen[0] != "Z", f"run.sh {script} is not running"
        strays.append((script, seen[1]))
        return site, d, handle, script
    except BaseException:
        d.stop()
        raise


def kill_wrapper(handle: dict[str, Any], strays: Strays) -> int:
    """``kill -KILL`` the run's wrapper on the host, as the OOM killer or an admin
    would: its PID as the run's remote folder records it (``status/wrapper``). Returns
    once it is dead."""
    record = (Path(handle["remote_dir"]) / "status" / "wrapper").read_text().split()
    pid, start = int(record[0]), record[1]
    assert (pid, start) == (handle["pid"], handle["start"]), (record, handle)
    seen = state_of(pid)
    assert seen is not None and seen[0] != "Z", f"the wrapper {pid} is not running"
    strays.append((pid, seen[1]))
    os.kill(pid, signal.SIGKILL)
    assert ended_soon(pid, seen[1], timeout=10), f"the wrapper {pid} did not die"
    return pid


def executor(d: Daemon) -> SSHExecutor:
    ex = d.runner.executors["a"]
    assert isinstance(ex, SSHExecutor)
    return ex


def stays_running(d: Daemon, polls: int = 3, timeout: float = 30.0) -> None:
    """Tick ``d`` until its executor has polled host a ``polls`` more times: the run
    is RUNNING after every tick (the daemon's own polls, not a fixed wait)."""
    conn = executor(d).connection
    begin = conn.commands
    deadline = time.monotonic() + timeout
    while conn.commands - begin < polls:
        assert time.monotonic() < deadline, "the daemon did not poll the host"
        d.wakeup.clear()
        d.tick()
        assert [r.name for r in d.runner.launched()] == ["r"], list(d.runner.active)
        d.wakeup.wait(0.25)


@pytest.mark.parametrize("code", [0, 3])
def test_a_run_whose_wrapper_was_killed_goes_on_and_ends_by_its_scripts_exit_marker(
    ssh: SshEnv, tmp_path: Path, strays: Strays, code: int
) -> None:
    """The wrapper killed, the script still waiting for ``go``: the poll says ALIVE (not
    ended, not lost) and the run stays RUNNING, `runs show` saying why; once the script
    ends, the run is the script's own: SUCCESS with its output home (exit 0), or ERROR
    with step 1's exit 3 (not "lost")."""
    site, d, handle, script = staged(ssh, tmp_path, strays, code=code)
    try:
        remote = Path(handle["remote_dir"])
        wrapper = kill_wrapper(handle, strays)
        (run,) = d.runner.launched()
        probe = executor(d).poll([(run.id, handle)])[run.id]
        assert probe.liveness == Liveness.ALIVE, probe
        assert f"pid {wrapper} (the run's wrapper)" in probe.raw, probe.raw
        stays_running(d)
        assert os.path.isdir(remote) and not (remote / "out").exists()
        shown = api.show_run(site, run.id)
        said = str(shown["handle"].get("status"))
        assert "wrapper was killed from outside; the script goes on" in said, shown["handle"]
        (remote / "go").touch()
        run_until_idle(site, daemon=d, timeout=30)
    finally:
        d.stop()
    run = only_run(site)
    assert ended_soon(script, strays[0][1]), "run.sh outlived its run"
    text = " ".join(run["messages"] or [])
    assert "lost" not in text, run["messages"]
    assert "was killed from outside while its script ran" in text, run["messages"]
    assert (Path(run["run_dir"]) / "out").read_text() == "done\n"
    assert not (Path(run["run_dir"]) / "status" / "script.rc").exists()  # no wrapper left
    ended = read_markers(Path(run["run_dir"])).exit
    assert ended is not None and ended[0] == code
    if code == 0:
        assert run["state"] == "SUCCESS", run["messages"]
    else:
        assert run["state"] == "ERROR", run["messages"]
        assert [s["exit_code"] for s in run["steps"]] == [3], run["steps"]
        assert "step 1 (work) failed" in run["messages"][0], run["messages"]
    assert removed(remote)


def test_leftovers_of_a_run_whose_wrapper_was_killed_end_with_its_script(
    ssh: SshEnv, tmp_path: Path, strays: Strays
) -> None:
    """``sleep 300 &`` in the run's group, the wrapper killed: the leftover runs on with
    the script; the script ends, and the poll that sees it KILLs the leftover (the dead
    wrapper cannot). The same single poll of the host (one remote command) also looks at
    two records whose PIDs are another process's now (PID reuse): neither is taken for a
    run going on, and neither process is touched."""
    site, d, handle, _script = staged(ssh, tmp_path, strays, body=LEFTOVER)
    decoys: list[tuple[int, float]] = []
    try:
        remote, pid, start = run_leftover(handle, strays)
        kill_wrapper(handle, strays)
        ex = executor(d)
        # decoys as the remote user: a session leader, and the member left of a session
        # whose leader ended (the "wrapper" records name them with other start times)
        said = ex.connection.run(
            "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!\n"
            "setsid bash -c 'sleep 300 </dev/null >/dev/null 2>&1 & echo $$ $!' & wait $!"
        )
        assert said.ok, said.stderr
        leader, (gone_leader, member) = (
            int(said.stdout.split()[0]),
            map(int, said.stdout.split()[1:3]),
        )
        for decoy in (leader, member):
            seen = state_of(decoy)
            assert seen is not None and seen[0] != "Z", decoy
            strays.append((decoy, seen[1]))
            decoys.append((decoy, seen[1]))
        # the member is in the session and group of a leader that is no more
        assert os.getsid(member) == os.getpgid(member) == gone_leader != member
        assert wait_for(lambda: state_of(gone_leader) is None, timeout=10)
        boot = handle["boot_id"]
        member_start = int(Path(f"/proc/{member}/stat").read_text().rsplit(") ", 1)[1].split()[19])
        reused = {
            # the leader's PID, recorded with an earlier start: a wrapper long gone
            "x1": {"pid": leader, "pgid": leader, "start": "1", "boot_id": boot},
            # a group whose members all started before the recorded "wrapper"
            "x2": {
                "pid": gone_leader,
                "pgid": gone_leader,
                "start": str(member_start + 1000),
                "boot_id": boot,
            },
        }
        for h in reused.values():
            h.update(host="a", remote_dir=str(tmp_path / "nowhere"))
        (run,) = d.runner.launched()
        before = ex.connection.commands
        probes = ex.poll([(run.id, handle), *reused.items()])
        assert probes[run.id].liveness == Liveness.ALIVE, probes[run.id]
        assert ex.connection.commands - before == 1  # one remote command for all
        assert probes["x1"].liveness == Liveness.FINISHED, probes["x1"]
        assert probes["x2"].liveness == Liveness.FINISHED, probes["x2"]
        assert "killed" not in probes["x1"].raw + probes["x2"].raw
        assert all(alive(p, s) for p, s in decoys), "a process of another group was killed"
        stays_running(d)
        assert alive(pid, start), "the leftover was ended while the script ran"
        (remote / "go").touch()
        run_until_idle(site, daemon=d, timeout=30)
    finally:
        d.stop()
    run = only_run(site)
    assert run["state"] == "SUCCESS", run["messages"]
    assert ended_soon(pid, start), f"the leftover {pid} outlived its run"
    assert all(alive(p, s) for p, s in decoys), "a process of another group was killed"
    assert (Path(run["run_dir"]) / "out").read_text() == "done\n"


def test_a_run_whose_wrapper_and_script_were_killed_is_lost_and_its_leftover_ends(
    ssh: SshEnv, tmp_path: Path, strays: Strays
) -> None:
    """The wrapper killed, then the script itself (an OOM kill of both), a leftover
    still running in the group: no exit marker, so the run is lost (ERROR), and the poll
    that sees it KILLs the leftover instead of leaving it on the host."""
    site, d, handle, script = staged(ssh, tmp_path, strays, body=LEFTOVER)
    try:
        _remote, pid, start = run_leftover(handle, strays)
        kill_wrapper(handle, strays)
        os.kill(script, signal.SIGKILL)
        assert ended_soon(script, strays[0][1], timeout=10)
        run_until_idle(site, daemon=d, timeout=30)
    finally:
        d.stop()
    run = only_run(site)
    assert run["state"] == "ERROR", run["messages"]
    assert ended_soon(pid, start), f"the leftover {pid} outlived its lost run"
    assert run["messages"][0].startswith("lost: "), run["messages"]
    assert f"what was left of its process group {handle['pgid']}" in run["messages"][0]
    assert wait_for(lambda: group_members(handle["pgid"]) == [], timeout=10)


def test_cancel_of_a_run_whose_wrapper_was_killed_ends_its_whole_group(
    ssh: SshEnv, tmp_path: Path, strays: Strays
) -> None:
    """`runs cancel` of a run whose wrapper was killed from outside (the daemon gone in
    the meantime): TERM to the run's group all the same, the script's TERM trap writes
    its exit marker (143), the leftover ends: CANCELED, nothing of the group left."""
    site, d, handle, script = staged(ssh, tmp_path, strays, body=LEFTOVER)
    try:
        _remote, pid, start = run_leftover(handle, strays)
        kill_wrapper(handle, strays)
        run_id = d.runner.launched()[0].id
    finally:
        d.stop()  # the daemon goes away; the run goes on
    assert alive(script, strays[0][1]) and alive(pid, start)
    result = CliRunner().invoke(
        main, ["--site", str(site.root), "runs", "cancel", run_id, "--reason", "enough"]
    )
    assert result.exit_code == 0, result.output
    assert "CANCELED" in result.output
    assert ended_soon(script, strays[0][1]), "run.sh outlived the cancel"
    assert ended_soon(pid, start), f"the leftover {pid} outlived the cancel"
    assert wait_for(lambda: group_members(handle["pgid"]) == [], timeout=10)
    run = api.show_run(site, run_id)
    assert run["state"] == "CANCELED" and "enough" in run["messages"][-1], run["messages"]
    ended = read_markers(Path(run["run_dir"])).exit
    assert ended is not None and ended[0] == 143


def test_a_restarted_daemon_adopts_a_run_whose_wrapper_was_killed(
    ssh: SshEnv, tmp_path: Path, strays: Strays
) -> None:
    """The wrapper killed and the daemon restarted: the new daemon takes the run as
    still going (its process group is), keeps it RUNNING, and it ends SUCCESS."""
    site, d, handle, script = staged(ssh, tmp_path, strays)
    try:
        remote = Path(handle["remote_dir"])
        kill_wrapper(handle, strays)
        stays_running(d, polls=1)
    finally:
        d.stop()
    root = site.root
    site.close()
    site = Site(root)
    try:
        d = Daemon(site)
        d.start()
        try:
            assert executor(d).adopt(handle)
            stays_running(d)
            (remote / "go").touch()
            run_until_idle(site, daemon=d, timeout=30)
        finally:
            d.stop()
        run = only_run(site)
        assert run["state"] == "SUCCESS", run["messages"]
        assert "while its script ran" in " ".join(run["messages"] or []), run["messages"]
        assert (Path(run["run_dir"]) / "out").read_text() == "done\n"
        assert ended_soon(script, strays[0][1])
    finally:
        site.close()
