"""A root daemon taking back a run's folder (``takeback.take_back``) leaves its user able
to read what they could read: found by review, a file or folder the run kept to its user
(0600, 0700) became the tree owner's 0600 / 0700, and the user could no longer read their
own outputs and logs. Such entries now get an ACL entry of the user's (``r--``, ``r-x``
for a folder), checked here with Debian's ``getfacl``, and nobody else gets more."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowbatch import takeback

from .test_take_back_links import USER, as_user, foreign_run, run_folder

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon's take-back")

#: what the run writes: a file and a folder (with a file) kept to its user, a public file
PRIVATE_OUTPUTS = [
    "echo secret > secret.txt && mkdir priv && echo log > priv/log.txt",
    "echo public > public.txt",
    "chmod 600 secret.txt priv/log.txt && chmod 700 priv && chmod 644 public.txt",
    """echo '{"score": 1}' > results.json""",
]


def as_uid(uid: int, script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``script`` run by ``sh`` as the user ``uid`` (its own group, no other) in ``cwd``."""
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "sh", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def stranger() -> int:
    """A uid that no account has: another unprivileged user, not the run's."""
    for uid in range(64000, 65000):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    raise AssertionError("no free uid")  # pragma: no cover


def acl_of(path: Path) -> list[str]:
    """The ACL of ``path`` as Debian's ``getfacl`` shows it (numeric ids, no header)."""
    done = subprocess.run(
        ["getfacl", "--numeric", "--omit-header", "--absolute-names", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in done.stdout.splitlines() if line]


needs_getfacl = pytest.mark.skipif(
    shutil.which("getfacl") is None, reason="Debian's getfacl (apt-get install acl)"
)


def test_the_runs_user_still_reads_what_they_kept_private(public_tmp: Path, tmp_path: Path) -> None:
    site, shown = foreign_run(public_tmp, tmp_path, PRIVATE_OUTPUTS)
    assert shown["state"] == "SUCCESS", shown["messages"]
    folder = Path(shown["run_dir"])
    tree = folder.parent.stat().st_uid
    for name in ("secret.txt", "priv", "priv/log.txt", "public.txt"):
        assert (folder / name).stat().st_uid == tree, name  # taken back all the same
    assert stat.S_IMODE((folder / "secret.txt").stat().st_mode) & 0o007 == 0
    assert stat.S_IMODE((folder / "priv").stat().st_mode) & 0o007 == 0
    # the run's user reads all three, and lists the folder
    for name, text in (("secret.txt", "secret"), ("priv/log.txt", "log"), ("public.txt", "public")):
        done = as_uid(USER, f"cat {name}", folder)
        assert (done.returncode, done.stdout) == (0, f"{text}\n"), (name, done.stderr)
    assert as_uid(USER, "ls priv", folder).stdout == "log.txt\n"
    # and can change, remove or add nothing
    for change in (
        "echo x >> secret.txt",
        "echo x >> priv/log.txt",
        "echo x >> public.txt",
        "rm -f secret.txt",
        "rm -f priv/log.txt",
        "rm -f public.txt",
        "rm -rf priv",
        "touch priv/new",
        "chmod 666 secret.txt",
        "setfacl -m u:65534:rw secret.txt 2>/dev/null || exit 1",
    ):
        assert as_uid(USER, change, folder).returncode != 0, change
    for name, text in (("secret.txt", "secret"), ("priv/log.txt", "log"), ("public.txt", "public")):
        assert (folder / name).read_text() == f"{text}\n", name
    # another user reads only what was open to others
    other = stranger()
    for private in ("cat secret.txt", "cat priv/log.txt", "ls priv"):
        assert as_uid(other, private, folder).returncode != 0, private
    assert as_uid(other, "cat public.txt", folder).stdout == "public\n"
    assert not any("only its user could read" in m for m in shown["messages"])
    site.close()


@needs_getfacl
def test_getfacl_reads_the_entries_take_back_writes(public_tmp: Path, tmp_path: Path) -> None:
    """The ACL, written in its binary form by hand, is what ``getfacl`` reads: the user's
    entry, a mask that lets only it and the group's bits through, nothing for others;
    an entry already open to others gets none."""
    site, shown = foreign_run(public_tmp, tmp_path, PRIVATE_OUTPUTS)
    assert shown["state"] == "SUCCESS", shown["messages"]
    folder = Path(shown["run_dir"])
    file_acl = ["user::rw-", f"user:{USER}:r--", "group::---", "mask::r--", "other::---"]
    assert acl_of(folder / "secret.txt") == file_acl
    assert acl_of(folder / "priv" / "log.txt") == file_acl
    dir_acl = ["user::rwx", f"user:{USER}:r-x", "group::---", "mask::r-x", "other::---"]
    assert acl_of(folder / "priv") == dir_acl
    assert acl_of(folder / "public.txt") == ["user::rw-", "group::r--", "other::r--"]
    assert acl_of(folder) == ["user::rwx", "group::r-x", "other::r-x"]
    site.close()


@needs_getfacl
def test_an_acl_the_user_set_gives_nobody_more(tmp_path: Path) -> None:
    """A run's user may set an ACL on their file (here: another user may read it, the
    group not): the take-back's ACL replaces it, the group keeping its own entry (not
    the mask's bits), the other user's entry gone."""
    run = run_folder(tmp_path)
    shared = run / "out" / "shared.txt"
    shared.write_text("shared\n")
    as_user(shared)
    subprocess.run(["setfacl", "-m", "u::rw,g::-,u:4242:r,m::rw,o::-", str(shared)], check=True)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o660  # the mask shows as the group's
    assert takeback.take_back(run, USER).notes == []
    assert acl_of(shared) == [
        "user::rw-",
        f"user:{USER}:r--",
        "group::---",
        "mask::r--",
        "other::---",
    ]


def test_a_private_file_with_a_name_outside_gets_a_copy_its_user_reads(tmp_path: Path) -> None:
    """A file with another name outside the run folder is replaced by a copy of the
    tree's: a private one is still readable by its user, as a copy."""
    tmp_path.chmod(0o755)
    run = run_folder(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    as_user(home)
    kept = run / "out" / "kept.txt"
    kept.write_text("kept\n")
    kept.chmod(0o600)
    as_user(kept)
    os.link(kept, home / "keep")
    assert takeback.take_back(run, USER).notes == []
    copy = kept.stat()
    assert copy.st_ino != (home / "keep").stat().st_ino and copy.st_uid == 0
    assert as_uid(USER, "cat out/kept.txt", run).stdout == "kept\n"
    assert as_uid(USER, "echo x >> out/kept.txt", run).returncode != 0
    assert as_uid(stranger(), "cat out/kept.txt", run).returncode != 0


@pytest.fixture
def no_acls(public_tmp: Path) -> Iterator[Path]:
    """A folder other users may traverse on a file system that keeps no ACLs (ramfs: no
    extended attributes at all), unmounted at the end."""
    mount = public_tmp / "ramfs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "ramfs", "-o", "mode=0755", "flowbatch-test", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a ramfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount)], check=True)  # still held open


def test_without_acls_private_outputs_stay_closed_and_say_so(no_acls: Path) -> None:
    """Where the results tree keeps no ACLs, what the run kept to its user is not opened
    to others so that its user can read it: it stays the tree owner's alone, and the
    take-back's note (the run's messages) says how many, the first, and why."""
    run = run_folder(no_acls)
    secret = run / "out" / "secret.txt"
    secret.write_text("secret\n")
    secret.chmod(0o600)
    public = run / "out" / "public.txt"
    public.write_text("public\n")
    for path in (secret, public):
        as_user(path)
    (run / "out").chmod(0o700)
    (note,) = takeback.take_back(run, USER).notes
    assert note.startswith("2 file(s) or folder(s) of the run that only its user could read")
    assert "(the first: out)" in note  # the folder is taken before what it holds
    assert "(Operation not supported)" in note and "mount the results tree" in note
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and secret.stat().st_uid == 0
    assert stat.S_IMODE((run / "out").stat().st_mode) == 0o700
    assert as_uid(USER, "cat out/secret.txt", run).returncode != 0
    assert as_uid(stranger(), "cat out/public.txt", run).returncode != 0  # out is closed


def test_a_private_files_setgid_and_sticky_bits_go_as_before(tmp_path: Path) -> None:
    """An ACL sets the permission bits and keeps the others: the setgid bit of a file
    without group execution (which a chown keeps) and the sticky bit go first, as they
    did without an ACL."""
    tmp_path.chmod(0o755)
    run = run_folder(tmp_path)
    odd = run / "out" / "odd.txt"
    odd.write_text("odd\n")
    as_user(odd)
    odd.chmod(0o3600)
    assert takeback.take_back(run, USER).notes == []
    assert stat.S_IMODE(odd.stat().st_mode) == 0o640  # the group's bits are the ACL's mask
    assert as_uid(USER, "cat out/odd.txt", run).stdout == "odd\n"
