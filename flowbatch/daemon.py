"""The daemon: one tick is intake → cancels → dispatch → poll → reports.

It holds an ``flock`` on ``<site>/daemon.lock`` (one daemon per site; a lock left by a
killed daemon is released by the kernel with its process). It wakes at once on inotify
events in the queue (watchdog) and on its children's exits, and otherwise every
``polling.interval`` seconds, which is also the rescan that finds requests written from
other nodes of a shared file system (no inotify events cross NFS or Lustre). The queue is
watched while the daemon sleeps or waits for its runs, not while it takes in a burst
(every tick lists the queue anyway; each claim would be an event for watchdog's threads).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from types import FrameType
from typing import IO, Any

from . import api, faults, notify
from .accounts import user_name
from .errors import FlowbatchError, RequestError
from .executors import build_executors, rebuild_executors, stranded_notes
from .executors.base import Executor
from .executors.local import LocalExecutor
from .executors.notes import SLURM_ABANDONED, SSH_ABANDONED
from .lifecycle import Runner
from .logs import Repeated
from .postproc import PostProcManager
from .queue import Claimed, Intake, IntakeResult, is_request_name
from .report_pages import RunPageWriter, write_run_pages
from .runs import RunRecord, State, now_iso
from .site import Site
from .spec.request import CancelRequest
from .store import atomic, siteid
from .store.index import display_url, sqlite_path
from .store.layout import ID_PATTERN, RUN_PAGE
from .store.owner import SiteOwner, give, give_back, open_folder_in
from .store.store import (
    REBUILD_LOCK,
    RETRIED_ERRORS,
    flock_holders,
    holder_record,
    lock_holder_at,
    room_note,
)

log = logging.getLogger("flowbatch.daemon")

#: while runs are active, leaderboards and pages are rewritten at most this often (s)
REPORT_EVERY = 1.0
#: ... and for at most 1/this of the time: the gap is at least this x the last write's
#: time (a 500-run leaderboard costs 0.13-0.2 s of CPU: at 5x, a 3 s burst wrote it
#: three times, 0.9 ms of the daemon's CPU a run; the final write, at idle, is at once)
REPORT_COST_FACTOR = 20.0
#: a long intake (a burst, runs starting and ending in it) commits its index batch this
#: often (s), so the index shows the runs as they go
BATCH_COMMIT_EVERY = 1.0
#: an intake that has taken in this many requests in one tick stops the queue watcher
#: until the daemon next sleeps (a burst: its own claims would be the watcher's events)
UNWATCH_AFTER = 16
#: seconds between two looks, in idle ticks, for notes of owed reports the daemon did not
#: make (a ``runs delete`` or ``uninstall`` killed before it rewrote the reports)
OTHERS_EVERY = 10.0
#: how long such a note whose command still runs is left to that command
OTHERS_GRACE = 3600.0
#: seconds after a start that made the lock file when the tree is read again (see start)
RESCAN_AFTER = 10.0


class Busy(Exception):
    """Another process holds the site's lock: ``record`` is what it wrote into it, as
    :func:`~flowbatch.store.store.holder_record` checked it (the exception's text is its
    JSON, which :func:`role_of` reads)."""

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__(json.dumps(record))
        self.record = record


#: tries at the site lock when what held it lets go while it is looked at (SiteLock.acquire)
LOCK_LOOKS = 3


class SiteLock:
    """The site's daemon lock (one per host): ``role`` says who holds it, a daemon or a
    ``reindex`` (which holds it while it rebuilds the index)."""

    def __init__(
        self,
        path: Path,
        host: str | None = None,
        role: str = "daemon",
        owner: SiteOwner | None = None,
    ) -> None:
        self.path = path
        self.host = host or socket.gethostname()
        self.role = role
        #: whom a root daemon gives the lock file it makes (the site's owner, whose
        #: `reindex` takes the same lock: :mod:`flowbatch.store.owner`)
        self.owner = owner
        self._fh: IO[str] | None = None
        #: the file was missing when this lock was taken: made here (a first start, or
        #: one removed under a daemon that may still run for a moment)
        self.made = False
        #: why the holder's record could not be written into the file (a full disk)
        self.unrecorded: OSError | None = None

    def acquire(self) -> None:
        made = not os.path.lexists(self.path)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the lifetime
        # a look at the lock (`status`, `doctor`: lock_holder_at holds it shared for a
        # moment) is no holder: where the kernel names none once the record was waited
        # for, the lock is tried again (found by review: a start beside such a look
        # stopped, naming the record of a daemon long gone). A few times at most: where
        # the kernel's table names no one (not Linux, a holder on another host), the
        # holder is the one that answers so each time
        for look in range(LOCK_LOOKS):
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                try:
                    holder = holder_record(fh)
                    if look + 1 < LOCK_LOOKS and not flock_holders(os.fstat(fh.fileno())):
                        continue
                except BaseException:
                    fh.close()
                    raise
                fh.close()
                raise Busy(holder) from None
        self._fh = fh
        self.made = made
        if made:
            give(fh.fileno(), self.owner)
        try:
            self.record()
        except OSError:
            self.release()
            raise

    def record(self) -> None:
        """Write who holds the lock into its file (after a start on a full disk: again,
        once there is room). A write a full or failing disk refuses leaves the lock held
        and :attr:`unrecorded` set: another process then names the holder by its pid
        alone (:func:`~flowbatch.store.store.holder_record`)."""
        assert self._fh is not None
        held = {"host": self.host, "pid": os.getpid(), "started_at": now_iso()}
        if self.role != "daemon":
            held["role"] = self.role
        self._fh.seek(0)
        self._fh.truncate()
        try:  # unbuffered: a write refused leaves nothing for a later flush to fail on
            os.write(self._fh.fileno(), (json.dumps(held) + "\n").encode())
        except OSError as exc:
            if exc.errno not in RETRIED_ERRORS:
                raise
            self.unrecorded = exc
            return
        self.unrecorded = None

    def release(self) -> None:
        if self._fh:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def lost(self) -> bool:
        """Whether the lock file at :attr:`path` is no longer the one this lock holds
        (False when it holds none). One removed (it looks like a stale pid file) or
        replaced lets a second daemon start beside this one (found by review: runs made
        and run twice)."""
        if self._fh is None:
            return False
        try:
            held = os.fstat(self._fh.fileno())
            there = os.stat(self.path)
        except OSError:  # removed; or, over NFS, a stale handle: another host removed it
            return True
        return (there.st_dev, there.st_ino) != (held.st_dev, held.st_ino)

    def retake(self) -> bool:
        """After :meth:`lost` said so: lock the file now at :attr:`path` (made
        again if missing). False when another process holds it: another daemon serves
        the site now."""
        old, self._fh = self._fh, None
        try:
            self.acquire()
        except Busy:
            self._fh = old
            return False
        if old is not None:
            old.close()
        return True


def lock_holder(site: Site) -> dict[str, Any] | None:
    """Who holds the site's daemon lock, or None when it is free."""
    return lock_holder_at(site.lock_path)


class SignalWaker:
    """Sets the daemon's wake-up event for a signal handler, from a thread of its own:
    the handler writes a byte to a pipe (one system call, no lock), the thread reads it
    and sets the event."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._read, self._write = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self._write, False)
        self._wake = wake
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="flowbatch-signals", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """From a signal handler: wake the daemon (after :meth:`close`, nothing: the
        handlers stay installed, and the pipe's number may be another file's by then)."""
        if self._closed:
            return
        with contextlib.suppress(OSError):  # a full pipe: a wake-up is on its way
            os.write(self._write, b"w")

    def close(self) -> None:
        """Stop the thread and close the pipe; returns once the thread has ended (on a
        loaded machine it was still there a moment after: seen once in CI), unless it
        is the thread calling."""
        self._closed = True  # first: a handler running from here on writes nothing
        with contextlib.suppress(OSError):
            os.write(self._write, b"q")
        os.close(self._write)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            while True:
                data = os.read(self._read, 64)
                if not data or b"q" in data:
                    return
                self._wake()
        finally:
            os.close(self._read)


class PendingReports:
    """Workflows whose report files are behind their runs, noted on disk: a daemon killed
    between a run's end and the leaderboard's write would otherwise leave the leaderboard
    without that run until the workflow's next run (its restart finds nothing to do).

    One empty file per workflow in ``<site>/reports-pending/`` (per host on a shared
    site), made before a change the leaderboard must show (a run's terminal state, a
    post-processing run's end: :meth:`mark`; a file only when there is none) and removed
    once a report handed over after the workflow's last change is written
    (:meth:`written`). A start writes the reports of the workflows left there
    (:meth:`left`)."""

    def __init__(
        self,
        folder: Path,
        results: Path,
        owner: SiteOwner | None = None,
        site_root: Path | None = None,
    ) -> None:
        self.folder = folder
        self.results = results
        #: the folder ``folder`` is in, whose names below it are never followed through
        #: a link (the site folder: its owner could put a link in place of
        #: ``reports-pending``, and a root daemon made and gave them the notes where it
        #: led, and removed a file of the name there; found by review)
        self.site_root = site_root or folder.parent
        #: whom a root daemon gives the folder and notes (the site's owner, whose
        #: commands note and clear them too: :mod:`flowbatch.store.owner`)
        self.owner = owner
        self._lock = threading.Lock()
        self._count = 0  # changes marked so far
        #: workflow -> the number of its last change, while this daemon's note of it is on
        #: disk (a workflow here has its file)
        self._last: dict[str, int] = {}

    def mark(self, workflow: str) -> None:
        """A change ``workflow``'s reports must show is about to be written."""
        with self._lock:
            self._count += 1
            noted = workflow in self._last
            self._last[workflow] = self._count
            if noted:
                return
            try:
                folder = self._open_folder(make=True)
                try:
                    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                    fd = os.open(workflow, flags, 0o644, dir_fd=folder)
                    try:
                        if os.fstat(fd).st_nlink == 1:  # not a file with a name elsewhere
                            give(fd, self.owner)
                    finally:
                        os.close(fd)
                finally:
                    os.close(folder)
            except OSError as exc:  # the reports are still written; only a crash forgets
                log.warning("cannot note pending reports of %s: %s", workflow, exc)

    def _open_folder(self, *, make: bool) -> int:
        """A descriptor of :attr:`folder`, each of its names below :attr:`site_root`
        opened through no link (ELOOP where one is a link); ``make``: the missing ones
        made (a root daemon's the site owner's)."""
        return open_folder_in(self.site_root, self.folder, self.owner, make=make)

    def handed_over(self) -> int:
        """A report is about to be written from the index as it is now: every change
        marked so far is in it. Returns their count, for :meth:`written`."""
        with self._lock:
            return self._count

    def written(self, workflows: set[str], upto: int) -> None:
        """A report of ``workflows`` handed over at ``upto`` is written: the notes of those
        with no change since are removed. (Reports are written in a thread of their own:
        a later one may be handed over before an earlier one is done, so a workflow
        changed since ``upto`` keeps its note whatever happened in between.)"""
        with self._lock:
            for workflow in workflows:
                if self._last.get(workflow, 0) > upto:
                    continue
                try:
                    folder = self._open_folder(make=False)
                    try:
                        os.unlink(workflow, dir_fd=folder)
                    except FileNotFoundError:
                        pass
                    finally:
                        os.close(folder)
                except FileNotFoundError:
                    pass  # no folder: no note
                except OSError as exc:
                    log.warning("cannot clear pending reports of %s: %s", workflow, exc)
                    continue
                self._last.pop(workflow, None)

    def others(self) -> set[str]:
        """The workflows of notes this daemon did not make and whose maker is gone: a
        removal (``runs delete``, ``uninstall``, ``cleanup``) notes the reports it will
        change, in the file it names itself in, and removes the note once it rewrote
        them; one killed in between leaves it while this daemon runs, which :meth:`left`
        reads at a start only. A note whose command still runs is its own (for up to
        :data:`OTHERS_GRACE`); an empty one is an earlier daemon's."""
        try:
            folder = self._open_folder(make=False)
        except OSError:
            return set()
        try:
            with os.scandir(folder) as listing:
                entries = [(e.name, e.is_file(follow_symlinks=False)) for e in listing]
            owed = set()
            for name, is_file in entries:
                with self._lock:
                    if name in self._last:
                        continue
                if not ID_PATTERN.match(name) or not (self.results / name / "runs").is_dir():
                    continue
                try:
                    if not is_file or _a_commands(name, folder):
                        continue
                except OSError:
                    continue
                owed.add(name)
            return owed
        except OSError:
            return set()
        finally:
            os.close(folder)

    def left(self) -> set[str]:
        """The workflows a daemon before this one still owed reports of (a note of a
        workflow whose results are gone, or of no workflow at all, is dropped)."""
        try:
            folder = self._open_folder(make=False)
        except FileNotFoundError:
            return set()
        except OSError as exc:  # a link in its place (not followed), say
            log.warning("cannot read the pending reports in %s: %s", self.folder, exc)
            return set()
        try:
            names = os.listdir(folder)
            owed = set()
            for name in names:
                if ID_PATTERN.match(name) and (self.results / name / "runs").is_dir():
                    with contextlib.suppress(OSError):
                        if _a_commands(name, folder):
                            continue  # a removal at work: it rewrites them (else others())
                    owed.add(name)
                    continue
                try:
                    os.unlink(name, dir_fd=folder)
                except OSError:
                    pass  # not a note of ours (a folder): left alone
            return owed
        finally:
            os.close(folder)


def _a_commands(name: str, folder: int | None = None) -> bool:
    """A note of owed reports made by a command that still runs (a removal at work, for
    up to :data:`OTHERS_GRACE`): its own to remove. An empty note is a daemon's.
    ``name`` is in the open folder ``folder`` (or a path)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(name, flags, dir_fd=folder)
    try:
        text = os.read(fd, 64)
        made = os.fstat(fd).st_mtime
    finally:
        os.close(fd)
    first = text.split(b"\n", 1)[0].strip()
    if not first.isdigit() or time.time() - made >= OTHERS_GRACE:
        return False
    return _alive(int(first))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


class Daemon:
    #: seconds ``--until-idle`` waits once nothing is left to do but what waits on a fault
    #: a tick cannot mend (an index that keeps failing, a full disk, a request's place),
    #: before it ends with an error (it ticked forever before)
    UNINDEXED_PATIENCE = 60.0
    #: seconds between two looks at whose index the daemon writes into (index_taken):
    #: one read of two rows, bounded however many runs come and go
    INDEX_OWNER_EVERY = 10.0

    def __init__(self, site: Site, *, role: str = "daemon") -> None:
        self.site = site
        self._stuck_since: float | None = None  # --until-idle: see _given_up
        self.wakeup = threading.Event()
        self._waker: SignalWaker | None = None  # the signal handlers' (_install_signals)
        self.stopping = False
        self.reload_requested = False
        #: a tick failing for a reason flowbatch names (FlowbatchError): said once, then
        #: once a minute while it lasts, and its end (see _serve)
        self._tick_failing = Repeated(log)
        self._tick_error: str | None = None  # what the last failed tick said
        self.executors: dict[str, Executor] = build_executors(
            site.config, self.wakeup.set, site_root=site.root
        )
        self.intake = Intake(site)
        self.runner = Runner(site, self.executors)
        # a post-processing run takes one of the local slots while it runs, and starts
        # only when one is free
        self.postproc = PostProcManager(site, self.wakeup.set, room=self._local_room)
        self.runner.reserved = lambda name: len(self.postproc.active) if name == "local" else 0
        self.pending_reports = PendingReports(
            site.reports_pending_dir, site.layout.results, site.layout.owner, site.root
        )
        self._others_at = time.monotonic()  # the start reads them all (left)
        self.runner.before_report_change = self.pending_reports.mark
        self.postproc.before_report_change = self.pending_reports.mark
        RunPageWriter.attach(site)  # writes a run's page once it has ended
        self.lock = SiteLock(site.lock_path, site.host, role=role, owner=site.layout.owner)
        self.runner.may_launch = self._still_serving
        self._observer: Any = None  # the queue watcher, while serve() sleeps (see watch())
        self._no_inotify = False  # the watcher could not start: rescans only
        self._room = True  # the results tree had room at the last tick (said on a change)
        self._taken = 0  # requests the intake has taken in during this tick
        self.ticks = 0
        #: 0: reports in every tick that changed a workflow (``--once``); serve() sets it
        self.report_every = 0.0
        self._reported_at = 0.0
        self._report_cost = 0.0
        #: serve() writes reports in this thread, so a large leaderboard never holds up
        #: intake and dispatch; None: in the tick itself (``--once``, tests ticking)
        self._reporter: ReportThread | None = None
        self._interleave = True  # runs start during intake (off after a failure there)
        self._committed_at = 0.0  # when the intake's index batch was last committed
        self._handing_over = False  # another daemon holds the lock now: stop() says so
        #: the handlers _install_signals replaced, put back by _close_waker
        self._previous_signals: dict[int, Any] = {}
        #: claims of cancels whose runs are being ended (settled once their end is recorded)
        self._cancels_ending: dict[str, list[Claimed]] = {}
        self._unreachable = Repeated(log)  # a server index away: said once a minute
        self._resync_due = False  # the lock was taken again: the tree may have changed
        self._rescan_at: float | None = None  # a look at the tree again (see start)
        self._handover = site.handover_path  # word from a daemon that lost the lock to this
        #: the site id the index recorded at the start (index_taken compares it)
        self._site_id: str | None = None
        self._owner_seen_at = 0.0  # when index_taken last looked (monotonic)
        self._roots_said: set[Path] = set()  # other roots of this site's id, said once
        #: the index became another site's under this daemon: the error it stops with
        self.disowned: FlowbatchError | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def _give_site_back(self) -> None:
        """A root daemon on a site another user owns gives that user what an older
        flowbatch's root daemon made root's there (:func:`flowbatch.store.owner.give_back`):
        the owner's commands failed on it. Once, at the start, with the site's lock held;
        said in the log. Nothing on a site of root's, or for a daemon that is not root."""
        owner = self.site.layout.owner
        if owner is None:
            return
        site = self.site
        files = [site.lock_path, site.boot_note, site.root / REBUILD_LOCK]
        index = sqlite_path(site.config.database, site.layout.index_db)
        if index is not None and index.parent == site.root:
            files += [index, *(index.with_name(index.name + s) for s in ("-wal", "-shm"))]
        notes = [site.reports_pending_dir, site.root / SSH_ABANDONED, site.root / SLURM_ABANDONED]
        try:
            given = give_back(owner, files, site.layout.results, notes, site.layout.templates)
        except OSError as exc:
            log.warning(
                "cannot give the site's owner (%s) what an older root daemon made root's "
                "in %s: %s; run: chown -R %s:%s %s (the queue's folders stay root's)",
                user_name(owner.uid),
                site.root,
                exc,
                owner.uid,
                owner.gid,
                site.layout.results,
            )
            return
        if given:
            log.warning(
                "gave the site's owner %s what an older root daemon had made root's in %s, "
                "which kept their commands from writing the site: %s",
                user_name(owner.uid),
                site.root,
                ", ".join(given),
            )

    def start(self, *, serve: bool = True) -> None:
        """Take the site's lock and its active runs over; ``serve``: also the requests a
        stopped daemon had claimed (False for `runs cancel`, which touches no request)."""
        self.site.layout.ensure()
        self.lock.acquire()
        if self.lock.role == "daemon":
            self._give_site_back()
            # whose index this is: checked as the store opened it (a copy's refused);
            # looked at again while it serves (index_taken)
            self._site_id = siteid.read_record(self.site.store.db)[0]
            self._owner_seen_at = time.monotonic()
        if self.lock.unrecorded is not None:
            log.error(
                "the lock %s is held, but who holds it cannot be written into it (%s): "
                "written once there is room; %s",
                self.lock.path,
                self.lock.unrecorded.strerror or self.lock.unrecorded,
                room_note(self.lock.path.parent),
            )
        if self.lock.made and self.lock.role == "daemon":
            # the lock file was missing: removed, perhaps, under a daemon that serves on
            # until its next look at it (it then stops, and says so: daemon.handover); a
            # daemon killed instead says nothing: the tree is read again once any
            # daemon would have looked (found by review: its last runs stayed RUNNING)
            self._rescan_at = time.monotonic() + max(
                RESCAN_AFTER, 3 * self.site.config.polling.interval
            )
        self.runner.recover()
        # the post-processing runs an earlier daemon (a cron tick) left running hold
        # their local slots from the first dispatch on (found by review: a tick started
        # a full slot count of runs beside one)
        self.postproc.recover()
        if serve:  # the never-started runs of requests claimed just before the stop,
            # made again whole (a power loss may have emptied their files): see
            # Intake.redo_unstarted. Not for a command that only applies a cancel.
            self.intake.redo_unstarted(self.runner.active)
        self._align_workflows()
        # reports a daemon killed after its runs ended had not written yet, and the pages
        # of those runs (a run's page is written after its state: a kill in between)
        owed = self.pending_reports.left()
        self.runner.changed_workflows |= owed
        for workflow in sorted(owed):
            missing = [
                run_dir
                for run_dir in self.site.store.iter_run_dirs(workflow)
                if not (run_dir / RUN_PAGE).exists()
            ]
            if missing and write_run_pages(self.site, missing):
                log.info("run pages of %s written after a restart", workflow)
        for line in stranded_notes(self.site.config, self.site.root):
            log.error("%s", line)

    def _align_workflows(self) -> None:
        """Each workflow's current version in the index as its templates' record has it:
        an install (or reindex) killed between writing the one and the other left them
        apart, and the leaderboard ranks the index's."""
        from .store.index import WorkflowRow

        try:
            indexed = {row.id: row.version for row in WorkflowRow.select()}
            for workflow in self.site.templates.list_ids():
                current = self.site.templates.meta(workflow).get("current")
                if current and indexed.get(workflow) != current:
                    api.index_workflow(self.site, workflow)
                    log.info("workflow %s: index set to its current version %s", workflow, current)
        except (FlowbatchError, OSError, ValueError) as exc:
            log.error("cannot check the workflows' versions in the index: %s", exc)

    def _lock_retaken(self) -> bool:
        """The lock file was removed or replaced under this daemon: lock it again, or,
        when another daemon holds it now, stop (one daemon serves a site)."""
        if self.lock.retake():
            log.warning(
                "the daemon lock %s was removed or replaced while this daemon held it: "
                "locked again (never remove it: it is no stale pid file, the kernel "
                "releases it with its process)",
                self.lock.path,
            )
            # another process may have held it meanwhile (a `runs cancel` applying itself
            # cancelled a run this daemon held as waiting: found by review)
            self._resync_due = True
            return True
        log.error(
            "the daemon lock %s was removed while this daemon held it, and another daemon "
            "holds the new one: this daemon stops (its runs are the other's now)",
            self.lock.path,
        )
        self._handing_over = True
        self.stopping = True
        self.wakeup.set()
        return False

    def stop(self) -> None:
        self.unwatch()
        store = self.site.store
        store.flush_unwritten()  # a last try: what is not on disk is lost with this process
        for run in store.unwritten.values():
            log.error(
                "run %s is %s, but its run.json could not be written: the next daemon "
                "reads the state written before (a run launched here may be started again)",
                run.id,
                run.state.value,
            )
        try:  # runs being ended: SIGKILLed and recorded now, not left to the next daemon
            self.runner.end_ending()
            self._settle_ended_cancels()
        except Exception:
            log.exception("ending the runs being cancelled or over their time limit")
        try:  # apart: a failure above must not leave it to a next daemon (re-review)
            self.runner.changed_workflows |= self.postproc.end_ending()
        except Exception:
            log.exception("ending the post-processing over its time limit")
        try:
            self.intake.close()  # the handled requests' claims go once their runs are on disk
        except Exception:  # they stay claimed: the next start finds their runs made
            log.exception("settling the claims of the requests handled")
        for executor in [*self.executors.values(), *self.runner.retired]:
            executor.close()
        if self._handing_over:
            self._hand_over()
        self._close_waker()
        self.lock.release()

    def _close_waker(self) -> None:
        """The signal handlers go back to what they were (found by review: a test suite
        that served a daemon in its process no longer stopped on Ctrl-C), then the
        waker's pipe and thread go."""
        for signum, handler in self._previous_signals.items():
            with contextlib.suppress(ValueError, TypeError):  # not the main thread
                signal.signal(signum, handler)
        self._previous_signals = {}
        if self._waker is not None:
            self._waker.close()
            self._waker = None

    def _hand_over(self) -> None:
        """The last act of a daemon whose lock another daemon took: word, in
        :attr:`Site.handover_path`, that the runs it launched or made after the other's
        start (which the other read the tree at) are left to the other, whose next tick
        reads the tree again (:meth:`_take_over`). Without it they stayed RUNNING, their
        ends unrecorded, until the other restarted (found by review)."""
        runs = sorted(self.runner.active)
        try:
            atomic.write_text(
                self._handover,
                json.dumps({"pid": os.getpid(), "at": now_iso(), "runs": runs}) + "\n",
            )
        except OSError as exc:
            log.error(
                "cannot leave word of the hand-over in %s (%s): the daemon that holds the "
                "lock takes this one's %d active run(s) over at its restart",
                self._handover,
                exc.strerror or exc,
                len(runs),
            )
            return
        log.warning("%d active run(s) left to the daemon that holds the lock now", len(runs))

    def _still_serving(self) -> bool:
        """Before each launch (:attr:`Runner.may_launch`): this daemon holds the site's
        lock. A lock removed and taken by another daemon meanwhile: none of the runs this
        one holds as waiting, which the other read from the tree at its start, may be
        launched here too (found by review: one ran twice). Locked again: nothing is
        launched before the tree is read again (the next tick)."""
        if not self.lock.lost():
            return True
        self._lock_retaken()
        return False

    def _resync(self) -> None:
        """After the lock was taken again: the runs held here as another process left
        them in the tree (a run it cancelled ends here; one it launched is adopted),
        then every active run the tree has, and the claims left."""
        self._resync_due = False
        store = self.site.store
        changed = []
        for run_id, held in list(self.runner.active.items()):
            if run_id in store.unwritten:
                continue  # this daemon's record is the newer one
            try:
                found = store.load_dir(store.run_dir(held))
            except (OSError, FlowbatchError):
                continue
            if (found.state, found.attempt, found.handle) != (
                held.state,
                held.attempt,
                held.handle,
            ):
                del self.runner.active[run_id]
                changed.append(run_id)
                if not found.state.active:
                    self.runner.changed_workflows.add(found.workflow)
        self._read_tree_again(
            f"the lock was taken again ({len(changed)} run(s) changed meanwhile"
            + (f": {', '.join(changed[:20])})" if changed else ")")
        )

    def _read_tree_again(self, why: str) -> None:
        """The tree's active runs this daemon does not hold, taken over; the claims left
        in the queue, looked at (as at a start)."""
        taken = self.runner.recover()
        self.intake.look_in_claimed()
        if taken:
            log.warning(
                "%s: %d run(s) taken over: %s",
                why,
                len(taken),
                ", ".join(run.id for run in taken[:20]),
            )

    def _take_over(self) -> None:
        """A daemon that lost the lock to this one handed over (:meth:`_hand_over`): read
        the tree again for active runs this one does not hold, and the queue's claims
        for requests left half-done. The file goes first: word left again meanwhile is
        read at the next tick."""
        path = self._handover
        try:
            note = path.read_text(encoding="utf-8", errors="replace").strip()
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.error("cannot take the hand-over in %s: %s", path, exc.strerror or exc)
            return
        log.warning("a daemon that lost the lock to this one handed over: %s", note[:200])
        self._read_tree_again("after the hand-over")

    def watch(self) -> None:
        """inotify on the queue folder (best effort: the periodic rescan is the fallback).

        serve() calls it before the daemon sleeps, not at its start, and a burst stops it
        (:meth:`unwatch`): a daemon with work lists the queue at every tick anyway, and
        the watcher's threads took the interpreter lock for every claim (an event in the
        watched folder): 10% of a burst's time. A start costs under a millisecond once
        watchdog is imported."""
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # pragma: no cover - watchdog is a dependency
            self._no_inotify = True
            return
        _shorten_move_pairing()
        daemon = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type == "opened":
                    return
                path = getattr(event, "dest_path", "") or event.src_path
                name = os.path.basename(os.fsdecode(path))
                if event.event_type in ("closed", "moved") and is_request_name(name):
                    daemon.intake.ready.add(name)
                if event.event_type in ("closed", "moved", "created", "deleted"):
                    daemon.wakeup.set()

        try:
            observer = Observer()
            observer.schedule(Handler(), str(self.site.layout.queue), recursive=False)
            observer.daemon = True
            observer.start()
            self._observer = observer
        except OSError as exc:
            self._no_inotify = True
            log.warning(
                "no inotify on %s (%s): rescanning every %.1f s",
                self.site.layout.queue,
                exc,
                self.site.config.polling.interval,
            )

    def unwatch(self) -> None:
        """Stop the queue watcher (serve() starts it again before it sleeps)."""
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)

    # -- the tick ---------------------------------------------------------------------------------
    def tick(self) -> None:
        self.ticks += 1
        self._taken = 0
        if self.lock.lost() and not self._lock_retaken():
            return
        if self.index_taken():
            return
        if self._resync_due:
            self._resync()
        if os.path.exists(self._handover):  # a stat a tick
            self._take_over()
        if self._rescan_at is not None and time.monotonic() >= self._rescan_at:
            self._rescan_at = None
            self._read_tree_again("the lock file was made at this daemon's start")
        if self.site.shared:
            try:
                self.site.store.ping()  # a connection the server dropped is made again
            except Exception as exc:  # the server is away: this tick's writes say so
                self._unreachable.failed("index database unreachable: %s", exc)
            else:
                self._unreachable.ok("index database reachable again")
        for run in self.site.store.flush_unwritten():  # run.json files a full disk held back
            self.runner.changed_workflows.add(run.workflow)  # its leaderboard is behind
        self.site.store.flush_unindexed()
        room = self.site.store.has_room()
        if room != self._room:
            self._room = room
            results = self.site.layout.results
            if room:
                log.info("room again under %s: requests are taken in again", results)
            else:
                owed = self.site.store.unwritten
                log.error(
                    "no room under %s: no request is taken in and no run launched until "
                    "there is room; runs that run go on; %s",
                    results,
                    f"the run.json of {len(owed)} run(s) cannot be written: {room_note(results)}"
                    if owed
                    else room_note(results),
                )
        if room and self.lock.unrecorded is not None:
            self.lock.record()  # who holds it, written at last (a start on a full disk)
        # one index transaction for the intake (committed every BATCH_COMMIT_EVERY s in a
        # long one), one for the tick's state changes (not on a shared site, whose claims
        # other hosts must see at once): a commit per phase instead of per change. Each
        # request's runs join the runner as soon as they are made (_start_between).
        self._interleave = True
        self._committed_at = time.monotonic()
        with self._batch():
            # no room: nothing is taken in (the requests wait in the queue)
            intake = self.intake.run_once(between=self._start_between) if room else IntakeResult()
        with self._batch():
            for req, claimed in intake.cancels:
                self.apply_cancel(req, claimed)
            self.runner.dispatch()  # it launches nothing without room (Runner.dispatch)
            if self.runner.poll():
                self.runner.dispatch()  # slots freed by finished runs
            self.runner.changed_workflows |= self.postproc.poll()  # ended post-processing
        self._settle_ended_cancels()
        if not self.runner.active and time.monotonic() - self._others_at >= OTHERS_EVERY:
            self._others_at = time.monotonic()
            self.runner.changed_workflows |= self.pending_reports.others()
        if self.runner.changed_workflows and self._reports_due():
            self.write_reports()

    def index_taken(self) -> bool:
        """Whether the index became another site's while this daemon served (checked at
        the start only, a daemon went on writing its runs into an index another site had
        adopted meanwhile with `reindex --adopt` on a host that did not see this daemon's
        lock: found by review). Looked at every :attr:`INDEX_OWNER_EVERY` seconds, at the
        start of a tick. Another site's id there: the daemon writes nothing more into the
        index (the tree keeps every change), takes nothing in, and stops with
        :attr:`disowned` (which ``run_daemon`` raises: exit 1). Its running runs go on,
        for the next start with an index of the site's own to take over.

        This site's id at another folder is no proof of another site: it is what a host
        that mounts this very folder at another path records (a shared site's hosts do),
        as well as a copy of the site on another host (which no host can tell apart from
        here): said in the log, once per folder, and served on."""
        if self.disowned is not None:
            return True
        now = time.monotonic()
        if self._site_id is None or now - self._owner_seen_at < self.INDEX_OWNER_EVERY:
            return False
        self._owner_seen_at = now
        store = self.site.store
        try:
            index_id, last = siteid.read_record(store.db)
        except Exception as exc:  # the index away: the tick's own writes say so
            log.debug("cannot read whose index this is: %s", exc)
            return False
        where = display_url(self.site.config.database or str(self.site.layout.index_db))
        if (
            index_id is not None
            and index_id != self._site_id
            and siteid.read_site_id(self.site.root) == index_id
        ):
            # this site's own id changed: its site-id file was replaced, and a command
            # recorded the file's id in the site's own index file (siteid.RECLAIM)
            log.warning("the index %s records this site's new site id %s", where, index_id)
            self._site_id = index_id
        if index_id is not None and index_id != self._site_id:
            self.disowned = siteid.taken_over(where, self.site.root, self._site_id, index_id, last)
            log.error("%s", self.disowned.summary())
            store.detach_index(f"the index of the site at {last} now")
            # its reports are the next daemon's, from the site's own index: their notes
            # (reports-pending) stay; none is written from another site's runs
            self.runner.changed_workflows = set()
            self.stopping = True
            self.wakeup.set()
            return True
        if (
            last is not None
            and last not in self._roots_said
            and not siteid.same_folder(last, self.site.root)
        ):
            self._roots_said.add(last)
            log.warning(
                "the index %s records this site (site id %s) at %s now, not at %s: this "
                "folder seen through another path on another host, or a copy of the site "
                "there, whose runs would go into this index too (give a copy an index of "
                "its own: `database:` in its flowbatch.yaml)",
                where,
                index_id,
                last,
                self.site.root,
            )
        return False

    def _settle_ended_cancels(self) -> None:
        """The claims of cancels whose runs were being ended, once their end is recorded."""
        for run_id in [r for r in self._cancels_ending if r not in self.runner.ending]:
            for claimed in self._cancels_ending.pop(run_id):
                self._settle_cancel(claimed, run_id)

    def _start_between(self, made: list[RunRecord]) -> bool:
        """After each request of the intake: its runs join the runner, and when a local
        slot is free (or a local run ended meanwhile) runs start there, so the slots do
        not stand idle while the rest of a burst is taken in. No extra tick: the queue
        is not listed again and the index batch stays open. False once the daemon is
        stopping: the intake ends there, the rest stays claimed."""
        for run in made:
            self.runner.add(run)
        current = self.intake.current
        if current is not None and current.cancels:
            # each cancel as soon as it is read (they are read first): a burst taken in
            # with it no longer held it, nor every slot idle, until its end (found by
            # review: 5,000 runs made, 6.4 s, before the cancel and the first start)
            pending, current.cancels = current.cancels, []
            for req, claimed in pending:
                self.apply_cancel(req, claimed)
        if self.stopping or self.reload_requested:
            return False  # the rest stays claimed: taken in by the next tick
        if self.lock.lost():
            # another daemon serves the site now: this one takes no more; or it was
            # locked again, and the tree is read again first (the next tick)
            self._lock_retaken()
            return False
        if not self.site.store.has_room():
            return False  # the rest waits for room
        self._taken += 1
        if self._taken == UNWATCH_AFTER and self._observer is not None:
            self.unwatch()  # a burst: the ticks list the queue until it is empty
        if not self._interleave:
            return True  # runs start after the intake
        try:
            if time.monotonic() - self._committed_at >= BATCH_COMMIT_EVERY:
                self.site.store.commit_batch()  # the index shows the burst as it goes
                self._committed_at = time.monotonic()
                if self.runner.defer_kills and self.intake.cancel_waiting():
                    # a `runs cancel` dropped during a long burst: the intake ends here,
                    # the rest stays claimed, and the next tick reads the cancel first
                    # (found by review: applied 20 s later, after the whole burst); a
                    # --once tick has no next tick: it takes the whole burst in
                    self.wakeup.set()
                    return False
                # and the leaderboards, as often as between ticks (by the report thread)
                reports = self._reporter is not None and self.runner.changed_workflows
                if reports and self._reports_due():
                    self.write_reports()
            local = self.executors.get("local")
            if isinstance(local, LocalExecutor):
                if local.has_exits():
                    self.runner.poll(only=("local",))
                if self.runner.active.waiting()["local"] and self._local_room():
                    self.runner.dispatch()
        except Exception:  # the tick's own dispatch, poll and reports follow the intake
            log.exception("starting runs during intake failed")
            self._interleave = False
        return True

    def _local_room(self) -> bool:
        local = self.executors.get("local")
        if local is None:
            return True
        taken = len(self.runner.launched("local")) + self.runner.reserved("local")
        return taken < local.limit

    def _batch(self) -> Any:
        if self.site.shared:
            return nullcontext()
        return self.site.store.batch()

    def _reports_due(self) -> bool:
        """Reports are written in every tick with no active run; while runs are active,
        at most every ``report_every`` seconds (and at least REPORT_COST_FACTOR x the last
        write's time), so that a leaderboard of many runs is not rewritten once per
        finished run."""
        if not self.runner.active or not self.report_every:
            return True
        if self._reporter is not None and not self._reporter.idle():
            return False  # the thread is writing: what changed meanwhile waits its turn
        gap = max(self.report_every, REPORT_COST_FACTOR * self._report_cost)
        return time.monotonic() - self._reported_at >= gap

    def write_reports(self) -> None:
        """Post-processing starts here (it launches runs); the report files are written
        here too, or handed to the report thread when serve() runs one."""
        if self.disowned is not None:  # the index is another site's: not from its runs
            return
        changed = self.runner.changed_workflows
        # first: a post-processing run that fails at its start is in this report
        self.postproc.maybe_start(changed)
        upto = self.pending_reports.handed_over()
        if self._reporter is not None:
            self._reporter.submit(changed, upto)
        else:
            try:
                self._write_report_files(changed, upto)
            except FlowbatchError as exc:  # a full disk: kept, written at a next tick
                log.error("reports not written, tried again later: %s", exc.summary())
                return
        self.runner.changed_workflows = set()

    def _write_report_files(self, changed: set[str], upto: int) -> None:
        if self.disowned is not None:  # handed over before: left to the next daemon
            return
        started = time.monotonic()
        faults.point("ranking")
        api.update_reports(self.site, changed)
        self.pending_reports.written(changed, upto)
        self._reported_at = time.monotonic()
        self._report_cost = self._reported_at - started

    def apply_cancel(self, req: CancelRequest, claimed: Claimed) -> None:
        if self._hand_to_owner_host(req, claimed):
            return
        try:
            cancel_run(self.site, self.runner, req.cancel, claimed.uid, req.reason)
        except FlowbatchError as exc:
            if not claimed.fresh and self._already_canceled(req.cancel):
                # claimed by a daemon that stopped after the cancel, before removing it
                log.info("cancel of run %s: done before a restart", req.cancel)
                self._settle_cancel(claimed, req.cancel)
                return
            ended = self._ended_before(req.cancel, claimed.uid)
            if ended is not None:
                # `runs cancel` queued it while the run was active: no error of the
                # request's (found by review: a rejection was left in queue/rejected/)
                log.info("cancel of run %s: it had ended (%s) before the cancel", req.cancel, ended)
                self._settle_cancel(claimed, req.cancel)
                return
            self.intake.reject(claimed, exc.at(file=claimed.name, prefix="cancel"))
            return
        except Exception as exc:  # never re-read the same cancel forever
            log.exception("cancel %s failed", req.cancel)
            self.intake.reject(claimed, FlowbatchError(f"internal error: {exc}", file=claimed.name))
            return
        self._settle_cancel(claimed, req.cancel)

    def _settle_cancel(self, claimed: Claimed, run_id: str) -> None:
        """A cancel's claim goes once the run's end is on disk: kept while its run.json
        could not be written (a full disk), so that a next daemon, reading the older
        state, cancels it again (found by review: the cancelled run ran); kept while the
        run is being ended (SIGTERM sent, its end not recorded yet)."""
        if run_id in self.runner.ending:
            self._cancels_ending.setdefault(run_id, []).append(claimed)
            self.intake.held.add(claimed.path)  # no leftover to take in again meanwhile
            return
        self.intake.held.discard(claimed.path)
        if run_id in self.site.store.unwritten:
            log.warning(
                "cancel of run %s kept claimed: its run.json could not be written yet", run_id
            )
            return
        self.intake.settler.add(claimed.path)  # removed once the run's end is on disk

    def _ended_before(self, run_id: str, uid: int) -> str | None:
        """The final state of ``run_id`` when it has ended and ``uid`` (its owner or root)
        could have cancelled it while it ran; else None."""
        try:
            run = self.site.store.load(run_id)
        except FlowbatchError:
            return None
        if run.state.active or uid not in (0, run.owner_uid):
            return None
        return run.state.value

    def _already_canceled(self, run_id: str) -> bool:
        try:
            return self.site.store.load(run_id).state == State.CANCELED
        except FlowbatchError:
            return False

    def _hand_to_owner_host(self, req: CancelRequest, claimed: Claimed) -> bool:
        """On a shared site, a cancel for a run another host serves goes to that host's
        claimed folder: only the daemon running a run may change its state."""
        if not self.site.shared:
            return False
        try:
            run = self.site.store.load(req.cancel)
        except FlowbatchError:
            return False  # unknown run: cancel_run says so
        if run.host in (None, self.site.host):
            return False
        dest = self.site.layout.claimed / run.host
        dest.mkdir(parents=True, exist_ok=True)
        os.rename(claimed.path, dest / claimed.path.name)
        log.info("cancel of run %s handed to host %s", run.id, run.host)
        return True

    def idle(self, *, index: bool = True) -> bool:
        """Nothing to do: no request, no active run, no report being written and
        (``index``) no index write left to catch up."""
        if self.runner.active:  # first: the folder scans below are for a quiet site
            return False
        return (
            not self._requests_waiting()
            and not self.intake.leftovers()
            and not self.postproc.busy
            and (not index or not self.site.store.owed())  # writes to catch up
            and (self._reporter is None or self._reporter.idle())
        )

    def _requests_waiting(self) -> bool:
        try:
            with os.scandir(self.site.layout.queue) as entries:
                return any(is_request_name(entry.name) for entry in entries)
        except (FileNotFoundError, NotADirectoryError):
            return False

    def _stuck(self) -> list[tuple[str, str]]:
        """What keeps ``--until-idle`` from ending when that is nothing a tick can do: a
        fault of the disk or of the index that only an admin mends. (message, hint) for
        each, or none while anything else is left to do (a run, a request that may be
        taken in, a report, a post-processing)."""
        if self.postproc.busy or (self._reporter is not None and not self._reporter.idle()):
            return []
        store = self.site.store
        out: list[tuple[str, str]] = []
        if not self._room:
            if self.runner.active.launched():  # runs in progress end, and are recorded
                return []
            results = self.site.layout.results
            out.append(
                (
                    f"no room under {results}: no request is taken in and no run launched",
                    f"{room_note(results)}; then run the daemon again: the requests wait in "
                    "the queue, the runs PENDING",
                )
            )
        else:
            if self.runner.active or self._requests_waiting():
                return []
            waiting = self.intake.stuck()
            if waiting is None and self.intake.leftovers():
                return []  # claimed requests it takes up now
            if waiting:
                named = "; ".join(f"{name} ({why})" for name, why in waiting[:3])
                more = f"; and {len(waiting) - 3} more" if len(waiting) > 3 else ""
                out.append(
                    (
                        f"the runs of {len(waiting)} request(s) cannot be made where they "
                        f"belong: {named}{more}",
                        "mend that (the words in brackets), then run the daemon again: the "
                        "requests stay claimed in the queue, and the next start takes them up",
                    )
                )
        if store.unwritten:
            out.append(
                (
                    f"the run.json of {len(store.unwritten)} run(s) stayed unwritable "
                    f"(runs {', '.join(sorted(store.unwritten))})",
                    "free space (or fix the disk) under the results tree, then run the "
                    "daemon again: until then those runs' files say an older state",
                )
            )
        elif store.unindexed:
            out.append(
                (
                    f"the index database stayed unwritable; {len(store.unindexed)} run(s) "
                    "are in the results tree but not up to date in the index",
                    "fix the database (see the errors logged above); the next daemon "
                    "start indexes them from the tree, as does `flowbatch reindex`",
                )
            )
        return out

    def _given_up(self) -> FlowbatchError | None:
        """``--until-idle`` with nothing left to do but what waits on a fault a tick
        cannot mend (:meth:`_stuck`): the error it ends with once that has lasted
        ``UNINDEXED_PATIENCE`` seconds (it ticked forever before, which a request whose
        place failed did too: found by review). Nothing is lost: the tree has the runs,
        and the requests wait in the queue or claimed, for the next start."""
        stuck = self._stuck()
        if not stuck:
            self._stuck_since = None
            return None
        now = time.monotonic()
        if self._stuck_since is None:
            self._stuck_since = now
        if now - self._stuck_since < self.UNINDEXED_PATIENCE:
            return None
        return FlowbatchError(
            "; ".join(what for what, _ in stuck)
            + f", for {self.UNINDEXED_PATIENCE:.0f} s with nothing else left to do",
            hint="; ".join(fix for _, fix in stuck),
        )

    # -- loops ------------------------------------------------------------------------------------
    def serve(self, *, until_idle: bool = False) -> None:
        """Tick until stopped (SIGTERM/SIGINT), or until idle."""
        self._install_signals()
        # a run being cancelled or over its time limit is ended without waiting on this
        # thread: SIGTERM now, SIGKILL a later tick, its end recorded once it is gone (a
        # --once tick waits, as it has no later tick)
        self.runner.defer_kills = self.postproc.defer_kills = True
        interval = self.site.config.polling.interval
        self.report_every = REPORT_EVERY
        # its own index connection is closed in it when it ends (a connection is the
        # thread's: closed from here, it would stay open); what it imports is imported
        # here first, in the thread that takes the signals
        from . import publish  # noqa: F401

        self._reporter = ReportThread(
            self._write_report_files, self.wakeup.set, finish=self.site.store.close
        )
        try:
            self._serve(interval, until_idle)
        finally:
            reporter, self._reporter = self._reporter, None
            reporter.close()  # the reports asked for are written before serve() returns
        if self.runner.changed_workflows:  # stopping with reports held back
            self.write_reports()

    def _serve(self, interval: float, until_idle: bool) -> None:
        while not self.stopping:
            if self.reload_requested:
                self._reload()
                interval = self.site.config.polling.interval
            self.wakeup.clear()
            try:
                self.tick()
            except FlowbatchError as exc:
                # a condition the error names (an index away, a file refused), which may
                # last: said plainly, not with a traceback every poll interval; another
                # error than the last one is said at once
                said = exc.summary()
                if said != self._tick_error:
                    self._tick_error = said
                    self._tick_failing = Repeated(log)
                self._tick_failing.failed(
                    "tick failed; trying again every %.1f s: %s", interval, said
                )
                self.wakeup.wait(interval)
                continue
            except Exception:  # a bug must not stop the site: log it, back off, go on
                log.exception("tick failed; trying again in %.1f s", interval)
                self.wakeup.wait(interval)
                continue
            self._tick_failing.ok("ticks go through again")
            self._tick_error = None
            if until_idle and self.idle():
                break
            if until_idle and self.intake.refused and not self.runner.active:
                # requests wait in a queue it will not take them from: it would never end
                raise FlowbatchError(
                    self.intake.refused,
                    hint="fix the queue (the command above), then run the daemon again",
                )
            if until_idle:
                given_up = self._given_up()
                if given_up is not None:
                    raise given_up
            # an active local run is reaped by the reaper thread, which sets wakeup
            wait = interval
            if until_idle and not self.runner.active and not self.site.store.owed():
                wait = min(interval, self.site.config.polling.settle / 2 or 0.05)
            if self.runner.changed_workflows:  # reports held back: write them in time
                wait = min(wait, self.report_every)
            if self.intake.unsettled():  # a request being written: look when it has settled
                wait = min(wait, self.site.config.polling.settle or wait)
            # a run being ended is due its SIGKILL
            dues = [d for d in (self.runner.next_kill(), self.postproc.next_kill()) if d]
            due = min(dues) if dues else None
            if due is not None:
                wait = min(wait, max(0.01, due - time.monotonic()))
            # about to sleep, unwatched; not with --until-idle: a daemon that exits once the
            # queue is empty lists it at every tick and a run's end wakes it (the watcher
            # cost it about 15 ms of the interpreter's time: watchdog's import, a thread)
            if self._observer is None and not self._no_inotify and not until_idle:
                self.watch()
                continue  # a request dropped before the watch began: seen by this tick
            self.wakeup.wait(wait)

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread() or self._waker:
            return  # once (run_daemon, then serve): one waker thread a daemon

        # a handler never sets the wake-up event itself: it runs on the main thread
        # between two bytecodes, maybe inside that event's clear() or wait(), which hold
        # its lock; set() there waited for ever (found by review: a SIGTERM or a
        # `systemctl reload` at that moment left a daemon that did nothing)
        self._waker = waker = SignalWaker(self.wakeup.set)

        def stop(signum: int, frame: FrameType | None) -> None:
            log.info("signal %s: finishing this tick, leaving runs running", signum)
            self.stopping = True
            waker.poke()

        def reload(signum: int, frame: FrameType | None) -> None:
            self.reload_requested = True
            waker.poke()

        for signum, handler in (
            (signal.SIGTERM, stop),
            (signal.SIGINT, stop),
            (signal.SIGHUP, reload),
        ):
            self._previous_signals[signum] = signal.signal(signum, handler)

    def _reload(self) -> None:
        """SIGHUP: read ``flowbatch.yaml`` again and apply it. Intake checks requests
        against the new config, and the executors are rebuilt from it: an executor whose
        settings did not change is kept as it is (the local one always, with the new
        concurrency); a changed or removed one keeps serving the runs it has launched
        until they end, and new runs go to the new one. The index database cannot be
        switched under a running daemon: a change of ``database`` waits for a restart."""
        self.reload_requested = False
        from .config import load_config

        try:
            config = load_config(self.site.root)
        except FlowbatchError as exc:
            log.error("config not reloaded, keeping the old one: %s", exc.summary())
            return
        old = self.site.config
        if config.database != old.database:
            log.error(
                "database: the change takes effect when the daemon is restarted "
                "(the index is not switched under a running daemon)"
            )
            config = config.model_copy(update={"database": old.database})
        try:
            executors = rebuild_executors(
                self.executors, old, config, self.wakeup.set, site_root=self.site.root
            )
        except Exception as exc:  # never a daemon left half reconfigured
            log.exception("config not reloaded, keeping the old one: %s", exc)
            return
        self.site.config = config
        still = self.runner.reconfigure(executors)
        log.info("reloaded %s", self.site.layout.config)
        for name in still:
            log.warning(
                "executor %s: changed or removed by the reload; its runs already launched "
                "keep its old settings until they end, new runs get the new ones",
                name,
            )


class ReportThread:
    """Writes the report files of the workflows handed to it, one batch at a time, in a
    thread of its own: ranking 100,000 runs and writing their leaderboard takes seconds,
    during which the daemon's tick goes on claiming and launching (the index is read
    through this thread's own connection). Workflows handed over while it writes are
    merged into the next batch."""

    def __init__(
        self,
        write: Callable[[set[str], int], None],
        done: Callable[[], None],
        finish: Callable[[], None] = lambda: None,
    ) -> None:
        self._write = write
        self._done = done
        self._finish = finish  # called in the thread as it ends (closes its connection)
        self._lock = threading.Condition()
        self._pending: set[str] = set()
        self._upto = 0  # the latest hand-over merged into the pending batch
        self._busy = False
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="reports", daemon=True)
        self._thread.start()

    def submit(self, workflows: set[str], upto: int = 0) -> None:
        """Write the reports of ``workflows``; ``upto``: what
        :meth:`PendingReports.handed_over` said (a merged batch counts its latest)."""
        with self._lock:
            self._pending |= workflows
            self._upto = max(self._upto, upto)
            self._lock.notify_all()

    def idle(self) -> bool:
        with self._lock:
            return not self._pending and not self._busy

    def close(self) -> None:
        """Write what is pending, then end the thread."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self._thread.join()

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            try:
                self._finish()
            except Exception:
                log.exception("closing the report thread")

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closing:
                    self._lock.wait()
                if not self._pending:
                    return  # closing, nothing left
                todo, self._pending = self._pending, set()
                upto = self._upto
                self._busy = True
            failed = False
            try:
                self._write(todo, upto)
            except FlowbatchError as exc:  # said (a full disk): tried again below
                log.error("reports of %s not written: %s", ", ".join(sorted(todo)), exc.summary())
                failed = True
            except Exception:  # never the end of the reports: tried again below
                log.exception("writing the reports of %s failed", ", ".join(sorted(todo)))
                failed = True
            finally:
                with self._lock:
                    self._busy = False
                    if failed and not self._closing:  # written again (a full disk)
                        self._pending |= todo
                        self._upto = max(self._upto, upto)
                    self._lock.notify_all()
                self._done()  # wakes the tick (an until-idle daemon waits for this)
            if failed:
                with self._lock:  # not at once: the disk is still full, most likely
                    if not self._closing:
                        self._lock.wait(REPORT_RETRY)


#: seconds before reports that failed to be written are tried again (a full disk)
REPORT_RETRY = 5.0

#: how long watchdog holds an IN_MOVED_FROM to pair it with its IN_MOVED_TO (seconds)
MOVE_PAIRING = 0.02


def _shorten_move_pairing() -> None:
    """watchdog holds every IN_MOVED_FROM for 0.5 s to pair it with an IN_MOVED_TO, and
    its queue hands out nothing behind a held event. Each claim (a rename out of the
    watched queue folder) is such an unpaired event, so every request dropped within
    0.5 s of a claim was seen up to 0.5 s late (p50 230 ms to RUNNING, bench/). Both
    events of one rename come from the same read of the inotify descriptor, so a short
    hold still pairs them."""
    for module, name in (
        ("watchdog.observers.inotify_move_event_grouper", "InotifyMoveEventGrouper"),
        ("watchdog.observers.inotify_buffer", "InotifyBuffer"),  # watchdog < 6
    ):
        try:
            cls = getattr(__import__(module, fromlist=[name]), name)
        except (ImportError, AttributeError):
            continue
        if getattr(cls, "delay", 0) > MOVE_PAIRING:
            cls.delay = MOVE_PAIRING


def cancel_run(site: Site, runner: Runner, run_id: str, uid: int, reason: str | None) -> None:
    """Cancel an active run on behalf of ``uid`` (its owner or root only)."""
    run = runner.active.get(run_id) or site.store.load(run_id)
    check_cancel(run, uid)
    runner.active.setdefault(run.id, run)
    runner.cancel(run, reason or "canceled at user request")


def check_cancel(run: RunRecord, uid: int) -> None:
    """Whether ``uid`` may cancel ``run`` now (its owner or root, an active run): the
    daemon's checks, which ``runs cancel`` makes too before it queues a cancel."""
    run_id = run.id
    if uid not in (0, run.owner_uid):
        raise RequestError(
            f"run {run_id} belongs to {run.owner}; only its owner or root may cancel it"
        )
    if run.state not in (State.PENDING, State.RUNNING):
        raise RequestError(
            f"run {run_id} is {run.state.value}, not active",
            hint="only PENDING or RUNNING runs can be cancelled",
        )


def _python_for_others(site: Site) -> None:
    """A root daemon whose ``${python}`` other users cannot run says so at its start, as
    ``doctor`` does: else each of their runs failed with exit code 126 and the log said
    nothing (found by review: flowbatch installed in a virtual environment under /root)."""
    if os.geteuid() != 0:
        return
    from .accounts import closed_to_others

    closed = closed_to_others(site.config.all_variables()["python"])
    if closed:
        log.warning(
            "the runs of other users cannot start ${python}: %s. set `variables: {python: "
            "/usr/bin/python3}` in flowbatch.yaml, or install flowbatch where every user "
            "can reach it",
            closed,
        )


def run_daemon(site: Site, *, once: bool = False, until_idle: bool = False) -> str | None:
    """Run the daemon; returns a message when another daemon already serves the site.

    It refuses to start on a queue whose folders a participant could replace (those
    that are missing are made, and checked, at the first tick); other users of a
    :class:`Daemon` (``runs cancel`` applying a cancel) never touch the queue."""
    from .queue import check_queue

    check_queue(site, make=False)
    daemon = Daemon(site)
    if not once:
        # first: a SIGINT during the start (its recovery, its imports) stops the daemon
        # once started, rather than a KeyboardInterrupt in the middle of an import, which
        # Python may swallow there, leaving the module's lock for the report thread to
        # wait on for ever (found by review: SIGTERM then hung the daemon)
        daemon._install_signals()
    try:
        _start_when_free(daemon)
    except Busy as busy:
        daemon._close_waker()
        if role_of(str(busy)) == "reindex":  # not served meanwhile: a failure, restarted
            raise FlowbatchError(
                f"flowbatch reindex is rebuilding the index of {site.root} ({busy})",
                hint="start the daemon again once it has finished (systemd does, "
                "Restart=on-failure)",
            ) from None
        if "record" in busy.record:  # who it is, it has not written yet: only its pid
            return f"another process holds the daemon lock of {site.root}: {busy}"
        return f"another flowbatch daemon already serves {site.root}: {busy}"
    except BaseException:
        daemon._close_waker()
        raise
    # systemd (Type=notify) counts the service as started once the lock is held and runs
    # are recovered; without $NOTIFY_SOCKET these calls do nothing. The signal handlers
    # came first: a stop right after READY must end the daemon cleanly.
    notify.ready(f"serving {site.root}")
    _python_for_others(site)
    try:
        if once:
            # runs it launches are detached; the next tick adopts them (PID + start time)
            daemon.tick()
            if daemon.intake.unsettled():
                # a request still being written, or stamped ahead of this host's clock (a
                # copy that kept its writer's time): looked at once more when it has had
                # polling.settle to settle, rather than at the next tick; a stamp in the
                # future would never look settled to ticks that each look once
                time.sleep(site.config.polling.settle)
                daemon.tick()
        else:
            daemon.serve(until_idle=until_idle)
    finally:
        notify.stopping()
        daemon.stop()
    if daemon.disowned is not None:
        # a failure: the service manager's restart meets the refusal of the index, which
        # says the same, until the site has an index of its own
        raise daemon.disowned
    if daemon._handing_over:
        # a failure, so that the service manager starts it again (Restart=on-failure):
        # the holder may be a command that ends in a moment, the site left unserved
        raise FlowbatchError(
            f"stopped: its lock file {daemon.lock.path} was removed while it served, and "
            "another process took the new one",
            hint="never remove daemon.lock; start the daemon again (systemd does): it "
            "serves once that process has let the lock go",
        )
    owed = sorted(site.store.unwritten)
    if owed:
        raise FlowbatchError(
            f"stopped with the run.json of {len(owed)} run(s) not written: {', '.join(owed)}",
            hint="free space under the results tree and start the daemon again soon: those "
            "runs' files say an older state (one launched may be started again)",
        )
    return None


#: seconds a starting daemon waits for a `runs cancel` that holds the site's lock while it
#: applies a cancel itself (it said "another daemon serves" and exited 0: found by review)
CANCEL_HOLD = 60.0


def _start_when_free(daemon: Daemon) -> None:
    deadline = time.monotonic() + CANCEL_HOLD
    while True:
        try:
            daemon.start()
            return
        except Busy as busy:
            if role_of(str(busy)) != "cancel" or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def role_of(held: str) -> str:
    """Who holds a site lock, from what it wrote into it (:class:`SiteLock`)."""
    try:
        info = json.loads(held)
    except ValueError:
        return "daemon"
    return str(info.get("role", "daemon")) if isinstance(info, dict) else "daemon"


def wait_terminal(site: Site, run_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        run = site.store.load(run_id)
        if not run.state.active or time.monotonic() > deadline:
            return run.state.value
        time.sleep(0.1)
