"""A root daemon taking back a run's folder (``takeback.take_back``): files with several
names. Found by review: ten hard links to one sparse 1 GiB file were ten full copies
(11 GB written as root, the daemon stalled 33-41 s). Now a file all of whose names are in
the folder is taken once; one with a name outside too gets one copy for all its names
here, its holes kept, within a budget a run; past it, its names here are removed and the
run's messages say so."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from flowbatch import takeback

USER = 65534  # the run's user (nobody)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon's take-back")


def as_user(path: Path) -> Path:
    os.chown(path, USER, USER, follow_symlinks=False)
    return path


def run_folder(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    runs.mkdir()
    run = runs / "r1"
    (run / "out").mkdir(parents=True)
    as_user(run)
    as_user(run / "out")
    return run


def sparse(path: Path, size: int, data: bytes = b"x" * 4096) -> Path:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.truncate(size)
    return as_user(path)


def foreign_run(
    root: Path, tmp_path: Path, commands: list[str], **template: Any
) -> tuple[Any, dict[str, Any]]:
    """A site in ``root`` with one run of ``commands`` (a one-step template with the
    top-level keys ``template`` adds, a ``score`` result by default) that another user
    (:data:`USER`) asked for, run to its end by a root daemon: the site (the caller
    closes it) and the run as shown."""
    import yaml

    from flowbatch import api

    from .conftest import drop, make_site, run_until_idle, write_template

    doc = {
        "workflow": {"steps": [{"action": {"commands": commands}}]},
        "results": {
            "file": "results.json",
            "schema": [{"name": "score", "label": "S", "dtype": "float"}],
        },
        **template,
    }
    site = make_site(root / "site")
    write_template(tmp_path / "t", yaml.safe_dump(doc))
    api.install(site, tmp_path / "t", workflow_id="wf")
    os.chown(drop(site, "r.yaml", {"workflow": "wf"}), USER, USER)
    run_until_idle(site).stop()
    (run,) = api.list_runs(site)
    return site, api.show_run(site, run["id"])


def test_links_all_inside_the_folder_are_taken_once(tmp_path: Path) -> None:
    run = run_folder(tmp_path)
    big = sparse(run / "out" / "big", 1 << 30)
    for i in range(10):
        os.link(big, run / "out" / f"link{i}")
    assert takeback.take_back(run, USER).notes == []
    names = [run / "out" / "big", *(run / "out" / f"link{i}" for i in range(10))]
    inodes = {p.stat().st_ino for p in names}
    assert inodes == {big.stat().st_ino}  # no copy made: the same file, now the tree's
    assert big.stat().st_nlink == 11 and big.stat().st_uid == 0
    used = sum(p.stat().st_blocks for p in (run / "out").iterdir()) // 11
    assert used * 512 < 1 << 20


def test_a_file_with_a_name_outside_gets_one_copy_with_its_holes(tmp_path: Path) -> None:
    run = run_folder(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    as_user(home)
    kept = sparse(run / "out" / "kept", 1 << 30, b"result\n")
    os.link(kept, home / "keep")
    for i in range(3):
        os.link(kept, run / "out" / f"also{i}")
    assert takeback.take_back(run, USER).notes == []
    here = [run / "out" / "kept", *(run / "out" / f"also{i}" for i in range(3))]
    stats = [p.stat() for p in here]
    assert len({s.st_ino for s in stats}) == 1  # one copy for the four names
    assert stats[0].st_nlink == 4 and stats[0].st_uid == 0
    assert stats[0].st_size == 1 << 30 and stats[0].st_blocks * 512 < 1 << 20  # holes kept
    with open(run / "out" / "also2", "rb") as fh:
        assert fh.read(7) == b"result\n"
    theirs = (home / "keep").stat()
    assert theirs.st_uid == USER and theirs.st_ino != stats[0].st_ino and theirs.st_nlink == 1
    assert not [p for p in (run / "out").iterdir() if p.name.startswith(".")]


def test_copies_past_the_budget_remove_the_names_and_say_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(takeback, "TAKE_BACK_COPY_BYTES", 64 * 1024)
    run = run_folder(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    as_user(home)
    small = sparse(run / "out" / "a-small", 8192, b"s" * 8192)  # within the budget
    os.link(small, home / "small")
    large = sparse(run / "out" / "b-large", 1 << 20, b"L" * (1 << 20))  # past it
    os.link(large, home / "large")
    os.link(large, run / "out" / "b-large-too")
    taken = takeback.take_back(run, USER)
    notes = taken.notes
    assert taken.removed == {"out/b-large", "out/b-large-too"}
    assert (run / "out" / "a-small").stat().st_uid == 0
    assert not (run / "out" / "b-large").exists() and not (run / "out" / "b-large-too").exists()
    assert len(notes) == 1
    assert "out/b-large (1048576 bytes) also had a name outside the run folder" in notes[0]
    assert "2 name(s) here were removed" in notes[0]
    assert (home / "large").stat().st_uid == USER  # the user's own name stays theirs


def test_the_runs_messages_say_which_outputs_were_left_out(
    public_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real run of another user that keeps a second name of its output outside its
    folder, past the copy budget: the run ends with a message naming the output."""
    from flowbatch import api

    from .conftest import drop, make_site, run_until_idle, write_template

    monkeypatch.setattr(takeback, "TAKE_BACK_COPY_BYTES", 4096)
    outside = public_tmp / "outside"
    outside.mkdir()
    os.chown(outside, USER, USER)
    site = make_site(public_tmp / "site")
    write_template(
        tmp_path / "t",
        "workflow:\n  steps:\n    - action: {commands: ['head -c 65536 /dev/urandom > big.bin "
        f"&& ln big.bin {outside}/big.bin']}}\n",
    )
    api.install(site, tmp_path / "t", workflow_id="wf")
    path = drop(site, "r.yaml", {"workflow": "wf"})
    os.chown(path, USER, USER)
    run_until_idle(site).stop()
    (run,) = api.list_runs(site)
    shown = api.show_run(site, run["id"])
    assert run["state"] == "SUCCESS", shown["messages"]
    assert any(
        "output big.bin (65536 bytes) also had a name outside" in m for m in shown["messages"]
    )
    assert not (Path(shown["run_dir"]) / "big.bin").exists()
    assert (outside / "big.bin").stat().st_size == 65536  # the user's own name stays
    assert "big.bin" not in str(shown["files"]), shown["files"]
    site.close()


def test_holes_filled_while_copied_do_not_pass_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user still owns the file through its name outside and may fill its holes
    after the budget was checked on its blocks (found by review: 2.8 GiB written against
    a 1 GiB budget). The copy stops at the budget, and the names here go."""
    monkeypatch.setattr(takeback, "TAKE_BACK_COPY_BYTES", 1 << 20)
    run = run_folder(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    as_user(home)
    out = sparse(run / "out" / "big", 64 << 20, b"d" * 4096)  # 4 KiB of data: in budget
    os.link(out, home / "keep")
    real = takeback.copy_sparse

    def user_writes_first(fd_in: int, fd_out: int, **kw: object) -> int:
        with open(home / "keep", "r+b") as fh:  # the holes filled through the other name
            for i in range(8):
                fh.seek((8 + i) << 20)
                fh.write(os.urandom(1 << 20))
        return real(fd_in, fd_out, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(takeback, "copy_sparse", user_writes_first)
    taken = takeback.take_back(run, USER)
    assert taken.removed == {"out/big"} and "a copy of it would pass" in taken.notes[0]
    assert not (run / "out" / "big").exists()
    assert not [p for p in (run / "out").iterdir()]  # no copy left half-made


def test_copy_sparse_stops_at_its_bound(tmp_path: Path) -> None:
    from flowbatch.safeio import copy_sparse

    src = tmp_path / "src"
    src.write_bytes(os.urandom(3 << 20))
    dest = tmp_path / "dest"
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        with pytest.raises(OSError) as err:
            copy_sparse(fin.fileno(), fout.fileno(), max_written=1 << 20)
        assert err.value.errno == errno.EFBIG
    assert dest.stat().st_size <= 1 << 20
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        assert copy_sparse(fin.fileno(), fout.fileno(), max_written=4 << 20) == 3 << 20
    assert dest.read_bytes() == src.read_bytes()


def test_a_take_back_cut_short_is_done_whole_the_next_time(tmp_path: Path) -> None:
    """The folder is the tree's first, then what is in it: a daemon killed in between
    left the run's files its user's, and the next daemon's take-back, finding the folder
    the tree's, skipped them (found by review: the results were still the user's to
    change after the run ended)."""
    run = run_folder(tmp_path)
    result = run / "out" / "r.json"
    result.write_text('{"v": 1}', encoding="utf-8")
    as_user(result)
    os.chown(run, 0, 0)  # where the killed daemon stopped
    takeback.take_back(run, USER)
    assert result.stat().st_uid == 0 and (run / "out").stat().st_uid == 0
    assert not result.stat().st_mode & 0o022


def _user_may_write(path: Path) -> bool:
    """Whether the run's user may write ``path`` (a forked child as that user)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgroups([])
            os.setgid(USER)
            os.setuid(USER)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write("changed after the end\n")
            os._exit(0)
        except OSError:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def test_folders_past_the_depth_limit_are_closed_to_the_runs_user(public_tmp: Path) -> None:
    """Found by review: the walk stopped at 100 levels, and what was below stayed the
    run's user's to change (and to add links to) after the run ended."""
    run = run_folder(public_tmp)
    folder = run / "out"
    for _ in range(takeback.TAKE_BACK_DEPTH + 5):
        folder = folder / "d"
        folder.mkdir()
        as_user(folder)
    deep = folder / "f.txt"
    deep.write_text("as the run wrote it\n", encoding="utf-8")
    as_user(deep)
    shallow = run / "out" / "r.json"
    shallow.write_text("{}", encoding="utf-8")
    as_user(shallow)
    assert _user_may_write(folder / "probe")  # the user can, before the take-back
    taken = takeback.take_back(run, USER)
    assert not _user_may_write(deep)
    assert not _user_may_write(folder / "new")
    assert not _user_may_write(shallow)
    assert deep.read_text(encoding="utf-8") == "as the run wrote it\n"
    (note,) = taken.notes
    assert f"1 folder(s) more than {takeback.TAKE_BACK_DEPTH} levels deep" in note
    assert "the first under out/d/d/..." in note
    closed = run.joinpath("out", *["d"] * (takeback.TAKE_BACK_DEPTH - 1))  # depth 100
    assert closed.stat().st_uid == 0 and stat.S_IMODE(closed.stat().st_mode) == 0o700


def test_a_leftover_holding_the_result_file_open_changes_nothing_after_the_end(
    public_tmp: Path, tmp_path: Path
) -> None:
    """Found by review: a process of another user's run that left its group (setsid)
    held the result file open for writing and rewrote it after the run's SUCCESS; the
    take-back's chown does not revoke an open descriptor, and the post-processing read
    the rewritten file. The result file now gets a copy of its own at the take-back:
    the leftover writes to a file no name reaches."""
    import time

    leftover = (
        "import os, time; f = open('results.json', 'r+'); "
        "open('leftover.pid', 'w').write(str(os.getpid())); time.sleep(2); "
        "f.seek(0); f.truncate(); f.write('{\"score\": 1e9}'); f.close()"
    )
    commands = [
        """echo '{"score": 1}' > results.json""",
        f'setsid python3 -c "{leftover}" </dev/null >/dev/null 2>&1 &',
        "while [ ! -s leftover.pid ]; do sleep 0.05; done",
    ]
    site, shown = foreign_run(public_tmp, tmp_path, commands)
    assert shown["state"] == "SUCCESS", shown["messages"]
    folder = Path(shown["run_dir"])
    pid = int((folder / "leftover.pid").read_text())
    deadline = time.monotonic() + 20
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists(), "the leftover never ended"
    assert (folder / "results.json").read_text() == '{"score": 1}\n'
    assert (folder / "results.json").stat().st_uid == os.geteuid()
    assert shown["results"]["score"] == 1.0
    site.close()


def test_links_out_of_the_run_folder_and_fifos_are_removed_at_its_end(
    public_tmp: Path, tmp_path: Path
) -> None:
    """Found by review: ``results.json -> /etc/shadow`` and a FIFO stayed in the results
    tree after the run's end, the tree's to serve (a web server following links) and to
    read (a backup blocks on the FIFO). They are removed at the take-back, and the run's
    messages say so; a link that stays inside the run folder stands."""
    deep = "/".join(["p"] * 20) + "/" + "/".join([".."] * 20)
    commands = [
        "mkdir -p data sub && echo x > data/x && ln -s /etc/shadow results.json",
        "mkfifo pipe && ln -s ../../../.. sub/up && ln -s ../data/x sub/inside",
        # by its text it stays inside; resolved, p is the folder and .. leaves it
        f"ln -s . p && ln -s {deep}/etc/passwd leak",
        # the daemon's own names at the top: a link and a FIFO there go too
        "rm -f request.yaml && ln -s /etc/passwd request.yaml",
    ]
    site, shown = foreign_run(public_tmp, tmp_path, commands)
    assert shown["state"] == "ERROR"  # its result file was a link: refused, as before
    folder = Path(shown["run_dir"])
    for gone in ("results.json", "pipe", "sub/up", "leak", "request.yaml"):
        assert not os.path.lexists(folder / gone), gone
    assert os.readlink(folder / "sub" / "inside") == "../data/x"
    assert os.readlink(folder / "p") == "."  # a loop inside stands
    assert any("link(s) leading out of the run folder" in m for m in shown["messages"])
    site.close()


@pytest.mark.parametrize("bound", ["fresh copy", "links' budget"])
def test_a_large_result_or_post_processing_input_is_taken_not_removed(
    public_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bound: str
) -> None:
    """Found by the re-review: the copy a result file or a post-processing input gets
    counted against the budget of files with names outside, and past it the file was
    removed ("also had a name outside"): the post-processing then failed for the whole
    workflow. Past :data:`takeback.FRESH_COPY_BYTES` (or the budget) it is only taken."""
    if bound == "fresh copy":
        monkeypatch.setattr(takeback, "FRESH_COPY_BYTES", 4096)
    else:
        monkeypatch.setattr(takeback, "TAKE_BACK_COPY_BYTES", 4096)
    commands = [
        "head -c 65536 /dev/urandom > pred.bin",
        """printf '{"score": 1, "pad": "%s"}' "$(head -c 8000 /dev/zero | tr '\\0' x)" \\
        > results.json""",
    ]
    postproc = {
        "workflow": {"steps": [{"action": {"commands": ["ls $[[runs]] > seen.txt"]}}]},
        "inputs": {"files": ["pred.bin"]},
    }
    site, shown = foreign_run(public_tmp, tmp_path, commands, postproc=postproc)
    assert shown["state"] == "SUCCESS", shown["messages"]
    folder = Path(shown["run_dir"])
    for name in ("pred.bin", "results.json"):
        assert (folder / name).stat().st_uid == os.geteuid(), name  # taken, still there
    assert (folder / "pred.bin").stat().st_size == 65536
    assert not any("name outside" in m for m in shown["messages"]), shown["messages"]
    site.close()


def test_results_are_read_from_the_folder_once_it_is_taken_back(
    public_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The result file is read after the take-back, not before: a process of the run
    still going (setsid) could change it between the read and the take-back's copy, the
    leaderboard showing one score and the post-processing reading another (found by
    review). When the daemon reads it, the folder and the file are the tree's, and the
    file is the copy the take-back made, which no process of the run holds open."""
    from flowbatch import lifecycle

    seen: list[tuple[int, int]] = []
    real = lifecycle.read_results

    def reading(run_dir: Path, spec: Any) -> Any:
        result = run_dir / spec.file
        seen.append((os.stat(run_dir).st_uid, os.stat(result).st_uid))
        return real(run_dir, spec)

    monkeypatch.setattr(lifecycle, "read_results", reading)
    site, run = foreign_run(public_tmp, tmp_path, ["""echo '{"score": 2}' > results.json"""])
    site.close()
    assert run["state"] == "SUCCESS", run["messages"]
    assert run["results"] == {"score": 2}
    assert seen == [(0, 0)]  # read once, from what the take-back gave the tree
