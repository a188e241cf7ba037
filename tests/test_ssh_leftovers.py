"""What an SSH run's script leaves running in its process group on the host (``server &``,
``nohup x &``, a forgotten ``sleep 300 &``) ends with the script, as a local run's
leftovers do (tests/test_leftovers.py): the remote wrapper, once the script ended, writes
its exit status and SIGKILLs its process group, itself included, so no poll sees the run
ended while a leftover still runs, with or without a daemon watching. The run's state
and exit status stay the script's. A process that made its own session (``setsid``) is
not reached. Real OpenSSH servers on loopback (tests/fixtures_ssh.py): the "remote"
processes are this machine's, seen in its ``/proc``; nothing of the kill is mocked."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowbatch import api
from flowbatch.daemon import Daemon
from flowbatch.render.script import read_markers
from flowbatch.site import Site

from .conftest import drop, only_run, run_until_idle, write_template
from .fixtures_ssh import SshEnv, ssh_site
from .test_leftovers import ESCAPED, LEFTOVER, state_of, written_pid
from .test_robust import start_daemon, wait_for
from .test_ssh import removed

#: the step: a leftover in the background (its PID in leftover.pid), maybe more, then a
#: wait until the test creates ``go`` in the run's remote folder, then exit ``code``
TEMPLATE = """
workflow:
  steps:
    - name: work
      action:
        commands:
          - {body}; for i in $(seq 1200); do [ -e go ] && break; sleep 0.05; done; exit $[[code]]
parameters:
  - {{name: code, dtype: int, defaultValue: 0}}
"""


def install(site: Site, tmp_path: Path, body: str = LEFTOVER) -> None:
    api.install(
        site, write_template(tmp_path / "tpl", TEMPLATE.format(body=body)), workflow_id="wf"
    )


def alive(pid: int, start: float) -> bool:
    """Whether the process that began at ``start`` still runs as ``pid``: a zombie has
    ended (reparented to pid 1, which may never reap it), unless it is this process's own
    child (a zombie of ours would be a process this test started, not a leftover)."""
    seen = state_of(pid)
    if seen is None or seen[1] != start:
        return False
    if seen[0] == "Z":
        assert _parent(pid) != os.getpid(), f"{pid} is a zombie of the test's"
        return False
    return True


def _parent(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(text[text.rindex(b")") + 2 :].split()[1])


def ended_soon(pid: int, start: float, timeout: float = 2.0) -> bool:
    """Ended now or within ``timeout`` (a SIGKILLed process is gone in microseconds;
    the slack is for a loaded machine, not for a kill yet to come)."""
    return wait_for(lambda: not alive(pid, start), timeout=timeout, step=0.02)


@pytest.fixture
def strays() -> Iterator[list[tuple[int, float]]]:
    """Processes a test saw (pid, start time): whatever still runs at the end is killed
    (on the code before this change, a run's leftovers outlived it on the host)."""
    seen: list[tuple[int, float]] = []
    yield seen
    for pid, start in seen:
        if alive(pid, start):
            os.kill(pid, signal.SIGKILL)


def seen_running(remote: Path, name: str, strays: list[tuple[int, float]]) -> tuple[int, float]:
    """The process whose PID the run wrote to ``<remote>/<name>.pid``, once running
    (noted in ``strays``)."""
    assert wait_for(lambda: written_pid(remote / f"{name}.pid") is not None, timeout=20), (
        f"the run never wrote {name}.pid"
    )
    pid = written_pid(remote / f"{name}.pid")
    assert pid is not None
    seen = state_of(pid)
    assert seen is not None and seen[0] != "Z", f"{name} {pid} is not running: {seen}"
    strays.append((pid, seen[1]))
    return pid, seen[1]


def run_leftover(
    handle: dict[str, Any], strays: list[tuple[int, float]]
) -> tuple[Path, int, float]:
    """The run's remote folder and the leftover its step started (its PID and start
    time, once running), a member of the run's process group."""
    remote = Path(handle["remote_dir"])
    pid, start = seen_running(remote, "leftover", strays)
    assert os.getpgid(pid) == handle["pgid"]  # a member of the run's group
    return remote, pid, start


def running_handle(d: Daemon, timeout: float = 20.0) -> dict[str, Any]:
    """Tick ``d`` until its one run is RUNNING with a handle; the handle."""
    deadline = time.monotonic() + timeout
    while not d.runner.launched():
        assert time.monotonic() < deadline, list(d.runner.active)
        d.wakeup.clear()
        d.tick()
        d.wakeup.wait(0.05)
    (run,) = d.runner.launched()
    return dict(run.handle or {})


def staged_run(
    ssh: SshEnv, tmp_path: Path, code: int = 0, body: str = LEFTOVER
) -> tuple[Site, Daemon, dict[str, Any]]:
    """A site with one run ``r`` of ``wf`` RUNNING on host a (its daemon started, the
    caller stops it): the daemon and the run's handle."""
    site = ssh_site(tmp_path / "site", ssh)
    install(site, tmp_path, body)
    drop(site, "r.yaml", {"workflow": "wf", "name": "r", "arguments": {"code": code}})
    d = Daemon(site)
    d.start()
    try:
        return site, d, running_handle(d)
    except BaseException:
        d.stop()
        raise


def script_rc(run: dict[str, Any]) -> str:
    """What the wrapper recorded as the script's exit status (it came home)."""
    return (Path(run["run_dir"]) / "status" / "script.rc").read_text()


def test_a_leftover_on_the_host_ends_with_its_runs_script(
    ssh: SshEnv, tmp_path: Path, strays: list[tuple[int, float]]
) -> None:
    """``sleep 300 &``, in the run's remote process group: running while the run runs,
    ended once the run is seen ended; the run is the script's SUCCESS (exit 0)."""
    site, d, handle = staged_run(ssh, tmp_path)
    try:
        remote, pid, start = run_leftover(handle, strays)
        (remote / "go").touch()
        run_until_idle(site, daemon=d, timeout=30)
    finally:
        d.stop()
    run = only_run(site)
    assert run["state"] == "SUCCESS", run["messages"]
    assert ended_soon(pid, start), f"the leftover {pid} outlived its SSH run"
    assert script_rc(run) == "0\n"
    ended = read_markers(Path(run["run_dir"])).exit
    assert ended is not None and ended[0] == 0
    assert removed(remote)  # collected and removed (detached), nothing of the run left there


def test_a_failed_runs_leftover_ends_and_its_status_stays_the_scripts(
    ssh: SshEnv, tmp_path: Path, strays: list[tuple[int, float]]
) -> None:
    """The step exits 3 with a leftover running: ERROR with the script's status 3 (not
    137, the wrapper's own SIGKILL), and the leftover is gone."""
    site, d, handle = staged_run(ssh, tmp_path, code=3)
    try:
        remote, pid, start = run_leftover(handle, strays)
        (remote / "go").touch()
        run_until_idle(site, daemon=d, timeout=30)
    finally:
        d.stop()
    run = only_run(site)
    assert run["state"] == "ERROR", run["messages"]
    assert ended_soon(pid, start), f"the leftover {pid} outlived its failed SSH run"
    assert script_rc(run) == "3\n"
    ended = read_markers(Path(run["run_dir"])).exit
    assert ended is not None and ended[0] == 3
    text = " ".join(run["messages"])
    assert "3" in text and "137" not in text and "SIGKILL" not in text, run["messages"]
    assert [s["exit_code"] for s in run["steps"]] == [3], run["steps"]


def test_a_process_that_made_its_own_session_on_the_host_is_not_reached(
    ssh: SshEnv, tmp_path: Path, strays: list[tuple[int, float]]
) -> None:
    """The documented limit, as for local runs: ``setsid`` takes a process out of the
    run's group and it outlives the run; the leftover that stayed in the group ends."""
    site, d, handle = staged_run(ssh, tmp_path, body=f"{ESCAPED}; {LEFTOVER}")
    try:
        remote = Path(handle["remote_dir"])
        escaped, began = seen_running(remote, "escaped", strays)
        assert wait_for(lambda: os.getsid(escaped) == escaped, timeout=10)
        pid, start = seen_running(remote, "leftover", strays)
        (remote / "go").touch()
        run_until_idle(site, daemon=d, timeout=30)
    finally:
        d.stop()
    assert only_run(site)["state"] == "SUCCESS"
    assert ended_soon(pid, start), f"the leftover {pid} outlived its SSH run"
    time.sleep(0.2)
    assert alive(escaped, began), "the process in a session of its own was ended"


@pytest.mark.parametrize("when", ["no daemon", "adopted"])
def test_the_leftover_ends_with_the_script_whoever_watches(
    ssh: SshEnv, tmp_path: Path, strays: list[tuple[int, float]], when: str
) -> None:
    """The daemon is SIGKILLed while the run runs. ``no daemon``: the script ends while
    no daemon runs at all, and its leftover ends all the same (the host does it), then
    the next daemon finds the run ended; ``adopted``: the next daemon adopts the running
    run, the script ends, and the leftover is gone by the time its end is seen. Either
    way the run is the script's SUCCESS."""
    site = ssh_site(tmp_path / "site", ssh)
    install(site, tmp_path)
    drop(site, "r.yaml", {"workflow": "wf", "name": "r"})
    root = site.root
    runs = site.layout.runs_dir("wf")
    site.close()
    first = start_daemon(root, log=tmp_path / "first.log")
    handle: dict[str, Any] = {}
    try:

        def recorded() -> bool:  # RUNNING, its handle recorded, its leftover started
            for record in runs.glob("*/run.json") if runs.is_dir() else []:
                doc = json.loads(record.read_text())
                if doc["state"] == "RUNNING" and doc.get("handle"):
                    handle.update(doc["handle"])
                    return written_pid(Path(handle["remote_dir"]) / "leftover.pid") is not None
            return False

        assert wait_for(recorded, timeout=30), (tmp_path / "first.log").read_text()
    finally:
        first.kill()
        first.wait()
    remote, pid, start = run_leftover(handle, strays)
    wrapper = (int(handle["pid"]), state_of(int(handle["pid"])))
    assert wrapper[1] is not None and wrapper[1][0] != "Z", "the wrapper is not running"
    strays.append((wrapper[0], wrapper[1][1]))
    site = Site(root)
    try:
        if when == "no daemon":
            (remote / "go").touch()
            assert wait_for(lambda: not alive(wrapper[0], wrapper[1][1]), timeout=20), (
                "the wrapper did not end"
            )
            assert ended_soon(pid, start), f"the leftover {pid} outlived its script"
            run_until_idle(site, timeout=30)
        else:
            d = Daemon(site)
            d.start()
            try:
                d.tick()
                assert [r.name for r in d.runner.launched()] == ["r"]  # adopted
                (remote / "go").touch()
                run_until_idle(site, daemon=d, timeout=30)
            finally:
                d.stop()
            assert ended_soon(pid, start), f"the adopted run's leftover {pid} outlived it"
        run = only_run(site)
        assert run["state"] == "SUCCESS", run["messages"]
        assert script_rc(run) == "0\n"
    finally:
        site.close()
