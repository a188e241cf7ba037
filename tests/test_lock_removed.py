"""The daemon lock file removed (it looks like a stale pid file) or replaced under a
serving daemon: the daemon locks it again at its next tick, or stops when another daemon
took the new one; one daemon serves the site (found by review: with the file removed a
second daemon started, and runs were made and run twice)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from flowbatch import api
from flowbatch.daemon import Daemon
from flowbatch.runs import State

from .conftest import drop, lock_held, make_site, serving, write_template


def test_a_removed_lock_is_taken_again_at_the_next_tick(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    site = make_site(tmp_path / "site")
    daemon = Daemon(site)
    daemon.start()
    try:
        site.lock_path.unlink()
        with caplog.at_level(logging.WARNING, logger="flowbatch.daemon"):
            daemon.tick()
        assert not daemon.stopping
        assert json.loads(site.lock_path.read_text())["pid"] == os.getpid()
        assert any("locked again" in r.getMessage() for r in caplog.records)
        # a second daemon finds it held
        other = subprocess.run(
            [sys.executable, "-m", "flowbatch", "--site", str(site.root), "daemon", "--once"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert other.returncode == 0 and "another flowbatch daemon" in other.stdout
    finally:
        daemon.stop()
        site.close()


def test_a_daemon_whose_lock_another_took_stops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    site = make_site(tmp_path / "site")
    daemon = Daemon(site)
    daemon.start()
    try:
        site.lock_path.unlink()
        with serving(site.root) as other:
            held_by(site, other.pid)
            with caplog.at_level(logging.ERROR, logger="flowbatch.daemon"):
                daemon.tick()
            assert daemon.stopping
            assert any("another daemon holds the new one" in r.getMessage() for r in caplog.records)
            assert json.loads(site.lock_path.read_text())["pid"] == other.pid
    finally:
        daemon.stop()
        site.close()


SLEEP = """
workflow:
  steps:
    - name: nap
      action:
        commands: ["sleep 2"]
"""


def test_runs_a_daemon_launched_after_it_lost_its_lock_are_taken_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The window that stays: a daemon launches a run between another daemon's start
    (which read the tree for active runs) and its own next look at the lock. It stops
    at that look and leaves word (``daemon.handover``); the daemon holding the lock now
    reads the tree again and ends the run. Without the word the run stayed RUNNING until
    that daemon restarted."""
    site = make_site(tmp_path / "site")
    api.install(site, write_template(tmp_path / "sleep", SLEEP), workflow_id="sleep")
    daemon = Daemon(site)
    daemon.start()
    try:
        site.lock_path.unlink()
        with serving(site.root) as other:
            held_by(site, other.pid)
            deadline = time.monotonic() + 60
            # the other daemon serves (past its start, which read the tree): its run ends
            drop(site, "probe.yaml", {"workflow": "sleep"})
            while not any(r["state"] == "SUCCESS" for r in api.list_runs(site)):
                assert other.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
            # this one has not looked at the lock yet, and takes a request in; the other
            # is held still meanwhile, or it could take the request first
            os.kill(other.pid, signal.SIGSTOP)
            try:
                drop(site, "late.yaml", {"workflow": "sleep"})
                lost = daemon.lock.lost
                daemon.lock.lost = lambda: False  # type: ignore[method-assign]
                daemon.tick()
                daemon.lock.lost = lost  # type: ignore[method-assign]
            finally:
                os.kill(other.pid, signal.SIGCONT)
            [late] = [run for run in daemon.runner.active.values() if run.request == "late.yaml"]
            assert late.state == State.RUNNING
            with caplog.at_level(logging.WARNING, logger="flowbatch.daemon"):
                daemon.tick()
            assert daemon.stopping
            daemon.stop()
            assert any("left to the daemon" in r.getMessage() for r in caplog.records)
            run_json = site.store.run_dir(late) / "run.json"
            while json.loads(run_json.read_text())["state"] != "SUCCESS":
                assert other.poll() is None and time.monotonic() < deadline, run_json.read_text()
                time.sleep(0.1)
            assert not site.handover_path.exists()  # taken
    finally:
        daemon.stop()
        site.close()


COUNTED = """
workflow:
  steps:
    - name: nap
      action:
        commands:
          - echo "$$FLOWBATCH_RUN_ID" >> {log}
          - sleep 1
"""


def counted_site(tmp_path: Path) -> tuple[Any, Path]:
    """A site of one local slot whose runs each log their id once they start."""
    site = make_site(tmp_path / "site", {"local": {"concurrency": 1}})
    log = tmp_path / "started.log"
    log.touch()
    api.install(site, write_template(tmp_path / "t", COUNTED.format(log=log)), workflow_id="sleep")
    return site, log


def held_by(site: Any, pid: int) -> None:
    deadline = time.monotonic() + 60
    while not site.lock_path.exists() or f'"pid": {pid}' not in site.lock_path.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_waiting_run_the_old_daemon_launched_is_not_launched_again(tmp_path: Path) -> None:
    """The new daemon read run b from the tree as waiting; the old one launched it in its
    last moment (here: a look at the lock it did not make). The new one takes it over as
    launched and never launches it again (found by review: it ran twice)."""
    site, started = counted_site(tmp_path)
    old = Daemon(site)
    old.start()
    try:
        drop(site, "a.yaml", {"workflow": "sleep"})
        drop(site, "b.yaml", {"workflow": "sleep"})
        old.tick()  # a runs, b waits for the one slot
        site.lock_path.unlink()
        with serving(site.root) as new:
            held_by(site, new.pid)
            time.sleep(0.5)  # past its start: b is waiting in its memory
            os.kill(new.pid, signal.SIGSTOP)
            try:
                lost = old.lock.lost
                old.lock.lost = lambda: False  # type: ignore[method-assign]
                deadline = time.monotonic() + 30
                while not any(
                    r.request == "b.yaml" and r.state == State.RUNNING
                    for r in old.runner.active.values()
                ):
                    assert time.monotonic() < deadline
                    old.tick()
                    time.sleep(0.05)
                old.lock.lost = lost  # type: ignore[method-assign]
            finally:
                os.kill(new.pid, signal.SIGCONT)
            old.tick()  # it looks at the lock now: stops
            assert old.stopping
            old.stop()
            deadline = time.monotonic() + 60
            while sorted(r["state"] for r in api.list_runs(site)) != ["SUCCESS", "SUCCESS"]:
                assert new.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        ids = started.read_text().split()
        assert len(ids) == 2 and len(set(ids)) == 2, ids  # each run started once
    finally:
        old.stop()
        site.close()


def test_the_late_run_of_an_old_daemon_killed_is_taken_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old daemon launched a run in its last moment (here: a look at the lock it did
    not make) and was killed, leaving no word: a daemon that made the lock file at its
    start reads the tree again a little later (found by review: the run stayed RUNNING
    until that daemon restarted)."""
    from flowbatch import daemon as daemon_mod

    monkeypatch.setattr(daemon_mod, "RESCAN_AFTER", 0.5)
    site, started = counted_site(tmp_path)
    old = Daemon(site)
    old.start()
    new = Daemon(site)
    try:
        site.lock_path.unlink()
        new.start()  # reads the tree: nothing of the run to come
        assert new.lock.made
        drop(site, "late.yaml", {"workflow": "sleep"})
        old.lock.lost = lambda: False  # type: ignore[method-assign]
        old.tick()  # takes the request in, launches its run; then killed: never again
        assert any(r.state == State.RUNNING for r in old.runner.active.values())
        deadline = time.monotonic() + 60
        while [r["state"] for r in api.list_runs(site)] != ["SUCCESS"]:
            assert time.monotonic() < deadline, api.list_runs(site)
            new.tick()
            time.sleep(0.1)
        assert len(started.read_text().split()) == 1
    finally:
        new.stop()
        old.stop()  # its threads, after the fact
        site.close()


def test_a_cancel_applied_while_the_lock_was_away_is_kept(tmp_path: Path) -> None:
    """`runs cancel` found no daemon at the lock (it was removed) and cancelled a run the
    daemon held as waiting; the daemon locks the file again and reads the tree before it
    launches anything (found by review: it launched the cancelled run, which could end
    SUCCESS with no trace of the cancel)."""
    site, started = counted_site(tmp_path)
    daemon = Daemon(site)
    daemon.start()
    try:
        drop(site, "a.yaml", {"workflow": "sleep"})
        drop(site, "b.yaml", {"workflow": "sleep"})
        daemon.tick()
        [b] = [r for r in daemon.runner.active.values() if r.request == "b.yaml"]
        assert b.state == State.PENDING
        site.lock_path.unlink()
        out = subprocess.run(
            [sys.executable, "-m", "flowbatch", "--site", str(site.root), "runs", "cancel", b.id],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0 and f"{b.id}: CANCELED" in out.stdout, out
        deadline = time.monotonic() + 60
        while daemon.runner.active:
            assert time.monotonic() < deadline
            daemon.tick()
            time.sleep(0.05)
        assert site.store.load(b.id).state == State.CANCELED
        assert b.id not in started.read_text()
    finally:
        daemon.stop()
        site.close()


def test_a_daemon_starting_waits_for_a_cancel_that_holds_the_lock(tmp_path: Path) -> None:
    """It said "another flowbatch daemon already serves" and exited 0 while a `runs
    cancel` applied itself; the cancel then ended and nothing served the site (found by
    review)."""
    site = make_site(tmp_path / "site")
    try:
        with lock_held(site.lock_path, 1.5, role="cancel"):
            began = time.monotonic()
            out = subprocess.run(
                [sys.executable, "-m", "flowbatch", "--site", str(site.root), "daemon", "--once"],
                capture_output=True,
                text=True,
                timeout=120,
            )
        assert out.returncode == 0, out
        assert "another flowbatch daemon" not in out.stdout
        assert time.monotonic() - began > 0.5  # it waited for the cancel's lock
    finally:
        site.close()


def test_a_daemon_whose_lock_another_took_exits_1(tmp_path: Path) -> None:
    """A failure, so that the service manager starts it again (Restart=on-failure): the
    holder may be a command that ends in a moment (found by review: exit 0, and the site
    was left unserved)."""
    site = make_site(tmp_path / "site")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowbatch", "--site", str(site.root), "daemon"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    other = Daemon(site)
    try:
        held_by(site, proc.pid)
        site.lock_path.unlink()
        other.start()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, (out, err)
        assert "another process took the new one" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        other.stop()
        site.close()
