"""Review of a root daemon serving a service user's site (store/owner.py and its
callers), on real parts: a real root daemon in this process, the site owned by a real
user (``fbsvc2``), the folders it must not touch made as root outside the site."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowbatch import api, waiting
from flowbatch.daemon import Daemon
from flowbatch.errors import FlowbatchError
from flowbatch.site import Site

from .conftest import SCORE_TEMPLATE, account, drop, make_site, run_until_idle, write_template
from .test_root_daemon_service_site import owner_runs, runs_of, serve, service_site
from .test_wait import TEMPLATE as WAIT_TEMPLATE

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon gives folders away")


user = account


def start_and_stop(root: Path) -> None:
    """A root daemon starts on the site (its repair runs then) and stops."""
    daemon = Daemon(Site(root))
    try:
        daemon.start(serve=False)
    finally:
        daemon.stop()


def test_the_start_repair_gives_nothing_through_a_results_link(public_tmp: Path) -> None:
    """The site's owner replaces ``results`` (in their own site folder) by a link to a
    tree of root's elsewhere, here another site's results whose runs are root's. The
    repair looked at ``results`` itself without following it, then listed and walked it
    through the link, and gave the other tree's ``runs/`` and every root folder in its
    runs to the owner: a service user could take any root folder beneath a
    ``runs``, ``postproc`` or ``.trash`` folder on the machine."""
    root = service_site(public_tmp)
    elsewhere = public_tmp / "roots-site-results"
    inner = elsewhere / "wf" / "runs" / "r1" / "attempts"
    inner.mkdir(parents=True)
    (elsewhere / "wf" / ".trash" / "old").mkdir(parents=True)
    owner = root.stat()
    os.rmdir(root / "results")
    os.symlink(elsewhere, root / "results")
    os.lchown(root / "results", owner.st_uid, owner.st_gid)
    start_and_stop(root)
    for path in (elsewhere, *elsewhere.rglob("*")):
        assert path.lstat().st_uid == 0, path


@pytest.fixture
def wsite(tmp_path: Path) -> Iterator[Site]:
    """A site of root's with the waiting tests' workflow ``w`` (argument ``n``)."""
    site = make_site(tmp_path / "site")
    template = tmp_path / "template"
    template.mkdir()
    (template / "benchmark.yaml").write_text(WAIT_TEMPLATE, encoding="utf-8")
    api.install(site, template, workflow_id="w")
    yield site
    site.close()


def test_a_sweep_one_of_whose_records_is_refused_is_not_a_success(wsite: Site) -> None:
    """A sweep of two points, the record of one refused by the reader (here: no longer
    the daemon's, as one replaced from inside the run is). 1238507 raised the refusal
    only when no run of the request could be read: here the wait ended on the other
    run alone, a success (exit 0), the refused run left out of what it said. It says
    why the refused one cannot be read instead."""
    since = time.time()
    drop(wsite, "r.yaml", {"workflow": "w", "sweep": {"n": [1, 2]}})
    run_until_idle(wsite).stop()
    runs = sorted(api.list_runs(wsite), key=lambda row: row["id"])
    assert len(runs) == 2 and {r["state"] for r in runs} == {"SUCCESS"}
    record = wsite.store.run_dir(wsite.store.load(runs[1]["id"])) / "run.json"
    os.chown(record, 65534, 65534)
    with pytest.raises(FlowbatchError, match=r"not trusted|replaced"):
        waiting.wait_request(wsite, "r.yaml", timeout=10, since=since)


def test_a_reports_pending_link_gets_no_file_given_nor_removed(public_tmp: Path) -> None:
    """The site's owner replaces ``reports-pending`` (in their own site folder) by a link
    to a folder of root's elsewhere, which holds a file of root's named as a workflow
    of theirs (``wf``; an id may be ``passwd`` or ``x.sh`` as well). The daemon's note
    of the workflow's pending reports opened ``reports-pending/wf`` through the link
    and gave that file to the owner (a file created there was theirs too: a
    ``profile.d`` script), then removed it once the report was written. The note is
    now made in the folder itself, never through a link."""
    root = service_site(public_tmp)
    owner = root.stat()
    template = write_template(public_tmp / "t", SCORE_TEMPLATE)
    subprocess.run(["chown", "-R", f"{owner.st_uid}:{owner.st_gid}", str(template)], check=True)
    owner_runs(root, "install", str(template), "--id", "wf")
    elsewhere = public_tmp / "roots-folder"
    elsewhere.mkdir()
    (elsewhere / "wf").write_text("root's\n", encoding="utf-8")
    shutil.rmtree(root / "reports-pending", ignore_errors=True)
    os.symlink(elsewhere, root / "reports-pending")
    os.lchown(root / "reports-pending", owner.st_uid, owner.st_gid)
    serve(root, "mine", 1.0)
    assert runs_of(root) == {"mine": "SUCCESS"}
    assert (elsewhere / "wf").read_text(encoding="utf-8") == "root's\n"
    for path in (elsewhere, *elsewhere.iterdir()):
        assert path.lstat().st_uid == 0, path


def test_what_a_root_daemon_makes_through_a_results_link_stays_roots(
    public_tmp: Path,
) -> None:
    """The owner replaces ``results`` by a link to a folder of root's (a place on root's
    module path, say), then a request comes: the daemon makes the workflow's folders
    there, and gave them to the owner, who got a folder of a name of theirs in a place
    of root's (found by review). What the daemon makes in a folder the owner could not
    have made it in stays root's; in the owner's own folders it is still theirs."""
    root = service_site(public_tmp)
    wf = write_template(public_tmp / "t", SCORE_TEMPLATE)
    site = Site(root)
    api.install(site, wf, workflow_id="wf")
    site.close()
    owner = root.stat()
    elsewhere = public_tmp / "roots-place"
    elsewhere.mkdir(mode=0o755)
    shutil.rmtree(root / "results")
    os.symlink(elsewhere, root / "results")
    os.lchown(root / "results", owner.st_uid, owner.st_gid)
    site = Site(root)
    drop(site, "a.yaml", {"workflow": "wf", "arguments": {"score": 1}})
    run_until_idle(site).stop()
    made = [elsewhere / "wf", elsewhere / "wf" / "runs"]
    assert all(p.is_dir() for p in made)
    assert [p.lstat().st_uid for p in made] == [0, 0]
    # the same site with results/ a folder of the owner's: the daemon's folders are theirs
    site.close()
    os.unlink(root / "results")
    (root / "results").mkdir()
    os.chown(root / "results", owner.st_uid, owner.st_gid)
    site = Site(root)
    drop(site, "b.yaml", {"workflow": "wf", "arguments": {"score": 2}})
    run_until_idle(site).stop()
    assert (root / "results" / "wf" / "runs").lstat().st_uid == owner.st_uid
