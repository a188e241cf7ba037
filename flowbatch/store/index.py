"""The Peewee index: a queryable mirror of the results tree.

The tree (``run.json`` files, installed templates) is the truth; everything here can be
rebuilt from it by :func:`flowbatch.store.reindex.reindex`. SQLite in WAL mode by default;
a database URL in the site config selects another (PostgreSQL).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import peewee as pw
from playhouse.db_url import connect

from ..errors import IndexError_

SCHEMA_VERSION = 1

proxy = pw.DatabaseProxy()


class JSONField(pw.TextField):
    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, sort_keys=False, default=str)

    def python_value(self, value: Any) -> Any:
        return None if value is None else json.loads(value)


class _Model(pw.Model):
    class Meta:
        database = proxy
        legacy_table_names = False


class MetaRow(_Model):
    key = pw.CharField(primary_key=True, max_length=64)
    value = pw.TextField()


class WorkflowRow(_Model):
    id = pw.CharField(primary_key=True, max_length=64)
    name = pw.CharField(max_length=512)
    description = pw.TextField(null=True)
    version = pw.CharField(max_length=64)
    installed_at = pw.CharField(max_length=40)
    has_results = pw.BooleanField(default=False)


class RunRow(_Model):
    id = pw.CharField(primary_key=True, max_length=64)
    workflow = pw.CharField(max_length=64, index=True)
    version = pw.CharField(max_length=64)
    group = pw.CharField(max_length=256, index=True)
    name = pw.CharField(max_length=512, null=True)
    owner = pw.CharField(max_length=256)
    owner_uid = pw.IntegerField()
    request = pw.CharField(max_length=512)
    state = pw.CharField(max_length=16, index=True)
    created_at = pw.CharField(max_length=40)
    started_at = pw.CharField(max_length=40, null=True)
    finished_at = pw.CharField(max_length=40, null=True)
    executor = pw.CharField(max_length=64)
    arguments = JSONField(default="{}")
    results = JSONField(null=True)
    messages = JSONField(default="[]")
    run_dir = pw.TextField()


class RunFileRow(_Model):
    run = pw.CharField(max_length=64, index=True)
    key = pw.CharField(max_length=1024)
    source = pw.CharField(max_length=1024)
    size = pw.BigIntegerField(null=True)
    title = pw.TextField(null=True)
    caption = pw.TextField(null=True)


class ResultRow(_Model):
    run = pw.CharField(max_length=64, index=True)
    name = pw.CharField(max_length=256)
    value_num = pw.DoubleField(null=True)
    value_text = pw.TextField(null=True)


class StateChangeRow(_Model):
    run = pw.CharField(max_length=64, index=True)
    state = pw.CharField(max_length=16)
    at = pw.CharField(max_length=40)
    message = pw.TextField(null=True)


TABLES: list[type[_Model]] = [MetaRow, WorkflowRow, RunRow, RunFileRow, ResultRow, StateChangeRow]


def open_database(url: str | None, default_path: Path) -> pw.Database:
    """Connect to the index and bind the models to it. Creates missing tables."""
    if url:
        db = connect(url)
    else:
        db = pw.SqliteDatabase(
            str(default_path),
            pragmas={
                "journal_mode": "wal",
                "synchronous": "normal",
                "busy_timeout": 10000,
                "foreign_keys": 1,
            },
            check_same_thread=False,
        )
    proxy.initialize(db)
    try:
        db.connect(reuse_if_open=True)
        db.create_tables(TABLES, safe=True)
        row = MetaRow.get_or_none(MetaRow.key == "schema_version")
        if row is None:
            MetaRow.insert(
                key="schema_version", value=str(SCHEMA_VERSION)
            ).on_conflict_ignore().execute()
        elif int(row.value) != SCHEMA_VERSION:
            raise IndexError_(
                f"index is at schema version {row.value}, this flowbatch uses {SCHEMA_VERSION}",
                hint="run `flowbatch reindex` to rebuild it from the results tree",
            )
    except pw.DatabaseError as exc:
        raise IndexError_(
            f"the index database cannot be used: {exc}",
            file=url or str(default_path),
            hint="run `flowbatch reindex` to rebuild it from the results tree",
        ) from None
    return db


def clear(db: pw.Database) -> None:
    """Empty every table but the metadata (before a reindex)."""
    with db.atomic():
        for table in TABLES:
            if table is not MetaRow:
                table.delete().execute()
