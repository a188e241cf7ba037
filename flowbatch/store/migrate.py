"""Upgrading an index made by an older flowbatch (``meta_row.schema_version``).

The index is a mirror of the results tree, so there are two ways forward from an old
version: migrate it in place (playhouse's schema migrator: cheap, keeps a PostgreSQL
index shared by several daemons online) or rebuild it from the tree (``flowbatch
reindex``). :data:`MIGRATIONS` holds one step per version; an index at a version with no
step (older than any flowbatch that had migrations) or at a newer version than this
flowbatch knows is left untouched and reported, with the way out.

To change the schema: bump ``SCHEMA_VERSION`` in :mod:`flowbatch.store.index`, change the
models there, and add the step from the previous version here (columns added with
``migrator.add_column`` need a default or ``null=True``). Every step runs in one
transaction together with the version bump, so a failed upgrade leaves the old index.

A new key in ``meta_row`` is no schema change and needs no version: an older flowbatch
never reads it, and a newer one fills it in where it is missing. The site an index
belongs to (``site_id``, ``site_root``: :mod:`.siteid`) came that way: an index made
before is adopted by the first site that opens it, and an older flowbatch keeps using
it (without the check).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import peewee as pw
from playhouse.migrate import Operation, SchemaMigrator, SqliteMigrator, migrate

from ..errors import IndexError_

log = logging.getLogger("flowbatch.store")

VERSION_KEY = "schema_version"
META_TABLE = "meta_row"


def _v1_to_v2(m: SchemaMigrator) -> list[Operation]:
    """v2 indexes the columns the CLI and the ranking filter on: the ranking reads a
    workflow's SUCCESS runs, ``runs list`` sorts by finish time, ownership checks look up
    a user's runs. v1 scanned ``run_row`` for these."""
    return [
        m.add_index("run_row", ("workflow", "state"), False),
        m.add_index("run_row", ("finished_at",), False),
        m.add_index("run_row", ("owner_uid",), False),
    ]


def _v2_to_v3(m: SchemaMigrator) -> list[Operation]:
    """v3 widens what PostgreSQL had too narrow: ``owner_uid`` to 64 bits (directory
    services hand out uids beyond 2**31) and an output file's ``key``/``source`` to
    unbounded text (paths longer than 1,024 characters). SQLite's columns hold both
    already: nothing to do there but the version."""
    if isinstance(m, SqliteMigrator):
        return []
    return [
        m.alter_column_type("run_row", "owner_uid", pw.BigIntegerField()),
        m.alter_column_type("run_file_row", "key", pw.TextField()),
        m.alter_column_type("run_file_row", "source", pw.TextField()),
    ]


def _v3_to_v4(m: SchemaMigrator) -> list[Operation]:
    """v4 indexes ``run_row.request`` (the orphan-bundle sweep asks whose runs a request
    name made). The version also marks the meaning of a PENDING run with a ``queued``
    handle (a job waiting in Slurm's queue, launched): a flowbatch of v3 would take it
    for a run never launched and submit its job a second time, so it refuses an index of
    v4 instead (its message says to upgrade)."""
    return [m.add_index("run_row", ("request",), False)]


#: from-version -> the operations that bring an index to from-version + 1
MIGRATIONS: dict[int, Callable[[SchemaMigrator], list[Operation]]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
}


def read_version(db: pw.Database) -> int | None:
    """The index's schema version, or None for an empty database (a new index)."""
    if not db.table_exists(META_TABLE):
        return None
    sql = f'SELECT "value" FROM "{META_TABLE}" WHERE "key" = {db.param}'
    cursor = db.execute_sql(sql, (VERSION_KEY,))
    row = cursor.fetchone()
    if row is None:
        return None
    try:
        return int(row[0])
    except (TypeError, ValueError):
        raise IndexError_(
            f"the index's schema version is not a number: {row[0]!r}",
            hint="run `flowbatch reindex` to rebuild it from the results tree",
        ) from None


def write_version(db: pw.Database, version: int) -> None:
    db.execute_sql(
        f'UPDATE "{META_TABLE}" SET "value" = {db.param} WHERE "key" = {db.param}',
        (str(version), VERSION_KEY),
    )


def check_upgradable(found: int, target: int) -> None:
    """Raise unless every step from ``found`` to ``target`` exists."""
    if found > target:
        raise IndexError_(
            f"the index is at schema version {found}, newer than this flowbatch ({target})",
            hint="upgrade flowbatch on this host (several daemons must run the same version)",
        )
    missing = [v for v in range(found, target) if v not in MIGRATIONS]
    if missing:
        raise IndexError_(
            f"the index is at schema version {found}, this flowbatch uses {target} "
            "and cannot migrate it",
            hint="run `flowbatch reindex` to rebuild it from the results tree",
        )


def upgrade(db: pw.Database, found: int, target: int) -> list[int]:
    """Migrate the index from ``found`` to ``target``; returns the versions reached."""
    check_upgradable(found, target)
    migrator = SchemaMigrator.from_database(db)
    reached: list[int] = []
    for version in range(found, target):
        # the SQL a step issues and the version bump commit together, or neither does
        with db.atomic():
            migrate(*MIGRATIONS[version](migrator))
            write_version(db, version + 1)
        log.info("index migrated from schema version %d to %d", version, version + 1)
        reached.append(version + 1)
    return reached
