"""The SSH executor under faults staged on real OpenSSH servers (tests/fixtures_ssh.py):
a host that stops answering (its sshd SIGSTOPped: the kernel still ACKs), a run that
plants a FIFO where the poll reads, a poll that hangs, remote files that cannot be read
or vanish during a fetch, a local disk that fills during one, a failed run whose logs
came home empty. Timeouts are made short through the hosts' config (``keepalive``,
``connect_timeout``: a wait gives up after ``max(3 x keepalive, connect_timeout)``)."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from flowbatch import api
from flowbatch.daemon import Daemon
from flowbatch.executors import ssh as ssh_mod
from flowbatch.executors import ssh_pool, ssh_staging
from flowbatch.site import Site

from .conftest import drop, run_until_idle, write_template
from .fixtures_ssh import SshEnv, ssh_site
from .services.sshd import TEST_USER, Sshd

#: a host that gives up on a silent connection after 3 s (3 x keepalive) and on a
#: connection attempt after 1 s
QUICK = {"keepalive": 1, "connect_timeout": 1}

SCORED = """
workflow:
  steps:
    - name: work
      action:
        commands:
          - {command}
          - >-
            printf '{{"score": 5}}' > r.json
parameters:
  - {{name: mode, dtype: int, defaultValue: 0}}
results:
  file: r.json
  schema: [{{name: score, label: Score, dtype: float}}]
"""


def scored_site(tmp_path: Path, ssh: SshEnv, command: str, **hosts: dict[str, Any]) -> Site:
    """A site on the test hosts with workflow ``w``: ``command``, then r.json."""
    site = ssh_site(tmp_path / "site", ssh, hosts=hosts)
    write_template(tmp_path / "tpl", SCORED.format(command=command))
    api.install(site, tmp_path / "tpl", workflow_id="w")
    return site


def runs(site: Site) -> dict[str, dict[str, Any]]:
    return {r["name"]: api.show_run(site, r["id"]) for r in api.list_runs(site)}


def said(site: Site, d: Daemon, name: str) -> str:
    """The run's messages and what its executor has to say about its fetch (for the
    run's messages at its end: see SSHExecutor.take_messages)."""
    run = runs(site)[name]
    take = getattr(d.executors[run["executor"]], "take_messages", lambda _: [])
    return " ".join([*run["messages"], *take(run["id"])])


@contextmanager
def sshd_stopped(server: Sshd) -> Iterator[Callable[[], None]]:
    """A function that SIGSTOPs the server and every process it forked (listener,
    sessions, their SFTP server): a hung host whose kernel still ACKs. All of them are
    SIGCONTed when the block ends."""
    stopped: list[psutil.Process] = []

    def stop() -> None:
        assert server.proc is not None
        root = psutil.Process(server.proc.pid)
        for proc in [root, *root.children(recursive=True)]:
            proc.send_signal(signal.SIGSTOP)
            stopped.append(proc)

    try:
        yield stop
    finally:
        for proc in stopped:
            try:
                proc.send_signal(signal.SIGCONT)
            except psutil.Error:
                pass


def ticking(d: Daemon, done: Callable[[], bool], limit: float) -> tuple[list[float], bool]:
    """Tick ``d`` in a thread until ``done()``; the ticks' durations and whether it got
    there before ``limit`` seconds (a tick that never returns: False)."""
    took: list[float] = []

    def loop() -> None:
        deadline = time.monotonic() + limit
        while not done() and time.monotonic() < deadline:
            begin = time.monotonic()
            d.wakeup.clear()
            d.tick()
            took.append(time.monotonic() - begin)
            d.wakeup.wait(0.05)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    thread.join(limit + 5)
    return took, not thread.is_alive() and done()


def fbtest_processes(argv: list[str]) -> list[int]:
    """PIDs of the remote user's processes running exactly ``argv``."""
    out = []
    for proc in psutil.process_iter(["username", "cmdline"]):
        if proc.info["username"] == TEST_USER and proc.info["cmdline"] == argv:
            out.append(proc.pid)
    return out


# -- a host that stops answering -----------------------------------------------------------


def test_a_host_hung_during_a_fetch_holds_no_tick_and_its_run_ends_past_the_grace(
    ssh: SshEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sshd stopped (not killed) while a finished run's files come home: the SFTP wait
    gives up after 3 s, the connection counts as broken, the host as away; past its
    grace the run is ERROR, and a run on the other host is served meanwhile."""
    site = scored_site(
        tmp_path,
        ssh,
        "for i in 1 2 3 4 5; do echo $$i > f$$i.txt; done",
        a=dict(QUICK, unreachable_grace=2),
    )
    drop(site, "r.yaml", {"workflow": "w", "name": "r"})
    real = ssh_staging.fetch_into
    with sshd_stopped(ssh.servers["a"]) as stop:

        def hang_first(sftp: Any, remote: bytes, out: Any, size: int) -> None:
            if remote.endswith(b".txt") and not hung:
                hung.append(remote)
                stop()  # the host hangs right before this file's request
                drop(site, "b.yaml", {"workflow": "w", "name": "on-b", "executor": "b"})
            real(sftp, remote, out, size)

        hung: list[bytes] = []
        monkeypatch.setattr(ssh_staging, "fetch_into", hang_first)
        d = Daemon(site)
        d.start()
        try:
            took, ended = ticking(
                d,
                lambda: {r["state"] for r in runs(site).values()} == {"ERROR", "SUCCESS"},
                limit=25,
            )
        finally:
            d.stop()
    assert hung
    assert ended, f"the daemon did not get on: ticks {took}"
    assert max(took) < 8, took  # one SFTP wait of 3 s, then reconnections of 1 s
    r, b = runs(site)["r"], runs(site)["on-b"]
    assert b["state"] == "SUCCESS"  # served while a did not answer
    assert r["state"] == "ERROR"
    message = next(m for m in r["messages"] if m.startswith("lost: "))
    assert "ssh host a unreachable for" in message and "unreachable_grace 2 s" in message
    # and where its files are, the host away when it was collected
    assert any("its remote folder is kept" in m for m in r["messages"]), r["messages"]


def test_a_host_hung_during_an_upload_leaves_the_run_pending_not_the_daemon_stuck(
    ssh: SshEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = scored_site(tmp_path, ssh, "echo up", a=QUICK)
    drop(site, "r.yaml", {"workflow": "w", "name": "r"})
    real = ssh_staging.send_file
    hung: list[str] = []
    with sshd_stopped(ssh.servers["a"]) as stop:

        def hang_first(sftp: Any, local: Any, remote: str, size: int) -> None:
            if not hung:
                hung.append(remote)
                stop()
            real(sftp, local, remote, size)

        monkeypatch.setattr(ssh_staging, "send_file", hang_first)
        d = Daemon(site)
        d.start()
        try:
            begin = time.monotonic()
            took, waited = ticking(d, lambda: time.monotonic() - begin > 6, limit=15)
            assert hung
            assert waited, f"the daemon did not get on: ticks {took}"
            assert max(took) < 8, took
            run = runs(site)["r"]
            assert run["state"] == "PENDING", run
            assert "waiting for a" in (run.get("waiting") or ""), run
        except BaseException:
            d.stop()
            raise
    try:
        run_until_idle(site, daemon=d, timeout=30)  # the host is back: the run goes on
    finally:
        d.stop()
    assert runs(site)["r"]["state"] == "SUCCESS"


# -- polls ---------------------------------------------------------------------------------


def test_a_fifo_where_the_exit_status_goes_stalls_no_poll(
    ssh: SshEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run plants a FIFO at status/script.rc and goes on: the poll does not open it
    (the run is alive; and only a regular file is read), so the host's other runs are
    seen as before."""
    monkeypatch.setattr(ssh_pool, "DEFAULT_COMMAND_TIMEOUT", 3.0)  # a stalled poll: 3 s
    site = scored_site(
        tmp_path,
        ssh,
        'if [ "$[[mode]]" = 1 ]; then mkfifo status/script.rc; sleep 30; else sleep 0.5; fi',
    )
    drop(site, "evil.yaml", {"workflow": "w", "name": "evil", "arguments": {"mode": 1}})
    drop(site, "good.yaml", {"workflow": "w", "name": "good"})
    d = Daemon(site)
    d.start()
    try:
        took, ended = ticking(
            d, lambda: runs(site).get("good", {}).get("state") == "SUCCESS", limit=12
        )
        assert ended, f"the good run did not end: ticks {took}"
        assert max(took) < 2, took
        assert runs(site)["evil"]["state"] == "RUNNING"
    finally:
        for run in d.runner.launched():
            d.runner.cancel(run, "test over")
        d.stop()


POLL_STALL = "sleep 29.5"


def test_a_poll_that_times_out_is_ended_there_and_counts_toward_the_grace(
    ssh: SshEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every poll of the host hangs (staged: the poll script sleeps): each is ended on
    the host after its timeout (no poll process is left there), the runs stay UNKNOWN
    for the host's grace, then end as lost with the reason; their processes are ended."""
    monkeypatch.setattr(ssh_pool, "DEFAULT_COMMAND_TIMEOUT", 1.5)
    monkeypatch.setattr(ssh_mod, "_POLL_HEAD", ssh_mod._POLL_HEAD + POLL_STALL + "\n")
    site = scored_site(tmp_path, ssh, "sleep 30", a=dict(QUICK, unreachable_grace=2))
    drop(site, "r.yaml", {"workflow": "w", "name": "r"})
    d = Daemon(site)
    d.start()
    try:
        took, ended = ticking(d, lambda: not d.runner.active and bool(runs(site)), limit=15)
        assert ended, f"the run did not end: ticks {took}"
        assert max(took) < 5, took
        run = runs(site)["r"]
        assert run["state"] == "ERROR"
        message = run["messages"][-1]
        assert "unreachable_grace 2 s" in message and "timed out after 1.5 s" in message
        assert not fbtest_processes(POLL_STALL.split())  # every stalled poll was ended
    finally:
        d.stop()
        for pid in fbtest_processes(POLL_STALL.split()):
            os.kill(pid, signal.SIGKILL)
        pgid = (runs(site).get("r", {}).get("handle") or {}).get("pgid")
        for proc in psutil.process_iter() if pgid else []:
            if _pgid(proc.pid) == pgid:
                os.kill(proc.pid, signal.SIGKILL)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


# -- fetching files ------------------------------------------------------------------------


def test_a_remote_file_that_cannot_be_read_is_left_out_with_a_note(
    ssh: SshEnv, tmp_path: Path
) -> None:
    site = scored_site(
        tmp_path,
        ssh,
        "for i in 1 2 3; do echo data > out$$i.txt; done; "
        "echo secret > private.txt; chmod 000 private.txt",
    )
    drop(site, "r.yaml", {"workflow": "w", "name": "r"})
    d = Daemon(site)
    d.start()
    try:
        run_until_idle(site, daemon=d, timeout=30)
        run = runs(site)["r"]
        assert run["state"] == "SUCCESS", run["messages"]
        assert run["results"] == {"score": 5}
        run_dir = Path(run["run_dir"])
        assert all((run_dir / f"out{i}.txt").read_text() == "data\n" for i in (1, 2, 3))
        assert not (run_dir / "private.txt").exists()
        note = said(site, d, "r")
        assert "private.txt (permission denied)" in note, note
    finally:
        d.stop()


def test_files_that_vanish_during_a_fetch_are_left_out_with_a_note(
    ssh: SshEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file and a folder removed on the host (by a process the run left behind)
    between the listing and their fetch: left out, named; the rest comes home."""
    site = scored_site(
        tmp_path, ssh, "echo a > a.txt; echo gone > gone.txt; mkdir sub; echo c > sub/c.txt"
    )
    drop(site, "r.yaml", {"workflow": "w", "name": "r"})
    real = ssh_staging.fetch_into
    removed: list[bytes] = []

    def vanish(sftp: Any, remote: bytes, out: Any, size: int) -> None:
        if remote.endswith(b"/a.txt") and not removed:
            folder = Path(os.fsdecode(remote)).parent  # the remote FS is this machine's
            os.remove(folder / "gone.txt")
            shutil.rmtree(folder / "sub")
            removed.append(remote)
        real(sftp, remote, out, size)

    monkeypatch.setattr(ssh_staging, "fetch_into", vanish)
    d = Daemon(site)
    d.start()
    try:
        run_until_idle(site, daemon=d, timeout=30)
        run = runs(site)["r"]
        assert removed
        assert run["state"] == "SUCCESS", run["messages"]
        assert (Path(run["run_dir"]) / "a.txt").read_text() == "a\n"
        note = said(site, d, "r")
        assert "gone.txt (gone before it could be fetched)" in note, note
        assert "sub (gone before it could be fetched)" in note, note
    finally:
        d.stop()


class _FullDisk:
    """A local file whose writes fail as on a full disk."""

    def __init__(self, out: Any) -> None:
        self._out = out

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._out, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._out.close()


def _fill_the_disk_at(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    """The local disk is full for the files a fetch writes under names ``prefix*``."""
    real = ssh_staging._create_at

    def full_for_some(dir_fd: int, name: str) -> Any:
        out = real(dir_fd, name)
        return _FullDisk(out) if name.startswith(prefix) else out

    monkeypatch.setattr(ssh_staging, "_create_at", full_for_some)


def test_a_fetch_left_incomplete_here_keeps_the_remote_folder_and_says_where(
    ssh: SshEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local disk fills while one file comes home: the markers and results came
    first, the run ends as it did, and its remote folder is not removed."""
    site = scored_site(tmp_path, ssh, "head -c 5000 /dev/zero > big.bin")
    drop(site, "r.yaml", {"workflow": "w", "name": "r"})
    _fill_the_disk_at(monkeypatch, ssh_staging.temporary_name("big.bin"))
    d = Daemon(site)
    d.start()
    try:
        run_until_idle(site, daemon=d, timeout=30)
        run = runs(site)["r"]
        remote = run["handle"]["remote_dir"]
        assert Path(remote, "big.bin").exists(), "the remote folder was removed"
        assert run["state"] == "SUCCESS", run["messages"]
        assert not (Path(run["run_dir"]) / "big.bin").exists()
        note = said(site, d, "r")
        assert f"its remote folder is kept: {TEST_USER}@" in note and remote in note, note
        assert "No space left on device" in note, note
    finally:
        d.stop()


def test_a_failed_run_whose_logs_came_home_empty_says_how_full_the_remote_disk_is(
    ssh: SshEnv, tmp_path: Path
) -> None:
    site = scored_site(tmp_path, ssh, "exit 3")
    drop(site, "r.yaml", {"workflow": "w", "name": "r"})
    run_until_idle(site, timeout=30)
    run = runs(site)["r"]
    assert run["state"] == "ERROR"
    assert any("(df -P)" in m and "%" in m for m in run["messages"]), run["messages"]


def test_a_fifo_swapped_in_after_the_polls_test_never_holds_it(tmp_path: Path) -> None:
    """A leftover process of the run swapping a regular file and a FIFO at
    status/script.rc won the race between the poll's `[ -f ]` and its blocking open
    about one poll in ten (each held until the remote `timeout`, 60 s). The daemon's own
    poll text, run here against such a folder: none is held."""
    import subprocess
    import threading

    from flowbatch.executors.ssh import _POLL_HEAD, _q

    (tmp_path / "status").mkdir()
    rc = tmp_path / "status" / "script.rc"
    rc.write_text("0\n")
    stop = threading.Event()

    def swap() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            regular, fifo = tmp_path / "status" / f".r{i}", tmp_path / "status" / f".f{i}"
            regular.write_text("0\n")
            os.rename(regular, rc)
            os.mkfifo(fifo)
            os.rename(fifo, rc)

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    args = ["run1", "999999", "1.0", str(tmp_path), boot]
    script = _POLL_HEAD + "fb_p " + " ".join(_q(a) for a in args) + "\n"
    held = 0
    try:
        for _ in range(60):
            try:
                subprocess.run(["bash", "-c", script], capture_output=True, timeout=2)
            except subprocess.TimeoutExpired:
                held += 1
    finally:
        stop.set()
        swapper.join()
    assert held == 0


def test_a_failed_run_whose_fetch_was_incomplete_says_where_its_folder_is(
    ssh: SshEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The note that the remote folder is kept is made when the run is collected, after
    its probe: only a successful run's messages took it, and it stayed with the executor
    (a retry of the run would have been told it)."""
    site = scored_site(tmp_path, ssh, "head -c 5000 /dev/zero > big.bin; exit 3")
    drop(site, "r.yaml", {"workflow": "w", "name": "r"})
    _fill_the_disk_at(monkeypatch, ssh_staging.temporary_name("big.bin"))
    daemon = Daemon(site)
    daemon.start()
    try:
        run_until_idle(site, daemon=daemon, timeout=30)
        run = runs(site)["r"]
        assert run["state"] == "ERROR", run
        assert any("remote folder is kept" in m for m in run["messages"]), run["messages"]
        executor = daemon.executors[run["executor"]]
        assert executor.take_messages(run["id"]) == []  # nothing left for a next attempt
    finally:
        daemon.stop()
        site.close()


def test_a_remote_folder_that_cannot_be_made_says_so(ssh: SshEnv, tmp_path: Path) -> None:
    """A remote root the login may not enter: the run ends ERROR at once, and the
    message is mkdir's (it quoted the removal of an earlier attempt's folder, `rm:
    cannot remove`, which there never was: found by review)."""
    site = scored_site(tmp_path, ssh, "echo ok", a={"remote_root": "/root/flowbatch-forbidden"})
    drop(site, "r.yaml", {"workflow": "w", "name": "r"})
    run_until_idle(site, timeout=60)
    run = runs(site)["r"]
    assert run["state"] == "ERROR", run
    said = " ".join(run["messages"])
    assert "cannot create the remote run folder" in said and "mkdir" in said, said
    assert "rm: cannot remove" not in said, said
