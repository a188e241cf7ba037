"""Issue 5: a daemon that survives crashes, lost indexes, signals and other users."""

from __future__ import annotations

import json
import logging
import os
import pwd
import random
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowbatch import api
from flowbatch.site import Site

from .conftest import (
    REPO,
    SCORE_TEMPLATE,
    account,
    drop,
    make_site,
    only_run,
    run_until_idle,
    write_template,
)


def fb(
    site: Path,
    *args: str,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowbatch", "--site", str(site), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=check,
        timeout=timeout,
    )


def start_daemon(
    site: Path, *args: str, env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "flowbatch", "--site", str(site), "daemon", *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )


def wait_for(predicate, timeout: float = 30.0, step: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


# -- 1. one daemon per site ---------------------------------------------------------------
def test_lock_of_a_killed_daemon_never_blocks(site: Site) -> None:
    proc = start_daemon(site.root)
    lock = site.layout.lock
    assert wait_for(lambda: lock.exists() and lock.read_text().strip() != "")
    info = json.loads(lock.read_text())
    assert info["pid"] == proc.pid and info["host"] and info["started_at"]
    second = fb(site.root, "daemon", "--once")
    assert second.returncode == 0 and "another flowbatch daemon" in second.stdout
    proc.kill()
    proc.wait()
    third = fb(site.root, "daemon", "--once")
    assert third.returncode == 0 and "another" not in third.stdout


# -- 2. crash safety ------------------------------------------------------------------------
@pytest.mark.slow
def test_chaos_sigkill_at_random_moments(tmp_path: Path) -> None:
    site_dir = tmp_path / "site"
    site = make_site(
        site_dir, {"local": {"concurrency": 2}, "polling": {"interval": 0.2, "settle": 0.0}}
    )
    write_template(tmp_path / "t", SCORE_TEMPLATE)
    api.install(site, tmp_path / "t", workflow_id="wf")
    site.close()
    rng = random.Random(5)
    names: list[str] = []

    def drop_batch(count: int) -> None:
        for _ in range(count):
            i = len(names)
            name = f"req{i:03d}.yaml"
            names.append(name)
            drop(
                site,
                name,
                {
                    "workflow": "wf",
                    "group": f"g{i % 10}",
                    "arguments": {"score": rng.randint(0, 1000) / 10},
                },
            )

    log = tmp_path / "daemon.log"
    # every phase crashes at least once (a fault point SIGKILLs the daemon there) ...
    plans = [
        "intake:5",
        "create:3",
        "created:4",
        "launch:2",
        "launched:3",
        "finalize:2",
        "ranking:1",
        "finalize:6",
        "launched:9",
        "created:12",
    ]
    crashed = 0
    for plan in plans:
        drop_batch(16)
        proc = start_daemon(site_dir, env={"FLOWBATCH_CRASH_AT": plan}, log=log)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        crashed += proc.returncode == -signal.SIGKILL
    assert crashed >= 8, "the fault points were not reached"
    # ... then at random moments
    for _ in range(5):
        drop_batch(8)
        proc = start_daemon(site_dir, log=log)
        time.sleep(rng.uniform(0.2, 0.8))
        proc.kill()
        proc.wait()
    assert len(names) == 200
    final = fb(site_dir, "daemon", "--until-idle", timeout=300)
    assert final.returncode == 0, final.stderr
    site = Site(site_dir)
    runs = api.list_runs(site)
    # every request has exactly one run, none lost, none twice
    requests = sorted(r["id"] for r in runs)
    assert len(requests) == len(set(requests))
    by_request = [api.show_run(site, r["id"])["request"] for r in runs]
    rejected = sorted(
        p.name for p in site.layout.rejected.glob("*.yaml") if not p.name.endswith(".error.yaml")
    )
    assert sorted(by_request + rejected) == names
    assert rejected == []  # all were valid
    assert list(site.layout.claimed.iterdir()) == []
    # every run terminal, and the tree, the index and the leaderboard agree
    for row in runs:
        on_disk = json.loads(
            (Path(api.show_run(site, row["id"])["run_dir"]) / "run.json").read_text()
        )
        assert row["state"] == on_disk["state"] and row["state"] in {"SUCCESS", "ERROR"}
    assert all(r["state"] == "SUCCESS" for r in runs), [
        api.show_run(site, r["id"])["messages"] for r in runs if r["state"] != "SUCCESS"
    ]
    board = json.loads((site.layout.workflow_results("wf") / "leaderboard.json").read_text())
    ranking = api.ranking(site, "wf")
    assert [e["run"]["id"] for e in board["ranking"]] == [
        e["run"]["id"] for e in ranking["ranking"]
    ]
    assert len(ranking["ranking"]) == 10
    site.close()


def _one_run_killed_at_report(tmp_path: Path, template: str, report: int) -> Path:
    """A site with ``template`` installed as ``wf`` and one request (``score`` 4.5),
    served by a daemon killed as it begins its ``report``-th report; the site's folder."""
    site_dir = tmp_path / "site"
    site = make_site(site_dir, {"polling": {"settle": 0.0}})
    write_template(tmp_path / "t", template)
    api.install(site, tmp_path / "t", workflow_id="wf")
    drop(site, "r.yaml", {"workflow": "wf", "arguments": {"score": 4.5}})
    site.close()
    crash = {"FLOWBATCH_CRASH_AT": f"ranking:{report}"}
    killed = fb(site_dir, "daemon", "--until-idle", env=crash, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    return site_dir


def test_a_daemon_killed_before_its_reports_leaves_them_to_the_next_start(
    tmp_path: Path,
) -> None:
    """Killed after its last run ended but before the leaderboard was written: the next
    start writes it (the restart found nothing else to do, and wrote no report)."""
    site_dir = _one_run_killed_at_report(tmp_path, SCORE_TEMPLATE, 1)
    site = Site(site_dir)
    (run,) = api.list_runs(site)
    assert run["state"] == "SUCCESS"
    board = site.layout.workflow_results("wf") / "leaderboard.json"
    assert not board.exists()  # what the crash left
    assert [p.name for p in site.reports_pending_dir.iterdir()] == ["wf"]
    site.close()
    fb(site_dir, "daemon", "--until-idle")
    ranking = json.loads(board.read_text())["ranking"]
    assert [e["run"]["id"] for e in ranking] == [run["id"]]
    assert list(site.reports_pending_dir.iterdir()) == []  # owed no more


def test_a_daemon_killed_before_the_report_of_a_post_processing_run_leaves_it_owed(
    public_tmp: Path,
) -> None:
    """Killed after a post-processing run ended but before the leaderboard showed its
    outcome: the next start writes that leaderboard (it showed the run as RUNNING, and
    nothing else was left for a restart to do)."""
    from flowbatch.postproc import read_state

    # long enough for the first report (written as it starts) to show it RUNNING
    template = SCORE_TEMPLATE + (
        "postproc:\n  workflow:\n    steps:\n      - name: summary\n        action:\n"
        '          commands: ["test -f $[[runs]]/runs.json", "sleep 2"]\n'
    )
    # the first report shows the post-processing run started; the second, its end
    # in a folder the post-processing's user (not root: conftest) can reach
    site_dir = _one_run_killed_at_report(public_tmp, template, 2)
    site = Site(site_dir)
    latest = read_state(site, "wf")["latest"]
    board = site.layout.workflow_results("wf") / "leaderboard.json"
    shown = json.loads(board.read_text())["postproc"]["latest"]
    assert (shown["id"], shown["state"]) == (latest, "RUNNING")  # what the crash left
    site.close()
    fb(site_dir, "daemon", "--until-idle")
    shown = json.loads(board.read_text())["postproc"]["latest"]
    assert (shown["id"], shown["state"]) == (latest, "SUCCESS")
    assert list(site.reports_pending_dir.iterdir()) == []


def test_pending_reports_are_cleared_only_by_a_report_after_the_last_change(
    tmp_path: Path,
) -> None:
    """A run that ends while its workflow's report is being written keeps the note: that
    report may not show it. Reports are written in a thread: one handed over later may
    start before an earlier one is done, and the earlier one must not clear the note."""
    from flowbatch.daemon import PendingReports

    results = tmp_path / "results"
    (results / "wf" / "runs").mkdir(parents=True)
    pending = PendingReports(tmp_path / "pending", results)
    note = tmp_path / "pending" / "wf"
    pending.mark("wf")
    assert note.is_file()
    first = pending.handed_over()
    pending.mark("wf")  # a run ended meanwhile
    pending.written({"wf"}, first)
    assert note.is_file()
    pending.written({"wf"}, pending.handed_over())
    assert not note.exists()
    # two reports in flight: the earlier one ends after the later one was handed over
    pending.mark("wf")
    first = pending.handed_over()
    pending.mark("wf")  # e.g. a post-processing run ended
    second = pending.handed_over()
    pending.written({"wf"}, first)
    assert note.is_file()  # the first report did not show the second change
    pending.written({"wf"}, second)
    assert not note.exists()
    pending.mark("wf")  # a change after the note was cleared makes it again
    assert note.is_file()
    pending.written({"wf"}, pending.handed_over())
    # a start takes the notes left of workflows that still have results, drops the rest
    pending.mark("wf")
    pending.mark("gone")
    (tmp_path / "pending" / "..bad").touch()
    assert PendingReports(tmp_path / "pending", results).left() == {"wf"}
    assert sorted(p.name for p in (tmp_path / "pending").iterdir()) == ["wf"]


def test_a_same_state_transition_notes_no_report_as_owed(hello_site: Site) -> None:
    """Only a change the leaderboard must show is noted: a run already in its terminal
    state, told so again, leaves no note (it would have stayed until the workflow's next
    change, and made a start write a report for nothing)."""
    from flowbatch.runs import State

    drop(hello_site, "a.yaml", {"workflow": "helloworld"})
    d = run_until_idle(hello_site)
    (listed,) = api.list_runs(hello_site)
    assert listed["state"] == "SUCCESS"
    pending = hello_site.reports_pending_dir
    assert not pending.exists() or list(pending.iterdir()) == []
    run = hello_site.store.load(listed["id"])
    d.runner._transition(run, State.SUCCESS)
    assert not pending.exists() or list(pending.iterdir()) == []


# -- 3. index loss --------------------------------------------------------------------------
def test_deleted_or_corrupt_index_is_detected_and_rebuilt(hello_site: Site) -> None:
    for group in ("a", "b", "c"):
        drop(
            hello_site,
            f"{group}.yaml",
            {"workflow": "helloworld", "group": group, "arguments": {"greeting": group * 3}},
        )
    run_until_idle(hello_site)
    before = api.ranking(hello_site, "helloworld")
    listing = api.list_runs(hello_site)
    hello_site.close()
    root = hello_site.root
    index = root / "index.db"
    for damage in ("delete", "corrupt"):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{index}{suffix}").unlink(missing_ok=True)
        if damage == "corrupt":
            index.write_bytes(b"this is not an SQLite database" * 100)
        out = fb(root, "runs", "list", check=False)
        assert out.returncode != 0
        assert "flowbatch reindex" in out.stderr and len(out.stderr.strip().splitlines()) == 1
        rebuilt = fb(root, "reindex")
        assert "indexed 3 runs" in rebuilt.stdout
        assert json.loads(fb(root, "ranking", "helloworld", "--json").stdout) == before
        assert json.loads(fb(root, "runs", "list", "--json").stdout) == listing


# -- 5. ownership ---------------------------------------------------------------------------
def _user(name: str) -> pwd.struct_passwd:
    return account(name, home=True)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="ownership tests switch users")


def _identity_of(user: pwd.struct_passwd) -> dict[str, str]:
    """What ``id`` and /proc say inside a process of ``user``'s, started by root as a
    login would (its primary group and every group it is a member of)."""
    groups = sorted({user.pw_gid, *os.getgrouplist(user.pw_name, user.pw_gid)})
    return {
        "uid": f"{user.pw_uid} {user.pw_uid} {user.pw_uid}",
        "gid": f"{user.pw_gid} {user.pw_gid} {user.pw_gid}",
        "groups": " ".join(str(g) for g in groups),
        "caps": "0000000000000000",
        "home": user.pw_dir,
    }


# real, effective and saved IDs, every group, effective and permitted capabilities
WHO = (
    "awk '/^Uid:/{print $2, $3, $4}' /proc/self/status > uid.txt; "
    "awk '/^Gid:/{print $2, $3, $4}' /proc/self/status > gid.txt; "
    "id -G | tr ' ' '\\n' | sort -n | tr '\\n' ' ' | sed 's/ $//' > groups.txt; "
    "awk '/^CapEff:/{e=$2} /^CapPrm:/{p=$2} END{print (e == p ? e : e \"/\" p)}' "
    "/proc/self/status > caps.txt; echo $$HOME > home.txt"
)


@needs_root
@pytest.mark.parametrize("launch", ["setpriv", "fork"])
def test_root_daemon_runs_each_run_as_its_owner(
    public_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, launch: str
) -> None:
    """Both ways of becoming the run's user give it exactly that user's identity: the
    setpriv exec'd from a vfork (the default) and subprocess's own change (when setpriv is
    missing or refused), with no capability of root left."""
    from flowbatch.executors import local

    if launch == "setpriv":
        assert local.setpriv() is not None, "setpriv (util-linux) is part of the test install"
    else:
        monkeypatch.setattr(local, "_SETPRIV", [None])
    user = _user("fbrunner")
    subprocess.run(["groupadd", "-f", "fbextra"], check=True)
    subprocess.run(["usermod", "-aG", "fbextra", "fbrunner"], check=True)
    user = pwd.getpwnam("fbrunner")
    site = make_site(public_tmp / "site")
    write_template(
        tmp_path / "t",
        f"""
workflow:
  steps:
    - name: who
      action: {{commands: [{json.dumps(WHO)}]}}
""",
        files={"data/in.txt": "in\n", "top.txt": "top\n"},
    )
    for name in ("data/in.txt", "top.txt"):
        (tmp_path / "t" / name).chmod(0o666)  # group and world writable in the template
    api.install(site, tmp_path / "t", workflow_id="wf")
    path = drop(site, "mine.yaml", {"workflow": "wf"})
    os.chown(path, user.pw_uid, user.pw_gid)
    run_until_idle(site)
    run = only_run(site)
    assert run["state"] == "SUCCESS", run["messages"]
    assert run["owner"] == "fbrunner" and run["owner_uid"] == user.pw_uid
    assert run["group"] == "fbrunner"
    run_dir = Path(run["run_dir"])
    seen = {name: (run_dir / f"{name}.txt").read_text().strip() for name in _identity_of(user)}
    assert seen == _identity_of(user)
    assert (
        "fbextra"
        in subprocess.run(
            ["id", "-Gn", "fbrunner"], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    handle = json.loads((run_dir / "run.json").read_text())["handle"]
    assert handle["uid"] == user.pw_uid  # adoption after a restart checks it
    # the run folder was the user's while it ran, the tree's again once it ended (see
    # test_a_participant_cannot_replace_their_runs_page_once_it_ended)
    assert run_dir.stat().st_uid == run_dir.parent.stat().st_uid
    # the folders intake made were the user's (the script wrote its logs and markers
    # there, as the user) and are the tree's again; the request kept is the daemon's own
    # copy (a link would let its owner edit the request as received)
    tree = run_dir.parent.stat()
    assert (run_dir / "status" / "markers").is_file() and any((run_dir / "logs").iterdir())
    for folder in ("logs", "status", "data"):
        assert (run_dir / folder).stat().st_uid == tree.st_uid
    for name in ("data/in.txt", "top.txt"):  # the template's files: 0644, the tree's now
        st = (run_dir / name).stat()
        assert st.st_uid == tree.st_uid and st.st_gid == tree.st_gid
        assert st.st_mode & 0o777 == 0o644, oct(st.st_mode)
    request = (run_dir / "request.yaml").stat()
    assert request.st_uid == 0 and request.st_nlink == 1
    for path in [run_dir, *run_dir.rglob("*")]:
        if not path.is_symlink():
            assert not path.stat().st_mode & 0o002, f"{path} is world-writable"


@needs_root
def test_a_run_as_another_user_never_forks_the_daemon(
    public_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """subprocess forks the whole daemon when asked to change the user (its vfork needs
    no user change): the change is left to setpriv, and Popen gets none."""
    from flowbatch.executors import local
    from flowbatch.executors.base import Launch

    user = _user("fbrunner")
    seen: list[tuple[list[str], dict[str, object]]] = []
    real = subprocess.Popen

    def spy(argv: list[str], **kw: object) -> subprocess.Popen[bytes]:
        seen.append((argv, kw))
        return real(argv, **kw)  # type: ignore[call-overload,no-any-return]

    monkeypatch.setattr(local.subprocess, "Popen", spy)
    run_dir = public_tmp / "run"
    run_dir.mkdir()
    (run_dir / "run.sh").write_text(f'[ "$(id -u)" = {user.pw_uid} ]\n')
    ex = local.LocalExecutor()
    handle = ex.launch(Launch("r1", run_dir, "run.sh", uid=user.pw_uid))
    assert seen, "Popen was not called"
    argv, kw = seen[-1]
    assert argv[0] == local.setpriv() and argv[-2:] == [local._bash(), str(run_dir / "run.sh")]
    assert argv[argv.index("--reuid") + 1] == str(user.pw_uid)
    assert not {"user", "group", "extra_groups"} & set(kw)
    assert handle["uid"] == user.pw_uid
    deadline = time.monotonic() + 10
    while ex.poll([("r1", handle)])["r1"].exit_code is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ex.poll([("r1", handle)])["r1"].exit_code == 0


@needs_root
def test_a_setpriv_others_can_write_is_never_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The daemon runs setpriv as root: a copy anyone could replace is refused (and so is
    one that cannot change the user here), and the runs fall back to subprocess's own
    user change."""
    from flowbatch.executors import local

    real = local._find_setpriv()
    assert real is not None
    loose = tmp_path / "setpriv"
    shutil.copy2(real, loose)
    loose.chmod(0o777)
    broken = tmp_path / "broken"
    broken.write_text(
        "#!/bin/sh\necho 'setpriv: setresuid failed: Operation not permitted' >&2\nexit 1\n"
    )
    broken.chmod(0o755)
    monkeypatch.setattr(local, "SETPRIV_PLACES", (str(loose), str(broken)))
    with caplog.at_level("WARNING", logger="flowbatch.executors.local"):
        assert local._find_setpriv() is None
    text = caplog.text
    assert f"not using {loose}: it must belong to root" in text
    assert f"not using {broken} to start runs as their users" in text
    assert "Operation not permitted" in text
    monkeypatch.setattr(local, "SETPRIV_PLACES", (str(broken), real))
    assert local._find_setpriv() == real


@needs_root
def test_the_request_kept_is_the_one_read_not_what_its_owner_writes_later(
    public_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user may hold their request file open and write into it after the daemon read
    it: the run's request.yaml is the daemon's copy of the bytes it read and checked."""
    from flowbatch.queue import Intake

    user = _user("fbrunner")
    site = make_site(public_tmp / "site")
    write_template(tmp_path / "t", "workflow:\n  steps:\n    - action: {commands: ['true']}\n")
    api.install(site, tmp_path / "t", workflow_id="wf")
    path = drop(site, "mine.yaml", {"workflow": "wf", "name": "as read"})
    os.chown(path, user.pw_uid, user.pw_gid)
    read = Intake._read

    def read_then_edited(self: Intake, claimed: object) -> object:
        req = read(self, claimed)  # type: ignore[arg-type]
        # the owner writes into the claimed file (same inode) once the daemon has read it
        with open(claimed.path, "r+") as fh:  # type: ignore[attr-defined]
            fh.write("workflow: wf\nname: edited later\n# " + "x" * 40 + "\n")
        return req

    monkeypatch.setattr(Intake, "_read", read_then_edited)
    run_until_idle(site)
    run = only_run(site)
    assert run["state"] == "SUCCESS" and run["name"] == "as read"
    kept = Path(run["run_dir"]) / "request.yaml"
    assert yaml.safe_load(kept.read_text())["name"] == "as read"
    assert kept.stat().st_uid == 0 and kept.stat().st_nlink == 1


@needs_root
def test_cancel_is_honoured_only_from_the_owner_or_root(public_tmp: Path, tmp_path: Path) -> None:
    owner, other = _user("fbrunner"), _user("fbother")
    site = make_site(public_tmp / "site")
    write_template(tmp_path / "t", "workflow:\n  steps:\n    - action: {commands: [sleep 30]}\n")
    api.install(site, tmp_path / "t", workflow_id="wf")
    path = drop(site, "r.yaml", {"workflow": "wf"})
    os.chown(path, owner.pw_uid, owner.pw_gid)
    from flowbatch.daemon import Daemon

    d = Daemon(site)
    d.start()
    try:
        d.tick()
        run_id = next(iter(d.runner.active))
        evil = drop(site, "evil.yaml", {"cancel": run_id, "reason": "not yours"})
        os.chown(evil, other.pw_uid, other.pw_gid)
        d.tick()
        assert d.runner.active[run_id].state.value == "RUNNING"
        error = yaml.safe_load((site.layout.rejected / "evil.yaml.error.yaml").read_text())
        assert "only its owner or root" in error["reason"]
        good = drop(site, "stop.yaml", {"cancel": run_id, "reason": "done with it"})
        os.chown(good, owner.pw_uid, owner.pw_gid)
        d.tick()
    finally:
        d.stop()
    shown = api.show_run(site, run_id)
    assert shown["state"] == "CANCELED" and shown["messages"] == ["done with it"]


def _as_service(site_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``flowbatch --site SITE ARGS`` run as the user fbservice (a service user's daemon).
    The venv's interpreter links into /root; the system one with the same packages serves."""
    path = os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"]])
    command = ["runuser", "-u", "fbservice", "--", "env", f"PYTHONPATH={path}"]
    return subprocess.run(
        [*command, "/usr/bin/python3", "-m", "flowbatch", "--site", str(site_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@needs_root
def test_service_user_daemon_accepts_only_allowed_users(public_tmp: Path, tmp_path: Path) -> None:
    service, other = _user("fbservice"), _user("fbother")
    site_dir = public_tmp / "site"
    site = make_site(site_dir, {"allowed_users": ["fbother"]})
    write_template(
        tmp_path / "t", "workflow:\n  steps:\n    - action: {commands: [id -un > u.txt]}\n"
    )
    api.install(site, tmp_path / "t", workflow_id="wf")
    site.close()
    subprocess.run(["chown", "-R", f"{service.pw_uid}:{service.pw_gid}", str(site_dir)], check=True)
    ok = drop(site, "ok.yaml", {"workflow": "wf"})
    os.chown(ok, other.pw_uid, other.pw_gid)
    refused = drop(site, "refused.yaml", {"workflow": "wf"})  # owned by root: not allowed
    out = _as_service(site_dir, "daemon", "--until-idle")
    assert out.returncode == 0, out.stderr
    site = Site(site_dir)
    run = only_run(site)
    assert run["owner"] == "fbother" and run["state"] == "SUCCESS", run["messages"]
    assert (Path(run["run_dir"]) / "u.txt").read_text().strip() == "fbservice"  # as itself
    error = yaml.safe_load((site.layout.rejected / "refused.yaml.error.yaml").read_text())
    assert "may not submit" in error["reason"]
    assert not refused.exists()
    site.close()


@needs_root
def test_root_cancels_on_a_service_users_site_through_its_daemon(
    public_tmp: Path, tmp_path: Path
) -> None:
    """root's `runs cancel` on a site a service user serves (a cron site: no daemon
    between ticks) is queued, not applied by root: run.json and the site's folders
    written by root would be refused by the service user's daemon, and its runs stranded.
    The service user's next daemon applies it."""
    from click.testing import CliRunner

    from flowbatch.cli import main

    service, other = _user("fbservice"), _user("fbother")
    site_dir = public_tmp / "site"
    site = make_site(site_dir, {"allowed_users": ["fbother"]})
    write_template(tmp_path / "t", "workflow:\n  steps:\n    - action: {commands: [sleep 60]}\n")
    api.install(site, tmp_path / "t", workflow_id="wf")
    site.close()
    subprocess.run(["chown", "-R", f"{service.pw_uid}:{service.pw_gid}", str(site_dir)], check=True)
    request = drop(site, "r.yaml", {"workflow": "wf"})
    os.chown(request, other.pw_uid, other.pw_gid)
    out = _as_service(site_dir, "daemon", "--once")  # takes it in, starts it
    assert out.returncode == 0, out.stderr
    site = Site(site_dir)
    (run,) = [r for r in api.list_runs(site) if r["owner"] == "fbother"]
    site.close()
    waiting = drop(site, "after.yaml", {"workflow": "wf"})  # waits in the queue
    out = CliRunner().invoke(
        main, ["--site", str(site_dir), "runs", "cancel", run["id"], "--wait", "0"]
    )
    assert out.exit_code == 0, out.output
    assert "cancel queued" in out.output
    assert waiting.exists()  # root's cancel took nothing in
    root_owned = [
        p for p in site_dir.rglob("*") if p.lstat().st_uid == 0 and p.parent != site_dir / "queue"
    ]
    assert root_owned == []
    out = _as_service(site_dir, "daemon", "--once")
    assert out.returncode == 0, out.stderr
    site = Site(site_dir)
    shown = api.show_run(site, run["id"])
    assert shown["state"] == "CANCELED", shown
    site.close()
    pid = int(shown["handle"]["pid"])
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)  # the run's process ended with it


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- 6. retries and lost runs ---------------------------------------------------------------
LOSE_ONCE = """
retries: {retries}
workflow:
  steps:
    - name: flaky
      action:
        commands:
          - echo attempt >> attempts.txt
          - if [ ! -e survived-once ]; then touch survived-once; kill -KILL 0; fi
          - >-
            echo '{{"v": 1}}' > r.json
results:
  file: r.json
  schema: [{{name: v, label: V, dtype: int}}]
"""


@pytest.mark.parametrize("retries", [0, 1])
def test_lost_runs_are_errors_or_retried(site: Site, tmp_path: Path, retries: int) -> None:
    write_template(tmp_path / "t", LOSE_ONCE.format(retries=retries))
    api.install(site, tmp_path / "t", workflow_id="wf")
    drop(site, "r.yaml", {"workflow": "wf"})
    run_until_idle(site)
    run = only_run(site)
    run_dir = Path(run["run_dir"])
    if retries == 0:
        assert run["state"] == "ERROR"
        assert run["messages"][0].startswith("lost: ") and "SIGKILL" in run["messages"][0]
    else:
        assert run["state"] == "SUCCESS", run["messages"]
        assert (run_dir / "attempts.txt").read_text() == "attempt\nattempt\n"
        assert (run_dir / "attempts/1/logs").is_dir()  # each attempt keeps its logs
        assert "started " in (run_dir / "attempts/1/status/markers").read_text()
        states = [h["state"] for h in run["history"]]
        assert states == ["PENDING", "RUNNING", "PENDING", "RUNNING", "SUCCESS"]
        assert "retry 1 of 1" in run["messages"][0]


def test_a_users_nonzero_exit_is_never_retried(site: Site, tmp_path: Path) -> None:
    write_template(
        tmp_path / "t",
        "retries: 3\nworkflow:\n  steps:\n"
        "    - action: {commands: ['echo x >> tries.txt; exit 4']}\n",
    )
    api.install(site, tmp_path / "t", workflow_id="wf")
    drop(site, "r.yaml", {"workflow": "wf"})
    run_until_idle(site)
    run = only_run(site)
    assert run["state"] == "ERROR" and "exit code 4" in run["messages"][0]
    assert (Path(run["run_dir"]) / "tries.txt").read_text() == "x\n"


# -- 7. graceful operation ------------------------------------------------------------------
def test_sigterm_leaves_runs_running_and_a_restart_adopts_them(
    hello_site: Site, tmp_path: Path
) -> None:
    drop(hello_site, "slow.yaml", {"workflow": "helloworld", "arguments": {"sleeptime": 0.5}})
    log = tmp_path / "d.log"
    proc = start_daemon(hello_site.root, "--log-format", "json", log=log)
    assert wait_for(lambda: any(r["state"] == "RUNNING" for r in api.list_runs(hello_site)))
    run = api.show_run(hello_site, api.list_runs(hello_site)[0]["id"])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    pid = run["handle"]["pid"]
    assert Path(f"/proc/{pid}").exists()  # the run goes on without the daemon
    fb(hello_site.root, "daemon", "--until-idle")
    assert api.show_run(hello_site, run["id"])["state"] == "SUCCESS"
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    changes = [entry for entry in lines if run["id"] in entry["message"]]
    assert any("PENDING -> RUNNING" in e["message"] for e in changes)
    assert all({"time", "level", "message"} <= set(e) for e in lines)


def test_sighup_reloads_config_and_keeps_the_old_one_when_invalid(
    site: Site, tmp_path: Path
) -> None:
    log = tmp_path / "d.log"
    proc = start_daemon(site.root, log=log)
    try:
        assert wait_for(lambda: site.layout.lock.exists() and site.layout.lock.read_text())
        time.sleep(0.3)
        site.layout.config.write_text("local: {concurrency: 1}\npolling: {interval: 0.2}\n")
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reloaded" in log.read_text(), timeout=10)
        site.layout.config.write_text("local: {concurrency: -5}\n")
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "keeping the old one" in log.read_text(), timeout=10)
        assert "local.concurrency" in log.read_text()
        assert proc.poll() is None  # still serving
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_sighup_applies_the_new_concurrency_to_the_running_daemon(
    site: Site, tmp_path: Path
) -> None:
    """The reload rebuilds the executors from the new config: after raising the local
    concurrency from 1 to 3, three runs run at once (the one already running is kept)."""
    site.layout.config.write_text("local: {concurrency: 1}\npolling: {interval: 0.2, settle: 0}\n")
    write_template(tmp_path / "t", "workflow:\n  steps:\n    - action: {commands: [sleep 4]}\n")
    api.install(site, tmp_path / "t", workflow_id="wf")
    for i in range(3):
        drop(site, f"r{i}.yaml", {"workflow": "wf", "name": f"r{i}"})
    log = tmp_path / "d.log"
    proc = start_daemon(site.root, log=log)

    def running() -> int:
        return sum(1 for r in api.list_runs(site) if r["state"] == "RUNNING")

    try:
        assert wait_for(lambda: running() == 1 and len(api.list_runs(site)) == 3)
        time.sleep(0.5)
        assert running() == 1  # the concurrency the daemon started with
        site.layout.config.write_text(
            "local: {concurrency: 3}\npolling: {interval: 0.2, settle: 0}\n"
        )
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reloaded" in log.read_text(), timeout=10)
        assert wait_for(lambda: running() == 3, timeout=3), api.list_runs(site)
        assert wait_for(lambda: all(r["state"] == "SUCCESS" for r in api.list_runs(site)))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_reindex_ignores_a_run_folder_intake_never_finished(hello_site: Site) -> None:
    drop(hello_site, "a.yaml", {"workflow": "helloworld"})
    run_until_idle(hello_site)
    done = api.list_runs(hello_site)
    half = hello_site.layout.runs_dir("helloworld") / ".deadbeef0000.tmp"
    half.mkdir()
    (half / "run.json").write_text(
        (Path(api.show_run(hello_site, done[0]["id"])["run_dir"]) / "run.json")
        .read_text()
        .replace(done[0]["id"], "deadbeef0000")
    )
    assert api.reindex(hello_site) == 1
    assert [r["id"] for r in api.list_runs(hello_site)] == [done[0]["id"]]


def test_a_reused_pid_is_never_taken_for_the_run(site: Site) -> None:
    """Adoption checks the PID *and* the process start time recorded at launch."""
    import psutil

    from flowbatch.executors.local import LocalExecutor

    proc = subprocess.Popen(["sleep", "30"])
    try:
        started = psutil.Process(proc.pid).create_time()
        ex = LocalExecutor()
        assert ex.adopt({"pid": proc.pid, "start": started, "host": ex.host})
        # the same PID, but a process started at another time: not our run
        assert not ex.adopt({"pid": proc.pid, "start": started - 60, "host": ex.host})
        assert not ex.adopt({"pid": proc.pid, "start": started, "host": "another-host"})
    finally:
        proc.kill()
        proc.wait()
    assert not ex.adopt({"pid": proc.pid, "start": started, "host": ex.host})


# -- a run's user cannot turn the root daemon against others --------------------------------
@needs_root
def test_a_run_cannot_make_the_root_daemon_read_through_its_symlinks(
    public_tmp: Path, tmp_path: Path
) -> None:
    user = _user("fbrunner")
    secret = public_tmp / "secret.txt"
    secret.write_text("root-only-secret-line\n")
    secret.chmod(0o600)
    site = make_site(public_tmp / "site")
    write_template(
        tmp_path / "t",
        f"""
workflow:
  steps:
    - name: s
      action:
        commands:
          - rm -f logs/step-01-s.err; ln -s {secret} logs/step-01-s.err; exit 1
""",
    )
    api.install(site, tmp_path / "t", workflow_id="wf")
    path = drop(site, "r.yaml", {"workflow": "wf"})
    os.chown(path, user.pw_uid, user.pw_gid)
    run_until_idle(site)
    run = only_run(site)
    assert run["state"] == "ERROR"
    assert not any("root-only-secret-line" in m for m in run["messages"])
    page = (Path(run["run_dir"]) / "index.html").read_text()
    assert "root-only-secret-line" not in page
    assert secret.stat().st_uid == 0 and secret.read_text() == "root-only-secret-line\n"


@needs_root
def test_a_symlinked_logs_folder_gets_nothing_from_root(public_tmp: Path, tmp_path: Path) -> None:
    user = _user("fbrunner")
    target = public_tmp / "rootdir"
    target.mkdir(mode=0o755)
    site = make_site(public_tmp / "site")
    write_template(tmp_path / "t", "workflow:\n  steps:\n    - action: {commands: ['true']}\n")
    api.install(site, tmp_path / "t", workflow_id="wf")
    path = drop(site, "r.yaml", {"workflow": "wf"})
    os.chown(path, user.pw_uid, user.pw_gid)
    from flowbatch.queue import Intake

    run = Intake(site).run_once().runs[0]
    run_dir = site.store.run_dir(run)
    (run_dir / "logs").rmdir()  # the user's own (empty) folder, made by intake...
    os.symlink(target, run_dir / "logs")  # ...replaced by the run's user before launch
    os.lchown(run_dir / "logs", user.pw_uid, user.pw_gid)
    run_until_idle(site)
    assert target.stat().st_uid == 0  # never chowned to the user
    assert list(target.iterdir()) == []  # root wrote nothing there (the user may not)


@needs_root
def test_a_replaced_run_json_is_not_trusted(public_tmp: Path, tmp_path: Path) -> None:
    user = _user("fbrunner")
    site = make_site(public_tmp / "site")
    write_template(
        tmp_path / "t", "workflow:\n  steps:\n    - action: {commands: ['id -u > uid.txt']}\n"
    )
    api.install(site, tmp_path / "t", workflow_id="wf")
    path = drop(site, "r.yaml", {"workflow": "wf"})
    os.chown(path, user.pw_uid, user.pw_gid)
    from flowbatch.queue import Intake

    run = Intake(site).run_once().runs[0]
    site.close()
    run_dir = Site(site.root).store.run_dir(run)
    record = json.loads((run_dir / "run.json").read_text())
    assert (run_dir / "run.json").stat().st_uid == 0  # the daemon's, in the user's folder
    record["owner_uid"] = 0  # the user asks to be root...
    forged = run_dir / "forged.json"
    forged.write_text(json.dumps(record))
    os.chown(forged, user.pw_uid, user.pw_gid)
    os.replace(forged, run_dir / "run.json")  # ...by replacing the file in their folder
    (site.root / "index.db").unlink()  # and the index is gone: the tree has the last word
    fb(site.root, "reindex")
    out = fb(site.root, "daemon", "--until-idle", check=False)
    assert out.returncode == 0
    uid = run_dir / "uid.txt"
    assert not uid.exists() or uid.read_text().strip() != "0"


def test_adopting_from_a_marker_checks_the_user_and_the_script(site: Site) -> None:
    import psutil

    from flowbatch.executors.local import LocalExecutor

    other = subprocess.Popen(["sleep", "30"])  # someone else's process
    try:
        started = psutil.Process(other.pid).create_time()
        ex = LocalExecutor()
        forged = {
            "pid": other.pid,
            "start": started + 0.5,
            "host": ex.host,
            "from_marker": True,
            "uid": os.geteuid(),
            "script": "/x/run.sh",
        }
        assert not ex.adopt(forged)  # not running that run's script
        assert not ex.adopt({**forged, "script": "sleep", "uid": os.geteuid() + 1})
        proc = psutil.Process(other.pid)
        state = (proc.status(), proc.cmdline(), proc.uids().real, proc.create_time(), started)
        assert ex.adopt({**forged, "script": "sleep"}), state
    finally:
        other.kill()
        other.wait()


@needs_root
@pytest.mark.parametrize("policy", ["members", "teams", "open"])
def test_a_user_may_only_post_under_groups_of_their_own(
    public_tmp: Path, tmp_path: Path, policy: str
) -> None:
    user = _user("fbrunner")
    config: dict[str, object] = {}
    if policy == "teams":
        config["teams"] = {"team-x": ["fbrunner"]}
    elif policy == "open":
        config["group_policy"] = "open"
    site = make_site(public_tmp / "site", config)
    write_template(tmp_path / "t", "workflow:\n  steps:\n    - action: {commands: ['true']}\n")
    api.install(site, tmp_path / "t", workflow_id="wf")
    for name, group in (("x.yaml", "team-x"), ("own.yaml", "fbrunner")):
        path = drop(site, name, {"workflow": "wf", "group": group})
        os.chown(path, user.pw_uid, user.pw_gid)
    run_until_idle(site)
    groups = sorted(r["group"] for r in api.list_runs(site))
    if policy == "members":
        assert groups == ["fbrunner"]
        error = yaml.safe_load((site.layout.rejected / "x.yaml.error.yaml").read_text())
        assert error["field"] == "group" and "team-x" in error["reason"]
    else:
        assert groups == ["fbrunner", "team-x"]


def test_a_single_host_site_takes_its_runs_back_after_the_host_is_renamed(
    hello_site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowbatch.daemon import Daemon

    drop(hello_site, "a.yaml", {"workflow": "helloworld", "arguments": {"sleeptime": 0.3}})
    monkeypatch.setenv("FLOWBATCH_HOSTNAME", "old-name")
    d = Daemon(Site(hello_site.root))
    d.start()
    d.tick()  # launched under the old name, then the daemon goes away
    d.stop()
    assert api.list_runs(hello_site)[0]["state"] == "RUNNING"
    monkeypatch.setenv("FLOWBATCH_HOSTNAME", "new-name")
    run_until_idle(Site(hello_site.root), timeout=30)
    assert api.list_runs(hello_site)[0]["state"] == "SUCCESS"


def test_an_index_write_that_fails_is_caught_up_from_the_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database away for a moment (a fault staged here by making the index statement
    raise; test_shared_site drops a real PostgreSQL connection): the state changes still
    happen in the tree, the daemon does not stall, and the index catches up at the next
    tick, history included."""
    import peewee as pw

    from flowbatch.store.index import RunRow, StateChangeRow
    from flowbatch.store.store import Store

    site = make_site(tmp_path / "site")
    write_template(tmp_path / "t", SCORE_TEMPLATE)
    api.install(site, tmp_path / "t", workflow_id="wf")
    drop(site, "r.yaml", {"workflow": "wf", "arguments": {"score": 0.25}})
    real = Store._upsert_run
    failures = {"left": 2}  # RUNNING and SUCCESS both fail to reach the index

    def flaky(self: Store, run_id: str, values: dict) -> None:
        if values["state"] != "PENDING" and failures["left"] > 0:
            failures["left"] -= 1
            raise pw.OperationalError("server closed the connection unexpectedly")
        real(self, run_id, values)

    monkeypatch.setattr(Store, "_upsert_run", flaky)
    run_until_idle(site, timeout=30)  # would never be idle with a run stuck in memory
    run = only_run(site)
    assert failures["left"] == 0
    assert run["state"] == "SUCCESS"  # the index row, caught up
    on_disk = json.loads((Path(run["run_dir"]) / "run.json").read_text())
    assert on_disk["state"] == "SUCCESS"
    assert RunRow.get_by_id(run["id"]).results == {"score": 0.25}
    changes = [c.state for c in StateChangeRow.select().where(StateChangeRow.run == run["id"])]
    assert changes == ["PENDING", "RUNNING", "SUCCESS"]
    assert not site.store.unindexed


@pytest.mark.parametrize("via_cli", [False, True])
def test_until_idle_gives_up_on_an_index_that_stays_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, via_cli: bool
) -> None:
    """`daemon --until-idle` (a cron tick) with an index that never comes back: it does
    not tick forever; once nothing but index writes is left, it waits for the index at
    most ``UNINDEXED_PATIENCE`` seconds, then ends with an error that says what to do.
    Nothing is lost: the tree has the runs, and the next start indexes them."""
    import peewee as pw

    from flowbatch.daemon import Daemon
    from flowbatch.store.store import Store

    site = make_site(tmp_path / "site")
    write_template(tmp_path / "t", SCORE_TEMPLATE)
    api.install(site, tmp_path / "t", workflow_id="wf")
    drop(site, "r.yaml", {"workflow": "wf", "arguments": {"score": 0.5}})
    real = Store._upsert_run
    broken = {"on": True}

    def down(self: Store, run_id: str, values: dict) -> None:
        if broken["on"] and values["state"] != "PENDING":
            raise pw.OperationalError("disk I/O error")
        real(self, run_id, values)

    monkeypatch.setattr(Store, "_upsert_run", down)
    monkeypatch.setattr(Daemon, "UNINDEXED_PATIENCE", 1.0)
    handlers = {n: signal.getsignal(n) for n in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    started = time.monotonic()
    try:
        _until_idle_against_a_broken_index(site, via_cli)
    finally:
        for signum, handler in handlers.items():  # the daemon installed its own
            signal.signal(signum, handler)
    assert time.monotonic() - started < 30
    run_dir = next(site.layout.results.glob("wf/runs/*/run.json")).parent
    assert json.loads((run_dir / "run.json").read_text())["state"] == "SUCCESS"
    broken["on"] = False  # the index is back: the next start catches up from the tree
    site.close()
    again = Site(site.root)
    run_until_idle(again, timeout=30)
    run = only_run(again)
    assert run["state"] == "SUCCESS" and run["id"] == run_dir.name


def _until_idle_against_a_broken_index(site: Site, via_cli: bool) -> None:
    from flowbatch.daemon import run_daemon
    from flowbatch.errors import FlowbatchError

    if via_cli:
        from click.testing import CliRunner

        from flowbatch.cli import main

        site.close()
        out = CliRunner().invoke(main, ["--site", str(site.root), "daemon", "--until-idle"])
        assert out.exit_code == 1, out.output
        assert "index database stayed unwritable" in out.output
        assert "reindex" in out.output
    else:
        with pytest.raises(FlowbatchError, match="index") as caught:
            run_daemon(site, until_idle=True)
        assert "reindex" in (caught.value.hint or "")


def test_a_slow_report_never_holds_up_new_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve() writes the report files in a thread of its own: while a leaderboard is
    being written (here: held until the second request has run), the tick goes on
    claiming, launching and finishing runs; everything asked for is written before
    serve() returns."""
    import threading

    from flowbatch.daemon import Daemon

    site = make_site(tmp_path / "site", {"polling": {"interval": 0.2, "settle": 0.0}})
    write_template(tmp_path / "t", SCORE_TEMPLATE)
    api.install(site, tmp_path / "t", workflow_id="wf")
    real = api.update_reports
    seen: dict[str, object] = {}

    def second_done() -> bool:
        return any(r["name"] == "second" and r["state"] == "SUCCESS" for r in api.list_runs(site))

    def slow(site_: Site, workflows: set[str], **kw: object) -> None:
        if "held" not in seen:  # the first report: held until the second run has ended
            seen["held"] = threading.current_thread().name
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not second_done():
                time.sleep(0.02)
            seen["second_done_meanwhile"] = second_done()
        real(site_, workflows, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(api, "update_reports", slow)
    daemon = Daemon(site)
    daemon.start()
    thread = threading.Thread(target=daemon.serve, daemon=True)
    thread.start()
    try:
        drop(site, "first.yaml", {"workflow": "wf", "name": "first", "arguments": {"score": 1}})
        deadline = time.monotonic() + 30
        while "held" not in seen and time.monotonic() < deadline:
            time.sleep(0.02)
        assert seen.get("held") == "reports"  # the report thread, not the tick's
        drop(site, "second.yaml", {"workflow": "wf", "name": "second", "arguments": {"score": 2}})
        deadline = time.monotonic() + 30
        while "second_done_meanwhile" not in seen and time.monotonic() < deadline:
            time.sleep(0.02)
        assert seen.get("second_done_meanwhile") is True
    finally:
        daemon.stopping = True
        daemon.wakeup.set()
        thread.join(30)
        daemon.stop()
    assert not thread.is_alive()
    board = json.loads((site.root / "results" / "wf" / "leaderboard.json").read_text())
    assert sorted(e["run"]["name"] for e in board["all"]) == ["first", "second"]


@needs_root
def test_a_run_whose_user_cannot_reach_its_script_says_why(tmp_path: Path) -> None:
    """A root daemon's run of another user in a site that user cannot enter (pytest's
    folders are root's, 0700): the script never starts, and the message gives the words
    of what failed (its start sends them nowhere), found by doing that start again."""
    user = _user("fbrunner")
    site = make_site(tmp_path / "site")
    write_template(
        tmp_path / "t", 'workflow:\n  steps:\n    - {name: s, action: {commands: ["true"]}}\n'
    )
    api.install(site, tmp_path / "t", workflow_id="wf")
    path = drop(site, "theirs.yaml", {"workflow": "wf"})
    os.chown(path, user.pw_uid, user.pw_gid)
    run_until_idle(site)
    run = only_run(site)
    assert run["state"] == "ERROR"
    message = run["messages"][0]
    assert message.startswith("lost: the run's script never started"), message
    assert f"it was to run as uid {user.pw_uid}: " in message
    assert "cd: " in message and ": Permission denied" in message, message


@needs_root
def test_the_start_done_again_opens_nothing(public_tmp: Path) -> None:
    """The check of a start that failed opens no file: a FIFO the run's user put in place
    of its script cannot hold the daemon (it answers at once, and there is nothing to
    say: the user can enter the folder and read the name)."""
    from flowbatch.executors import local

    user = _user("fbrunner")
    run_dir = public_tmp / "run"
    run_dir.mkdir()
    os.mkfifo(run_dir / "run.sh")
    os.chown(run_dir / "run.sh", user.pw_uid, user.pw_gid)
    started = time.monotonic()
    said = local.LocalExecutor().why_not_started(
        {"uid": user.pw_uid, "script": str(run_dir / "run.sh")}
    )
    assert time.monotonic() - started < 3
    # nothing failed again: the likely cause is said, not found
    assert said == f"it was to run as uid {user.pw_uid}: the change to that user may have " + (
        "failed (`flowbatch doctor` checks it)"
    )
    (run_dir / "run.sh").unlink()
    said = local.LocalExecutor().why_not_started(
        {"uid": user.pw_uid, "script": str(run_dir / "run.sh")}
    )
    assert said == f"it was to run as uid {user.pw_uid}: {run_dir / 'run.sh'}: not readable"
    # the daemon's own user's run: nothing to find
    assert local.LocalExecutor().why_not_started({"uid": 0, "script": "/x/run.sh"}) is None


def _as_user(user: pwd.struct_passwd, command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``sh -c COMMAND`` as ``user`` (a participant at the shell), in ``cwd``."""
    return subprocess.run(
        ["runuser", "-u", user.pw_name, "--", "sh", "-c", command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


def _daemon_once(site_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowbatch", "--site", str(site_dir), "daemon", "--once"],
        capture_output=True,
        text=True,
        timeout=120,
    )


@needs_root
def test_participants_cannot_replace_the_queue_folders_of_a_root_daemon(
    public_tmp: Path, tmp_path: Path
) -> None:
    """A participant who may write queue/ renames rejected/ away and puts a link to a
    folder of root's in its place, or a .claimed/ of her own (to swap the requests of
    others after their claim). Without the sticky bit the root daemon refuses to start,
    saying what to run; with it, the renames fail, and a folder she made where one was
    missing is refused: nothing is written through her link, nothing claimed into her
    folder."""
    alice, bob = _user("fbtest"), _user("fbother")
    site_dir = public_tmp / "site"
    site = make_site(site_dir)
    write_template(tmp_path / "t", "workflow:\n  steps:\n    - action: {commands: ['true']}\n")
    api.install(site, tmp_path / "t", workflow_id="wf")
    site.close()
    queue = site.layout.queue
    os.chown(queue, 0, alice.pw_gid)
    os.chmod(queue, 0o2775)  # group-writable with setgid, no sticky bit
    root_only = public_tmp / "root-only"
    root_only.mkdir(mode=0o700)
    planted = _as_user(
        alice,
        f"mv rejected .old && ln -s {root_only} rejected && "
        "printf 'workflow: nope\\n' > .evil.tmp && mv .evil.tmp evil.yaml",
        queue,
    )
    assert planted.returncode == 0, planted.stderr  # possible without the sticky bit...
    out = _daemon_once(site_dir)
    assert out.returncode != 0  # ... and the daemon does not start on such a queue
    assert "sticky bit" in out.stderr and f"chmod +t {queue}" in out.stderr, out.stderr
    assert list(root_only.iterdir()) == [] and (queue / "evil.yaml").exists()
    # the admin's fix: the sticky bit; alice's link is found and refused in turn
    assert subprocess.run(["chmod", "+t", str(queue)]).returncode == 0
    out = _daemon_once(site_dir)
    assert out.returncode != 0 and "rejected is a symbolic link" in out.stderr, out.stderr
    assert list(root_only.iterdir()) == [] and (queue / "evil.yaml").exists()
    os.unlink(queue / "rejected")
    os.rename(queue / ".old", queue / "rejected")
    for folder in ("rejected", ".claimed"):  # with the sticky bit, no longer hers to move
        moved = _as_user(alice, f"mv {folder} mine", queue)
        assert moved.returncode != 0 and (queue / folder).is_dir(), moved.stderr
    # an admin's cleanup removed .claimed; alice makes her own before the daemon does
    os.rmdir(queue / ".claimed")
    made = _as_user(alice, "mkdir .claimed && chmod 777 .claimed", queue)
    assert made.returncode == 0, made.stderr
    request = drop(site, "bob.yaml", {"workflow": "wf"})
    os.chown(request, bob.pw_uid, bob.pw_gid)
    out = _daemon_once(site_dir)
    assert out.returncode != 0 and "belongs to fbtest" in out.stderr, out.stderr
    assert request.exists() and list((queue / ".claimed").iterdir()) == []
    os.rename(queue / ".claimed", queue / "alices")  # the admin moves it aside
    out = _daemon_once(site_dir)
    assert out.returncode == 0, out.stderr
    site = Site(site_dir)
    assert [r["owner"] for r in api.list_runs(site)] == ["fbother"]
    assert (queue / ".claimed").lstat().st_uid == 0
    assert sorted(p.name for p in site.layout.rejected.iterdir()) == [
        "evil.yaml",
        "evil.yaml.error.yaml",
    ]
    assert list(root_only.iterdir()) == []
    site.close()


@needs_root
def test_a_request_swapped_after_its_claim_runs_as_no_one(public_tmp: Path, tmp_path: Path) -> None:
    """The claim records the request's owner; the file read later must be the very file
    whose owner it recorded (inode, device, owner), or no run is made: another user's
    file swapped in is never run as the first one's."""
    from flowbatch.queue import Intake, IntakeResult

    alice, bob = _user("fbtest"), _user("fbother")
    site = make_site(public_tmp / "site")
    write_template(tmp_path / "t", "workflow:\n  steps:\n    - action: {commands: ['true']}\n")
    api.install(site, tmp_path / "t", workflow_id="wf")
    request = drop(site, "bob.yaml", {"workflow": "wf", "name": "bob's"})
    os.chown(request, bob.pw_uid, bob.pw_gid)
    intake = Intake(site)
    claimed = intake.claim("bob.yaml")
    assert claimed is not None and claimed.uid == bob.pw_uid
    # what a participant who could write the claimed folder would do before the read
    swap = claimed.path.with_name(".swap")
    swap.write_text("workflow: wf\nname: alice's\n")
    os.chown(swap, alice.pw_uid, alice.pw_gid)
    os.rename(swap, claimed.path)
    result = IntakeResult()
    intake.process(claimed, result)
    assert result.runs == [] and result.rejected == ["bob.yaml"]
    assert api.list_runs(site) == []
    error = yaml.safe_load((site.layout.rejected / "bob.yaml.error.yaml").read_text())
    assert "replaced after the daemon claimed it" in error["reason"]
    site.close()


def test_a_cancel_done_before_a_crash_is_not_rejected_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon cancelled the run, then stopped before it removed the cancel request
    from queue/.claimed: the next daemon finds the run CANCELED and drops the request
    (it rejected it: "run ... is CANCELED, not active", for a cancel that was done)."""
    from flowbatch import daemon as daemon_module
    from flowbatch.daemon import Daemon

    site = make_site(tmp_path / "site")
    write_template(tmp_path / "t", "workflow:\n  steps:\n    - action: {commands: [sleep 30]}\n")
    api.install(site, tmp_path / "t", workflow_id="wf")
    drop(site, "r.yaml", {"workflow": "wf"})
    d = Daemon(site)
    d.start()
    run_id = ""
    try:
        d.tick()
        run_id = next(iter(d.runner.active))
        drop(site, "stop.yaml", {"cancel": run_id, "reason": "done with it"})

        def crash(*args: object) -> None:
            real_cancel(*args)
            raise SystemExit("killed")  # before the request is removed

        real_cancel = daemon_module.cancel_run
        monkeypatch.setattr(daemon_module, "cancel_run", crash)
        with pytest.raises(SystemExit):
            d.tick()
    finally:
        d.stop()
    monkeypatch.undo()
    assert api.show_run(site, run_id)["state"] == "CANCELED"
    (left,) = site.claimed_dir.iterdir()
    assert left.name.endswith("--stop.yaml")
    again = Daemon(Site(site.root))
    again.start()
    try:
        again.tick()
    finally:
        again.stop()
    assert list(site.claimed_dir.iterdir()) == []
    assert list(site.layout.rejected.iterdir()) == []
    shown = api.show_run(site, run_id)
    assert shown["state"] == "CANCELED" and shown["messages"] == ["done with it"]


def test_a_run_page_a_crash_left_unwritten_is_written_at_the_next_start(
    hello_site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's page is written after its state: a daemon killed in between left the run
    SUCCESS with no page (the leaderboard links to it), and nothing wrote it again."""
    from flowbatch.daemon import Daemon
    from flowbatch.report_pages import RUN_PAGE, RunPageWriter

    def crash(self: RunPageWriter, run: Any, previous: object) -> None:
        if run.state.value == "SUCCESS":
            raise SystemExit("killed")  # after run.json and the index, before the page

    monkeypatch.setattr(RunPageWriter, "__call__", crash)
    drop(hello_site, "a.yaml", {"workflow": "helloworld"})
    with pytest.raises(SystemExit):
        run_until_idle(hello_site)
    monkeypatch.undo()
    (listed,) = api.list_runs(hello_site)
    run_dir = Path(api.show_run(hello_site, listed["id"])["run_dir"])
    assert listed["state"] == "SUCCESS" and not (run_dir / RUN_PAGE).exists()
    d = Daemon(Site(hello_site.root))
    d.start()
    d.stop()
    page = (run_dir / RUN_PAGE).read_text()
    assert listed["id"] in page and "SUCCESS" in page


def test_an_install_killed_before_the_index_is_set_right_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An install of a new version killed between the templates' record and the index:
    the leaderboard (from the index) ranked the old version while `flowbatch ranking`
    (from the record) showed the new one, until the next install."""
    from flowbatch.daemon import Daemon
    from flowbatch.store.index import WorkflowRow

    site = make_site(tmp_path / "site")
    folder = write_template(
        tmp_path / "t", "workflow:\n  steps:\n    - action: {commands: [echo one]}\n"
    )
    first = api.install(site, folder, workflow_id="wf").version
    write_template(folder, "workflow:\n  steps:\n    - action: {commands: [echo two]}\n")

    def crash(*args: object) -> None:
        raise SystemExit("killed")

    monkeypatch.setattr(api, "index_workflow", crash)
    with pytest.raises(SystemExit):
        api.install(site, folder, workflow_id="wf")
    monkeypatch.undo()
    current = site.templates.meta("wf")["current"]
    assert current != first and WorkflowRow.get_by_id("wf").version == first
    d = Daemon(Site(site.root))
    d.start()
    d.stop()
    assert WorkflowRow.get_by_id("wf").version == current


@needs_root
def test_a_participant_cannot_replace_their_runs_page_once_it_ended(
    public_tmp: Path, tmp_path: Path
) -> None:
    """A root daemon hands a run's folder to its user, and wrote the run page into it:
    the user then put a page of their own (a script in it) where the leaderboard links,
    removed run.json, or removed or changed the result files the post-processing reads
    (it failed for everyone). At the run's end the folder and what the run wrote are the
    tree's (still readable by the user); a file with another hard link stays theirs."""
    owner = _user("fbrunner")
    site = make_site(public_tmp / "site")
    write_template(
        tmp_path / "t",
        "workflow:\n  steps:\n    - action: {commands: ['echo made > out.txt && mkdir -p "
        "results && echo 1 > results/r.json && chmod 666 results/r.json && "
        'echo x > kept.txt && ln kept.txt also.txt && ln -f results/r.json "$$HOME/keep.json"\']}\n',
    )
    api.install(site, tmp_path / "t", workflow_id="wf")
    path = drop(site, "r.yaml", {"workflow": "wf"})
    os.chown(path, owner.pw_uid, owner.pw_gid)
    run_until_idle(site)
    run = only_run(site)
    assert run["state"] == "SUCCESS", run["messages"]
    run_dir = Path(run["run_dir"])
    tree = run_dir.parent.stat()
    assert (run_dir.stat().st_uid, run_dir.stat().st_gid) == (tree.st_uid, tree.st_gid)
    for made in ("out.txt", "results", "results/r.json"):
        assert (run_dir / made).stat().st_uid == tree.st_uid, made
    assert (run_dir / "results/r.json").stat().st_mode & 0o022 == 0
    # a file with another name (here or in the user's home) gets a copy of its own
    for made in ("kept.txt", "also.txt"):
        assert (run_dir / made).stat().st_uid == tree.st_uid, made
    for change in ("rm -f results/r.json", "echo 2 > results/r.json", "echo y > out.txt"):
        assert _as_user(owner, change, run_dir).returncode != 0, change
    assert _as_user(owner, 'echo 3 > "$HOME/keep.json"', run_dir).returncode == 0
    assert (run_dir / "results/r.json").read_text() == "1\n"
    page = (run_dir / "index.html").read_text()
    forged = _as_user(
        owner, "echo '<script>x</script>' > mine.html && mv mine.html index.html", run_dir
    )
    assert forged.returncode != 0
    removed = _as_user(owner, "rm -f run.json", run_dir)
    assert removed.returncode != 0
    assert (run_dir / "index.html").read_text() == page and (run_dir / "run.json").exists()
    assert _as_user(owner, "cat out.txt", run_dir).stdout == "made\n"


@needs_root
def test_the_daemons_files_a_run_replaced_are_not_taken_back(tmp_path: Path) -> None:
    """A run's user may replace the daemon's run.json, request.yaml or run.sh in the
    folder that is theirs while it runs: taken back with the rest, a forged run.json
    became the tree's, trusted by a daemon started after a kill before the final write
    (and a forged request.yaml by runs rerun). They stay the user's, and are refused."""
    from flowbatch.errors import FlowbatchError
    from flowbatch.store.store import Store
    from flowbatch.takeback import take_back

    owner = _user("fbrunner")
    run_dir = tmp_path / "results" / "wf" / "runs" / "r1"
    run_dir.mkdir(parents=True)
    forged = {"id": "r1", "workflow": "wf", "state": "SUCCESS", "results": {"s": 1e9}}
    for name, text in (
        ("run.json", json.dumps(forged)),
        ("request.yaml", "workflow: wf\nresources: {cpus: 64}\n"),
        ("run.sh", "echo\n"),
        ("out.txt", "made\n"),
    ):
        (run_dir / name).write_text(text)
        os.chown(run_dir / name, owner.pw_uid, owner.pw_gid)
    os.chown(run_dir, owner.pw_uid, owner.pw_gid)
    take_back(run_dir, owner.pw_uid)
    tree = run_dir.parent.stat().st_uid
    assert (run_dir / "out.txt").stat().st_uid == tree
    for name in ("run.json", "request.yaml", "run.sh"):
        assert (run_dir / name).stat().st_uid == owner.pw_uid, name
    with pytest.raises(FlowbatchError, match="not trusted"):
        Store.load_dir(run_dir)


def test_a_failing_listener_never_holds_a_run_that_changed_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A listener of the store (a run's page, a note) that raised after a cancel's state
    change left the run CANCELED on disk but held as active: its slot taken, the daemon
    never idle. Listeners are told, and their failure is logged."""
    from flowbatch.daemon import Daemon
    from flowbatch.runs import State

    site = make_site(tmp_path / "site")
    write_template(tmp_path / "t", "workflow:\n  steps:\n    - action: {commands: [sleep 30]}\n")
    api.install(site, tmp_path / "t", workflow_id="wf")
    drop(site, "r.yaml", {"workflow": "wf"})

    def fails(run: Any, previous: State) -> None:
        if run.state == State.CANCELED:
            raise RuntimeError("the page could not be written")

    site.store.listeners.append(fails)
    d = Daemon(site)
    d.start()
    try:
        d.tick()
        (run,) = d.runner.launched()
        d.runner.cancel(run, "not needed")
        assert not d.runner.active and d.idle()
    finally:
        d.stop()
    assert api.show_run(site, run.id)["state"] == "CANCELED"
    assert "the page could not be written" in caplog.text


@needs_root
def test_a_page_folder_the_participant_made_is_moved_aside_at_the_end(
    public_tmp: Path, tmp_path: Path
) -> None:
    """While it ran, the run removed the daemon's page and made a folder `index.html/`
    with a page of its own inside: the daemon's page could not be written at the end
    (only logged), and the folder, the user's, stayed theirs to edit where the
    leaderboard links."""
    owner = _user("fbrunner")
    site = make_site(public_tmp / "site")
    write_template(
        tmp_path / "t",
        "workflow:\n  steps:\n    - action:\n        commands:\n"
        "          - rm -f index.html run.json; mkdir index.html run.json\n"
        "          - echo '<script>mine()</script>' > index.html/index.html\n",
    )
    api.install(site, tmp_path / "t", workflow_id="wf")
    path = drop(site, "r.yaml", {"workflow": "wf"})
    os.chown(path, owner.pw_uid, owner.pw_gid)
    run_until_idle(site)
    run = only_run(site)
    run_dir = Path(run["run_dir"])
    page = run_dir / "index.html"
    assert page.is_file() and not page.is_symlink() and "mine()" not in page.read_text()
    assert run["id"] in page.read_text()
    assert (run_dir / "run.json").is_file()
    assert run["state"] in ("SUCCESS", "ERROR"), run["messages"]
    forged = _as_user(owner, "echo '<script>x</script>' > index.html", run_dir)
    assert forged.returncode != 0


def test_a_run_launched_just_before_a_kill_is_not_started_twice(tmp_path: Path) -> None:
    """The daemon was killed between a launch and the script's first marker (a moment,
    longer on a slow file system: staged here by a FIFO at the script's log, which the
    script opens before its marker): the run was still PENDING with no marker, and the
    next daemon started it a second time in the same folder. It adopts the process."""
    site = make_site(tmp_path / "site")
    write_template(tmp_path / "t", SCORE_TEMPLATE)
    api.install(site, tmp_path / "t", workflow_id="wf")
    drop(site, "r.yaml", {"workflow": "wf", "arguments": {"score": 3}})
    site.close()
    # a first daemon makes the run and is killed before launching it
    killed = fb(
        site.root, "daemon", "--until-idle", env={"FLOWBATCH_CRASH_AT": "launch:1"}, check=False
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (folder,) = [p for p in site.layout.runs_dir("wf").iterdir() if not p.name.startswith(".")]

    def state() -> str:
        return str(json.loads((folder / "run.json").read_text())["state"])

    assert state() == "PENDING"
    # its claim settled (as it is within seconds): a claim left would have the next
    # daemon make the never-started run again (Intake.redo_unstarted), FIFO gone
    for claim in site.layout.claimed.iterdir():
        claim.unlink()
    os.mkfifo(folder / "logs" / "script.log")  # the script will wait at its log
    # a second daemon launches it and is killed right after the launch
    killed = fb(
        site.root, "daemon", "--until-idle", env={"FLOWBATCH_CRASH_AT": "launched:1"}, check=False
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert state() == "PENDING"
    assert not (folder / "status" / "markers").exists()  # the script waits, unmarked
    third = start_daemon(site.root, "--until-idle", log=tmp_path / "third.log")
    try:
        # the third daemon has made up its mind (adopted or launched again): RUNNING
        assert wait_for(lambda: state() == "RUNNING")
        with open(folder / "logs" / "script.log", "rb") as fifo:  # the scripts go on
            fifo.read()
        assert third.wait(timeout=60) == 0
    finally:
        if third.poll() is None:
            third.kill()
            third.wait()
    text = (folder / "status" / "markers").read_text()
    assert sum(line.startswith("started ") for line in text.splitlines()) == 1, text
    done = only_run(site)
    assert done["state"] == "SUCCESS", done
    assert "started just before the daemon stopped" in (tmp_path / "third.log").read_text()


@needs_root
def test_a_root_daemon_says_when_other_users_cannot_start_its_python(
    public_tmp: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by review: with flowbatch in a virtual environment under /root, every run of
    another user ended "exit code 126", and only `doctor` knew why. The daemon says so at
    its start, and the run's message says what 126 means."""
    from flowbatch.daemon import run_daemon

    closed = tmp_path / "venv" / "bin"  # pytest's tmp_path is root's, 0700
    closed.mkdir(parents=True)
    python = closed / "python3"
    python.write_text("#!/bin/sh\nexit 0\n")
    python.chmod(0o755)
    site = make_site(public_tmp / "site", {"variables": {"python": str(python)}})
    write_template(tmp_path / "t", "workflow:\n  steps:\n    - action: {commands: ['${python}']}\n")
    api.install(site, tmp_path / "t", workflow_id="wf")
    path = drop(site, "r.yaml", {"workflow": "wf"})
    user = _user("fbrunner")
    os.chown(path, user.pw_uid, user.pw_gid)
    with caplog.at_level(logging.WARNING, logger="flowbatch.daemon"):
        run_daemon(site, until_idle=True)
    said = [r.getMessage() for r in caplog.records if "cannot start ${python}" in r.getMessage()]
    assert len(said) == 1 and "is closed to other users (mode 700)" in said[0], said
    assert "variables: {python: /usr/bin/python3}" in said[0]
    run = only_run(site)
    assert run["state"] == "ERROR"
    assert any("exit code 126: a command could not be executed" in m for m in run["messages"])
    site.close()
