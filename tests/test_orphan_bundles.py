"""The ``<name>.files/`` bundle `flowbatch submit` puts beside a request goes with the
request's claim; one left in the queue without its request (a daemon killed between the
two removals, a request its user removed) is removed by the intake once it is older than
a grace period, and only then: never one whose request is queued, being written,
claimed or rejected, never through a link, never another user's files."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowbatch import api, queue
from flowbatch.daemon import Daemon
from flowbatch.queue import Intake
from flowbatch.site import Site

from .conftest import make_site, run_until_idle, write_template
from .test_claims_settle import _claims, _daemon
from .test_request_writers import FILE_TEMPLATE
from .test_robust import _user, needs_root


def _site(tmp_path: Path) -> Site:
    site = make_site(tmp_path / "site")
    api.install(site, write_template(tmp_path / "tpl", FILE_TEMPLATE), workflow_id="hello")
    return site


def _submit(site: Site, tmp_path: Path, stem: str) -> tuple[Path, Path]:
    """`flowbatch submit` of a request with one input file: (the queued request, its
    bundle)."""
    folder = tmp_path / f"in-{stem}"
    folder.mkdir()
    (folder / "names.txt").write_text("a\nb\n")
    (folder / f"{stem}.yaml").write_text(
        yaml.safe_dump({"workflow": "hello", "arguments": {"names": "names.txt"}})
    )
    name = api.submit(site, folder / f"{stem}.yaml")
    request = site.layout.queue / name
    bundle = request.with_name(request.stem + ".files")
    assert request.is_file() and (bundle / "names" / "names.txt").is_file()
    return request, bundle


def _big_orphan(tmp_path: Path) -> tuple[Site, Intake, Path]:
    """A site, its intake and an orphan bundle of 232 entries (its user took the request
    back after `flowbatch submit`)."""
    site = _site(tmp_path)
    intake = Intake(site)
    queue.check_queue(site)
    request, bundle = _submit(site, tmp_path, "big")
    request.unlink()
    for i in range(230):
        (bundle / f"f{i}").write_text("x")
    return site, intake, bundle


def _removed_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "flowbatch.queue" and r.getMessage().startswith("removed ")
    ]


def test_a_bundle_a_killed_daemon_left_goes_once_past_the_grace(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _site(tmp_path)
    _, bundle = _submit(site, tmp_path, "r")
    site.close()
    # the daemon killed right after the claim's removal, before its bundle's
    assert _daemon(site, "unclaimed:1").returncode == -signal.SIGKILL
    assert _claims(site) == [] and bundle.is_dir()
    assert [p for p in site.layout.queue.iterdir() if p.suffix == ".yaml"] == []
    site = Site(site.root)
    run_until_idle(site)  # a restart: the bundle is not an hour old, kept
    assert bundle.is_dir()
    monkeypatch.setattr(queue, "BUNDLE_GRACE", 0.0, raising=False)
    with caplog.at_level(logging.INFO, logger="flowbatch.queue"):
        run_until_idle(site)  # the next start's first tick looks again
    assert not bundle.exists()
    (line,) = _removed_lines(caplog)
    assert str(bundle) in line and "no longer in the queue" in line
    (run,) = api.list_runs(site)
    assert run["state"] == "SUCCESS"  # its run had its own copies
    site.close()


def test_only_a_bundle_whose_request_is_gone_is_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    site = _site(tmp_path)
    q = site.layout.queue
    intake = Intake(site)
    queue.check_queue(site)  # the daemon's folders, as at a tick
    # a request its user removed from the queue: its bundle is an orphan
    request, orphan = _submit(site, tmp_path, "gone")
    request.unlink()
    # its request still queued
    _, queued = _submit(site, tmp_path, "queued")
    # claimed (the daemon is at work on it), here or on another host of a shared site
    request, claimed = _submit(site, tmp_path, "claimed")
    assert intake.claim(request.name) is not None
    request, elsewhere = _submit(site, tmp_path, "elsewhere")
    (q / ".claimed" / "otherhost").mkdir()
    os.rename(request, q / ".claimed" / "otherhost" / f"0123456789ab--{request.name}")
    # being written by `submit` (its bundle is in place first)
    request, writing = _submit(site, tmp_path, "writing")
    os.rename(request, q / f".{request.name}.tmp")
    # rejected: its request in rejected/ (also under a name beside an earlier rejection)
    request, rejected = _submit(site, tmp_path, "rejected")
    os.rename(request, site.layout.rejected / request.name)
    request, renamed = _submit(site, tmp_path, "renamed")
    os.rename(request, site.layout.rejected / f"{request.stem}.1.yaml")
    # a folder of a user's own naming (inputs, perhaps, of requests of other names)
    (q / "inputs.files").mkdir()
    (q / "inputs.files" / "x.txt").write_text("x")
    # a link named as a bundle, to a folder elsewhere
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    (q / "link-abc123.files").symlink_to(outside)
    kept = [queued, claimed, elsewhere, writing, rejected, renamed, q / "inputs.files"]

    with caplog.at_level(logging.INFO, logger="flowbatch.queue"):
        assert intake.remove_orphan_bundles() == []  # all younger than the grace
        assert orphan.is_dir()
        assert intake.remove_orphan_bundles(grace=0) == [orphan.name]
    assert not orphan.exists()
    assert all(p.is_dir() for p in kept), [p for p in kept if not p.is_dir()]
    assert (q / "link-abc123.files").is_symlink() and (outside / "keep.txt").read_text() == "keep"
    (line,) = _removed_lines(caplog)
    assert str(orphan) in line
    intake.settler.close()
    site.close()


def test_the_intake_looks_at_its_first_tick_and_then_now_and_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _site(tmp_path)
    monkeypatch.setattr(queue, "BUNDLE_GRACE", 0.0, raising=False)
    daemon = Daemon(site)
    daemon.start()
    try:
        daemon.tick()  # the first look: nothing
        request, orphan = _submit(site, tmp_path, "later")
        request.unlink()
        daemon.tick()
        assert orphan.is_dir()  # not at every tick: a listing every BUNDLE_SWEEP_EVERY
        monkeypatch.setattr(queue, "BUNDLE_SWEEP_EVERY", 0.0, raising=False)
        daemon.intake._bundles_due = 0.0  # as BUNDLE_SWEEP_EVERY seconds later
        daemon.tick()
        assert not orphan.exists()
    finally:
        daemon.stop()
        site.close()


@needs_root
def test_a_bundle_goes_only_with_what_its_user_owns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The user who would own its request: the owner of the runs made from a request of
    its name, else the folder's; what another user has in it stays."""
    user = _user("fbrunner")
    site = _site(tmp_path)
    q = site.layout.queue
    intake = Intake(site)
    queue.check_queue(site)
    (tmp_path / "names.txt").write_text("a\n")
    files = {"names": tmp_path / "names.txt"}

    def doc() -> dict[str, Any]:  # queue_request points its file at the bundle
        return {"workflow": "hello", "arguments": {"names": "names.txt"}}

    # root's request `taken-<hex>.yaml` made a run (its bundle went with its claim); a
    # folder of fbrunner's takes its bundle's name
    name = api.queue_request(site, "taken", doc(), files)
    run_until_idle(site)
    assert [r["owner"] for r in api.list_runs(site)] == ["root"]
    squatted = q / (Path(name).stem + ".files")
    assert not squatted.exists()
    squatted.mkdir()
    os.chown(squatted, user.pw_uid, user.pw_gid)
    # fbrunner's orphan (queued by root for fbrunner, as `runs rerun` does), with a file
    # of root's put inside
    shared = q / api.queue_request(site, "shared", doc(), files, uid=user.pw_uid)
    shared.unlink()
    shared_bundle = shared.with_name(shared.stem + ".files")
    assert shared_bundle.stat().st_uid == user.pw_uid
    (shared_bundle / "names" / "root.txt").write_text("root's")
    # fbrunner's orphan, all theirs
    own = q / api.queue_request(site, "own", doc(), files, uid=user.pw_uid)
    own.unlink()
    own_bundle = own.with_name(own.stem + ".files")

    with caplog.at_level(logging.INFO, logger="flowbatch.queue"):
        assert intake.remove_orphan_bundles(grace=0) == [own_bundle.name]
        assert intake.remove_orphan_bundles(grace=0) == []  # said once, not at every look
    assert not own_bundle.exists()
    assert squatted.is_dir()
    assert (shared_bundle / "names" / "root.txt").read_text() == "root's"
    assert not (shared_bundle / "names" / "names.txt").exists()  # fbrunner's: removed
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2, warned
    assert any(str(squatted) in w and "runs of its request to root" in w for w in warned)
    assert any(str(shared_bundle) in w and "1 entry of other users" in w for w in warned)
    intake.settler.close()
    site.close()


def test_a_bundle_whose_request_a_host_with_dashes_in_its_name_claimed_is_kept(
    tmp_path: Path,
) -> None:
    """A shared site: host `node--07` (a legal host name; IDN host names all start with
    `xn--`) claimed the request into `.claimed/node--07/<id>--<name>`: another host's
    sweep keeps its bundle (the host's folder is no claim for its `--`). Found by review."""
    site = _site(tmp_path)
    q = site.layout.queue
    intake = Intake(site)
    queue.check_queue(site)
    request, bundle = _submit(site, tmp_path, "busy")
    (q / ".claimed" / "node--07").mkdir(parents=True)
    os.rename(request, q / ".claimed" / "node--07" / f"0123456789ab--{request.name}")
    removed = intake.remove_orphan_bundles(grace=0)  # as if queued over an hour ago
    intake.settler.close()
    site.close()
    assert removed == [] and bundle.is_dir(), removed


def test_a_bundle_of_many_files_is_removed_over_several_looks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A participant's orphan bundle filled with files is removed a bounded number of
    entries a look (BUNDLE_SWEEP_ENTRIES), the next look soon: never all in one tick of
    the intake (a million files would hold it for seconds). Found by review."""
    monkeypatch.setattr(queue, "BUNDLE_SWEEP_ENTRIES", 100)
    site, intake, bundle = _big_orphan(tmp_path)
    looks = []
    while bundle.exists() and len(looks) < 10:
        before = sum(1 for _ in bundle.rglob("*"))
        due = time.monotonic()
        looks.append((intake.remove_orphan_bundles(grace=0), before))
        if bundle.exists():
            assert intake._bundles_due - due <= queue.BUNDLE_SWEEP_AGAIN + 1  # soon again
            assert before - sum(1 for _ in bundle.rglob("*")) <= 100
    intake.settler.close()
    site.close()
    assert not bundle.exists() and len(looks) == 3, looks
    assert [removed for removed, _ in looks] == [[], [], [bundle.name]]


def test_the_intake_looks_again_soon_after_a_big_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the intake's own tick: a look that stopped at its budget makes the next
    one come BUNDLE_SWEEP_AGAIN later, not BUNDLE_SWEEP_EVERY. Found by review."""
    monkeypatch.setattr(queue, "BUNDLE_SWEEP_ENTRIES", 100)
    monkeypatch.setattr(queue, "BUNDLE_GRACE", 0.0)
    site, intake, bundle = _big_orphan(tmp_path)
    begin = time.monotonic()
    intake.run_once()
    try:
        assert bundle.exists()  # one look: 100 entries
        assert intake._bundles_due - begin <= queue.BUNDLE_SWEEP_AGAIN + 1, (
            f"next look in {intake._bundles_due - begin:.0f} s, not "
            f"{queue.BUNDLE_SWEEP_AGAIN:.0f} s"
        )
    finally:
        intake.settler.close()
        site.close()


def test_the_next_look_continues_the_partly_removed_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partial removal changes the bundle: the next look goes on with it all the same
    (not "changed within the grace"). BUNDLE_GRACE scaled to 2 s. Found by review."""
    monkeypatch.setattr(queue, "BUNDLE_SWEEP_ENTRIES", 100)
    monkeypatch.setattr(queue, "BUNDLE_GRACE", 2.0)
    site, intake, bundle = _big_orphan(tmp_path)
    time.sleep(2.2)  # an orphan older than the grace
    try:
        intake.remove_orphan_bundles()
        first = len(os.listdir(bundle))
        assert first < 230
        intake.remove_orphan_bundles()  # the look "10 s later"
        second = len(os.listdir(bundle)) if bundle.exists() else 0
        assert second < first, f"the second look removed nothing ({first} entries left)"
    finally:
        intake.settler.close()
        site.close()


def test_a_bundle_a_killed_submit_was_building_is_removed_after_a_day(tmp_path: Path) -> None:
    """`flowbatch submit` builds a bundle in `.<name>.files.tmp` and renames it into place
    once whole; killed half-way, it leaves that folder (and never its request). It goes
    once neither it nor a folder in it changed for a day (a copy of large inputs may take
    long, and writes into a folder within it change neither); a younger one stays."""
    site = _site(tmp_path)
    intake = Intake(site)
    queue.check_queue(site)
    old, young = (site.layout.queue / f".{n}-abcdef.files.tmp" for n in ("old", "young"))
    for folder in (old, young):
        (folder / "names").mkdir(parents=True)
        (folder / "names" / "names.txt").write_text("a\n")
    day = time.time() - queue.BUNDLE_TEMP_GRACE - 60
    for path in (old / "names", old):
        os.utime(path, (day, day))
    os.utime(young, (day, day))  # its folder within changed just now: a copy goes on
    try:
        removed = intake.remove_orphan_bundles(grace=0)
    finally:
        intake.settler.close()
        site.close()
    assert removed == [old.name] and not old.exists() and young.is_dir()


@needs_root
def test_submit_removes_its_users_own_done_bundles_and_no_one_elses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon of a service user may not remove another user's folder from the sticky
    queue: every bundle `submit` brought stayed there for ever (found by review). The
    user's next submit removes their own bundles whose requests are done."""
    site = _site(tmp_path)
    request, mine = _submit(site, tmp_path, "a")
    request.unlink()  # done with (its claim settled), as the daemon could not remove it
    _, theirs = _submit(site, tmp_path, "b")
    (site.layout.queue / theirs.name.replace(".files", ".yaml")).unlink()
    other = _user("fbtest").pw_uid
    for path in [theirs, *theirs.rglob("*")]:
        os.chown(path, other, other)
    monkeypatch.setattr(queue, "BUNDLE_GRACE", 0.0, raising=False)
    _, fresh = _submit(site, tmp_path, "c")
    assert not mine.exists()  # the submitter's own, done with
    assert theirs.is_dir()  # another user's
    assert fresh.is_dir()  # its request is queued
    site.close()
