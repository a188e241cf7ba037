"""A full disk under a serving daemon (a real tmpfs, filled to the last byte): the runs it
launched or ended meanwhile are recorded once space comes back, by the same daemon, and
none runs twice. Found by review: a run launched on a full disk stayed PENDING for ever
(and ran a second time after a restart), one that ended stayed RUNNING until a restart,
and the index lost the rows of the tick whose commit failed."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowbatch import api
from flowbatch.daemon import Daemon
from flowbatch.queue import Intake
from flowbatch.site import Site

from .conftest import drop, make_site, write_template

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs")

TEMPLATE = """
workflow:
  steps:
    - action:
        commands:
          - echo ran >> {log}
          - >-
            printf '{{"score": 1}}' > r.json
results:
  file: r.json
  schema: [{{name: score, label: Score, dtype: float}}]
"""


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """A file that takes every byte left on the file system."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 16, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def state_on_disk(site: Site, run_id: str) -> str:
    path = site.layout.run_dir("wf", run_id) / "run.json"
    return str(json.loads(path.read_text())["state"])


def test_runs_launched_and_ended_on_a_full_disk_are_recorded_once_it_has_room(
    small_fs: Path, tmp_path: Path
) -> None:
    executions = tmp_path / "executions.log"  # outside the full file system
    site = make_site(small_fs / "site")
    api.install(
        site, write_template(tmp_path / "t", TEMPLATE.format(log=executions)), workflow_id="wf"
    )
    drop(site, "r.yaml", {"workflow": "wf"})
    (run,) = Intake(site).run_once().runs  # made while there is room
    site.close()
    site = Site(site.root)
    daemon = Daemon(site)
    daemon.start()
    filler = fill(small_fs)
    try:
        deadline = time.monotonic() + 30
        while not executions.exists() or site.store.unwritten.get(run.id) is None:
            daemon.tick()  # launches it: its RUNNING cannot be written
            assert time.monotonic() < deadline, "the run was never launched"
            time.sleep(0.1)
        launched = site.store.unwritten[run.id]
        assert launched.state.value in ("RUNNING", "SUCCESS", "ERROR")
        assert state_on_disk(site, run.id) == "PENDING"
        for _ in range(20):  # polled all the same; never launched again
            daemon.tick()
            time.sleep(0.05)
        assert site.store.unwritten[run.id].state.value in ("SUCCESS", "ERROR")
        assert not daemon.idle()  # a write is owed: --until-idle would not stop here
    finally:
        filler.unlink()
    deadline = time.monotonic() + 30
    while not daemon.idle():
        daemon.tick()
        assert time.monotonic() < deadline, "the owed writes were never made"
        time.sleep(0.05)
    daemon.stop()
    ended = state_on_disk(site, run.id)
    assert ended in ("SUCCESS", "ERROR")
    (row,) = api.list_runs(site)
    assert row["state"] == ended  # the index caught up too
    assert executions.read_text().count("ran") == 1
    # a restart finds it ended: nothing runs again
    again = Daemon(Site(site.root))
    again.start()
    again.tick()
    again.stop()
    assert executions.read_text().count("ran") == 1
    site.close()
