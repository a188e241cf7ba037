"""A serving daemon ends an SSH run (a cancel, its time limit) without waiting out the
grace between TERM and KILL on its own thread: the executor's ``terminate`` sends the
TERM (one remote command), a later tick its ``kill`` the KILL, and the run is recorded
once nothing of it is left (``Runner._kill``, as for the local executor in
tests/test_local.py). The SSH executor's cancel waited the grace out on the host, the
daemon's whole tick with it: 3 s a run whose program ignores TERM, run after run (found
by review). Real OpenSSH servers on loopback (tests/fixtures_ssh.py): the "remote"
processes are this machine's, seen in its ``/proc``; nothing of the kill is mocked."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from flowbatch import api
from flowbatch.daemon import Daemon
from flowbatch.render.script import read_markers
from flowbatch.site import Site

from .conftest import drop, run_until_idle, write_template
from .fixtures_ssh import SshEnv, ssh_site
from .test_leftovers import state_of
from .test_ssh import group_members, kill_groups, tick_until

#: a step that ignores TERM (so does its sleep: an ignored signal stays ignored across
#: exec), its PID written once the trap is set
STUBBORN = """
workflow:
  steps:
    - name: s
      action:
        commands: ["trap '' TERM; echo $$$$ > stubborn.pid; sleep 60"]
"""
QUICK = """
workflow:
  steps:
    - name: q
      action:
        commands: ["echo quick"]
"""


def install(site: Site, tmp_path: Path, name: str, text: str) -> None:
    api.install(site, write_template(tmp_path / name, text), workflow_id=name)


def serving(site: Site) -> Daemon:
    """An in-process daemon that ends runs as ``serve()`` does (deferred kills)."""
    d = Daemon(site)
    d.start()
    d.runner.defer_kills = True
    return d


def stubborn_running(d: Daemon) -> tuple[Any, int, float]:
    """Tick ``d`` until its stubborn run ignores TERM on the host: the run, the PID of
    its step's shell and that process's start time (clock ticks)."""
    tick_until(d, lambda: bool(d.runner.launched()))
    (run,) = d.runner.launched()
    written = Path((run.handle or {})["remote_dir"]) / "stubborn.pid"
    deadline = time.monotonic() + 20
    while not (written.exists() and written.read_text().endswith("\n")):
        assert time.monotonic() < deadline, "the stubborn step never started"
        time.sleep(0.02)
    pid = int(written.read_text())
    seen = state_of(pid)
    assert seen is not None
    return run, pid, seen[1]


def gone(pid: int, start: float) -> bool:
    """Whether the process that began at ``start`` no longer runs as ``pid`` (a zombie
    has ended: reparented to pid 1, which may never reap it)."""
    seen = state_of(pid)
    return seen is None or seen[1] != start or seen[0] == "Z"


def until_ending(d: Daemon, run: Any, timeout: float = 20) -> None:
    """Tick ``d`` until ``run`` is being ended (TERM sent, not yet recorded); fails at
    once when it was recorded instead (the old cancel, which waited the grace out)."""
    deadline = time.monotonic() + timeout
    while run.id not in d.runner.ending:
        assert run.id in d.runner.active, "the run was recorded at once, not being ended"
        assert time.monotonic() < deadline, "the run was never being ended"
        d.tick()
        time.sleep(0.02)


@pytest.mark.parametrize("how", ["cancel", "time limit"])
def test_an_ssh_run_that_ignores_term_holds_up_no_other_run(
    ssh: SshEnv, tmp_path: Path, how: str
) -> None:
    """A run dropped while the stubborn one is being ended runs on the same host and
    ends first; the stubborn one is recorded once its KILL has ended it (no exit marker:
    its TERM never ended it), its processes on the host gone, its cancel's claim settled
    only then."""
    site = ssh_site(tmp_path / "site", ssh)
    install(
        site, tmp_path, "stubborn", ("timeLimit: 1\n" if how == "time limit" else "") + STUBBORN
    )
    install(site, tmp_path, "quick", QUICK)
    drop(site, "s.yaml", {"workflow": "stubborn"})
    d = serving(site)
    pgid = 0
    dropped: list[str] = []
    try:
        run, pid, start = stubborn_running(d)
        pgid = int(run.handle["pgid"])
        if how == "cancel":
            api.request_cancel(site, run.id, "enough")

        def drop_while_ending(daemon: Daemon) -> None:
            if run.id in daemon.runner.ending and not dropped:
                dropped.append("t")
                drop(site, "t.yaml", {"workflow": "quick"})

        run_until_idle(site, daemon=d, timeout=30, each_tick=drop_while_ending)
        ended = gone(pid, start) and not group_members(pgid)
    finally:
        d.stop()
        kill_groups(pgid)
    assert dropped, "the stubborn run was never being ended while the daemon went on"
    stubborn = api.show_run(site, run.id)
    want = ("CANCELED", ["enough"]) if how == "cancel" else ("ERROR", ["time limit exceeded"])
    assert (stubborn["state"], stubborn["messages"]) == want
    (quick,) = [r for r in api.list_runs(site) if r["workflow"] == "quick"]
    assert quick["state"] == "SUCCESS" and quick["finished_at"] < stubborn["finished_at"]
    assert ended, "the stubborn run's processes outlived its recorded end"
    assert read_markers(Path(stubborn["run_dir"])).exit is None  # KILLed, not TERMed
    assert list(site.layout.claimed.iterdir()) == []  # the cancel's claim, once it ended


def test_a_daemon_stopping_while_it_ends_an_ssh_run_records_that_end(
    ssh: SshEnv, tmp_path: Path
) -> None:
    """A stop in the grace of a cancel: what is left of the run on the host is KILLed
    and the run recorded CANCELED by this daemon, its cancel's claim settled; not left
    to the next daemon, which would take the KILL for the run's own end."""
    site = ssh_site(tmp_path / "site", ssh)
    install(site, tmp_path, "stubborn", STUBBORN)
    drop(site, "s.yaml", {"workflow": "stubborn"})
    d = serving(site)
    pgid = 0
    try:
        run, pid, start = stubborn_running(d)
        pgid = int(run.handle["pgid"])
        api.request_cancel(site, run.id, "enough")
        until_ending(d, run)
        assert not gone(pid, start)  # TERM ignored: still there when the stop comes
        begin = time.monotonic()
        d.stop()
        took = time.monotonic() - begin
        ended = gone(pid, start) and not group_members(pgid)
    finally:
        d.stop()
        kill_groups(pgid)
    shown = api.show_run(site, run.id)
    assert (shown["state"], shown["messages"]) == ("CANCELED", ["enough"])
    assert ended, "the run's processes outlived its recorded end"
    assert took < 2.5  # its KILL at once, not the rest of the grace
    assert list(site.layout.claimed.iterdir()) == []


def test_a_stop_while_ending_an_ssh_run_on_a_host_gone_records_the_run(
    ssh: SshEnv, tmp_path: Path
) -> None:
    """A stop in the grace of a cancel while the host no longer answers: the KILL cannot
    be sent, so the group is abandoned (noted under ``ssh-abandoned/``, for the next
    daemon to end) and the run recorded CANCELED by this daemon, not left RUNNING."""
    site = ssh_site(tmp_path / "site", ssh)
    install(site, tmp_path, "stubborn", STUBBORN)
    drop(site, "s.yaml", {"workflow": "stubborn"})
    d = serving(site)
    pgid = 0
    kept = ""
    try:
        run, pid, start = stubborn_running(d)
        pgid = int(run.handle["pgid"])
        kept = run.handle["remote_dir"]
        api.request_cancel(site, run.id, "enough")
        until_ending(d, run)
        ssh.servers["a"].stop()
        d.stop()
        shown = api.show_run(site, run.id)
        assert shown["state"] == "CANCELED" and shown["messages"][0] == "enough", shown
        assert not gone(pid, start)  # the host could not be asked
        assert len(list((site.root / "ssh-abandoned" / "a").glob("*.json"))) == 1
    finally:
        d.stop()
        ssh.ensure_running()
        kill_groups(pgid)
        if kept:
            shutil.rmtree(kept, ignore_errors=True)


def test_a_host_gone_between_term_and_kill_abandons_the_run(
    ssh: SshEnv, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The host stops answering after the TERM: the KILL cannot be sent. Nothing raises
    out of the daemon's tick; the run is recorded CANCELED all the same (one grace after
    the KILL was due), its process group abandoned as a cancel on a host away has it
    (noted under ``ssh-abandoned/``), and ended once the host answers again, without the
    tick waiting for it."""
    site = ssh_site(tmp_path / "site", ssh)
    install(site, tmp_path, "stubborn", STUBBORN)
    drop(site, "s.yaml", {"workflow": "stubborn"})
    notes = site.root / "ssh-abandoned" / "a"
    d = serving(site)
    pgid = 0
    kept = ""
    caplog.set_level(logging.WARNING)
    try:
        run, pid, start = stubborn_running(d)
        pgid = int(run.handle["pgid"])
        kept = run.handle["remote_dir"]  # kept: the host was away at the run's end
        api.request_cancel(site, run.id, "enough")
        until_ending(d, run)
        ssh.servers["a"].stop()  # the listener and the live connection
        tick_until(d, lambda: run.id not in d.runner.active, timeout=20)
        shown = api.show_run(site, run.id)
        assert (shown["state"], shown["messages"][0]) == ("CANCELED", "enough"), shown
        assert any("its remote folder is kept" in m for m in shown["messages"])
        assert not gone(pid, start)  # the host could not be asked: still going there
        noted = [p.name for p in notes.glob("*.json")]
        assert len(noted) == 1 and noted[0].startswith(f"{run.handle['pid']}-"), noted
        ssh.servers["a"].start()  # same address and port
        tick_until(d, lambda: not list(notes.glob("*.json")), timeout=30)
        # the tick that sent the end did not wait out the grace on the host (a group
        # that ignores TERM held the whole tick 3 s, group after group): the KILL comes
        # from the host a grace later
        assert not gone(pid, start)
        tick_until(d, lambda: gone(pid, start) and not group_members(pgid), timeout=30)
    finally:
        d.stop()
        ssh.ensure_running()
        kill_groups(pgid)
        if kept:  # not left to the tests that list the session's remote roots
            shutil.rmtree(kept, ignore_errors=True)
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert tracebacks == [], [r.getMessage() for r in tracebacks]
