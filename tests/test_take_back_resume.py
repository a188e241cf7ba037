"""A take-back cut short (``takeback.take_back``: the daemon killed, the host down) is
done whole by the next one, with the same owners, modes and ACLs as a take-back never
cut. Found by review: the folder is the tree's first, then its mode and ACL are set;
killed in between, a folder the run kept to its user (0700) stayed without the ACL entry
that lets its user read it, a file writable by others (0666) stayed so as the tree's,
and the next take-back passed them by as the tree's already.

The cuts are real: a ``flowbatch.faults`` point (``FLOWBATCH_CRASH_AT``) kills a process
taking back a run folder at the N-th folder, file or copy, for every N until one runs
to its end; the next take-back (this process's) must leave what one never cut leaves
beside it. The run folders hold what a take-back treats apart: private files and
folders, a file others could write, a setuid program, ACLs and default ACLs of the
user's, hard links inside the folder and with a name outside, the result file (a copy
of its own), a FIFO, a link out, a folder of the daemon's and folders past the depth."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flowbatch import takeback

from .conftest import account
from .test_take_back_links import USER, as_user, sparse
from .test_take_back_private import as_uid, needs_getfacl, stranger

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon's take-back"),
    needs_getfacl,
]

#: the depth past which the run folders' take-backs close folders (here as in the child)
DEPTH = 3
#: a take-back in a process of its own, which a fault point may kill
CHILD = """
import sys
from pathlib import Path
from flowbatch import takeback
takeback.TAKE_BACK_DEPTH = int(sys.argv[3])
takeback.take_back(Path(sys.argv[1]), int(sys.argv[2]), ["results.json"])
"""


def hostile_run(root: Path, tree_owner: int) -> Path:
    """A run folder ``root/runs/r1`` (``runs/`` of ``tree_owner``'s) as the run of
    :data:`USER` left it, with a folder of its outside the run folder beside it."""
    root.mkdir()
    root.chmod(0o755)
    runs = root / "runs"
    runs.mkdir()
    os.chown(runs, tree_owner, tree_owner)
    outside = root / "outside"
    outside.mkdir()
    as_user(outside)
    run = runs / "r1"
    run.mkdir()
    as_user(run)
    other = stranger()
    script = f"""
set -e
mkdir -p out/sub logs status
mkdir -m 700 priv
echo log > priv/log.txt && chmod 600 priv/log.txt
echo secret > secret.txt && chmod 600 secret.txt
echo open > out/open.txt && chmod 666 out/open.txt
printf '#!/bin/sh\\n' > out/prog && chmod 4755 out/prog
echo shared > out/shared.txt && setfacl -m u:{other}:rw,g::-,o::- out/shared.txt
mkdir -m 700 out/acl && setfacl -m u:{other}:rwx out/acl
setfacl -d -m u:{other}:rwx . out out/sub
echo twice > out/a && ln out/a out/sub/a2
echo kept > out/kept && ln out/kept ../../outside/keep
echo mine > out/mine && chmod 600 out/mine && ln out/mine out/sub/mine2
ln out/mine ../../outside/mine
echo '{{"score": 1}}' > results.json
mkfifo out/pipe && ln -s /etc/passwd out/up && ln -s ../secret.txt out/in
mkdir -p out/d/d/d/d/d && echo deep > out/d/d/d/d/d/f.txt && chmod 500 out/d/d/d/d
"""
    done = as_uid(USER, script, run)
    assert done.returncode == 0, done.stderr
    sparse(run / "out" / "holes", 1 << 20)
    # the daemon's: a retried run's attempt folder (root's) with the logs it moved there
    (run / "attempts" / "1").mkdir(parents=True)
    os.rename(run / "logs", run / "attempts" / "1" / "logs")
    return run


def _xattr(path: Path, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError as exc:
        assert exc.errno == errno.ENODATA, exc
        return None


def snapshot(run: Path) -> dict[str, tuple[Any, ...]]:
    """What a take-back decides of each entry beneath ``run``: its kind, owner, group,
    mode, access and default ACL, and its content (a file's bytes, a link's text)."""
    shown: dict[str, tuple[Any, ...]] = {}
    for top, dirs, files in os.walk(run):
        for name in [".", *dirs, *files]:
            path = Path(top) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                shown[str(path.relative_to(run))] = ("link", st.st_uid, os.readlink(path))
                continue
            acls = (
                _xattr(path, "system.posix_acl_access"),
                _xattr(path, "system.posix_acl_default"),
            )
            content = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
            kind = stat.S_IFMT(st.st_mode)
            shown[str(path.relative_to(run))] = (
                kind,
                st.st_uid,
                st.st_gid,
                st.st_mode,
                acls,
                content,
            )
    return shown


def cut_at(run: Path, point: str, count: int) -> bool:
    """A take-back of ``run`` in a process of its own, killed at the ``count``-th time
    it reached ``point``: whether it was (else it ran to its end)."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(run), str(USER), str(DEPTH)],
        env={**os.environ, "FLOWBATCH_CRASH_AT": f"{point}:{count}"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode in (0, -signal.SIGKILL), done.stderr
    return done.returncode == -signal.SIGKILL


@pytest.fixture(params=["root's tree", "a service user's tree"])
def tree_owner(request: pytest.FixtureRequest) -> int:
    return 0 if request.param == "root's tree" else account("fbtree").pw_uid


@pytest.mark.parametrize("point", ["take-back-folder", "take-back-file", "take-back-copy"])
def test_a_take_back_cut_anywhere_is_done_whole_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str, tree_owner: int
) -> None:
    monkeypatch.setattr(takeback, "TAKE_BACK_DEPTH", DEPTH)
    whole = hostile_run(tmp_path / "whole", tree_owner)
    takeback.take_back(whole, USER, ["results.json"])
    expected = snapshot(whole)
    assert expected["out/open.txt"][3] & 0o777 == 0o644  # the hazards were there
    assert expected["priv"][4][0] is not None  # an ACL of the user's
    cuts = 0
    while True:
        run = hostile_run(tmp_path / f"cut{cuts + 1}", tree_owner)
        if not cut_at(run, point, cuts + 1):
            break
        cuts += 1
        assert snapshot(run) != expected, f"{point}:{cuts} cut nothing short"
        takeback.take_back(run, USER, ["results.json"])
        assert snapshot(run) == expected, f"cut at {point}:{cuts}"
        outside = tmp_path / f"cut{cuts}" / "outside"
        assert {p.stat().st_uid for p in outside.iterdir()} == {USER}
    assert cuts >= (3 if point == "take-back-copy" else 5)


def test_a_take_back_done_again_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tree_owner: int
) -> None:
    monkeypatch.setattr(takeback, "TAKE_BACK_DEPTH", DEPTH)
    run = hostile_run(tmp_path / "run", tree_owner)
    takeback.take_back(run, USER, ["results.json"])
    done = snapshot(run)
    inodes = {p: p.lstat().st_ino for p in run.rglob("*")}
    takeback.take_back(run, USER, ["results.json"])
    assert snapshot(run) == done
    assert {p: p.lstat().st_ino for p in run.rglob("*")} == inodes  # no copy made again


def test_a_folder_taken_and_not_yet_opened_to_its_user_is_the_next_time(tmp_path: Path) -> None:
    """Where the cut of the review left the folder (the tree's, as the user kept it) and a
    file (the tree's, writable by others): the next take-back gives the folder the ACL
    entry of its user, and the file loses group and other write."""
    tmp_path.chmod(0o755)
    run = tmp_path / "runs" / "r1"
    (run / "priv").mkdir(parents=True)
    (run / "priv").chmod(0o700)
    (run / "priv" / "log.txt").write_text("log\n", encoding="utf-8")
    (run / "open.txt").write_text("open\n", encoding="utf-8")
    (run / "open.txt").chmod(0o666)
    for path in (run / "priv" / "log.txt",):
        as_user(path)  # not yet taken
    takeback.take_back(run, USER)
    assert as_uid(USER, "cat priv/log.txt", run).stdout == "log\n"
    assert stat.S_IMODE((run / "open.txt").stat().st_mode) == 0o644
    assert as_uid(stranger(), "echo x >> open.txt", run).returncode != 0
