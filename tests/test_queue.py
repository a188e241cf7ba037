"""Intake: claiming, validating and rejecting requests dropped into the queue."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from flowbatch import api
from flowbatch.queue import Intake, IntakeResult, is_request_name

from .conftest import drop, only_run, run_until_idle


def rejected(site) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    out = {}
    for p in site.layout.rejected.glob("*.error.yaml"):
        out[p.name.removesuffix(".error.yaml")] = yaml.safe_load(p.read_text())
    return out


def test_request_names() -> None:
    assert is_request_name("a.yaml") and is_request_name("b.YML")
    for name in (".a.yaml", "a.yaml.tmp", "a.tmp", "a.json", "names.txt", "rejected"):
        assert not is_request_name(name)


def test_good_request_becomes_a_run_with_defaults_applied(hello_site) -> None:  # type: ignore[no-untyped-def]
    drop(
        hello_site,
        "alice.yaml",
        {
            "workflow": "helloworld",
            "group": "alice",
            "name": "first try",
            "arguments": {"names": "n.txt"},
        },
        files={"n.txt": "Ann\nBo\n"},
    )
    intake = Intake(hello_site)
    intake.settler.every = 3600  # claims are settled by close() below
    result = intake.run_once()
    assert len(result.runs) == 1 and not result.rejected
    run = result.runs[0]
    assert run.arguments["sleeptime"] == 0  # a default of 0 is applied (flowServ GAP)
    assert run.arguments["greeting"] == "Hello"
    assert run.arguments["names"] == {"source": "n.txt", "target": "data/names.txt"}
    run_dir = hello_site.store.run_dir(run)
    assert (run_dir / "data/names.txt").read_text() == "Ann\nBo\n"
    assert (run_dir / "request.yaml").exists() and (run_dir / "run.sh").exists()
    assert "first try" in (run_dir / "request.yaml").read_text()  # as received (linked)
    assert (run_dir / "logs").is_dir() and (run_dir / "status").is_dir()  # the script's
    assert (run_dir / "code/helloworld.py").exists()
    assert not (hello_site.layout.queue / "alice.yaml").exists()
    assert (hello_site.layout.queue / "n.txt").exists()  # other files are left alone
    # the claim stays until the run is on disk (a sync of the tree), then goes
    (claim,) = hello_site.layout.claimed.iterdir()
    assert claim.name.endswith("--alice.yaml") and intake.settler.holds(claim)
    assert intake.leftovers() == []  # held: no crash's leftover
    intake.close()
    assert list(hello_site.layout.claimed.iterdir()) == []


def test_list_form_of_arguments(hello_site) -> None:  # type: ignore[no-untyped-def]
    drop(
        hello_site,
        "r.yaml",
        {
            "workflow": "helloworld",
            "arguments": [{"name": "sleeptime", "value": 0}, {"name": "greeting", "value": "Hi"}],
        },
    )
    run = Intake(hello_site).run_once().runs[0]
    assert run.arguments["greeting"] == "Hi"
    assert run.group == run.owner  # default group: the file owner's user name


def test_invalid_requests_are_rejected_with_reasons(hello_site) -> None:  # type: ignore[no-untyped-def]
    cases = {
        "yamlerr.yaml": "workflow: [unclosed\n",
        "unknownwf.yaml": {"workflow": "nope"},
        "unknownarg.yaml": {"workflow": "helloworld", "arguments": {"colour": "red"}},
        "dup.yaml": "workflow: helloworld\nworkflow: helloworld\n",
        "wrongtype.yaml": {"workflow": "helloworld", "arguments": {"sleeptime": "soon"}},
        "range.yaml": {"workflow": "helloworld", "arguments": {"sleeptime": 11}},
        "nofile.yaml": {"workflow": "helloworld", "arguments": {"names": "missing.txt"}},
        "escape.yaml": {"workflow": "helloworld", "arguments": {"names": "../flowbatch.yaml"}},
        "abs.yaml": {"workflow": "helloworld", "arguments": {"names": "/etc/passwd"}},
        "extra.yaml": {"workflow": "helloworld", "colour": "red"},
        "duplist.yaml": {
            "workflow": "helloworld",
            "arguments": [{"name": "greeting", "value": "a"}, {"name": "greeting", "value": "b"}],
        },
    }
    for name, doc in cases.items():
        drop(hello_site, name, doc)
    os.symlink("/etc/passwd", hello_site.layout.queue / "link.txt")
    drop(
        hello_site, "symlinked.yaml", {"workflow": "helloworld", "arguments": {"names": "link.txt"}}
    )
    drop(hello_site, "good.yaml", {"workflow": "helloworld"})
    result = Intake(hello_site).run_once()
    assert len(result.runs) == 1  # the daemon keeps going: the good one is a run
    errors = rejected(hello_site)
    assert set(errors) == {*cases, "symlinked.yaml"}
    for name in errors:
        assert (hello_site.layout.rejected / name).exists(), name  # nothing lost
        assert errors[name]["file"] == name and errors[name]["reason"]
    assert "line 2" in errors["dup.yaml"]["reason"]
    assert errors["unknownwf.yaml"]["field"] == "workflow"
    assert errors["unknownarg.yaml"]["field"] == "arguments.colour"
    assert errors["wrongtype.yaml"]["field"] == "arguments.sleeptime"
    assert "[0,10]" in errors["range.yaml"]["expected"] or "10" in errors["range.yaml"]["reason"]
    assert "does not exist" in errors["nofile.yaml"]["reason"]
    assert errors["escape.yaml"]["field"] == "arguments.names"
    assert errors["abs.yaml"]["field"] == "arguments.names"
    assert "symlink" in errors["symlinked.yaml"]["reason"]
    assert errors["extra.yaml"]["field"] == "colour"
    assert "hint" in errors["unknownwf.yaml"]


def test_entries_that_are_not_regular_files(hello_site) -> None:  # type: ignore[no-untyped-def]
    queue = hello_site.layout.queue
    (queue / "adir.yaml").mkdir()
    os.mkfifo(queue / "fifo.yaml")
    os.symlink(hello_site.layout.config, queue / "link.yaml")
    (queue / "empty.yaml").write_text("")
    result = Intake(hello_site).run_once()
    assert result.runs == []
    errors = rejected(hello_site)
    assert set(errors) == {"adir.yaml", "fifo.yaml", "link.yaml", "empty.yaml"}
    assert (hello_site.layout.rejected / "link.yaml").is_symlink()  # moved, never followed
    assert hello_site.layout.config.exists()


def test_files_still_being_written_are_not_read(hello_site) -> None:  # type: ignore[no-untyped-def]
    queue = hello_site.layout.queue
    (queue / "partial.yaml.tmp").write_text("workflow: hello")
    (queue / ".hidden.yaml").write_text("workflow: hello")
    intake = Intake(hello_site)
    fresh = queue / "growing.yaml"
    fresh.write_text("workflow: hellowor")
    assert intake.candidates(settle=5.0) == []  # just written: not settled yet
    assert intake.candidates(settle=0.0) == ["growing.yaml"]
    old = time.time() - 60
    os.utime(fresh, (old, old))
    assert intake.candidates(settle=5.0) == ["growing.yaml"]  # unchanged for long enough


def test_claim_is_atomic_and_exclusive(hello_site) -> None:  # type: ignore[no-untyped-def]
    drop(hello_site, "one.yaml", {"workflow": "helloworld"})
    a, b = Intake(hello_site), Intake(hello_site)
    first = a.claim("one.yaml")
    assert first is not None and first.path.exists()
    assert b.claim("one.yaml") is None  # a second daemon cannot take it


def test_a_claim_makes_the_claimed_folder_when_it_is_gone(hello_site) -> None:  # type: ignore[no-untyped-def]
    """The claimed folder is made at the first claim, not before each one; removed under
    a running daemon (an admin's cleanup), the next claim makes it again."""
    intake = Intake(hello_site)
    claimed_dir = hello_site.claimed_dir
    for name in ("one.yaml", "two.yaml"):
        drop(hello_site, name, {"workflow": "helloworld"})
        if claimed_dir.exists():
            shutil.rmtree(claimed_dir)
        claimed = intake.claim(name)
        assert claimed is not None and claimed.path.parent == claimed_dir
        assert claimed.path.is_file() and not (hello_site.layout.queue / name).exists()
    # gone from the queue and no claimed folder: nothing to take, and no error
    shutil.rmtree(claimed_dir)
    assert intake.claim("three.yaml") is None


def test_crash_after_claim_is_finished_on_restart(hello_site) -> None:  # type: ignore[no-untyped-def]
    drop(hello_site, "one.yaml", {"workflow": "helloworld"})
    claimed = Intake(hello_site).claim("one.yaml")  # ... and the daemon dies here
    assert claimed is not None
    result = Intake(hello_site).run_once()
    assert [r.id for r in result.runs] == [claimed.run_id]
    # a crash after the run was created but before the claimed file was removed
    drop(hello_site, "two.yaml", {"workflow": "helloworld"})
    intake = Intake(hello_site)
    claimed2 = intake.claim("two.yaml")
    assert claimed2 is not None
    copy = claimed2.path.read_bytes()
    intake.process(claimed2, type(result)())
    claimed2.path.write_bytes(copy)  # as if the unlink never happened
    intake = Intake(hello_site)
    again = intake.run_once()
    intake.close()
    assert again.runs == [] and not claimed2.path.exists()
    assert len(api.list_runs(hello_site)) == 2  # exactly one run per request


def test_submit_brings_the_files_along(hello_site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    user = tmp_path / "user"
    user.mkdir()
    (user / "people.txt").write_text("Xavier\nYvonne\n")
    req = user / "try.yaml"
    req.write_text(
        yaml.safe_dump(
            {"workflow": "helloworld", "group": "team-x", "arguments": {"names": "people.txt"}}
        )
    )
    queued = api.submit(hello_site, req)
    assert (hello_site.layout.queue / queued).exists()
    run_until_idle(hello_site)
    run = only_run(hello_site)
    assert run["state"] == "SUCCESS", run["messages"]
    assert Path(run["run_dir"], "data/names.txt").read_text() == "Xavier\nYvonne\n"
    assert not any(p.name.endswith(".files") for p in hello_site.layout.queue.iterdir())


def test_a_claim_never_takes_the_id_of_a_run_in_the_index(hello_site, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A new claim's random id is checked against the index (runs, and sweeps claimed
    under it: ``<id>-1``): under a taken id, a request claimed before a crash would look
    like one whose run was already made, and be dropped."""
    import dataclasses

    from flowbatch import queue

    drop(hello_site, "one.yaml", {"workflow": "helloworld"})
    (first,) = Intake(hello_site).run_once().runs
    sweep_point = dataclasses.replace(first, id="cafe00000000-1")
    hello_site.store.index_many([sweep_point])
    store = hello_site.store
    assert store.run_id_taken(first.id) and store.run_id_taken("cafe00000000")
    assert not store.run_id_taken("cafe0000000") and not store.run_id_taken(first.id + "0")
    draws = iter([first.id, "cafe00000000", "beef00000000"])
    monkeypatch.setattr(queue, "new_run_id", lambda: next(draws))
    drop(hello_site, "two.yaml", {"workflow": "helloworld"})
    claimed = Intake(hello_site).claim("two.yaml")  # ... and the daemon dies here
    assert claimed is not None and claimed.run_id == "beef00000000"
    (second,) = Intake(hello_site).run_once().runs  # the restarted daemon makes its run
    assert second.id == "beef00000000" and second.request == "two.yaml"
    assert hello_site.store.load(first.id).request == "one.yaml"  # the old run untouched


def test_no_free_id_leaves_the_request_in_the_queue(hello_site, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """An index that calls every id taken (broken) claims nothing: the request stays in
    the queue, for a later tick, and the intake goes on."""
    monkeypatch.setattr(hello_site.store, "run_id_taken", lambda run_id: True)
    path = drop(hello_site, "one.yaml", {"workflow": "helloworld"})
    result = Intake(hello_site).run_once()
    assert result.runs == [] and path.is_file()
    monkeypatch.undo()
    assert [r.request for r in Intake(hello_site).run_once().runs] == ["one.yaml"]


def test_a_new_queue_is_sticky_and_the_daemons_folders_are_its_own(tmp_path: Path) -> None:
    """`flowbatch init` (and a daemon's start on a site without one) makes queue/ with the
    sticky bit: whatever write access participants get there, they cannot rename the
    daemon's .claimed and rejected away; those are writable by their owner only."""
    import stat

    from flowbatch.site import Site

    site = Site.init(tmp_path / "site")
    queue = site.layout.queue.stat()
    assert queue.st_mode & stat.S_ISVTX, oct(queue.st_mode)
    for folder in (site.layout.claimed, site.layout.rejected):
        st = folder.lstat()
        assert stat.S_ISDIR(st.st_mode) and not st.st_mode & 0o022, oct(st.st_mode)
        assert st.st_uid == os.geteuid()
    site.close()


def test_a_queue_participants_could_rearrange_takes_nothing_in(hello_site) -> None:  # type: ignore[no-untyped-def]
    """A daemon refuses to start on a queue others may write without the sticky bit, or
    whose rejected/.claimed is a link or no folder; a tick that finds one takes nothing
    in, writes nothing through the link, and says what to run; fixed, it serves again."""
    from flowbatch.daemon import run_daemon
    from flowbatch.errors import FlowbatchError

    queue = hello_site.layout.queue
    elsewhere = queue.parent / "elsewhere"
    elsewhere.mkdir()
    os.chmod(queue, 0o2775)  # group-writable, no sticky bit (docs/admins.md once said so)
    with pytest.raises(FlowbatchError, match=r"sticky bit") as info:
        run_daemon(hello_site, until_idle=True)  # refused at its start
    assert f"chmod +t {queue}" in str(info.value)
    os.chmod(queue, 0o3775)
    intake = Intake(hello_site)  # sticky: served
    bad = drop(hello_site, "bad.yaml", {"workflow": "nope"})
    os.rename(hello_site.layout.rejected, queue / "old-rejected")
    os.symlink(elsewhere, hello_site.layout.rejected)  # what a participant put in its place
    result = intake.run_once()
    assert result.refused and "symbolic link" in result.refused
    assert result.rejected == [] and bad.exists() and list(elsewhere.iterdir()) == []
    os.unlink(hello_site.layout.rejected)
    hello_site.layout.rejected.write_text("")  # not a folder: the same
    assert "not a folder" in (intake.run_once().refused or "")
    assert bad.exists() and list(elsewhere.iterdir()) == []
    os.unlink(hello_site.layout.rejected)
    shutil.rmtree(hello_site.layout.claimed)
    hello_site.layout.claimed.symlink_to(elsewhere)
    with pytest.raises(FlowbatchError, match=r"\.claimed is a symbolic link"):
        run_daemon(hello_site, until_idle=True)  # at the start
    assert "symbolic link" in (intake.run_once().refused or "")
    os.unlink(hello_site.layout.claimed)
    os.chmod(queue / "old-rejected", 0o775)
    os.rename(queue / "old-rejected", hello_site.layout.rejected)
    with pytest.raises(FlowbatchError, match=r"chmod go-w"):
        run_daemon(hello_site, until_idle=True)  # writable by its group: refused too
    os.chmod(hello_site.layout.rejected, 0o755)
    result = intake.run_once()  # safe again: .claimed is made (the daemon's), bad rejected
    assert result.refused is None and result.rejected == ["bad.yaml"]
    assert hello_site.layout.claimed.is_dir() and not hello_site.layout.claimed.is_symlink()
    assert list(elsewhere.iterdir()) == []


def test_a_claimed_folder_named_like_a_request_is_rejected_after_a_restart(hello_site) -> None:  # type: ignore[no-untyped-def]
    """A folder `d.yaml` claimed by a daemon that stopped before it looked at it is
    rejected by the next one (moved to rejected/ with its content), not stranded in
    .claimed/ where its owner cannot reach it."""
    queue = hello_site.layout.queue
    (queue / "d.yaml").mkdir()
    (queue / "d.yaml" / "data.txt").write_text("mine\n")
    (hello_site.layout.claimed / "somehost").mkdir()  # a host's folder (a once-shared site)
    assert Intake(hello_site).claim("d.yaml") is not None  # ... and the daemon stops here
    result = Intake(hello_site).run_once()
    assert result.rejected == ["d.yaml"]
    assert "directory" in rejected(hello_site)["d.yaml"]["reason"]
    assert (hello_site.layout.rejected / "d.yaml" / "data.txt").read_text() == "mine\n"
    assert [p.name for p in hello_site.layout.claimed.iterdir()] == ["somehost"]


def test_a_claimed_file_replaced_before_it_is_read_is_not_read(hello_site) -> None:  # type: ignore[no-untyped-def]
    """The file intake reads is the one it claimed (inode, device, owner as the claim saw
    them): one put in its place since is rejected unread, and makes no run."""
    drop(hello_site, "one.yaml", {"workflow": "helloworld", "name": "as dropped"})
    intake = Intake(hello_site)
    claimed = intake.claim("one.yaml")
    assert claimed is not None
    swapped = claimed.path.with_name(".swap")
    swapped.write_text("workflow: helloworld\nname: put in its place\n")
    os.rename(swapped, claimed.path)
    result = IntakeResult()
    intake.process(claimed, result)
    assert result.runs == [] and result.rejected == ["one.yaml"]
    assert "replaced after the daemon claimed it" in rejected(hello_site)["one.yaml"]["reason"]
    assert api.list_runs(hello_site) == []


def test_submit_rewrites_every_form_of_a_file_argument(hello_site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """flowServ's `{type: $file, value: {fileId}}` in the mapping form of `arguments`
    travels like a bare path: submit points it at the copy (it pointed at the user's
    own folder, and the daemon rejected the request, or took a stale queue/<file>)."""
    user = tmp_path / "user"
    user.mkdir()
    (user / "mine.txt").write_text("Zoe\n")
    (hello_site.layout.queue / "mine.txt").write_text("stale\n")
    forms = {
        "wire": {"type": "$file", "value": {"fileId": "mine.txt"}},
        "wire-target": {"type": "$file", "value": {"fileId": "mine.txt", "targetPath": "t.txt"}},
        "mapping": {"source": "mine.txt"},
        "bare": "mine.txt",
    }
    sent = {}
    for label, value in forms.items():
        req = user / f"{label}.yaml"
        req.write_text(yaml.safe_dump({"workflow": "helloworld", "arguments": {"names": value}}))
        queued = api.submit(hello_site, req)
        sent[label] = yaml.safe_load((hello_site.layout.queue / queued).read_text())
        bundle = queued.removesuffix(".yaml") + ".files"
        names = sent[label]["arguments"]["names"]
        source = names if isinstance(names, str) else names.get("source") or names["value"]
        source = source if isinstance(source, str) else source["fileId"]
        assert source == f"{bundle}/names/mine.txt", (label, names)
    assert sent["wire-target"]["arguments"]["names"]["value"]["targetPath"] == "t.txt"
    run_until_idle(hello_site)
    runs = [api.show_run(hello_site, r["id"]) for r in api.list_runs(hello_site)]
    assert len(runs) == 4 and all(r["state"] == "SUCCESS" for r in runs), runs
    assert rejected(hello_site) == {}


def test_a_daemon_until_idle_ends_when_the_queue_turns_unsafe(hello_site, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A queue made unsafe after the daemon started: its ticks take nothing in, and a
    daemon that is to end once idle would wait for ever with requests in the queue. It
    ends with the reason instead (a serving daemon keeps going, and logs it once)."""
    import threading

    from flowbatch import queue as queue_module
    from flowbatch.daemon import run_daemon
    from flowbatch.errors import FlowbatchError

    drop(hello_site, "r.yaml", {"workflow": "helloworld"})
    checked = queue_module.check_queue
    calls = []

    def unsafe_after_the_start(site, **kw):  # type: ignore[no-untyped-def]
        calls.append(kw)
        if len(calls) > 1:  # the start's check passes; the ticks' find it unsafe
            raise FlowbatchError(f"{site.layout.queue} is writable by everyone (test)")
        return checked(site, **kw)

    monkeypatch.setattr(queue_module, "check_queue", unsafe_after_the_start)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            run_daemon(hello_site, until_idle=True)
        except FlowbatchError as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "the daemon went on waiting"
    (error,) = errors
    assert "writable by everyone" in str(error)
    assert (hello_site.layout.queue / "r.yaml").exists()  # left where it was


def test_a_rejection_cut_short_by_a_crash_is_written_whole_again(hello_site) -> None:  # type: ignore[no-untyped-def]
    """A daemon killed after writing a rejection's error file, before moving the request
    beside it, left `bad.yaml.error.yaml` with no request; the request, claimed again,
    went to `bad.1.yaml` with a second error file."""
    drop(hello_site, "bad.yaml", {"workflow": "nope"})
    rejected = hello_site.layout.rejected
    rejected.mkdir(exist_ok=True)
    (rejected / "bad.yaml.error.yaml").write_text("reason: left by a crash\nrequest: bad.yaml\n")
    Intake(hello_site).run_once()
    assert sorted(p.name for p in rejected.iterdir()) == ["bad.yaml", "bad.yaml.error.yaml"]
    error = yaml.safe_load((rejected / "bad.yaml.error.yaml").read_text())
    assert "nope" in error["reason"] and error["request"] == "bad.yaml"
    drop(hello_site, "bad.yaml", {"workflow": "nope"})  # a second one of that name
    Intake(hello_site).run_once()
    assert sorted(p.name for p in rejected.iterdir()) == [
        "bad.1.yaml",
        "bad.1.yaml.error.yaml",
        "bad.yaml",
        "bad.yaml.error.yaml",
    ]


def test_a_rejected_request_named_like_an_error_file_is_kept(hello_site) -> None:  # type: ignore[no-untyped-def]
    """`x.yaml.error.yaml` is a request name too: rejected, it is kept; a later rejected
    `x.yaml` must not write its error file over it."""
    drop(hello_site, "x.yaml.error.yaml", {"workflow": "nope", "name": "the first"})
    Intake(hello_site).run_once()
    drop(hello_site, "x.yaml", {"workflow": "nope2"})
    Intake(hello_site).run_once()
    rejected = hello_site.layout.rejected
    kept = yaml.safe_load((rejected / "x.yaml.error.yaml").read_text())
    assert kept["name"] == "the first"
    assert (rejected / "x.1.yaml").exists() and (rejected / "x.1.yaml.error.yaml").exists()


def test_a_fifo_named_like_an_error_file_never_holds_the_daemon(hello_site) -> None:  # type: ignore[no-untyped-def]
    """A participant's FIFO named `victim.yaml.error.yaml` went to rejected/; the next
    rejected `victim.yaml` made the daemon open it to see whether it was that request's
    error file, and the open waited for a writer for ever (every restart again)."""
    import threading

    os.mkfifo(hello_site.layout.queue / "victim.yaml.error.yaml")
    Intake(hello_site).run_once()
    rejected = hello_site.layout.rejected
    assert (rejected / "victim.yaml.error.yaml").is_fifo()  # set aside, not read
    drop(hello_site, "victim.yaml", {"workflow": "nope"})
    done = threading.Event()

    def intake() -> None:
        Intake(hello_site).run_once()
        done.set()

    threading.Thread(target=intake, daemon=True).start()
    if not done.wait(timeout=10):
        with open(rejected / "victim.yaml.error.yaml", "wb"):  # let the stuck open go
            pass
        raise AssertionError("the intake waited on the FIFO")
    assert (rejected / "victim.yaml.error.yaml").is_fifo()  # left as it was
    errors = [p for p in rejected.iterdir() if p.name.endswith(".error.yaml") and p.is_file()]
    said = {yaml.safe_load(p.read_text())["request"] for p in errors}
    # each rejection its own (the second request kept under a free name)
    assert said == {"victim.1.yaml", "victim.yaml.error.yaml"}
    assert (rejected / "victim.1.yaml").is_file()
