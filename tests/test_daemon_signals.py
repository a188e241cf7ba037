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


WEDGE = """
import os, signal, sys, threading
from flowbatch.daemon import Daemon
from flowbatch.site import Site

daemon = Daemon(Site(sys.argv[1]))
daemon._install_signals()
for signum in (signal.SIGHUP, signal.SIGTERM):
    # where Event.clear() and wait() hold the event's lock on the main thread
    with daemon.wakeup._cond:
        os.kill(os.getpid(), signum)
        x = 1  # the handler runs here
    assert daemon.wakeup.wait(10), "the handler's wake-up never came"
    daemon.wakeup.clear()
assert daemon.reload_requested and daemon.stopping
daemon.stop()
# after the stop the handlers found are back: nothing of the daemon's runs on a signal
assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
print("woken, not wedged")
"""


def test_a_signal_inside_the_wake_up_events_lock_neither_hangs_nor_is_lost(
    tmp_path: Path,
) -> None:
    """Found by review: the handlers set the wake-up event themselves; a SIGTERM or SIGHUP
    that came while the main thread held the event's lock (in its clear() or wait())
    waited for that lock for ever, and the daemon did nothing again."""
    site = make_site(tmp_path / "site")
    site.close()
    done = subprocess.run(
        [sys.executable, "-c", WEDGE, str(site.root)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and "woken, not wedged" in done.stdout, done.stderr


def test_each_daemon_run_leaves_no_signal_thread_behind(tmp_path: Path) -> None:
    """Found by the re-review: the handlers were installed twice a run (run_daemon, then
    serve), each time with a thread and a pipe of its own, and the first was never
    closed; a daemon that found another serving kept its own too."""
    code = """
import os, sys, threading
from flowbatch.daemon import run_daemon
from flowbatch.site import Site

site = Site(sys.argv[1])
run_daemon(site, until_idle=True)
fds = len(os.listdir("/proc/self/fd"))  # the site's index files open from here on
for _ in range(3):
    run_daemon(site, until_idle=True)
print(sum(t.name == "flowbatch-signals" for t in threading.enumerate()))
print(len(os.listdir("/proc/self/fd")) - fds)
"""
    site = make_site(tmp_path / "site")
    site.close()
    done = subprocess.run(
        [sys.executable, "-c", code, str(site.root)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    threads, fds = done.stdout.split()
    assert threads == "0"
    assert fds == "0", done.stdout


def test_a_daemon_puts_back_the_signal_handlers_it_found(tmp_path: Path) -> None:
    """A process that served a daemon and goes on (a test suite, a Python caller) kept
    the daemon's handlers: Ctrl-C no longer stopped it (found while stopping a test run)."""
    code = """
import signal, sys
from flowbatch.daemon import run_daemon
from flowbatch.site import Site

before = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)]
run_daemon(Site(sys.argv[1]), until_idle=True)
after = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)]
print(after == before)
try:
    signal.raise_signal(signal.SIGINT)
except KeyboardInterrupt:
    print("interrupted")
"""
    site = make_site(tmp_path / "site")
    site.close()
    done = subprocess.run(
        [sys.executable, "-c", code, str(site.root)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "interrupted"]
