"""sbatch over SSH: a Slurm profile with `via: <ssh host>`, against the real loopback sshd
(tests/fixtures_ssh.py) and the real Slurm (tests/services/slurm.py).

The loopback sshd is this machine, so the site folder has the same path on the "login
node" as here: the shared file system of a real cluster. The jobs run as the SSH user
(fbtest), so the site lives under a 0755 folder in /tmp and the request belongs to
fbtest: the daemon (root) hands the run folder to its owner.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from flowbatch import api
from flowbatch.daemon import Daemon
from flowbatch.executors.slurm import SlurmExecutor

from .conftest import drop, make_site, only_run, run_until_idle
from .fixtures_slurm import EXAMPLES, slurm_config
from .fixtures_ssh import SshEnv
from .services.slurm import SlurmCluster


def give(request: Path, ssh: SshEnv) -> None:
    """The request and its input files belong to the SSH user."""
    for path in request.parent.iterdir():
        if path.is_file():
            os.chown(path, ssh.uid, ssh.gid)


def test_helloworld_on_slurm_via_ssh(
    ssh: SshEnv, slurm_cluster: SlurmCluster, public_tmp: Path
) -> None:
    config = ssh.config()
    config.update(slurm_config(via="a"))
    site = make_site(public_tmp / "site", config)
    api.install(site, EXAMPLES / "helloworld", workflow_id="helloworld")
    request = drop(
        site,
        "a.yaml",
        {"workflow": "helloworld", "arguments": {"names": "n.txt", "sleeptime": 2}},
        files={"n.txt": "Al\nBea\n"},
    )
    give(request, ssh)  # fbtest's request: fbtest's run folder
    owners: dict[str, int] = {}

    def look(daemon: Daemon) -> None:
        """Who owns the job's log while it runs (the tree takes it back at the end)."""
        for active in daemon.runner.launched():
            job_id = (active.handle or {}).get("job_id")
            out = site.store.run_dir(active) / "logs" / f"slurm-{job_id}.out"
            if job_id and out.exists():
                owners.setdefault("log", out.stat().st_uid)

    daemon = run_until_idle(site, timeout=60, each_tick=look)
    try:
        slurm = daemon.executors["slurm"]
        assert isinstance(slurm, SlurmExecutor)
        assert slurm.runner.where == "ssh:a"
        assert slurm.calls["sbatch"] == 1 and slurm.calls["squeue"] >= 1
    finally:
        daemon.stop()
    run = only_run(site)
    assert run["state"] == "SUCCESS", run["messages"]
    handle = run["handle"]
    assert handle["via"] == "a" and handle["job_id"].isdigit()
    run_dir = Path(run["run_dir"])
    assert (run_dir / "results/greetings.txt").read_text() == "Hello Al!\nHello Bea!\n"
    # submitted over SSH: the job ran as the SSH user, not as the daemon's root (its log,
    # made by Slurm as the job's user, seen while it ran)
    assert owners.get("log") == ssh.uid, owners
    assert (run_dir / "logs" / f"slurm-{handle['job_id']}.out").is_file()
    user = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", handle["job_id"], "-O", "UserName"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert user in ("fbtest", "")  # "" once Slurm forgot the job (MinJobAge)


def test_a_sweep_via_ssh_is_one_job_array(
    ssh: SshEnv, slurm_cluster: SlurmCluster, public_tmp: Path
) -> None:
    config = ssh.config()
    config.update(slurm_config(via="a"))
    site = make_site(public_tmp / "site", config)
    api.install(site, EXAMPLES / "helloworld", workflow_id="helloworld")
    request = drop(
        site,
        "s.yaml",
        {
            "workflow": "helloworld",
            "arguments": {"names": "n.txt"},
            "sweep": {"greeting": ["Hi", "Hey", "Yo"]},
        },
        files={"n.txt": "Al\n"},
    )
    give(request, ssh)
    daemon = run_until_idle(site, timeout=60)
    daemon.stop()
    runs = [api.show_run(site, r["id"]) for r in api.list_runs(site)]
    assert len(runs) == 3
    assert len({r["handle"]["array_job"] for r in runs}) == 1
    for run in runs:
        assert run["state"] == "SUCCESS", run["messages"]
        greeting = run["arguments"]["greeting"]
        text = (Path(run["run_dir"]) / "results/greetings.txt").read_text()
        assert text == f"{greeting} Al!\n"
