"""A cancel that comes after the run's script ended: the run's end stands (found by
review: a SUCCESS and its results were recorded as CANCELED when no poll had seen the
end yet, and a cancel queued while the run was active left a rejection behind)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from flowbatch import api
from flowbatch.daemon import Daemon, cancel_run
from flowbatch.runs import State
from flowbatch.site import Site

from .conftest import SCORE_TEMPLATE, drop, make_site, run_until_idle, write_template

#: a run that ends once its test lets it (the file ``go`` beside the template's folder)
GATED = SCORE_TEMPLATE.replace(
    "        commands:\n",
    "        commands:\n          - while [ ! -e {go} ]; do sleep 0.02; done\n",
)


def scored(tmp_path: Path) -> Site:
    site = make_site(tmp_path / "site")
    template = GATED.replace("{go}", str(tmp_path / "go"))
    api.install(site, write_template(tmp_path / "t", template), workflow_id="s")
    return site


def ended_unseen(site: Site, tmp_path: Path) -> tuple[Daemon, str]:
    """A daemon that launched one run, whose script has ended since, unpolled (it is let
    end only once launched: a quick run was seen ending within the tick that launched it,
    and the wait for its launch never ended)."""
    drop(site, "r.yaml", {"workflow": "s", "arguments": {"score": 5}})
    daemon = Daemon(site)
    daemon.start()
    deadline = time.monotonic() + 30
    while not daemon.runner.launched():
        assert time.monotonic() < deadline
        daemon.tick()
    [run] = daemon.runner.launched()
    (tmp_path / "go").touch()
    markers = site.store.run_dir(run) / "status" / "markers"
    while not markers.exists() or b"exit" not in markers.read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return daemon, run.id


def test_a_cancel_with_no_daemon_records_the_end_it_finds(tmp_path: Path) -> None:
    site = scored(tmp_path)
    daemon, run_id = ended_unseen(site, tmp_path)
    daemon.stop()  # its run ended with no daemon to see it
    out = subprocess.run(
        [sys.executable, "-m", "flowbatch", "--site", str(site.root), "runs", "cancel", run_id],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out
    assert out.stdout.strip() == f"{run_id}: SUCCESS (it had ended before the cancel)"
    run = site.store.load(run_id)
    assert run.state == State.SUCCESS and run.results == {"score": 5.0}
    site.close()


def test_the_daemons_cancel_of_a_run_ended_unseen_keeps_its_end(tmp_path: Path) -> None:
    site = scored(tmp_path)
    daemon, run_id = ended_unseen(site, tmp_path)
    try:
        # as the daemon applies a cancel it took in before a poll saw the end
        cancel_run(site, daemon.runner, run_id, 0, "too late")
        run = site.store.load(run_id)
        assert run.state == State.SUCCESS and run.results == {"score": 5.0}
    finally:
        daemon.stop()
        site.close()


def test_a_cancel_queued_for_a_run_that_ended_leaves_no_rejection(tmp_path: Path) -> None:
    site = scored(tmp_path)
    (tmp_path / "go").touch()
    drop(site, "r.yaml", {"workflow": "s", "arguments": {"score": 5}})
    run_until_idle(site)
    [run] = api.list_runs(site)
    # `runs cancel` queued it while the run was active; the run ended meanwhile
    drop(site, "cancel-1.yaml", {"cancel": run["id"], "reason": "enough"})
    run_until_idle(site)
    rejected = site.layout.queue / "rejected"
    assert not rejected.exists() or list(rejected.iterdir()) == []
    assert api.show_run(site, run["id"])["state"] == "SUCCESS"
    assert not (site.layout.queue / "cancel-1.yaml").exists()
    site.close()
