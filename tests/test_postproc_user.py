"""A root daemon never runs post-processing as root (flowbatch.postproc_user): it reads
the files of every ranked run, written by participants. It runs as the site's owner,
the user ``postproc_user:`` names, or ``nobody`` on a site of root's, in a folder handed
to that user and taken back at its end, through restarts and time limits too."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from flowbatch import api
from flowbatch.daemon import Daemon
from flowbatch.errors import ConfigError
from flowbatch.postproc import PostProcRecord, load_record, postproc_root, read_state
from flowbatch.render import read_markers
from flowbatch.site import Site

from .conftest import SCORE_TEMPLATE, account, drop, make_site, run_until_idle, write_template

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon switches users")


user = account


def template(gate: Path | None = None, extra: str = "") -> str:
    """SCORE_TEMPLATE with a post-processing that records who it runs as (``who.txt``)
    and reads the staged inputs (``all.txt``), held at ``gate`` until it exists."""
    wait = [f"while [ ! -e {gate} ]; do sleep 0.05; done"] if gate else []
    commands = ["id -u > who.txt", "cat $[[runs]]/*/r.json > all.txt", *wait]
    return SCORE_TEMPLATE + (
        extra + "postproc:\n  workflow:\n    files: {outputs: [who.txt, all.txt]}\n    steps:\n"
        "      - name: summary\n        action:\n          commands: "
        + json.dumps(commands)
        + "\n  inputs: {files: [r.json]}\n"
    )


def new_site(root: Path, text: str, config: dict[str, object] | None = None) -> Site:
    site = make_site(root / "site", config)
    api.install(site, write_template(root / "t", text), workflow_id="wf")
    return site


def only_record(site: Site) -> tuple[Path, PostProcRecord | None]:
    latest = read_state(site, "wf")["latest"]
    return postproc_root(site, "wf") / latest, load_record(site, "wf", latest)


def can_write_as(uid: int, path: Path) -> bool:
    """Whether the user ``uid`` could append to ``path`` (tried as that user)."""
    become = ["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups", "--"]
    done = subprocess.run(
        [*become, "sh", "-c", 'echo changed >> "$1"', "sh", str(path)], capture_output=True
    )
    return done.returncode == 0


def assert_the_trees(folder: Path, uid: int) -> None:
    """Everything the post-processing made is the tree's now (the owner of postproc/,
    never the user it ran as: tests/test_postproc_trust.py), written by no one else:
    the user it ran as can no longer change its outputs."""
    tree = folder.parent.stat()
    assert tree.st_uid != uid
    for path in [folder, *folder.rglob("*")]:
        st = path.lstat()
        # the daemon's own files (its script and record) are root's, whoever the tree's
        daemons = path.parent == folder and path.name in ("run.sh", RECORD_NAME)
        assert st.st_uid == (0 if daemons else tree.st_uid), f"{path} belongs to {st.st_uid}"
        assert not st.st_mode & 0o022, f"{path} is writable by others: {oct(st.st_mode)}"
    assert not can_write_as(uid, folder / "who.txt")


def test_a_root_daemon_post_processes_a_service_users_site_as_nobody(public_tmp: Path) -> None:
    """The site is a service user's (docs/admins.md: a root daemon, the site stays the
    service user's): its post-processing runs as ``nobody``, never as root nor as the
    site's owner (who owns ``postproc/``: tests/test_postproc_trust.py), reads the
    staged inputs, and its outputs are the tree's once it ended."""
    nobody = pwd.getpwnam("nobody")
    owner = user("fbsite")
    participant = user("fbrunner")
    site = new_site(public_tmp, template())
    site.close()
    root = public_tmp / "site"
    subprocess.run(["chown", "-R", f"{owner.pw_uid}:{owner.pw_gid}", str(root)], check=True)
    for folder in ("queue", "queue/.claimed", "queue/rejected"):  # the daemon's (root's)
        os.chown(root / folder, 0, 0)
    site = Site(root)
    path = drop(site, "a.yaml", {"workflow": "wf", "arguments": {"score": 2.5}})
    os.chown(path, participant.pw_uid, participant.pw_gid)
    run_until_idle(site)
    (run,) = api.list_runs(site)
    assert run["state"] == "SUCCESS" and run["owner"] == "fbrunner"
    folder, record = only_record(site)
    assert record is not None and record.state == "SUCCESS", record
    assert (folder / "who.txt").read_text().strip() == str(nobody.pw_uid)
    assert json.loads((folder / "all.txt").read_text()) == {"score": 2.5}
    assert record.uid == nobody.pw_uid
    assert record.handle["uid"] == nobody.pw_uid
    # postproc/ is the site owner's (a root daemon makes what it makes in the site its
    # owner's: tests/test_root_daemon_service_site.py), so its folder went back to them;
    # neither nobody nor the participant can change it
    assert folder.parent.stat().st_uid == owner.pw_uid
    assert_the_trees(folder, nobody.pw_uid)
    assert not can_write_as(participant.pw_uid, folder / "who.txt")
    assert (folder / RECORD_NAME).stat().st_uid == 0  # the daemon's record
    site.close()


RECORD_NAME = "postproc.json"


def test_postproc_user_names_who_post_processes(public_tmp: Path) -> None:
    """``postproc_user:`` overrides the site's owner (root's here)."""
    post = user("fbpost")
    site = new_site(public_tmp, template(), {"postproc_user": "fbpost"})
    drop(site, "a.yaml", {"workflow": "wf", "arguments": {"score": 1}})
    run_until_idle(site)
    folder, record = only_record(site)
    assert record is not None and record.state == "SUCCESS", record
    assert (folder / "who.txt").read_text().strip() == str(post.pw_uid)
    assert_the_trees(folder, post.pw_uid)
    site.close()


def test_a_site_of_roots_post_processes_as_nobody_and_says_so(
    public_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No owner but root, no setting: ``nobody``, with a warning that names the
    setting; never root."""
    nobody = pwd.getpwnam("nobody")
    site = new_site(public_tmp, template())
    drop(site, "a.yaml", {"workflow": "wf", "arguments": {"score": 1}})
    with caplog.at_level("WARNING", logger="flowbatch.postproc"):
        run_until_idle(site)
    folder, record = only_record(site)
    assert record is not None and record.state == "SUCCESS", record
    assert (folder / "who.txt").read_text().strip() == str(nobody.pw_uid)
    assert_the_trees(folder, nobody.pw_uid)
    warned = [r.getMessage() for r in caplog.records if "post-processing runs as" in r.getMessage()]
    assert len(warned) == 1 and "postproc_user" in warned[0], warned
    site.close()


def test_post_processing_as_a_user_that_is_not_there_is_an_error_that_says_why(
    public_tmp: Path,
) -> None:
    site = new_site(public_tmp, template(), {"postproc_user": "fbnosuchuser"})
    drop(site, "a.yaml", {"workflow": "wf", "arguments": {"score": 1}})
    run_until_idle(site)
    folder, record = only_record(site)
    assert record is not None and record.state == "ERROR"
    (message,) = record.messages
    assert message.startswith("post-processing not started: ")
    assert "flowbatch.yaml: postproc_user: no user 'fbnosuchuser'" in message
    assert not (folder / "who.txt").exists()
    site.close()


def test_root_is_refused_as_postproc_user(public_tmp: Path) -> None:
    site_dir = public_tmp / "site"
    make_site(site_dir).close()
    (site_dir / "flowbatch.yaml").write_text(yaml.safe_dump({"postproc_user": "root"}))
    with pytest.raises(ConfigError) as err:
        Site(site_dir)
    assert "postproc_user" in err.value.summary()
    assert "never runs as root" in err.value.summary()
    # a user ID is no name (its hint told to create a user named "0")
    (site_dir / "flowbatch.yaml").write_text(yaml.safe_dump({"postproc_user": "0"}))
    with pytest.raises(ConfigError) as err:
        Site(site_dir)
    assert "not a user ID" in err.value.summary()


def started_lines(folder: Path) -> int:
    markers = folder / "status" / "markers"
    text = markers.read_text() if markers.exists() else ""
    return sum(line.startswith("started ") for line in text.splitlines())


def running(site: Site) -> tuple[Daemon, Path]:
    """A daemon ticked until its post-processing of ``wf`` runs; it and the run's folder."""
    d = Daemon(site)
    d.start()
    deadline = time.monotonic() + 30
    while "wf" not in d.postproc.active:
        assert time.monotonic() < deadline, "no post-processing started"
        d.tick()
        time.sleep(0.05)
    folder = postproc_root(site, "wf") / d.postproc.active["wf"].id
    while read_markers(folder).started is None:
        assert time.monotonic() < deadline, "its script never started"
        time.sleep(0.02)
    return d, folder


def test_a_restarted_daemon_adopts_the_post_processing_of_its_user_and_ends_it_right(
    public_tmp: Path,
) -> None:
    """A daemon stopped while post-processing runs as its user: the next one adopts the
    process (its user is the one recorded), never starts it again, and takes the folder
    back at its end."""
    post = user("fbpost")
    gate = public_tmp / "gate"
    site = new_site(public_tmp, template(gate), {"postproc_user": "fbpost"})
    drop(site, "a.yaml", {"workflow": "wf", "arguments": {"score": 1}})
    first, folder = running(site)
    assert folder.stat().st_uid == post.pw_uid  # handed over while it runs
    first.stop()  # its post-processing goes on
    again = Daemon(site)
    again.start()
    try:
        again.tick()
        adopted = again.postproc.active["wf"]
        assert adopted.handle is not None and adopted.handle["uid"] == post.pw_uid
        assert again.postproc.executor.adopt(adopted.handle)
    finally:
        gate.touch()
    run_until_idle(site, daemon=again)
    again.stop()
    record = load_record(site, "wf", folder.name)
    assert record is not None and record.state == "SUCCESS", record
    assert started_lines(folder) == 1  # adopted, not launched again
    assert (folder / "who.txt").read_text().strip() == str(post.pw_uid)
    assert_the_trees(folder, post.pw_uid)
    site.close()


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_an_adopted_post_processing_past_its_limit_is_ended_by_term_then_kill(
    public_tmp: Path,
) -> None:
    """After a restart, a post-processing of another user that ignores SIGTERM and
    overruns its limit is ended (SIGTERM, then SIGKILL from a later poll) and taken
    back."""
    post = user("fbpost")
    stubborn = template(extra="timeLimit: 2\n").replace(
        '"id -u > who.txt"',
        '"id -u > who.txt", "trap \'\' TERM; echo $$$$ > stubborn.pid; '
        'for i in $(seq 600); do sleep 0.1; done"',
    )
    site = new_site(public_tmp, stubborn, {"postproc_user": "fbpost"})
    drop(site, "a.yaml", {"workflow": "wf", "arguments": {"score": 1}})
    first, folder = running(site)
    first.stop()
    again = Daemon(site)
    again.start()
    again.runner.defer_kills = again.postproc.defer_kills = True  # as serve() has them
    ending: list[bool] = []
    run_until_idle(
        site,
        daemon=again,
        timeout=60,
        each_tick=lambda d: ending.append(bool(d.postproc.ending)),
    )
    again.stop()
    assert any(ending), "never being ended (SIGTERM, then SIGKILL from a later poll)"
    record = load_record(site, "wf", folder.name)
    assert record is not None and record.state == "ERROR", record
    assert record.messages[:1] == ["time limit exceeded"]
    assert _gone(int((folder / "stubborn.pid").read_text()))
    assert_the_trees(folder, post.pw_uid)
    site.close()


def test_a_record_the_post_processing_put_in_place_of_the_daemons_is_not_trusted(
    public_tmp: Path,
) -> None:
    """The folder is its user's while it runs: a ``postproc.json`` of theirs (a handle
    naming another process, a success it never had) is not read as the record, and the
    daemon's own stands at the end."""
    gate = public_tmp / "gate"
    # the daemon's record as it stands (RUNNING), made a success
    forge = 'sed \'s/"RUNNING"/"SUCCESS"/\' postproc.json > forged && mv -f forged postproc.json'
    text = template(gate).replace('"id -u > who.txt"', f'"id -u > who.txt", {json.dumps(forge)}')
    site = new_site(public_tmp, text, {"postproc_user": "fbpost"})
    user("fbpost")
    drop(site, "a.yaml", {"workflow": "wf", "arguments": {"score": 1}})
    d, folder = running(site)
    try:
        deadline = time.monotonic() + 30
        while (folder / RECORD_NAME).stat().st_uid == 0:
            assert time.monotonic() < deadline, "the record was never replaced"
            time.sleep(0.02)
        assert load_record(site, "wf", folder.name) is None  # theirs: not the record
    finally:
        gate.touch()
    run_until_idle(site, daemon=d)
    d.stop()
    record = load_record(site, "wf", folder.name)
    assert record is not None and record.id == folder.name and record.state == "SUCCESS"
    assert (folder / RECORD_NAME).stat().st_uid == 0
    site.close()


def test_doctor_says_who_post_processes(public_tmp: Path) -> None:
    """doctor names the user; ``nobody`` on a site of root's that post-processes is a
    warning naming the setting, a user that is not there a failure."""
    from flowbatch.doctor import FAIL, OK, WARN, diagnose

    def check(root: Path) -> tuple[str, str]:
        (found,) = [c for c in diagnose(root) if c.name == "post-processing"]
        return found.status, found.detail

    site = new_site(public_tmp, template())
    status, detail = check(site.root)
    assert status == WARN and "nobody" in detail and "postproc_user: NAME" in detail
    user("fbpost")
    (site.root / "flowbatch.yaml").write_text(yaml.safe_dump({"postproc_user": "fbpost"}))
    status, detail = check(site.root)
    assert status == OK and "fbpost" in detail, detail
    (site.root / "flowbatch.yaml").write_text(yaml.safe_dump({"postproc_user": "fbnosuch"}))
    status, detail = check(site.root)
    assert status == FAIL and "no user 'fbnosuch'" in detail, detail
    # a service user's site: its owner owns the results tree, which a post-processing
    # of theirs could rewrite and swap folders in: not as them (test_postproc_trust.py)
    (site.root / "flowbatch.yaml").write_text("")
    owner = user("fbsite")
    os.chown(site.root, owner.pw_uid, owner.pw_gid)
    status, detail = check(site.root)
    assert status == WARN and "nobody" in detail and "postproc_user: NAME" in detail
    site.close()
