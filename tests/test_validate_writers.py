"""`flowbatch validate` reports a request file (or an input file beside it) that someone
but its owner could write, as the daemon would refuse it: the same message and fix, and
an exit status that is not 0. `submit`, which sends copies of its own, still takes it."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from flowbatch import api
from flowbatch.cli import main
from flowbatch.site import Site

from .conftest import drop, make_site, run_until_idle, write_template
from .test_request_writers import (
    FILE_TEMPLATE,
    GROUP_OBJ,
    MASK,
    OTHER,
    UNDEFINED,
    USER,
    USER_OBJ,
    _acl,
    _shared_group,
)
from .test_robust import _user, needs_root


def _site(tmp_path: Path) -> Site:
    site = make_site(tmp_path / "site")
    api.install(site, write_template(tmp_path / "tpl", FILE_TEMPLATE), workflow_id="hello")
    return site


def _validate(site: Path, path: Path) -> Result:
    return CliRunner().invoke(main, ["--site", str(site), "validate", str(path)])


REQUEST = {"workflow": "hello", "arguments": {"names": "names.txt"}}


def _request(folder: Path) -> Path:
    """A request and its input file, only their owner's (mode 0644)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "names.txt").write_text("a\nb\n")
    (folder / "names.txt").chmod(0o644)
    path = folder / "r.yaml"
    path.write_text(yaml.safe_dump(REQUEST))
    path.chmod(0o644)
    return path


def _world(path: Path) -> str:
    path.chmod(0o666)
    return "is writable by every user (mode 0666)"


def _linked(path: Path) -> str:
    os.link(path, path.parent.parent / f"{path.parent.name}-{path.name}.link")
    return "has 2 names (hard links), and other names reach the same file"


def _group(path: Path) -> str:
    os.chown(path, -1, _shared_group().gr_gid)
    path.chmod(0o664)
    return "is writable by the group fbextra (mode 0664, or an ACL)"


def _acl_user(path: Path) -> str:
    nobody = pwd.getpwnam("nobody").pw_uid
    acl = _acl(
        [
            (USER_OBJ, 6, UNDEFINED),
            (USER, 6, nobody),
            (GROUP_OBJ, 4, UNDEFINED),
            (MASK, 6, UNDEFINED),
            (OTHER, 4, UNDEFINED),
        ]
    )
    try:
        os.setxattr(path, "system.posix_acl_access", acl)
    except OSError as exc:
        pytest.skip(f"no POSIX ACLs here: {exc}")
    return "(mode 0664, or an ACL)"


SPOILS: list[Callable[[Path], str]] = [
    _world,
    _linked,
    pytest.param(_group, marks=needs_root),  # type: ignore[list-item]
    _acl_user,
]


def _rejection(site: Site, spoil: Callable[[Path], str], which: str) -> dict[str, object]:
    """What the daemon says of the same request dropped into the queue with its file
    spoiled in the same way."""
    path = drop(site, "r.yaml", REQUEST, files={"names.txt": "a\nb\n"})
    for file in (path, site.layout.queue / "names.txt"):
        file.chmod(0o644)
    spoil(path if which == "request" else site.layout.queue / "names.txt")
    run_until_idle(site)
    assert api.list_runs(site) == []
    return dict(yaml.safe_load((site.layout.rejected / "r.yaml.error.yaml").read_text()))


@pytest.mark.parametrize("spoil", SPOILS)
def test_validate_refuses_a_request_file_others_could_write(
    tmp_path: Path, spoil: Callable[[Path], str]
) -> None:
    site = _site(tmp_path)
    path = _request(tmp_path / "mine")
    assert _validate(site.root, path).exit_code == 0  # valid, as it stands
    said = spoil(path)
    result = _validate(site.root, path)
    assert result.exit_code != 0, result.output
    out = " ".join(result.output.split())
    assert said in out and str(path) in out
    # the daemon's own words for the same fault, its fix included
    rejected = _rejection(site, spoil, "request")
    for key in ("reason", "expected", "hint"):
        assert " ".join(str(rejected[key]).split()) in out, (key, rejected[key], out)
    # submit sends a fresh copy, only its owner's: taken
    queued = site.layout.queue / api.submit(site, path)
    assert queued.stat().st_mode & 0o022 == 0 and queued.stat().st_nlink == 1
    site.close()


@pytest.mark.parametrize("spoil", [_world, pytest.param(_group, marks=needs_root)])
def test_validate_refuses_an_input_file_others_could_write(
    tmp_path: Path, spoil: Callable[[Path], str]
) -> None:
    site = _site(tmp_path)
    path = _request(tmp_path / "mine")
    said = spoil(path.parent / "names.txt")
    result = _validate(site.root, path)
    assert result.exit_code != 0, result.output
    out = " ".join(result.output.split())
    assert said in out and "arguments.names" in out
    assert f"chmod go-w {path.parent.resolve() / 'names.txt'}" in out
    rejected = _rejection(site, spoil, "input")
    assert " ".join(str(rejected["reason"]).split()) in out
    site.close()


def test_validate_without_a_site_still_checks_the_file(tmp_path: Path) -> None:
    path = _request(tmp_path / "mine")
    path.chmod(0o646)
    result = _validate(tmp_path / "no-site", path)
    assert result.exit_code != 0
    assert "is writable by every user (mode 0646)" in result.output


@needs_root
def test_the_owners_private_group_may_write_another_group_not(tmp_path: Path) -> None:
    """A umask of 002 with a user-private group (many clusters) is no fault, for
    validate as for the daemon; the same mode with a project's group is."""
    user = _user("fbrunner")
    assert grp.getgrgid(user.pw_gid).gr_name == "fbrunner"
    site = _site(tmp_path)
    path = _request(tmp_path / "mine")
    for file in (path, path.parent / "names.txt"):
        os.chown(file, user.pw_uid, user.pw_gid)
        file.chmod(0o664)
    result = _validate(site.root, path)
    assert result.exit_code == 0, result.output
    assert "valid for workflow hello" in result.output
    os.chown(path.parent / "names.txt", user.pw_uid, _shared_group().gr_gid)
    result = _validate(site.root, path)
    assert result.exit_code != 0
    assert "file 'names.txt' is writable by the group fbextra" in result.output
    shutil.rmtree(path.parent)
    site.close()


@needs_root
@pytest.mark.parametrize("request_owner", ["root", "fbrunner"])
def test_validate_and_the_daemon_refuse_an_input_of_another_user(
    tmp_path: Path, request_owner: str
) -> None:
    """An input file that is not the request's owner's is refused by the daemon, for a
    request of root's too (root's run would take what that user put there), and
    validate says so with the same words."""
    user = _user("fbrunner")
    owner = pwd.getpwnam(request_owner)
    other = user if request_owner == "root" else pwd.getpwnam("nobody")
    site = _site(tmp_path)
    path = _request(tmp_path / "mine")
    os.chown(path, owner.pw_uid, owner.pw_gid)
    os.chown(path.parent / "names.txt", other.pw_uid, other.pw_gid)
    said = (
        f"file 'names.txt' belongs to {other.pw_name}, not to the request's owner {owner.pw_name}"
    )
    result = _validate(site.root, path)
    assert result.exit_code != 0 and said in result.output, result.output
    queued = drop(site, "r.yaml", REQUEST, files={"names.txt": "a\nb\n"})
    os.chown(queued, owner.pw_uid, owner.pw_gid)
    os.chown(site.layout.queue / "names.txt", other.pw_uid, other.pw_gid)
    run_until_idle(site)
    assert api.list_runs(site) == []
    rejected = yaml.safe_load((site.layout.rejected / "r.yaml.error.yaml").read_text())
    assert rejected["reason"] == said and rejected["field"] == "arguments.names"
    os.chown(path.parent / "names.txt", owner.pw_uid, owner.pw_gid)  # its owner's: valid
    assert _validate(site.root, path).exit_code == 0
    shutil.rmtree(path.parent)
    site.close()
