"""A site folder copied whole (cp -a, rsync) whose ``database:`` names an index outside
the copy (an absolute SQLite path into the first site, a PostgreSQL URL) must not write
into the first site's index: both rankings showed both sites' runs, and a reindex of one
emptied the other's (found by review). The index records its site (flowbatch.store.siteid):
a copy is refused, saying so; a move is followed; a copy with its own ``index.db`` works
as before, with an id of its own; an index made before the record is adopted.

Each test runs on SQLite files and on the real PostgreSQL test server."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowbatch import api
from flowbatch.daemon import Daemon, run_daemon
from flowbatch.errors import IndexError_
from flowbatch.site import Site
from flowbatch.store import siteid
from flowbatch.store.index import open_database

from .conftest import EXAMPLES, drop, lock_held, make_site, run_until_idle, write_template
from .services.postgres import USER
from .test_robust import fb


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        request.getfixturevalue("postgres_server")  # skipped here when there is none
    return str(request.param)


@pytest.fixture
def index_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """An index URL that names no file inside a site folder that uses it: an SQLite
    file of its own, or a PostgreSQL database whose URL has a password (hidden in
    every message)."""
    if backend == "sqlite":
        (tmp_path / "shared").mkdir()
        yield f"sqlite:///{tmp_path / 'shared' / 'index.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
        yield url.replace(f"//{USER}@", f"//{USER}:s3cret@")


def _site_with_runs(root: Path, url: str | None, names: tuple[str, ...] = ("a", "b")) -> Site:
    site = make_site(root, {"database": url} if url else None)
    api.install(site, EXAMPLES / "helloworld", workflow_id="helloworld")
    for name in names:
        drop(site, f"{name}.yaml", {"workflow": "helloworld", "name": name, "group": name})
    run_until_idle(site)
    site.close()
    return site


def _names(root: Path) -> list[str]:
    site = Site(root)
    try:
        return sorted(str(r["name"]) for r in api.list_runs(site))
    finally:
        site.close()


def _record(url: str | None, root: Path) -> tuple[str | None, Path | None]:
    db = open_database(url, root / "index.db")
    try:
        return siteid.read_record(db)
    finally:
        db.close()


def _say_refused(text: str, first: Path, copy: Path) -> None:
    """What the refusal of ``copy`` must say: whose index, why, and the two ways out."""
    assert f"belongs to the site at {first}" in text and "is a copy of it" in text
    assert str(copy) in text and "one index" in text
    assert "s3cret" not in text
    assert f"`database:` in {copy}/flowbatch.yaml" in text
    assert "flowbatch reindex --adopt" in text


def test_a_copy_naming_the_first_sites_index_is_refused(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    first = tmp_path / "first"
    if backend == "sqlite":  # an absolute path into the first site's own folder
        url = f"sqlite:///{first / 'index.db'}"
    else:
        url = request.getfixturevalue("index_url")
    _site_with_runs(first, url)
    copy = tmp_path / "copy"
    shutil.copytree(first, copy, symlinks=True)
    before = _record(url, first)

    out = fb(copy, "runs", "list", check=False)
    assert out.returncode == 1
    assert len(out.stderr.strip().splitlines()) == 1
    _say_refused(out.stderr, first, copy)
    if backend == "postgres":
        assert f"postgresql://{USER}:***@127.0.0.1:" in out.stderr
    # the copy's daemon takes nothing in: its request stays in its queue
    drop(Site(copy), "c.yaml", {"workflow": "helloworld", "name": "c", "group": "c"})
    with pytest.raises(IndexError_) as info:
        Daemon(Site(copy)).start()
    _say_refused(str(info.value), first, copy)
    assert (copy / "queue" / "c.yaml").exists()
    # nor does its reindex empty the first site's rows
    out = fb(copy, "reindex", check=False)
    assert out.returncode == 1 and "is a copy of it" in out.stderr
    doctor = fb(copy, "doctor", check=False)
    assert doctor.returncode == 1
    line = next(x for x in doctor.stdout.splitlines() if x.startswith("index owner"))
    assert "fail" in line and "is a copy of it" in line
    # the first site is untouched, and its own
    assert _names(first) == ["a", "b"]
    assert _record(url, first) == before == (siteid.read_site_id(first), first)
    line = next(x for x in fb(first, "doctor").stdout.splitlines() if "index owner" in x)
    assert " ok " in line and "this site's" in line
    # the way out the message gives: an index of the copy's own
    if backend == "sqlite":  # its own copy of the file: its own at once
        own = f"sqlite:///{copy / 'index.db'}"
    else:  # a new database: built from the copy's tree by reindex
        own = request.getfixturevalue("postgres_server").create_database()
    (copy / "flowbatch.yaml").write_text(f"database: {own}\n", encoding="utf-8")
    if backend == "postgres":
        out = fb(copy, "runs", "list", check=False)
        assert out.returncode == 1 and "flowbatch reindex" in out.stderr
        fb(copy, "reindex")
    assert _names(copy) == ["a", "b"]
    assert siteid.read_site_id(copy) != siteid.read_site_id(first)
    assert _names(first) == ["a", "b"]


def test_a_moved_site_takes_its_index_along(tmp_path: Path, index_url: str) -> None:
    old = tmp_path / "old"
    _site_with_runs(old, index_url)
    site_id = siteid.read_site_id(old)
    new = tmp_path / "new"
    os.rename(old, new)
    assert _names(new) == ["a", "b"]
    assert _record(index_url, new) == (site_id, new)  # followed, with the same id
    site = Site(new)
    try:
        drop(site, "c.yaml", {"workflow": "helloworld", "name": "c", "group": "c"})
        run_until_idle(site)
        assert sorted(r["name"] for r in api.list_runs(site)) == ["a", "b", "c"]
    finally:
        site.close()
    # a new site made at the old place later is another site: the moved one is not a copy
    make_site(old).close()
    assert _names(new) == ["a", "b", "c"]


def test_a_copy_with_its_own_index_db_keeps_working_with_an_id_of_its_own(
    tmp_path: Path,
) -> None:
    first = tmp_path / "first"
    _site_with_runs(first, None)
    copy = tmp_path / "copy"
    shutil.copytree(first, copy, symlinks=True)
    out = fb(copy, "runs", "list")
    assert out.stderr == ""  # no prompt, no warning
    assert siteid.read_site_id(copy) != siteid.read_site_id(first)
    assert _record(None, copy) == (siteid.read_site_id(copy), copy)
    assert _record(None, first) == (siteid.read_site_id(first), first)
    # each goes its own way
    for root, name in ((first, "x"), (copy, "y")):
        site = Site(root)
        try:
            drop(site, f"{name}.yaml", {"workflow": "helloworld", "name": name, "group": name})
            run_until_idle(site)
        finally:
            site.close()
    assert _names(first) == ["a", "b", "x"]
    assert _names(copy) == ["a", "b", "y"]
    # and a reindex of the copy keeps its id
    copy_id = siteid.read_site_id(copy)
    fb(copy, "reindex")
    assert _record(None, copy) == (copy_id, copy)
    line = next(x for x in fb(copy, "doctor").stdout.splitlines() if "index owner" in x)
    assert " ok " in line and copy_id is not None and copy_id in line


def _as_an_older_flowbatch_left_it(url: str | None, root: Path) -> None:
    """No site record in the index, no ``site-id`` in the site folder."""
    (root / siteid.SITE_ID_FILE).unlink()
    if url and not url.startswith("sqlite"):
        db = open_database(url, root / "index.db")
        try:
            db.execute_sql("DELETE FROM meta_row WHERE key IN ('site_id', 'site_root')")
        finally:
            db.close()
        return
    path = Path(url.removeprefix("sqlite:///")) if url else root / "index.db"
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM meta_row WHERE key IN ('site_id', 'site_root')")
    conn.close()


def test_an_index_without_a_site_record_is_adopted(tmp_path: Path, index_url: str) -> None:
    first = tmp_path / "first"
    _site_with_runs(first, index_url)
    _as_an_older_flowbatch_left_it(index_url, first)
    assert _record(index_url, first) == (None, None)
    doctor = fb(first, "doctor")
    line = next(x for x in doctor.stdout.splitlines() if "index owner" in x)
    assert " ok " in line and "records no site yet" in line
    assert _names(first) == ["a", "b"]  # adopted on first use
    site_id = siteid.read_site_id(first)
    assert site_id is not None and _record(index_url, first) == (site_id, first)
    # two copies made before the record: the one opened first keeps it, the other is
    # refused, pointed at it
    _as_an_older_flowbatch_left_it(index_url, first)
    copy = tmp_path / "copy"
    shutil.copytree(first, copy, symlinks=True)
    assert _names(copy) == ["a", "b"]
    out = fb(first, "runs", "list", check=False)
    assert out.returncode == 1
    assert f"belongs to another site, at {copy}" in out.stderr
    assert "flowbatch reindex --adopt" in out.stderr


def test_the_default_index_made_by_an_older_flowbatch_is_adopted(tmp_path: Path) -> None:
    first = tmp_path / "first"
    _site_with_runs(first, None)
    _as_an_older_flowbatch_left_it(None, first)
    assert _names(first) == ["a", "b"]
    assert _record(None, first) == (siteid.read_site_id(first), first)


def test_reindex_adopt_makes_the_index_the_copys(tmp_path: Path, index_url: str) -> None:
    first = tmp_path / "first"
    _site_with_runs(first, index_url)
    copy = tmp_path / "copy"
    shutil.copytree(first, copy, symlinks=True)
    site = Site(copy)
    drop(site, "c.yaml", {"workflow": "helloworld", "name": "c", "group": "c"})
    # not while a daemon serves the first site: it would go on writing the index
    with lock_held(first / "daemon.lock"):
        out = fb(copy, "reindex", "--adopt", check=False)
        assert out.returncode == 1 and "which a daemon serves" in out.stderr
    assert _record(index_url, first)[1] == first
    out = fb(copy, "reindex", "--adopt")
    assert "indexed 2 runs" in out.stdout
    copy_id = siteid.read_site_id(copy)
    assert copy_id != siteid.read_site_id(first)
    assert _record(index_url, copy) == (copy_id, copy)
    run_until_idle(site)
    site.close()
    assert _names(copy) == ["a", "b", "c"]
    # the first site is now the one refused, pointed at the copy
    out = fb(first, "runs", "list", check=False)
    assert out.returncode == 1 and f"belongs to another site, at {copy}" in out.stderr


def _claims(url: str, root: Path) -> list[str]:
    """The runs the index's claim rows name."""
    db = open_database(url, root / "index.db")
    try:
        return sorted(str(run) for (run,) in db.execute_sql('SELECT "run" FROM "claim_row"'))
    finally:
        db.close()


def test_reindex_adopt_drops_the_other_sites_claims(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The claim rows of a shared (PostgreSQL) site guard its own queue's files, from
    their claim until their runs are made. An adopted index kept the other site's: a
    request of the adopting site with the key of one of them (the same name, inode,
    mtime and size: here the other site's kept request.yaml, moved into this queue under
    its first name) was taken for a second claim of that file and dropped."""
    url = str(request.getfixturevalue("postgres_url"))
    first = tmp_path / "first"
    _site_with_runs(first, url, ("a",))
    (run,) = api.list_runs(Site(first))
    assert _claims(url, first) == [run["id"]]
    copy = tmp_path / "copy"
    shutil.copytree(first, copy, symlinks=True)
    fb(copy, "reindex", "--adopt")
    assert _claims(url, copy) == []
    kept = Site(first).layout.run_dir("helloworld", run["id"]) / "request.yaml"
    assert kept.stat().st_nlink == 1
    os.rename(kept, copy / "queue" / "a.yaml")  # the same file: its inode, mtime and size
    site = Site(copy)
    try:
        run_until_idle(site)
        runs = api.list_runs(site)
    finally:
        site.close()
    assert sorted(r["name"] for r in runs) == ["a", "a"]  # the copied one and the new one
    new = next(r["id"] for r in runs if r["id"] != run["id"])
    assert _claims(url, copy) == [new]
    assert not (copy / "queue" / "a.yaml").exists()


def _on_another_host(hidden: Path, site: Path, *args: str, mounts: str = "") -> str:
    """`flowbatch ARGS` on the site at ``site`` as on another host, which does not see the
    folder ``hidden`` (an empty folder is mounted over it in a mount namespace of the
    command's own, gone with it) nor the daemon lock in it. ``mounts``: shell commands
    run first in that namespace. Its output, or a skip where namespaces are refused."""
    empty = hidden.parent / ".empty"
    empty.mkdir(exist_ok=True)
    script = f'{mounts}mount --bind "$1" "$2" && shift 2 && exec "$@"'
    command = [sys.executable, "-m", "flowbatch", "--site", str(site), *args]
    namespace = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
    try:
        done = subprocess.run(
            [*namespace, str(empty), str(hidden), *command],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except FileNotFoundError:
        pytest.skip("no unshare(1) here")
    if done.returncode and "unshare" in done.stderr:
        pytest.skip(f"no mount namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    return done.stdout


def _waiting_site(root: Path, url: str, go: Path) -> Site:
    """A site whose one request's run waits for the file ``go``."""
    site = make_site(root, {"database": url})
    write_template(
        root.parent / "waits",
        "workflow:\n  steps:\n    - action:\n        commands:\n"
        f"          - 'while [ ! -e {go} ]; do sleep 0.05; done'\n",
    )
    api.install(site, root.parent / "waits", workflow_id="waits")
    drop(site, "w.yaml", {"workflow": "waits", "name": "w", "group": "w"})
    return site


def _run_json(root: Path) -> dict[str, Any]:
    (path,) = (root / "results" / "waits" / "runs").glob("*/run.json")
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _serve_in_thread(site: Site) -> tuple[threading.Thread, list[BaseException | None]]:
    """``run_daemon`` serving ``site`` until idle, in a thread; what it raised, once done."""
    out: list[BaseException | None] = []

    def serve() -> None:
        try:
            run_daemon(site, until_idle=True)
        except BaseException as exc:  # handed to the test
            out.append(exc)
        else:
            out.append(None)

    thread = threading.Thread(target=serve, name="daemon")
    thread.start()
    return thread, out


def _wait_running(root: Path, thread: threading.Thread) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and thread.is_alive():
        with contextlib.suppress(ValueError, OSError):
            run = _run_json(root)
            if run["state"] == "RUNNING":
                return run
        time.sleep(0.05)
    raise AssertionError("the run never ran")


def test_a_daemon_stops_when_another_site_adopts_its_index(
    tmp_path: Path, index_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon checked whose index it writes into at its start only: another site that
    adopted the index meanwhile (`reindex --adopt` on a host that did not see the
    daemon's lock) had the first site's runs written into its index. It looks again
    while it serves, and stops: nothing more written into the index, its runs left in
    the tree for the site's own index to take over."""
    monkeypatch.setattr(
        Daemon, "INDEX_OWNER_EVERY", 0.0, raising=False
    )  # at every tick, for the test
    go = tmp_path / "go"
    first = tmp_path / "first"
    site = _waiting_site(first, index_url, go)
    thread, out = _serve_in_thread(site)
    try:
        run = _wait_running(first, thread)
        other = make_site(tmp_path / "other", {"database": index_url})
        other.close()
        _on_another_host(first, other.root, "reindex", "--adopt")
        thread.join(60)
    finally:
        if thread.is_alive():  # the old code served on: let it end
            go.touch()
            thread.join(60)
    site.close()
    (error,) = out
    assert isinstance(error, IndexError_), error
    text = error.summary()
    other_id = siteid.read_site_id(other.root)
    assert f"another site, at {other.root} (site id {other_id})" in text
    assert f"while this daemon served {first}" in text and "stops" in text
    assert "s3cret" not in text and f"`database:` in {first}/flowbatch.yaml" in text
    # its run goes on, recorded in the tree only; the other site's index has none of it
    assert _run_json(first)["state"] == "RUNNING"
    assert _names(other.root) == []
    # the way out it gives: an index of the site's own, rebuilt from the tree; the next
    # daemon takes the run over
    (first / "flowbatch.yaml").write_text("database: sqlite:///own.db\n", encoding="utf-8")
    assert "indexed 1 run" in fb(first, "reindex").stdout
    go.touch()
    site = Site(first)
    try:
        run_until_idle(site)
        assert [(r["id"], r["state"]) for r in api.list_runs(site)] == [(run["id"], "SUCCESS")]
    finally:
        site.close()
    assert _names(other.root) == []


def test_a_daemon_serves_on_when_its_folder_is_seen_at_another_path(
    tmp_path: Path,
    index_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """This site's id recorded at another folder, which this host cannot see: a host
    that mounts the site's folder at another path (a shared site's do) records that, as
    would a copy on another host; no host can tell them apart, so the daemon says so in
    its log and serves on."""
    monkeypatch.setattr(Daemon, "INDEX_OWNER_EVERY", 0.0, raising=False)
    go = tmp_path / "go"
    first = tmp_path / "first"
    site = _waiting_site(first, index_url, go)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    thread, out = _serve_in_thread(site)
    try:
        _wait_running(first, thread)
        # another host, where the site's folder is mounted at mnt
        _on_another_host(first, mnt, "runs", "list", mounts=f'mount --bind "{first}" "{mnt}" && ')
        with caplog.at_level("WARNING", logger="flowbatch.daemon"):
            deadline = time.monotonic() + 60
            while f"at {mnt} now" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
            go.touch()
            thread.join(60)
    finally:
        go.touch()
        thread.join(60)
        site.close()
    assert out == [None]
    assert _record(index_url, first) == (siteid.read_site_id(first), mnt)  # as recorded there
    assert f"records this site (site id {siteid.read_site_id(first)}) at {mnt} now" in caplog.text
    assert _run_json(first)["state"] == "SUCCESS"
    assert _names(first) == ["w"]


def test_a_daemon_follows_its_own_site_id_changed_under_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The site's own index file re-keyed to the id of its replaced site-id file (by a
    command: siteid.RECLAIM) is no other site's: the daemon serves on with the new id."""
    monkeypatch.setattr(Daemon, "INDEX_OWNER_EVERY", 0.0, raising=False)
    go = tmp_path / "go"
    first = tmp_path / "first"
    site = _waiting_site(first, f"sqlite:///{first / 'index.db'}", go)
    thread, out = _serve_in_thread(site)
    try:
        _wait_running(first, thread)
        (first / siteid.SITE_ID_FILE).write_text(f"{'ab' * 16}\n{first}\n", encoding="utf-8")
        fb(first, "runs", "list")
        go.touch()
        thread.join(60)
    finally:
        go.touch()
        thread.join(60)
        site.close()
    assert out == [None]
    assert _run_json(first)["state"] == "SUCCESS"
    assert _record(f"sqlite:///{first / 'index.db'}", first) == ("ab" * 16, first)
