"""A run's wrapper PID taken again, after the run ended, by a session of the SSH user's
that is not a run (its leader exited, its background job left in the group of that id:
`ssh host 'nohup job &'`, a shell's background job, another daemon's orphaned run). The
poll, a cancel (and an abandoned run's end, a relaunch's clean-up: fb_end), and adoption
after a restart must never take that group for the run's: a process counts as the run's
only with the run's token in its environment (fb_token), which a foreign one has not.
Found by a review (with these reproductions) of the change that made a wrapper killed
from outside no loss of its run. Real OpenSSH server on loopback (tests/fixtures_ssh.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowbatch.executors.ssh import _POLL_HEAD, SSHExecutor, ssh_executors

from .fixtures_ssh import SshEnv, ssh_site

#: a token as a launch makes one (the foreign session has none)
TOKEN = "0123456789abcdef"


def stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return text[text.rindex(b")") + 2 :].decode().split()


def live(pid: int, start: str) -> bool:
    f = stat_fields(pid)
    return f is not None and f[0] != "Z" and f[19] == start


@pytest.fixture
def foreign(ssh: SshEnv) -> Iterator[dict[str, Any]]:
    """A session of the SSH user (fbtest) that is NOT a flowbatch run: its leader
    (a shell) exited, leaving a background job in the session's process group, as
    `ssh host 'nohup long_job &'` leaves it. Returns the leader's (now free) PID and the
    job's PID and start time."""
    proc = subprocess.Popen(
        ["bash", "-c", "sleep 300 </dev/null >/dev/null 2>&1 & echo $!; exit 0"],
        start_new_session=True,
        user=ssh.uid,
        group=ssh.gid,
        cwd="/",
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    job = int(proc.stdout.readline())
    proc.wait()
    leader = proc.pid
    f = stat_fields(job)
    assert f is not None and f[2] == str(leader) and f[3] == str(leader), f
    info = {"leader": leader, "job": job, "start": f[19]}
    yield info
    if live(job, f[19]):
        os.kill(job, signal.SIGKILL)


def boot() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def old_handle(
    ex: SSHExecutor, tmp_path: Path, foreign: dict[str, Any], rc: bool
) -> dict[str, Any]:
    """The handle of a run whose wrapper had PID ``leader`` earlier in this boot (its
    start time 5 s before the foreign job's) and has ended normally (``rc``: its
    script.rc written, as every normal end leaves it), its remote folder still there
    (not collected yet: the daemon was stopped, or the host was away)."""
    remote = f"{ex.host.remote_root}/wf/{tmp_path.name}"
    ex.connection.run(f"rm -rf {remote}")
    mk = f"mkdir -p {remote}/status" + (f" && echo 0 > {remote}/status/script.rc" if rc else "")
    assert ex.connection.run(mk).ok
    local = tmp_path / "run"
    (local / "status").mkdir(parents=True)
    start = str(int(foreign["start"]) - 500)  # clock ticks: 5 s earlier
    return {
        "host": "a",
        "pid": foreign["leader"],
        "pgid": foreign["leader"],
        "start": start,
        "boot_id": boot(),
        "token": TOKEN,
        "remote_dir": remote,
        "run_dir": str(local),
    }


def test_the_poll_of_an_ended_run_spares_a_foreign_group_that_reused_its_pid(
    ssh: SshEnv, tmp_path: Path, foreign: dict[str, Any]
) -> None:
    site = ssh_site(tmp_path / "site", ssh)
    ex = ssh_executors(site.config, site.root)["a"]
    handle = old_handle(ex, tmp_path, foreign, rc=True)
    probe = ex.poll([("oldrun", handle)])["oldrun"]
    time.sleep(0.2)
    assert live(foreign["job"], foreign["start"]), (
        f"the poll of an ended run killed process group {foreign['leader']}, which is not "
        f"the run's (a foreign session that reused the wrapper's PID): {probe.raw}"
    )


def test_a_foreign_group_does_not_keep_a_run_whose_wrapper_died_alive(
    ssh: SshEnv, tmp_path: Path, foreign: dict[str, Any]
) -> None:
    """No script.rc and no markers (wrapper and script died, e.g. OOM): a foreign group
    of the wrapper's old id must not keep the run RUNNING (fb_script would say 'not
    started yet', for ever)."""
    site = ssh_site(tmp_path / "site", ssh)
    ex = ssh_executors(site.config, site.root)["a"]
    handle = old_handle(ex, tmp_path, foreign, rc=False)
    probe = ex.poll([("oldrun", handle)])["oldrun"]
    assert probe.liveness.name != "ALIVE", probe


def test_a_cancel_spares_a_foreign_group_that_reused_the_pid(
    ssh: SshEnv, tmp_path: Path, foreign: dict[str, Any]
) -> None:
    """cancel / an abandoned run ended once the host answers (possibly days later,
    from ssh-abandoned/ notes) / _PREPARE of a relaunch all go through fb_end."""
    site = ssh_site(tmp_path / "site", ssh)
    ex = ssh_executors(site.config, site.root)["a"]
    handle = old_handle(ex, tmp_path, foreign, rc=True)
    ex.cancel(handle, "canceled")
    time.sleep(0.2)
    assert live(foreign["job"], foreign["start"]), "cancel ended a foreign process group"


def test_a_serving_daemons_end_spares_a_foreign_group_that_reused_the_pid(
    ssh: SshEnv, tmp_path: Path, foreign: dict[str, Any]
) -> None:
    """The serving daemon's end of a run in two commands (terminate now, kill at the end
    of the grace) takes the group for the run's on the same proof as cancel: a foreign
    session's group of the wrapper's old id gets no TERM (nothing of the run's there: it
    is recorded at once), and no KILL when the run's group ended after its TERM and the
    id was taken again before the KILL was due (nothing left of it to wait for)."""
    from flowbatch.executors.ssh import Terminated

    site = ssh_site(tmp_path / "site", ssh)
    ex = ssh_executors(site.config, site.root)["a"]
    handle = old_handle(ex, tmp_path, foreign, rc=True)
    assert ex.terminate(handle) is None
    time.sleep(0.2)
    assert live(foreign["job"], foreign["start"]), "terminate ended a foreign process group"
    # its TERM sent while the group was the run's: proven 1 s after the wrapper started,
    # before the foreign session took the id
    ending = Terminated(handle, str(int(handle["start"]) + 100))
    assert not ex.left(ending)
    ex.kill(handle, ending)
    time.sleep(0.2)
    assert live(foreign["job"], foreign["start"]), "kill ended a foreign process group"


def test_adoption_does_not_take_a_foreign_group_for_the_run(
    ssh: SshEnv, tmp_path: Path, foreign: dict[str, Any]
) -> None:
    site = ssh_site(tmp_path / "site", ssh)
    ex = ssh_executors(site.config, site.root)["a"]
    handle = old_handle(ex, tmp_path, foreign, rc=True)
    assert not ex.adopt(handle), "an ended run was adopted on a foreign process group"


# -- end to end: a real run, a real PID reuse (ns_last_pid), a daemon restart ------------------
TEMPLATE = """
workflow:
  steps:
    - name: work
      action:
        commands:
          - for i in $(seq 1200); do [ -e go ] && break; sleep 0.05; done; echo done > out
"""


def reuse_pid(pid: int, uid: int, gid: int) -> tuple[int, int] | None:
    """Start, as the SSH user, a session whose leader gets ``pid`` (ns_last_pid, then a
    fork at once) and leaves a background job behind, then exits: (leader, job); None if
    another process took the PID first every time."""
    for _ in range(5000):
        r, w = os.pipe()
        fd = os.open("/proc/sys/kernel/ns_last_pid", os.O_WRONLY)
        try:
            os.write(fd, str(pid - 1).encode())
        except OSError:
            pytest.skip("cannot write ns_last_pid")
        finally:
            os.close(fd)
        child = os.fork()
        if child == 0:  # pragma: no cover - the child
            try:
                os.close(r)
                os.setsid()
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
                os.chdir("/")
                if os.getpid() != pid:
                    os._exit(3)
                os.dup2(w, 1)
                job = "sleep 300 </dev/null >/dev/null 2>&1 & echo $!; exit 0"
                os.execv("/bin/bash", ["bash", "-c", job])
            finally:
                os._exit(4)
        os.close(w)
        with os.fdopen(r) as out:
            text = out.read()
        os.waitpid(child, 0)
        if child == pid and text.strip():
            return child, int(text)
    return None


def test_a_daemon_restarted_after_a_normal_end_spares_a_session_that_reused_the_wrapper_pid(
    ssh: SshEnv, tmp_path: Path
) -> None:
    from flowbatch import api
    from flowbatch.daemon import Daemon
    from flowbatch.site import Site

    from .conftest import drop, write_template
    from .test_ssh_leftovers import running_handle

    site = ssh_site(tmp_path / "site", ssh)
    api.install(site, write_template(tmp_path / "tpl", TEMPLATE), workflow_id="wf")
    drop(site, "r.yaml", {"workflow": "wf", "name": "r"})
    d = Daemon(site)
    d.start()
    try:
        handle = running_handle(d)
    finally:
        d.stop()  # leaves the run running (as a daemon's stop, an upgrade, a crash)
    root = site.root
    site.close()
    wrapper = int(handle["pid"])
    (Path(handle["remote_dir"]) / "go").touch()  # the run ends normally, no daemon up
    deadline = time.monotonic() + 20
    while live(wrapper, handle["start"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    got = reuse_pid(wrapper, ssh.uid, ssh.gid)
    if got is None:
        pytest.skip("could not get the PID reused")
    job = got[1]
    f = stat_fields(job)
    assert f is not None and f[3] == str(wrapper)
    try:
        site = Site(root)
        d = Daemon(site)
        d.start()
        try:
            for _ in range(5):
                d.tick()
                time.sleep(0.1)
        finally:
            d.stop()
        assert live(job, f[19]), (
            f"the restarted daemon killed {job}, of a session of the SSH user that reused "
            f"the ended run's wrapper PID {wrapper}"
        )
    finally:
        if live(job, f[19]):
            os.kill(job, signal.SIGKILL)


def test_the_poll_of_a_normally_ended_run_makes_no_scan_of_proc(
    ssh: SshEnv, tmp_path: Path
) -> None:
    """A wrapper that wrote the exit status killed its group itself: the poll reads the
    status and looks for no leftover (a walk of /proc in bash, 0.1 ms a process)."""
    site = ssh_site(tmp_path / "site", ssh)
    ex = ssh_executors(site.config, site.root)["a"]
    remote = f"{ex.host.remote_root}/wf/{tmp_path.name}"
    assert ex.connection.run(f"mkdir -p {remote}/status && echo 0 > {remote}/status/script.rc").ok
    gone = subprocess.Popen(["true"])
    gone.wait()  # a wrapper that ended: its PID is free
    spy = "fb_before() { echo scanned; return 1; }\n"  # in place of the walk of /proc
    line = f"fb_p r {gone.pid} 1 {remote} {boot()} {gone.pid} {TOKEN}"
    result = ex.connection.run(_POLL_HEAD + spy + line + "\n")
    assert "r 0 0" in result.stdout and "scanned" not in result.stdout, result.stdout
    # the same run with no exit status (its wrapper killed from outside): looked for
    assert ex.connection.run(f"rm {remote}/status/script.rc").ok
    result = ex.connection.run(_POLL_HEAD + spy + line + "\n")
    assert "scanned" in result.stdout, result.stdout


def _ended_run_of(ex: SSHExecutor, tmp_path: Path, foreign: dict[str, Any], exit_at: float) -> Any:
    """An ended run's handle (wrapper killed, no script.rc) whose markers name, as its
    script's PID, the PID the foreign session's job has now (PIDs go out in sequence:
    a session whose leader took the wrapper's old PID gives its job the next ones), and
    an exit at ``exit_at`` (a forged or future one too)."""
    h = old_handle(ex, tmp_path, foreign, rc=False)
    marks = f"started {foreign['job']} 1000000000.000000 h\\nexit 0 {exit_at:.6f} 0\\n"
    assert ex.connection.run(f"printf '{marks}' > {h['remote_dir']}/status/markers").ok
    return h


@pytest.mark.parametrize("exit_at", [1000000001.0, time.time() + 3600], ids=["past", "future"])
def test_a_foreign_job_with_the_scripts_old_pid_is_not_the_runs_script(
    ssh: SshEnv, tmp_path: Path, foreign: dict[str, Any], exit_at: float
) -> None:
    """The poll does not keep the run alive on it, a cancel does not end it, adoption
    does not take it, whatever exit time the run's markers give (the script must carry
    the run's token, and be in the run's session). Found by review."""
    site = ssh_site(tmp_path / "site", ssh)
    ex = ssh_executors(site.config, site.root)["a"]
    h = _ended_run_of(ex, tmp_path, foreign, exit_at)
    probe = ex.poll([("oldrun", h)])["oldrun"]
    assert probe.liveness.name != "ALIVE", probe
    assert not ex.adopt(h)
    ex.cancel(h, "canceled")
    time.sleep(0.2)  # a KILL, if one went out, has landed
    assert live(foreign["job"], foreign["start"]), "a foreign session's job was killed"
