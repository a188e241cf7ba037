"""Found by using flowbatch as docs/admins.md sets it up for a root daemon serving a
service user's site (the site folder, ``results/`` included, the service user's; the
queue's folders root's), with real users and processes: the daemon as root, a
participant's runs as that participant."""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from pathlib import Path

import pytest

from flowbatch import api
from flowbatch.daemon import Daemon
from flowbatch.site import Site

from .conftest import drop, make_site, run_until_idle, write_template

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon switches users")


def user(name: str) -> pwd.struct_passwd:
    """The account ``name``, made if this machine has none."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], check=True)
        return pwd.getpwnam(name)


def gated_template(gate: Path) -> str:
    """A run that writes its score once ``gate`` exists: it can be caught running."""
    wait = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    return (
        "workflow:\n  steps:\n    - name: score\n      action:\n        commands:\n"
        f"          - '{wait}'\n"
        '          - >-\n            printf \'{"score": %s}\' "${score}" > r.json\n'
        "parameters:\n  - {name: score, dtype: float}\n"
        "results:\n  file: r.json\n  schema: [{name: score, label: Score, dtype: float}]\n"
    )


def service_users_site(root: Path, text: str) -> Site:
    """A site as docs/admins.md has it for a root daemon: made and owned by a service
    user (here the suite's ``fbsite``), its queue's folders root's."""
    owner = user("fbsite")
    site = make_site(root / "site")
    api.install(site, write_template(root / "t", text), workflow_id="wf")
    site.close()
    subprocess.run(
        ["chown", "-R", f"{owner.pw_uid}:{owner.pw_gid}", str(root / "site")], check=True
    )
    for folder in ("queue", "queue/.claimed", "queue/rejected"):
        os.chown(root / "site" / folder, 0, 0)
    return Site(root / "site")


def test_a_root_daemon_reads_its_own_run_records_on_a_service_users_site(
    public_tmp: Path,
) -> None:
    """The root daemon writes ``run.json`` as root, in a tree the service user owns: the
    record was refused as "replaced from inside the run" by every reader (`runs show`,
    `runs logs`, `submit --wait`, which said the request "made no run" and exited 0), and
    by the daemon itself after a restart, which left a running run RUNNING for ever."""
    participant = user("fbrunner")
    gate = public_tmp / "gate"
    site = service_users_site(public_tmp, gated_template(gate))
    path = drop(site, "a.yaml", {"workflow": "wf", "arguments": {"score": 2.5}})
    os.chown(path, participant.pw_uid, participant.pw_gid)
    first = Daemon(site)
    first.start()
    try:
        deadline = time.monotonic() + 60
        while not first.runner.active:
            assert time.monotonic() < deadline, "the run was never launched"
            first.tick()
            first.wakeup.wait(0.05)
        first.stop()  # as a restart: the run goes on
        site.close()
        site = Site(public_tmp / "site")
        (row,) = api.list_runs(site)
        assert api.show_run(site, row["id"])["state"] == "RUNNING"
    finally:
        gate.touch()  # never a run left waiting behind a failed test
    run_until_idle(site)  # the next daemon takes the running run over and ends it
    shown = api.show_run(site, row["id"])
    assert shown["state"] == "SUCCESS", shown
    assert shown["results"] == {"score": 2.5}
    site.close()
