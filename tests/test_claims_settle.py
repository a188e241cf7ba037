"""A handled request's claim goes only once its runs are on disk (a sync of the results
tree's file system), so that a power loss loses no run; a run folder that did not reach
the disk whole is made again from its claim at the next start."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from flowbatch import api, queue
from flowbatch.site import Site

from .conftest import SCORE_TEMPLATE, drop, make_site, run_until_idle, write_template


def _site(tmp_path: Path) -> Site:
    site = make_site(tmp_path / "site")
    api.install(site, write_template(tmp_path / "tpl", SCORE_TEMPLATE), workflow_id="wf")
    return site


def test_a_claim_goes_only_after_a_sync_that_began_after_its_run_was_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _site(tmp_path)
    monkeypatch.setattr(queue, "SETTLE_EVERY", 0.05)  # the thread settles while runs run
    syncs: list[dict[str, Any]] = []
    real = queue.sync_file_system

    def recorded(path: Path) -> None:
        claims = {p.name.split("--", 1)[1] for p in site.layout.claimed.iterdir()}
        made = {
            run.request for run in (site.store.load_dir(d) for d in site.store.iter_run_dirs("wf"))
        }
        syncs.append({"claims": claims, "made": made, "thread": threading.current_thread().name})
        real(path)

    monkeypatch.setattr(queue, "sync_file_system", recorded)
    names = [f"r{i}.yaml" for i in range(6)]

    def slow_down(daemon: Any) -> None:  # a tick that takes time: the thread syncs meanwhile
        threading.Event().wait(0.06)

    for i, name in enumerate(names):
        drop(site, name, {"workflow": "wf", "arguments": {"score": i}})
    run_until_idle(site, each_tick=slow_down)
    assert list(site.layout.claimed.iterdir()) == []
    assert sorted(site.store.load(r["id"]).request for r in api.list_runs(site)) == names
    for name in names:
        # a sync found its claim still there and its run made: the claim went after it
        assert any(name in s["claims"] and name in s["made"] for s in syncs), (name, syncs)
    # the daemon's loop left the syncs to the thread, but for what was left at its stop
    assert "claim-settler" in {s["thread"] for s in syncs}
    assert {s["thread"] for s in syncs} <= {"claim-settler", "MainThread"}


def _daemon(site: Site, crash_at: str | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ}
    if crash_at:
        env["FLOWBATCH_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "flowbatch", "--site", str(site.root), "daemon", "--until-idle"],
        env=env,
        capture_output=True,
        timeout=120,
    )


@pytest.mark.parametrize("lost", ["record emptied", "script emptied", "files gone"])
def test_a_run_folder_a_power_loss_left_incomplete_is_made_again(
    tmp_path: Path, lost: str, caplog: pytest.LogCaptureFixture
) -> None:
    """What a power loss before the sync can leave (ext4 writes the folder's rename before
    its files' data): the daemon killed right after the run folder was made stands for it,
    then the folder is spoiled as the disk would have it."""
    site = _site(tmp_path)
    drop(site, "r.yaml", {"workflow": "wf", "arguments": {"score": 7}})
    site.close()
    crashed = _daemon(site, "created:1")
    assert crashed.returncode == -signal.SIGKILL
    (claim,) = site.layout.claimed.iterdir()
    run_id = claim.name.split("--")[0]
    run_dir = site.layout.run_dir("wf", run_id)
    if lost == "record emptied":
        (run_dir / "run.json").write_bytes(b"")
    elif lost == "script emptied":
        (run_dir / "run.sh").write_bytes(b"")
    else:
        for path in run_dir.iterdir():
            if path.is_file():
                path.unlink()
    site = Site(site.root)
    with caplog.at_level(logging.ERROR, logger="flowbatch.queue"):
        run_until_idle(site)
    (listed,) = api.list_runs(site)
    run = site.store.load(listed["id"])
    assert (run.id, run.state.value, run.request) == (run_id, "SUCCESS", "r.yaml")
    assert run.arguments["score"] == 7
    aside = [
        p.name for p in run_dir.parent.iterdir() if p.name.startswith(f".{run_id}.incomplete-")
    ]
    assert len(aside) == 1
    assert any("did not reach the disk whole" in r.getMessage() for r in caplog.records)
    assert list(site.layout.claimed.iterdir()) == []
    site.close()


def test_a_sweep_makes_again_only_its_points_left_incomplete(tmp_path: Path) -> None:
    site = _site(tmp_path)
    drop(site, "s.yaml", {"workflow": "wf", "sweep": {"score": [1, 2, 3, 4]}})
    site.close()
    assert _daemon(site, "created:3").returncode == -signal.SIGKILL
    (claim,) = site.layout.claimed.iterdir()
    run_id = claim.name.split("--")[0]
    first = site.layout.run_dir("wf", run_id)
    second = site.layout.run_dir("wf", f"{run_id}-1")
    (first / "run.json").write_bytes(b"")  # lost; the second and third reached the disk
    site = Site(site.root)
    run_until_idle(site)
    runs = [site.store.load(r["id"]) for r in api.list_runs(site)]
    assert sorted(r.arguments["score"] for r in runs) == [1, 2, 3, 4]
    assert {r.state.value for r in runs} == {"SUCCESS"}
    assert len(runs) == 4  # no point made twice
    assert (second / "run.json").exists() and not (first.parent / f".{run_id}-1.tmp").exists()
    assert len([p for p in first.parent.iterdir() if ".incomplete-" in p.name]) == 1
    # the second point's folder was kept, not moved aside and made again
    assert not [p for p in first.parent.iterdir() if p.name.startswith(f".{run_id}-1.")]
    site.close()


def test_a_daemon_killed_between_the_sync_and_the_removal_makes_no_run_twice(
    tmp_path: Path,
) -> None:
    site = _site(tmp_path)
    for i in range(3):
        drop(site, f"r{i}.yaml", {"workflow": "wf", "arguments": {"score": i}})
    site.close()
    assert _daemon(site, "settle:1").returncode == -signal.SIGKILL
    assert len(list(site.layout.claimed.iterdir())) == 3  # synced, none removed yet
    assert _daemon(site).returncode == 0
    site = Site(site.root)
    runs = [site.store.load(r["id"]) for r in api.list_runs(site)]
    assert sorted(r.request for r in runs) == ["r0.yaml", "r1.yaml", "r2.yaml"]
    assert {r.state.value for r in runs} == {"SUCCESS"}
    assert list(site.layout.claimed.iterdir()) == []
    site.close()
