"""Index upgrades: an index made by flowbatch at schema version 1 keeps working."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from flowbatch import api
from flowbatch.errors import IndexError_
from flowbatch.site import Site
from flowbatch.store import migrate
from flowbatch.store.index import SCHEMA_VERSION, MetaRow, open_database
from tests.conftest import drop, lock_held, run_until_idle

V1_SCHEMA = Path(__file__).parent / "data" / "index" / "schema-v1.sql"
TABLES = ("workflow_row", "run_row", "run_file_row", "result_row", "state_change_row")


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f'PRAGMA table_info("{table}")')]


def _downgrade_to_v1(site: Site) -> dict[str, list[tuple]]:
    """Replace the site's index by one built with version 1's DDL (as that flowbatch made
    it, see tests/data/index/schema-v1.sql), holding the same rows; return the rows."""
    site.close()
    site.__dict__.pop("store", None)
    path = site.layout.index_db
    current = sqlite3.connect(path)
    rows = {t: sorted(current.execute(f'SELECT * FROM "{t}"').fetchall()) for t in TABLES}
    columns = {t: _columns(current, t) for t in TABLES}
    current.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    old = sqlite3.connect(path)
    old.executescript(V1_SCHEMA.read_text())
    old.execute("INSERT INTO meta_row VALUES ('schema_version', '1')")
    for table in TABLES:
        assert _columns(old, table) == columns[table], "v2 must not change columns"
        marks = ",".join("?" * len(columns[table]))
        old.executemany(f'INSERT INTO "{table}" VALUES ({marks})', rows[table])
    old.commit()
    old.close()
    return rows


def test_v1_index_is_migrated_and_keeps_its_data(hello_site: Site) -> None:
    drop(hello_site, "a.yaml", {"workflow": "helloworld", "group": "alice"})
    drop(
        hello_site,
        "b.yaml",
        {"workflow": "helloworld", "group": "bob", "arguments": {"greeting": "Hi"}},
    )
    run_until_idle(hello_site)
    before = api.ranking(hello_site, "helloworld")
    rows = _downgrade_to_v1(hello_site)
    indexes = {
        r[0]
        for r in sqlite3.connect(hello_site.layout.index_db).execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'run_row'"
        )
    }
    assert "run_row_workflow_state" not in indexes  # really the old layout

    site = Site(hello_site.root)  # a newer flowbatch opens the old index
    try:
        assert [r["state"] for r in api.list_runs(site)] == ["SUCCESS", "SUCCESS"]
        assert MetaRow.get(MetaRow.key == "schema_version").value == str(SCHEMA_VERSION)
        names = {i.name for i in site.store.db.get_indexes("run_row")}
        assert {"run_row_workflow_state", "run_row_finished_at", "run_row_owner_uid"} <= names
        assert api.ranking(site, "helloworld") == before
        site.close()
        db = sqlite3.connect(site.layout.index_db)
        assert {t: sorted(db.execute(f'SELECT * FROM "{t}"').fetchall()) for t in TABLES} == rows
        db.close()
    finally:
        site.close()


def test_migration_is_one_transaction_per_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing step leaves the index at its old version, usable by the old flowbatch."""
    path = tmp_path / "index.db"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA.read_text())
    db.execute("INSERT INTO meta_row VALUES ('schema_version', '1')")
    db.commit()
    db.close()

    def broken(m: migrate.SchemaMigrator) -> list:
        return [
            m.add_index("run_row", ("workflow", "state"), False),
            m.add_index("nope", ("x",), False),
        ]

    monkeypatch.setitem(migrate.MIGRATIONS, 1, broken)
    with pytest.raises(IndexError_):
        open_database(None, path)
    check = sqlite3.connect(path)
    assert check.execute("SELECT value FROM meta_row").fetchone() == ("1",)
    assert not check.execute(
        "SELECT 1 FROM sqlite_master WHERE name = 'run_row_workflow_state'"
    ).fetchall()
    check.close()


def test_newer_or_unmigratable_index_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    open_database(None, path).close()
    for version, words in (
        (SCHEMA_VERSION + 1, "newer than this flowbatch"),
        (0, "cannot migrate"),
    ):
        db = sqlite3.connect(path)
        db.execute("UPDATE meta_row SET value = ?", (str(version),))
        db.commit()
        db.close()
        with pytest.raises(IndexError_, match=words) as err:
            open_database(None, path)
        assert err.value.file == str(path)


def test_every_version_has_a_step() -> None:
    """Bumping SCHEMA_VERSION without a migration step fails here, not on a site."""
    assert set(migrate.MIGRATIONS) == set(range(1, SCHEMA_VERSION))


def test_a_v3_index_gets_the_request_index_and_an_older_flowbatch_refuses_v4(
    hello_site: Site,
) -> None:
    """v4 indexes run_row.request; it also marks that a PENDING run with a ``queued``
    handle is submitted to Slurm, which a v3 flowbatch would submit again: such a
    flowbatch (its SCHEMA_VERSION 3) refuses the index instead."""
    drop(hello_site, "a.yaml", {"workflow": "helloworld"})
    run_until_idle(hello_site)
    hello_site.close()
    db = sqlite3.connect(hello_site.layout.index_db)
    db.execute("DROP INDEX run_row_request")
    db.execute("UPDATE meta_row SET value = '3' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    site = Site(hello_site.root)  # upgraded on open
    try:
        assert "run_row_request" in {i.name for i in site.store.db.get_indexes("run_row")}
        assert MetaRow.get(MetaRow.key == "schema_version").value == "4" == str(SCHEMA_VERSION)
    finally:
        site.close()
    from flowbatch.store import index as idx

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(idx, "SCHEMA_VERSION", 3)
        with pytest.raises(IndexError_, match="newer than this flowbatch"):
            Site(hello_site.root).store.db  # noqa: B018


def test_no_upgrade_under_the_running_daemon_of_an_older_flowbatch(hello_site: Site) -> None:
    """A newer flowbatch's command (a `runs list` after the venv was upgraded in place)
    upgraded the index while the daemon of the older one served it, and went on writing
    it as it knew it (found by review). It now says what to do; once the daemon stopped
    (here: its lock let go), the upgrade goes through."""
    drop(hello_site, "a.yaml", {"workflow": "helloworld"})
    run_until_idle(hello_site)
    _downgrade_to_v1(hello_site)
    with lock_held(hello_site.lock_path) as holder:
        with pytest.raises(IndexError_) as refused:
            Site(hello_site.root).store  # noqa: B018 - opens the index
        said = refused.value.summary()
        assert "schema version 1" in said and f"pid {holder.pid}" in said, said
        assert "restart the daemon with this flowbatch" in said
        db = sqlite3.connect(hello_site.layout.index_db)
        assert db.execute("SELECT value FROM meta_row").fetchone() == ("1",)  # untouched
        db.close()
    site = Site(hello_site.root)
    try:
        assert [r["state"] for r in api.list_runs(site)] == ["SUCCESS"]
    finally:
        site.close()
