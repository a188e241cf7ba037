"""The results tree and its index, written together.

:meth:`Store.transition` is the one place that changes a run's state: it checks the
transition (:func:`flowbatch.runs.apply`), writes ``run.json`` atomically (the truth), then
mirrors the run, its files, results and the state change into the index in one
transaction. A crash between the two writes leaves the index behind the tree, never
ahead; :meth:`Store.sync_active` (at daemon start) and ``reindex`` catch it up.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import logging
import os
import stat
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import peewee as pw

from ..config import resolve_sqlite_url
from ..errors import FlowbatchError, IndexError_, NotFoundError
from ..logs import Repeated
from ..runs import ACTIVE, RunRecord, State, apply, now_iso
from ..text import is_text, shown
from . import atomic, migrate, siteid
from .index import (
    SCHEMA_VERSION,
    ClaimRow,
    MetaRow,
    ReadOnlySqlite,
    ResultRow,
    RunFileRow,
    RunRow,
    StateChangeRow,
    display_url,
    error_line,
    open_database,
    sqlite_path,
)
from .layout import RUN_JSON, Layout, this_host
from .owner import SiteOwner

log = logging.getLogger("flowbatch.store")

#: called after every state change: (run, previous state)
Listener = Callable[[RunRecord, State], None]


#: the errors of a run.json write that a later try may mend: a full disk, a quota, a
#: failing device (writes that fail otherwise raise, as before)
RETRIED_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})
#: free space below which no request is taken in and no run launched (its records and
#: its own files need room)
MIN_FREE_BYTES = 4 << 20
#: seconds a look at the free space stands for (:meth:`Store.has_room`)
ROOM_EVERY = 0.5


def room_note(path: Path) -> str:
    """The file system of ``path`` as the log says it when there is no room: which path,
    how much is free, what to do (found by review: a start on a full disk said only
    "tick failed", with a traceback)."""
    try:
        st = os.statvfs(path)
    except OSError as exc:
        return f"the file system of {path} cannot be looked at ({exc.strerror or exc})"
    if st.f_flag & os.ST_RDONLY:
        return (
            f"the file system of {path} is mounted read-only: remount it read-write (dmesg "
            "says why it was remounted so, after an error)"
        )
    if st.f_files and not st.f_favail:
        return f"the file system of {path} has no inodes left: remove files there (df -i {path})"
    free = st.f_bavail * st.f_frsize
    return (
        f"the file system of {path} has {free / 2**20:.1f} MiB free to the daemon's user "
        f"(it takes requests in with {MIN_FREE_BYTES / 2**20:.0f} MiB): free space there "
        f"(df -h {path}); the daemon goes on by itself"
    )


class Store:
    def __init__(
        self,
        layout: Layout,
        database_url: str | None = None,
        *,
        fsync: bool = False,
        check_index: bool = True,
        adopt_index: bool = False,
    ) -> None:
        """``adopt_index``: make the index this site's even where it records another
        site (``reindex --adopt``, which rebuilds it next; see :mod:`.siteid`)."""
        self.layout = layout
        self.fsync = fsync
        self._batch_txn: Any = None  # the open batch's transaction (SQLite)
        if database_url:  # the site config's is resolved already; a caller's may not be
            database_url = resolve_sqlite_url(database_url, layout.root)
        _new_index_for_owner(database_url, layout)
        self.db = open_database(database_url, layout.index_db, self._no_older_daemon)
        try:
            self.ownership = self._check_owner(database_url, adopt_index)
        except BaseException:
            self.db.close()
            raise
        self.listeners: list[Listener] = []
        #: runs whose ``run.json`` was written but whose index rows were not (see write)
        self.unindexed: dict[str, RunRecord] = {}
        #: runs whose ``run.json`` could not be written (a full or failing disk): their
        #: record in memory is the truth, written again at each tick (flush_unwritten)
        self.unwritten: dict[str, RunRecord] = {}
        #: the runs whose index rows the open batch holds uncommitted (its commit may fail)
        self._batch_runs: dict[str, RunRecord] = {}
        self._room_until = 0.0  # has_room: room was seen, until then (monotonic)
        #: why nothing more is written into the index (see detach_index); None: it is
        self.detached: str | None = None
        self._unindexed_said = Repeated(log)  # flush_unindexed's failures, said sparingly
        if check_index:
            self.check_not_lost()

    def _check_owner(self, url: str | None, adopt: bool) -> siteid.Ownership:
        """Refuse another site's index (a copied site whose ``database:`` still names the
        first one's); record this site in its own (:mod:`.siteid`)."""
        path = sqlite_path(url, self.layout.index_db)
        try:
            return siteid.check(
                self.db,
                self.layout.root,
                display_url(url) if url else str(self.layout.index_db),
                in_site=siteid.index_in_site(path, self.layout.root),
                read_only=isinstance(self.db, ReadOnlySqlite),
                adopt=adopt,
            )
        except pw.DatabaseError as exc:
            raise IndexError_(
                f"the index database cannot be used: {error_line(exc)}",
                file=display_url(url) if url else str(self.layout.index_db),
                hint="try again; `flowbatch doctor` looks at the index",
            ) from None

    def _no_older_daemon(self, found: int) -> None:
        """Before an index at schema version ``found`` is upgraded: no daemon of another
        process serves the site (one of an older flowbatch, which would go on writing the
        upgraded index as it knows it: found by review, `runs list` of a newer flowbatch
        upgraded it under the running daemon of an older one). The daemon that upgrades
        at its start holds the lock itself by then, or holds none yet."""
        who = other_daemon(self.layout.root, this_host())
        if who is not None:
            raise IndexError_(
                f"the index is at schema version {found}, older than this flowbatch's "
                f"({SCHEMA_VERSION}), and a daemon serves the site ({who}): upgrading "
                "it under that daemon's older flowbatch would break the daemon's writes",
                hint="restart the daemon with this flowbatch (it upgrades the index at "
                "its start), or use the flowbatch the daemon runs",
            )

    def check_not_lost(self) -> None:
        """A new index beside a tree that has runs means the old one was deleted or
        replaced: say so, rather than serve an empty leaderboard as if it were the truth.
        (An index that exists but lags the tree after a crash is caught up by
        :meth:`sync_active`, not refused.)"""
        if not getattr(self.db, "flowbatch_fresh", False) or RunRow.select().exists():
            return
        first = next(iter(self.iter_run_dirs()), None)
        if first is not None:
            # leave it new (no schema version): the next command must say so again
            MetaRow.delete().where(MetaRow.key == migrate.VERSION_KEY).execute()
            raise IndexError_(
                "the index holds no runs but the results tree does "
                f"(e.g. {first.relative_to(self.layout.root)}): it was deleted or replaced",
                hint="run `flowbatch reindex` to rebuild it from the results tree",
            )

    # -- reading ------------------------------------------------------------------------
    def run_dir(self, run: RunRecord) -> Path:
        return self.layout.run_dir(run.workflow, run.id)

    def load(self, run_id: str) -> RunRecord:
        """A run from its ``run.json`` (found through the index, else by searching the
        tree); one whose ``run.json`` this process could not write is its record in memory
        (the file is older: a cancel of a run that had ended applied to it and lost the
        end, found by review)."""
        held = self.unwritten.get(run_id)
        if held is not None:
            return held
        row = RunRow.get_or_none(RunRow.id == run_id)
        run_dir = self.row_dir(row) if row else self.layout.find_run_dir(run_id)
        return self.load_dir(run_dir)

    def row_dir(self, row: Any) -> Path:
        """The folder of an index row's run, in this site's tree as it stands: never the
        row's ``run_dir`` as written (a site folder moved elsewhere, or a copy left at the
        old place, was read from there: found by review)."""
        return self.layout.run_dir(row.workflow, row.id)

    @staticmethod
    def load_dir(run_dir: Path, *, acts: bool = False) -> RunRecord:
        """The record in ``run_dir/run.json``. A root daemon writes that file itself and
        keeps it root-owned in a folder the run's user owns: a ``run.json`` that is a
        symlink or belongs to someone else was put there by that user and is refused.
        Root's is always the daemon's: a root daemon serves a service user's site too
        (``results/`` is then that user's), and no run's user can make a file of root's.

        ``acts``: the caller is a daemon about to launch, adopt or signal what an active
        record names; as root, one of the site owner's naming another user is refused
        (:func:`_refuse_borrowed_user`). Commands that only read or queue (root's ``runs
        cancel`` on a site the owner's daemon serves) read the owner's records as ever."""
        path = run_dir / RUN_JSON
        try:
            # no blocking open: a FIFO put there would hold the daemon's start for ever
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFoundError(f"no run.json in {run_dir}") from None
        except OSError as exc:
            raise FlowbatchError(f"cannot read {path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise FlowbatchError(f"{path} is not a regular file: it is not trusted")
            owner = st.st_uid
            daemon = _tree_owner(run_dir)
            if owner not in (daemon, 0):
                raise FlowbatchError(
                    f"{path} belongs to uid {owner}, not to the daemon's user (uid {daemon}, "
                    "the owner of results/): it was replaced from inside the run and is "
                    "not trusted",
                    hint="check the run; to remove it, delete its folder by hand, then "
                    "`flowbatch reindex` (with the daemon stopped) drops it from the index",
                )
            raw = fh.read()
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            run = RunRecord.from_dict(data)
        except (ValueError, TypeError, KeyError) as exc:
            raise FlowbatchError(f"{path} is not a valid run record: {exc}") from None
        if acts and owner != 0 and os.geteuid() == 0 and run.state in ACTIVE:
            _refuse_borrowed_user(path, run, owner)
        if run.files and (b"\\ud" in raw or b"\\uD" in raw):  # an escaped surrogate
            # perhaps a file name that is not UTF-8, which an older flowbatch listed (its
            # page and index rows then failed): no output, as a run lists them now
            run.files = [
                f
                for f in run.files
                if not isinstance(f, dict)
                or (is_text(f.get("key")) and is_text(f.get("source", f.get("key"))))
            ]
        return run

    # -- writing ------------------------------------------------------------------------
    def write(
        self,
        run: RunRecord,
        *,
        index: bool = True,
        change: dict[str, Any] | None = None,
        tree: bool = True,
        ended: bool = False,
        durable: bool = False,
    ) -> None:
        """Write ``run.json`` then its index rows (in that order: the tree leads).
        ``tree=False``: the caller has just written this very ``run.json`` (intake).
        ``ended``: the run was active until this change, so it has no file or result rows
        to replace yet. ``durable``: on disk before this returns (a scheduler's intent,
        written before its submission: a power loss must not lose it while the job lives
        on in the scheduler), the file and its folder synced.

        A ``run.json`` that cannot be written (a full disk, an I/O error) is not the
        caller's failure, unless ``durable``: the change has happened (a process started,
        a run ended), the record in memory holds it, and it is written again at each tick
        (:meth:`flush_unwritten`), its index rows after it (the tree leads). A caller that
        stopped half-way left the run where no tick looked at it again (found by review:
        a run launched on a full disk stayed PENDING for ever, and ran twice after a
        restart)."""
        if tree:
            run_dir = self.run_dir(run)
            try:
                atomic.write_bytes(
                    run_dir / RUN_JSON,
                    atomic.record_bytes(run.to_dict()),
                    fsync=self.fsync or durable,
                )
                if durable:
                    atomic.sync_folder(run_dir)
            except OSError as exc:
                # its caller must not go on (a submission after its intent); an error a
                # retry cannot mend (a folder the run's user put at run.json) is raised
                if durable or exc.errno not in RETRIED_ERRORS:
                    raise
                self._not_written(run, exc)
                return
            if self.unwritten.pop(run.id, None) is not None:
                self.unindexed[run.id] = run  # its history rows too, whole
        if index and self.detached is None:
            try:
                with self._unit():
                    self._index_run(run, replace=not ended)
                    if change:
                        self._insert_change(run.id, change)
            except (pw.DatabaseError, pw.InterfaceError) as exc:
                # the tree has the change: the index catches up from it (flush_unindexed)
                # instead of the caller failing half-way with the run in neither state
                log.error("index write of run %s failed, retried later: %s", run.id, exc)
                self.unindexed[run.id] = run
            except Exception as exc:
                # not the database: a value of the record it cannot take (the text of
                # every row is made valid first: this is the last guard). A retry would
                # fail the same way; the state change stands, as the tree holds it.
                log.error(
                    "run %s cannot be indexed (its run.json holds it; `flowbatch reindex` "
                    "leaves it out): %s: %s",
                    run.id,
                    type(exc).__name__,
                    exc,
                )
            else:
                if self._batch_txn is not None:  # uncommitted: the commit may still fail
                    self._batch_runs[run.id] = run

    def detach_index(self, why: str) -> None:
        """Write nothing more into the index, from now on: it is another site's (the
        daemon saw it adopted under it, :meth:`flowbatch.daemon.Daemon.index_taken`).
        ``run.json`` files are still written, so the tree keeps every change for the
        index this site gets next (its ``reindex``, the next daemon's start)."""
        self.detached = why
        self.unindexed.clear()

    def owed(self) -> bool:
        """Whether writes are left to catch up: run.json files or index rows."""
        return bool(self.unwritten or (self.unindexed and self.detached is None))

    def _not_written(self, run: RunRecord, exc: OSError) -> None:
        first = run.id not in self.unwritten
        self.unwritten[run.id] = run
        if first:
            log.error(
                "run %s is %s, but its run.json cannot be written (%s): written again at "
                "each tick; free the space (or fix the disk) under %s",
                run.id,
                run.state.value,
                exc.strerror or exc,
                self.layout.results,
            )

    def has_room(self, *, fresh: bool = False) -> bool:
        """Whether the results tree's file system has room for new runs and their records
        (:data:`MIN_FREE_BYTES` free to its users, and no record owed): a run launched
        where its launch cannot be recorded may be started again by a next daemon.
        ``fresh``: a new look, not the one of the last :data:`ROOM_EVERY` seconds."""
        if self.unwritten:
            return False
        now = time.monotonic()
        # asked between every request of a burst: a statvfs is a round trip on NFS;
        # looked at twice a second at most
        if now < self._room_until and not fresh:
            return True
        try:
            st = os.statvfs(self.layout.results)
        except OSError:
            return True  # cannot tell: the writes say
        # a file system mounted read-only has room on paper: every write failed, and the
        # serving daemon took each request up again at once (found by review: a core at
        # 100% and 41,000 log lines in 10 s)
        room = st.f_bavail * st.f_frsize >= MIN_FREE_BYTES and not st.f_flag & os.ST_RDONLY
        self._room_until = now + ROOM_EVERY if room else 0.0
        return room

    def flush_unwritten(self) -> list[RunRecord]:
        """Write again the ``run.json`` of the runs whose write failed (:meth:`write`),
        each (one that fails does not hold up the others); each written one's index rows
        follow (:meth:`flush_unindexed`), and a run that ended gets its page (the
        listeners), which its first write could not have. Returns the runs written."""
        written: list[RunRecord] = []
        for run in list(self.unwritten.values()):
            try:
                atomic.write_bytes(
                    self.run_dir(run) / RUN_JSON,
                    atomic.record_bytes(run.to_dict()),
                    fsync=self.fsync,
                )
            except OSError as exc:
                log.debug("run.json of run %s still not written: %s", run.id, exc)
                continue
            written.append(run)
            self.unwritten.pop(run.id, None)
            self.unindexed[run.id] = run
            log.info("run.json of run %s written at last (%s)", run.id, run.state.value)
            if run.state not in ACTIVE:
                for listener in self.listeners:
                    try:
                        listener(run, run.state)
                    except Exception:
                        log.exception("after run %s was written at last", run.id)
        return written

    def flush_unindexed(self) -> None:
        """Index again, from their records, the runs whose index write failed (a database
        that was away); they stay listed while it still fails."""
        if not self.unindexed or self.detached is not None:
            return
        runs = list(self.unindexed.values())
        try:
            self.index_many(runs)
        except (pw.DatabaseError, pw.InterfaceError) as exc:
            self._unindexed_said.failed(
                "index still not writable (%d runs waiting): %s", len(runs), _own_error(exc)
            )
            return
        self._unindexed_said.ok("the index is writable again")
        log.info("indexed %d runs whose index write had failed", len(runs))
        for run in runs:
            self.unindexed.pop(run.id, None)

    def transition(
        self,
        run: RunRecord,
        target: State,
        *,
        messages: list[str] | None = None,
        reason: str | None = None,
        again: bool = False,
        **updates: Any,
    ) -> bool:
        """Change ``run``'s state (the only way to), record the change, notify listeners.

        ``updates`` set other fields of the record in the same write (results, files,
        handle, steps). Returns False when the run already was in ``target`` (unless
        ``again``: :func:`flowbatch.runs.apply`).
        """
        previous = run.state
        if not apply(run, target, messages=messages, reason=reason, again=again):
            return False
        for key, value in updates.items():
            setattr(run, key, value)
        if _ends_before_start(run.started_at, run.finished_at):
            # the wall clock stepped back while it ran (found by review: a run time of
            # -7182 s on the leaderboard): no end before its start
            run.finished_at = run.started_at
        self.write(run, change=dict(run.history[-1]), ended=previous in ACTIVE)
        log.info(
            "run %s %s -> %s%s",
            run.id,
            previous.value,
            target.value,
            f" ({run.history[-1]['message']})" if run.history[-1].get("message") else "",
        )
        for listener in self.listeners:
            try:
                listener(run, previous)
            except Exception:  # a page, a note: never the end of the change that made it
                log.exception("after run %s became %s", run.id, target.value)
        return True

    # The two statements of every state change are prepared once as plain SQL: building
    # them through peewee's query builder cost about 1 ms each, most of a change's cost.
    # ``INSERT ... ON CONFLICT DO UPDATE`` reads the same on SQLite (>= 3.24) and PostgreSQL.
    # They run on the models' database (the proxy), as every other index statement does.
    def _upsert_run(self, run_id: str, values: dict[str, Any]) -> None:
        db = RunRow._meta.database
        sql, fields = _run_upsert_sql(db.param)
        values = {"id": run_id, **values}
        db.execute_sql(sql, [f.db_value(values[f.name]) for f in fields])

    def _insert_change(self, run_id: str, change: dict[str, Any]) -> None:
        db = StateChangeRow._meta.database
        db.execute_sql(
            _insert_sql(
                StateChangeRow._meta.table_name, ("run", "state", "at", "message"), db.param
            ),
            [run_id, change["state"], change["at"], _text(change.get("message"))],
        )

    def _index_run(self, run: RunRecord, *, replace: bool = True) -> None:
        # the text a participant chose (a group, a name, a request's, a file's name, a
        # result) is made text every database takes (_text): one that is not valid UTF-8
        # failed the whole state change, and reindex with it
        values = {
            "workflow": run.workflow,
            "version": run.version,
            "group": _text(run.group),
            "name": _text(run.name),
            "owner": _text(run.owner),
            "owner_uid": run.owner_uid,
            "request": _text(run.request),
            "state": run.state.value,
            "created_at": run.created_at,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "executor": run.executor,
            "arguments": run.arguments,
            "results": run.results,
            "messages": run.messages,
            "run_dir": str(self.run_dir(run)),
        }
        self._upsert_run(run.id, values)
        if run.state in ACTIVE:
            return
        if replace:  # a run just ended has no such rows yet: spare the deletes
            RunFileRow.delete().where(RunFileRow.run == run.id).execute()
            ResultRow.delete().where(ResultRow.run == run.id).execute()
        if run.files:
            _insert_rows(
                RunFileRow,
                ("run", "key", "source", "size", "title", "caption"),
                [
                    (
                        run.id,
                        _text(f["key"]),
                        _text(f.get("source", f["key"])),
                        f.get("size"),
                        _text(f.get("title")),
                        _text(f.get("caption")),
                    )
                    for f in run.files
                    # a file named in no valid UTF-8 is no output (a link to its name
                    # written as text would reach no file): an older flowbatch listed it
                    if is_text(f["key"]) and is_text(f.get("source", f["key"]))
                ],
            )
        if run.results:
            _insert_rows(
                ResultRow,
                ("run", "name", "value_num", "value_text"),
                [
                    (
                        run.id,
                        _text(k),
                        _as_double(v),
                        _text(v) if isinstance(v, str) else None,
                    )
                    for k, v in run.results.items()
                ],
            )

    def index_many(self, runs: Iterable[RunRecord]) -> int:
        """Index runs read from the tree (reindex, catch-up); history rows included.

        A run whose record the index refuses (anything but the database being away or
        failing: a value of a run.json edited by hand or written by an older flowbatch)
        is logged, naming it, and left out, what was written of it undone, instead of
        failing every other run: reindex comes here after the index was cleared. A
        failure of the database itself (:class:`peewee.OperationalError`, a lost
        connection) is raised. Nothing, on a detached store (:meth:`detach_index`)."""
        if self.detached is not None:
            return 0
        sqlite = isinstance(self.db, pw.SqliteDatabase)
        count = 0
        with self.db.atomic():
            for run in runs:
                try:
                    # PostgreSQL: a failed statement aborts the transaction, so each run
                    # has a savepoint; SQLite goes on, and a failed run's rows are deleted
                    with _nothing() if sqlite else self.db.atomic():
                        self._index_history(run)
                except (pw.OperationalError, pw.InterfaceError):
                    raise
                except Exception as exc:
                    log.error(
                        "run %s (%s) left out of the index: %s: %s",
                        run.id,
                        self.run_dir(run),
                        type(exc).__name__,
                        exc,
                    )
                    if sqlite:
                        self._unindex(run.id)
                    continue
                count += 1
        return count

    def _index_history(self, run: RunRecord) -> None:
        self._index_run(run)
        StateChangeRow.delete().where(StateChangeRow.run == run.id).execute()
        if run.history:
            StateChangeRow.insert_many(
                [{"run": run.id, **h, "message": _text(h.get("message"))} for h in run.history]
            ).execute()

    def forget(self, run_id: str) -> None:
        """Remove run ``run_id`` from the index (its folder is gone: made again later)."""
        self.unindexed.pop(run_id, None)
        with self.db.atomic():
            self._unindex(run_id)

    @staticmethod
    def _unindex(run_id: str) -> None:
        """Delete what the index holds of run ``run_id``."""
        RunRow.delete().where(RunRow.id == run_id).execute()
        RunFileRow.delete().where(RunFileRow.run == run_id).execute()
        ResultRow.delete().where(ResultRow.run == run_id).execute()
        StateChangeRow.delete().where(StateChangeRow.run == run_id).execute()

    # -- recovery -----------------------------------------------------------------------
    def iter_run_dirs(self, workflow: str | None = None) -> Iterable[Path]:
        results = self.layout.results
        if not results.is_dir():
            return
        # a dot-folder is no workflow (``.<wf>.uninstalling``: an uninstall under way)
        workflows = (
            [results / workflow]
            if workflow
            else sorted(p for p in results.iterdir() if not p.name.startswith("."))
        )
        for wf in workflows:
            runs = wf / "runs"
            if runs.is_dir():
                for run_dir in sorted(runs.iterdir()):
                    # a dot-folder is a run intake has not finished (made whole by rename)
                    if not run_dir.name.startswith(".") and (run_dir / RUN_JSON).is_file():
                        yield run_dir

    def sync_active(self, host: str | None = None) -> list[RunRecord]:
        """Bring the index up to the tree after a crash; return the tree's active runs.

        Looks at the runs the index calls active and at run folders the index does not
        know (a crash after ``run.json`` was written but before its row). ``host`` (a site
        several daemon hosts serve): only that host's runs, since another host's live runs
        change under it and a row written from a stale read would set the index back.
        """
        known = {r.id: r.run_dir for r in RunRow.select(RunRow.id, RunRow.run_dir)}
        indexed_active = {
            r.id
            for r in RunRow.select(RunRow.id).where(RunRow.state.in_([s.value for s in ACTIVE]))
        }
        stale: list[RunRecord] = []
        active: list[RunRecord] = []
        for run_dir in self.iter_run_dirs():
            run_id = run_dir.name
            if run_id in known and run_id not in indexed_active:
                continue
            try:
                run = self.load_dir(run_dir, acts=True)
            except UntrustedRecord as exc:
                if run_id in indexed_active and self.run_dir(exc.run) == run_dir:
                    # a run the index has as active, whose record a root daemon does not
                    # act on (one an earlier daemon of the site's owner wrote): ended
                    # ERROR, by a record of root's, rather than left active for ever in
                    # the index (found in the re-read); its process, if any, is not
                    # touched. A folder the index never knew is left alone, as is a
                    # record naming another run or workflow (its write would land there).
                    stale.append(self._end_untrusted(run_dir, exc))
                else:
                    log.error("cannot read %s: %s", run_dir / RUN_JSON, exc)
                continue
            except (OSError, FlowbatchError) as exc:
                log.error("cannot read %s: %s", run_dir / RUN_JSON, exc)
                continue
            if host is not None and run.host not in (None, host):
                continue
            stale.append(run)
            if run.state in ACTIVE:
                active.append(run)
        if stale:
            try:
                self.index_many(stale)
            except pw.PeeweeException as exc:
                cause = _own_error(exc)
                if "full" not in str(cause):
                    raise FlowbatchError(
                        f"the index cannot be brought up to the results tree: {cause}",
                        hint="see `flowbatch doctor`",
                    ) from exc
                # a full disk: the daemon waits for room as it does once it serves (the
                # tree has the runs; their rows are written at a tick with room), rather
                # than stop, or fail a tick with a traceback (found by review)
                for run in stale:
                    self.unindexed[run.id] = run
                log.error(
                    "the index cannot be brought up to the results tree (%s): the rows of "
                    "%d run(s) are written once there is room; %s",
                    cause,
                    len(stale),
                    room_note(self.layout.index_db.parent),
                )
        return active

    def _end_untrusted(self, run_dir: Path, exc: UntrustedRecord) -> RunRecord:
        """``exc``'s run, ended ERROR by a ``run.json`` of this daemon's (its index row
        follows with the others of :meth:`sync_active`)."""
        run = exc.run
        message = f"ended: its run.json was not trusted: {exc.reason}"
        apply(run, State.ERROR, messages=[message])
        log.error("run %s %s", run.id, message)
        self.write(run, index=False)
        return run

    def run_id_taken(self, run_id: str) -> bool:
        """Whether the index holds a run ``run_id``, or the second point of a sweep
        claimed as it (``<run_id>-1``: its first point may have been skipped as already
        run), for a new claim's random id. Lookups of the primary key by equality, so
        the answer does not hang on the collation of a server's index."""
        db = RunRow._meta.database
        sql = (
            f'SELECT 1 FROM "{RunRow._meta.table_name}" '
            f'WHERE "id" IN ({db.param}, {db.param}) LIMIT 1'
        )
        return db.execute_sql(sql, [run_id, f"{run_id}-1"]).fetchone() is not None

    # -- several daemon hosts -------------------------------------------------------------
    def claim(self, key: str, run_id: str, host: str) -> bool:
        """Record in the index that ``host`` claimed the request file ``key`` as ``run_id``.

        The key is unique: False when the same file was already claimed as another run (a
        double claim, which the caller must drop). True again for the same run."""
        try:
            with self.db.atomic():
                ClaimRow.insert(key=key, run=run_id, host=host, at=now_iso()).execute()
        except pw.IntegrityError:
            row = ClaimRow.get_or_none(ClaimRow.key == key)
            return row is not None and row.run == run_id
        return True

    def forget_claims(self, before: str) -> int:
        """Remove the claim rows recorded before ``before`` (an ISO time, as
        :func:`~flowbatch.runs.now_iso` writes them: they sort as text); their count."""
        with self.db.atomic():
            return int(ClaimRow.delete().where(ClaimRow.at < before).execute())

    def ping(self) -> None:
        """A server index: one cheap statement, which reconnects a connection the server
        dropped (:class:`~flowbatch.store.index.ReconnectingPostgres`). A no-op on SQLite."""
        if not isinstance(self.db, pw.SqliteDatabase) and not self.db.in_transaction():
            self.db.execute_sql("SELECT 1")

    def batch(self) -> Any:
        """The index writes of a daemon tick in one transaction (SQLite): the commit,
        with its WAL write, comes once per tick instead of once per state change; a
        write that fails there is written again whole by :meth:`flush_unindexed`
        (:meth:`_unit`).

        What was written is committed even when the block fails (the tree already holds
        it); a killed daemon loses at most the uncommitted rows of one tick, which
        :meth:`sync_active` reads back from the tree at the next start. PostgreSQL (shared
        sites): one transaction per write as before, since a failed statement there
        aborts the whole transaction and other hosts must see claims at once."""
        return self._batch() if isinstance(self.db, pw.SqliteDatabase) else _nothing()

    def _unit(self) -> Any:
        """The index rows of one write, all or none: a transaction of their own, except
        inside a transaction already open on SQLite (a tick's batch), where a savepoint
        per write (two statements more, a fifth of a state change's index time) is
        spared. There a failed statement
        is undone alone and the earlier rows of its write stay; the write then counts
        as failed, and :meth:`flush_unindexed` writes the run's rows again, whole."""
        if isinstance(self.db, pw.SqliteDatabase) and self.db.in_transaction():
            return _nothing()
        return self.db.atomic()

    @contextmanager
    def _batch(self) -> Iterator[None]:
        if self.db.in_transaction():
            yield  # already inside one (a nested batch, a caller's transaction)
            return
        self._batch_runs = {}
        done = False
        try:
            with self.db.atomic() as txn:
                self._batch_txn = txn
                try:
                    yield
                except BaseException:
                    self._commit(txn)  # keep the rows of the changes that did happen
                    raise
                finally:
                    self._batch_txn = None
                done = True
        except (pw.DatabaseError, pw.InterfaceError) as exc:
            if not done:
                raise  # the block's own error (its writes' are caught where they happen)
            # the commit at the end failed (a full disk): the rows of the batch are gone
            self._batch_lost(exc)
        finally:
            self._batch_runs = {}

    def _commit(self, txn: Any) -> None:
        """Commit ``txn`` (peewee begins the next transaction at once); a commit that
        fails rolls back, and its runs' rows are written again later."""
        try:
            txn.commit()
        except (pw.DatabaseError, pw.InterfaceError) as exc:
            with contextlib.suppress(pw.DatabaseError, pw.InterfaceError):
                txn.rollback()
            self._batch_lost(exc)
        else:
            self._batch_runs = {}

    def _batch_lost(self, exc: BaseException) -> None:
        """A batch's commit failed: its runs are indexed again, whole, from their records
        (they were left out of the index until a restart: found by review)."""
        exc = _own_error(exc)
        if self._batch_runs:
            log.error(
                "index commit failed (%s): the index rows of %d runs are written again",
                exc,
                len(self._batch_runs),
            )
        self.unindexed.update(self._batch_runs)
        self._batch_runs = {}

    def commit_batch(self) -> None:
        """Commit what the open batch has written so far and go on in a new transaction
        (a long intake of a burst, in which runs also start and end, shows them in the
        index as it goes); nothing when no batch is open."""
        if self._batch_txn is not None:
            self._commit(self._batch_txn)

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """One at a time among the daemons sharing a PostgreSQL index (a session advisory
        lock named ``name``); a no-op elsewhere, where one daemon serves the site."""
        if not isinstance(self.db, pw.PostgresqlDatabase):
            yield
            return
        key = zlib.crc32(f"flowbatch:{name}".encode())
        self.db.execute_sql("SELECT pg_advisory_lock(%s)", (key,))
        try:
            yield
        finally:
            self.db.execute_sql("SELECT pg_advisory_unlock(%s)", (key,))

    def active_rows(self) -> list[RunRow]:
        return list(
            RunRow.select()
            .where(RunRow.state.in_([s.value for s in ACTIVE]))
            .order_by(RunRow.created_at)
        )

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.close()


#: the lock of the results tree's rebuilds, in the site folder: ``reindex`` holds it alone,
#: the commands that change the tree beside the daemon (runs delete, cleanup, install,
#: uninstall) share it. A removal during a reindex came back as runs of the rebuilt index
#: whose folders were gone (found by review)
REBUILD_LOCK = "reindex.lock"


def _new_index_for_owner(url: str | None, layout: Layout) -> None:
    """Root (a root daemon) about to make the site's SQLite index on a site another
    user owns makes the file first, empty (SQLite takes an empty file as a new
    database), and gives it to the site's owner: made by SQLite, it was root's, and
    the owner's `reindex`, `report` and `install` were refused it. SQLite, run as root,
    gives its ``-wal`` and ``-shm`` files the database file's owner. Only for an index
    in the site's folder: one elsewhere is where its admin put it."""
    owner = layout.owner
    if owner is None:
        return
    path = sqlite_path(url, layout.index_db)
    if path is None or path.parent != layout.root:
        return
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        return
    try:
        owner.give(fd)
    finally:
        os.close(fd)


@contextmanager
def tree_change(
    root: Path, command: str, *, rebuild: bool = False, owner: SiteOwner | None = None
) -> Iterator[None]:
    """Hold the site's :data:`REBUILD_LOCK` while ``command`` changes the tree: shared, or
    alone for a ``rebuild``. Refused at once when the other kind holds it.

    Root (the Python API in root's process) on a site another user owns gives the file
    to the site's owner (``owner``: :attr:`Layout.owner`), with one it finds root's (an
    older flowbatch's): made root's, the owner's commands that change the tree could no
    longer open it (found by review)."""
    fd = os.open(root / REBUILD_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        if owner is not None and os.fstat(fd).st_uid == 0:
            owner.give(fd)  # not one with another name (a hard link)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if rebuild else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FlowbatchError(
                "a command that changes the results tree (runs delete, cleanup, install, "
                "uninstall) is running: the index would be rebuilt without its change"
                if rebuild
                else "`flowbatch reindex` is rebuilding the index: this change would be lost",
                hint=f"run `flowbatch {command}` again once it has finished",
            ) from None
        yield
    finally:
        os.close(fd)


def _own_error(exc: BaseException) -> BaseException:
    """A failed commit's own error, not the rollback's that came after it (SQLite rolls a
    transaction back itself when the disk is full: "cannot rollback - no transaction is
    active" hid "database or disk is full")."""
    while "cannot rollback" in str(exc) and exc.__context__ is not None:
        exc = exc.__context__
    return exc


def lock_holders(root: Path) -> list[dict[str, Any]]:
    """What the processes holding a daemon lock of the site at ``root`` wrote into them
    (any host's lock file the file system shows: ``host``, ``pid``, ``role`` when not a
    serving daemon's)."""
    return [h for path in sorted(root.glob("daemon*.lock")) if (h := lock_holder_at(path))]


def other_daemon(root: Path, host: str) -> str | None:
    """What another process holding a daemon lock of the site at ``root`` wrote into it,
    as one line; None when there is none. This process on ``host`` (a pid is a host's
    own) is no other."""
    for holder in lock_holders(root):
        if (holder.get("pid"), holder.get("host")) != (os.getpid(), host):
            return ", ".join(f"{k} {v}" for k, v in holder.items())
    return None


def lock_holder_at(path: Path) -> dict[str, Any] | None:
    """Who holds the daemon lock file ``path`` (what the holder wrote into it, checked
    against the kernel's: :func:`holder_record`), or None when it is free or missing."""
    try:
        with open(path, encoding="utf-8") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return holder_record(fh)
            fcntl.flock(fh, fcntl.LOCK_UN)
    except OSError:
        pass
    return None


#: seconds a look at a held lock waits for its holder to write its record into it (it
#: writes it right after it took the lock: microseconds, unless its disk is full)
HOLDER_WAIT = 1.0


def holder_record(fh: IO[str]) -> dict[str, Any]:
    """What the process holding the lock on the file ``fh`` is open on wrote into it.

    The holder writes its record (host, pid, start, role) only after it has the lock, so
    a look in between read the record of an earlier holder, long gone, or nothing (found
    by review: of two daemons started at once, the second named a process that did not
    exist). So the record's pid is checked against the kernel's lock table: a record
    that is not the holder's is waited for, :data:`HOLDER_WAIT` seconds at most; then
    what is known is said: the holder's pid, and that its record is not written (key
    ``record``). Where the table names no holder (not Linux, or a holder on another
    host of a network file system), the record is taken as it is."""
    deadline = time.monotonic() + HOLDER_WAIT
    while True:
        fh.seek(0)
        text = fh.read().strip()
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            record = {"info": text} if text else None
        pids = flock_holders(os.fstat(fh.fileno()))
        if not pids:
            return record or {"info": "unknown"}
        if record is not None and record.get("pid") in _seen_as(pids):
            return record
        if time.monotonic() >= deadline:
            return {"host": this_host(), "pid": pids[0], "record": "not written yet"}
        time.sleep(0.02)


def _seen_as(pids: list[int]) -> set[int]:
    """``pids`` and the pids those processes have in the pid namespaces they are in: a
    holder in a container writes its pid as it sees it there (found by review: a
    container's daemon was said not to have written its record, after a second's wait,
    at every `status`)."""
    out = set(pids)
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if line.startswith("NSpid:"):
                        out.update(int(x) for x in line.split()[1:] if x.isdecimal())
                        break
        except OSError:
            continue
    return out


def flock_holders(st: os.stat_result) -> list[int]:
    """The processes of this host holding an ``flock`` on the file ``st`` is of, from the
    kernel's lock table (``/proc/locks``); [] where it cannot be read."""
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            table = fh.read()
    except OSError:
        return []
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    for line in table.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:5530168 0 EOF"; a process waiting for the
        # lock has a line of its own, marked "->"
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device:
            with contextlib.suppress(ValueError):
                pids.append(int(fields[4]))
    # 0 or less: a holder in another pid namespace (a container), whose pid is not ours
    return [pid for pid in pids if pid > 0]


class UntrustedRecord(FlowbatchError):
    """An active run's record read whole, but not one a root daemon may act on
    (:func:`_refuse_borrowed_user`); ``run`` is what it says."""

    def __init__(self, run: RunRecord, reason: str, *, hint: str) -> None:
        super().__init__(reason, hint=hint)
        self.run = run


def _refuse_borrowed_user(path: Path, run: RunRecord, owner: int) -> None:
    """Raise when root (a root daemon, which launches, adopts and signals what an
    active run's record names) reads ``path``, an active run's record that is not
    root's but the site owner's (uid ``owner``), naming another user than its writer:
    a run to run as another user, or a handle of a process it does not say is the
    writer's. The site's owner can write such a record (``results/`` is theirs): a
    root daemon took it, and ran the owner's script as root or as any participant, or
    adopted and later killed any process (found by review). A record the owner wrote
    names the owner alone; a run of another user's is launched by root's record."""
    handle = run.handle or {}
    names = run.owner_uid if "pid" not in handle else handle.get("uid")
    if run.owner_uid == owner and names == owner:
        return
    raise UntrustedRecord(
        run,
        f"{path} belongs to uid {owner} (the owner of results/), not to root, and its "
        f"active run names uid {names if names is not None else '(none)'} as the user "
        f"it runs as (owner_uid {run.owner_uid}): a root daemon runs and signals another "
        "user's run only by a record of its own, and this one is not trusted",
        hint="check the run folder; to drop the run, delete its folder by hand, then "
        "`flowbatch reindex` (with the daemon stopped) drops it from the index",
    )


def _tree_owner(run_dir: Path) -> int:
    """The uid that writes run records: the owner of ``results/`` (run_dir's grand-grand
    parent), i.e. the daemon's user (root, or the service user)."""
    try:
        return run_dir.parent.parent.parent.stat().st_uid
    except OSError:
        return os.geteuid()


@functools.cache
def _run_upsert_sql(param: str) -> tuple[str, list[pw.Field]]:
    fields = list(RunRow._meta.sorted_fields)
    cols = ", ".join(f'"{f.column_name}"' for f in fields)
    marks = ", ".join([param] * len(fields))
    updates = ", ".join(
        f'"{f.column_name}" = excluded."{f.column_name}"' for f in fields if f.name != "id"
    )
    sql = (
        f'INSERT INTO "{RunRow._meta.table_name}" ({cols}) VALUES ({marks}) '
        f'ON CONFLICT ("id") DO UPDATE SET {updates}'
    )
    return sql, fields


def _as_double(value: Any) -> float | None:
    """A result's numeric column (a double): None for text, booleans and numbers beyond
    a double's range (run.json keeps the exact value)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _text(value: Any) -> Any:
    """Text as every index database takes it: valid UTF-8 (:func:`flowbatch.text.shown`)
    and no NUL (PostgreSQL text cannot hold it). run.json keeps the value as it is;
    anything but a string is returned as it is."""
    if not isinstance(value, str):
        return value
    value = shown(value)
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _insert_rows(model: type[pw.Model], columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Plain prepared INSERTs (peewee's query builder cost more than the statements)."""
    db = model._meta.database
    sql = _insert_sql(model._meta.table_name, columns, db.param)
    for row in rows:
        db.execute_sql(sql, row)


@functools.cache
def _insert_sql(table: str, columns: tuple[str, ...], param: str) -> str:
    cols = ", ".join(f'"{c}"' for c in columns)
    return f'INSERT INTO "{table}" ({cols}) VALUES ({", ".join([param] * len(columns))})'


def run_rows(
    workflow: str | None = None, state: str | None = None, group: str | None = None
) -> pw.ModelSelect[RunRow]:
    query = RunRow.select().order_by(RunRow.created_at, RunRow.id)
    if workflow:
        query = query.where(RunRow.workflow == workflow)
    if state:
        query = query.where(RunRow.state == state)
    if group:
        query = query.where(RunRow.group == group)
    return query


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _ends_before_start(started: str | None, finished: str | None) -> bool:
    if not (started and finished) or finished >= started:  # ISO text: the usual case
        return False
    return datetime.fromisoformat(finished) < datetime.fromisoformat(started)
