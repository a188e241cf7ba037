"""The SSH executor against real OpenSSH servers on loopback (see tests/fixtures_ssh.py)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import paramiko
import psutil
import pytest
import yaml
from click.testing import CliRunner

from flowbatch import api
from flowbatch.cli import main
from flowbatch.config import SiteConfig
from flowbatch.daemon import Daemon
from flowbatch.errors import ConfigError, ExecutorError
from flowbatch.executors import build_executors, executor_names
from flowbatch.executors.ssh import SSHExecutor, check_host, ssh_runner
from flowbatch.executors.ssh_pool import HostKeyError, SSHPool, shared_pool
from flowbatch.executors.ssh_staging import (
    STREAM_CHUNK,
    STREAM_MIN_SIZE,
    download_tree,
    fetch_file,
    send_file,
    temporary_name,
    upload_tree,
)
from flowbatch.render.script import read_markers
from flowbatch.site import Site

from .conftest import drop, run_until_idle
from .fixtures_ssh import SshEnv, ssh_site

SLEEPER = """
workflow:
  steps:
    - name: nap
      action:
        commands:
          - echo started; sleep $[[seconds]]; echo woke > woke.txt
parameters:
  - {name: seconds, dtype: float, defaultValue: 0.5}
"""


def install_sleeper(site: Site, tmp_path: Path) -> None:
    folder = tmp_path / "sleeper"
    folder.mkdir()
    (folder / "workflow.yaml").write_text(SLEEPER)
    api.install(site, folder, workflow_id="sleeper")


def runs_by_name(site: Site) -> dict[str, dict[str, Any]]:
    return {r["name"]: api.show_run(site, r["id"]) for r in api.list_runs(site)}


def tick_until(d: Daemon, check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met after {timeout}s: {list(d.runner.active)}")
        d.wakeup.clear()
        d.tick()
        d.wakeup.wait(0.05)


def running(d: Daemon, host: str | None = None) -> list[Any]:
    return d.runner.launched(host)


def group_members(pgid: int) -> list[int]:
    """PIDs in process group ``pgid`` on this machine (where the test "hosts" run)."""
    out = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return out


def kill_groups(*pgids: int | None) -> None:
    """SIGKILL what is left of these process groups (a test's clean-up)."""
    for pgid in pgids:
        for pid in group_members(pgid) if pgid else []:
            os.kill(pid, signal.SIGKILL)


# -- config ------------------------------------------------------------------------------


def test_config_declares_hosts_and_names_executors(ssh_env: SshEnv) -> None:
    config = SiteConfig.model_validate(ssh_env.config(executor="b"))
    assert executor_names(config)[-2:] == ["a", "b"]
    host = config.ssh["a"]
    assert (host.hostname, host.max_runs, host.keep_remote) == ("127.0.0.2", 4, False)
    executors = build_executors(config, lambda: None)
    assert isinstance(executors["a"], SSHExecutor) and executors["b"].limit == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"password": "hunter2"}, "passwords are not supported"),
        ({"jump_host": "nowhere"}, "'nowhere' is not a host of the ssh section"),
        ({"max_runs": 0}, "greater than or equal to 1"),
    ],
)
def test_config_refuses(ssh_env: SshEnv, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SiteConfig.model_validate(ssh_env.config(a=change))


# -- end to end ------------------------------------------------------------------------------


def test_helloworld_over_ssh(ssh: SshEnv, tmp_path: Path, caplog: Any) -> None:
    site = ssh_site(tmp_path / "site", ssh, hosts={"b": {"keep_remote": True}})
    drop(
        site,
        "a.yaml",
        {
            "workflow": "helloworld",
            "group": "alice",
            "name": "on-a",
            "arguments": {"names": "n.txt"},
        },
        files={"n.txt": "Al\nBea\n"},
    )
    drop(
        site, "b.yaml", {"workflow": "helloworld", "group": "bob", "name": "on-b", "executor": "b"}
    )
    caplog.set_level("DEBUG")
    run_until_idle(site, timeout=30)
    runs = runs_by_name(site)
    on_a, on_b = runs["on-a"], runs["on-b"]
    assert (on_a["state"], on_b["state"]) == ("SUCCESS", "SUCCESS"), (on_a, on_b)
    assert (on_a["executor"], on_b["executor"]) == ("a", "b")
    run_dir = Path(on_a["run_dir"])
    # outputs, logs and markers came back into the local results tree
    assert (run_dir / "results/greetings.txt").read_text() == "Hello Al!\nHello Bea!\n"
    assert on_a["results"] == {"avg_count": 9.5, "max_len": 10, "max_line": "Hello Bea!"}
    assert (run_dir / on_a["steps"][0]["stdout"]).exists()
    ended = read_markers(run_dir).exit
    assert ended is not None and ended[0] == 0
    assert [s["exit_code"] for s in on_a["steps"]] == [0, 0]
    record = json.loads((run_dir / "run.json").read_text())
    handle = record["handle"]
    assert handle["host"] == "a" and handle["pid"] > 0 and handle["start"]
    # the remote folder is gone on a, kept on b (keep_remote)
    assert handle["remote_dir"] == str(ssh.remote_root("a") / "helloworld" / on_a["id"])
    assert removed(Path(handle["remote_dir"]))
    assert (ssh.remote_root("b") / "helloworld" / on_b["id"] / "results/greetings.txt").exists()
    # the run ran as the remote user, in the remote folder
    assert (ssh.remote_root("b") / "helloworld" / on_b["id"]).stat().st_uid == ssh.uid
    # the ranking is built from the fetched results
    assert [e["group"] for e in api.ranking(site, "helloworld")["ranking"]] == ["bob", "alice"]
    # no key material in the run folders or the logs
    secret = ssh.key_file.read_text().splitlines()[1]
    for path in Path(site.root).rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path
    assert secret not in caplog.text


# -- host keys -------------------------------------------------------------------------------


def test_unknown_host_key_is_refused_and_nothing_runs(ssh: SshEnv, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(ssh.servers["b"].keyscan())  # a's key is not there
    site = ssh_site(tmp_path / "site", ssh, hosts={"a": {"known_hosts": str(known)}})
    before = ssh.servers["a"].accepted_logins()
    drop(site, "r.yaml", {"workflow": "helloworld", "name": "r"})
    run_until_idle(site, timeout=20)
    run = runs_by_name(site)["r"]
    assert run["state"] == "ERROR"
    message = run["messages"][0]
    assert "ssh host a" in message and "unknown" in message
    assert ssh.servers["a"].fingerprint() in message
    # refused before authentication: no login, no remote folder
    assert ssh.servers["a"].accepted_logins() == before
    assert not (ssh.remote_root("a") / "helloworld" / run["id"]).exists()


def test_changed_host_key_is_refused(ssh: SshEnv, tmp_path: Path) -> None:
    a, b = ssh.servers["a"], ssh.servers["b"]
    # a's address filed with b's key: what a reinstalled or impersonated host looks like
    known = tmp_path / "known_hosts"
    known.write_text(b.keyscan().replace(f"[{b.address}]:{b.port}", f"[{a.address}]:{a.port}"))
    config = SiteConfig.model_validate(ssh.config(a={"known_hosts": str(known)}))
    before = a.accepted_logins()
    runner = ssh_runner(config, "a")
    with pytest.raises(HostKeyError) as caught:
        runner.run(f"touch {ssh.base}/should-not-exist")
    message = str(caught.value)
    assert "CHANGED" in message and "ssh host a" in message
    assert a.fingerprint() in message and b.fingerprint() in message
    assert a.accepted_logins() == before
    assert not (ssh.base / "should-not-exist").exists()


# -- pooling, limits, batched polls ------------------------------------------------------------


def one_sleeper(
    ssh: SshEnv, tmp_path: Path, seconds: float, hosts: dict[str, Any] | None = None
) -> tuple[Site, Daemon]:
    """A site on the test hosts with one `sleeper` run ``r`` dropped, and its started
    daemon (the caller stops it)."""
    site = ssh_site(tmp_path / "site", ssh, hosts=hosts or {})
    install_sleeper(site, tmp_path)
    drop(site, "r.yaml", {"workflow": "sleeper", "name": "r", "arguments": {"seconds": seconds}})
    d = Daemon(site)
    d.start()
    return site, d


def sleeping(d: Daemon) -> tuple[Any, int]:
    """Tick ``d`` until its one run is RUNNING with all its processes (the wrapper,
    run.sh, the step's sleep): the run and its process group."""
    tick_until(d, lambda: len(running(d)) == 1)
    run = running(d)[0]
    pgid = int((run.handle or {})["pgid"])
    wait_for_group(pgid, 3)
    return run, pgid


def removed(remote: Path) -> bool:
    """Whether the remote folder is gone within 10 s (its removal is detached: a large
    folder's neither holds the tick nor is cut by the connection's timeout)."""
    deadline = time.monotonic() + 10
    while remote.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def wait_for_group(pgid: int, count: int) -> None:
    """Until the process group ``pgid`` has ``count`` members (10 s at most)."""
    deadline = time.monotonic() + 10
    while len(group_members(pgid)) < count:
        assert time.monotonic() < deadline, group_members(pgid)
        time.sleep(0.05)


def test_one_connection_per_host_and_per_host_limits(ssh: SshEnv, tmp_path: Path) -> None:
    site = ssh_site(tmp_path / "site", ssh, hosts={"a": {"max_runs": 2}, "b": {"max_runs": 1}})
    install_sleeper(site, tmp_path)
    for i in range(4):
        drop(site, f"a{i}.yaml", {"workflow": "sleeper", "name": f"a{i}", "executor": "a"})
        drop(site, f"b{i}.yaml", {"workflow": "sleeper", "name": f"b{i}", "executor": "b"})
    pool = shared_pool(site.config.ssh)
    peak = {"a": 0, "b": 0}

    def note_peak(d: Daemon) -> None:
        for host in peak:
            peak[host] = max(peak[host], len(running(d, host)))

    run_until_idle(site, timeout=40, each_tick=note_peak)
    assert {r["state"] for r in runs_by_name(site).values()} == {"SUCCESS"}
    assert peak == {"a": 2, "b": 1}
    # eight runs, their launches, polls and collects: one connection per host
    assert pool.connection("a").connects == 1
    assert pool.connection("b").connects == 1
    assert pool.connection("a").commands > 8
    # Nagle off on the pooled socket (paramiko leaves it on: ~40 ms per command)
    sock = pool.connection("a").client().get_transport().sock  # type: ignore[union-attr]
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_one_round_trip_per_host_per_tick(ssh: SshEnv, tmp_path: Path) -> None:
    site = ssh_site(tmp_path / "site", ssh)
    install_sleeper(site, tmp_path)
    for host in ("a", "b"):
        for i in range(3):
            drop(
                site,
                f"{host}{i}.yaml",
                {"workflow": "sleeper", "executor": host, "arguments": {"seconds": 30}},
            )
    d = Daemon(site)
    d.start()
    conns = {h: shared_pool(site.config.ssh).connection(h) for h in ("a", "b")}
    try:
        tick_until(d, lambda: len(running(d)) == 6)
        for _ in range(5):
            before = {h: c.commands for h, c in conns.items()}
            probes = d.runner.poll()
            assert probes == 0
            assert {h: c.commands - before[h] for h, c in conns.items()} == {"a": 1, "b": 1}
    finally:
        for run in running(d):
            d.runner.cancel(run, "test over")
        d.stop()


# -- faults ---------------------------------------------------------------------------------


def test_sshd_restart_while_running_reconnects_and_collects(ssh: SshEnv, tmp_path: Path) -> None:
    site, d = one_sleeper(ssh, tmp_path, 1.5)
    server = ssh.servers["a"]
    conn = shared_pool(site.config.ssh).connection("a")
    try:
        tick_until(d, lambda: len(running(d)) == 1)
        server.stop()  # the listener and the live connection: a host going away
        for _ in range(3):  # polls fail: the run stays RUNNING (UNKNOWN is not an end)
            d.tick()
            time.sleep(0.1)
        assert [r.state.value for r in running(d)] == ["RUNNING"]
        assert conn.down_since is not None
        server.start()  # same address and port
        run_until_idle(site, timeout=30, daemon=d)
    finally:
        d.stop()
    run = runs_by_name(site)["r"]
    assert run["state"] == "SUCCESS", run["messages"]
    assert (Path(run["run_dir"]) / "woke.txt").read_text() == "woke\n"
    assert conn.connects == 2


def ssh_sockets(ssh: SshEnv) -> int:
    """This process's open TCP connections to the test hosts' sshd."""
    ports = {server.port for server in ssh.servers.values()}
    return sum(
        1
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.status == psutil.CONN_ESTABLISHED and conn.raddr and conn.raddr.port in ports
    )


def test_a_reload_closes_the_replaced_hosts_connection_once_its_runs_end(
    ssh: SshEnv, tmp_path: Path
) -> None:
    """SIGHUP with a changed host: its running run stays on the old connection, new runs
    get a new one, and the old connection is closed when its last run ends (it stayed
    open for the daemon's life, one more at each reload)."""
    site, d = one_sleeper(ssh, tmp_path, 2.0)
    try:
        run, _ = sleeping(d)
        old = d.executors["a"]
        assert ssh_sockets(ssh) == 1
        conf = yaml.safe_load(site.layout.config.read_text())
        conf["ssh"]["a"]["max_runs"] = 3
        site.layout.config.write_text(yaml.safe_dump(conf))
        d._reload()
        assert d.executors["a"] is not old and d.runner.retired == [old]
        drop(site, "s.yaml", {"workflow": "sleeper", "name": "s", "arguments": {"seconds": 5}})
        tick_until(d, lambda: len(running(d)) == 2)
        assert ssh_sockets(ssh) == 2  # the old host's and the new one's
        tick_until(d, lambda: run.id not in d.runner.active)
        assert d.runner.retired == []
        assert ssh_sockets(ssh) == 1  # the old one is closed, the new one serves s
        assert [r.name for r in running(d)] == ["s"]
    finally:
        for r in running(d):
            d.runner.cancel(r, "test over")
        d.stop()
    assert runs_by_name(site)["r"]["state"] == "SUCCESS"


def test_host_down_past_grace_is_error_with_reason(ssh: SshEnv, tmp_path: Path) -> None:
    site, d = one_sleeper(ssh, tmp_path, 3, hosts={"a": {"unreachable_grace": 1}})
    try:
        tick_until(d, lambda: len(running(d)) == 1)
        ssh.servers["a"].stop()
        tick_until(d, lambda: not d.runner.active, timeout=15)
    finally:
        d.stop()
        ssh.servers["a"].start()
    run = runs_by_name(site)["r"]
    assert run["state"] == "ERROR"
    message = next(m for m in run["messages"] if m.startswith("lost: "))
    assert "ssh host a unreachable for" in message and "unreachable_grace 1 s" in message
    assert any("its remote folder is kept" in m for m in run["messages"])
    assert "Connection refused" in message or "connection lost" in message, message


def test_a_run_lost_with_its_host_has_its_processes_ended_when_the_host_is_back(
    ssh: SshEnv, tmp_path: Path
) -> None:
    """No retry, no other run there: the daemon still ends the lost run's processes once
    the host answers again (they went on while it could not see them)."""
    site, d = one_sleeper(ssh, tmp_path, 60, hosts={"a": {"unreachable_grace": 1}})
    pgid = 0
    try:
        tick_until(d, lambda: len(running(d)) == 1)
        pgid = int((running(d)[0].handle or {})["pgid"])
        wait_for_group(pgid, 3)
        ssh.servers["a"].stop()
        tick_until(d, lambda: not d.runner.active, timeout=15)
        assert group_members(pgid)  # lost to the daemon, still going on the host
        ssh.servers["a"].start()
        tick_until(d, lambda: not group_members(pgid), timeout=30)
    finally:
        d.stop()
        ssh.ensure_running()
        kill_groups(pgid)
    assert runs_by_name(site)["r"]["state"] == "ERROR"


def test_a_retry_after_the_host_was_away_ends_the_lost_attempt_first(
    ssh: SshEnv, tmp_path: Path
) -> None:
    """A host away past its grace comes back with the lost attempt's processes still
    going (the daemon only lost sight of them): the retry ends that process group before
    it starts again, so two attempts of a run never run at once."""
    site = ssh_site(tmp_path / "site", ssh, hosts={"a": {"unreachable_grace": 1}})
    install_sleeper(site, tmp_path)
    request = {"workflow": "sleeper", "name": "r", "arguments": {"seconds": 60}, "retries": 1}
    drop(site, "r.yaml", request)
    d = Daemon(site)
    d.start()
    groups = []
    try:
        tick_until(d, lambda: len(running(d)) == 1)
        first = dict(running(d)[0].handle or {})
        groups.append(int(first["pgid"]))
        wait_for_group(first["pgid"], 3)  # wrapper, run.sh, the step's sleep
        ssh.servers["a"].stop()
        tick_until(d, lambda: bool(d.runner.pending()), timeout=15)  # lost: to be retried
        assert group_members(first["pgid"])  # still going on the host
        ssh.servers["a"].start()
        tick_until(d, lambda: len(running(d)) == 1, timeout=30)
        second = dict(running(d)[0].handle or {})
        groups.append(int(second["pgid"]))
        assert second["pid"] != first["pid"]
        assert group_members(first["pgid"]) == []  # the lost attempt was ended first
        wait_for_group(second["pgid"], 3)
        (run,) = d.runner.launched()
        assert run.attempt == 2
        assert any("retry 1 of 1 after: ssh host a unreachable" in m for m in run.messages)
    finally:
        d.stop()
        ssh.ensure_running()
        kill_groups(*groups)


def test_a_start_whose_record_was_lost_is_ended_before_the_run_starts_again(
    ssh: SshEnv, tmp_path: Path
) -> None:
    """A daemon killed between an SSH start and its record finds the run PENDING at its
    next start and launches it again: the earlier start, still running in the run's
    remote folder, is ended first (it wrote its pid there), so the run never runs twice
    at once (the relaunch emptied the folder under it)."""
    site, d = one_sleeper(ssh, tmp_path, 60)
    groups: list[int] = []
    try:
        (run,) = d.intake.run_once().runs
        executor = d.executors[run.executor]
        job = d.runner._launch_of(run)
        first = executor.launch(job)  # started; its record "lost with the daemon"
        groups.append(int(first["pgid"]))
        wait_for_group(first["pgid"], 3)  # wrapper, run.sh, the step's sleep
        second = executor.launch(job)  # the next daemon launches it again
        groups.append(int(second["pgid"]))
        assert second["pid"] != first["pid"]
        assert group_members(first["pgid"]) == []  # the earlier start was ended first
        wait_for_group(second["pgid"], 3)
    finally:
        d.stop()
        site.close()
        kill_groups(*groups)


def test_remote_process_killed_from_outside_is_error_with_signal(
    ssh: SshEnv, tmp_path: Path
) -> None:
    site, d = one_sleeper(ssh, tmp_path, 30)
    try:
        tick_until(d, lambda: len(running(d)) == 1)
        handle = running(d)[0].handle
        remote = Path(handle["remote_dir"])
        deadline = time.monotonic() + 10
        while (started := read_markers(remote).started) is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        script_pid = started[0]
        os.kill(script_pid, signal.SIGKILL)  # e.g. the OOM killer, on the remote host
        tick_until(d, lambda: not d.runner.active)
    finally:
        d.stop()
        kill_groups(int(handle["pgid"]))  # the orphaned `sleep`
    run = runs_by_name(site)["r"]
    assert run["state"] == "ERROR"
    assert "SIGKILL" in run["messages"][0] and "137" in run["messages"][0], run["messages"]


def test_runs_cancel_kills_the_remote_process_group(ssh: SshEnv, tmp_path: Path) -> None:
    site, d = one_sleeper(ssh, tmp_path, 30)
    try:
        tick_until(d, lambda: len(running(d)) == 1)
        handle = running(d)[0].handle
        run_id = running(d)[0].id
        wait_for_group(handle["pgid"], 3)  # wrapper, run.sh, the step, sleep
    finally:
        d.stop()  # the daemon goes away; the run goes on
    assert group_members(handle["pgid"])
    result = CliRunner().invoke(
        main, ["--site", str(site.root), "runs", "cancel", run_id, "--reason", "enough"]
    )
    assert result.exit_code == 0, result.output
    assert "CANCELED" in result.output
    assert group_members(handle["pgid"]) == []
    run = api.show_run(site, run_id)
    assert run["state"] == "CANCELED" and "enough" in run["messages"][-1]
    # the script's TERM marker came home, the remote folder was removed
    ended = read_markers(Path(run["run_dir"])).exit
    assert ended is not None and ended[0] == 143
    assert removed(Path(handle["remote_dir"]))


@pytest.mark.parametrize("how", ["cancel", "time limit"])
def test_a_run_ended_while_its_host_is_away_has_its_processes_ended_when_it_is_back(
    ssh: SshEnv, tmp_path: Path, how: str
) -> None:
    """`runs cancel`, or the time limit, while the host does not answer: the run ends at
    once, and its remote process group (which could not be signalled) is ended by the
    runner's next polls once the host answers again, not left running for good."""
    site = ssh_site(tmp_path / "site", ssh, time_limit=4 if how == "time limit" else None)
    install_sleeper(site, tmp_path)
    drop(site, "r.yaml", {"workflow": "sleeper", "name": "r", "arguments": {"seconds": 60}})
    d = Daemon(site)
    d.start()
    pgid = 0
    try:
        run, pgid = sleeping(d)
        ssh.servers["a"].stop()  # the listener and the live connection
        if how == "cancel":
            d.runner.cancel(run, "enough")
        else:
            assert running(d), "the time limit came before the host went away"
            tick_until(d, lambda: not d.runner.active, timeout=15)
        state = runs_by_name(site)["r"]
        assert state["state"] == ("CANCELED" if how == "cancel" else "ERROR"), state
        said = "enough" if how == "cancel" else "time limit exceeded"
        assert any(said in message for message in state["messages"]), state["messages"]
        # the host away, its remote folder is kept, and the run says where
        assert any("its remote folder is kept" in m for m in state["messages"])
        assert group_members(pgid)  # the host could not be asked: still going there
        ssh.servers["a"].start()  # same address and port
        tick_until(d, lambda: not group_members(pgid), timeout=30)
    finally:
        d.stop()
        ssh.ensure_running()
        kill_groups(pgid)


@pytest.mark.parametrize("how", ["daemon cancel, then a restart", "runs cancel"])
def test_processes_a_cancel_could_not_end_are_ended_by_the_next_daemon(
    ssh: SshEnv, tmp_path: Path, how: str
) -> None:
    """A cancel while the host does not answer, by a daemon that then stops (a restart,
    a `--once` tick) or by `runs cancel` in its own process: the process group to end is
    noted under `<site>/ssh-abandoned/<host>/`, and the NEXT daemon (new executor objects)
    ends it once the host is back, then removes the note."""
    site, d = one_sleeper(ssh, tmp_path, 60)
    notes = site.root / "ssh-abandoned" / "a"
    pgid = 0
    d2: Daemon | None = None
    try:
        try:
            run, pgid = sleeping(d)
            ssh.servers["a"].stop()  # the listener and the live connection
            if how != "runs cancel":
                d.runner.cancel(run, "enough")
        finally:
            d.stop()
        if how == "runs cancel":
            result = CliRunner().invoke(
                main, ["--site", str(site.root), "runs", "cancel", run.id, "--reason", "enough"]
            )
            assert result.exit_code == 0, result.output
        state = runs_by_name(site)["r"]
        assert state["state"] == "CANCELED", state
        assert group_members(pgid)  # the host could not be asked: still going there
        noted = [json.loads(p.read_text()) for p in notes.glob("*.json")]
        assert [n["handle"]["pgid"] for n in noted] == [pgid], noted
        ssh.servers["a"].start()  # same address and port
        d2 = Daemon(site)  # a restarted daemon: new executors, nothing in memory
        d2.start()
        tick_until(d2, lambda: not group_members(pgid), timeout=30)
        assert list(notes.glob("*.json")) == []
    finally:
        if d2 is not None:
            d2.stop()
        ssh.ensure_running()
        kill_groups(pgid)


def test_orphan_cleanup_ends_a_lost_runs_remote_processes(ssh: SshEnv, tmp_path: Path) -> None:
    """A host that was away past its grace comes back with the run's processes still
    going: `cleanup --orphans` ends that process group (the recorded PID, checked by its
    start time) before it removes the folder, instead of leaving them to write into it."""
    from flowbatch.runs import State

    site, d = one_sleeper(ssh, tmp_path, 60)
    try:
        tick_until(d, lambda: len(running(d)) == 1)
        run = running(d)[0]
        handle = dict(run.handle or {})
        wait_for_group(handle["pgid"], 3)
        # what the daemon does when the host stays unreachable past its grace
        site.store.transition(run, State.ERROR, messages=["lost: host a unreachable"])
    finally:
        d.stop()
    assert group_members(handle["pgid"])  # still going on the host
    dry = CliRunner().invoke(
        main, ["--site", str(site.root), "cleanup", "--orphans", "--dry-run", "--json"]
    )
    assert dry.exit_code == 0, dry.output
    mine = [o for o in json.loads(dry.output)["orphans"] if o["path"] == handle["remote_dir"]]
    assert [o["why"] for o in mine] == ["run is ERROR"]  # (other tests' leftovers aside)
    assert group_members(handle["pgid"])  # a dry run ends nothing
    result = CliRunner().invoke(main, ["--site", str(site.root), "cleanup", "--orphans"])
    assert result.exit_code == 0, result.output
    assert group_members(handle["pgid"]) == []
    assert removed(Path(handle["remote_dir"]))


# -- hosts check -----------------------------------------------------------------------------


def test_hosts_check_success_and_failures(ssh: SshEnv, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    site = ssh_site(
        tmp_path / "site",
        ssh,
        hosts={"b": {"known_hosts": str(known)}},
    )
    cli = CliRunner()
    ok = cli.invoke(main, ["--site", str(site.root), "hosts", "check", "a"])
    assert ok.exit_code == 0, ok.output
    assert "a: ok" in ok.output and "round trip" in ok.output
    assert ssh.servers["a"].fingerprint() in ok.output
    bad = cli.invoke(main, ["--site", str(site.root), "hosts", "check", "b"])
    assert bad.exit_code == 1
    assert "unknown" in bad.output and ssh.servers["b"].fingerprint() in bad.output
    every = cli.invoke(main, ["--site", str(site.root), "hosts", "check", "--json"])
    assert every.exit_code == 1
    report = json.loads(every.output)
    assert report["a"]["ok"] is True and report["b"]["ok"] is False


def test_hosts_check_unwritable_root_and_jump_host(ssh: SshEnv, tmp_path: Path) -> None:
    config = SiteConfig.model_validate(
        ssh.config(a={"remote_root": "/proc/flowbatch"}, b={"jump_host": "a"})
    )
    with pytest.raises(ExecutorError, match="remote root /proc/flowbatch is not writable"):
        check_host(config, "a")
    via = check_host(config, "b")  # b reached through a's connection (direct-tcpip)
    assert via["via"] == "a" and via["remote_root"] == str(ssh.remote_root("b"))


def test_unknown_host_name_is_a_config_error(ssh_env: SshEnv) -> None:
    pool = SSHPool(SiteConfig.model_validate(ssh_env.config()).ssh)
    with pytest.raises(ConfigError, match="unknown ssh host 'c'"):
        pool.connection("c")


def test_site_config_file_round_trip(ssh_env: SshEnv, tmp_path: Path) -> None:
    text = yaml.safe_dump(ssh_env.config(executor="b"))
    (tmp_path / "flowbatch.yaml").write_text(text)
    from flowbatch.config import load_config

    assert load_config(tmp_path).ssh["b"].hostname == "127.0.0.3"


def test_host_down_at_launch_keeps_the_run_pending_with_the_reason(
    ssh: SshEnv, tmp_path: Path
) -> None:
    site = ssh_site(tmp_path / "site", ssh)
    install_sleeper(site, tmp_path)
    ssh.servers["a"].stop()
    drop(site, "r.yaml", {"workflow": "sleeper", "name": "r", "arguments": {"seconds": 0.1}})
    d = Daemon(site)
    d.start()
    try:
        for _ in range(3):
            d.tick()
        run = runs_by_name(site)["r"]
        assert run["state"] == "PENDING"  # not an ERROR: the host may come back
        shown = api.show_run(site, run["id"])
        assert "waiting for a" in (shown.get("waiting") or ""), shown
        ssh.servers["a"].start()
        run_until_idle(site, timeout=30, daemon=d)
    finally:
        d.stop()
        ssh.ensure_running()
    assert runs_by_name(site)["r"]["state"] == "SUCCESS"


def test_doctor_checks_ssh_hosts(ssh: SshEnv, tmp_path: Path) -> None:
    from flowbatch.doctor import diagnose

    site = ssh_site(tmp_path / "site", ssh)
    checks = {c.name: c for c in diagnose(site.root)}
    assert checks["executor a"].status == "ok", checks["executor a"].detail
    assert "host key verified" in checks["executor a"].detail
    (tmp_path / "k").write_text("")  # an unknown host: an empty known_hosts file
    site2 = ssh_site(tmp_path / "site2", ssh, hosts={"a": {"known_hosts": str(tmp_path / "k")}})
    bad = {c.name: c for c in diagnose(site2.root)}["executor a"]
    assert bad.status == "fail" and "SHA256:" in bad.detail


# -- staging: large files streamed through cat, small ones by SFTP -------------------------

# a file name the shell must not split, expand or end early
ODD_NAME = "big 'quoted' \"file\" $(touch pwned) `x` ;*.bin"


def staging_conn(ssh: SshEnv, tmp_path: Path) -> tuple[Any, str]:
    """Host a's pooled connection and a fresh remote folder (created by the remote user),
    beside the hosts' run roots: a folder left in one would be another test's orphan."""
    pool = SSHPool(SiteConfig.model_validate(ssh.config()).ssh)
    conn = pool.connection("a")
    remote = str(ssh.base / f"staging-{tmp_path.name}")
    assert conn.run(f"rm -rf -- '{remote}' && mkdir -p -- '{remote}'").ok
    return conn, remote


def no_sftp_transfers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make paramiko's SFTP put/get fail: what passes went through the stream."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("SFTP used for a file that should have been streamed")

    for name in ("put", "putfo", "get", "getfo"):
        monkeypatch.setattr(paramiko.SFTPClient, name, refuse)
    from flowbatch.executors import ssh_staging

    monkeypatch.setattr(ssh_staging, "_sftp_read", refuse)  # a download's SFTP reads


def test_pool_prefers_aes_gcm(ssh: SshEnv, tmp_path: Path) -> None:
    conn, _ = staging_conn(ssh, tmp_path)
    transport = conn.client().get_transport()
    assert transport is not None
    assert transport.local_cipher == transport.remote_cipher == "aes128-gcm@openssh.com"
    conn.pool.close()


def test_large_files_stream_both_ways_byte_exact(
    ssh: SshEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    conn, remote = staging_conn(ssh, tmp_path)
    sftp = conn.sftp()
    payload = os.urandom(3 * STREAM_CHUNK + 12345)  # > STREAM_MIN_SIZE, not whole chunks
    src = tmp_path / "src.bin"
    src.write_bytes(payload)
    pwned = ssh.base.parent / "pwned"  # where `touch` would run: the remote user's home
    pwned.unlink(missing_ok=True)
    no_sftp_transfers(monkeypatch)
    caplog.set_level("WARNING", logger="flowbatch.ssh")
    send_file(sftp, src, f"{remote}/{ODD_NAME}", len(payload))
    assert Path(remote, ODD_NAME).read_bytes() == payload
    dest = tmp_path / "down" / ODD_NAME
    dest.parent.mkdir()
    fetch_file(sftp, f"{remote}/{ODD_NAME}", dest, len(payload))
    assert dest.read_bytes() == payload
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # no SFTP fallback
    # the name was one word to the remote shell: nothing ran, nothing else was written
    assert not pwned.exists()
    assert sorted(p.name for p in Path(remote).iterdir()) == [ODD_NAME]
    conn.pool.close()


def test_tree_round_trip_streams_large_files_and_keeps_modes(ssh: SshEnv, tmp_path: Path) -> None:
    conn, remote = staging_conn(ssh, tmp_path)
    sftp = conn.sftp()
    big, small = os.urandom(STREAM_MIN_SIZE + 777), b"small\n"
    up = tmp_path / "up"
    (up / "sub").mkdir(parents=True)
    (up / ODD_NAME).write_bytes(big)
    (up / "sub" / "small.txt").write_bytes(small)
    os.chmod(up / ODD_NAME, 0o750)
    os.utime(up / ODD_NAME, (1_600_000_000, 1_600_000_000))
    assert upload_tree(sftp, up, remote) == 2
    assert Path(remote, ODD_NAME).read_bytes() == big
    assert Path(remote, ODD_NAME).stat().st_mode & 0o777 == 0o750
    assert int(Path(remote, ODD_NAME).stat().st_mtime) == 1_600_000_000
    # the run writes a new large file; it comes back whole, by stream
    assert conn.run(f"head -c {2 * STREAM_MIN_SIZE + 5} /dev/urandom > '{remote}/out.bin'").ok
    changed = Path(remote, "out.bin").read_bytes()  # the remote FS is this machine's
    down = tmp_path / "down"
    down.mkdir()
    # a link planted at the temporary name must be replaced, not written through
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (down / temporary_name("out.bin")).symlink_to(victim)
    assert download_tree(sftp, remote, down) == 3
    assert (down / "out.bin").read_bytes() == changed
    assert (down / ODD_NAME).read_bytes() == big
    assert (down / ODD_NAME).stat().st_mode & 0o777 == 0o750
    assert (down / "sub" / "small.txt").read_bytes() == small
    assert victim.read_text() == "untouched"
    assert not list(down.glob(".fb-fetch-*"))
    conn.pool.close()


def test_a_link_swapped_in_during_a_fetch_gets_no_mode_times_or_owner(
    ssh: SshEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's user swaps the temporary file for a link while it is being fetched: the
    mode, times and owner go to the file the daemon created (its descriptor), never to
    what the link points at."""
    from flowbatch.executors import ssh_staging

    conn, remote = staging_conn(ssh, tmp_path)
    Path(remote, "out.bin").write_bytes(b"x" * 1000)
    os.chmod(Path(remote, "out.bin"), 0o755)
    os.utime(Path(remote, "out.bin"), (1_500_000_000, 1_500_000_000))
    down = tmp_path / "down"
    down.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    os.chmod(victim, 0o600)
    real = ssh_staging.fetch_into

    def racing(sftp: object, remote_path: str, out: object, size: int) -> None:
        real(sftp, remote_path, out, size)  # type: ignore[arg-type]
        tmp = down / temporary_name("out.bin")
        tmp.unlink()
        tmp.symlink_to(victim)  # the swap, right before mode and times are set

    monkeypatch.setattr(ssh_staging, "fetch_into", racing)
    download_tree(conn.sftp(), remote, down)
    assert victim.stat().st_mode & 0o777 == 0o600
    assert int(victim.stat().st_mtime) != 1_500_000_000
    assert victim.read_text() == "untouched"
    conn.pool.close()


def test_a_fetch_that_fails_half_way_leaves_nothing_behind(
    ssh: SshEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowbatch.executors import ssh_staging

    conn, remote = staging_conn(ssh, tmp_path)
    Path(remote, "out.bin").write_bytes(b"x" * 1000)  # the remote FS is this machine's
    down = tmp_path / "down"
    down.mkdir()

    def broken(sftp: object, remote_path: str, out: object, size: int) -> None:
        out.write(b"half")  # type: ignore[attr-defined]
        raise ConnectionError("the ssh connection was lost")

    monkeypatch.setattr(ssh_staging, "fetch_into", broken)
    with pytest.raises(ConnectionError):
        download_tree(conn.sftp(), remote, down)
    assert list(down.iterdir()) == []  # no half-fetched temporary, no half file
    conn.pool.close()


def swap_for_link(folder: Path, target: Path) -> None:
    """What the run's user may do in their folder at any moment: move a sub-folder
    aside and put a symlink to ``target`` in its place."""
    folder.rename(folder.with_name(folder.name + ".real"))
    folder.symlink_to(target)


def users_folder(ssh: SshEnv, path: Path) -> Path:
    """``path`` made a folder of the run's user (a root daemon's run folder is theirs)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, ssh.uid, ssh.gid)
    return path


def racing_listing(monkeypatch: pytest.MonkeyPatch, suffix: str, swap: Any) -> None:
    """Run ``swap`` (once) while the remote folder ending in ``suffix`` is listed: the
    SFTP round trip the run's remote code can make as long as it likes."""
    from flowbatch.executors import ssh_staging

    real = ssh_staging.listdir
    done: list[bool] = []

    def listing(sftp: paramiko.SFTPClient, path: bytes) -> Any:
        if path.endswith(os.fsencode(suffix)) and not done:
            done.append(True)
            swap()
        return real(sftp, path)

    monkeypatch.setattr(ssh_staging, "listdir", listing)


def test_a_folder_swapped_for_a_link_while_listed_gets_nothing_written_through_it(
    ssh: SshEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """The run's user swaps the local out/ for a link to a folder of root's while the
    remote out/ is listed (after the daemon checked out/ is no link): nothing is written
    through the link, out/ is skipped with the reason, the rest comes home."""
    conn, remote = staging_conn(ssh, tmp_path)
    Path(remote, "out").mkdir()  # the remote FS is this machine's
    Path(remote, "out", "evil.sh").write_text("echo pwned\n")
    Path(remote, "top.txt").write_text("top\n")
    down = users_folder(ssh, tmp_path / "down")
    users_folder(ssh, down / "out")
    victim = tmp_path / "profile.d"  # stands for /etc/profile.d
    victim.mkdir()
    (victim / "evil.sh").write_text("root's original file\n")
    racing_listing(monkeypatch, "/out", lambda: swap_for_link(down / "out", victim))
    caplog.set_level("WARNING", logger="flowbatch.ssh")
    download_tree(conn.sftp(), remote, down)
    assert (down / "out").is_symlink()  # the swap did happen, during the listing
    assert sorted(os.listdir(victim)) == ["evil.sh"]
    assert (victim / "evil.sh").read_text() == "root's original file\n"
    assert (victim / "evil.sh").stat().st_uid == 0
    assert os.listdir(down / "out.real") == []  # skipped, not fetched behind the user's back
    assert "was moved or replaced while it was listed" in caplog.text
    assert (down / "top.txt").read_text() == "top\n"
    assert (down / "top.txt").stat().st_uid == ssh.uid
    assert not [p for p in down.rglob("*") if p.name.startswith(".fb-fetch-")]
    conn.pool.close()


def test_a_parent_folder_swapped_for_a_link_mid_walk_keeps_the_writes_in_the_run_folder(
    ssh: SshEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap one level up: out/ becomes a link while out/sub/ is listed. The walk holds
    out/ and out/sub/ open, so the files land in the folder that was checked (now
    out.real/sub/), never in what the link points at."""
    conn, remote = staging_conn(ssh, tmp_path)
    Path(remote, "out", "sub").mkdir(parents=True)
    Path(remote, "out", "sub", "evil.sh").write_text("echo pwned\n")
    down = users_folder(ssh, tmp_path / "down")
    users_folder(ssh, down / "out")
    victim = tmp_path / "etc"
    (victim / "sub").mkdir(parents=True)
    (victim / "sub" / "evil.sh").write_text("root's original file\n")
    racing_listing(monkeypatch, "/out/sub", lambda: swap_for_link(down / "out", victim))
    assert download_tree(conn.sftp(), remote, down) == 1
    assert (down / "out").is_symlink()
    assert os.listdir(victim / "sub") == ["evil.sh"]
    assert (victim / "sub" / "evil.sh").read_text() == "root's original file\n"
    fetched = down / "out.real" / "sub" / "evil.sh"
    assert fetched.read_text() == "echo pwned\n"
    assert fetched.stat().st_uid == ssh.uid
    sub = (down / "out.real" / "sub").stat()  # created by the walk, given to the user
    assert (sub.st_uid, sub.st_mode & 0o777) == (ssh.uid, 0o755)
    conn.pool.close()


def test_a_folder_swapped_in_right_after_it_is_created_is_not_handed_over(
    ssh: SshEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """The daemon creates a missing local folder; the run's user replaces it at once with
    a folder of someone else's (that they may write to): the daemon neither gives that
    folder to the user nor fetches into it."""
    from flowbatch.executors import ssh_staging

    conn, remote = staging_conn(ssh, tmp_path)
    Path(remote, "new").mkdir()
    Path(remote, "new", "f.txt").write_text("f\n")
    down = users_folder(ssh, tmp_path / "down")
    real_mkdir = os.mkdir

    def mkdir_then_swap(path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        real_mkdir(path, mode, dir_fd=dir_fd)
        if str(path).endswith("new"):
            (down / "new").rename(down / "new.daemons")
            real_mkdir(down / "new")
            os.chown(down / "new", 4242, 4242)  # someone else's
            os.chmod(down / "new", 0o777)

    monkeypatch.setattr(ssh_staging.os, "mkdir", mkdir_then_swap)
    caplog.set_level("WARNING", logger="flowbatch.ssh")
    download_tree(conn.sftp(), remote, down)
    monkeypatch.undo()
    theirs = (down / "new").stat()
    assert (theirs.st_uid, theirs.st_gid) == (4242, 4242)
    assert os.listdir(down / "new") == []
    assert "is in the way" in caplog.text
    conn.pool.close()


def test_a_folder_swapped_for_a_link_during_an_upload_sends_nothing_it_points_at(
    ssh: SshEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's user swaps in/ for a link to a folder only root may read while the
    remote in/ is created: the upload goes on from the folder that was checked (held
    open), and not a name of the private folder reaches the remote host."""
    conn, remote = staging_conn(ssh, tmp_path)
    up = users_folder(ssh, tmp_path / "up")
    (up / "in").mkdir()
    (up / "in" / "data.txt").write_text("data\n")
    private = tmp_path / "private"  # stands for /root
    (private / "secret-project").mkdir(parents=True)
    (private / "secret.key").write_text("key\n")
    private.chmod(0o700)
    real = paramiko.SFTPClient.mkdir

    def mkdir_then_swap(self: paramiko.SFTPClient, path: str, mode: int = 0o777) -> None:
        real(self, path, mode)
        if path.endswith("/in"):
            swap_for_link(up / "in", private)

    monkeypatch.setattr(paramiko.SFTPClient, "mkdir", mkdir_then_swap)
    count = upload_tree(conn.sftp(), up, remote)
    assert (up / "in").is_symlink()  # the swap did happen
    assert os.listdir(Path(remote, "in")) == ["data.txt"]  # the remote FS is this machine's
    assert count == 1
    assert Path(remote, "in", "data.txt").read_text() == "data\n"
    conn.pool.close()


def test_stream_that_does_not_add_up_falls_back_to_sftp(
    ssh: SshEnv, tmp_path: Path, caplog: Any
) -> None:
    conn, remote = staging_conn(ssh, tmp_path)
    sftp = conn.sftp()
    payload = os.urandom(STREAM_MIN_SIZE * 2)
    Path(remote, "f.bin").write_bytes(payload)
    caplog.set_level("WARNING", logger="flowbatch.ssh")
    # listed larger than it is (as when the file changed after the listing): SFTP again
    fetch_file(sftp, f"{remote}/f.bin", tmp_path / "f.bin", len(payload) + 1)
    assert (tmp_path / "f.bin").read_bytes() == payload
    assert "fetching it by SFTP" in caplog.text
    # a file that is not there: cat fails, SFTP says why in its own terms
    with pytest.raises(FileNotFoundError):
        fetch_file(sftp, f"{remote}/missing.bin", tmp_path / "m.bin", STREAM_MIN_SIZE)
    # an upload into a folder that does not exist: the same
    with pytest.raises(FileNotFoundError):
        send_file(sftp, tmp_path / "f.bin", f"{remote}/no/such/dir/f.bin", len(payload))
    assert conn.alive()
    conn.pool.close()


class RecordedHost:
    """A connection standing in for a host: unreachable while ``down``, then recording
    every command it is asked to run and giving :meth:`answer`'s result."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.down = True

    def run(self, command: str, **kw: Any) -> Any:
        from flowbatch.executors.ssh_pool import HostUnreachable

        if self.down:
            raise HostUnreachable("ssh host a: Connection refused")
        self.commands.append(command)
        return self.answer(command)

    def answer(self, command: str) -> Any:
        from flowbatch.executors.commands import CommandResult

        return CommandResult(0, "", "")


def test_a_launch_ends_the_abandoned_processes_before_anything_else(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The order the real test above cannot see within one tick: a launch on a host with
    abandoned runs ends them before it empties and fills the run's remote folder, and
    launches nothing while the host cannot be asked (a recorded connection stands in
    for the host; the real one is in the test above)."""
    from flowbatch.executors import ssh as ssh_mod
    from flowbatch.executors.base import Launch
    from flowbatch.executors.commands import CommandResult
    from flowbatch.executors.ssh_pool import HostUnreachable
    from flowbatch.ssh_hosts import SSHHost

    class Recorded(RecordedHost):
        def answer(self, command: str) -> CommandResult:
            if "rm -rf --" in command:  # the run's folder prepared
                return CommandResult(0, "/remote/wf/run2\n", "")
            if "nohup" in command or "setsid" in command:
                return CommandResult(0, "4242 1000 boot\n", "")
            return CommandResult(0, "", "")

        def sftp(self, **kw: Any) -> None:
            return None

    conn = Recorded()
    executor = ssh_mod.SSHExecutor("a", SSHHost(hostname="127.0.0.2", user="u"), None)  # type: ignore[arg-type]
    monkeypatch.setattr(ssh_mod.SSHExecutor, "connection", property(lambda self: conn))
    monkeypatch.setattr(ssh_mod, "upload_tree", lambda *a: None)
    executor.abandon({"host": "a", "pid": 77, "pgid": 77, "start": "999"}, "host away")
    job = Launch("run2", tmp_path, "run.sh", "wf", None)
    with pytest.raises(HostUnreachable):
        executor.launch(job)  # still away: nothing started
    assert conn.commands == [] and len(executor._abandoned) == 1
    conn.down = False
    handle = executor.launch(job)
    assert handle["pid"] == 4242
    assert "fb_end 77 " in conn.commands[0]  # the lost attempt first
    assert "rm -rf --" in conn.commands[1]  # then its folder, emptied
    assert executor._abandoned == []


def test_a_cancel_the_host_missed_is_kept_once_and_sent_by_tend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Beside the real test above, the bookkeeping: a cancel the host missed is recorded
    once (a run cancelled, then declared lost, is not ended twice), and `tend()` sends it
    when the host answers (a recorded connection stands in for the host)."""
    from flowbatch.executors import ssh as ssh_mod
    from flowbatch.ssh_hosts import SSHHost

    conn = RecordedHost()
    executor = ssh_mod.SSHExecutor("a", SSHHost(hostname="127.0.0.2", user="u"), None)  # type: ignore[arg-type]
    monkeypatch.setattr(ssh_mod.SSHExecutor, "connection", property(lambda self: conn))
    handle = {"host": "a", "pid": 77, "pgid": 77, "start": "999", "boot_id": "b"}
    executor.cancel(handle, "enough")
    assert executor._abandoned == [handle]
    executor.abandon(dict(handle), "lost")
    assert executor._abandoned == [handle]
    executor.tend()  # still away: kept
    assert executor._abandoned == [handle] and conn.commands == []
    conn.down = False
    executor.tend()
    assert executor._abandoned == []
    assert len(conn.commands) == 1 and "fb_end 77 " in conn.commands[0]


def test_abandoned_handles_are_noted_in_the_site_folder_until_ended(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Beside the real tests above, the files: one per abandoned process group (kept
    once), read by a new executor of that host (not of another), removed once `tend()`
    ended it; without a site folder nothing is written (a recorded connection stands in
    for the host)."""
    from flowbatch.executors import ssh as ssh_mod
    from flowbatch.ssh_hosts import SSHHost

    conn = RecordedHost()
    monkeypatch.setattr(ssh_mod.SSHExecutor, "connection", property(lambda self: conn))
    host = SSHHost(hostname="127.0.0.2", user="u")
    handle = {"host": "a", "pid": 77, "pgid": 77, "start": "999", "boot_id": "b-1"}
    site = tmp_path / "site"
    site.mkdir()  # the notes' folders are made beneath the site folder, never it
    first = ssh_mod.SSHExecutor("a", host, None, site_root=site)  # type: ignore[arg-type]
    assert not first.has_abandoned()
    first.cancel(handle, "enough")
    first.abandon(dict(handle), "lost")  # the same process: one note
    notes = sorted((site / "ssh-abandoned" / "a").iterdir())
    assert [p.name for p in notes] == ["77-999-b-1.json"]
    assert json.loads(notes[0].read_text())["handle"] == handle
    assert first.has_abandoned()
    # a restarted daemon's executors: host a has it to end, host b does not
    again = ssh_mod.SSHExecutor("a", host, None, site_root=site)  # type: ignore[arg-type]
    other = ssh_mod.SSHExecutor("b", host, None, site_root=site)  # type: ignore[arg-type]
    assert again._abandoned == [handle] and again.has_abandoned()
    assert not other.has_abandoned()
    again.tend()  # still away: kept, noted
    assert again.has_abandoned() and len(list((site / "ssh-abandoned" / "a").iterdir())) == 1
    conn.down = False
    again.tend()
    assert not again.has_abandoned()
    assert len(conn.commands) == 1 and "fb_end 77 " in conn.commands[0]
    assert list((site / "ssh-abandoned" / "a").iterdir()) == []
    # no site folder: in memory only
    conn.down = True
    bare = ssh_mod.SSHExecutor("a", host, None)  # type: ignore[arg-type]
    bare.abandon(handle, "lost")
    assert bare.has_abandoned()
    assert list((site / "ssh-abandoned" / "a").iterdir()) == []
