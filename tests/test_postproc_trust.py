"""What a root daemon trusts of a post-processing folder it handed to the post-processing's
user (flowbatch.postproc, flowbatch.postproc_user): a record that user put there is never
read as the daemon's, through a take-back and a daemon killed right after it too; one
found at a restart is set aside and the post-processing run again, not left in limbo;
and no post-processing starts as a user who could write the ``postproc/`` folder.

Real root daemons in this process, real users, the forgery made by the post-processing's
own script (as its user); the kill is a :func:`flowbatch.faults.stop_at` point."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest
import yaml

from flowbatch import faults
from flowbatch.daemon import Daemon
from flowbatch.postproc import load_record, postproc_root, read_state
from flowbatch.render import read_markers
from flowbatch.site import Site

from .conftest import account, drop, run_until_idle
from .test_postproc_user import new_site, running, template

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon switches users")

RECORD = "postproc.json"

#: the script waits for the daemon's record of its launch (its handle: the daemon's last
#: write before the end), then puts a SUCCESS of its own in its place
FORGE = (
    "until grep -q '\"pid\"' postproc.json; do sleep 0.05; done; "
    'sed \'s/"RUNNING"/"SUCCESS"/\' postproc.json > forged && mv -f forged postproc.json'
)


def forging(gate: Path | None = None, *, fail: bool = False) -> str:
    """The post-processing of test_postproc_user.template that forges its record, then
    (``fail``) ends in failure: the daemon's outcome is then ERROR, the forgery's SUCCESS."""
    text = template(gate).replace('"id -u > who.txt"', f'"id -u > who.txt", {json.dumps(FORGE)}')
    if fail:
        text = text.replace('"cat $[[runs]]/*/r.json > all.txt"', '"false"')
    return text


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "not trusted" in r.getMessage()]


def test_a_record_forged_before_the_take_back_is_not_trusted_after_a_kill(
    public_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The post-processing's user puts a SUCCESS record in place of the daemon's while
    the folder is theirs; the daemon takes the folder back and is killed before its own
    final record. The forged record stays its user's (the take-back leaves it out), so
    neither the view nor the next daemon reads it; the next daemon moves the folder aside
    (nothing deleted), says so once, and runs the post-processing again, whose real
    outcome (ERROR: its script fails) is recorded by the daemon."""
    post = account("fbpost")
    site = new_site(public_tmp, forging(fail=True), {"postproc_user": "fbpost"})
    drop(site, "a.yaml", {"workflow": "wf", "arguments": {"score": 1}})
    with faults.stop_at("postproc-taken-back"), pytest.raises(faults.Stopped):
        run_until_idle(site)  # stopped (its lock released) where the kill would be
    first = read_state(site, "wf")["latest"]
    folder = postproc_root(site, "wf") / first
    assert folder.stat().st_uid == 0  # taken back
    assert json.loads((folder / RECORD).read_text())["state"] == "SUCCESS"  # the forgery
    assert (folder / RECORD).stat().st_uid == post.pw_uid  # still theirs
    assert load_record(site, "wf", first) is None  # and so not the record

    with caplog.at_level(logging.INFO, logger="flowbatch.postproc"):
        run_until_idle(site)
    aside = postproc_root(site, "wf") / f".{first}.refused"
    assert not folder.exists() and aside.is_dir()
    assert json.loads((aside / RECORD).read_text())["state"] == "SUCCESS"  # kept to look at
    (said,) = refusals(caplog)
    assert first in said and str(aside) in said and f"belongs to uid {post.pw_uid}" in said
    state = read_state(site, "wf")
    assert state["latest"] != first and state["last_success"] is None
    record = load_record(site, "wf", state["latest"])
    assert record is not None and record.state == "ERROR", record
    assert (postproc_root(site, "wf") / record.id / RECORD).stat().st_uid == 0
    site.close()


def test_a_record_forged_while_the_daemon_was_stopped_is_set_aside_and_run_again(
    public_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The daemon is stopped while its post-processing runs, whose script then forges
    its record. The next daemon refused the record and did nothing more: the
    post-processing stayed in limbo (never ended, never run again, never reported). Now
    its process is ended, its folder taken back and moved aside, the refusal said once
    with the folder and why, and the post-processing runs again to a real outcome."""
    post = account("fbpost")
    gate = public_tmp / "gate"
    site = new_site(public_tmp, forging(gate), {"postproc_user": "fbpost"})
    drop(site, "a.yaml", {"workflow": "wf", "arguments": {"score": 1}})
    first, folder = running(site)
    try:
        deadline = time.monotonic() + 30
        while (folder / RECORD).stat().st_uid == 0:
            assert time.monotonic() < deadline, "the record was never replaced"
            time.sleep(0.02)
        first.stop()  # its post-processing goes on, held at the gate
        started = read_markers(folder).started
        assert started is not None
        with caplog.at_level(logging.INFO, logger="flowbatch.postproc"):
            again = Daemon(site)
            again.start()
            again.tick()  # the recovery: the forged folder is set aside
            gate.touch()  # the post-processing run again may end
            run_until_idle(site, daemon=again)
            again.stop()
    finally:
        gate.touch()
    aside = postproc_root(site, "wf") / f".{folder.name}.refused"
    assert not folder.exists() and aside.is_dir()
    assert aside.stat().st_uid == 0 and not aside.stat().st_mode & 0o022  # taken back
    assert not Path(f"/proc/{started[0]}").exists() or _zombie(started[0])  # ended
    (said,) = refusals(caplog)
    assert folder.name in said and str(aside) in said and f"uid {post.pw_uid}" in said
    state = read_state(site, "wf")
    assert state["latest"] not in (None, folder.name)
    record = load_record(site, "wf", state["latest"])
    assert record is not None and record.state == "SUCCESS", record
    assert state["last_success"] == record.id
    site.close()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_no_post_processing_as_a_user_who_owns_its_folder(
    public_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An admin gave ``postproc/`` to the post-processing's user: that user could swap
    its folders for links the daemon writes through as root. The daemon starts nothing
    there and its log says which folder and what to do; doctor fails; given back, the
    post-processing runs."""
    from flowbatch.doctor import FAIL, OK, diagnose

    post = account("fbpost")
    site = new_site(public_tmp, template(), {"postproc_user": "fbpost"})
    root = postproc_root(site, "wf")
    root.mkdir(parents=True)
    os.chown(root, post.pw_uid, post.pw_gid)
    drop(site, "a.yaml", {"workflow": "wf", "arguments": {"score": 1}})
    with caplog.at_level(logging.ERROR, logger="flowbatch.postproc"):
        run_until_idle(site)
    assert list(root.iterdir()) == []  # nothing made or written there
    said = [r.getMessage() for r in caplog.records if "not started" in r.getMessage()]
    assert len(said) == 1 and f"{root} belongs to fbpost" in said[0], said
    assert "postproc_user: NAME" in said[0] and "chown" in said[0]
    (check,) = [c for c in diagnose(site.root) if c.name == "post-processing"]
    assert check.status == FAIL and f"{root} belongs to fbpost" in check.detail

    os.chown(root, 0, 0)  # given back: the next change of the best runs post-processes
    drop(site, "b.yaml", {"workflow": "wf", "arguments": {"score": 2}})
    run_until_idle(site)
    record = load_record(site, "wf", read_state(site, "wf")["latest"])
    assert record is not None and record.state == "SUCCESS", record
    (check,) = [c for c in diagnose(site.root) if c.name == "post-processing"]
    assert check.status == OK, check.detail
    site.close()


def test_the_sites_owner_is_no_post_processing_user(public_tmp: Path) -> None:
    """A service user's site: its owner owns the results tree, ``postproc/`` too, so
    post-processing does not run as them by default (it runs as ``nobody``, with
    doctor's warning to name a user of its own), and naming them is refused."""
    from flowbatch.doctor import FAIL, WARN, diagnose

    owner = account("fbsite")
    site = new_site(public_tmp, template())
    site.close()
    os.chown(site.root, owner.pw_uid, owner.pw_gid)
    (check,) = [c for c in diagnose(site.root) if c.name == "post-processing"]
    assert check.status == WARN and "nobody" in check.detail, check.detail
    (site.root / "flowbatch.yaml").write_text(yaml.safe_dump({"postproc_user": "fbsite"}))
    (check,) = [c for c in diagnose(site.root) if c.name == "post-processing"]
    assert check.status == FAIL and f"{site.root} belongs to fbsite" in check.detail
    site = Site(site.root)
    drop(site, "a.yaml", {"workflow": "wf", "arguments": {"score": 1}})
    run_until_idle(site)
    assert "latest" not in read_state(site, "wf")  # none started
    site.close()


def test_no_post_processing_as_a_user_an_acl_lets_write_its_folder(
    public_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``setfacl -m u:fbpost:rwx postproc``: the folder is root's and its group is no
    group of fbpost's, so the mode alone said no one else could write it, while fbpost
    could (found by review). Refused as for a folder of theirs; the entry removed, the
    post-processing runs."""
    import subprocess

    post = account("fbpost")
    site = new_site(public_tmp, template(), {"postproc_user": "fbpost"})
    root = postproc_root(site, "wf")
    root.mkdir(parents=True)
    subprocess.run(["setfacl", "-m", "u:fbpost:rwx", str(root)], check=True)
    probe = subprocess.run(
        ["touch", str(root / "mine")], user=post.pw_uid, group=post.pw_gid, check=False
    )
    assert probe.returncode == 0  # the ACL does let them write there
    (root / "mine").unlink()
    drop(site, "a.yaml", {"workflow": "wf", "arguments": {"score": 1}})
    with caplog.at_level(logging.ERROR, logger="flowbatch.postproc"):
        run_until_idle(site)
    assert list(root.iterdir()) == []  # nothing made or written there
    said = [r.getMessage() for r in caplog.records if "not started" in r.getMessage()]
    assert len(said) == 1 and "has an ACL entry that lets fbpost write" in said[0], said

    subprocess.run(["setfacl", "-x", "u:fbpost", str(root)], check=True)
    drop(site, "b.yaml", {"workflow": "wf", "arguments": {"score": 2}})
    run_until_idle(site)
    record = load_record(site, "wf", read_state(site, "wf")["latest"])
    assert record is not None and record.state == "SUCCESS", record
    site.close()
