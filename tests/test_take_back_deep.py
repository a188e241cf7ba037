"""Folders of a run past ``takeback.TAKE_BACK_DEPTH`` at its take-back. The walk is
bounded (a run could make the daemon walk a million folders), and the folder at the
bound is closed to all but the tree's owner; found by review, the folders beneath it
stayed the run user's, and the tree's owner (a service user's site: ``runs delete`` and
``cleanup`` run as the owner) could not remove the run. They are now the tree owner's
too, closed (0700, no ACL), up to ``TAKE_BACK_DEEP_FOLDERS`` of them, walked without
recursion; the run's user reads none of it, and the run's messages and the daemon's log
say once which run has such folders."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
import yaml

from flowbatch import api, takeback
from flowbatch.site import Site

from .conftest import account, drop, run_until_idle
from .test_root_commands import PYTHON
from .test_take_back_links import USER, as_user
from .test_take_back_private import as_uid

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon's take-back")

DEPTH = 4


def deep_run(root: Path, owner: int, levels: int) -> tuple[Path, Path]:
    """A run folder ``root/runs/r1`` (``runs/`` of ``owner``'s) whose user made a chain
    of ``levels`` folders ``d`` under ``out/``, some of them closed to the others (0700,
    0500), a file in the deepest: the run folder and the deepest folder."""
    root.chmod(0o755)
    runs = root / "runs"
    runs.mkdir()
    os.chown(runs, owner, owner)
    run = runs / "r1"
    (run / "out").mkdir(parents=True)
    for path in (run, run / "out"):
        as_user(path)
    chain = "/".join(["d"] * levels)
    script = f"mkdir -p out/{chain} && echo deep > out/{chain}/f.txt && chmod 500 out/{chain}"
    script += f" && chmod 700 out/{'/'.join(['d'] * (levels - 2))}"
    done = as_uid(USER, script, run)
    assert done.returncode == 0, done.stderr
    return run, run / "out" / chain


def test_the_tree_owner_removes_a_run_with_folders_past_the_depth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(takeback, "TAKE_BACK_DEPTH", DEPTH)
    owner = account("fbtree").pw_uid
    run, deepest = deep_run(tmp_path, owner, DEPTH + 6)
    taken = takeback.take_back(run, USER)
    (note,) = taken.notes
    assert f"1 folder(s) more than {DEPTH} levels deep (the first under out/d/d/...)" in note
    assert "only the site's owner can read it, and remove the run whole" in note
    assert taken.deep == 7 and not taken.deep_left  # out/d/d/d closed, 7 beneath
    folder = deepest
    while folder != run / "out" / "d" / "d":  # at the depth, and beneath
        info = folder.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (owner, 0o700), folder
        folder = folder.parent
    assert (deepest / "f.txt").read_text(encoding="utf-8") == "deep\n"  # left as it was
    assert as_uid(USER, "cat out/d/d/d/d/d/d/d/d/d/d/f.txt", run).returncode != 0
    assert as_uid(USER, "ls out/d/d/d", run).returncode != 0
    done = as_uid(owner, "rm -rf runs/r1", tmp_path)
    assert done.returncode == 0, done.stderr
    assert not run.exists()


def test_a_take_back_gives_at_most_its_bound_of_folders_beneath(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past :data:`takeback.TAKE_BACK_DEEP_FOLDERS` the folders beneath stay as they
    were, and the note says that the site's admin removes the run as root."""
    monkeypatch.setattr(takeback, "TAKE_BACK_DEPTH", DEPTH)
    monkeypatch.setattr(takeback, "TAKE_BACK_DEEP_FOLDERS", 2)
    owner = account("fbtree").pw_uid
    run, _ = deep_run(tmp_path, owner, DEPTH + 6)
    taken = takeback.take_back(run, USER)
    assert taken.deep == 2 and taken.deep_left
    (note,) = taken.notes
    assert "more than 2 folders were below them" in note
    assert "the site's admin removes the run folder as root" in note
    given = run.joinpath("out", *["d"] * (DEPTH + 1))  # the depth's (out/d/d/d), two beneath
    assert given.stat().st_uid == owner
    assert given.joinpath("d").stat().st_uid == USER
    assert as_uid(USER, "ls out/d/d/d", run).returncode != 0  # closed all the same


def test_folders_past_the_depth_are_closed_the_same_when_taken_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A take-back done again (after one cut short) finds the folders closed: nothing
    changes, and the note is the same."""
    monkeypatch.setattr(takeback, "TAKE_BACK_DEPTH", DEPTH)
    run, _ = deep_run(tmp_path, 0, DEPTH + 3)
    first = takeback.take_back(run, USER)
    modes = {p: (p.stat().st_uid, p.stat().st_mode) for p in run.rglob("*")}
    again = takeback.take_back(run, USER)
    assert again.notes == first.notes and again.deep == first.deep == 4
    assert {p: (p.stat().st_uid, p.stat().st_mode) for p in run.rglob("*")} == modes


#: a run that makes folders past the take-back's depth, the deepest closed to its owner
DEEP_TEMPLATE = {
    "workflow": {
        "steps": [
            {
                "action": {
                    "commands": [
                        "d=deep; for i in $(seq 105); do d=$$d/d; done; "
                        "mkdir -p $$d && echo x > $$d/f.txt && chmod 500 $$d",
                        """echo '{"score": 1}' > r.json""",
                    ]
                }
            }
        ]
    },
    "results": {"file": "r.json", "schema": [{"name": "score", "label": "S", "dtype": "float"}]},
}


@pytest.mark.skipif(not PYTHON.exists(), reason=f"no {PYTHON}")
def test_the_site_owner_deletes_a_participants_run_with_folders_past_the_depth(
    public_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A service user's site served by a root daemon: a participant's run leaves more
    than :data:`takeback.TAKE_BACK_DEPTH` levels of folders; the owner's ``runs
    delete`` removes it whole, and the daemon said once which run had them."""
    from .test_root_daemon_service_site import owner_runs, runs_of, service_site

    root = service_site(public_tmp, yaml.safe_dump(DEEP_TEMPLATE))
    site = Site(root)
    runner = account("fbrunner")
    request = drop(site, "deep.yaml", {"workflow": "wf", "name": "deep"})
    os.chown(request, runner.pw_uid, runner.pw_gid)
    with caplog.at_level(logging.WARNING, logger="flowbatch.queue"):
        run_until_idle(site)
    (run,) = api.list_runs(site)
    shown = api.show_run(site, run["id"])
    site.close()
    assert shown["state"] == "SUCCESS", shown["messages"]
    said = [r.getMessage() for r in caplog.records if "levels deep" in r.getMessage()]
    assert len(said) == 1 and shown["run_dir"] in said[0], said
    assert any("levels deep" in m for m in shown["messages"])
    owner_runs(root, "runs", "delete", run["id"])
    assert runs_of(root) == {}
    assert not Path(shown["run_dir"]).exists()
    assert not os.listdir(root / "results" / "wf" / ".trash")
