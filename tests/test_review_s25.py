"""Found by a review of the day's changes (site identity, the lock's holder, `workflows
retire`), each on real parts: real sites and SQLite files, the real CLI as a subprocess
where a user or a process of its own matters."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flowbatch import api
from flowbatch.daemon import lock_holder, run_daemon
from flowbatch.site import Site
from flowbatch.store import siteid
from flowbatch.store import store as store_module

from .conftest import drop, make_site, run_until_idle
from .test_copied_site import _names, _record, _site_with_runs
from .test_disk_full import fill
from .test_lifecycle_ops import cli, install
from .test_lock_holder import _earlier_record
from .test_robust import fb

AS_NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")


def as_nobody(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI run by another user (nobody), as a participant or a service user runs it."""
    return subprocess.run(
        [*AS_NOBODY, sys.executable, "-m", "flowbatch", "--site", str(site), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": "/tmp"},
        timeout=120,
    )


# -- site identity ------------------------------------------------------------------------------
def test_a_copy_whose_user_cannot_look_into_the_first_site_does_not_take_its_index(
    public_tmp: Path,
) -> None:
    """A site copied for another user (cp -a, chown), its ``database:`` still naming the
    first site's index: that user cannot read the first site's folder (0700), so its
    ``site-id`` file could not be read, and the first site was taken for moved away. The
    copy's first command took the index over without a word (a daemon of the first site
    serving meanwhile went on writing into it), and the first site was refused after, as
    "a copy" of the copy."""
    shared = public_tmp / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    url = f"sqlite:///{shared / 'index.db'}"
    first = public_tmp / "first"
    _site_with_runs(first, url)
    copy = public_tmp / "copy"
    shutil.copytree(first, copy, symlinks=True)
    subprocess.run(["chown", "-R", "nobody:nogroup", str(copy)], check=True)
    for path in shared.iterdir():
        path.chmod(0o666)  # the copy's user may write the index: nothing stops it but this
    first.chmod(0o700)
    before = _record(url, first)
    assert before == (siteid.read_site_id(first), first)

    out = as_nobody(copy, "runs", "list")
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"belongs to the site at {first}" in out.stderr, out.stderr
    assert "cannot look into" in out.stderr and "flowbatch reindex --adopt" in out.stderr
    assert _record(url, first) == before
    assert _names(first) == ["a", "b"]
    assert fb(first, "runs", "list").returncode == 0


# -- workflows retire ---------------------------------------------------------------------------
def test_retire_takes_no_file_of_the_workflows_folder_for_a_version(
    site: Site, tmp_path: Path
) -> None:
    """`workflows retire wf workflow.json` removed the workflow's own record (the name of
    a file beside the versions was taken for a version a retire cut short had left): the
    workflow vanished from `workflows list`, its runs and current version left behind."""
    v1 = install(site, tmp_path, factor=1)
    drop(site, "a.yaml", {"workflow": "wf", "group": "alice", "name": "a", "arguments": {"x": 5}})
    run_until_idle(site)
    wf_dir = site.layout.template_dir("wf")
    before = (wf_dir / "workflow.json").read_bytes()

    out = cli(site, "workflows", "retire", "wf", "workflow.json", "--with-runs")
    assert out.exit_code == 1, out.output
    assert "workflow wf has no version 'workflow.json'" in out.output
    assert (wf_dir / "workflow.json").read_bytes() == before
    assert api.list_workflows(site)[0]["id"] == "wf"
    assert json.loads(before)["current"] == v1 and (wf_dir / v1).is_dir()
    assert [r["name"] for r in api.list_runs(site)] == ["a"]


# -- the lock's holder ------------------------------------------------------------------------
def test_a_start_beside_a_look_at_the_lock_takes_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`flowbatch status` and `doctor` look at the daemon lock by taking it shared for a
    moment (lock_holder_at). A daemon started in that moment found it taken, waited for
    a holder's record, found no holder any more, and stopped all the same: "another
    flowbatch daemon already serves" the site, naming the record of a daemon long gone,
    with no daemon there (systemd's start failed, exit 1)."""
    site = make_site(tmp_path / "site")
    gone = _earlier_record(site)
    # a look that lets go after a while, well within the wait for a holder's record
    monkeypatch.setattr(store_module, "HOLDER_WAIT", 60.0)
    script = (
        "import fcntl, time\n"
        f"fh = open({str(site.lock_path)!r})\n"
        "fcntl.flock(fh, fcntl.LOCK_SH)\n"
        "print('looking', flush=True)\n"
        "time.sleep(0.5)\n"
    )
    look = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert look.stdout is not None and look.stdout.readline().strip() == "looking"
        message = run_daemon(site, once=True)
    finally:
        look.kill()
        look.wait()
    assert message is None, message
    record = json.loads(site.lock_path.read_text(encoding="utf-8"))
    assert record["pid"] == os.getpid() != gone
    site.close()


def test_a_holder_in_a_pid_namespace_of_its_own_is_named_by_its_record(tmp_path: Path) -> None:
    """A daemon in a container (a pid namespace of its own) writes its pid as it sees it
    there; the kernel's lock table, read from outside, has its pid outside. `status`,
    `doctor` and every command that asks whether a daemon serves waited a second, then
    said the holder had not written its record yet, naming it by that other pid."""
    site = make_site(tmp_path / "site")
    script = (
        "import fcntl, json, os, sys\n"
        f"fh = open({str(site.lock_path)!r}, 'a+')\n"
        "fcntl.flock(fh, fcntl.LOCK_EX)\n"
        "fh.truncate(0)\n"
        "fh.write(json.dumps({'host': 'box', 'pid': os.getpid(), 'started_at': 'now'}))\n"
        "fh.flush()\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        seen = lock_holder(site)
    finally:
        holder.kill()
        holder.wait()
    assert seen == {"host": "box", "pid": 1, "started_at": "now"}, seen
    site.close()


def test_a_changed_site_id_file_is_said_as_such(tmp_path: Path) -> None:
    """A site whose ``site-id`` file no longer holds the id its index records for that
    very folder (edited, or another site's copied over it) is refused: the message said
    the folder "no longer holds" the site, naming the same folder as the site's. It
    says now what changed, and that removing the file gives it back."""
    (tmp_path / "shared").mkdir()
    url = f"sqlite:///{tmp_path / 'shared' / 'index.db'}"
    root = tmp_path / "site"
    _site_with_runs(root, url)
    site_id = siteid.read_site_id(root)
    (root / siteid.SITE_ID_FILE).write_text("0123abcd\n", encoding="utf-8")

    out = fb(root, "runs", "list", check=False)
    assert out.returncode == 1
    assert f"records site id {site_id} for this very folder ({root})" in out.stderr, out.stderr
    assert "file says 0123abcd" in out.stderr and "no longer holds" not in out.stderr
    assert f"remove {root / siteid.SITE_ID_FILE}" in out.stderr
    (root / siteid.SITE_ID_FILE).unlink()  # the way out it gives
    assert _names(root) == ["a", "b"]
    assert siteid.read_site_id(root) == site_id


def test_a_site_id_that_cannot_be_written_leaves_no_file_behind(tmp_path: Path) -> None:
    """A site opened on a full disk with its ``site-id`` file to write again (lost,
    here): the write fails, the command goes on (the daemon writes it once there is
    room), and no empty ``.site-id.<random>.tmp`` is left in the site folder, one more at
    every command. Real tmpfs, unmounted at the end."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], check=True)
    try:
        (tmp_path / "shared").mkdir()  # the index where there is room (a server's)
        root = mnt / "site"
        _site_with_runs(root, f"sqlite:///{tmp_path / 'shared' / 'index.db'}", names=("a",))
        (root / siteid.SITE_ID_FILE).unlink()
        filler = fill(mnt)
        for _ in range(3):
            assert _names(root) == ["a"]
        assert sorted(p.name for p in root.glob(".site-id*")) == []
        filler.unlink()
        assert _names(root) == ["a"] and siteid.read_site_id(root) is not None
        assert sorted(p.name for p in root.glob(".site-id*")) == []
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
