"""Root's commands on a site another user owns (a service user's, docs/admins.md) run as
that user: what they write stays the site's. Found by review: a root ``reindex`` left
``index.db`` root's, and the service's daemon could no longer start (doctor said ok);
root's ``runs delete`` and ``install`` left root's ``.trash`` and template versions, on
which the owner's ``cleanup`` and ``uninstall`` then failed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowbatch import api
from flowbatch.cli import main

from .conftest import EXAMPLES, REPO, drop, make_site, run_until_idle
from .test_robust import _user, needs_root

#: an interpreter the site's owner can run after root's command became them (the venv's
#: links into /root, which others cannot enter): the system's, of the same version, with
#: the venv's packages on its path (as tests/test_participant_cli.py)
PYTHON = Path("/usr/bin/python3")


def as_site_owner(root: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``script`` run by the system's Python as the owner of the site folder ``root``
    (its uid and group, no other group), which must succeed: what the site's service
    user can do."""
    owner = root.stat()
    done = subprocess.run(
        [str(PYTHON), "-c", script, *args],
        user=owner.st_uid,
        group=owner.st_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


PATH = os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"]])


def flowbatch(site: Path, *args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    """The ``flowbatch`` program, as root (or as ``user``)."""
    return subprocess.run(
        [str(PYTHON), "-m", "flowbatch", "--site", str(site), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": PATH, "HOME": "/", "LANG": "C.UTF-8"},
        cwd="/",
        user=user,
        group=None if user is None else _user_gid(user),
        extra_groups=None if user is None else [],
    )


def _user_gid(uid: int) -> int:
    import pwd

    return pwd.getpwuid(uid).pw_gid


def root_owned(folder: Path) -> list[str]:
    found = []
    for top, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            path = Path(top) / name
            if path.lstat().st_uid == 0:
                found.append(str(path.relative_to(folder)))
    return sorted(found)


@pytest.fixture
def owned_site(public_tmp: Path) -> tuple[Path, int, str]:
    """A site with two ended runs (root's), then given whole to the service user."""
    if not PYTHON.exists():
        pytest.skip(f"no {PYTHON}")
    owner = _user("fbtest")
    site = make_site(public_tmp / "site")
    api.install(site, EXAMPLES / "helloworld", workflow_id="helloworld")
    for name in ("a", "b"):
        drop(site, f"{name}.yaml", {"workflow": "helloworld", "name": name})
    run_until_idle(site)
    run_id = api.list_runs(site)[0]["id"]
    site.close()
    subprocess.run(["chown", "-R", f"{owner.pw_uid}:{owner.pw_gid}", str(site.root)], check=True)
    return site.root, owner.pw_uid, run_id


@needs_root
def test_roots_commands_leave_the_site_its_owners(
    owned_site: tuple[Path, int, str], tmp_path: Path, public_tmp: Path
) -> None:
    root, owner, run_id = owned_site
    out = flowbatch(root, "reindex")
    assert out.returncode == 0, out.stderr
    # a run of root's, deleted by root become the owner: still root's right to
    out = flowbatch(root, "runs", "delete", run_id)
    assert out.returncode == 0, out.stderr
    version2 = public_tmp / "hw2"
    shutil.copytree(EXAMPLES / "helloworld", version2)
    with (version2 / "benchmark.yaml").open("a", encoding="utf-8") as fh:
        fh.write("\n# version 2\n")
    out = flowbatch(root, "install", str(version2), "--id", "hw2")
    assert out.returncode == 0, out.stderr
    assert root_owned(root) == []
    assert (root / "index.db").stat().st_uid == owner
    # the owner goes on with the site: its daemon starts, its uninstall and cleanup work
    out = flowbatch(root, "daemon", "--once", user=owner)
    assert out.returncode == 0, out.stderr
    out = flowbatch(root, "uninstall", "hw2", user=owner)
    assert out.returncode == 0, out.stderr
    out = flowbatch(root, "cleanup", "--before", "2100-01-01", user=owner)
    assert out.returncode == 0, out.stderr
    # a template only root can read: said so, not a bare permission error
    hidden = tmp_path / "hidden"  # pytest's folders are 0700, root's
    shutil.copytree(EXAMPLES / "helloworld", hidden)
    out = flowbatch(root, "install", str(hidden), "--id", "hidden")
    assert out.returncode == 1
    assert "runs this command as the site's owner, fbtest" in out.stderr, out.stderr


@needs_root
def test_an_index_another_user_left_is_named_with_its_fix(
    owned_site: tuple[Path, int, str],
) -> None:
    """An index root's ``reindex`` of an older flowbatch left: doctor fails it, and the
    owner's daemon says whose it is and how to give it back (it said "run it as the
    site's owner (root)")."""
    root, owner, _ = owned_site
    os.chown(root / "index.db", 0, 0)
    result = CliRunner().invoke(main, ["--site", str(root), "doctor"])
    assert result.exit_code == 1
    assert "index.db belongs to root, but the site's daemon runs as fbtest" in result.output
    assert "chown fbtest:" in result.output
    out = flowbatch(root, "daemon", "--once", user=owner)
    assert out.returncode == 1
    assert "which belongs to root, not to the site's owner (fbtest)" in out.stderr, out.stderr
    assert f"chown fbtest: {root / 'index.db'}" in out.stderr
