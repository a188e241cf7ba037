"""The Peewee index: a queryable mirror of the results tree.

The tree (``run.json`` files, installed templates) is the truth; everything here can be
rebuilt from it by :func:`flowbatch.store.reindex.reindex`. SQLite in WAL mode by default;
a database URL in the site config selects another (PostgreSQL).

A user who may not write an SQLite index (a participant reading a site that the daemon's
user owns) opens it read-only (:class:`ReadOnlySqlite`): nothing is set up, upgraded or
written, and errors never ask them to run what only the site's owner can.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import peewee as pw
from playhouse.shortcuts import ReconnectMixin

from ..errors import IndexError_
from . import migrate

#: bump with a step in :mod:`flowbatch.store.migrate` (v2: indexes on run_row's filters;
#: v3: 64-bit owner_uid and unbounded output file paths on PostgreSQL; v4: an index on
#: run_row's request, and the meaning of a PENDING run with a handle: submitted to Slurm)
SCHEMA_VERSION = 4

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
    owner_uid = pw.BigIntegerField(index=True)
    request = pw.CharField(max_length=512, index=True)
    state = pw.CharField(max_length=16, index=True)
    created_at = pw.CharField(max_length=40)
    started_at = pw.CharField(max_length=40, null=True)
    finished_at = pw.CharField(max_length=40, null=True, index=True)
    executor = pw.CharField(max_length=64)
    arguments = JSONField(default="{}")
    results = JSONField(null=True)
    messages = JSONField(default="[]")
    run_dir = pw.TextField()

    class Meta:
        # the ranking reads one workflow's SUCCESS runs
        indexes = ((("workflow", "state"), False),)


class RunFileRow(_Model):
    run = pw.CharField(max_length=64, index=True)
    key = pw.TextField()
    source = pw.TextField()
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


class ClaimRow(_Model):
    """One row per request file claimed by a daemon: the unique key that makes a double
    claim impossible when several daemon hosts share a queue (a rename that "succeeds"
    twice, as NFS may let it). Not derived from the tree: ``clear`` keeps it."""

    key = pw.CharField(primary_key=True, max_length=512)  # name, inode, mtime, size
    run = pw.CharField(max_length=64)
    host = pw.CharField(max_length=256)
    at = pw.CharField(max_length=40)


# ClaimRow came without a schema version bump: create_tables(safe=True) adds it to an
# older index, and a flowbatch without it never reads it
TABLES: list[type[_Model]] = [
    MetaRow,
    WorkflowRow,
    RunRow,
    RunFileRow,
    ResultRow,
    StateChangeRow,
    ClaimRow,
]

#: pg_advisory_xact_lock key serializing schema set-up of daemons starting together
_SCHEMA_LOCK = 0x666C6F77  # "flow"
#: seconds a PostgreSQL connection attempt may take unless the URL says otherwise
CONNECT_TIMEOUT = 10
#: seconds an SQLite index locked by another process's set-up is waited for
LOCKED_RETRY_SECONDS = 10.0


def display_url(url: str) -> str:
    """A database URL with its password hidden (in the user part or a query parameter);
    one with no password is shown as written (``urlunsplit`` drops the ``//`` of an empty
    host: ``sqlite:////abs.db`` came out as ``sqlite://abs.db``, another file)."""
    parts = urlsplit(url)
    has_query_password = any(k.lower() == "password" for k, _ in parse_qsl(parts.query))
    if parts.password is None and not has_query_password:
        return url
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = "&".join(
        f"{k}=***" if k.lower() == "password" else f"{k}={v}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def error_line(exc: BaseException) -> str:
    """A driver's message on one line (psycopg2's span several)."""
    text = "; ".join(" ".join(line.split()) for line in str(exc).splitlines() if line.strip())
    return text.rstrip(" .?!")


class ReconnectingPostgres(ReconnectMixin, pw.PostgresqlDatabase):
    """PostgreSQL that opens a new connection when the server dropped the old one (a
    restart, a failover, an idle timeout), for a statement outside a transaction; a
    transaction cut short still fails (its changes could be lost), and the next
    statement reconnects. The daemon pings once per tick, so each tick starts connected."""

    reconnect_errors = (
        (pw.OperationalError, "server closed the connection"),
        (pw.OperationalError, "terminating connection"),
        (pw.OperationalError, "connection already closed"),
        (pw.InterfaceError, "connection already closed"),
        (pw.OperationalError, "could not receive data from server"),
        (pw.OperationalError, "ssl connection has been closed"),
        (pw.OperationalError, "no connection to the server"),
    )


def writable(path: Path) -> bool:
    """Whether this process (its effective user and groups) may write ``path``, or make
    it (in its nearest folder that exists) when it does not exist yet."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return os.access(path, os.W_OK, effective_ids=os.access in os.supports_effective_ids)


def may_write(path: Path) -> bool:
    """Whether this process may write the SQLite database ``path``: the file (when it
    exists) and its folder, where SQLite makes the ``-wal``, ``-shm`` and journal files."""
    return writable(path.parent) and (not path.exists() or writable(path))


def is_sqlite_url(url: str) -> bool:
    """Whether the index URL names SQLite (one host's) rather than a server database.
    The one test of it: schemes are case-blind (``SQLITE:///...`` opened SQLite, while a
    test of its own in the site took it for a server's, shared by several hosts; found
    by review)."""
    return urlsplit(url).scheme.startswith("sqlite")  # urlsplit lowers the scheme


def sqlite_path(url: str | None, default_path: Path) -> Path | None:
    """The SQLite file of the index (``default_path`` without a URL), without opening it;
    None for a server database or an SQLite URL that names no plain file."""
    if not url:
        return default_path
    if not is_sqlite_url(url):
        return None
    from playhouse.db_url import parse

    database = str(parse(url).get("database") or "")
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def owner_of(path: Path) -> str:
    """The user who owns ``path`` (else its folder): the site's owner, for a message."""
    from ..accounts import user_name

    for p in (path, path.parent):
        try:
            return user_name(p.stat().st_uid)
        except OSError:
            continue
    return "the site's owner"


def _file_state(path: str) -> tuple[int, int, int] | None:
    """The file's inode, size and modification time: any write changes one of them."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class ReadOnlySqlite(pw.SqliteDatabase):
    """An SQLite index opened by a user who may not write it (a participant).

    SQLite's read-only mode (``mode=ro``) reads a WAL-mode database only where its
    ``-wal`` and ``-shm`` files exist (a writer, the daemon, has it open: a reader that
    may not write the ``-shm`` keeps its own copy of it in memory) or can be made
    (SQLite's "WAL mode" page, "Read-Only Databases"). With neither there (no daemon
    running) and no right to make them in the folder, the file is opened
    ``immutable=1``: read as a plain file, without locks. That is right only while no one
    writes the file, so only when there is no ``-wal`` file (a writer in WAL mode keeps
    one while it has the database open; one that starts during a query may make that
    query fail; the next query sees its -wal and opens the file ``mode=ro`` again).

    No pragma is set: ``journal_mode`` would write the file's header; the others are the
    writer's business."""

    def __init__(self, database: str, **kwargs: Any) -> None:
        kwargs.pop("pragmas", None)
        super().__init__(database, **kwargs)
        #: how the open connection reads the file: "mode=ro" or "immutable=1"
        self.flowbatch_open_mode: str | None = None
        #: never a new index: Store's check for a lost one writes, and is the owner's
        self.flowbatch_fresh = False

    _immutable_seen: tuple[int, int, int] | None = None

    def _open(self, option: str) -> sqlite3.Connection:
        uri = f"file:{quote(str(Path(self.database).absolute()), safe='/')}?{option}"
        conn = sqlite3.connect(
            uri, uri=True, timeout=self.timeout, isolation_level=None, **self.connect_params
        )
        try:
            # SQLite opens lazily: the -shm is looked for at the first read
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except BaseException:
            conn.close()
            raise
        self.flowbatch_open_mode = option
        self._immutable_seen = _file_state(self.database) if option == "immutable=1" else None
        return conn

    def cursor(self, named_cursor: Any = None) -> Any:
        # a writer that started since the file was opened immutable: its changes go to
        # the -wal, which that connection never reads; read through SQLite's locks again.
        # One that came and went meanwhile (a cron tick, `--until-idle`) left no -wal but
        # changed the file under the immutable connection, which then read a mix of old
        # and new pages ("database disk image is malformed", counts that disagree with
        # rows: found by review): opened again too.
        if (
            self.flowbatch_open_mode == "immutable=1"
            and not self.is_closed()
            and not self.in_transaction()
            and (
                Path(f"{self.database}-wal").exists()
                or _file_state(self.database) != self._immutable_seen
            )
        ):
            self.close()
        return super().cursor(named_cursor)

    def _connect(self) -> sqlite3.Connection:
        wal = Path(f"{self.database}-wal")
        try:
            conn = self._open("mode=ro")
        except sqlite3.OperationalError as exc:
            name = getattr(exc, "sqlite_errorname", "")
            if not name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")):
                raise
            # with a -wal a writer (the daemon) opened it meanwhile: its -shm is there now
            conn = self._open("mode=ro" if wal.exists() else "immutable=1")
        try:
            self._add_conn_hooks(conn)  # type: ignore[attr-defined]  # peewee's, unstubbed
        except Exception:
            conn.close()
            raise
        return conn


def _check_sqlite_options(db: pw.SqliteDatabase, url: str) -> None:
    """A URL's query options go to Python's ``sqlite3.connect`` (``timeout`` to peewee):
    one it does not take is said now, in a line, not as a TypeError at the first query."""
    if not db.connect_params:
        return
    try:
        sqlite3.connect(":memory:", **db.connect_params).close()
    except TypeError as exc:
        raise IndexError_(
            f"the index database URL has an option SQLite does not take ({exc})",
            file=display_url(url),
            expected="sqlite:///PATH, options among timeout, detect_types, cached_statements",
            hint="remove it from `database` in flowbatch.yaml (or FLOWBATCH_DATABASE)",
        ) from None


def connect_database(url: str | None, default_path: Path) -> pw.Database:
    """Bind the models to the index database (SQLite at ``default_path`` without a URL).

    An SQLite index this process may not write (:func:`may_write`) is opened read-only
    (:class:`ReadOnlySqlite`). Connects lazily: nothing is read or created until the first
    query."""
    db: pw.Database
    if url:
        from playhouse.db_url import connect  # its backends' modules: not for SQLite

        params: dict[str, Any] = {}
        if urlsplit(url).scheme.startswith(("postgres", "psycopg")):
            # never hang on an unreachable server; the URL's own connect_timeout wins
            params["connect_timeout"] = CONNECT_TIMEOUT
        try:
            db = connect(url, **params)
            if type(db) is pw.PostgresqlDatabase:
                db = ReconnectingPostgres(db.database, **db.connect_params)
        except RuntimeError as exc:  # playhouse: unknown scheme
            raise IndexError_(
                f"unsupported index database URL: {exc}",
                file=display_url(url),
                expected="sqlite:///PATH or postgresql://USER@HOST:PORT/DB",
            ) from None
        if isinstance(db, pw.SqliteDatabase):
            _check_sqlite_options(db, url)
            path = sqlite_path(url, default_path)
            if path is not None and not may_write(path):
                db = ReadOnlySqlite(str(path), timeout=db.timeout, **db.connect_params)
    elif not may_write(default_path):
        db = ReadOnlySqlite(str(default_path), timeout=10, check_same_thread=False)
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
    return db


def _connect(db: pw.Database, server: bool) -> None:
    """Connect; SQLite: retried while another process holds the file's lock for the switch
    to WAL on a new index (SQLite answers "database is locked" there without waiting for
    its busy timeout; seen with four processes opening a new index at once)."""
    if server:
        db.connect(reuse_if_open=True)
        return
    deadline = time.monotonic() + LOCKED_RETRY_SECONDS
    pause = 0.01
    while True:
        try:
            db.connect(reuse_if_open=True)
            return
        except pw.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            if not db.is_closed():
                db.close()
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def open_database(
    url: str | None,
    default_path: Path,
    before_upgrade: Callable[[int], None] | None = None,
) -> pw.Database:
    """Connect to the index, bind the models, create missing tables, upgrade an older one.

    An index made by an older flowbatch is migrated in place (:mod:`.migrate`); one that
    cannot be (or is newer) raises :class:`IndexError_` saying what to do. An index opened
    read-only (:class:`ReadOnlySqlite`) is only checked: it must exist, at this
    flowbatch's schema version; its errors send the user to the site's owner."""
    where = display_url(url) if url else str(default_path)
    db = connect_database(url, default_path)
    if isinstance(db, ReadOnlySqlite):
        _open_read_only(db, where)
        return db
    server = not isinstance(db, pw.SqliteDatabase)
    try:
        _connect(db, server)
    except (pw.DatabaseError, pw.ImproperlyConfigured) as exc:
        if not server:
            folder = Path(db.database).parent if isinstance(db.database, str) else None
            if folder is not None and not folder.is_dir():
                raise IndexError_(
                    f"the index database cannot be made: there is no folder {folder}",
                    file=where,
                    hint="make the folder, or fix `database` in flowbatch.yaml",
                ) from None
            raise _unusable(exc, where, folder) from None
        driver = isinstance(exc, pw.ImproperlyConfigured)
        raise IndexError_(
            f"cannot connect to the index database: {error_line(exc)}",
            file=where,
            hint=(
                "install the driver: pip install 'flowbatch[postgres]'"
                if "postgres" in type(db).__name__.lower()
                else "install the database's Python driver"
            )
            if driver
            else "check that the server is running and reachable from this host, and that "
            "the database and user exist (createdb -O USER DB)",
        ) from None
    try:
        if isinstance(db, pw.PostgresqlDatabase):
            # daemons of several hosts may start together on a new database: one at a
            # time creates or upgrades the tables (CREATE TABLE IF NOT EXISTS races there)
            with db.atomic():
                db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                _set_up(db, before_upgrade)
        else:
            _set_up(db, before_upgrade)
    except IndexError_ as exc:
        raise exc.at(file=where) from None
    except pw.DatabaseError as exc:
        local = not server and isinstance(db.database, str)
        raise _unusable(exc, where, Path(db.database).parent if local else None) from None
    return db


def _unusable(exc: Exception, where: str, folder: Path | None) -> IndexError_:
    """An index that cannot be opened or set up: an SQLite one in ``folder`` on a full
    file system says that (its `-wal` and `-shm` files cannot be made: "disk I/O error"),
    where the message sent the admin to `reindex` (found by review); else rebuild it."""
    try:
        full = folder is not None and os.statvfs(folder).f_bavail == 0
    except OSError:
        full = False
    if full:
        return IndexError_(
            f"the index database cannot be used: {error_line(exc)}: its file system is full",
            file=where,
            hint=f"free space where {folder} is (df), then try again",
        )
    return IndexError_(
        f"the index database cannot be used: {error_line(exc)}",
        file=where,
        hint="run `flowbatch reindex` to rebuild it from the results tree",
    )


def _open_read_only(db: ReadOnlySqlite, where: str) -> None:
    """Connect to an index this process may only read and check its schema version;
    write nothing. The errors name the site's owner: only they may rebuild or upgrade it."""
    path = Path(db.database)
    owner = owner_of(path)
    ask = f"ask the site's owner ({owner}) to check it"
    if not path.exists():
        raise IndexError_(
            "there is no index database yet, and this user may not make it",
            file=where,
            hint=f"the site's daemon makes it when it starts; {ask}",
        )
    try:
        _connect(db, server=False)
        found = migrate.read_version(db)
    except IndexError_ as exc:  # a version that is not a number
        exc.hint = ask
        raise exc.at(file=where) from None
    except pw.DatabaseError as exc:
        raise IndexError_(
            f"the index database cannot be read: {error_line(exc)}", file=where, hint=ask
        ) from None
    if found is None:
        raise IndexError_(
            "the index database holds no tables yet, and this user may not make them",
            file=where,
            hint=f"the site's daemon makes them when it starts; {ask}",
        )
    if found > SCHEMA_VERSION:
        raise IndexError_(
            f"the index is at schema version {found}, newer than this flowbatch ({SCHEMA_VERSION})",
            file=where,
            hint="use the flowbatch the site's daemon runs (a newer version)",
        )
    if found < SCHEMA_VERSION:
        raise IndexError_(
            f"the index is at schema version {found}, older than this flowbatch "
            f"({SCHEMA_VERSION}), and this user may not upgrade it",
            file=where,
            hint=f"the site's owner ({owner}) upgrades it by running any flowbatch command "
            "of this version on the site (the daemon does at its start); or use the "
            "flowbatch the daemon runs",
        )


def _set_up(db: pw.Database, before_upgrade: Callable[[int], None] | None = None) -> None:
    """``before_upgrade(found)`` may refuse (raise) an upgrade of an index at version
    ``found``: one a daemon of an older flowbatch serves."""
    found = migrate.read_version(db)
    # a new index: Store checks it does not stand beside a tree that already has runs
    db.flowbatch_fresh = found is None  # type: ignore[attr-defined]
    if found is not None and found != SCHEMA_VERSION:
        if before_upgrade is not None and found < SCHEMA_VERSION:
            before_upgrade(found)
        migrate.upgrade(db, found, SCHEMA_VERSION)
    # only the missing tables: CREATE INDEX IF NOT EXISTS still locks an existing table,
    # which deadlocks against another daemon's writes on PostgreSQL
    existing = set(db.get_tables())
    db.create_tables([t for t in TABLES if t._meta.table_name not in existing], safe=True)
    if found is None:
        MetaRow.insert(
            key=migrate.VERSION_KEY, value=str(SCHEMA_VERSION)
        ).on_conflict_ignore().execute()


def clear(db: pw.Database) -> None:
    """Empty every table but the metadata (before a reindex)."""
    with db.atomic():
        for table in TABLES:
            if table not in (MetaRow, ClaimRow):
                table.delete().execute()
