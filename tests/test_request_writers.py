"""A run is made as its request file's owner: a request someone else could have written
(a group's or everyone's write bit, an ACL, another name of the file) is refused, and
kept in ``rejected/`` beside its error."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowbatch import api
from flowbatch.site import Site

from .conftest import (
    SCORE_TEMPLATE,
    drop,
    make_site,
    run_until_idle,
    write_template,
)
from .test_robust import _user, needs_root

pytestmark = needs_root


def _site(public_tmp: Path) -> Site:
    site = make_site(public_tmp / "site")
    api.install(site, write_template(public_tmp / "tpl", SCORE_TEMPLATE), workflow_id="wf")
    return site


def _shared_group() -> grp.struct_group:
    """fbextra, a group fbrunner is a member of beside others (as a project's group)."""
    subprocess.run(["groupadd", "-f", "fbextra"], check=True)
    subprocess.run(["usermod", "-aG", "fbextra", "fbrunner"], check=True)
    subprocess.run(["usermod", "-aG", "fbextra", "nobody"], check=True)
    return grp.getgrnam("fbextra")


def _rejected(site: Site, name: str) -> dict[str, object]:
    folder = site.layout.rejected
    assert (folder / name).is_file(), sorted(p.name for p in folder.iterdir())
    return dict(yaml.safe_load((folder / f"{name}.error.yaml").read_text()))


def _runs(site: Site) -> list[dict[str, object]]:
    return api.list_runs(site)


@pytest.mark.parametrize(
    ("mode", "group", "refused"),
    [
        (0o664, "fbextra", "is writable by the group fbextra (mode 0664, or an ACL)"),
        (0o646, "own", "is writable by every user (mode 0646)"),
        (0o664, "own", None),  # the owner's private group (umask 002 on many clusters)
        (0o644, "fbextra", None),
    ],
)
def test_a_request_others_could_write_is_refused(
    public_tmp: Path, mode: int, group: str, refused: str | None
) -> None:
    user = _user("fbrunner")
    gid = _shared_group().gr_gid if group == "fbextra" else user.pw_gid
    assert grp.getgrgid(user.pw_gid).gr_name == "fbrunner"  # a user-private group
    site = _site(public_tmp)
    path = drop(site, "r.yaml", {"workflow": "wf", "arguments": {"score": 2}})
    os.chown(path, user.pw_uid, gid)
    os.chmod(path, mode)
    run_until_idle(site)
    if refused is None:
        (run,) = _runs(site)
        assert run["state"] == "SUCCESS" and run["owner"] == "fbrunner"
        return
    assert _runs(site) == []
    error = _rejected(site, "r.yaml")
    assert refused in str(error["reason"]) and "fbrunner" in str(error["reason"])
    assert "chmod go-w" in str(error["hint"]) and error["file"] == "r.yaml"


def test_another_name_of_a_file_is_no_request(public_tmp: Path) -> None:
    """A hard link in the queue to a file of another user's (one the dropper may write,
    as `fs.protected_hardlinks` requires): the run would be its owner's."""
    user = _user("fbrunner")
    site = _site(public_tmp)
    original = public_tmp / "keep.yaml"
    original.write_text(yaml.safe_dump({"workflow": "wf", "arguments": {"score": 3}}))
    os.chown(original, user.pw_uid, user.pw_gid)
    before = original.read_bytes()
    tmp = site.layout.queue / ".r.yaml.tmp"
    os.link(original, tmp)
    os.rename(tmp, site.layout.queue / "r.yaml")
    run_until_idle(site)
    assert _runs(site) == []
    error = _rejected(site, "r.yaml")
    assert "has 2 names (hard links)" in str(error["reason"])
    assert "not `ln`" in str(error["hint"])
    # the other name is left as it was, its owner's
    assert original.read_bytes() == before and original.stat().st_uid == user.pw_uid


def _acl(entries: list[tuple[int, int, int]]) -> bytes:
    """A POSIX ACL as the kernel takes it in ``system.posix_acl_access``: version 2,
    then (tag, permissions, id) per entry, in the order of their tags."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


USER_OBJ, USER, GROUP_OBJ, MASK, OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
UNDEFINED = 0xFFFFFFFF


def test_a_request_an_acl_lets_another_user_write_is_refused(public_tmp: Path) -> None:
    """An ACL naming another user (its mask shows as the group bits) is no private group,
    even where the file's group is the owner's own."""
    user = _user("fbrunner")
    other = pwd.getpwnam("nobody")
    site = _site(public_tmp)
    path = drop(site, "r.yaml", {"workflow": "wf", "arguments": {"score": 2}})
    os.chown(path, user.pw_uid, user.pw_gid)
    os.chmod(path, 0o644)
    acl = _acl(
        [
            (USER_OBJ, 6, UNDEFINED),
            (USER, 6, other.pw_uid),
            (GROUP_OBJ, 4, UNDEFINED),
            (MASK, 6, UNDEFINED),
            (OTHER, 4, UNDEFINED),
        ]
    )
    os.setxattr(path, "system.posix_acl_access", acl)  # no setfacl needed
    assert path.stat().st_mode & 0o777 == 0o664  # the mask, in the group bits
    run_until_idle(site)
    assert _runs(site) == []
    assert "or an ACL" in str(_rejected(site, "r.yaml")["reason"])


# A claim of the daemon's own user found after a crash half-way through a sweep has the
# names intake linked into its run folders: tests/test_sweeps.py's crash test fails when
# they are counted.


FILE_TEMPLATE = """
workflow:
  steps:
    - name: count
      action:
        commands:
          - >-
            printf '{"score": %s}' "$(wc -l < data/names.txt)" > r.json
parameters:
  - {name: names, label: Names, dtype: file, target: data/names.txt}
results:
  file: r.json
  schema: [{name: score, label: Score, dtype: float}]
"""


def _hello(public_tmp: Path) -> Site:
    """A workflow that reads one input file (run as other users: no Python needed)."""
    site = make_site(public_tmp / "site")
    api.install(site, write_template(public_tmp / "ftpl", FILE_TEMPLATE), workflow_id="hello")
    return site


@pytest.mark.parametrize(("mode", "refused"), [(0o664, True), (0o644, False)])
def test_an_input_file_others_could_write_is_refused(
    public_tmp: Path, mode: int, refused: bool
) -> None:
    """The run reads (or runs) its input files as its owner's: an input a project group
    may write is refused as the request would be, naming the file and the fix."""
    user = _user("fbrunner")
    shared = _shared_group()
    site = _hello(public_tmp)
    doc = {"workflow": "hello", "arguments": {"names": "n.txt"}}
    path = drop(site, "r.yaml", doc, files={"n.txt": "Ann\n"})
    names = site.layout.queue / "n.txt"
    for p in (path, names):
        os.chown(p, user.pw_uid, shared.gr_gid)
    os.chmod(path, 0o644)
    os.chmod(names, mode)
    run_until_idle(site)
    if not refused:
        (run,) = _runs(site)
        assert run["state"] == "SUCCESS"
        return
    assert _runs(site) == []
    error = _rejected(site, "r.yaml")
    assert "file 'n.txt' is writable by the group fbextra" in str(error["reason"])
    assert error[
        "field"
    ] == "arguments.names" and f"chmod go-w {site.layout.queue / 'n.txt'}" in str(error["hint"])


def test_submit_sends_files_only_their_owner_writes_whatever_the_umask(
    public_tmp: Path, tmp_path: Path
) -> None:
    """umask 002 (RHEL's for user-private groups) made the bundle's copies group
    writable: `flowbatch submit` writes them 0644 in folders 0755, so intake takes them."""
    site = _hello(public_tmp)
    (tmp_path / "n.txt").write_text("Ann\n")
    request = tmp_path / "r.yaml"
    request.write_text(yaml.safe_dump({"workflow": "hello", "arguments": {"names": "n.txt"}}))
    old = os.umask(0o002)
    try:
        queued = api.submit(site, request)
    finally:
        os.umask(old)
    bundle = site.layout.queue / (Path(queued).stem + ".files")
    modes = {p.name: p.stat().st_mode & 0o777 for p in [bundle, *bundle.rglob("*")]}
    assert set(modes.values()) <= {0o755, 0o644} and 0o644 in modes.values(), modes
    run_until_idle(site)
    (run,) = _runs(site)
    assert run["state"] == "SUCCESS"


def test_a_private_group_that_is_another_users_primary_group_is_no_private_group(
    public_tmp: Path,
) -> None:
    """A group named as its owner with no member listed is still shared when another
    user has it as their primary group (the member list leaves such users out)."""
    user = _user("fbrunner")
    if "fbmate" not in {e.pw_name for e in pwd.getpwall()}:
        subprocess.run(["useradd", "-M", "-g", str(user.pw_gid), "fbmate"], check=True)
    try:
        from flowbatch.accounts import _primary_groups

        _primary_groups.forget()  # type: ignore[attr-defined]
        site = _site(public_tmp)
        path = drop(site, "r.yaml", {"workflow": "wf", "arguments": {"score": 2}})
        os.chown(path, user.pw_uid, user.pw_gid)
        os.chmod(path, 0o664)
        run_until_idle(site)
        assert _runs(site) == []
        assert "writable by the group fbrunner" in str(_rejected(site, "r.yaml")["reason"])
    finally:
        subprocess.run(["userdel", "fbmate"], check=True)
        _primary_groups.forget()  # type: ignore[attr-defined]


def test_submit_builds_its_bundle_where_no_one_else_can_open_it(
    public_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under umask 002 a copy is group writable until its chmod: the folder it is built
    in is the user's alone (0700) meanwhile, so no one can open the copy for writing
    (a descriptor opened then would outlive the chmod)."""
    site = _hello(public_tmp)
    (tmp_path / "n.txt").write_text("Ann\n")
    request = tmp_path / "r.yaml"
    request.write_text(yaml.safe_dump({"workflow": "hello", "arguments": {"names": "n.txt"}}))
    seen: list[int] = []
    real = shutil.copyfile

    def copy(src: Any, dest: Any) -> Any:
        out = real(src, dest)
        building = next(p for p in Path(dest).parents if p.name.endswith(".files.tmp"))
        seen.append(building.stat().st_mode & 0o777)
        return out

    monkeypatch.setattr(shutil, "copyfile", copy)
    old = os.umask(0o002)
    try:
        api.submit(site, request)
    finally:
        os.umask(old)
    assert seen == [0o700]
