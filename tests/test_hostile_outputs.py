"""A run's own code chooses what its folder holds: file names that are not UTF-8,
symlinks to files it cannot read (the daemon may be root). Real runs, a real daemon."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from flowbatch import api
from flowbatch.daemon import Daemon
from flowbatch.runs import State
from flowbatch.site import Site
from flowbatch.store.index import RunFileRow

from .conftest import SCORE_TEMPLATE, drop, make_site, only_run, run_until_idle, write_template
from .test_robust import _user, needs_root

#: a results.json, a plain file, then whatever the test's commands leave
TEMPLATE = """
workflow:
  steps:
    - name: run
      action:
        commands:
          - >-
            echo '{{"score": 2.0}}' > results.json
          - echo hello > good.txt
{commands}
results:
  file: results.json
  schema: [{{name: score, label: Score, dtype: float}}]
{extra}
"""

#: a file and a folder whose names are not UTF-8 (bytes ff fe), a file in that folder
BAD_NAMES = [
    "touch \"$(printf 'bad\\xff\\xfename.txt')\"",
    "mkdir \"$(printf 'dir\\xff')\" && echo x > \"$(printf 'dir\\xff')/inner.txt\"",
]

#: links to files the run did not make, a link to a folder, to a file of the run's own
LINKS = [
    "ln -s /etc/passwd passwd.txt",
    "ln -s ../../../../../../../../etc/hostname up.txt",
    "ln -s /etc etc",
    "mkdir real && echo hi > real/a.txt && ln -s real/a.txt alias.txt",
    "mkfifo pipe",
]


def _install(site: Site, tmp_path: Path, commands: list[str], extra: str = "") -> None:
    lines = "\n".join(f"          - {json.dumps(c)}" for c in commands)
    write_template(tmp_path / "t", TEMPLATE.format(commands=lines, extra=extra))
    api.install(site, tmp_path / "t", workflow_id="wf")


def _run(site: Site, name: str = "r.yaml") -> dict[str, Any]:
    drop(site, name, {"workflow": "wf"})
    run_until_idle(site, timeout=20)
    return only_run(site)


def _sources(run: dict[str, Any]) -> list[str]:
    return [f["source"] for f in run["files"]]


def _board(site: Site) -> dict[str, Any]:
    return json.loads((site.layout.results / "wf" / "leaderboard.json").read_text())


def test_a_file_name_not_utf8_is_left_out_and_the_run_ends(site: Site, tmp_path: Path) -> None:
    """A run that left a file named ``bad\\xff\\xfename.txt``: its index write failed
    (UnicodeEncodeError), the run stayed in the daemon's active set (a slot held, the
    daemon never idle), its page was never written and reindex failed after clearing the
    index. Such a name is no output (a link to an escaped name would reach no file); the
    run's messages say it was left out."""
    _install(site, tmp_path, BAD_NAMES)
    run = _run(site)
    assert run["state"] == "SUCCESS", run["messages"]
    assert _sources(run) == ["good.txt", "results.json", "workflow.yaml"]
    assert any(
        "not being valid UTF-8" in m and "bad\\xff\\xfename.txt" in m and "dir\\xff" in m
        for m in run["messages"]
    ), run["messages"]
    run_dir = Path(run["run_dir"])
    stored = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    assert [f["source"] for f in stored["files"]] == ["good.txt", "results.json", "workflow.yaml"]
    rows = RunFileRow.select().where(RunFileRow.run == run["id"]).order_by(RunFileRow.source)
    assert [r.source for r in rows] == ["good.txt", "results.json", "workflow.yaml"]
    page = (run_dir / "index.html").read_text(encoding="utf-8")
    assert 'href="good.txt"' in page and "inner.txt" not in page
    (row,) = _board(site)["ranking"]
    assert row["run"]["id"] == run["id"]
    # the whole tree again: nothing to skip
    assert api.reindex(site) == 1
    assert [r["id"] for r in api.list_runs(site)] == [run["id"]]


def test_a_failure_after_the_state_change_still_frees_the_run(
    site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The record of a run that ended is SUCCESS in memory when something after the change
    fails (a listener here; the index write before): the runner let go of it only when it
    was still active, so it kept its slot and the daemon never became idle."""
    _install(site, tmp_path, [])

    def fails(run: Any, previous: State) -> None:
        if run.state == State.SUCCESS:
            raise RuntimeError("a listener failed")

    site.store.listeners.append(fails)
    drop(site, "r.yaml", {"workflow": "wf"})
    daemon = Daemon(site)
    daemon.start()
    try:
        run_until_idle(site, timeout=10, daemon=daemon)
        assert not daemon.runner.active and not daemon.runner.launched()
    finally:
        daemon.stop()
    run = only_run(site)
    assert run["state"] == "SUCCESS"
    assert "a listener failed" in caplog.text


def test_reindex_leaves_out_a_run_it_cannot_index_and_indexes_the_rest(
    tmp_path: Path, db_url: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """reindex cleared the index, then one run it could not index (a file name that is
    not UTF-8 in a run.json an older flowbatch wrote) failed it with exit 1: no run was
    listed and every leaderboard was empty. Now that name is left out of the run's files
    (index and page), as a run lists them now, and a run whose record the index refuses
    is logged by its id and left out (on PostgreSQL too, where a failed statement aborts
    the transaction)."""
    site = make_site(tmp_path / "site", {"database": db_url} if db_url else None)
    try:
        _reindex_leaves_out(site, tmp_path, caplog)
    finally:
        site.close()


def _reindex_leaves_out(site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _install(site, tmp_path, [])
    for name in ("a.yaml", "b.yaml", "c.yaml"):
        drop(site, name, {"workflow": "wf", "group": name[0]})
    run_until_idle(site, timeout=20)
    runs = {r["group"]: r for r in api.list_runs(site)}
    assert {r["state"] for r in runs.values()} == {"SUCCESS"}

    def rewrite(group: str, **changes: Any) -> None:
        path = Path(api.show_run(site, runs[group]["id"])["run_dir"]) / "run.json"
        record = json.loads(path.read_text(encoding="utf-8"))
        record.update(changes)
        path.write_text(json.dumps(record), encoding="utf-8")  # a lone surrogate as \\udcff

    bad = {"key": "bad\udcff.txt", "source": "bad\udcff.txt", "size": 1}
    rewrite("b", files=[bad, {"key": "r.txt", "source": "r.txt", "size": 2}])
    rewrite("c", owner_uid=2**70)  # no 64-bit integer column holds it
    caplog.set_level(logging.ERROR)
    assert api.reindex(site) == 2
    assert sorted(r["group"] for r in api.list_runs(site)) == ["a", "b"]
    assert runs["c"]["id"] in caplog.text and "left out of the index" in caplog.text
    rows = RunFileRow.select().where(RunFileRow.run == runs["b"]["id"])
    assert [r.source for r in rows] == ["r.txt"]  # as the run would list them now
    assert sorted(row["group"] for row in _board(site)["ranking"]) == ["a", "b"]
    # its page too (it failed to encode the name), without the name
    page = Path(api.show_run(site, runs["b"]["id"])["run_dir"]) / "index.html"
    page.unlink()
    api.report(site, "wf")
    text = page.read_text(encoding="utf-8")
    assert 'href="r.txt"' in text and "bad\\" not in text and "bad%" not in text


def test_symlinks_and_other_non_files_are_no_outputs(site: Site, tmp_path: Path) -> None:
    """Symlinks in a run folder were listed as its files, with the size of what they
    point at (the daemon's stat followed them): only its regular files are."""
    _install(site, tmp_path, LINKS)
    run = _run(site)
    assert run["state"] == "SUCCESS", run["messages"]
    assert _sources(run) == ["good.txt", "real/a.txt", "results.json", "workflow.yaml"]
    run_dir = Path(run["run_dir"])
    sizes = {f["source"]: f["size"] for f in run["files"]}
    assert sizes == {name: os.lstat(run_dir / name).st_size for name in sizes}
    assert sizes["good.txt"] == 6 and sizes["real/a.txt"] == 3
    board = (site.layout.results / "wf" / "leaderboard.html").read_text(encoding="utf-8")
    page = (run_dir / "index.html").read_text(encoding="utf-8")
    for text in (board, page, json.dumps(_board(site))):
        assert "passwd.txt" not in text and "up.txt" not in text and "alias.txt" not in text


def test_a_declared_output_that_is_a_link_or_lies_through_one_fails_the_run(
    site: Site, tmp_path: Path
) -> None:
    """Declared ``outputs`` must exist: one that is a symlink, or is reached through a
    symlinked folder, is not a file of the run's (its size was that of /etc/passwd), and
    the run ends in ERROR saying which and why, as for a missing one."""
    _install(
        site,
        tmp_path,
        ["ln -s /etc/passwd out.txt", "ln -s /etc d"],
        extra="outputs:\n  - {source: good.txt}\n  - {source: out.txt}\n  - {source: d/passwd}\n",
    )
    run = _run(site)
    assert run["state"] == "ERROR"
    (message,) = run["messages"]
    assert "declared output files are missing" in message
    assert (
        "out.txt (it is a symbolic link" in message and "d/passwd (d is a symbolic link" in message
    )
    assert not run["files"]


def test_a_listed_output_that_is_a_link_is_left_out_with_a_message(
    site: Site, tmp_path: Path
) -> None:
    """The workflow's ``files.outputs`` (each optional): a symlinked one is left out, and
    the run's messages say so; one that is simply not there is left out silently."""
    text = TEMPLATE.format(
        commands="\n".join(f"          - {json.dumps(c)}" for c in LINKS),
        extra="",
    ).replace(
        "workflow:\n",
        "workflow:\n  files:\n    outputs: [good.txt, passwd.txt, etc/hostname, none.txt]\n",
        1,
    )
    write_template(tmp_path / "t", text)
    api.install(site, tmp_path / "t", workflow_id="wf")
    run = _run(site)
    assert run["state"] == "SUCCESS", run["messages"]
    assert _sources(run) == ["good.txt"]
    assert any("passwd.txt left out: it is a symbolic link" in m for m in run["messages"])
    assert any("etc/hostname left out: etc is a symbolic link" in m for m in run["messages"])
    assert not any("none.txt" in m for m in run["messages"])


# -- a root daemon, a participant's run ---------------------------------------------------
@needs_root
def test_a_root_daemon_lists_no_file_its_participant_cannot_read(
    public_tmp: Path, tmp_path: Path
) -> None:
    """As the reviewer did: a participant's run links /root/.bashrc and /etc/shadow (which
    it cannot read) and leaves a name that is not UTF-8; the root daemon listed the links
    with their true sizes and got stuck on the name. Neither is listed now, the run ends
    and its page and leaderboard row are written."""
    owner = _user("fbrunner")
    site = make_site(public_tmp / "site")
    try:
        _install(
            site,
            tmp_path,
            ["ln -s /root/.bashrc bashrc.txt", "ln -s /etc/shadow shadow.txt", *BAD_NAMES],
        )
        path = drop(site, "r.yaml", {"workflow": "wf"})
        os.chown(path, owner.pw_uid, owner.pw_gid)
        run_until_idle(site, timeout=20)
        run = only_run(site)
        assert run["state"] == "SUCCESS", run["messages"]
        assert run["owner"] == owner.pw_name
        assert _sources(run) == ["good.txt", "results.json", "workflow.yaml"]
        run_dir = Path(run["run_dir"])
        page = (run_dir / "index.html").read_text(encoding="utf-8")
        board = (site.layout.results / "wf" / "leaderboard.html").read_text(encoding="utf-8")
        for text in (page, board):
            assert "shadow" not in text and "bashrc" not in text
        assert run["id"] in board
    finally:
        site.close()


def test_a_post_processing_output_that_is_a_link_is_not_shown(
    public_site: Site, tmp_path: Path
) -> None:
    """Post-processing runs on participants' data as the daemon's user: an output it made
    as a link (from an archive a participant sent, say) was read through the link and
    shown inline on the leaderboard, whatever it pointed at."""
    site = public_site  # post-processing runs as another user (conftest)
    from flowbatch.postproc import leaderboard_view, read_state

    secret = tmp_path / "secret.txt"
    secret.write_text("not for the leaderboard\n")
    template = SCORE_TEMPLATE + (
        "postproc:\n  workflow:\n    files: {outputs: [summary.txt, real.txt]}\n    steps:\n"
        "      - name: s\n        action:\n          commands:\n"
        f"            - ln -s {secret} summary.txt\n"
        "            - echo shown > real.txt\n"
    )
    api.install(site, write_template(tmp_path / "t", template), workflow_id="wf")
    drop(site, "r.yaml", {"workflow": "wf", "arguments": {"score": 1}})
    run_until_idle(site)
    state = read_state(site, "wf")
    view = leaderboard_view(site, "wf", site.templates.load("wf")[1], state["ranking"])
    assert view is not None and view.shown is not None, view
    sources = {o.source: o for o in view.shown.outputs}
    assert set(sources) == {"real.txt"}
    assert sources["real.txt"].text == "shown\n"
    page = (site.layout.results / "wf" / "leaderboard.html").read_text()
    assert "not for the leaderboard" not in page


def test_an_output_named_by_a_parameter_is_the_file_the_run_wrote(
    site: Site, tmp_path: Path
) -> None:
    """flowServ's `files.outputs` may name a parameter (`$[[outname]]`): it was accepted
    at install and then looked for as a file named `$[[outname]]`, so the run listed no
    output."""
    template = (
        "workflow:\n  files: {outputs: ['$[[outname]]', '$[[unset]]', fixed.txt]}\n"
        "  steps:\n    - name: s\n      action:\n        commands:\n"
        "          - echo made > $[[outname]]\n          - echo too > fixed.txt\n"
        "parameters:\n  - {name: outname, dtype: string, defaultValue: result.txt}\n"
        "  - {name: unset, dtype: string, isRequired: false}\n"
    )
    api.install(site, write_template(tmp_path / "t", template), workflow_id="wf")
    drop(site, "a.yaml", {"workflow": "wf"})
    drop(site, "b.yaml", {"workflow": "wf", "name": "b", "arguments": {"outname": "other.txt"}})
    run_until_idle(site)
    runs = {r["name"]: api.show_run(site, r["id"]) for r in api.list_runs(site)}
    assert [f["key"] for f in runs[None]["files"]] == ["result.txt", "fixed.txt"]
    assert [f["key"] for f in runs["b"]["files"]] == ["other.txt", "fixed.txt"]
    assert any("$[[unset]]" in m and "no value" in m for m in runs["b"]["messages"])
