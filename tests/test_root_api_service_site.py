"""Root calling flowbatch's Python API in its own process on a site a service user owns
(docs/admins.md's root daemon serving a service user's site), and a root daemon's notes
of the SSH process groups and Slurm jobs it gave up on: what root makes there is the
owner's, by the rules of :mod:`flowbatch.store.owner`. The ``flowbatch`` program run by
root becomes the site's owner before it writes (``cli.needs_write``); the API does not,
and left ``reindex.lock``, ``results/<wf>/.trash``, ``reports-pending/``, the template
folders of an install and ``ssh-abandoned/<host>/`` root's, where the owner's
``install``, ``runs delete``, ``uninstall`` and daemon then failed (found by review).
Real users throughout: the site's owner ``fbsvc2`` runs a ``flowbatch`` program of
theirs, root is this process."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from flowbatch import api, lifecycle_ops
from flowbatch.executors import build_executors
from flowbatch.site import Site

from .conftest import SCORE_TEMPLATE, account, make_site, write_template
from .fixtures_ssh import SshEnv
from .test_review_s25d import start_and_stop
from .test_root_commands import PYTHON, root_owned
from .test_root_daemon_service_site import (
    install_version2,
    owner_runs,
    runs_of,
    serve,
    service_site,
    versions,
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="root gives what it makes to the owner"),
    pytest.mark.skipif(not PYTHON.exists(), reason=f"no {PYTHON}"),
]


def roots_in_site(root: Path) -> list[str]:
    """What is root's in the site but what may be: the queue's folders (root's by
    docs/admins.md), the files of root's runs, and files written by rename into the
    owner's folders (the owner replaces and removes those)."""
    left = []
    for rel in root_owned(root):
        path = root / rel
        if rel.startswith("queue") or "/runs/" in rel:
            continue
        in_place = rel in ("reindex.lock", "daemon.lock") or rel.startswith("reports-")
        if not in_place and not path.is_dir() and path.parent.stat().st_uid == owner_of(root):
            continue  # written by rename: not one the owner opens in place
        left.append(rel)
    return left


def owner_of(root: Path) -> int:
    return root.stat().st_uid


def roots_templates(root: Path) -> list[str]:
    """What is root's in ``templates/`` but a workflow's ``workflow.json`` (written by
    rename into the owner's folder)."""
    return [p for p in root_owned(root / "templates") if not p.endswith("/workflow.json")]


def owners_template(folder: Path, root: Path) -> Path:
    """The score template in ``folder/t``, the site's owner's."""
    template = write_template(folder / "t", SCORE_TEMPLATE)
    owner = root.stat()
    subprocess.run(["chown", "-R", f"{owner.st_uid}:{owner.st_gid}", str(template)], check=True)
    return template


def test_roots_reindex_leaves_the_owner_a_lock_file_they_can_take(public_tmp: Path) -> None:
    """``api.reindex`` as root made ``reindex.lock`` root's: the owner's ``install`` (and
    every command that changes the tree) then failed to open it."""
    root = service_site(public_tmp)
    site = Site(root)
    api.reindex(site)
    site.close()
    assert roots_in_site(root) == []
    owner_runs(root, "install", str(owners_template(public_tmp, root)), "--id", "wf")
    assert len(versions(root)) == 1


def test_roots_runs_delete_leaves_the_owner_the_trash_and_the_notes(public_tmp: Path) -> None:
    """``delete_runs`` as root made ``results/wf/.trash`` root's (the owner's ``runs
    delete`` could not move a run there) and, on a site whose ``reports-pending/`` was
    not there yet, that folder too (the owner's commands could note no pending report
    in it, nor remove one)."""
    root = service_site(public_tmp)
    owner_runs(root, "install", str(owners_template(public_tmp, root)), "--id", "wf")
    serve(root, "a", 1.0)
    serve(root, "b", 2.0)
    shutil.rmtree(root / "reports-pending")
    site = Site(root)
    ids = {row["name"]: row["id"] for row in api.list_runs(site)}
    _freed, deleted, refused = lifecycle_ops.delete_runs(site, [ids["a"]])
    site.close()
    assert (deleted, refused) == ([ids["a"]], {})
    assert roots_in_site(root) == []
    done = owner_runs(root, "runs", "delete", ids["b"])
    assert "cannot note" not in done.stderr, done.stderr
    assert runs_of(root) == {}
    assert not (root / "results" / "wf" / "runs" / ids["b"]).exists()


def test_roots_install_leaves_the_owner_the_template(public_tmp: Path) -> None:
    """``api.install`` as root made the workflow's template folders root's: the owner's
    install of a new version could not write them, nor their ``uninstall`` remove
    them. The template's files are given too, so a daemon of the owner's reads them
    whatever mode they came with."""
    root = service_site(public_tmp)
    owner_runs(root, "reindex")  # the owner's reindex.lock: only the template is root's
    template = write_template(public_tmp / "t", SCORE_TEMPLATE, {"data/input.txt": "1\n"})
    os.chmod(template / "data" / "input.txt", 0o600)
    site = Site(root)
    api.install(site, template, workflow_id="wf")
    site.close()
    assert roots_in_site(root) == []
    assert roots_templates(root) == []
    subprocess.run(["chown", "-R", str(root.stat().st_uid), str(template)], check=True)
    install_version2(root)
    assert len(versions(root)) == 2
    owner_runs(root, "uninstall", "wf")
    assert not (root / "templates" / "wf").exists()


def test_a_root_daemon_gives_back_the_template_folders_an_older_install_left(
    public_tmp: Path,
) -> None:
    """A template an older flowbatch installed as root (the API, in root's process) is
    the owner's once a root daemon has started; the owner then uninstalls it."""
    root = service_site(public_tmp)
    owner_runs(root, "install", str(owners_template(public_tmp, root)), "--id", "wf")
    subprocess.run(["chown", "-R", "0:0", str(root / "templates" / "wf")], check=True)
    start_and_stop(root)
    assert roots_templates(root) == []
    owner_runs(root, "uninstall", "wf")
    assert not (root / "templates" / "wf").exists()


def owners_ssh_site(folder: Path, ssh: SshEnv) -> Path:
    """A service user's site with host ``a``, whose key and known hosts the owner can
    read: a daemon of theirs logs in with them (the site served by the owner's daemon
    after root's, its queue theirs too)."""
    owner = account("fbsvc2")
    keys = folder / "keys"
    keys.mkdir(mode=0o700)
    for path in (ssh.key_file, ssh.known_hosts):
        shutil.copy(path, keys / path.name)
    root = folder / "site"
    config = ssh.config(a={"key_file": str(keys / ssh.key_file.name)})
    config["ssh"]["a"]["known_hosts"] = str(keys / ssh.known_hosts.name)
    make_site(root, config).close()
    for path in (root, keys):
        subprocess.run(["chown", "-R", f"{owner.pw_uid}:{owner.pw_gid}", str(path)], check=True)
    return root


def test_a_root_daemons_ssh_notes_are_ended_and_removed_by_the_owners_daemon(
    ssh: SshEnv, public_tmp: Path
) -> None:
    """A root daemon gave up on a run's process group while its host was away and noted
    it under ``ssh-abandoned/a/``, a folder of root's: the owner's daemon, once the host
    answered, ended the group and could not remove the note (nor write one of its own),
    so every later daemon ended it again. Now the folders are the owner's."""
    root = owners_ssh_site(public_tmp, ssh)
    site = Site(root)
    executor = build_executors(site.config, lambda: None, site_root=site.root)["a"]
    gone = {"host": "a", "pid": 4194000, "pgid": 4194000, "start": "1", "boot_id": "x"}
    executor.abandon(gone, "the host did not answer")  # type: ignore[attr-defined]
    site.close()
    notes = root / "ssh-abandoned" / "a"
    assert [p.name for p in notes.iterdir()] == ["4194000-1-x.json"]
    assert root_owned(root / "ssh-abandoned") == ["a/4194000-1-x.json"]  # in the owner's
    owner_runs(root, "daemon", "--once")
    assert list(notes.iterdir()) == []


def test_a_root_daemon_gives_back_the_abandoned_notes_an_older_one_left(
    public_tmp: Path,
) -> None:
    """Notes of an older root daemon, in folders of root's: a root daemon's start gives
    them to the owner, who can then remove them (as ``doctor`` says to, for a host the
    config no longer has)."""
    root = service_site(public_tmp)
    for kind, name in (("ssh-abandoned", "old-host"), ("slurm-abandoned", "gpu")):
        folder = root / kind / name
        folder.mkdir(parents=True)
        (folder / "1.json").write_text('{"job_id": "1"}\n', encoding="utf-8")
    start_and_stop(root)
    assert root_owned(root / "ssh-abandoned") == root_owned(root / "slurm-abandoned") == []
    owner = root.stat().st_uid
    done = subprocess.run(
        ["rm", "-r", str(root / "ssh-abandoned" / "old-host"), str(root / "slurm-abandoned")],
        user=owner,
        group=root.stat().st_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
