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

import pytest

from flowbatch import api
from flowbatch.daemon import Daemon
from flowbatch.runs import State

from .conftest import drop, make_site, serving, write_template


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
            deadline = time.monotonic() + 60
            while (
                not site.lock_path.exists()
                or f'"pid": {other.pid}' not in site.lock_path.read_text()
            ):
                assert other.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
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
            deadline = time.monotonic() + 60
            while (
                not site.lock_path.exists()
                or f'"pid": {other.pid}' not in site.lock_path.read_text()
            ):
                assert other.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
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
