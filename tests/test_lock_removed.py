"""The daemon lock file removed (it looks like a stale pid file) or replaced under a
serving daemon: the daemon locks it again at its next tick, or stops when another daemon
took the new one; one daemon serves the site (found by review: with the file removed a
second daemon started, and runs were made and run twice)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowbatch.daemon import Daemon

from .conftest import make_site, serving


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
