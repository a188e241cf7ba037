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
from flowbatch.site import Site
from flowbatch.store.store import ROOM_EVERY

from .conftest import drop, make_site, write_template

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs")

TEMPLATE = """
workflow:
  steps:
    - action:
        commands:
          - echo ran $$FB_n >> {log}; sleep 1
          - >-
            printf '{{"score": 1}}' > r.json
parameters:
  - {{name: n, dtype: int}}
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


def test_runs_ended_on_a_full_disk_are_recorded_and_none_launched_until_it_has_room(
    small_fs: Path, tmp_path: Path
) -> None:
    executions = tmp_path / "executions.log"  # outside the full file system
    site = make_site(small_fs / "site")
    template = TEMPLATE.format(log=executions)
    api.install(site, write_template(tmp_path / "t", template), workflow_id="wf")
    drop(site, "a.yaml", {"workflow": "wf", "arguments": {"n": 1}})
    daemon = Daemon(site)
    daemon.start()
    deadline = time.monotonic() + 30
    while not executions.exists():  # the first run runs
        daemon.tick()
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.05)
    (first,) = api.list_runs(site)
    drop(site, "b.yaml", {"workflow": "wf", "arguments": {"n": 2}})
    filler = fill(small_fs)
    try:
        deadline = time.monotonic() + 30
        while first["id"] not in site.store.unwritten:  # it ends: its end cannot be written
            daemon.tick()
            assert time.monotonic() < deadline, "the first run's end was never noted"
            time.sleep(0.05)
        assert site.store.unwritten[first["id"]].state.value in ("SUCCESS", "ERROR")
        assert state_on_disk(site, first["id"]) == "RUNNING"
        # a cancel of the run applies to its record in memory: it has ended
        assert site.store.load(first["id"]).state.value in ("SUCCESS", "ERROR")
        for _ in range(20):  # no room: the second request waits, nothing is launched
            daemon.tick()
            time.sleep(0.05)
        # never rejected for the full disk (it may have been claimed before the daemon
        # saw the disk full: it stays claimed, made later)
        assert not (site.layout.rejected / "b.yaml").exists()
        assert executions.read_text().split() == ["ran", "1"]
        assert not daemon.idle()  # a write is owed: --until-idle would not stop here
    finally:
        filler.unlink()
    deadline = time.monotonic() + 60
    while not daemon.idle():
        daemon.tick()
        assert time.monotonic() < deadline, "the owed writes and the second run never came"
        time.sleep(0.05)
    daemon.stop()
    runs = api.list_runs(site)
    assert len(runs) == 2
    for run in runs:
        ended = state_on_disk(site, run["id"])
        assert ended in ("SUCCESS", "ERROR") and run["state"] == ended  # the index too
    assert sorted(executions.read_text().split()) == ["1", "2", "ran", "ran"]
    # a restart finds them ended: nothing runs again
    again = Daemon(Site(site.root))
    again.start()
    again.tick()
    again.stop()
    assert sorted(executions.read_text().split()) == ["1", "2", "ran", "ran"]
    site.close()


def test_a_failed_commit_is_logged_with_its_own_cause(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite rolls back a commit that failed for a full disk; peewee's rollback then
    fails too, and its "cannot rollback" hid the cause (found by review)."""
    import logging

    site = make_site(tmp_path / "site")
    cause = OSError("database or disk is full")
    try:
        try:
            raise cause
        except OSError:
            raise RuntimeError("cannot rollback - no transaction is active") from None
    except RuntimeError as rollback:
        rollback.__context__ = cause
        with caplog.at_level(logging.ERROR, logger="flowbatch.store"):
            site.store._batch_runs = {"r": object()}  # type: ignore[dict-item]
            site.store._batch_lost(rollback)
    assert "database or disk is full" in caplog.text and "cannot rollback" not in caplog.text
    site.store.unindexed.clear()
    site.close()


def test_runs_waiting_when_the_disk_fills_wait_for_room(small_fs: Path, tmp_path: Path) -> None:
    """Found by review: a run that ended on a full disk freed its slot, and the runs
    already waiting for it were launched there, each failing at once ("the run's script
    never started") and recorded ERROR for good. They wait for room, then run."""
    executions, gate = tmp_path / "executions.log", tmp_path / "gate"
    site = make_site(small_fs / "site", {"local": {"concurrency": 1}})
    template = TEMPLATE.format(log=executions).replace(
        "sleep 1", f"while [ ! -e {gate} ]; do sleep 0.05; done"
    )
    api.install(site, write_template(tmp_path / "t", template), workflow_id="wf")
    for n in (1, 2, 3):
        drop(site, f"r{n}.yaml", {"workflow": "wf", "arguments": {"n": n}})
    daemon = Daemon(site)
    daemon.start()
    deadline = time.monotonic() + 30
    while len(api.list_runs(site)) < 3 or not executions.exists():  # one runs, two wait
        daemon.tick()
        assert time.monotonic() < deadline, "the runs were never made"
        time.sleep(0.05)
    filler = fill(small_fs)
    time.sleep(ROOM_EVERY)  # the daemon's last look at the free space is out of date
    try:
        gate.touch()  # the first run ends, on the full disk: its slot is free
        for _ in range(40):
            daemon.tick()
            time.sleep(0.05)
        assert executions.read_text().split() == ["ran", "1"]  # nothing launched meanwhile
        waiting = {r["request"]: r["state"] for r in api.list_runs(site)}
        assert waiting["r2.yaml"] == waiting["r3.yaml"] == "PENDING", waiting
    finally:
        filler.unlink()
    deadline = time.monotonic() + 60
    while not daemon.idle():
        daemon.tick()
        assert time.monotonic() < deadline, "the waiting runs never ran"
        time.sleep(0.05)
    daemon.stop()
    assert sorted(executions.read_text().split()) == ["1", "2", "3", "ran", "ran", "ran"]
    states = {r["request"]: r["state"] for r in api.list_runs(site)}
    assert states["r2.yaml"] == states["r3.yaml"] == "SUCCESS", states
    site.close()


def test_a_start_on_a_full_disk_says_so_plainly_and_waits_for_room(
    small_fs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by review: a daemon started on a full disk, with runs the index did not
    know yet, died with "cannot rollback - no transaction is active" and a traceback;
    one whose lock file was missing died on the write of its record (OSError, no word
    of the disk), and one that got past both failed a tick 10 s later, when it read
    the tree again ("tick failed", a traceback whose hint said to start the daemon
    again). It says where the disk is full, how much is free and what to do, and waits
    for room, as a daemon that serves does; then it catches up and serves."""
    import logging

    from flowbatch.daemon import lock_holder
    from flowbatch.store.index import RunRow

    from .conftest import run_until_idle

    site = make_site(small_fs / "site")
    template = write_template(tmp_path / "t", TEMPLATE.format(log=tmp_path / "x"))
    api.install(site, template, workflow_id="wf")
    drop(site, "a.yaml", {"workflow": "wf", "arguments": {"n": 1}})
    run_until_idle(site).stop()
    RunRow.delete().execute()  # the tree has a run the index does not know (a crash)
    site.lock_path.unlink()  # and this start makes the lock file (it reads the tree again)
    drop(site, "b.yaml", {"workflow": "wf", "arguments": {"n": 2}})
    # the index held open (its -wal and -shm there, as a killed daemon leaves them)
    filler = fill(small_fs)
    again = Site(site.root)
    daemon = Daemon(again)
    try:
        with caplog.at_level(logging.INFO):
            daemon.start()
            for _ in range(5):
                daemon.tick()
            daemon._rescan_at = 0.0  # its look at the tree again, due now
            daemon.tick()
        said = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert said and not [r for r in said if r.exc_info], "a traceback"
        text = "\n".join(r.getMessage() for r in said)
        assert f"the file system of {again.root}" in text and "MiB free" in text, text
        assert "free space there (df -h" in text and "start the daemon again" not in text
        assert "the rows of 1 run(s) are written once there is room" in text, text
        assert str(again.lock_path) in text  # its record could not be written
        assert api.list_runs(again) == []  # nothing taken in meanwhile
        holder = lock_holder(again)  # named by the kernel's lock table meanwhile
        assert holder is not None and holder["pid"] == os.getpid(), holder
    finally:
        filler.unlink()
    try:
        run_until_idle(again, daemon=daemon)
        holder = lock_holder(again)  # its record written, now that there is room
        assert holder is not None and holder["pid"] == os.getpid() and "record" not in holder
    finally:
        daemon.stop()
    states = {r["request"]: r["state"] for r in api.list_runs(again)}
    assert states == {"a.yaml": "SUCCESS", "b.yaml": "SUCCESS"}, states
    again.close()
    site.close()


def test_a_start_on_a_full_disk_with_the_index_closed_says_the_disk_is_full(
    small_fs: Path, tmp_path: Path
) -> None:
    """The index closed (no -wal, -shm beside it) cannot be opened on a full disk: the
    start says the disk is full, not "disk I/O error" with a hint to `reindex`."""
    from flowbatch.errors import FlowbatchError

    site = make_site(small_fs / "site")
    site.close()
    filler = fill(small_fs)
    try:
        again = Site(site.root)
        with pytest.raises(FlowbatchError) as info:
            Daemon(again).start()
        said = info.value.summary()
        assert "full" in said and "free space" in said and "reindex" not in said, said
        again.close()
    finally:
        filler.unlink()


def test_a_read_only_results_tree_is_waited_out_like_a_full_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by review: with ``results/`` mounted read-only a serving daemon took each
    request up again at once (a core at 100%, 41,000 log lines in 10 s), and ``daemon
    --once`` as root said "run it as the site's owner (root)". A read-only file system
    has no room: nothing is taken in until it is read-write again, then every request
    becomes its runs once; the CLI names the read-only mount."""
    import logging

    from click.testing import CliRunner

    from flowbatch.cli import main

    site = make_site(tmp_path / "site")
    template = write_template(tmp_path / "t", TEMPLATE.format(log=tmp_path / "ran.log"))
    api.install(site, template, workflow_id="wf")
    results = str(site.layout.results)
    subprocess.run(["mount", "--bind", results, results], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", results], check=True)
        for i in range(5):
            drop(site, f"r{i}.yaml", {"workflow": "wf", "arguments": {"n": i}})
        d = Daemon(site)
        d.start()
        try:
            time.sleep(ROOM_EVERY)
            with caplog.at_level(logging.ERROR):
                for _ in range(5):
                    d.tick()
            waits = [r for r in caplog.records if "cannot be made now" in r.getMessage()]
            assert waits == [], len(waits)
            assert any(
                "no room under" in r.getMessage() and "mounted read-only" in r.getMessage()
                for r in caplog.records
            )
            assert sorted(p.name for p in site.layout.queue.glob("r*.yaml")) == [
                f"r{i}.yaml" for i in range(5)
            ]  # not taken in
            once = CliRunner().invoke(main, ["--site", str(site.root), "runs", "delete", "x"])
            assert "read-only" in once.output, once.output
            subprocess.run(["mount", "-o", "remount,bind,rw", results], check=True)
            time.sleep(ROOM_EVERY)
            deadline = time.monotonic() + 60
            while len([r for r in api.list_runs(site) if r["state"] == "SUCCESS"]) < 5:
                assert time.monotonic() < deadline
                d.tick()
                time.sleep(0.1)
        finally:
            d.stop()
    finally:
        subprocess.run(["umount", "-l", results], check=False)
    assert len(api.list_runs(site)) == 5
    ran = (tmp_path / "ran.log").read_text().split("\n")
    assert sorted(line for line in ran if line) == [f"ran {i}" for i in range(5)]
    site.close()


FILE_TEMPLATE = """
workflow:
  steps:
    - action:
        commands: ["wc -c < data.bin"]
parameters:
  - {name: data, dtype: file, target: data.bin}
"""


def test_a_run_not_made_for_want_of_space_leaves_no_half_folder(
    small_fs: Path, tmp_path: Path
) -> None:
    """Found by the re-review: a request whose input did not fit left its half-copied
    ``.<run>.tmp`` folder, which held the space the next request needed: intake stopped
    for the whole site until an admin cleaned up. The half folder is removed; the
    request waits (it is no fault of its own) and is made once there is room."""
    from flowbatch.store.store import MIN_FREE_BYTES

    site = make_site(small_fs / "site")
    api.install(site, write_template(tmp_path / "t", FILE_TEMPLATE), workflow_id="wf")
    filler = fill(small_fs)
    try:
        free = 11 << 20
        os.truncate(filler, filler.stat().st_size - free)
        drop(
            site,
            "big.yaml",
            {"workflow": "wf", "arguments": {"data": "big.bin"}},
            files={"big.bin": "x" * (6 << 20)},
        )
        assert os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize > MIN_FREE_BYTES
        d = Daemon(site)
        d.start()
        try:
            d.tick()  # its copy of 6 MiB cannot fit in the 5 MiB left
            runs_dir = site.layout.workflow_results("wf") / "runs"
            assert [p.name for p in runs_dir.glob(".*.tmp")] == []
            assert api.list_runs(site) == []  # it waits, claimed
            st = os.statvfs(small_fs)
            assert st.f_bavail * st.f_frsize > MIN_FREE_BYTES  # its half copy is gone
        finally:
            d.stop()
    finally:
        filler.unlink()
    run_until_idle_site = Daemon(site)
    run_until_idle_site.start()
    try:
        deadline = time.monotonic() + 30
        while not api.list_runs(site):
            assert time.monotonic() < deadline, "never made"
            run_until_idle_site.tick()
            time.sleep(0.1)
    finally:
        run_until_idle_site.stop()
    assert len(api.list_runs(site)) == 1


def test_until_idle_on_a_full_disk_ends_saying_so_and_loses_no_request(
    small_fs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`daemon --until-idle` on a disk that is full once it serves, with requests in the
    queue: it ticked forever (no request is taken in without room, so it was never
    idle). Now, once nothing else is left to do for ``UNINDEXED_PATIENCE`` seconds, it
    ends with an error that says where the room is missing and how much is free; the
    requests wait in the queue, and the next start runs them. (A process started on a
    full disk stops before that, at its index: ``flowbatch daemon`` says so.)"""
    from flowbatch.daemon import run_daemon
    from flowbatch.errors import FlowbatchError

    site = make_site(small_fs / "site")
    template = write_template(tmp_path / "t", TEMPLATE.format(log=tmp_path / "x"))
    api.install(site, template, workflow_id="wf")
    drop(site, "a.yaml", {"workflow": "wf", "arguments": {"n": 1}})
    monkeypatch.setattr(Daemon, "UNINDEXED_PATIENCE", 1.0)
    filler = fill(small_fs)
    started = time.monotonic()
    try:
        with pytest.raises(FlowbatchError) as caught:
            run_daemon(site, until_idle=True)
    finally:
        filler.unlink()
    assert time.monotonic() - started < 30
    said = f"{caught.value} {caught.value.hint}"
    assert f"no room under {site.layout.results}" in said, said
    assert "MiB free" in said and "the requests wait in the queue" in said, said
    assert (site.layout.queue / "a.yaml").is_file()  # not taken in, not lost
    run_daemon(site, until_idle=True)
    assert {r["request"]: r["state"] for r in api.list_runs(site)} == {"a.yaml": "SUCCESS"}
    site.close()
