"""A root daemon serving a site a service user owns (docs/admins.md, "Choose who runs
the daemon") leaves that site usable by its owner. Found by an end-to-end trial: the
daemon made ``results/<wf>/``, ``runs/``, ``postproc/``, ``reports-pending/``,
``daemon.lock``, ``claims-boot`` and the index as root, and the runs it took back went
to the owner of ``runs/``, root; the owner's ``report``, ``install``, ``runs delete``,
``cleanup``, ``workflows retire --with-runs`` and ``reindex`` then failed on a
permission error. Real users throughout: the site's owner ``fbsvc2``, a participant
``fbrunner``, the daemon root (in this process), the owner's commands a ``flowbatch``
program of theirs."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from flowbatch import api
from flowbatch.site import Site

from .conftest import SCORE_TEMPLATE, account, drop, make_site, run_until_idle, write_template
from .test_root_commands import PYTHON, flowbatch, root_owned

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon switches users"),
    pytest.mark.skipif(not PYTHON.exists(), reason=f"no {PYTHON}"),
]


user = account


def owner_runs(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``flowbatch`` run by the site's owner, which must succeed."""
    done = flowbatch(site, *args, user=site.stat().st_uid)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def serve(root: Path, name: str, score: float, as_user: pwd.struct_passwd | None = None) -> None:
    """A request (of root's, or of ``as_user``'s) served by a root daemon in this
    process until it is done."""
    site = Site(root)
    path = drop(
        site, f"{name}.yaml", {"workflow": "wf", "name": name, "arguments": {"score": score}}
    )
    if as_user is not None:
        os.chown(path, as_user.pw_uid, as_user.pw_gid)
    run_until_idle(site)
    site.close()


def service_site(folder: Path, template: str | None = None) -> Path:
    """A site its service user (``fbsvc2``) owns in ``folder``, its queue's folders
    root's (docs/admins.md); with ``template``, that template installed by its owner as
    ``wf``."""
    owner = user("fbsvc2")
    site = make_site(folder / "site")
    site.close()
    root = site.root
    paths = [root]
    if template is not None:
        paths.append(write_template(folder / "t", template))
    for path in paths:
        subprocess.run(["chown", "-R", f"{owner.pw_uid}:{owner.pw_gid}", str(path)], check=True)
    for name in ("queue", "queue/.claimed", "queue/rejected"):
        os.chown(root / name, 0, 0)
    if template is not None:
        owner_runs(root, "install", str(paths[1]), "--id", "wf")
    return root


def runs_of(root: Path) -> dict[str, str]:
    """The site's runs, by name: their state."""
    site = Site(root)
    try:
        return {row["name"]: row["state"] for row in api.list_runs(site)}
    finally:
        site.close()


@pytest.fixture(params=["owners-index", "daemons-index"])
def served(public_tmp: Path, request: pytest.FixtureRequest) -> Path:
    """A service user's site, as docs/admins.md sets it up for a root daemon: made by
    the service user, the queue's folders root's, a template installed by its owner;
    then a root daemon has served a request of root's and one of a participant's. The
    index is the one the owner's install made, or none when the daemon starts (it
    makes it)."""
    root = service_site(public_tmp, SCORE_TEMPLATE)
    if request.param == "daemons-index":
        for name in os.listdir(root):
            if name.startswith("index.db"):
                os.unlink(root / name)
    serve(root, "mine", 1.0)
    serve(root, "theirs", 2.0, user("fbrunner"))
    assert runs_of(root) == {"mine": "SUCCESS", "theirs": "SUCCESS"}
    return root


def restart_serves(root: Path) -> None:
    """A restart of the root daemon after the owner's command: it serves a new request,
    and the site is still its owner's."""
    serve(root, "later", 3.0, user("fbrunner"))
    assert runs_of(root).get("later") == "SUCCESS"
    owner_runs(root, "report")


def test_what_the_root_daemon_made_is_the_site_owners(served: Path) -> None:
    """Every folder the daemon made, and every file its owner must open for writing in
    place, is the owner's; the files written by rename into the owner's folders may be
    root's (the owner can replace and remove them)."""
    owner = served.stat().st_uid
    left = root_owned(served)
    kept = [p for p in left if not p.startswith(("queue", "results/"))]
    assert kept == [], kept
    for rel in left:
        path = served / rel
        if rel.startswith("queue"):
            continue
        assert not path.is_dir(), rel  # every folder in results/ is the owner's
        assert path.parent.stat().st_uid == owner, rel
    for rel in ("daemon.lock", "claims-boot", "index.db", "reports-pending"):
        assert (served / rel).stat().st_uid == owner, rel
    assert (served / "index.db").stat().st_gid == served.stat().st_gid


def test_the_owners_report_writes_the_leaderboard(served: Path) -> None:
    board = served / "results" / "wf" / "leaderboard.json"
    before = board.stat().st_ino
    done = owner_runs(served, "report")
    assert "Error" not in done.stderr, done.stderr
    assert board.stat().st_ino != before  # written again
    restart_serves(served)


def versions(root: Path) -> list[str]:
    site = Site(root)
    try:
        return [v["version"] for v in api.show_workflow(site, "wf")["versions"]]
    finally:
        site.close()


def install_version2(root: Path) -> subprocess.CompletedProcess[str]:
    """The owner installs a changed template as ``wf``'s new version."""
    version2 = root.parent / "t2"
    shutil.copytree(root.parent / "t", version2)
    with (version2 / "workflow.yaml").open("a", encoding="utf-8") as fh:
        fh.write("\n# version 2\n")
    subprocess.run(["chown", "-R", str(root.stat().st_uid), str(version2)], check=True)
    return owner_runs(root, "install", str(version2), "--id", "wf")


def test_the_owners_install_of_a_new_version_writes_its_leaderboard(served: Path) -> None:
    done = install_version2(served)
    assert "not written" not in done.stderr, done.stderr
    assert len(versions(served)) == 2
    restart_serves(served)


def test_the_owners_runs_delete_removes_roots_and_a_participants_runs(served: Path) -> None:
    site = Site(served)
    ids = {row["name"]: row["id"] for row in api.list_runs(site)}
    site.close()
    owner_runs(served, "runs", "delete", ids["mine"], ids["theirs"])
    assert runs_of(served) == {}
    assert not (served / "results" / "wf" / "runs" / ids["theirs"]).exists()
    restart_serves(served)


def test_the_owners_cleanup_removes_the_runs(served: Path) -> None:
    owner_runs(served, "cleanup", "--before", "2100-01-01")
    assert runs_of(served) == {}
    runs = served / "results" / "wf" / "runs"
    assert [p for p in os.listdir(runs) if not p.startswith(".")] == []
    restart_serves(served)


def test_the_owners_retire_with_runs_removes_the_version_and_its_runs(served: Path) -> None:
    (first,) = versions(served)
    install_version2(served)
    owner_runs(served, "workflows", "retire", "wf", first, "--with-runs")
    assert runs_of(served) == {}
    assert first not in versions(served)
    restart_serves(served)


def test_the_owners_reindex_rebuilds_the_index(served: Path) -> None:
    owner_runs(served, "reindex")
    assert runs_of(served) == {"mine": "SUCCESS", "theirs": "SUCCESS"}
    restart_serves(served)


def test_roots_commands_run_as_the_owner_on_what_the_daemon_made(served: Path) -> None:
    """Root's write commands switch to the site's owner: the same commands work."""
    for args in (("report",), ("reindex",), ("cleanup", "--before", "2100-01-01")):
        done = flowbatch(served, *args)
        assert done.returncode == 0, (args, done.stderr)
    assert runs_of(served) == {}
    restart_serves(served)


def test_a_root_daemon_gives_the_owner_what_an_older_one_made_roots(
    served: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A site an older flowbatch's root daemon served: what it made is root's, and the
    owner's commands fail there. The next root daemon gives it to the owner at its
    start, once, and says so in its log."""
    older = ["daemon.lock", "claims-boot", "index.db", "reports-pending", "results/wf"]
    for rel in older:
        subprocess.run(["chown", "-R", "root:root", str(served / rel)], check=True)
    site = Site(served)
    ids = [row["id"] for row in api.list_runs(site)]
    site.close()
    refused = flowbatch(served, "runs", "delete", *ids, user=served.stat().st_uid)
    assert refused.returncode == 1  # what the repair is for
    with caplog.at_level(logging.WARNING, logger="flowbatch.daemon"):
        serve(served, "later", 3.0, user("fbrunner"))
    said = [r.getMessage() for r in caplog.records if "older root daemon" in r.getMessage()]
    assert len(said) == 1 and "gave the site's owner fbsvc2" in said[0], said
    assert "results/wf/runs" in said[0]
    folders = [rel for rel in root_owned(served) if (served / rel).is_dir()]
    assert [rel for rel in folders if not rel.startswith("queue")] == []
    for rel in ("daemon.lock", "claims-boot", "index.db"):
        assert (served / rel).stat().st_uid == served.stat().st_uid, rel
    owner_runs(served, "runs", "delete", *ids)
    assert set(runs_of(served)) == {"later"}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flowbatch.daemon"):
        restart_serves(served)  # nothing left to give: said no more
    assert "older root daemon" not in caplog.text
