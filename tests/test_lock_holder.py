"""Who holds the site's daemon lock, as a second daemon or `flowbatch status` says it: the
process the kernel says holds it, not the record an earlier holder left in the file.

The holder writes its record only after it has taken the lock: a daemon that looked in
between (two daemons started at once) read the record of the daemon before, long gone,
and named it (found once in 16 starts of two daemons at once)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flowbatch.daemon import lock_holder, run_daemon
from flowbatch.site import Site

from .conftest import make_site


@contextmanager
def locked_unrecorded(path: Path) -> Iterator[subprocess.Popen[str]]:
    """A process that holds the lock file ``path`` and has not written its record yet
    (a daemon between its flock and its write), until the block ends."""
    script = (
        "import fcntl, sys\n"
        f"fh = open({str(path)!r}, 'a+')\n"
        "fcntl.flock(fh, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def _earlier_record(site: Site) -> int:
    """The record a daemon that has stopped left in the lock file; returns its pid (a
    process that has ended)."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    record = {"host": site.host, "pid": gone.pid, "started_at": "2026-01-01T00:00:00Z"}
    site.lock_path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    return gone.pid


def test_a_daemon_starting_beside_another_names_the_holder_not_the_last_record(
    tmp_path: Path,
) -> None:
    site = make_site(tmp_path / "site")
    gone = _earlier_record(site)
    with locked_unrecorded(site.lock_path) as holder:
        message = run_daemon(site, once=True)
        assert message is not None
        said = json.loads(message.split(": ", 1)[1])
        assert said["pid"] == holder.pid != gone, message
        # only what is known: a process holds the lock; what it is, it has not said yet
        assert message.startswith(f"another process holds the daemon lock of {site.root}: ")
        assert said["record"] == "not written yet"
        # `flowbatch status` and `doctor` read it the same way
        seen = lock_holder(site)
        assert seen is not None and seen["pid"] == holder.pid
    site.close()


def test_a_holder_that_wrote_its_record_is_named_by_it(tmp_path: Path) -> None:
    from .conftest import lock_held

    site = make_site(tmp_path / "site")
    _earlier_record(site)
    with lock_held(site.lock_path, started_at="now") as holder:
        message = run_daemon(site, once=True)
        assert message is not None
        assert message.startswith(f"another flowbatch daemon already serves {site.root}: ")
        said = json.loads(message.split(": ", 1)[1])
        assert said == {"host": "h", "pid": holder.pid, "started_at": "now"}
    site.close()
