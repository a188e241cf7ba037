"""A root daemon serving a site a service user owns, and the folder of a run that waits
for a slot: ``runs/`` is the service user's, so they can rename the waiting run's
folder and put one of theirs, with a ``run.sh`` of theirs, in its place. Found by
review: the root daemon then launched that script as the run's user, root for a
request of root's. Real users: the site's owner ``fbsvc2`` swaps the folder in a process
of theirs, ``fbrunner`` is a participant, the daemon is root in this process."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from flowbatch import api
from flowbatch.daemon import Daemon
from flowbatch.site import Site

from .conftest import account, drop, write_template
from .test_owner_forged_run import drop_box
from .test_root_commands import PYTHON, as_site_owner
from .test_root_daemon_service_site import owner_runs, service_site

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon switches users"),
    pytest.mark.skipif(not PYTHON.exists(), reason=f"no {PYTHON}"),
]

#: a run that waits for a gate file, then writes its score
GATED = """
workflow:
  steps:
    - name: wait
      action:
        commands:
          - while [ ! -e {gate} ]; do sleep 0.05; done
          - >-
            printf '{{"score": %s}}' "${{score}}" > r.json
parameters:
  - {{name: score, dtype: float}}
results:
  file: r.json
  schema: [{{name: score, label: Score, dtype: float}}]
"""

#: run by the site's owner: the waiting run's folder renamed aside, one of theirs in
#: its place whose script writes the uid it runs as
SWAP = r"""
import os, sys
runs, run_id, proof = sys.argv[1:4]
os.rename(os.path.join(runs, run_id), os.path.join(runs, "." + run_id + ".aside"))
os.mkdir(os.path.join(runs, run_id))
with open(os.path.join(runs, run_id, "run.sh"), "w") as fh:
    fh.write(f"id -u > {proof}\n")
"""


def ticks_until(daemon: Daemon, done: object, limit: int = 2000) -> None:
    """Tick ``daemon`` until ``done()`` (at most ``limit`` ticks)."""
    for _ in range(limit):
        daemon.tick()
        if done():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("not reached")


@pytest.mark.parametrize("whom", ["root", "participant"])
def test_a_waiting_run_s_folder_swapped_by_the_owner_is_not_launched(
    public_tmp: Path, whom: str
) -> None:
    root = service_site(public_tmp)
    (root / "flowbatch.yaml").write_text("local:\n  concurrency: 1\n")
    gate = public_tmp / "gate"
    template = write_template(public_tmp / "t", GATED.format(gate=gate))
    owner = root.stat()
    subprocess.run(["chown", "-R", f"{owner.st_uid}:{owner.st_gid}", str(template)], check=True)
    owner_runs(root, "install", str(template), "--id", "wf")
    proof = drop_box(public_tmp) / "PWNED"
    runner = account("fbrunner")
    site = Site(root)
    first = drop(site, "first.yaml", {"workflow": "wf", "name": "first", "arguments": {"score": 1}})
    os.chown(first, runner.pw_uid, runner.pw_gid)
    daemon = Daemon(site)
    daemon.start(serve=False)
    try:

        def states() -> dict[str, str]:
            return {row["name"]: row["state"] for row in api.list_runs(site)}

        ticks_until(daemon, lambda: states().get("first") == "RUNNING")
        second = drop(
            site, "second.yaml", {"workflow": "wf", "name": "second", "arguments": {"score": 2}}
        )
        if whom == "participant":
            os.chown(second, runner.pw_uid, runner.pw_gid)
        ticks_until(daemon, lambda: states().get("second") == "PENDING")
        (waiting,) = [row for row in api.list_runs(site) if row["name"] == "second"]
        runs = root / "results" / "wf" / "runs"
        as_site_owner(root, SWAP, str(runs), waiting["id"], str(proof))
        gate.touch()
        ticks_until(daemon, lambda: states().get("second") not in ("PENDING", "RUNNING"))
    finally:
        gate.touch()
        daemon.stop()
        site.close()
    assert not proof.exists(), f"the owner's script ran as uid {proof.read_text().strip()}"
    site = Site(root)
    try:
        shown = api.show_run(site, waiting["id"])
    finally:
        site.close()
    assert shown["state"] == "ERROR"
    assert "was replaced while the run waited" in " ".join(shown["messages"])
    assert api_states(root) == {"first": "SUCCESS", "second": "ERROR"}


def api_states(root: Path) -> dict[str, str]:
    site = Site(root)
    try:
        return {row["name"]: row["state"] for row in api.list_runs(site)}
    finally:
        site.close()
