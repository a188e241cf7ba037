"""A process of an SSH run without the run's token in its environment (started under
`env -i`, sudo's env_reset, setuid, setproctitle) and a run an older flowbatch started (no
token in its handle): once the run's group is proven the run's (its wrapper, its script
or a process with the token alive in it), every process of it started before that moment
is the run's. Found by review, with these reproductions. Real OpenSSH server on loopback.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from click.testing import CliRunner

from flowbatch.cli import main
from flowbatch.executors.base import Liveness

from .conftest import only_run, run_until_idle
from .fixtures_ssh import SshEnv
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
