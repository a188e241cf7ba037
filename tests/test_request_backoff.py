"""A request whose runs cannot be made where they belong while the site as a whole has
room (its workflow's results on a read-only mount, or on a full file system of their
own; a quota of its owner's) waits its turn: tried again after one polling interval,
the wait doubling up to a few minutes, logged when it starts to wait and when it goes
through, while the other requests flow. Found by review: it was tried, and logged, at
every tick for as long as the fault lasted. Real mounts (root): unmounted at the end."""

from __future__ import annotations

import errno
import itertools
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from flowbatch import api, queue
from flowbatch.daemon import Daemon
from flowbatch.queue import Claimed, _place_fix
from flowbatch.site import Site

from .conftest import SCORE_TEMPLATE, drop, make_site, write_template
from .test_disk_full import fill

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts file systems")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


@contextmanager
def faulty(runs: Path, fault: str) -> Iterator[Callable[[], None]]:
    """``runs`` (one workflow's run folders) on a mount of its own that cannot take a
    run: read-only, or full. Yields what mends it; unmounted at the end."""
    if fault == "read-only":
        _mount("--bind", str(runs), str(runs))
    else:
        _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(runs))
    try:
        if fault == "read-only":
            _mount("-o", "remount,bind,ro", str(runs))
            yield lambda: _mount("-o", "remount,bind,rw", str(runs))
        else:
            filler = fill(runs)
            yield filler.unlink
    finally:
        subprocess.run(["umount", "-l", str(runs)], check=False)


def _about(caplog: pytest.LogCaptureFixture, name: str, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= level and r.getMessage().startswith(name)
    ]


def _states(site: Site) -> dict[str, str]:
    return {run["request"]: run["state"] for run in api.list_runs(site)}


def _tick_until(daemon: Daemon, done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not done():
        assert time.monotonic() < deadline, what
        daemon.tick()
        daemon.wakeup.wait(0.05)


def _two_workflows(tmp_path: Path) -> tuple[Site, Path]:
    """A site with the workflows ``wf`` and ``other``, and ``wf``'s run folders' folder."""
    site = make_site(tmp_path / "site")
    for workflow in ("wf", "other"):
        template = write_template(tmp_path / workflow, SCORE_TEMPLATE)
        api.install(site, template, workflow_id=workflow)
    runs = site.layout.runs_dir("wf")
    runs.mkdir(parents=True, exist_ok=True)
    return site, runs


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_a_request_whose_place_fails_waits_its_turn_while_the_others_flow(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    site, runs = _two_workflows(tmp_path)
    interval = site.config.polling.interval
    with faulty(runs, fault) as mend:
        drop(site, "stuck.yaml", {"workflow": "wf", "arguments": {"score": 1}})
        daemon = Daemon(site)
        daemon.start()
        clock = daemon.intake.clock = Clock()
        try:
            with caplog.at_level(logging.DEBUG, logger="flowbatch.queue"):
                # the clock stands still: tried once in 20 ticks; the others flow
                for tick in range(20):
                    if tick == 5:
                        drop(site, "flows.yaml", {"workflow": "other", "arguments": {"score": 2}})
                    daemon.tick()
                tried = _about(caplog, "stuck.yaml", logging.DEBUG)
                assert len(tried) == 1, tried
                (said,) = _about(caplog, "stuck.yaml", logging.WARNING)
                assert "though the site has room" in said and str(runs) in said, said
                why = "read-only" if fault == "read-only" else "full"
                assert why in said and "tried again in" in said, said
                _tick_until(
                    daemon, lambda: _states(site).get("flows.yaml") == "SUCCESS", "never ran"
                )
                assert "stuck.yaml" not in _states(site)
                # the clock goes on, a polling interval a tick: tried again less and less
                # often, each try at debug level only
                tries = []
                for _ in range(400):
                    before = len(caplog.records)
                    daemon.tick()
                    if any("stuck.yaml" in r.getMessage() for r in caplog.records[before:]):
                        tries.append(clock.now)
                    clock.now += interval
                gaps = [round(b - a, 6) for a, b in itertools.pairwise(tries)]
                assert gaps[:4] == [round(interval * 2**n, 6) for n in (1, 2, 3, 4)], gaps
                assert gaps == sorted(gaps) and len(tries) < 12, gaps
                assert len(_about(caplog, "stuck.yaml", logging.WARNING)) == 1
                assert (site.layout.queue / "rejected" / "stuck.yaml").exists() is False
                # an hour on, still failing: a reminder, once
                clock.now += queue.CLAIM_REMIND_EVERY
                for _ in range(3):
                    daemon.tick()
                    clock.now += queue.REQUEST_RETRY_MAX
                warned = _about(caplog, "stuck.yaml", logging.WARNING)
                assert len(warned) == 2 and "still waits" in warned[1], warned
                # mended: taken in at its next turn (a few minutes at most), said once
                mend()
                clock.now += queue.REQUEST_RETRY_MAX
                _tick_until(
                    daemon, lambda: _states(site).get("stuck.yaml") == "SUCCESS", "never made"
                )
            through = _about(caplog, "stuck.yaml", logging.INFO)
            assert len(through) == 3, through  # the warning, the reminder, then this
            assert "made its 1 run(s) at last" in through[2], through
        finally:
            daemon.stop()
    site.close()


def test_a_quota_is_named_with_the_owner_whose_space_it_is(tmp_path: Path) -> None:
    """No quota on this machine's file systems (tmpfs has none here): the words for
    EDQUOT, beside the real faults above."""
    folder = tmp_path / "runs"
    folder.mkdir()
    exc = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), str(folder / ".abc.tmp"))
    fix = _place_fix(exc, Claimed(folder / "x", "abc", "r.yaml", 65534))
    assert f"quota is exceeded on {folder} (of nobody" in fix and "quota -u nobody" in fix


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_until_idle_ends_when_only_requests_whose_place_fails_are_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """`daemon --until-idle` with a request whose place keeps failing: it ticked forever
    (found by review; the request was never idle, only waiting its turn). Now, once
    nothing else is left to do for ``UNINDEXED_PATIENCE`` seconds, the process ends with
    exit status 1, naming the request, the fault and what mends it; the other requests
    were done first, and the one left stays claimed: the next start makes its runs."""
    site, runs = _two_workflows(tmp_path)
    site.close()
    # a real process, as cron or a user runs it; one second of patience
    patience = tmp_path / "patience.py"
    patience.write_text(
        "import sys\n"
        "from flowbatch.cli import main\n"
        "from flowbatch.daemon import Daemon\n"
        "Daemon.UNINDEXED_PATIENCE = 1.0\n"
        "sys.exit(main())\n",
        encoding="utf-8",
    )
    command = [sys.executable, str(patience), "--site", str(site.root), "daemon", "--until-idle"]
    with faulty(runs, fault) as mend:
        drop(site, "stuck.yaml", {"workflow": "wf", "arguments": {"score": 1}})
        drop(site, "flows.yaml", {"workflow": "other", "arguments": {"score": 2}})
        ended = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert ended.returncode == 1, (ended.returncode, ended.stdout, ended.stderr)
        said = ended.stdout + ended.stderr
        assert "the runs of 1 request(s) cannot be made where they belong: stuck.yaml" in said
        why = "read-only" if fault == "read-only" else "full"
        assert f"{why}" in said and str(runs) in said and "next start" in said, said
        assert "nothing else left to do" in said, said
        again = Site(site.root)
        assert _states(again) == {"flows.yaml": "SUCCESS"}
        claimed = [p.name for p in again.claimed_dir.iterdir()]
        assert len(claimed) == 1 and claimed[0].endswith("--stuck.yaml"), claimed
        again.close()
        mend()
        ended = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert ended.returncode == 0, (ended.stdout, ended.stderr)
    again = Site(site.root)
    assert _states(again) == {"flows.yaml": "SUCCESS", "stuck.yaml": "SUCCESS"}
    again.close()
