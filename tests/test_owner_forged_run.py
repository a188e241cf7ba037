"""A root daemon serving a site a service user owns (docs/admins.md) and the records
of active runs that user can write: ``results/`` is theirs, so a ``run.json`` of theirs
is read as the daemon's (a service user's daemon writes it). Found by review: the owner
planted a run folder whose record named root (or a participant) as the run's user and
whose script was theirs, and the root daemon ran that script as root (or as the
participant) at its next start. Real users throughout: the site's owner ``fbsvc2``
forges the run in a process of theirs, ``fbrunner`` is a participant, the daemon is
root in this process."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psutil
import pytest

from flowbatch.daemon import Daemon
from flowbatch.site import Site

from .conftest import account, run_until_idle
from .test_root_commands import PYTHON, as_site_owner
from .test_root_daemon_service_site import served  # noqa: F401

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon switches users"),
    pytest.mark.skipif(not PYTHON.exists(), reason=f"no {PYTHON}"),
]

#: run by the site's owner: a copy of a served run, its record made PENDING again (or
#: RUNNING with a handle of process ``pid``, begun at ``start``, that names no user),
#: naming ``uid`` as its user, its script theirs
FORGE = r"""
import json, os, shutil, sys
runs, src, new, proof, uid, pid, start = sys.argv[1:8]
shutil.copytree(os.path.join(runs, src), os.path.join(runs, new), symlinks=True)
shutil.rmtree(os.path.join(runs, new, "status"), ignore_errors=True)
path = os.path.join(runs, new, "run.json")
with open(path) as fh:
    data = json.load(fh)
data.update(id=new, name="forged", owner_uid=int(uid), state="PENDING", handle=None)
data.update(started_at=None, finished_at=None, results=None)
if int(pid):
    handle = {"pid": int(pid), "pgid": int(pid), "start": float(start)}
    data.update(state="RUNNING", handle=handle)
os.unlink(path)
with open(path, "w") as fh:
    json.dump(data, fh)
with open(os.path.join(runs, new, "run.sh"), "w") as fh:
    fh.write(f"id -u > {proof}\n")
"""


def drop_box(folder: Path) -> Path:
    """A folder every user's script can write its proof in (``/tmp``-like)."""
    box = folder / "box"
    box.mkdir()
    box.chmod(0o1777)
    return box


def forge(root: Path, proof: Path, uid: int, pid: int = 0) -> str:
    """The site's owner plants a run of their making in ``results/wf/runs`` (as
    ``FORGE`` says; the start of process ``pid`` is public, in ``/proc``)."""
    start = psutil.Process(pid).create_time() if pid else 0.0
    runs = root / "results" / "wf" / "runs"
    src = sorted(runs.iterdir())[0].name
    new = "deadbeef0000"
    as_site_owner(root, FORGE, str(runs), src, new, str(proof), str(uid), str(pid), str(start))
    assert (runs / new / "run.json").stat().st_uid == root.stat().st_uid
    return new


@pytest.mark.parametrize("whom", ["root", "participant"])
def test_a_run_the_owner_forged_is_not_run_as_another_user(
    served: Path,  # noqa: F811
    public_tmp: Path,
    whom: str,
) -> None:
    root = served
    uid = 0 if whom == "root" else account("fbrunner").pw_uid
    proof = drop_box(public_tmp) / "PWNED"
    forge(root, proof, uid)
    site = Site(root)
    try:
        run_until_idle(site)
    finally:
        site.close()
    assert not proof.exists(), f"the owner's script ran as uid {proof.read_text().strip()}"


def test_a_run_the_owner_forged_runs_as_the_owner_alone(
    served: Path,  # noqa: F811
    public_tmp: Path,
) -> None:
    """What the owner may write names the owner: such a run runs, as them (a record
    of a service user's daemon is theirs and is served on)."""
    root = served
    proof = drop_box(public_tmp) / "PWNED"
    forge(root, proof, root.stat().st_uid)
    site = Site(root)
    try:
        run_until_idle(site)
    finally:
        site.close()
    assert proof.read_text().strip() == str(root.stat().st_uid)


def test_a_handle_the_owner_forged_is_not_adopted(served: Path, public_tmp: Path) -> None:  # noqa: F811
    """A RUNNING record of the owner's whose handle names a process of another user's
    (no ``uid`` in it: adopt checked the user only when the handle named one): the
    root daemon took it and adopted that process, and its cancel or time limit would
    signal that process's group as root."""
    root = served
    victim = subprocess.Popen(
        ["sleep", "300"],
        user=account("fbrunner").pw_uid,
        start_new_session=True,
    )
    try:
        proof = drop_box(public_tmp) / "PWNED"
        forge(root, proof, root.stat().st_uid, victim.pid)
        site = Site(root)
        try:
            daemon = Daemon(site)
            daemon.start(serve=False)
            try:
                held = daemon.runner.active.get("deadbeef0000")
                assert held is None or not held.handle or held.handle.get("pid") != victim.pid
            finally:
                daemon.stop()
        finally:
            site.close()
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


#: run by the site's owner: a post-processing record of theirs, RUNNING, whose handle
#: names process ``pid`` (begun at ``start``) and no user, over its time limit at once
FORGE_POSTPROC = r"""
import json, os, sys
postproc, pid, start = sys.argv[1:4]
os.makedirs(os.path.join(postproc, "pp0000000001"), exist_ok=True)
with open(os.path.join(postproc, "state.json"), "w") as fh:
    json.dump({"latest": "pp0000000001", "ranking": [], "last_success": None}, fh)
record = {
    "id": "pp0000000001", "workflow": "wf", "version": "v", "state": "RUNNING",
    "created_at": "2020-01-01T00:00:00+00:00", "started_at": "2020-01-01T00:00:00+00:00",
    "ranking": [], "ranked": [], "time_limit": 0.001,
    "handle": {"pid": int(pid), "pgid": int(pid), "start": float(start)},
}
with open(os.path.join(postproc, "pp0000000001", "postproc.json"), "w") as fh:
    json.dump(record, fh)
"""


def test_a_post_processing_record_the_owner_forged_signals_no_one(
    served: Path,  # noqa: F811
) -> None:
    """``postproc/`` is the owner's and a record of theirs was trusted: a RUNNING one
    whose handle named another user's process (and no user), over a time limit of its
    own, had the root daemon adopt that process and end its group (found by review)."""
    root = served
    victim = subprocess.Popen(
        ["sleep", "300"],
        user=account("fbrunner").pw_uid,
        start_new_session=True,
    )
    try:
        start = psutil.Process(victim.pid).create_time()
        postproc = root / "results" / "wf" / "postproc"
        as_site_owner(root, FORGE_POSTPROC, str(postproc), str(victim.pid), str(start))
        site = Site(root)
        try:
            daemon = Daemon(site)
            daemon.start(serve=False)
            try:
                for _ in range(5):
                    daemon.tick()
            finally:
                daemon.stop()
        finally:
            site.close()
        assert victim.poll() is None, "the root daemon ended another user's process"
    finally:
        victim.kill()
        victim.wait()


#: run by the site's owner: an ended run's record rewritten as RUNNING, another user's
REOPEN = r"""
import json, os, sys
path, uid = sys.argv[1], int(sys.argv[2])
with open(path) as fh:
    data = json.load(fh)
data.update(state="RUNNING", owner_uid=uid, handle=None, finished_at=None)
os.unlink(path)
with open(path, "w") as fh:
    json.dump(data, fh)
"""


def test_an_active_run_whose_record_is_not_trusted_is_ended(served: Path) -> None:  # noqa: F811
    """A run the index has as active whose ``run.json`` is the site owner's, naming
    another user (an earlier daemon of the owner's wrote it, before the site went to a
    root daemon): the root daemon does not act on it, and it was left RUNNING in the
    index for ever (found in the re-read). It is ended ERROR, by a record of root's."""
    from flowbatch import api
    from flowbatch.store.index import RunRow

    root = served
    site = Site(root)
    try:
        (row,) = [r for r in api.list_runs(site) if r["name"] == "theirs"]
        run_dir = site.store.run_dir(site.store.load(row["id"]))
        RunRow.update(state="RUNNING").where(RunRow.id == row["id"]).execute()
    finally:
        site.close()
    as_site_owner(root, REOPEN, str(run_dir / "run.json"), str(account("fbrunner").pw_uid))
    site = Site(root)
    daemon = Daemon(site)
    try:
        daemon.start(serve=False)
        daemon.tick()
    finally:
        daemon.stop()
    try:
        (after,) = [r for r in api.list_runs(site) if r["name"] == "theirs"]
        assert after["state"] == "ERROR", after
        assert (run_dir / "run.json").stat().st_uid == 0
        record = site.store.load(row["id"])
        assert record.state.value == "ERROR"
        assert any("not trusted" in m for m in record.messages), record.messages
    finally:
        site.close()
