"""A process of an SSH run without the run's token in its environment (started under
`env -i`, sudo's env_reset, setuid, setproctitle) and a run an older flowbatch started (no
token in its handle): once the run's group is proven the run's (its wrapper, its script
or a process with the token alive in it), every process of it started before that moment
is the run's. Found by review, with these reproductions. Real OpenSSH server on loopback.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from flowbatch.cli import main
from flowbatch.executors.base import Liveness
from flowbatch.executors.ssh_pool import HostUnreachable

from .conftest import only_run, run_until_idle
from .fixtures_ssh import SshEnv
from .test_robust import wait_for
from .test_ssh import group_members
from .test_ssh_leftovers import ended_soon, run_leftover
from .test_ssh_leftovers import strays as strays  # the fixture, reused
from .test_ssh_wrapper_killed import executor, kill_wrapper, staged

ENV_CLEARED = "env -i /bin/sleep 300 & echo $! > leftover.pid"
ENV_CLEARED_NO_TERM = (
    "env -i /bin/bash -c \"trap '' TERM; exec /bin/sleep 300\" & echo $! > leftover.pid"
)


def test_the_poll_kills_a_leftover_without_the_token_once_the_script_ended(
    ssh: SshEnv, tmp_path: Path, strays: list
) -> None:
    """A leftover started with a cleared environment (env -i; sudo's env_reset; a setuid
    program, whose /proc/PID/environ the SSH user cannot read) has no token: it is the
    run's all the same, having started before the script's exit marker, and ends with
    the run once the script ended (its wrapper killed from outside)."""
    site, d, handle, _script = staged(ssh, tmp_path, strays, body=ENV_CLEARED)
    try:
        remote, pid, start = run_leftover(handle, strays)
        kill_wrapper(handle, strays)
        (remote / "go").touch()
        run_until_idle(site, daemon=d, timeout=30)
    finally:
        d.stop()
    run = only_run(site)
    assert run["state"] == "SUCCESS", run["messages"]
    assert ended_soon(pid, start, timeout=5), (
        f"the leftover {pid} (run's process group {handle['pgid']}, no token in its "
        "environment) outlived its run"
    )


def test_a_cancel_of_an_orphaned_run_kills_a_leftover_without_the_token_that_ignores_term(
    ssh: SshEnv, tmp_path: Path, strays: list
) -> None:
    """TERM to the group ends the script (the token's last holder); a member without
    the token that ignores TERM started before the group was proven the run's (by the
    cancel's own start) and is KILLed after the grace."""
    site, d, handle, script = staged(ssh, tmp_path, strays, body=ENV_CLEARED_NO_TERM)
    try:
        _remote, pid, start = run_leftover(handle, strays)
        kill_wrapper(handle, strays)
        run_id = d.runner.launched()[0].id
    finally:
        d.stop()
    result = CliRunner().invoke(
        main, ["--site", str(site.root), "runs", "cancel", run_id, "--reason", "enough"]
    )
    assert result.exit_code == 0, result.output
    assert ended_soon(script, strays[0][1]), "run.sh outlived the cancel"
    assert ended_soon(pid, start, timeout=8), (
        f"the leftover {pid} of group {handle['pgid']} outlived `runs cancel`"
    )


def test_a_run_started_before_the_token_whose_wrapper_was_killed_is_not_lost(
    ssh: SshEnv, tmp_path: Path, strays: list
) -> None:
    """A run an older flowbatch started has no token in its handle. Its wrapper killed
    from outside while its script goes on: the script, alive in the run's group, proves
    the group the run's, and the run goes on (orphan), not lost with its folder removed
    under the running script."""
    site, d, handle, script = staged(ssh, tmp_path, strays)
    try:
        (run,) = d.runner.launched()
        old = {k: v for k, v in handle.items() if k != "token"}
        run.handle = old  # as the previous version recorded it
        site.store.write(run, index=False)
        kill_wrapper(handle, strays)
        probe = executor(d).poll([(run.id, old)])[run.id]
        assert probe.liveness == Liveness.ALIVE, (
            f"the script {script} still runs in the run's group, yet the poll says {probe}"
        )
    finally:
        d.stop()
        try:
            os.killpg(int(handle["pgid"]), signal.SIGKILL)
        except OSError:
            pass


def test_a_leftover_without_the_token_ends_when_wrapper_and_script_were_killed(
    ssh: SshEnv, tmp_path: Path, strays: list[tuple[int, float]]
) -> None:
    """Wrapper and script SIGKILLed (the OOM killer, `pkill -9 -f run.sh`): no exit
    marker, no token holder left. The daemon's own poll found the group the run's while
    the wrapper lived: what of it started before that poll is the run's, and ends with
    the run. Found by review."""
    site, d, handle, _script = staged(ssh, tmp_path, strays, body=ENV_CLEARED)
    try:
        _remote, pid, start = run_leftover(handle, strays)
        (run,) = d.runner.launched()
        assert executor(d).poll([(run.id, handle)])[run.id].liveness == Liveness.ALIVE
        kill_wrapper(handle, strays)
        for member in group_members(handle["pgid"]):  # as `pkill -9 -f run.sh` would
            with contextlib.suppress(OSError):
                if b"run.sh" in Path(f"/proc/{member}/cmdline").read_bytes():
                    os.kill(member, signal.SIGKILL)
        # what else had the token (the step's last `sleep 0.05`) ends by itself: the
        # leftover alone is left in the group
        assert wait_for(lambda: group_members(handle["pgid"]) == [pid], timeout=10)
        run_until_idle(site, daemon=d, timeout=30)
    finally:
        d.stop()
    assert only_run(site)["state"] == "ERROR"  # lost: its script wrote no exit
    assert ended_soon(pid, start, timeout=5), f"the leftover {pid} outlived its run"


def test_a_cancel_from_another_process_ends_a_leftover_once_a_poll_saw_the_wrapper_killed(
    ssh: SshEnv, tmp_path: Path, strays: list[tuple[int, float]]
) -> None:
    """The daemon's poll that found the run's wrapper killed keeps that moment in the
    run's handle: a `runs cancel` after the script ended (no process of the run's with
    the token left) still ends the leftover, as one of the run's group started before
    that moment."""
    from .test_ssh_wrapper_killed import stays_running

    site, d, handle, script = staged(ssh, tmp_path, strays, body=ENV_CLEARED)
    try:
        remote, pid, start = run_leftover(handle, strays)
        kill_wrapper(handle, strays)
        stays_running(d)  # orphan: its moment written into the run's handle
        run_id = d.runner.launched()[0].id
    finally:
        d.stop()
    assert site.store.load(run_id).handle.get("proven")  # type: ignore[union-attr]
    (remote / "go").touch()
    assert ended_soon(script, strays[0][1]), "run.sh did not end"
    result = CliRunner().invoke(
        main, ["--site", str(site.root), "runs", "cancel", run_id, "--reason", "enough"]
    )
    assert result.exit_code == 0, result.output
    assert ended_soon(pid, start, timeout=8), f"the leftover {pid} outlived `runs cancel`"


def test_a_run_of_the_file_per_marker_layout_whose_wrapper_was_killed_goes_on(
    ssh: SshEnv, tmp_path: Path, strays: list[tuple[int, float]]
) -> None:
    """A run an older flowbatch started before `status/markers` existed (a file a
    marker: `status/started` holds "<pid> <time> <host>") and without a token: its
    wrapper killed from outside while its script runs, the script found by that file
    keeps the run going. Found by review."""
    _site, d, handle, script = staged(ssh, tmp_path, strays)
    try:
        (run,) = d.runner.launched()
        status = Path(handle["remote_dir"]) / "status"
        line = (status / "markers").read_text().splitlines()[0].split(" ", 1)[1]
        (status / "started").write_text(line + "\n")  # the older layout
        os.chown(status / "started", ssh.uid, ssh.gid)
        (status / "markers").unlink()
        old = {k: v for k, v in handle.items() if k != "token"}
        kill_wrapper(handle, strays)
        probe = executor(d).poll([(run.id, old)])[run.id]
        assert probe.liveness == Liveness.ALIVE, f"the script {script} runs: {probe}"
    finally:
        d.stop()
        with contextlib.suppress(OSError):
            os.killpg(int(handle["pgid"]), signal.SIGKILL)


@pytest.mark.parametrize("collected", [True, False], ids=["collected", "control"])
def test_an_abandoned_cancel_ends_a_tokenless_leftover(
    ssh: SshEnv,
    tmp_path: Path,
    strays: list[tuple[int, float]],
    monkeypatch: pytest.MonkeyPatch,
    collected: bool,
) -> None:
    """A cancel while the host does not answer abandons the run's group; the run's end
    (collect) comes before the host answers again. The group's last proof goes with the
    abandoned handle, so a leftover without the token is ended once the host answers
    (wrapper and script both gone). Found by review."""
    _site, d, handle, _script = staged(ssh, tmp_path, strays, body=ENV_CLEARED)
    try:
        _remote, pid, start = run_leftover(handle, strays)
        (run,) = d.runner.launched()
        ex = executor(d)
        assert ex.poll([(run.id, handle)])[run.id].liveness == Liveness.ALIVE  # tick kept
        kill_wrapper(handle, strays)
        for member in group_members(handle["pgid"]):  # an OOM kill of run.sh too
            with contextlib.suppress(OSError):
                if b"run.sh" in Path(f"/proc/{member}/cmdline").read_bytes():
                    os.kill(member, signal.SIGKILL)
        assert wait_for(lambda: group_members(handle["pgid"]) == [pid], timeout=10)
        # the time limit's cancel while the host does not answer: abandoned
        real = ex._end_group
        calls: list[int] = []

        def away(h: Any, **how: bool) -> None:
            calls.append(1)
            if len(calls) == 1:
                raise HostUnreachable("host a is away")
            return real(h, **how)

        monkeypatch.setattr(ex, "_end_group", away)
        ex.cancel(handle, "time limit exceeded")
        assert ex.has_abandoned()
        if collected:  # as Runner._kill does right after cancel
            ex.collect(run.id, handle, Path(handle["run_dir"]))
        ex.tend()  # the host answers again
        assert not ex.has_abandoned()
    finally:
        d.stop()
    assert ended_soon(pid, start, timeout=8), (
        f"the leftover {pid} of the abandoned run's group {handle['pgid']} survived"
    )


LATE = (
    "for j in $(seq 1200); do [ -e late ] && break; sleep 0.05; done; "
    "env -i /bin/sleep 300 & echo $! > leftover.pid"
)


def test_the_handle_keeps_a_later_proof_for_a_cancel_from_another_process(
    ssh: SshEnv,
    tmp_path: Path,
    strays: list[tuple[int, float]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run's handle keeps the daemon's later proofs of the group too (at most one
    write a PROVEN_KEEP_EVERY, here every poll): a leftover without the token started
    after the first orphan poll is ended by a `runs cancel` from another process once
    the script ended. Found by review."""
    from flowbatch.executors import ssh as ssh_module

    from .test_ssh_wrapper_killed import stays_running

    monkeypatch.setattr(ssh_module, "PROVEN_KEEP_EVERY", 0, raising=False)
    site, d, handle, script = staged(ssh, tmp_path, strays, body=LATE)
    try:
        remote = Path(handle["remote_dir"])
        kill_wrapper(handle, strays)
        stays_running(d, polls=1)  # the first orphan poll: its tick written
        first = site.store.load(d.runner.launched()[0].id).handle.get("proven")  # type: ignore[union-attr]
        (remote / "late").touch()
        _remote, pid, start = run_leftover(handle, strays)
        stays_running(d, polls=2)  # the group found the run's again, after the leftover
        run_id = d.runner.launched()[0].id
    finally:
        d.stop()
    kept = site.store.load(run_id).handle.get("proven")  # type: ignore[union-attr]
    assert first and kept and int(kept) > int(first)
    (remote / "go").touch()
    assert ended_soon(script, strays[0][1], timeout=10), "run.sh did not end"
    result = CliRunner().invoke(
        main, ["--site", str(site.root), "runs", "cancel", run_id, "--reason", "enough"]
    )
    assert result.exit_code == 0, result.output
    assert ended_soon(pid, start, timeout=8), f"the leftover {pid} outlived `runs cancel`"
