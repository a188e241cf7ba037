"""Review of a root daemon serving a service user's site (store/owner.py and its
callers), on real parts: a real root daemon in this process, the site owned by a real
user (``fbsvc2``), the folders it must not touch made as root outside the site."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import pytest

from flowbatch.daemon import Daemon
from flowbatch.site import Site

from .conftest import make_site

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon gives folders away")


def user(name: str) -> pwd.struct_passwd:
    """The account ``name``, made if this machine has none."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], check=True)
        return pwd.getpwnam(name)


def service_site(folder: Path) -> Path:
    """A site its service user owns, its queue's folders root's (docs/admins.md)."""
    owner = user("fbsvc2")
    site = make_site(folder / "site")
    site.close()
    root = site.root
    subprocess.run(["chown", "-R", f"{owner.pw_uid}:{owner.pw_gid}", str(root)], check=True)
    for name in ("queue", "queue/.claimed", "queue/rejected"):
        os.chown(root / name, 0, 0)
    return root


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
