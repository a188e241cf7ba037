"""Post-processing across a daemon killed (SIGKILL) in the middle of a start or an end:
the next daemon launches the run it recorded but never launched, adopts the one it
launched but never recorded, and shows the outputs of one it recorded as SUCCESS before
``state.json`` said so. Real daemons, real processes, real kills."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flowbatch import api
from flowbatch.postproc import leaderboard_view, load_record, postproc_root, read_state
from flowbatch.render import read_markers
from flowbatch.site import Site

from .conftest import SCORE_TEMPLATE, drop, make_site, run_until_idle, write_template


@pytest.fixture
def tmp_path(public_tmp: Path) -> Path:
    """The sites here (and the ``site`` fixture's) in a folder other users can pass
    through: a root daemon post-processes as another user (flowbatch.postproc_user),
    who must reach the site, and pytest's own folders are 0700 (and shared by every
    session of the machine's root, so opening them up would not last)."""
    return public_tmp


TEMPLATE = (
    SCORE_TEMPLATE
    + """postproc:
  workflow:
    steps:
      - name: summary
        action:
          commands: ["test -f $[[runs]]/runs.json", "sleep ${ppsleep}", "echo done > out.txt"]
"""
)

#: Python run in the killed daemon before its main(): each SIGKILLs it at one moment
KILL_AT = {
    # the post-processing run recorded in state.json, its script not launched
    "before launch": """
from flowbatch.executors.local import LocalExecutor
real = LocalExecutor.launch
def launch(self, job):
    if job.run_dir.parent.name == "postproc":
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, job)
LocalExecutor.launch = launch
""",
    # the script launched, its handle not recorded
    "after launch": """
from flowbatch.executors.local import LocalExecutor
real = LocalExecutor.launch
def launch(self, job):
    handle = real(self, job)
    if job.run_dir.parent.name == "postproc":
        os.kill(os.getpid(), signal.SIGKILL)
    return handle
LocalExecutor.launch = launch
""",
    # the script launched, the daemon killed before the script's first marker: a FIFO
    # at its log (opened before the marker) holds the script there until a reader comes
    "after launch, before its marker": """
from flowbatch.executors.local import LocalExecutor
real = LocalExecutor.launch
def launch(self, job):
    if job.run_dir.parent.name == "postproc":
        os.makedirs(job.run_dir / "logs", exist_ok=True)
        os.mkfifo(job.run_dir / "logs" / "script.log")
        if job.uid is not None:  # the script opens it as its user (a root daemon's)
            os.chown(job.run_dir / "logs", job.uid, -1)
            os.chown(job.run_dir / "logs" / "script.log", job.uid, -1)
        real(self, job)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, job)
LocalExecutor.launch = launch
""",
    # the record SUCCESS, state.json's last_success not written
    "before last_success": """
from flowbatch.postproc import PostProcManager
real = PostProcManager._write_state
def write_state(self, record, *, started):
    if not started and record.state == "SUCCESS":
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, record, started=started)
PostProcManager._write_state = write_state
""",
}


def killed_daemon(tmp_path: Path, where: str, pp_sleep: str = "0") -> Path:
    """A site with one request of a workflow with post-processing, served by a daemon
    SIGKILLed at ``where`` (:data:`KILL_AT`); the site's folder."""
    site_dir = tmp_path / "site"
    # how long the script sleeps: a site variable (a root daemon's post-processing runs
    # as another user, with none of the daemon's environment)
    site = make_site(site_dir, {"variables": {"ppsleep": pp_sleep}})
    api.install(site, write_template(tmp_path / "t", TEMPLATE), workflow_id="wf")
    drop(site, "r.yaml", {"workflow": "wf", "arguments": {"score": 1.5}})
    site.close()
    code = (
        "import os, signal, sys\n"
        + KILL_AT[where]
        + "from flowbatch.cli import main\n"
        + "main(['--site', sys.argv[1], 'daemon', '--until-idle'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(site_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    return site_dir


def started_lines(folder: Path) -> int:
    markers = folder / "status" / "markers"
    text = markers.read_text() if markers.exists() else ""
    return sum(line.startswith("started ") for line in text.splitlines())


def shown_on_board(site: Site) -> object:
    board = json.loads((site.layout.workflow_results("wf") / "leaderboard.json").read_text())
    return board["postproc"]["shown"]


def only_postproc(site: Site) -> Path:
    root = postproc_root(site, "wf")
    (folder,) = [p for p in root.iterdir() if p.is_dir()]
    return folder


def test_post_processing_recorded_but_never_launched_is_launched_after_a_restart(
    tmp_path: Path,
) -> None:
    """Killed between state.json (which records the set of best runs it is for) and the
    launch: the next daemon launches it, in its folder (it found it ERROR, "ended without
    its exit marker", and never ran it again while the set stayed the same)."""
    site_dir = killed_daemon(tmp_path, "before launch")
    site = Site(site_dir)
    folder = only_postproc(site)
    latest = read_state(site, "wf")["latest"]
    record = load_record(site, "wf", latest)
    assert folder.name == latest and record is not None  # what the kill left
    assert record.state == "RUNNING" and record.handle is None
    assert read_markers(folder).started is None
    run_until_idle(site)
    record = load_record(site, "wf", latest)
    assert record is not None and record.state == "SUCCESS", record
    assert record.handle is not None and record.started_at
    assert only_postproc(site) == folder and (folder / "out.txt").read_text() == "done\n"
    assert started_lines(folder) == 1
    assert read_state(site, "wf")["last_success"] == latest
    assert shown_on_board(site) == latest
    site.close()


@pytest.mark.parametrize("ended", [False, True], ids=["still running", "ended"])
def test_post_processing_launched_but_not_recorded_is_adopted_after_a_restart(
    tmp_path: Path, ended: bool
) -> None:
    """Killed between the launch and the record of its handle: the next daemon adopts
    the process from its ``started`` marker (it is never launched a second time) and
    records its outcome from its markers, whether it still runs or has ended meanwhile
    (the record stayed ERROR while the script went on and succeeded)."""
    site_dir = killed_daemon(tmp_path, "after launch", pp_sleep="0" if ended else "1.5")
    site = Site(site_dir)
    folder = only_postproc(site)
    record = load_record(site, "wf", folder.name)
    assert record is not None and record.state == "RUNNING" and record.handle is None
    deadline = time.monotonic() + 10
    while read_markers(folder).started is None or (ended and read_markers(folder).exit is None):
        assert time.monotonic() < deadline, "the launched script wrote no markers"
        time.sleep(0.02)
    started = read_markers(folder).started
    assert started is not None
    assert (read_markers(folder).exit is None) != ended
    run_until_idle(site)
    markers = read_markers(folder)
    assert markers.exit is not None and markers.exit[0] == 0
    record = load_record(site, "wf", folder.name)
    assert record is not None and record.state == "SUCCESS", record
    assert record.handle is not None and record.handle["pid"] == started[0]
    assert started_lines(folder) == 1  # adopted, not launched again
    assert only_postproc(site) == folder and (folder / "out.txt").exists()
    assert read_state(site, "wf")["last_success"] == folder.name
    assert shown_on_board(site) == folder.name
    site.close()


def test_post_processing_killed_before_its_first_marker_is_not_launched_twice(
    tmp_path: Path,
) -> None:
    """Killed between the launch and the script's first marker: no marker, but the
    script runs; the next daemon took the record for never launched and started a
    second script in the same folder. It adopts the process that runs the script."""
    site_dir = killed_daemon(tmp_path, "after launch, before its marker")
    site = Site(site_dir)
    folder = only_postproc(site)
    record = load_record(site, "wf", folder.name)
    assert record is not None and record.state == "RUNNING" and record.handle is None
    assert read_markers(folder).started is None  # held at its log
    readers: list[threading.Thread] = []

    def release(daemon: object) -> None:
        """After the next daemon's first tick (its recovery made): the script goes on."""
        if not readers:
            fifo = folder / "logs" / "script.log"
            readers.append(threading.Thread(target=fifo.read_bytes, daemon=True))
            readers[0].start()

    run_until_idle(site, each_tick=release)
    readers[0].join(timeout=10)
    assert started_lines(folder) == 1, (folder / "status" / "markers").read_text()
    record = load_record(site, "wf", folder.name)
    assert record is not None and record.state == "SUCCESS", record
    assert (folder / "out.txt").exists() and only_postproc(site) == folder
    site.close()


def test_a_success_recorded_before_state_json_is_shown_and_repaired(tmp_path: Path) -> None:
    """Killed between the SUCCESS record and state.json's ``last_success``: the view
    shows its outputs at once, and the next daemon writes ``last_success`` (the
    leaderboard said SUCCESS but showed nothing until the next post-processing run)."""
    site_dir = killed_daemon(tmp_path, "before last_success")
    site = Site(site_dir)
    state = read_state(site, "wf")
    record = load_record(site, "wf", state["latest"])
    assert record is not None and record.state == "SUCCESS"
    assert state["last_success"] is None  # what the kill left
    view = leaderboard_view(site, "wf", record.version, record.ranking)
    assert view is not None and view.shown is not None and view.shown.id == record.id
    run_until_idle(site)
    assert read_state(site, "wf")["last_success"] == record.id
    assert shown_on_board(site) == record.id
    site.close()
