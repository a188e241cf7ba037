"""A root daemon taking back a run's folder (``takeback.take_back``) leaves none of the
default ACLs its user set on the folders: found by review, ``setfacl -d -m u:other:rwx``
made during the run survived the take-back, and what the daemon or the post-processing
made there later inherited ``other``'s entry (a default ACL overrides the umask). Each
folder now keeps the default ACL the results tree gives (``runs/``'s, inherited by
every folder made in it), none where the tree has none; the access ACL entries the
take-back gives (``user:<uid>:r-x``) stay. Checked with Debian's ``getfacl``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from flowbatch import takeback

from .test_take_back_links import USER, as_user, foreign_run, run_folder
from .test_take_back_private import acl_of, as_uid, needs_getfacl, stranger

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon's take-back"),
    needs_getfacl,
]


def default_acl_of(path: Path) -> list[str]:
    """The default ACL of the folder ``path`` as ``getfacl`` shows it (none: [])."""
    done = subprocess.run(
        ["getfacl", "--default", "--numeric", "--omit-header", "--absolute-names", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in done.stdout.splitlines() if line]


def test_default_acls_the_runs_user_set_are_removed(tmp_path: Path) -> None:
    """The user's default ACLs go from every folder, an open one, a private one (which
    keeps the access entry the take-back gives its user) and the run folder itself: a
    file the daemon makes there afterwards is not another user's to write."""
    tmp_path.chmod(0o755)
    run = run_folder(tmp_path)
    other = stranger()
    done = as_uid(USER, "mkdir -m 700 out/priv && mkdir out/priv/sub", run)
    assert done.returncode == 0, done.stderr
    for folder in (".", "out", "out/priv", "out/priv/sub"):
        done = as_uid(USER, f"setfacl -d -m u:{other}:rwx {folder}", run)
        assert done.returncode == 0, done.stderr
        assert f"user:{other}:rwx" in default_acl_of(run / folder), folder
    assert takeback.take_back(run, USER).notes == []
    for folder in (".", "out", "out/priv", "out/priv/sub"):
        assert default_acl_of(run / folder) == [], folder
    dir_acl = ["user::rwx", f"user:{USER}:r-x", "group::---", "mask::r-x", "other::---"]
    assert acl_of(run / "out" / "priv") == dir_acl  # the take-back's own entry stays
    later = run / "out" / "later.txt"  # what the daemon writes after the run's end
    later.write_text("the daemon's\n", encoding="utf-8")
    assert not any(str(other) in line for line in acl_of(later))
    assert as_uid(other, "echo theirs >> out/later.txt", run).returncode != 0
    assert later.read_text(encoding="utf-8") == "the daemon's\n"


def test_the_default_acl_the_results_tree_gives_stays(tmp_path: Path) -> None:
    """A site whose ``runs/`` has a default ACL (an admin's ``setfacl -d``): the folders
    of a run inherited it, and keep it; only the user's entries go, from a folder they
    changed, and a folder whose default they removed gets none back."""
    tmp_path.chmod(0o755)
    runs = tmp_path / "runs"
    runs.mkdir()
    reader = stranger()
    subprocess.run(["setfacl", "-d", "-m", f"u:{reader}:r-x", str(runs)], check=True)
    given = default_acl_of(runs)
    assert f"user:{reader}:r-x" in given
    run = runs / "r1"
    (run / "out").mkdir(parents=True)  # inherit the tree's default
    for folder in (run, run / "out"):
        as_user(folder)
    other = reader + 1
    done = as_uid(USER, f"mkdir kept changed cleared && setfacl -d -m u:{other}:rwx . changed", run)
    assert done.returncode == 0, done.stderr
    assert as_uid(USER, "setfacl -k cleared", run).returncode == 0
    assert takeback.take_back(run, USER).notes == []
    for folder in (run, run / "out", run / "kept", run / "changed"):
        assert default_acl_of(folder) == given, folder
    assert default_acl_of(run / "cleared") == []


def test_a_real_runs_default_acls_are_gone_at_its_end(public_tmp: Path, tmp_path: Path) -> None:
    """A run of another user served by a root daemon sets default ACLs for a third user
    on its folder and a folder of its outputs: none is left once the run ended."""
    other = stranger()
    commands = [
        f"mkdir outputs && setfacl -d -m u:{other}:rwx . outputs",
        """echo '{"score": 1}' > results.json""",
    ]
    site, shown = foreign_run(public_tmp, tmp_path, commands)
    assert shown["state"] == "SUCCESS", shown["messages"]
    folder = Path(shown["run_dir"])
    for path in (folder, folder / "outputs", folder / "logs"):
        assert default_acl_of(path) == [], path
    site.close()
