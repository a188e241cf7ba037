"""A handled request's claim goes only once its runs are on disk (a sync of the results
tree's file system), so that a power loss loses no run; a run folder that did not reach
the disk whole is made again from its claim at the next start."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from flowbatch import api, queue
from flowbatch.site import Site

from .conftest import SCORE_TEMPLATE, drop, make_site, run_until_idle, write_template
from .test_request_writers import FILE_TEMPLATE
from .test_robust import _user, needs_root


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


def _reboot(site: Site) -> None:
    """The host restarted since the daemon claimed (a power loss, a host crash): the boot
    id its daemon noted is another boot's."""
    assert site.boot_note.read_text().strip() == queue.boot_id()  # noted at the claims
    site.boot_note.write_text("0" * 8 + "-before-the-power-loss\n")


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
    (claim,) = _claims(site)
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
    _reboot(site)
    site = Site(site.root)
    with caplog.at_level(logging.WARNING, logger="flowbatch.queue"):
        run_until_idle(site)
    (listed,) = api.list_runs(site)
    run = site.store.load(listed["id"])
    assert (run.id, run.state.value, run.request) == (run_id, "SUCCESS", "r.yaml")
    assert run.arguments["score"] == 7
    aside = [
        p.name for p in run_dir.parent.iterdir() if p.name.startswith(f".{run_id}.incomplete-")
    ]
    assert len(aside) == 1  # for the admin to see
    assert any("may not have reached the disk whole" in r.getMessage() for r in caplog.records)
    assert list(site.layout.claimed.iterdir()) == []
    site.close()


def test_a_sweep_makes_again_its_points_that_never_started(tmp_path: Path) -> None:
    site = _site(tmp_path)
    drop(site, "s.yaml", {"workflow": "wf", "sweep": {"score": [1, 2, 3, 4]}})
    site.close()
    assert _daemon(site, "created:3").returncode == -signal.SIGKILL
    (claim,) = _claims(site)
    run_id = claim.name.split("--")[0]
    first = site.layout.run_dir("wf", run_id)
    second = site.layout.run_dir("wf", f"{run_id}-1")
    (first / "run.json").write_bytes(b"")  # lost; the second and third reached the disk
    _reboot(site)
    site = Site(site.root)
    run_until_idle(site)
    runs = [site.store.load(r["id"]) for r in api.list_runs(site)]
    assert sorted(r.arguments["score"] for r in runs) == [1, 2, 3, 4]
    assert {r.state.value for r in runs} == {"SUCCESS"}
    assert len(runs) == 4  # no point made twice
    assert (second / "run.json").exists() and not (first.parent / f".{run_id}-1.tmp").exists()
    # the three points made before the power loss, never started, made again
    aside = sorted(p.name.split(".incomplete-")[0] for p in first.parent.glob(".*.incomplete-*"))
    assert aside == [f".{run_id}", f".{run_id}-1", f".{run_id}-2"]
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


INPUT_TEMPLATE = """
workflow:
  steps:
    - name: score
      action:
        commands:
          - >-
            printf '{"score": %s}' "$(cat data/score.txt)" > r.json
results:
  file: r.json
  schema: [{name: score, label: Score, dtype: float}]
"""


def test_a_run_whose_input_a_power_loss_emptied_is_made_again_whole(tmp_path: Path) -> None:
    """A file copied into the run folder (here the template's) that a power loss left
    empty looks like an empty input: a never-started run of a claim found at a start is
    made again, whatever its files look like, and several leftovers in any order."""
    # no run starts before the kill (a started run is the lifecycle's, as it is)
    held = {"limits": {"groups": {"held": 0}}}
    site = make_site(tmp_path / "site", held)
    template = write_template(tmp_path / "tpl", INPUT_TEMPLATE, files={"data/score.txt": "1000"})
    api.install(site, template, workflow_id="wf")
    drop(site, "a.yaml", {"workflow": "wf", "group": "held"})
    drop(site, "b.yaml", {"workflow": "wf", "group": "held"})
    site.close()
    assert _daemon(site, "created:2").returncode == -signal.SIGKILL
    site.layout.config.write_text(site.layout.config.read_text().replace("held: 0", "held: 2"))
    folders = [d for d in site.layout.runs_dir("wf").iterdir() if not d.name.startswith(".")]
    assert len(folders) == 2 and len(list(site.layout.claimed.iterdir())) == 2
    for folder in folders:
        assert not (folder / "status" / "markers").exists()  # never started
    # what the disk kept: one's script, the other's input, empty
    (folders[0] / "run.sh").write_bytes(b"")
    (folders[1] / "data" / "score.txt").write_bytes(b"")
    _reboot(site)
    site = Site(site.root)
    run_until_idle(site)
    runs = [site.store.load(r["id"]) for r in api.list_runs(site)]
    assert {r.id for r in runs} == {f.name for f in folders}  # the same ids, made again
    assert {r.state.value for r in runs} == {"SUCCESS"}
    assert [r.results for r in runs] == [{"score": 1000.0}] * 2
    site.close()


@needs_root
def test_a_started_run_whose_record_its_user_replaced_is_never_made_again(
    public_tmp: Path,
) -> None:
    """A root daemon gives the run folder to its user: a record that user replaced (or
    removed) after the run started is no folder to make again, claim or not."""
    user = _user("fbrunner")
    site = make_site(public_tmp / "site")
    api.install(site, write_template(public_tmp / "tpl", SCORE_TEMPLATE), workflow_id="wf")
    path = drop(site, "r.yaml", {"workflow": "wf", "arguments": {"score": 5}})
    os.chown(path, user.pw_uid, user.pw_gid)
    site.close()
    # killed as it records the run's end: started, its claim not settled yet
    assert _daemon(site, "finalize:1").returncode == -signal.SIGKILL
    (folder,) = [d for d in site.layout.runs_dir("wf").iterdir() if not d.name.startswith(".")]
    assert len(list(site.layout.claimed.iterdir())) == 1
    record = folder / "run.json"
    record.unlink()
    record.write_text('{"id": "forged"}')  # the user's own file now
    os.chown(record, user.pw_uid, user.pw_gid)
    _reboot(site)
    assert _daemon(site).returncode == 0
    markers = (folder / "status" / "markers").read_text().splitlines()
    assert sum(line.startswith("started ") for line in markers) == 1  # run once only
    assert [d.name for d in folder.parent.iterdir() if ".incomplete-" in d.name] == []
    assert record.read_text() == '{"id": "forged"}'  # left as it is, for the admin
    assert list(site.layout.claimed.iterdir()) == []


def test_a_stop_does_not_hang_on_a_sync_that_never_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A hung network file system (staged: a sync that blocks): the daemon stops after
    its patience, the claims kept for the next start, whose runs exist."""
    site = _site(tmp_path)
    released = threading.Event()
    monkeypatch.setattr(queue, "sync_file_system", lambda path: released.wait(30))
    monkeypatch.setattr(queue, "SETTLE_PATIENCE", 0.3)
    drop(site, "r.yaml", {"workflow": "wf", "arguments": {"score": 1}})
    daemon = run_until_idle(site, daemon=_started(site))
    try:
        with caplog.at_level(logging.WARNING, logger="flowbatch.queue"):
            began = time.monotonic()
            daemon.stop()
            assert time.monotonic() - began < 5
        assert any("has not returned" in r.getMessage() for r in caplog.records)
        assert len(list(site.layout.claimed.iterdir())) == 1  # kept: its run exists
    finally:
        released.set()


def _started(site: Site) -> Any:
    from flowbatch.daemon import Daemon

    daemon = Daemon(site)
    daemon.start()
    return daemon


def test_a_sweep_refused_half_way_is_synced_before_its_claim_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A point whose file went away after the checks refuses the rest of a sweep: its
    claim goes to rejected/ at once, so the points made before are synced first."""
    site = _site(tmp_path)
    order: list[str] = []
    real_sync, real_make = queue.sync_file_system, queue.Intake._create_run
    monkeypatch.setattr(queue, "sync_file_system", lambda p: (order.append("sync"), real_sync(p)))

    def make(self: Any, claimed: Any, *args: Any) -> Any:
        if args[1].endswith("-1"):  # the second point's run id
            raise queue.ArgumentError("file 'x' went away", file=claimed.name)
        order.append("made")
        return real_make(self, claimed, *args)

    monkeypatch.setattr(queue.Intake, "_create_run", make)
    real_reject = queue.Intake.reject
    monkeypatch.setattr(
        queue.Intake,
        "reject",
        lambda self, c, e: (order.append("rejected"), real_reject(self, c, e)),
    )
    drop(site, "s.yaml", {"workflow": "wf", "sweep": {"score": [1, 2, 3]}})
    intake = queue.Intake(site)
    intake.run_once()
    assert order[:3] == ["made", "sync", "rejected"], order
    intake.close()


def _claims(site: Site) -> list[Path]:
    return [p for p in site.layout.claimed.iterdir() if "--" in p.name]


@pytest.mark.parametrize("change", ["rewritten", "removed"])
def test_after_a_crash_of_the_daemon_alone_nothing_is_made_again(
    tmp_path: Path, change: str
) -> None:
    """The host kept running, so the run folder is whole: the run made before the crash
    stays as it was made, whatever its user did to the queue's input since."""
    site = make_site(tmp_path / "site")
    api.install(site, write_template(tmp_path / "tpl", FILE_TEMPLATE), workflow_id="wf")
    drop(site, "r.yaml", {"workflow": "wf", "arguments": {"names": "n.txt"}}, {"n.txt": "a\n"})
    site.close()
    assert _daemon(site, "created:1").returncode == -signal.SIGKILL
    (claim,) = _claims(site)
    names = site.layout.queue / "n.txt"
    if change == "rewritten":
        names.write_text("a\nb\nc\n")
    else:
        names.unlink()
    assert _daemon(site).returncode == 0
    site = Site(site.root)
    (listed,) = api.list_runs(site)
    run = site.store.load(listed["id"])
    assert (run.id, run.state.value, run.results) == (
        claim.name.split("--")[0],
        "SUCCESS",
        {"score": 1.0},
    )
    assert not site.layout.rejected.exists() or not any(site.layout.rejected.iterdir())
    assert not list(site.layout.runs_dir("wf").glob(".*.incomplete-*"))
    site.close()


def test_a_schedulers_intent_is_on_disk_before_its_submission(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The intent (the job's name) is written before sbatch so that a lost answer is
    found by name; a power loss must not lose it while the job lives on in Slurm: the
    record and its folder are synced before the write returns."""
    from flowbatch.lifecycle import Runner

    site = _site(tmp_path)
    drop(site, "r.yaml", {"workflow": "wf", "arguments": {"score": 1}})
    intake = queue.Intake(site)
    (run,) = intake.run_once().runs
    intake.close()
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    runner = Runner(site, {})
    runner._write_handle(run, {"job_name": "fb-x", "intent": True})
    run_dir = site.store.run_dir(run)
    assert str(run_dir) in synced  # the folder: the record's new name
    assert any(p.startswith(str(run_dir / ".run.json.")) for p in synced), synced  # its data
    assert json.loads((run_dir / "run.json").read_text())["handle"]["job_name"] == "fb-x"
    site.close()
