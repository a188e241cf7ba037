"""A SIGINT while the daemon starts (its recovery) stops it cleanly once started: it was
a KeyboardInterrupt wherever the start stood, which Python swallows inside an import,
leaving the module's lock held; the report thread then waited on it for ever and a
SIGTERM hung the daemon (found by review)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import make_site

CODE = """
import os, signal, sys
from flowbatch.daemon import Daemon, run_daemon
from flowbatch.logs import setup_logging
from flowbatch.site import Site

real = Daemon.start
def start(self, *a, **k):
    os.kill(os.getpid(), signal.SIGINT)  # in the middle of the start
    return real(self, *a, **k)
Daemon.start = start
setup_logging()
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
run_daemon(Site(sys.argv[1]))
print("stopped cleanly")
"""


def test_a_sigint_during_the_start_stops_the_daemon_cleanly(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site")
    site.close()
    done = subprocess.run(
        [sys.executable, "-c", CODE, str(site.root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "stopped cleanly" in done.stdout
    assert "signal 2: finishing this tick" in done.stderr and "Traceback" not in done.stderr
