"""A participant at the site's commands: another Unix user (uid 65534 here, ``nobody``),
who may read the site the daemon's user (root here) owns but not write it.

Their read commands open the index read-only, with a daemon running (its -wal and -shm
there) and without (neither there, and no right to make them); commands that write are
refused at once in one line naming the site's owner; errors never send them to run
``reindex``, which only the owner may; a cancel the daemon would refuse is refused at once.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowbatch import api
from flowbatch.queue import Intake
from flowbatch.site import Site

from .conftest import REPO, SCORE_TEMPLATE, drop, make_site, write_template

PARTICIPANT = 65534  # nobody
#: the participant's interpreter: the venv's links into /root, which others cannot enter;
#: the system's, of the same version, with the venv's packages on its path
PYTHON = Path("/usr/bin/python3")


def participant(
    site_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``flowbatch --site SITE ARGS`` as the participant (uid and gid 65534, no other
    groups), from a folder that is no site."""
    path = os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"]])
    base = {"PATH": "/usr/bin:/bin", "PYTHONPATH": path, "HOME": "/nonexistent", "LANG": "C.UTF-8"}
    return subprocess.run(
        [str(PYTHON), "-m", "flowbatch", "--site", str(site_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **(env or {})},
        cwd="/",
        user=PARTICIPANT,
        group=PARTICIPANT,
        extra_groups=[],
    )


def as_root(site_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowbatch", "--site", str(site_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def _participant_python() -> None:
    if os.geteuid() != 0:
        pytest.skip("runs commands as another user")
    if not PYTHON.exists():
        pytest.skip(f"no {PYTHON}")
    probe = subprocess.run(
        [str(PYTHON), "-c", "import flowbatch.cli, peewee, pydantic"],
        capture_output=True,
        env={"PYTHONPATH": os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"]])},
        cwd="/",
        user=PARTICIPANT,
        group=PARTICIPANT,
        extra_groups=[],
    )
    if probe.returncode != 0:
        pytest.skip(f"{PYTHON} cannot run flowbatch as uid {PARTICIPANT}")


@pytest.fixture
def root_site(public_tmp: Path, tmp_path: Path, _participant_python: None) -> Iterator[Path]:
    """A site of root's with workflow ``wf`` (ranked by score) installed; its queue may be
    written by everyone (sticky), as a site open to all users of the machine."""
    site_dir = public_tmp / "site"
    # the tests drop their requests as root (the participant only reads)
    site = make_site(site_dir, {"root_requests": True})
    api.install(site, write_template(tmp_path / "t", SCORE_TEMPLATE), workflow_id="wf")
    site.close()
    site.layout.queue.chmod(0o1777)
    yield site_dir


def _index_files(site_dir: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in site_dir.glob("index.db*")}


def _successes(site_dir: Path) -> int:
    count = 0
    for path in (site_dir / "results" / "wf" / "runs").glob("*/run.json"):
        try:
            count += json.loads(path.read_text())["state"] == "SUCCESS"
        except (OSError, ValueError):
            pass
    return count


def _reads(site_dir: Path, runs: int) -> None:
    """The participant's read commands of docs/participants.md all work, and see ``runs``."""
    done = participant(site_dir, "runs", "list", "--json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert [r["state"] for r in listed] == ["SUCCESS"] * runs
    done = participant(site_dir, "ranking", "wf", "--all", "--json")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["ranking"]) == runs
    done = participant(site_dir, "workflows", "list", "--json")
    assert done.returncode == 0, done.stderr
    assert [w["id"] for w in json.loads(done.stdout)] == ["wf"]
    done = participant(site_dir, "runs", "show", listed[-1]["id"], "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "SUCCESS"
    done = participant(site_dir, "workflows", "show", "wf")
    assert done.returncode == 0, done.stderr


def test_participant_reads_the_index_with_and_without_a_daemon(root_site: Path) -> None:
    """They failed whenever no daemon ran ("attempt to write a readonly database. run
    `flowbatch reindex`"): the WAL pragma on a read-write open, and SQLite's -wal/-shm
    files that a user who may not write the folder cannot make."""
    site = Site(root_site)
    drop(site, "a.yaml", {"workflow": "wf", "name": "a", "arguments": {"score": 1.0}})
    done = as_root(root_site, "daemon", "--until-idle")
    assert done.returncode == 0, done.stderr
    # no daemon: only the index file, which the participant may not write nor its folder
    before = _index_files(root_site)
    assert list(before) == ["index.db"]
    _reads(root_site, 1)
    assert _index_files(root_site) == before  # nothing written, nothing made beside it

    daemon = subprocess.Popen(
        [sys.executable, "-m", "flowbatch", "--site", str(root_site), "daemon"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        drop(site, "b.yaml", {"workflow": "wf", "name": "b", "arguments": {"score": 2.0}})
        deadline = time.monotonic() + 60
        while _successes(root_site) < 2 or not (root_site / "index.db-wal").exists():
            assert daemon.poll() is None, daemon.communicate()[1]
            assert time.monotonic() < deadline, "the daemon did not run b"
            time.sleep(0.1)
        # the daemon has the index open (-wal, -shm, both root's): b's rows may be in
        # the -wal alone, which a read-only open must read
        _reads(root_site, 2)
    finally:
        daemon.terminate()
        _, err = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, err
    assert list(_index_files(root_site)) == ["index.db"]  # the daemon's end removed them
    _reads(root_site, 2)
    site.close()


def _older_schema(index: Path) -> None:
    with sqlite3.connect(index) as conn:
        conn.execute("UPDATE meta_row SET value = '2' WHERE key = 'schema_version'")


@pytest.mark.parametrize(
    ("case", "said"),
    [
        ("missing", "there is no index database yet, and this user may not make it"),
        ("older", "the index is at schema version 2, older than this flowbatch"),
        ("not a database", "the index database cannot be read: file is not a database"),
    ],
)
def test_a_participant_is_sent_to_the_owner_not_to_reindex(
    root_site: Path, case: str, said: str
) -> None:
    """An index they cannot use: what is wrong and who can fix it (the site's owner),
    never `flowbatch reindex`, which they cannot run; nothing is made or changed."""
    index = root_site / "index.db"
    if case == "missing":
        index.unlink()
    elif case == "older":
        _older_schema(index)
    else:
        index.write_bytes(b"not a database" * 1000)
    before = _index_files(root_site)
    done = participant(root_site, "runs", "list")
    assert done.returncode == 1
    assert said in done.stderr and "site's owner (root)" in done.stderr, done.stderr
    assert "reindex" not in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert _index_files(root_site) == before


@pytest.mark.parametrize(
    ("args", "folder"),
    [
        (("report",), "results"),
        (("report", "wf"), "results"),
        (("reindex",), ""),
        (("daemon", "--once"), ""),
        (("install", "TEMPLATE", "--id", "wf2"), "templates"),
        (("uninstall", "wf"), "templates"),
        (("runs", "delete", "RUN"), "results"),
        (("cleanup", "--before", "2100-01-01"), "results"),
    ],
)
def test_commands_that_write_refuse_a_participant_in_one_line(
    root_site: Path, public_tmp: Path, args: tuple[str, ...], folder: str
) -> None:
    """`flowbatch report` printed a traceback per workflow (PermissionError), `daemon`
    told them to chown the queue's folders, the others said a PermissionError: each now
    says, in one line, what needs write access and who may run it, and writes nothing."""
    site = Site(root_site)
    drop(site, "a.yaml", {"workflow": "wf", "arguments": {"score": 1.0}})
    done = as_root(root_site, "daemon", "--until-idle")
    assert done.returncode == 0, done.stderr
    run_id = api.list_runs(site)[0]["id"]
    site.close()
    template = write_template(public_tmp / "t2", SCORE_TEMPLATE)  # one they may read
    command = " ".join(args[:2] if args[0] == "runs" else args[:1])
    args = tuple({"RUN": run_id, "TEMPLATE": str(template)}.get(a, a) for a in args)
    files = sorted(str(p.relative_to(root_site)) for p in root_site.rglob("*"))
    done = participant(root_site, *args)
    assert done.returncode == 1
    where = root_site / folder if folder else root_site
    assert done.stderr == (
        f"Error: `flowbatch {command}` needs write access to {where}: run it as the "
        "site's owner (root)\n"
    )
    assert done.stdout == ""
    assert sorted(str(p.relative_to(root_site)) for p in root_site.rglob("*")) == files


def test_an_unknown_sqlite_url_option_is_one_line(tmp_path: Path) -> None:
    """`sqlite:///index.db?foo=1` printed the TypeError of Python's sqlite3 with its
    traceback, at the first query."""
    site = make_site(tmp_path / "site")
    site.close()
    url = f"sqlite:///{tmp_path / 'site' / 'index.db'}?foo=1"
    done = subprocess.run(
        [sys.executable, "-m", "flowbatch", "--site", str(site.root), "runs", "list"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FLOWBATCH_DATABASE": url},
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith(f"Error: {url}: the index database URL has an option SQLite")
    assert "'foo'" in done.stderr and "FLOWBATCH_DATABASE" in done.stderr


def test_a_cancel_the_daemon_would_refuse_is_refused_at_once(root_site: Path) -> None:
    """A participant's cancel of root's run said "cancel queued ... the daemon applies
    it" and exited 0; the daemon then refused it. Now the daemon's own check refuses it
    at once (exit 1, the daemon's words) and nothing is queued; their own run's cancel
    is queued as before."""
    site = Site(root_site)
    drop(site, "root.yaml", {"workflow": "wf", "arguments": {"score": 1.0}})
    theirs = drop(site, "theirs.yaml", {"workflow": "wf", "arguments": {"score": 2.0}})
    os.chown(theirs, PARTICIPANT, PARTICIPANT)
    taken = {run.owner_uid: run for run in Intake(site).run_once().runs}
    site.close()
    roots, own = taken[0], taken[PARTICIPANT]
    assert roots.state.value == own.state.value == "PENDING"

    done = participant(root_site, "runs", "cancel", roots.id, "--wait", "0")
    assert done.returncode == 1, done.stdout
    assert done.stderr == (
        f"Error: run {roots.id} belongs to root; only its owner or root may cancel it\n"
    )
    assert list(site.layout.queue.glob("cancel-*.yaml")) == []

    done = participant(root_site, "runs", "cancel", own.id, "--wait", "0")
    assert done.returncode == 0, done.stderr
    assert "cancel queued" in done.stdout
    (queued,) = site.layout.queue.glob("cancel-*.yaml")
    assert queued.stat().st_uid == PARTICIPANT


def test_participant_reads_through_a_sqlite_url(root_site: Path) -> None:
    """`database: sqlite:///...` (here FLOWBATCH_DATABASE) opens the same file read-only."""
    site = Site(root_site)
    drop(site, "a.yaml", {"workflow": "wf", "arguments": {"score": 1.0}})
    done = as_root(root_site, "daemon", "--until-idle")
    site.close()
    assert done.returncode == 0, done.stderr
    url = f"sqlite:///{root_site / 'index.db'}?timeout=5"
    done = participant(root_site, "runs", "list", "--json", env={"FLOWBATCH_DATABASE": url})
    assert done.returncode == 0, done.stderr
    assert [r["state"] for r in json.loads(done.stdout)] == ["SUCCESS"]
    assert list(_index_files(root_site)) == ["index.db"]


#: the participant's side of the next test: a read with no writer, a read once one runs
_READER = """
import sys, time
from pathlib import Path
from flowbatch.store.index import ReadOnlySqlite
db = ReadOnlySqlite(sys.argv[1], timeout=10)
print(db.execute_sql("SELECT count(*) FROM t").fetchone()[0], db.flowbatch_open_mode)
sys.stdout.flush()
while not Path(sys.argv[2]).exists():
    time.sleep(0.02)
print(db.execute_sql("SELECT count(*) FROM t").fetchone()[0], db.flowbatch_open_mode)
"""


def _reader_of_a_new_index(public_tmp: Path, flag: Path) -> tuple[Path, subprocess.Popen[str]]:
    """An index in WAL mode with one row and no -wal, and the participant's process that
    reads it (:data:`_READER`) until ``flag`` is there: the index's path and the reader,
    which has printed its first count."""
    folder = public_tmp / "db"
    folder.mkdir(mode=0o755)
    path = folder / "index.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=wal")
        conn.execute("CREATE TABLE t (a)")
        conn.execute("INSERT INTO t VALUES (1)")
    conn.close()
    assert sorted(p.name for p in folder.iterdir()) == ["index.db"]
    reader = subprocess.Popen(
        [str(PYTHON), "-c", _READER, str(path), str(flag)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"]])},
        cwd="/",
        user=PARTICIPANT,
        group=PARTICIPANT,
        extra_groups=[],
    )
    assert reader.stdout is not None
    assert reader.stdout.readline().split() == ["1", "immutable=1"]
    return path, reader


def test_a_read_only_index_opened_as_is_sees_a_writer_that_starts(
    public_tmp: Path, _participant_python: None
) -> None:
    """Without a writer the file is read immutable (no -shm can be made); a writer that
    starts later writes to its -wal, which such a connection never reads: the next query
    opens the file again, through SQLite's locks, and sees the writer's rows."""
    flag = public_tmp / "writer-started"
    path, reader = _reader_of_a_new_index(public_tmp, flag)
    try:
        writer = sqlite3.connect(path, isolation_level=None)
        writer.execute("PRAGMA journal_mode=wal")
        writer.execute("INSERT INTO t VALUES (2)")  # into the -wal: the writer keeps it open
        assert path.with_name("index.db-wal").exists()
        flag.touch()
        out, err = reader.communicate(timeout=60)
        writer.close()
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert reader.returncode == 0, err
    assert out.split() == ["2", "mode=ro"]


def test_a_read_only_index_opened_as_is_sees_a_writer_that_came_and_went(
    public_tmp: Path, _participant_python: None
) -> None:
    """Found by review: a writer that started and stopped between two queries (a cron
    tick, `daemon --until-idle`) leaves no -wal, but changed the file under the immutable
    connection: counts that disagreed with the rows, "database disk image is malformed".
    The next query opens the file again."""
    flag = public_tmp / "writer-gone"
    path, reader = _reader_of_a_new_index(public_tmp, flag)
    try:
        writer = sqlite3.connect(path, isolation_level=None)
        writer.execute("PRAGMA journal_mode=wal")
        writer.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(2, 2001)])
        writer.close()  # checkpointed, its -wal removed: as a daemon that stopped
        assert not path.with_name("index.db-wal").exists()
        flag.touch()
        out, err = reader.communicate(timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert reader.returncode == 0, err
    assert out.split() == ["2000", "immutable=1"]


def test_doctor_as_a_participant_checks_what_a_participant_needs(root_site: Path) -> None:
    """A participant's doctor does not fail a working site for the folders only the
    daemon's user writes: results/ and templates/ are to be readable by them, queue/
    writable (they queue requests there); one they cannot write is a failure that says
    whom to ask and what to change."""
    out = participant(root_site, "doctor", "--json")
    checks = {c["check"]: c for c in json.loads(out.stdout)}
    assert out.returncode == 0, out.stdout + out.stderr
    assert checks["queue/"]["status"] == "ok"
    for name in ("results/", "templates/"):
        assert checks[name]["status"] == "ok", checks[name]
        assert "readable (written by the daemon's user root)" in checks[name]["detail"]
    (root_site / "queue").chmod(0o1755)  # participants may no longer queue requests
    out = participant(root_site, "doctor", "--json")
    checks = {c["check"]: c for c in json.loads(out.stdout)}
    assert out.returncode != 0 and checks["queue/"]["status"] == "fail"
    assert (
        "you (nobody) cannot queue requests on this site: ask its admin (root"
        in (checks["queue/"]["detail"])
    )
    queue = root_site / "queue"
    assert f"chgrp GROUP {queue} && chmod 1770 {queue}" in checks["queue/"]["detail"]
    mine = {c["check"]: c for c in json.loads(as_root(root_site, "doctor", "--json").stdout)}
    assert all(mine[f"{name}/"]["detail"].endswith("writable") for name in ("queue", "results"))


def test_a_participant_submits_and_waits_for_their_runs(root_site: Path, public_tmp: Path) -> None:
    """`submit --wait` as a participant against a root daemon: the wait reads the queue's
    claims and the index read-only, prints the run as it ended, exits 0."""
    mine = public_tmp / "mine"
    mine.mkdir()
    (mine / "req.yaml").write_text("workflow: wf\nname: p\narguments:\n  score: 4.5\n")
    os.chown(mine, PARTICIPANT, PARTICIPANT)
    os.chown(mine / "req.yaml", PARTICIPANT, PARTICIPANT)
    daemon = subprocess.Popen(
        [sys.executable, "-m", "flowbatch", "--site", str(root_site), "daemon"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        done = participant(root_site, "submit", "--wait", "--timeout", "90", str(mine / "req.yaml"))
    finally:
        daemon.terminate()
        _, err = daemon.communicate(timeout=60)
    assert done.returncode == 0, (done.stdout, done.stderr, err)
    name = done.stdout.splitlines()[0]
    assert "claimed by the daemon" in done.stderr and ": SUCCESS" in done.stderr
    listed = json.loads(participant(root_site, "runs", "list", "-r", name, "--json").stdout)
    assert [(r["state"], r["owner"]) for r in listed] == [("SUCCESS", "nobody")]


def test_a_request_its_daemon_may_not_read_is_an_ordinary_rejection(
    public_tmp: Path, tmp_path: Path, _participant_python: None
) -> None:
    """A service user's daemon (here uid 65534 serving its own site) and a request file
    it may not read (mode 0200): rejected saying so and how to fix it; before, an
    "internal error ... this is a flowbatch bug" with a traceback in the log (found by
    review)."""
    site_dir = public_tmp / "svc"
    site = make_site(site_dir)
    api.install(site, write_template(tmp_path / "t", SCORE_TEMPLATE), workflow_id="wf")
    site.close()
    for path in [site_dir, *site_dir.rglob("*")]:
        os.chown(path, PARTICIPANT, PARTICIPANT, follow_symlinks=False)
    request = site_dir / "queue" / "private.yaml"
    request.write_text("workflow: wf\narguments:\n  score: 1\n")
    os.chown(request, PARTICIPANT, PARTICIPANT)
    request.chmod(0o200)
    done = participant(site_dir, "daemon", "--until-idle")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    error = (site_dir / "queue" / "rejected" / "private.yaml.error.yaml").read_text()
    assert "may not read the request file (mode 0200" in error and "chmod a+r" in error
    assert "bug" not in error


def test_a_participant_who_may_not_queue_is_told_what_to_ask_for(
    root_site: Path, tmp_path: Path
) -> None:
    """A bare "PermissionError: [Errno 13] Permission denied: '.../queue/.r-46526d.files.tmp'"
    (found by review): `submit` says what `doctor` says."""
    Path(root_site, "queue").chmod(0o1770)
    request = Path(tempfile.mkdtemp(prefix="fb-req-", dir="/tmp"))
    try:
        request.chmod(0o755)
        (request / "r.yaml").write_text("workflow: wf\narguments: {score: 1}\n", encoding="utf-8")
        (request / "r.yaml").chmod(0o644)
        done = participant(root_site, "submit", str(request / "r.yaml"))
        assert done.returncode == 1, done
        assert "cannot queue requests on this site" in done.stderr, done.stderr
        assert "ask its admin (root" in done.stderr and "PermissionError" not in done.stderr
        assert "chmod 1770" in done.stderr and "docs/" not in done.stderr  # not installed
    finally:
        shutil.rmtree(request, ignore_errors=True)


def test_a_private_requests_error_is_as_private_as_the_request(root_site: Path) -> None:
    """Found by review: the error file of a participant's 0600 request, which quoted the
    value that failed its check, was root's and everyone's to read. It is now the
    request's user's, readable by whom the request was; the participant's wait reads it,
    and another user's error file of that name does not answer for their request."""
    from .conftest import run_until_idle

    queue = root_site / "queue"
    for name, mode in (("private.yaml", 0o600), ("open.yaml", 0o644)):
        path = queue / name
        path.write_text("workflow: wf\narguments:\n  score: hunter2-token\n")
        os.chown(path, PARTICIPANT, PARTICIPANT)
        path.chmod(mode)
    site = Site(root_site)
    try:
        run_until_idle(site).stop()
    finally:
        site.close()
    rejected = queue / "rejected"
    private = (rejected / "private.yaml.error.yaml").stat()
    assert (private.st_uid, stat.S_IMODE(private.st_mode)) == (PARTICIPANT, 0o600)
    assert "hunter2-token" in (rejected / "private.yaml.error.yaml").read_text()
    opened = (rejected / "open.yaml.error.yaml").stat()
    assert (opened.st_uid, stat.S_IMODE(opened.st_mode)) == (PARTICIPANT, 0o644)
    waited = participant(root_site, "runs", "wait", "--request", "private.yaml", "--timeout", "5")
    assert waited.returncode == 1 and "rejected" in waited.stderr + waited.stdout, waited
    assert "hunter2-token" in waited.stderr + waited.stdout
    # another user's error file (of their request `mine.1.yaml`), which they edited to
    # name the participant's `mine.yaml`, does not answer for it
    forged = rejected / "mine.1.yaml.error.yaml"
    forged.write_text((rejected / "open.yaml.error.yaml").read_text().replace("open", "mine"))
    os.chown(forged, 12345, 12345)
    for wait in (participant, as_root):  # root's wait too (found by the re-review)
        waited = wait(root_site, "runs", "wait", "--request", "mine.yaml", "--timeout", "2")
        assert "hunter2-token" not in waited.stderr + waited.stdout, waited
        assert "not rejected, and no run came from it" in waited.stderr, waited
    # root's wait for a request it did not see queued: the error file of its very name,
    # whose user owns the rejected request too
    waited = as_root(root_site, "runs", "wait", "--request", "private.yaml", "--timeout", "5")
    assert waited.returncode == 1 and "hunter2-token" in waited.stderr, waited
    # a request rejected again after a crash between its two writes (its error file
    # alone there, its user's) takes its own name, not `private.1.yaml`
    (rejected / "private.yaml").rename(queue / "private.yaml")
    site = Site(root_site)
    try:
        run_until_idle(site).stop()
    finally:
        site.close()
    assert not (rejected / "private.1.yaml").exists()
    assert (rejected / "private.yaml").stat().st_uid == PARTICIPANT


def test_a_service_users_daemon_leaves_error_files_its_participants_can_read(
    public_tmp: Path, tmp_path: Path, _participant_python: None
) -> None:
    """Found by the re-review: a service user's daemon (here uid 65534) cannot give an
    error file to the request's user; copying the request's mode (0600) left the user
    unable to read why it was refused. Such a daemon writes them readable by all."""
    from .test_robust import _user

    user = _user("fbtest")
    site_dir = public_tmp / "svc"
    site = make_site(site_dir, {"allowed_users": ["fbtest"]})
    api.install(site, write_template(tmp_path / "t", SCORE_TEMPLATE), workflow_id="wf")
    site.close()
    for path in [site_dir, *site_dir.rglob("*")]:
        os.chown(path, PARTICIPANT, PARTICIPANT, follow_symlinks=False)
    (site_dir / "queue").chmod(0o1777)
    request = site_dir / "queue" / "private.yaml"
    request.write_text("workflow: wf\narguments:\n  score: 1\n")
    os.chown(request, user.pw_uid, user.pw_gid)
    request.chmod(0o600)
    done = participant(site_dir, "daemon", "--until-idle")
    assert done.returncode == 0, done.stderr
    error = (site_dir / "queue" / "rejected" / "private.yaml.error.yaml").stat()
    assert (error.st_uid, stat.S_IMODE(error.st_mode)) == (PARTICIPANT, 0o644)


def test_init_where_its_user_may_not_make_the_folder_says_what_to_do(
    public_tmp: Path, _participant_python: None
) -> None:
    """Found by review: admins.md's `sudo -u flowbatch flowbatch --site /srv/flowbatch
    init` under a root-owned /srv ended in a bare PermissionError."""
    done = participant(public_tmp / "srv" / "site", "init")
    assert done.returncode == 1
    assert f"cannot create the site folder {public_tmp / 'srv' / 'site'}" in done.stderr
    assert f"{public_tmp} is not writable by nobody" in done.stderr
    assert f"install -d -o nobody {public_tmp / 'srv' / 'site'}" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_archive_of_a_file_the_owner_may_not_read_says_so(
    root_site: Path, public_tmp: Path
) -> None:
    """Found by review: a run whose output (its private input) became the site's 0600
    file at its end made `runs archive` by its owner end in a bare PermissionError."""
    from .conftest import run_until_idle

    request = root_site / "queue" / "mine.yaml"
    request.write_text("workflow: wf\narguments:\n  score: 2\n")
    os.chown(request, PARTICIPANT, PARTICIPANT)
    site = Site(root_site)
    try:
        run_until_idle(site).stop()
        (run,) = api.list_runs(site)
        (Path(api.show_run(site, run["id"])["run_dir"]) / "r.json").chmod(0o600)
    finally:
        site.close()
    out = public_tmp / "out"
    out.mkdir()
    os.chown(out, PARTICIPANT, PARTICIPANT)
    done = participant(root_site, "runs", "archive", run["id"], "-o", str(out))
    assert done.returncode == 1, done
    assert "output file 'r.json' is not readable by you (mode 0600" in done.stderr
    assert "PermissionError" not in done.stderr and "Traceback" not in done.stderr


def test_a_file_the_daemons_user_cannot_read_is_rejected_with_what_to_do(
    public_tmp: Path,
) -> None:
    """Found by review: a participant's private input (umask 077) on a site whose daemon
    runs as a service user was rejected with "Permission denied" and no word on what to
    do. The rejection names the user who must read it and how."""
    folder = public_tmp / "req"
    folder.mkdir()
    folder.chmod(0o755)
    (folder / "names.txt").write_text("private\n")
    (folder / "names.txt").chmod(0o600)  # root's, as a participant's private file is theirs
    code = (
        "from pathlib import Path\n"
        "from flowbatch.queue import open_inside\n"
        "from flowbatch.errors import FlowbatchError\n"
        "try:\n"
        f"    open_inside(Path({str(folder)!r}), 'names.txt', label='r.yaml', field='arguments.n')\n"
        "except FlowbatchError as exc:\n"
        "    print(exc.summary())\n"
    )
    out = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            sys.executable,
            "-c",
            code,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert "Permission denied" in out.stdout, out
    assert "nobody cannot read it" in out.stdout and "chmod o+r" in out.stdout, out.stdout


def test_a_participant_is_refused_the_index_a_copy_of_the_site_shares(
    root_site: Path, public_tmp: Path
) -> None:
    """A copy of the site whose `database:` names the first site's index (read-only for
    the participant) is refused to them as to its owner, nothing written; a copy with its
    own index.db reads as the first site did (its owner gives it its own id later)."""
    from flowbatch.store.siteid import read_site_id

    site = Site(root_site)
    drop(site, "a.yaml", {"workflow": "wf", "arguments": {"score": 1.0}})
    done = as_root(root_site, "daemon", "--until-idle")
    site.close()
    assert done.returncode == 0, done.stderr
    copy = public_tmp / "copy"
    shutil.copytree(root_site, copy, symlinks=True)
    before = _index_files(root_site)
    url = f"sqlite:///{root_site / 'index.db'}"
    done = participant(copy, "runs", "list", env={"FLOWBATCH_DATABASE": url})
    assert done.returncode == 1
    assert f"belongs to the site at {root_site}" in done.stderr
    assert "is a copy of it" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert _index_files(root_site) == before
    _reads(copy, 1)
    assert read_site_id(copy) == read_site_id(root_site)  # the participant writes nothing
