"""Crashes inside ``runs delete``, ``cleanup`` and ``uninstall`` (a process killed between
two of their steps): running the command again, ``cleanup --orphans`` or the daemon's
next start finishes the job. The crash is an exception no ``except Exception`` catches,
raised by the step after the window's first one, as a kill would stop there. Real site,
real CLI, real daemon ticks."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from flowbatch import api, lifecycle_ops
from flowbatch.cli import main
from flowbatch.site import Site

from .conftest import drop, run_until_idle, write_template

SCORE = """
workflow:
  steps:
    - name: s
      action:
        commands:
          - >-
            printf '{"v": %s}' "${x}" > r.json
parameters:
  - {name: x, dtype: int, defaultValue: 1}
results:
  file: r.json
  schema: [{name: v, label: V, dtype: int}]
"""


class Crash(BaseException):
    """The process dies here (not an error any handler catches)."""


def crash_at(monkeypatch: pytest.MonkeyPatch, name: str, call: int = 1) -> None:
    """The ``call``-th call of ``lifecycle_ops.<name>`` kills the command; the ones
    before it run."""
    real = getattr(lifecycle_ops, name)
    calls = [0]

    def dying(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == call:
            raise Crash(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(lifecycle_ops, name, dying)


def cli(site: Site, *args: str) -> Result:
    return CliRunner().invoke(main, ["--site", str(site.root), *args], catch_exceptions=False)


def crashed(site: Site, *args: str) -> None:
    with pytest.raises(Crash):
        cli(site, *args)
    # the command died with its process: the notes it made name a process that is gone
    gone = subprocess.Popen(["true"])
    gone.wait()
    folder = site.reports_pending_dir
    for note in folder.iterdir() if folder.is_dir() else []:
        if note.read_text().strip() == str(os.getpid()):
            note.write_text(f"{gone.pid}\n")


def two_runs(site: Site, tmp_path: Path) -> tuple[str, str]:
    """Workflow ``wf`` with two ended runs; returns (the low score's, the best's) ids."""
    api.install(site, write_template(tmp_path / "tpl", SCORE), workflow_id="wf")
    drop(site, "low.yaml", {"workflow": "wf", "group": "g1", "name": "low", "arguments": {"x": 1}})
    drop(site, "top.yaml", {"workflow": "wf", "group": "g2", "name": "top", "arguments": {"x": 9}})
    run_until_idle(site)
    ids = {r["name"]: r["id"] for r in api.list_runs(site)}
    return ids["low"], ids["top"]


def board(site: Site) -> list[str]:
    """The run ids ``leaderboard.json`` ranks."""
    doc = json.loads((site.layout.workflow_results("wf") / "leaderboard.json").read_text())
    return [entry["run"]["id"] for entry in doc["ranking"]]


def indexed(site: Site) -> set[str]:
    """Run ids with any row in the index file, read apart from flowbatch."""
    con = sqlite3.connect(site.layout.index_db)
    try:
        ids = {row[0] for row in con.execute("SELECT id FROM run_row")}
        for table in ("result_row", "state_change_row", "run_file_row"):
            ids |= {row[0] for row in con.execute(f"SELECT run FROM {table}")}
        return ids
    finally:
        con.close()


def pending_notes(site: Site) -> list[str]:
    folder = site.reports_pending_dir
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# -- runs delete ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "step",
    [
        "_unindex",  # the folder is in .trash, the rows are left
        "tree_size",  # the rows are gone, the folder is still in .trash
        "folder gone",  # the rows are left, the folder is gone (from .trash too)
    ],
)
def test_delete_again_finishes_an_interrupted_delete(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    low, top = two_runs(site, tmp_path)
    trash = site.layout.workflow_results("wf") / ".trash" / top
    with monkeypatch.context() as m:
        crash_at(m, "_unindex" if step == "folder gone" else step)
        crashed(site, "runs", "delete", top)
    if step == "folder gone":
        lifecycle_ops._remove(trash)
    assert not site.layout.run_dir("wf", top).exists()
    assert pending_notes(site) == ["wf"]  # the leaderboard is owed
    assert board(site) == [top, low]  # not rewritten yet

    result = cli(site, "runs", "delete", top)
    assert result.exit_code == 0, result.output
    assert f"deleted run {top}" in result.output
    assert [r["id"] for r in api.list_runs(site)] == [low]
    assert indexed(site) == {low}
    assert not trash.exists()
    assert board(site) == [low]
    # the crashed command's note may be a daemon's (it cannot tell): a daemon's start
    # writes the reports once more and removes it
    run_until_idle(site)
    assert pending_notes(site) == []
    # a run that never was, or is fully gone, is still unknown
    again = cli(site, "runs", "delete", top)
    assert again.exit_code == 1 and f"unknown run '{top}'" in again.output


def test_delete_of_an_interrupted_delete_still_checks_the_owner(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _low, top = two_runs(site, tmp_path)
    with monkeypatch.context() as m:
        crash_at(m, "_unindex")
        crashed(site, "runs", "delete", top)
    owner = os.geteuid()  # the runs' owner
    with pytest.raises(Exception, match=f"run {top} belongs to"):
        lifecycle_ops.delete_run(site, top, uid=owner + 1)
    assert (site.layout.workflow_results("wf") / ".trash" / top / "run.json").is_file()
    assert top in indexed(site)


def test_orphan_removal_of_a_trash_entry_unindexes_its_run(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    low, top = two_runs(site, tmp_path)
    with monkeypatch.context() as m:
        crash_at(m, "_unindex")
        crashed(site, "runs", "delete", top)
    result = cli(site, "cleanup", "--orphans")
    assert result.exit_code == 0, result.output
    assert "removed 1 orphans" in result.output and "left by an interrupted delete" in (
        result.output
    )
    assert [r["id"] for r in api.list_runs(site)] == [low]
    assert indexed(site) == {low}
    assert board(site) == [low]


@pytest.mark.parametrize(
    "command", [("runs", "delete", "TOP"), ("cleanup", "--before", "2999-01-01")]
)
def test_reports_owed_by_a_crashed_removal_are_written_at_the_daemons_start(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...]
) -> None:
    low, top = two_runs(site, tmp_path)
    if command[0] == "cleanup":  # the low run feeds the post-processing: spared
        root = site.layout.workflow_results("wf") / "postproc"
        root.mkdir(parents=True, exist_ok=True)
        (root / "state.json").write_text(json.dumps({"ranking": [low]}))
    with monkeypatch.context() as m:
        crash_at(m, "_refresh")
        crashed(site, *(top if arg == "TOP" else arg for arg in command))
    assert [r["id"] for r in api.list_runs(site)] == [low]  # the index is right ...
    assert board(site) == [top, low]  # ... the leaderboard is behind
    assert pending_notes(site) == ["wf"]
    run_until_idle(site)  # a daemon starts
    assert board(site) == [low]
    assert pending_notes(site) == []


def test_a_running_daemon_writes_the_reports_a_killed_removal_owed(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``runs delete`` SIGKILLed before it rewrote the leaderboard while a daemon runs:
    the daemon read such notes at its start only, and the leaderboard kept the deleted
    run until the daemon restarted. It now takes a note whose command is gone; one
    whose command still runs is left to it."""
    from flowbatch import daemon as daemon_module
    from flowbatch.daemon import Daemon

    low, top = two_runs(site, tmp_path)
    monkeypatch.setattr(daemon_module, "OTHERS_EVERY", 0.0, raising=False)
    d = Daemon(site)
    d.start()
    try:
        code = (
            "import os, signal, sys\n"
            "from flowbatch import lifecycle_ops\n"
            "lifecycle_ops._refresh = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
            "from flowbatch.cli import main\n"
            "main(['--site', sys.argv[1], 'runs', 'delete', sys.argv[2]])\n"
        )
        killed = subprocess.run(
            [sys.executable, "-c", code, str(site.root), top], capture_output=True, timeout=60
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert board(site) == [top, low] and pending_notes(site) == ["wf"]
        d.tick()
        assert board(site) == [low]  # written by the running daemon
        assert pending_notes(site) == []
        # a removal still at work: its note is its own (it rewrites the reports itself)
        (site.reports_pending_dir / "wf").write_text(f"{os.getpid()}\n")
        (site.layout.workflow_results("wf") / "leaderboard.json").unlink()
        d.tick()
        assert pending_notes(site) == ["wf"]
        assert not (site.layout.workflow_results("wf") / "leaderboard.json").exists()
    finally:
        d.stop()


def test_a_daemons_start_leaves_the_note_of_a_removal_at_work_to_it(
    site: Site, tmp_path: Path
) -> None:
    """A daemon starting while a removal runs took the removal's note and removed it
    with its report: the removal killed after that left the leaderboard stale with no
    note. The note of a live command is left to it; once its command is gone, taken."""
    two_runs(site, tmp_path)
    board_file = site.layout.workflow_results("wf") / "leaderboard.json"
    board_file.unlink()
    site.reports_pending_dir.mkdir(parents=True, exist_ok=True)
    (site.reports_pending_dir / "wf").write_text(f"{os.getpid()}\n")  # a live command's
    run_until_idle(site)
    assert pending_notes(site) == ["wf"] and not board_file.exists()
    gone = subprocess.Popen(["true"])
    gone.wait()
    (site.reports_pending_dir / "wf").write_text(f"{gone.pid}\n")  # killed since
    run_until_idle(site)
    assert pending_notes(site) == [] and board_file.exists()


def test_a_removal_that_ends_leaves_no_note(site: Site, tmp_path: Path) -> None:
    low, top = two_runs(site, tmp_path)
    assert cli(site, "runs", "delete", top).exit_code == 0
    assert board(site) == [low] and pending_notes(site) == []
    site.reports_pending_dir.mkdir(parents=True, exist_ok=True)
    (site.reports_pending_dir / "wf").touch()  # the daemon's own note: it removes it
    assert cli(site, "cleanup", "--before", "2999-01-01").exit_code == 0
    assert pending_notes(site) == ["wf"]


# -- uninstall -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("step", "call"),
    [
        ("_refuse_active", 2),  # the template is hidden, nothing else done
        ("_unindex", 1),  # the results are removed (or hidden), the rows are left
        ("_refresh", 1),  # rows and results are gone, the front page still lists it
    ],
)
def test_uninstall_again_finishes_an_interrupted_uninstall(
    site: Site,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    step: str,
    call: int,
) -> None:
    low, top = two_runs(site, tmp_path)
    with monkeypatch.context() as m:
        crash_at(m, step, call)
        crashed(site, "uninstall", "wf")
    # the site still works meanwhile: the hidden template is no workflow
    assert site.templates.list_ids() == []
    listed = cli(site, "workflows", "list")
    assert listed.exit_code == 0 and "uninstalling" not in listed.output, listed.output
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        run_until_idle(site)  # a daemon's start
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    doctor = cli(site, "doctor")
    assert "uninstalling" not in doctor.output, doctor.output
    # intake refuses the workflow's requests: it is gone for them
    drop(site, "late.yaml", {"workflow": "wf", "arguments": {"x": 3}})
    run_until_idle(site)
    assert (site.layout.rejected / "late.yaml").exists()

    caplog.clear()
    result = cli(site, "uninstall", "wf")
    assert result.exit_code == 0, result.output
    assert "uninstalled wf (an interrupted uninstall, finished)" in result.output
    assert "wf: finishing an uninstall that was interrupted" in caplog.text
    assert api.list_runs(site) == [] and indexed(site) == set()
    assert sorted(p.name for p in site.layout.templates.iterdir()) == []
    assert sorted(p.name for p in site.layout.results.iterdir()) == ["index.html"]
    assert 'href="wf/' not in (site.layout.results / "index.html").read_text()
    again = cli(site, "uninstall", "wf")
    assert again.exit_code == 1 and "unknown workflow 'wf'" in again.output
    assert low and top


def test_uninstall_after_an_interrupted_one_and_a_reinstall(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    two_runs(site, tmp_path)
    with monkeypatch.context() as m:
        crash_at(m, "_unindex")
        crashed(site, "uninstall", "wf")
    api.install(site, write_template(tmp_path / "tpl", SCORE), workflow_id="wf")
    assert site.templates.list_ids() == ["wf"]
    drop(site, "new.yaml", {"workflow": "wf", "arguments": {"x": 4}})
    run_until_idle(site)
    result = cli(site, "uninstall", "wf")
    assert result.exit_code == 0, result.output
    assert api.list_runs(site) == [] and indexed(site) == set()
    assert sorted(p.name for p in site.layout.templates.iterdir()) == []
    assert sorted(p.name for p in site.layout.results.iterdir()) == ["index.html"]


def test_the_tree_walk_skips_a_hidden_workflow_folder(site: Site) -> None:
    """`reindex` and a daemon's start walk results/*/runs/: a workflow folder an uninstall
    has hidden (`.<wf>.uninstalling`) is no workflow, and its runs are not indexed."""
    hidden = site.layout.results / ".wf.uninstalling" / "runs" / "0123456789ab"
    hidden.mkdir(parents=True)
    (hidden / "run.json").write_text("{}")
    assert list(site.store.iter_run_dirs()) == []
