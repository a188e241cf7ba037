"""Issue 5 point 8: the index on both backends, SQLite and a real PostgreSQL server.

Each test runs twice through the ``db_url`` fixture (tests/fixtures_postgres.py): with the
default SQLite file and with an empty database on the private PostgreSQL test server.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from flowbatch import api
from flowbatch.cli import main as cli_main
from flowbatch.errors import IndexError_
from flowbatch.runs import RunRecord, State
from flowbatch.site import Site
from flowbatch.store import index as idx
from flowbatch.store.index import (
    ResultRow,
    RunFileRow,
    RunRow,
    StateChangeRow,
    display_url,
    open_database,
)
from flowbatch.store.layout import RUN_JSON, Layout
from flowbatch.store.store import Store

from .conftest import EXAMPLES, drop, make_site, run_until_idle
from .services.postgres import PostgresServer, free_port
from .test_robust import fb

GROUPS = ("alice", "bob", "carol")


@pytest.fixture
def backend_site(tmp_path: Path, db_url: str | None) -> Iterator[Site]:
    """A site on the backend under test, helloworld installed and three runs done."""
    site = make_site(tmp_path / "site", {"database": db_url} if db_url else None)
    api.install(site, EXAMPLES / "helloworld", workflow_id="helloworld")
    for i, group in enumerate(GROUPS):
        drop(
            site,
            f"{group}.yaml",
            {"workflow": "helloworld", "group": group, "arguments": {"greeting": "Hi" * (i + 1)}},
        )
    run_until_idle(site)
    yield site
    site.close()


def cli(root: Path, *args: str) -> str:
    """The CLI in this process (a subprocess per call is slow); its output."""
    result = CliRunner().invoke(cli_main, ["--site", str(root), *args])
    assert result.exit_code == 0, result.output
    return result.output


def cli_json(root: Path, *args: str) -> Any:
    return json.loads(cli(root, *args, "--json"))


def test_transitions_write_the_tree_and_the_index(backend_site: Site) -> None:
    store = backend_site.store
    rows = list(RunRow.select().order_by(RunRow.group))
    assert [r.group for r in rows] == list(GROUPS)
    for row in rows:
        run = store.load(row.id)
        assert run.state == State.SUCCESS and row.state == "SUCCESS"
        assert (row.arguments, row.results, row.messages) == (
            run.arguments,
            run.results,
            run.messages,
        )
        assert (row.started_at, row.finished_at) == (run.started_at, run.finished_at)
        history = [
            (c.state, c.at)
            for c in StateChangeRow.select()
            .where(StateChangeRow.run == row.id)
            .order_by(StateChangeRow.id)
        ]
        assert history == [(h["state"], h["at"]) for h in run.history]
        assert [h[0] for h in history] == ["PENDING", "RUNNING", "SUCCESS"]
        files = RunFileRow.select().where(RunFileRow.run == row.id)
        assert {f.key: f.size for f in files} == {f["key"]: f["size"] for f in run.files}
        assert all(isinstance(f["size"], int) for f in run.files)
        results = {
            r.name: r.value_text if r.value_num is None else r.value_num
            for r in ResultRow.select().where(ResultRow.run == row.id)
        }
        assert run.results and results == run.results
    # a transition of a new run: the tree first, then the index, in step
    run = store.load(rows[0].id)
    fresh = RunRecord.from_dict({**run.to_dict(), "id": "fresh1", "state": "PENDING"})
    fresh.history, fresh.results, fresh.files = [], None, []
    store.run_dir(fresh).mkdir(parents=True)
    store.write(fresh)
    assert store.transition(fresh, State.RUNNING)
    assert not store.transition(fresh, State.RUNNING)  # same state: a no-op
    assert RunRow.get_by_id("fresh1").state == "RUNNING" == store.load("fresh1").state.value
    # long text, and a NUL that PostgreSQL's text columns cannot hold
    store.transition(fresh, State.CANCELED, messages=["x" * 5000], results={"note": "a\x00b"})
    assert RunRow.get_by_id("fresh1").messages == ["x" * 5000]
    assert RunRow.get_by_id("fresh1").results == {"note": "a\x00b"} == store.load("fresh1").results
    assert ResultRow.get(ResultRow.run == "fresh1").value_text == "a\ufffdb"


def test_reindex_gives_the_same_listing_and_ranking(backend_site: Site) -> None:
    root = backend_site.root
    listing = cli_json(root, "runs", "list")
    board = cli_json(root, "ranking", "helloworld")
    assert len(listing) == 3 and sorted(e["group"] for e in board["ranking"]) == list(GROUPS)
    # damage the index behind the tree's back: a row gone, a state wrong
    RunRow.delete().where(RunRow.group == "bob").execute()
    RunRow.update(state="ERROR").where(RunRow.group == "carol").execute()
    assert cli_json(root, "runs", "list") != listing
    assert "indexed 3 runs" in cli(root, "reindex")
    assert cli_json(root, "runs", "list") == listing
    assert cli_json(root, "ranking", "helloworld") == board
    saved = json.loads(
        (backend_site.layout.workflow_results("helloworld") / "leaderboard.json").read_text()
    )
    assert [e["run"]["id"] for e in saved["ranking"]] == [e["run"]["id"] for e in board["ranking"]]


def _copy_run(store: Store, run_id: str, new_id: str, state: State) -> RunRecord:
    """A run folder as a daemon killed after writing run.json (before the index) leaves it."""
    src = store.run_dir(store.load(run_id))
    dest = src.with_name(new_id)
    shutil.copytree(src, dest)
    data = json.loads((dest / RUN_JSON).read_text())
    data.update(id=new_id, state=state.value)
    if state.active:
        data.update(finished_at=None, results=None, files=[])
    (dest / RUN_JSON).write_text(json.dumps(data))
    return RunRecord.from_dict(data)


def test_sync_active_catches_the_index_up_after_a_crash(backend_site: Site) -> None:
    store = backend_site.store
    ids = [r.id for r in RunRow.select().order_by(RunRow.group)]
    _copy_run(store, ids[0], "crash1", State.RUNNING)  # run.json written, no row
    _copy_run(store, ids[1], "crash2", State.SUCCESS)  # finished, no row
    # a row the index still calls RUNNING though the tree finished it
    RunRow.update(state="RUNNING", finished_at=None).where(RunRow.id == ids[2]).execute()
    active = store.sync_active()
    assert [r.id for r in active] == ["crash1"]
    states = {r.id: r.state for r in RunRow.select()}
    assert states == {ids[0]: "SUCCESS", ids[1]: "SUCCESS", ids[2]: "SUCCESS"} | {
        "crash1": "RUNNING",
        "crash2": "SUCCESS",
    }
    assert RunRow.get_by_id(ids[2]).finished_at == store.load(ids[2]).finished_at
    assert ResultRow.select().where(ResultRow.run == "crash2").count() > 0
    assert store.sync_active()[0].id == "crash1"  # idempotent


def test_index_loss_is_detected_with_the_reindex_hint(backend_site: Site) -> None:
    root = backend_site.root
    listing = cli_json(root, "runs", "list")
    url = backend_site.config.database
    backend_site.close()
    if url:  # a new, empty database in place of the old one
        db = open_database(url, root / "index.db")
        db.drop_tables(idx.TABLES)
        db.close()
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{root / 'index.db'}{suffix}").unlink(missing_ok=True)
    with pytest.raises(IndexError_) as info:
        Store(Layout(root), url)
    assert "holds no runs but the results tree does" in str(info.value)
    assert info.value.hint and "flowbatch reindex" in info.value.hint
    out = fb(root, "runs", "list", check=False)
    assert out.returncode != 0
    assert "flowbatch reindex" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    cli(root, "reindex")
    assert cli_json(root, "runs", "list") == listing


def _writer(root: str, url: str | None, worker: int, count: int) -> None:
    """A separate process writing ``count`` runs through PENDING, RUNNING, SUCCESS."""
    layout = Layout(Path(root))
    store = Store(layout, url, check_index=False)
    for i in range(count):
        run = RunRecord(
            id=f"w{worker}r{i:03d}",
            workflow="wf",
            version="1",
            group=f"g{i % 5}",
            name=None,
            owner_uid=0,
            owner="root",
            request=f"w{worker}r{i}.yaml",
            created_at=f"2024-01-01T00:00:{i:02d}.{worker:06d}+00:00",
        )
        store.run_dir(run).mkdir(parents=True)
        run.history.append({"state": "PENDING", "at": run.created_at, "message": None})
        store.write(run, change=dict(run.history[-1]))
        store.transition(run, State.RUNNING)
        files = [{"key": "out.txt", "source": "out.txt", "size": 2**40 + i}]  # BigInteger
        store.transition(run, State.SUCCESS, results={"score": i / 3, "label": "ok"}, files=files)
    store.close()


def test_concurrent_writers_on_one_index(tmp_path: Path, db_url: str | None) -> None:
    """Four processes, started together on a new index, each write 25 runs at once."""
    root = tmp_path / "site"
    Layout(root).ensure()
    ctx = multiprocessing.get_context("fork")  # each opens its own connection
    procs = [ctx.Process(target=_writer, args=(str(root), db_url, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 4
    store = Store(Layout(root), db_url)
    try:
        assert RunRow.select().count() == 100
        assert {r.state for r in RunRow.select()} == {"SUCCESS"}
        assert StateChangeRow.select().count() == 300
        assert ResultRow.select().count() == 200
        assert RunFileRow.select(RunFileRow.size).where(RunFileRow.run == "w3r024").scalar() == (
            2**40 + 24
        )
        assert len(list(store.iter_run_dirs())) == 100
    finally:
        store.close()


def test_server_errors_are_one_clear_line(postgres_server: PostgresServer, tmp_path: Path) -> None:
    down = f"postgresql://flow:s3cret@127.0.0.1:{free_port()}/db?connect_timeout=3"
    missing = postgres_server.url("no_such_db")
    for url, says in ((down, "Connection refused"), (missing, 'database "no_such_db"')):
        with pytest.raises(IndexError_) as info:
            open_database(url, tmp_path / "index.db")
        line = info.value.summary()
        assert "\n" not in line and "s3cret" not in line and says in line
        assert display_url(url) in line and info.value.hint
        assert "server is running" in info.value.hint
        root = tmp_path / url.rsplit("/", 1)[1].split("?")[0]
        make_site(root, {"database": url})
        out = fb(root, "runs", "list", check=False)
        assert out.returncode != 0 and "s3cret" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and says in out.stderr
    assert display_url("postgresql://flow:s3cret@127.0.0.1:5432/db") == (
        "postgresql://flow:***@127.0.0.1:5432/db"
    )
    assert display_url("postgresql://u@h/db?password=pw&sslmode=require") == (
        "postgresql://u@h/db?password=***&sslmode=require"
    )
    with pytest.raises(IndexError_, match="unsupported index database URL"):
        open_database("nosuch://x/y", tmp_path / "index.db")


def test_a_v2_postgresql_index_is_widened_to_v3(tmp_path: Path, postgres_url: str) -> None:
    """v2 had owner_uid as a 32-bit integer and output file paths as varchar(1024) on
    PostgreSQL: the upgrade widens them in place, and uids beyond 2**31 and long paths
    are then indexed."""
    import psycopg2

    from flowbatch.store import migrate

    layout = Layout(tmp_path / "site")
    layout.ensure()
    Store(layout, postgres_url).close()  # a new index, at the current version
    admin = psycopg2.connect(postgres_url)
    admin.autocommit = True
    with admin.cursor() as cur:  # as flowbatch v2 made it
        cur.execute("ALTER TABLE run_row ALTER COLUMN owner_uid TYPE integer")
        cur.execute("ALTER TABLE run_file_row ALTER COLUMN key TYPE varchar(1024)")
        cur.execute("ALTER TABLE run_file_row ALTER COLUMN source TYPE varchar(1024)")
        cur.execute("DROP INDEX run_row_request")  # v4's
        cur.execute(f"UPDATE meta_row SET value = '2' WHERE key = '{migrate.VERSION_KEY}'")
    store = Store(layout, postgres_url)  # opens, and upgrades
    try:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE (table_name, column_name) IN "
                "(('run_row', 'owner_uid'), ('run_file_row', 'key'), ('run_file_row', 'source'))"
            )
            types = {(t, c): d for t, c, d in cur.fetchall()}
            cur.execute(f"SELECT value FROM meta_row WHERE key = '{migrate.VERSION_KEY}'")
            assert cur.fetchone() == (str(idx.SCHEMA_VERSION),)
        assert types == {
            ("run_row", "owner_uid"): "bigint",
            ("run_file_row", "key"): "text",
            ("run_file_row", "source"): "text",
        }
        run = RunRecord(
            id="big1",
            workflow="wf",
            version="1",
            group="g",
            name=None,
            owner_uid=2**32 + 5,
            owner="ldapuser",
            request="r.yaml",
            created_at="2026-01-01T00:00:00+00:00",
        )
        store.run_dir(run).mkdir(parents=True)
        store.write(run)
        long_key = "d/" * 700 + "out.txt"
        store.transition(run, State.RUNNING)
        store.transition(
            run, State.SUCCESS, results={"s": 1}, files=[{"key": long_key, "source": long_key}]
        )
        assert not store.unindexed
        assert RunRow.get_by_id("big1").owner_uid == 2**32 + 5
        assert RunFileRow.get(RunFileRow.run == "big1").key == long_key
    finally:
        store.close()
        admin.close()


def test_a_new_claims_id_is_checked_against_the_index(backend_site: Site) -> None:
    """By equality only (a server's collation cannot change the answer): a run's id and
    the second point of a sweep claimed under an id are taken, nothing else."""
    store = backend_site.store
    taken = RunRow.select(RunRow.id).first().id
    assert store.run_id_taken(taken)
    assert not store.run_id_taken(taken[:-1]) and not store.run_id_taken(taken + "0")
    run = store.load(taken)
    store.index_many([RunRecord.from_dict({**run.to_dict(), "id": "swept123456-1"})])
    assert store.run_id_taken("swept123456") and not store.run_id_taken("swept12345")


def test_an_sqlite_url_is_shown_as_written_and_a_missing_folder_is_said(tmp_path: Path) -> None:
    """`sqlite:////nonexistent/dir/x.db` was shown as `sqlite://nonexistent/dir/x.db` (one
    slash lost: another file), with the advice to run reindex, which failed the same way."""
    for url in ("sqlite:////nonexistent/dir/x.db", "sqlite:///rel.db"):
        assert display_url(url) == url
    url = f"sqlite:///{tmp_path}/no/such/folder/index.db"
    with pytest.raises(IndexError_) as info:
        open_database(url, tmp_path / "index.db")
    line = info.value.summary()
    assert url in line and f"there is no folder {tmp_path}/no/such/folder" in line
    assert "reindex" not in line and "make the folder" in line


def test_an_sqlite_url_in_capitals_is_one_hosts_index(tmp_path: Path) -> None:
    """URL schemes are case-blind: `SQLITE:///...` opened an SQLite index, while the site
    took it for a server's, shared by several hosts (a lock and a claims folder per
    host; found by review)."""
    site = make_site(tmp_path / "site", {"database": f"SQLITE:///{tmp_path}/idx.db"})
    assert not site.shared and site.lock_path == site.layout.lock
    api.install(site, EXAMPLES / "helloworld", workflow_id="helloworld")
    drop(site, "r.yaml", {"workflow": "helloworld", "arguments": {"greeting": "hi"}})
    run_until_idle(site)
    assert [r["state"] for r in api.list_runs(site)] == ["SUCCESS"]
    assert (tmp_path / "idx.db").is_file() and not list(tmp_path.glob("site/daemon.*.lock"))
    site.close()
