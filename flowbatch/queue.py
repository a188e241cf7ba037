"""Intake: from a YAML file in ``<site>/queue/`` to a PENDING run, or a rejection.

A request is claimed by an atomic rename into ``queue/.claimed/<run_id>--<name>``, so two
daemons never take the same file and a daemon killed half-way finds it again: a claimed
request whose run folder exists is finished off, otherwise it is processed again with the
same run id. Nothing is lost: a refused request goes to ``queue/rejected/`` beside
``<name>.error.yaml`` that says what, where and why.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from . import faults, yamlio
from .accounts import in_group, other_writers, user_name
from .backoff import Backoff
from .errors import ArgumentError, FlowbatchError, RequestError
from .executors import executor_names
from .logs import Repeated
from .render import build_script, render_workflow
from .render.script import LOGS_DIR, SCRIPT_NAME, STATUS_DIR, read_markers
from .render.values import RenderedWorkflow, TemplateRenderError
from .runs import RunRecord, State, now_iso
from .safeio import (
    LINK_ERRORS,
    CopyLimit,
    copy_fd,
    copy_tree,
    open_beneath,
    read_up_to,
)
from .site import Site
from .spec.model import FileArg, Template
from .spec.request import CancelRequest, Request, parse_request
from .store import atomic
from .store.atomic import sync_file_system
from .store.index import RunRow
from .store.layout import (
    BUNDLE_SUFFIX,
    CANCEL_PREFIX,
    CLAIMED_ID,
    REQUEST_COPY,
    RUN_JSON,
    queue_mode_problem,
)
from .store.owner import give, make_dirs
from .sweep import Point, cast_points, run_arguments
from .takeback import hand_over

log = logging.getLogger("flowbatch.queue")

REQUEST_SUFFIXES = (".yaml", ".yml")


def is_request_name(name: str) -> bool:
    """``*.yaml`` / ``*.yml``, not a dot-file and not ``*.tmp`` (still being written)."""
    return (
        not name.startswith(".")
        and not name.endswith(".tmp")
        and name.lower().endswith(REQUEST_SUFFIXES)
    )


def new_run_id() -> str:
    return secrets.token_hex(6)


#: errors of a file system that is full or failing, not of a request
_DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})


def _rename_making_folder(src: Path, dest: Path, make: Callable[[], None]) -> None:
    """``os.rename(src, dest)``, calling ``make`` to make ``dest``'s folder when it is
    missing: at the first claim (not before each one: a burst claims hundreds), again if
    it was removed. FileNotFoundError: ``src`` is gone (another daemon took it)."""
    try:
        os.rename(src, dest)
    except FileNotFoundError:
        if dest.parent.is_dir():
            raise
        make()
        os.rename(src, dest)


def own_folder(path: Path, *, make: bool = True, owner: int | None = None) -> None:
    """Check that ``path`` is a folder only the daemon's user (``owner``, default this
    process's) can change (made, mode 0755, when missing and ``make``): not a symbolic
    link, owned by that user, writable by no one else. Raises FlowbatchError with the
    fix otherwise.

    The daemon writes into ``queue/.claimed`` and ``queue/rejected`` and moves users'
    files there: a folder a participant made, or a link they put in its place, would let
    them swap a request after it was claimed, or have the daemon (root, perhaps) write
    into a folder of their choosing."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        if not make:
            return
        try:
            path.mkdir(mode=0o755)
        except FileExistsError:
            pass  # made meanwhile, by the daemon of another host or by someone else
        st = path.lstat()
    me = os.geteuid() if owner is None else owner
    fix = (
        f"move it aside (mv {path} {path}.suspect; look at what is in it before using "
        "anything from it): the daemon makes a new folder"
    )
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symbolic link, not the daemon's folder"
    elif not stat.S_ISDIR(st.st_mode):
        problem = "is not a folder"
    elif st.st_uid != me:
        problem = f"belongs to {user_name(st.st_uid)}, not to the daemon's user {user_name(me)}"
        fix = f"{fix}; or, if it is the site's own folder, chown {user_name(me)} {path}"
    elif st.st_mode & 0o022:
        problem = f"is writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
        fix = f"chmod go-w {path}"
    else:
        return
    raise FlowbatchError(
        f"{path} {problem}: the daemon takes no request in until it is fixed",
        hint=f"run: {fix}",
    )


def check_queue(site: Site, *, make: bool = True, owner: int | None = None) -> None:
    """Refuse (FlowbatchError, with the fix) a queue whose daemon folders a participant
    could replace: ``queue/`` must belong to the daemon's user (``owner``, default this
    process's: ``flowbatch doctor`` asks for the site's) or root, and have the sticky bit
    when others may write it; ``.claimed`` (and this host's folder in it on a shared
    site) and ``rejected`` must be the daemon's own (:func:`own_folder`). Three or four
    ``lstat`` calls: intake runs it at every tick. A missing ``queue/`` is left alone
    (nothing comes in); its folders are made when ``make``."""
    layout = site.layout
    try:
        st = os.stat(layout.queue)  # the site's own link to a queue elsewhere is followed
    except FileNotFoundError:
        return
    me = os.geteuid() if owner is None else owner
    if st.st_uid not in (me, 0):
        raise FlowbatchError(
            f"{layout.queue} belongs to {user_name(st.st_uid)}, who could replace the "
            "daemon's folders in it: the daemon takes no request in until it is fixed",
            hint=f"run: chown {user_name(me)} {layout.queue}",
        )
    problem = queue_mode_problem(layout.queue, st)
    if problem:
        raise FlowbatchError(
            f"{problem.partition('; run: ')[0]}; the daemon takes no request in until it "
            "has the sticky bit",
            hint=f"run: chmod +t {layout.queue} (each user's requests stay their own)",
        )
    own_folder(layout.claimed, make=make, owner=me)
    if site.claimed_dir != layout.claimed:
        own_folder(site.claimed_dir, make=make, owner=me)
    own_folder(layout.rejected, make=make, owner=me)


def claim_key(name: str, st: os.stat_result) -> str:
    """One request file, the same for every host that sees it (no st_dev: NFS clients
    differ there); a later file of the same name has another mtime or inode."""
    ident = f"\0{st.st_ino}\0{st.st_mtime_ns}\0{st.st_size}".encode()
    return hashlib.sha256(os.fsencode(name) + ident).hexdigest()


def _keep_request(claimed: Claimed, dest: Path) -> None:
    """The request as received, into the hidden run folder. A request of the daemon's own
    user is linked (the same file, no copy: on a site of one user they own everything
    anyway); anyone else's is written from the very bytes the daemon read and checked, so
    the run's copy is the daemon's, and what its owner writes into their file after the
    read (they may hold it open) is in neither. A second point of a sweep links the same
    file again."""
    if claimed.uid == os.geteuid():
        try:
            os.link(claimed.path, dest, follow_symlinks=False)
            return
        except OSError:
            pass  # another file system, or links refused: the bytes read
    assert claimed.raw is not None  # Intake._read keeps them before any run is made
    atomic.write_private(dest, claimed.raw)


@dataclass
class Claimed:
    path: Path  # queue/.claimed/<run_id>--<name>
    run_id: str
    name: str  # the request's file name as dropped
    uid: int
    #: the file's inode and device as the claim saw them (None: not recorded): the file
    #: read later must be that one
    ino: int | None = None
    dev: int | None = None
    #: claimed in this tick under a new run id: no run of it can exist yet (a leftover of
    #: a crash may have one, created before the crash)
    fresh: bool = False
    #: the request's bytes as read and checked (None until read)
    raw: bytes | None = None


class IndexAway(Exception):
    """A shared site's index could not record a claim: the claim stays as it is (a
    leftover, recorded once the index answers), and no other is taken in meanwhile."""


@dataclass
class IntakeResult:
    runs: list[RunRecord] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    cancels: list[tuple[CancelRequest, Claimed]] = field(default_factory=list)
    skipped: dict[str, dict[int, str]] = field(default_factory=dict)  # sweep points not rerun
    #: why nothing was taken in (a queue folder a participant could replace), or None
    refused: str | None = None


#: seconds a request's time may be ahead of this host's clock before a warning says so
#: (file systems round, NFS servers' clocks drift a little)
CLOCK_SLACK = 2.0

#: seconds at most between a made run and the sync of the results tree that lets its
#: request's claim go (:class:`ClaimSettler`). Not longer: the sync at the daemon's stop
#: then carries everything written since the last one (5 s made a 500-run burst's exit
#: sync 0.4 s, +0.8 ms a run; a second, no difference that shows)
SETTLE_EVERY = 1.0
#: seconds a stopping daemon waits for its last sync (a hung network file system): then
#: it stops with those claims kept (the next start finds their runs)
SETTLE_PATIENCE = 30.0
#: seconds before a claim whose removal failed is tried again, at first; the wait
#: doubles at each failure, up to :data:`CLAIM_RETRY_MAX` (see :class:`ClaimSettler`)
CLAIM_RETRY_FIRST = 2.0
CLAIM_RETRY_MAX = 300.0
#: seconds between two reminders in the log that a claim still cannot be removed
CLAIM_REMIND_EVERY = 3600.0
#: seconds at most between two tries of a request whose runs cannot be made where they
#: belong while the site has room (a read-only mount or a quota beneath the results
#: tree): the first try again after one polling interval, the wait doubling at each
#: failure up to this (see :meth:`Intake.process`)
REQUEST_RETRY_MAX = 300.0

#: seconds a ``.files`` bundle left in the queue without its request is kept, since it
#: was last changed: `flowbatch submit` renames the bundle into place just before it
#: writes the request (and a submit may be stopped or slowed in between)
BUNDLE_GRACE = 3600.0
#: seconds between two looks for such bundles (:meth:`Intake.remove_orphan_bundles`; the
#: first at the intake's first tick)
BUNDLE_SWEEP_EVERY = 600.0
#: a shared site's claim rows (:meth:`flowbatch.store.store.Store.claim`) older than
#: this many seconds are removed, once every :data:`CLAIM_ROWS_EVERY` seconds: a row
#: guards against a second host's rename of the same file "succeeding" too (NFS), which
#: happens within seconds of the first; kept for ever, they only grew the table, one row
#: a request (found by review)
CLAIM_ROWS_KEPT = 86400.0
CLAIM_ROWS_EVERY = 3600.0
#: seconds to the next look when one stopped at its :data:`BUNDLE_SWEEP_ENTRIES`
BUNDLE_SWEEP_AGAIN = 10.0
#: the name `flowbatch submit` gives a bundle (:func:`flowbatch.api.queue_request`):
#: ``<stem>-<6 hex digits>.files``; no other folder of the queue is taken for one
_SUBMITTED_BUNDLE = re.compile(r"[^.].*-[0-9a-f]{6}" + re.escape(BUNDLE_SUFFIX), re.DOTALL)
#: the folder `flowbatch submit` builds a bundle in (``.<bundle>.tmp``), renamed into
#: place once whole: one left behind is a submit that was killed half-way (it never
#: wrote its request), removed once :data:`BUNDLE_TEMP_GRACE` old
_SUBMIT_TEMP = re.compile(r"\.[^.].*-[0-9a-f]{6}" + re.escape(BUNDLE_SUFFIX) + r"\.tmp", re.DOTALL)
#: seconds a submit's building folder is left alone since it (or a folder in it) last
#: changed: a copy of large inputs may take long, and a file written into a folder
#: within it changes neither
BUNDLE_TEMP_GRACE = 86400.0

#: what to do about a claim the daemon cannot remove, by the unlink's errno
_UNLINK_FIXES = {
    errno.EPERM: "an immutable or append-only file (see `lsattr`)? remove the flag with "
    "`chattr -i -a` on it",
    errno.EACCES: "the daemon's user may not remove it: check the owner and mode of its folder",
    errno.EROFS: "the file system is read-only (remounted after an error?): check it "
    "(dmesg) and remount it read-write",
    errno.EIO: "an I/O error: check the disk or the mount (dmesg)",
}


class ClaimSettler:
    """Removes the claims of handled requests once what they made is on disk for good.

    A run folder is written with no fsync per file (three or four a run would cost more
    than the run) and renamed into place; until the kernel writes it back (ext4: up to
    30 s), a power loss or a crash of the host can leave the folder empty while the
    removal of its claim, a change of the same file system's journal, survives: the run
    would be lost. So the claim of a request whose runs were made (or whose cancel was
    applied) stays in ``.claimed/`` until a ``syncfs`` of the results tree's file system
    that began after that, then goes (with the request's ``.files`` bundle): one sync
    for all the claims of :data:`SETTLE_EVERY` seconds, in a thread of its own (the
    daemon's loop never waits on the disk; the thread ends when nothing is left to
    settle), and one for what is left when the daemon stops (:meth:`close`). After a
    restart of the host, the runs of a claim found unsettled that never started are made
    again from it (:meth:`Intake.redo_unstarted`): their folders may not have reached the
    disk whole.
    (``syncfs`` writes back every dirty page of that file system, other users' too: at
    most once every :data:`SETTLE_EVERY` seconds, and only while requests come in.)

    A claim whose removal fails (``EPERM`` on an immutable file, ``EROFS`` after a
    read-only remount, ``EIO``) stays, as a claim always does until it can go: nothing
    is lost, its runs exist (the next start finds them). It is not tried at every settle
    (once a second, a warning each time, flooding the log): the first failure is a
    warning naming the file, the error and what to do about it; then the claim is tried
    again after :data:`CLAIM_RETRY_FIRST` seconds, the wait doubling at each failure up
    to :data:`CLAIM_RETRY_MAX`, with no new sync (the one it had already covers its runs),
    so a stuck claim costs one ``unlink`` every few minutes. The same failure again is
    logged at debug level only; a warning says so again when the error changes, and as a
    reminder every :data:`CLAIM_REMIND_EVERY` seconds while it lasts (with the number of
    tries and since when). The daemon's stop tries each such claim once more. When the
    removal works at last, an info line says so."""

    def __init__(self, tree: Path, every: float | None = None) -> None:
        self.tree = tree
        self.every = SETTLE_EVERY if every is None else every
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one flush at a time (the thread's, close's)
        self._pending: dict[Path, Path | None] = {}  # claim -> its bundle
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._failing = False
        #: the claims whose removal failed after their sync (only flush changes it)
        self._stuck: Backoff[Path] = Backoff(CLAIM_RETRY_FIRST, CLAIM_RETRY_MAX)
        #: monotonic seconds, for the retries' waits (a test's clock may stand in)
        self.clock: Callable[[], float] = time.monotonic

    def add(self, claim: Path, bundle: Path | None = None) -> None:
        """``claim`` (and ``bundle``) to be removed once the tree is synced."""
        with self._lock:
            self._pending[claim] = bundle
            if self._thread is None:
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, args=(self._stop,), name="claim-settler", daemon=True
                )
                self._thread.start()

    def holds(self, claim: Path) -> bool:
        """Whether ``claim`` waits here (it is no crash's leftover)."""
        with self._lock:
            return claim in self._pending

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self, patience: float | None = None) -> None:
        """Settle what is left now, and end the thread; waits ``patience`` seconds at
        most (:data:`SETTLE_PATIENCE`) for a sync that does not return (a hung mount):
        the claims are kept then."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        last = threading.Thread(target=self._last, args=(thread,), name="claim-settler")
        last.daemon = True
        last.start()
        last.join(SETTLE_PATIENCE if patience is None else patience)
        if last.is_alive():
            log.warning(
                "the sync of %s has not returned: %d handled request(s) stay claimed "
                "(their runs exist; the next start settles them)",
                self.tree,
                self.pending(),
            )

    def _last(self, thread: threading.Thread | None) -> None:
        if thread is not None:
            thread.join()
        self.flush(retry_all=True)

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.every):
            try:
                self.flush()
            except Exception:  # never the end of the thread with claims left: next time
                log.exception("settling the handled requests' claims")
            with self._lock:
                if not self._pending and self._thread is threading.current_thread():
                    self._thread = None
                    return

    def flush(self, *, retry_all: bool = False) -> None:
        """Sync the tree, then remove every claim added before the sync began. A sync
        that fails keeps them all (they are tried again; at a start they are leftovers
        whose runs exist). A claim whose removal failed before is tried again without a
        sync once its wait is over (``retry_all``: now, as at the daemon's stop)."""
        with self._flushing:
            now = self.clock()
            with self._lock:
                for claim in [c for c in self._pending if not os.path.lexists(c)]:
                    del self._pending[claim]  # gone with its site, or removed by hand
                    if self._stuck.done(claim) is not None:
                        log.info("the claim %s was removed by someone else", claim)
                batch = {c: b for c, b in self._pending.items() if c not in self._stuck}
                retry = {
                    c: b
                    for c, b in self._pending.items()
                    if c in self._stuck and (retry_all or self._stuck.due(c, now))
                }
            if batch:
                try:
                    sync_file_system(self.tree)
                except OSError as exc:
                    if not self._failing:  # said once, until a sync works again
                        log.warning("cannot sync %s (claims kept for now): %s", self.tree, exc)
                    self._failing = True
                    batch = {}
                else:
                    self._failing = False
                    faults.point("settle")  # synced, no claim removed yet
            for claim, bundle in {**batch, **retry}.items():
                self._remove(claim, bundle)

    def _remove(self, claim: Path, bundle: Path | None) -> None:
        """Remove a claim whose runs are on disk (and then its bundle); a failure keeps
        it, to be tried again later (:meth:`_cannot_remove`)."""
        try:
            claim.unlink(missing_ok=True)
        except OSError as exc:
            self._cannot_remove(claim, exc)
            return
        stuck = self._stuck.done(claim)
        if stuck is not None:
            log.info(
                "the claim %s is removed at last, after %d failed tries over %.0f s",
                claim,
                stuck.tries,
                self.clock() - stuck.since,
            )
        faults.point("unclaimed")  # the claim gone, its bundle not yet
        if bundle is not None:  # after its claim: a claim never lacks its files
            shutil.rmtree(bundle, ignore_errors=True)
            if os.path.lexists(bundle):  # a service user's daemon, another user's folder
                log.info(
                    "the files %s brought stay in the queue: this daemon's user may not "
                    "remove another user's folder there; its owner's next `flowbatch "
                    "submit` removes them",
                    bundle,
                )
        with self._lock:  # only once it is gone: a listing never takes it as a leftover
            self._pending.pop(claim, None)

    def _cannot_remove(self, claim: Path, exc: OSError) -> None:
        """Note a failed removal of ``claim``: when to try again, and whether to say so
        (see the class's docstring)."""
        now = self.clock()
        error = f"{exc.strerror or exc} (errno {exc.errno})"
        fix = _UNLINK_FIXES.get(exc.errno or 0, "look at the file and the file system")
        stuck, news = self._stuck.failed(claim, exc.errno, now)
        if stuck.tries == 1:
            log.warning(
                "cannot remove the claim %s: %s. Its request was handled and its runs are "
                "on disk; the claim stays until it can be removed (%s). Tried again in "
                "%.0f s, then less and less often (every %.0f s at most; the log says so "
                "again every %.0f s while it lasts)",
                claim,
                error,
                fix,
                stuck.wait,
                CLAIM_RETRY_MAX,
                CLAIM_REMIND_EVERY,
            )
            return
        if news or now - stuck.said >= CLAIM_REMIND_EVERY:
            stuck.said = now
            log.warning(
                "the claim %s still cannot be removed%s: %s (%d tries over %.0f s; %s). "
                "Tried again every %.0f s",
                claim,
                ", now with another error" if news else "",
                error,
                stuck.tries,
                now - stuck.since,
                fix,
                stuck.wait,
            )
        else:
            log.debug(
                "the claim %s still cannot be removed: %s (try %d; next in %.0f s)",
                claim,
                error,
                stuck.tries,
                stuck.wait,
            )


def boot_id() -> str | None:
    """This boot of the host (Linux: a random id made at each boot), None if unknown."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


class Intake:
    def __init__(self, site: Site) -> None:
        self.site = site
        self.layout = site.layout
        site.store  # noqa: B018 - open the index before any run folder appears
        self._seen: dict[str, tuple[int, int, float]] = {}
        self.ready: set[str] = set()  # names inotify reported as complete (closed, moved in)
        #: the intake being made (:meth:`run_once`), for its ``between``
        self.current: IntakeResult | None = None
        #: claims handled and kept for now by the daemon (a cancel of a run being ended):
        #: no leftovers
        self.held: set[Path] = set()
        #: whether the next tick looks in the claimed folder: at the start (a crash's
        #: leftovers), after a tick that claimed or found something there (a claim left
        #: unfinished is taken up again), and always on a shared site (other hosts hand
        #: cancels over there). Otherwise no one else writes there, and listing it at
        #: every tick cost a directory read per run in a burst.
        self._look_in_claimed = True
        #: why the last tick took nothing in (an unsafe queue folder), or None
        self.refused: str | None = None
        #: the claims of handled requests, removed once their runs are on disk
        self.settler = ClaimSettler(self.layout.results)
        #: claimed requests whose runs could not be made where they belong while the
        #: site had room, by their claim: each taken up again after its own growing
        #: wait (:meth:`_cannot_make`), the others going on meanwhile
        self.waiting: Backoff[Path] = Backoff(site.config.polling.interval, REQUEST_RETRY_MAX)
        #: monotonic seconds, for those waits (a test's clock may stand in)
        self.clock: Callable[[], float] = time.monotonic
        self._boot_noted = False  # this boot's id is in the site's claims-boot (note_boot)
        #: a shared site's index that could not record a claim: said once a minute
        self._index_away = Repeated(log)
        #: when the next look for orphan bundles is due (monotonic; 0: at the first tick)
        self._bundles_due = 0.0
        #: when the next removal of old claim rows is due (a shared site; monotonic)
        self._claim_rows_due = 0.0
        #: orphan bundles left alone, said once each: (name, inode, ctime)
        self._bundles_kept: set[tuple[str, int, int]] = set()
        #: orphan bundles a look removed in part (name, inode): the next look goes on
        #: with them, although that removal changed them within the grace
        self._bundles_begun: set[tuple[str, int]] = set()

    def close(self) -> None:
        """Settle the claims of the requests handled (a sync of the results tree)."""
        self.settler.close()

    # -- finding and claiming ----------------------------------------------------------------
    def candidates(self, *, settle: float | None = None) -> list[str]:
        """Request names in the queue that are complete enough to claim, oldest first."""
        settle = self.site.config.polling.settle if settle is None else settle
        now = time.time()
        out: list[tuple[float, str]] = []
        try:
            entries = list(os.scandir(self.layout.queue))
        except FileNotFoundError:
            return []
        present = set()
        for entry in entries:
            if not is_request_name(entry.name):
                continue
            present.add(entry.name)
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            key = (st.st_size, st.st_mtime_ns)
            seen = self._seen.get(entry.name)
            if (
                entry.name in self.ready
                or now - st.st_mtime >= settle
                or (seen and seen[:2] == key and now - seen[2] >= settle)
            ):
                out.append((st.st_mtime, entry.name))
            elif not seen or seen[:2] != key:
                self._seen[entry.name] = (*key, now)
                if st.st_mtime > now + CLOCK_SLACK:
                    log.warning(
                        "request %s is stamped %.0f s ahead of this host's clock: it is "
                        "taken once it has stayed unchanged for polling.settle (%.1f s); "
                        "check the clock of the host that wrote it (NTP), or copy requests "
                        "without keeping their time (cp without -p, rsync without -t)",
                        printable_name(entry.name),
                        st.st_mtime - now,
                        settle,
                    )
        for name in list(self._seen):
            if name not in present:
                del self._seen[name]
        self.ready &= present
        return [name for _, name in sorted(out)]

    def unsettled(self) -> bool:
        """Whether the last listing found a request not yet complete enough to claim
        (changed within ``polling.settle`` and not reported complete by inotify)."""
        return bool(self._seen)

    def claim(self, name: str) -> Claimed | None:
        """Atomically move the request out of the queue. None: someone else took it."""
        src = self.layout.queue / name
        try:
            st = src.lstat()
        except FileNotFoundError:
            return None
        try:
            run_id = self._new_id()
        except FlowbatchError as exc:  # the request stays in the queue for the next tick
            log.error("cannot claim %s: %s", printable_name(name), exc)
            return None
        dest = self.site.claimed_dir / f"{run_id}--{name}"
        try:
            # made and checked as the daemon's own (check_queue), never a user's folder
            _rename_making_folder(src, dest, lambda: check_queue(self.site))
        except FileNotFoundError:
            return None  # another daemon took it
        except FlowbatchError as exc:  # the request stays in the queue
            log.error("cannot claim %s: %s", printable_name(name), exc)
            return None
        except OSError as exc:
            log.error("cannot claim %s: %s", printable_name(name), exc.strerror)
            return None
        self._seen.pop(name, None)
        self.ready.discard(name)
        self.note_boot()  # once: a claim of this boot (see redo_unstarted)
        # several hosts, one queue: a unique key in the index makes a double claim
        # impossible even where a rename can "succeed" twice (NFS retransmits); the one
        # who comes second drops its claim. One host (the site lock held, a local rename):
        # the rename alone is the claim.
        if self.site.shared and not self._claim_recorded(dest, name, st, run_id):
            return None
        return Claimed(dest, run_id, name, st.st_uid, st.st_ino, st.st_dev, fresh=True)

    def _claim_recorded(self, path: Path, name: str, st: os.stat_result, run_id: str) -> bool:
        """Record a shared site's claim in the index; False: another host claimed the same
        file (the one that comes second drops its name of it). An index that does not
        answer raises :class:`IndexAway`, the claim staying where it is: taken up as a
        leftover, it is recorded before its runs are made (found by review: claims made
        while PostgreSQL was away never got their row, and a second host could take the
        same file). Again for the same run id, the row is found and the claim stands."""
        try:
            unique = self.site.store.claim(claim_key(name, st), run_id, self.site.host)
        except Exception as exc:
            raise IndexAway(f"the claim of {printable_name(name)} is not recorded: {exc}") from exc
        if not unique:
            log.warning("%s was claimed by another daemon: dropped", printable_name(name))
            path.unlink(missing_ok=True)
        return unique

    def _new_id(self) -> str:
        """A random id no run in the index has: 48 bits collide once in a few hundred
        sites of a million runs each, and a request claimed under a taken id would look,
        after a crash, like one whose run was already made (it would be dropped)."""
        for _ in range(8):
            run_id = new_run_id()
            try:
                if not self.site.store.run_id_taken(run_id):
                    return run_id
            except Exception as exc:  # the index is away: its next write says so too
                log.warning("cannot check run id %s against the index: %s", run_id, exc)
                return run_id
            log.warning("run id %s is taken: drawing another", run_id)
        raise FlowbatchError("no free run id after 8 draws", hint="check the index database")

    def _reject_name(self, name: str, problem: str) -> None:
        """A name that cannot be claimed as it is goes to rejected/ under a safe name."""
        try:
            uid = (self.layout.queue / name).lstat().st_uid
        except FileNotFoundError:
            return
        safe = printable_name(name)
        entry = Claimed(self.layout.queue / name, "", safe, uid)
        self.reject(entry, RequestError(problem, file=safe, hint="rename the file"))

    def look_in_claimed(self) -> None:
        """Look at the claims left in the claimed folder at the next tick (another
        daemon's, handed over as it stopped), as after a start."""
        self._look_in_claimed = True

    def leftovers(self) -> list[Claimed]:
        """Requests claimed by a daemon that died before it finished with them."""
        out: list[Claimed] = []
        if not self.site.claimed_dir.is_dir():
            return out
        for path in sorted(self.site.claimed_dir.iterdir()):
            run_id, sep, name = path.name.partition("--")
            if not sep or self.settler.holds(path) or path in self.held:
                continue
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            # a folder of hosts on a site that was shared once (.claimed/<host>/) is not a
            # claim; a folder `<run id>--<name>.yaml` is (claim() renames whatever has a
            # request's name): processed, it is rejected, not left here for ever
            if stat.S_ISDIR(st.st_mode) and not (
                CLAIMED_ID.fullmatch(run_id) and is_request_name(name)
            ):
                continue
            out.append(Claimed(path, run_id, name, st.st_uid, st.st_ino, st.st_dev))
        return out

    # -- one tick ------------------------------------------------------------------------------
    def run_once(
        self,
        *,
        limit: int | None = None,
        between: Callable[[list[RunRecord]], bool] | None = None,
    ) -> IntakeResult:
        """Claim the waiting requests (at most ``limit``), then turn each into runs, a
        cancel or a rejection. ``between`` is called after each request with the runs it
        made: the daemon takes them and starts runs while a burst is still being taken
        in; when it returns False (the daemon is stopping) the rest stay claimed, for
        the next tick or start."""
        result = IntakeResult()
        try:
            check_queue(self.site)
        except FlowbatchError as exc:
            if str(exc) != self.refused:  # said once, and again when it changes
                log.error("taking no request in: %s", exc)
            self.refused = result.refused = str(exc)
            return result
        if self.refused:
            log.info("the queue's folders are safe again: taking requests in")
            self.refused = None
        if time.monotonic() >= self._bundles_due:
            self._bundles_due = time.monotonic() + BUNDLE_SWEEP_EVERY
            try:
                self.remove_orphan_bundles()
            except Exception:  # never the end of the intake
                log.exception("looking for orphan bundles in %s", self.layout.queue)
        if self.site.shared and time.monotonic() >= self._claim_rows_due:
            self._claim_rows_due = time.monotonic() + CLAIM_ROWS_EVERY
            self._forget_old_claims()
        todo = self.leftovers() if self._look_in_claimed or self.site.shared else []
        if self.waiting:
            self.waiting.keep(claimed.path for claimed in todo)  # the rest went away
            now = self.clock()
            todo = [claimed for claimed in todo if self.waiting.due(claimed.path, now)]
        # a request waiting its turn is looked at again at the next tick
        self._look_in_claimed = bool(todo) or bool(self.waiting)
        for name in self.candidates() if self._index_answers() else ():
            if limit is not None and len(todo) >= limit:
                break
            problem = name_problem(name)
            if problem:
                self._reject_name(name, problem)
                result.rejected.append(printable_name(name))
                continue
            try:
                claimed = self.claim(name)
            except IndexAway as exc:  # no claim until it is back: the next tick tries
                self._look_in_claimed = True
                self._index_away.failed("the index is away, no request taken in: %s", exc)
                break
            if claimed:
                todo.append(claimed)
                self._look_in_claimed = True
        # `runs cancel`'s requests first: a cancel of a PENDING run is applied before a
        # slot freed since the last tick starts it (found by review: it ran, then was
        # cancelled; the daemon's `between` applies each cancel as it is read)
        todo.sort(key=lambda claimed: not claimed.name.startswith(CANCEL_PREFIX))
        self.current = result  # `between` may take its cancels at once
        try:
            for claimed in todo:
                faults.point("intake")
                made = len(result.runs)
                try:
                    self.process(claimed, result)
                except IndexAway as exc:  # the rest stay claimed, for a next tick
                    self._look_in_claimed = True
                    self._index_away.failed("the index is away, no request taken in: %s", exc)
                    break
                if between is not None and not between(result.runs[made:]):
                    self._look_in_claimed = True  # the rest, claimed: the next tick's
                    break
        finally:
            self.current = None
        return result

    def _forget_old_claims(self) -> None:
        """Remove the shared site's claim rows older than :data:`CLAIM_ROWS_KEPT`: the
        double claim they guard against is over long before. A leftover claim taken up
        later is recorded again (:meth:`_claim_recorded`). An index away: tried at the
        next look, never the end of the intake."""
        before = datetime.now(UTC) - timedelta(seconds=CLAIM_ROWS_KEPT)
        try:
            removed = self.site.store.forget_claims(before.isoformat(timespec="microseconds"))
        except Exception as exc:
            log.warning("old claim rows not removed from the index, tried later: %s", exc)
            return
        if removed:
            log.info("removed %d claim row(s) older than a day from the index", removed)

    def cancel_waiting(self) -> bool:
        """Whether a `runs cancel` request waits in the queue (one look at its names)."""
        try:
            with os.scandir(self.layout.queue) as entries:
                return any(
                    entry.name.startswith(CANCEL_PREFIX) and is_request_name(entry.name)
                    for entry in entries
                )
        except OSError:
            return False

    def _index_answers(self) -> bool:
        """After a claim the index could not record, one cheap statement before another
        claim: none is made while it is away (each would stay claimed without its row)."""
        if not self._index_away.failing:
            return True
        try:
            self.site.store.ping()
        except Exception:
            return False
        self._index_away.ok("the index is back: taking requests in")
        return True

    def process(self, claimed: Claimed, result: IntakeResult) -> None:
        made, rejected = len(result.runs), len(result.rejected)
        try:
            self._process(claimed, result)
        except IndexAway:
            raise  # no fault of the request's: it stays claimed
        except OSError as exc:
            if exc.errno not in _DISK_ERRORS:
                self._internal_error(claimed, result, exc)
                return
            # the results tree is full (or failing): no fault of the request's; it stays
            # claimed, and is taken up again at a next look (found by review: rejected
            # as an internal error when its error file fitted where its runs did not)
            self._look_in_claimed = True
            self._cannot_make(claimed, exc)
            return
        except Exception as exc:
            self._internal_error(claimed, result, exc)
        waited = self.waiting.done(claimed.path)
        if waited is not None:
            log.info(
                "%s %s at last, after %d failed tries over %.0f s",
                printable_name(claimed.name),
                "was rejected"
                if len(result.rejected) > rejected
                else f"made its {len(result.runs) - made} run(s)"
                if len(result.runs) > made
                else "went through",
                waited.tries,
                self.clock() - waited.since,
            )

    def _cannot_make(self, claimed: Claimed, exc: OSError) -> None:
        """The runs of ``claimed`` could not be made for a fault of the file system.

        The whole results tree full or read-only: the daemon takes nothing in until it
        has room, and says so (:meth:`Daemon.tick`). With room there, the fault is this
        request's place alone (a read-only mount or a full file system beneath the
        results tree, its owner's quota): it was taken up again, and logged, at every
        tick for as long as it lasted (found by review). It waits its turn now, one
        polling interval at first, the wait doubling up to :data:`REQUEST_RETRY_MAX`,
        the other requests going on; the log says so when it starts to wait (why, what
        to do), when the error changes, and when it goes through."""
        name = printable_name(claimed.name)
        if not self.site.store.has_room(fresh=True):
            log.error("%s waits: its runs cannot be made now (%s)", name, exc.strerror or exc)
            return
        self.waiting.first = self.site.config.polling.interval  # a reload may change it
        now = self.clock()
        tries, news = self.waiting.failed(claimed.path, exc.errno, now)
        tries.why = f"{exc.strerror or exc}: {_place_fix(exc, claimed)}"
        if not news and now - tries.said >= CLAIM_REMIND_EVERY:
            # a reminder once an hour while it waits, as for a claim that cannot be
            # removed: an admin who missed the first line still learns of it
            tries.said = now
            log.warning(
                "%s still waits: its runs cannot be made (%s) after %d tries over %.0f s: %s",
                name,
                exc.strerror or exc,
                tries.tries,
                now - tries.since,
                _place_fix(exc, claimed),
            )
            return
        if not news:
            log.debug(
                "%s still waits (try %d, next in %.0f s): %s", name, tries.tries, tries.wait, exc
            )
            return
        tries.said = now
        log.warning(
            "%s waits: its runs cannot be made (%s), though the site has room: %s. "
            "Other requests go on; it is tried again in %.1f s, then less and less often "
            "(every %.0f s at most), and the log says when it goes through",
            name,
            exc.strerror or exc,
            _place_fix(exc, claimed),
            tries.wait,
            self.waiting.most,
        )

    def stuck(self) -> list[tuple[str, str]] | None:
        """The claimed requests, by name with why, if every one of them waits its turn
        for a place that failed (:meth:`_cannot_make`) and nothing else is claimed; None
        when one may be taken up now, or none waits."""
        if not self.waiting:
            return None
        out = []
        for claimed in self.leftovers():
            tries = self.waiting.get(claimed.path)
            if tries is None:
                return None
            out.append((printable_name(claimed.name), tries.why))
        return out or None

    def _internal_error(self, claimed: Claimed, result: IntakeResult, exc: Exception) -> None:
        log.exception("internal error on %s", printable_name(claimed.name))
        self.reject(
            claimed,
            FlowbatchError(
                f"internal error: {type(exc).__name__}: {exc}",
                hint="this is a flowbatch bug; please report it with this file",
            ),
        )
        result.rejected.append(claimed.name)

    def _process(self, claimed: Claimed, result: IntakeResult) -> None:
        try:
            if (
                not claimed.fresh
                and self._existing_run(claimed.run_id) is not None
                and not self._is_sweep(claimed)
            ):
                self._finish(claimed)  # created before a crash: just finish the clean-up
                return
            if not claimed.fresh and self.site.shared:
                # a claim left over (a crash, or an index away when it was made): its
                # row first, as a fresh claim's (the file keeps its key when renamed)
                st = claimed.path.lstat()
                if not self._claim_recorded(claimed.path, claimed.name, st, claimed.run_id):
                    return
            req = self._read(claimed)
            if isinstance(req, CancelRequest):
                result.cancels.append((req, claimed))  # the daemon applies it and cleans up
                return
            self._create(claimed, req, result)
        except FlowbatchError as exc:
            self.reject(claimed, exc)
            result.rejected.append(claimed.name)
            return
        self._finish(claimed)

    def _is_sweep(self, claimed: Claimed) -> bool:
        """Whether an already started request is a sweep (more points may be missing)."""
        try:
            return "sweep" in (yamlio.load_file(claimed.path, follow=False) or {})
        except (FlowbatchError, TypeError):
            return False

    def _existing_run(self, run_id: str) -> Path | None:
        """The run folder a claim found after a crash already made (see
        :meth:`redo_unstarted`, which removed those to be made again)."""
        for run_dir in self.layout.results.glob(f"*/runs/{run_id}"):
            return run_dir
        return None

    def redo_unstarted(self, active: MutableMapping[str, RunRecord]) -> list[str]:
        """At a start after the host itself was restarted (:meth:`rebooted`: a power loss
        or a host crash, when files written shortly before may not have reached the disk),
        once the runner has taken over the tree's active runs (``active``, adopting those
        launched just before the stop): the runs made by the claims left unsettled
        (:class:`ClaimSettler`: at most a few seconds old) that never started are moved
        aside to ``.<run id>.incomplete-<time>`` and made again from their claims by the
        next intake, under the same ids, whole (a file the power loss emptied looks like
        an empty input: nothing in the folder tells for sure). A run that started (a
        handle, a ``started`` marker, a second attempt) is the lifecycle's as ever; so
        is a run whose ``run.json`` its user replaced (another owner, a link). After a
        crash of the daemon alone the files are whole: nothing is made again. Returns
        the ids of the runs to be made again."""
        if not self.rebooted():
            return []
        leftovers = {c.run_id for c in self.leftovers() if c.run_id}
        if not leftovers:
            return []
        redone: list[str] = []
        for run_dir in self._run_dirs_of(leftovers):
            run = active.get(run_dir.name)
            try:
                if run is not None:
                    if (
                        run.state != State.PENDING
                        or run.handle
                        or run.attempt > 1
                        or len(run.history) > 1
                        or read_markers(run_dir).started is not None
                    ):
                        continue
                elif not self._record_lost(run_dir):
                    continue
                aside = run_dir.with_name(
                    f".{run_dir.name}.incomplete-{time.strftime('%Y%m%dT%H%M%S')}"
                )
                os.rename(run_dir, aside)
            except OSError as exc:  # never the end of the start: that run is left as it is
                log.error("run %s (%s): cannot make it again: %s", run_dir.name, run_dir, exc)
                continue
            if run is not None:
                del active[run.id]
            self.site.store.forget(run_dir.name)  # a PENDING row would skip a point
            redone.append(run_dir.name)
            log.warning(
                "run %s was made just before the host stopped and never started: its folder "
                "may not have reached the disk whole%s; moved to %s, the run is made again "
                "from its request",
                run_dir.name,
                "" if run is not None else " (its run.json is missing or unreadable)",
                aside,
            )
        return redone

    def _run_dirs_of(self, ids: set[str]) -> list[Path]:
        """The run folders of the claimed ids (a sweep's points too: ``<id>-<i>``), by
        one listing of each workflow's ``runs/`` (not one search of the tree a claim)."""
        found: list[Path] = []
        try:
            workflows = [e for e in os.scandir(self.layout.results) if e.is_dir()]
        except FileNotFoundError:
            return found
        for workflow in workflows:
            if workflow.name.startswith("."):
                continue
            try:
                entries = list(os.scandir(os.path.join(workflow.path, "runs")))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                head = entry.name.split("-", 1)[0]
                if head in ids and entry.is_dir(follow_symlinks=False):
                    found.append(Path(entry.path))
        return found

    def rebooted(self) -> bool:
        """Whether the host was restarted since a daemon last claimed requests here: the
        boot id it noted (``claims-boot`` in the site folder, :meth:`note_boot`) is not
        this boot's. False when either is unknown (a site of an older flowbatch: its
        claims were settled at once). Notes this boot's."""
        now = boot_id()
        try:
            before: str | None = self.site.boot_note.read_text().strip()
        except OSError:
            before = None
        self.note_boot()
        return before is not None and now is not None and before != now

    def note_boot(self) -> None:
        """Note this boot's id in the site folder, once a daemon (synced: a power loss
        soon after must not lose it)."""
        if self._boot_noted:
            return
        note = self.site.boot_note
        now = boot_id()
        try:
            if now is None:
                return
            with contextlib.suppress(OSError):
                if note.read_text().strip() == now:
                    self._boot_noted = True
                    return
            atomic.write_text(note, now + "\n", fsync=True)
            give(note, self.site.layout.owner)  # the site's file, as its lock
            self._boot_noted = True
        except OSError as exc:
            log.warning("cannot write %s: %s", note, exc)

    def _record_lost(self, run_dir: Path) -> bool:
        """Whether ``run_dir``'s record is missing or no JSON (the daemon's own file, as
        a power loss leaves it), for a run the index holds PENDING or not at all that
        never started. Not for a record its run's user replaced (another owner, a link):
        that run is left as it is."""
        path = run_dir / RUN_JSON
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            tree = os.lstat(run_dir.parent).st_uid
            if not stat.S_ISREG(st.st_mode) or st.st_uid != tree:
                return False
            try:  # no FIFO swapped in holds the start: a non-blocking open, no link
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
                try:
                    if os.fstat(fd).st_uid != tree:
                        return False
                    json.loads(read_up_to(fd, 16 << 20))
                finally:
                    os.close(fd)
                return False  # it reads: not lost (sync_active said why it did not load)
            except ValueError:
                pass
            except OSError:
                return False
        row = RunRow.get_or_none(RunRow.id == run_dir.name)
        if row is not None and row.state != State.PENDING.value:
            return False
        return read_markers(run_dir).started is None

    def _bundle(self, claimed: Claimed) -> Path | None:
        """The ``<name>.files/`` folder `flowbatch submit` put beside this request, if it
        is a real folder of the request's own user (no one else's bundle is touched)."""
        bundle = self.layout.queue / (Path(claimed.name).stem + BUNDLE_SUFFIX)
        try:
            st = bundle.lstat()
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != claimed.uid:
            return None
        return bundle

    def _finish(self, claimed: Claimed) -> None:
        """The request's runs are made: its claim (and bundle) go once they are on disk."""
        self.settler.add(claimed.path, self._bundle(claimed))

    # -- orphan bundles -----------------------------------------------------------------------
    def remove_orphan_bundles(
        self, *, grace: float | None = None, owner: int | None = None
    ) -> list[str]:
        """Remove the ``<name>.files/`` bundles `flowbatch submit` left in the queue whose
        request is gone; returns their names. ``run_once`` calls it at its first tick and
        every :data:`BUNDLE_SWEEP_EVERY` seconds, once the queue's folders are safe.

        A bundle goes with its request's claim (:class:`ClaimSettler`) or into
        ``rejected/`` with the request; a daemon killed between a claim's removal and its
        bundle's, a submit stopped between the bundle and its request, or a request its
        user removed from the queue leave one behind, for ever. Such a bundle is removed
        when all of these hold:

        - its name is one `submit` gives (``<stem>-<6 hex digits>.files``: a folder a
          user named otherwise may hold inputs of requests of other names), and it is a
          folder, not a link (never followed);
        - no request of its stem (``<stem>.yaml`` or ``.yml``) is in the queue, being
          written there (``.<stem>.yaml.tmp``), claimed by this or another host
          (``.claimed/``), or in ``rejected/`` (a rejected request keeps its files: a
          bundle left beside the queue is kept too). The queue is listed before the
          claims, the claims before the rejections, so a request moving on meanwhile
          is seen in one of them;
        - it was last changed (its time of change or modification, the later)
          ``grace`` seconds ago at least (:data:`BUNDLE_GRACE`): `submit` writes the
          request right after the bundle is in place;
        - it belongs to the user who would own its request: the owner of the runs the
          index holds from a request of its name, where there are any (a bundle of
          another user's is left alone, as intake's :meth:`_bundle` leaves it), else
          the folder's owner (a submit that wrote no request).

        The folder is removed by descriptors, never through a link, and only what
        belongs to that user in it: an entry of another user's is left, with the folder
        around it (logged once). ``owner``: only that user's bundles (`submit` removes
        its user's own, which a daemon of a service user may not)."""
        grace = BUNDLE_GRACE if grace is None else grace
        queue = self.layout.queue
        try:
            entries = list(os.scandir(queue))
        except (FileNotFoundError, NotADirectoryError):
            return []
        present: set[str] = set()
        bundles: list[os.DirEntry[str]] = []
        temps: set[str] = set()
        for entry in entries:
            if _SUBMITTED_BUNDLE.fullmatch(entry.name):
                bundles.append(entry)
            elif _SUBMIT_TEMP.fullmatch(entry.name):
                bundles.append(entry)
                temps.add(entry.name)
            else:
                present.update(_request_stems(entry.name))
        if not bundles:
            return []
        present |= self._claimed_stems()
        present |= self._rejected_stems()
        now = time.time()
        removed: list[str] = []
        budget = _Budget(BUNDLE_SWEEP_ENTRIES)
        try:
            fd = os.open(queue, _TAKE_DIR)
        except (FileNotFoundError, NotADirectoryError):
            return removed
        try:
            for entry in bundles:
                temp = entry.name in temps
                stem = entry.name[: -len(BUNDLE_SUFFIX)]
                if not temp and stem in present:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if owner is not None and st.st_uid != owner:
                    continue
                changed = max(st.st_mtime, st.st_ctime)
                if temp and stat.S_ISDIR(st.st_mode):  # by what its copies change
                    changed = max(st.st_mtime, _newest_folder_change(entry.path))
                waited = max(grace, BUNDLE_TEMP_GRACE) if temp else grace
                begun = (entry.name, st.st_ino) in self._bundles_begun  # changed by a look
                if not stat.S_ISDIR(st.st_mode) or (now - changed < waited and not begun):
                    continue
                key = (entry.name, st.st_ino, st.st_ctime_ns)
                if key in self._bundles_kept:
                    continue
                if budget.left <= 0:
                    break
                done = self._remove_bundle(fd, entry.name, st, budget, temp=temp)
                if done is None and budget.left <= 0:  # removed in part: the rest soon
                    self._bundles_begun.add((entry.name, st.st_ino))
                else:
                    self._bundles_begun.discard((entry.name, st.st_ino))
                if done:
                    removed.append(entry.name)
                elif done is not None:  # said once, until the folder changes
                    with contextlib.suppress(OSError):
                        st = os.lstat(entry.path)  # as what was removed left it
                    self._bundles_kept.add((entry.name, st.st_ino, st.st_ctime_ns))
        finally:
            os.close(fd)
        if budget.left <= 0:
            # the rest soon, in another tick (the intake takes requests between)
            self._bundles_due = time.monotonic() + BUNDLE_SWEEP_AGAIN
        return removed

    def _remove_bundle(
        self, queue_fd: int, name: str, st: os.stat_result, budget: _Budget, *, temp: bool = False
    ) -> bool | None:
        """:meth:`remove_orphan_bundles` of the bundle ``name`` (``st``: its lstat) once
        it is found to be an orphan: True when removed; False: left (the log says why);
        None: left for now (the index did not answer: the next sweep looks again)."""
        path = self.layout.queue / name
        owner = user_name(st.st_uid)
        try:
            # a submit's building folder: its own user's (it has no request, nor runs)
            owners = set() if temp else self._request_owners(name[: -len(BUNDLE_SUFFIX)])
        except Exception as exc:
            log.warning("orphan bundle %s left for now: the index cannot say whose: %s", path, exc)
            return None
        if owners and st.st_uid not in owners:
            log.warning(
                "%s has no request in the queue but is left alone: it belongs to %s, and "
                "the runs of its request to %s",
                path,
                owner,
                ", ".join(sorted(user_name(uid) for uid in owners)),
            )
            return False
        try:
            left = _remove_own_folder(queue_fd, name, st, budget)
        except _OutOfBudget:
            log.info(
                "orphan bundle %s: this look removed what it could (%d entries at most a "
                "look); the rest in %.0f s",
                path,
                BUNDLE_SWEEP_ENTRIES,
                BUNDLE_SWEEP_AGAIN,
            )
            return None
        except OSError as exc:
            log.warning("cannot remove the orphan bundle %s: %s", path, exc.strerror or exc)
            return False
        if left:
            log.warning(
                "orphan bundle %s: removed what belongs to %s in it; %d entr%s of other "
                "users (or changed meanwhile) left there, with the folder",
                path,
                owner,
                left,
                "y" if left == 1 else "ies",
            )
            return False
        log.info(
            "removed %s, %s, %s's, last changed %s",
            path,
            "a bundle `flowbatch submit` was building when it was stopped"
            if temp
            else "the files `flowbatch submit` queued for a request no longer in the queue "
            "(handled, or removed by its user)",
            owner,
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(max(st.st_mtime, st.st_ctime))),
        )
        return True

    def _claimed_stems(self) -> set[str]:
        """The stems of the requests claimed, by this host or (a shared site) another."""
        out: set[str] = set()
        folders = [self.layout.claimed]
        while folders:
            folder = folders.pop()
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                run_id, sep, name = entry.name.partition("--")
                if sep and CLAIMED_ID.fullmatch(run_id):
                    out.update(_request_stems(name))  # a claim (a file, or a folder)
                elif folder == self.layout.claimed and entry.is_dir(follow_symlinks=False):
                    # a host's folder on a shared site (a host may be named `xn--...`)
                    folders.append(Path(entry.path))
        return out

    def _rejected_stems(self) -> set[str]:
        """The stems of the requests in ``rejected/`` (``<stem>.<n>.yaml`` is one of
        ``<stem>`` renamed beside an earlier rejection of the same name, see
        :meth:`reject`)."""
        out: set[str] = set()
        try:
            names = os.listdir(self.layout.rejected)
        except (FileNotFoundError, NotADirectoryError):
            return out
        for name in names:
            for stem in _request_stems(name):
                out.add(stem)
                head, dot, n = stem.rpartition(".")
                if dot and n.isdigit():
                    out.add(head)
        return out

    def _request_owners(self, stem: str) -> set[int]:
        """The owners of the runs the index holds from a request ``<stem>.yaml``/``.yml``."""
        names = [stem + suffix for suffix in REQUEST_SUFFIXES]
        query = RunRow.select(RunRow.owner_uid).where(RunRow.request.in_(names)).distinct()
        return {int(row.owner_uid) for row in query}

    # -- reading and validating ---------------------------------------------------------------
    def _read(self, claimed: Claimed) -> Request | CancelRequest:
        label = claimed.name
        st = claimed.path.lstat()
        if stat.S_ISLNK(st.st_mode):
            raise RequestError(
                "a symbolic link is not a request; it was not followed",
                file=label,
                hint="copy the request file into the queue instead",
            )
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise RequestError(f"the entry is {kind}, not a request file", file=label)
        limit = self.site.config.max_request_bytes
        if st.st_size == 0:
            raise RequestError(
                "the request file is empty",
                file=label,
                expected="a YAML mapping with at least `workflow:`",
            )
        try:
            fd = os.open(claimed.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except PermissionError:
            # a service user's daemon reads what others may read: a file of mode 0600
            raise RequestError(
                f"the daemon ({user_name(os.geteuid())}) may not read the request file "
                f"(mode {stat.S_IMODE(st.st_mode):04o}, owned by {user_name(st.st_uid)})",
                file=label,
                hint="make it readable (chmod a+r) and drop it again, or use "
                "`flowbatch submit`, which queues a readable copy",
            ) from None
        try:
            opened = os.fstat(fd)
            # the file whose owner the claim recorded, not one put in its place since
            if claimed.ino is not None and (
                (opened.st_ino, opened.st_dev, opened.st_uid)
                != (claimed.ino, claimed.dev, claimed.uid)
            ):
                raise RequestError(
                    "the request file was replaced after the daemon claimed it; "
                    "the file now in its place was not read",
                    file=label,
                    hint="drop the request again",
                )
            # a claim of the daemon's own user found after a crash may have names intake
            # gave it in run folders (_keep_request)
            refuse_writers(fd, opened, label, links=claimed.fresh or claimed.uid != os.geteuid())
            # in chunks: a buffered read of limit + 1 bytes allocated (and mapped) a
            # whole MiB for every request: three times the cost of the read itself
            raw = read_up_to(fd, limit + 1)
        finally:
            os.close(fd)
        if len(raw) > limit:
            raise RequestError(
                f"the request file is over the size limit of {limit} bytes",
                file=label,
                hint="pass data as file arguments, not inline",
            )
        if b"\x00" in raw:
            raise RequestError("the request file is binary (contains NUL bytes)", file=label)
        claimed.raw = raw
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(
                f"the request file is not UTF-8 text (byte {exc.start})",
                file=label,
                hint="save it as UTF-8",
            )
        doc = yamlio.loads(text, file=label, as_written=True)
        return parse_request(doc, file=label)

    def _create(self, claimed: Claimed, req: Request, result: IntakeResult) -> None:
        """One run per point of the request (one point without ``sweep:``).

        Point ``i`` gets the run id ``<claimed id>-<i>`` (the first one the claimed id
        itself), so a daemon killed half-way through a sweep creates exactly the points
        that are still missing when it comes back.
        """
        label = claimed.name
        site = self.site
        checked = check_request(site, req, uid=claimed.uid, label=label, render=False)
        template, version, executor = checked.template, checked.version, checked.executor
        points = checked.points
        group = req.group or user_name(claimed.uid)
        skipped = (
            self._already_done(req, version, [p.arguments for p in points], group)
            if req.sweep
            else {}
        )
        files_dir = checked.files_dir
        todo: list[int] = []
        for index in range(len(points)):
            if index in skipped:
                continue
            # made before a crash (a leftover claim): not made again. A fresh claim's id is
            # new: its runs cannot exist (no stat per run of a burst)
            if (
                not claimed.fresh
                and site.layout.run_dir(req.workflow, point_run_id(claimed.run_id, index)).exists()
            ):
                continue
            todo.append(index)
        # every point to make rendered (a sweep is refused whole, before its first run);
        # the points a resubmitted sweep already ran are not
        checked.rendered.update(
            render_points(site, template, points, executor, todo, about=(req.workflow, version))
        )
        if len(todo) > 1:
            self._check_points({i: points[i] for i in todo}, claimed, label)
        made: list[str] = []
        try:
            for index in todo:
                sweep = (
                    {"id": claimed.run_id, "point": index, "of": len(points)} if req.sweep else None
                )
                run_id = point_run_id(claimed.run_id, index)
                try:
                    run = self._create_run(
                        claimed,
                        req,
                        run_id,
                        template,
                        version,
                        executor,
                        files_dir,
                        points[index],
                        sweep,
                        checked.rendered[index],
                    )
                except Exception as exc:
                    # a run not made (a full disk, a file refused) leaves no half-copied
                    # folder: it held the space the next request needed (found by the
                    # re-review); made, its folder is no longer at this name
                    tmp = self.site.layout.run_dir(req.workflow, run_id)
                    shutil.rmtree(tmp.with_name(f".{run_id}.tmp"), ignore_errors=True)
                    if isinstance(exc, OSError) and exc.filename is None:
                        exc.filename = str(tmp.parent)  # a write's: where, for the log
                    raise
                result.runs.append(run)
                made.append(run.id)
        except FlowbatchError as exc:
            if made:  # a file that went away since the check: say what exists
                with contextlib.suppress(OSError):  # its claim goes now, not settled
                    sync_file_system(self.layout.results)
                note = (
                    f"the runs of the points before it exist: {', '.join(made)} "
                    "(submitted again, the sweep skips them)"
                )
                exc.hint = f"{exc.hint}; {note}" if exc.hint else note
            raise
        if skipped:
            log.info(
                "sweep %s of %s: skipped %d points already run: %s",
                claimed.run_id,
                label,
                len(skipped),
                ", ".join(f"{i} ({why})" for i, why in sorted(skipped.items())),
            )
            result.skipped[claimed.name] = skipped

    def _check_points(self, points: dict[int, Point], claimed: Claimed, label: str) -> None:
        """Every point's files opened as :meth:`_create_run` opens them (each distinct
        set of files once: a sweep over other parameters checks its files once), so that
        a missing file of a later point rejects the sweep before any run (everything
        else was checked by :func:`check_request`)."""
        for point in file_points(points.values()):
            for fd in self._check_files(point, claimed, label).values():
                os.close(fd)

    def _already_done(
        self, req: Request, version: str, points: list[dict[str, Any]], group: str
    ) -> dict[int, str]:
        """Points of a resubmitted sweep that need no new run: index -> why.

        A point that succeeded (or is still active) with the same arguments on the same
        template version for the same ``group`` (the runs' leaderboard group: another
        group's runs are theirs, not a resumption of this sweep) is skipped, as jobmon
        never reruns finished work; one whose
        runs all failed is run again only with ``retry_failed: true``
        (see :mod:`flowbatch.resume`, which ``flowbatch submit`` asks too).
        """
        from .resume import classify_points

        plan = classify_points(self.site, req.workflow, version, points, group=group)
        return plan.skipped(retry_failed=req.retry_failed)

    def _create_run(
        self,
        claimed: Claimed,
        req: Request,
        run_id: str,
        template: Template,
        version: str,
        executor: str,
        files_dir: Path,
        point: Point,
        sweep: dict[str, Any] | None,
        rendered: RenderedWorkflow,
    ) -> RunRecord:
        """The run of one point (``rendered``: its workflow, by :func:`check_request`)."""
        label = claimed.name
        site = self.site
        arguments = point.arguments
        sources = self._check_files(point, claimed, label)
        try:
            run_dir = site.layout.run_dir(req.workflow, run_id)
            tmp_dir = run_dir.with_name(f".{run_id}.tmp")
            try:
                tmp_dir.mkdir()
            except FileNotFoundError:  # the workflow's first run: its folders are made,
                # the site owner's under a root daemon (see flowbatch.store.owner)
                make_dirs(tmp_dir.parent, site.layout.owner)
                tmp_dir.mkdir()
            except FileExistsError:  # left by a daemon that died while making it
                shutil.rmtree(tmp_dir, ignore_errors=True)
                tmp_dir.mkdir()
            if files_dir.is_dir():
                copy_tree(str(files_dir), str(tmp_dir))
            for name, fd in sources.items():
                target = tmp_dir / arguments[name].target
                target.parent.mkdir(parents=True, exist_ok=True)
                target.unlink(missing_ok=True)  # the template's sample, replaced
                try:
                    copy_fd(fd, target, max_bytes=site.config.max_input_bytes)
                except CopyLimit:
                    # checked (refuse_large), then grown or filled in before its copy
                    raise ArgumentError(
                        f"{arguments[name].source!r} grew past the limit of "
                        f"{site.config.max_input_bytes} bytes while it was taken in",
                        file=label,
                        field=point.field(name),
                        hint="leave a request's files as they are until its runs exist",
                    ) from None
        finally:
            for fd in sources.values():
                os.close(fd)
        _keep_request(claimed, tmp_dir / REQUEST_COPY)
        # the script's folders: one syscall each here, where the script, finding them
        # missing, starts a mkdir process (its test stays, for folders staged elsewhere)
        for folder in (LOGS_DIR, STATUS_DIR):
            (tmp_dir / folder).mkdir(exist_ok=True)
        # the folder is not in place yet: its rename below makes every file appear at once
        atomic.write_private(
            tmp_dir / SCRIPT_NAME, build_script(rendered, run_id=run_id).encode(), mode=0o755
        )
        run = RunRecord(
            id=run_id,
            workflow=req.workflow,
            version=version,
            group=req.group or user_name(claimed.uid),
            name=req.name,
            owner_uid=claimed.uid,
            owner=user_name(claimed.uid),
            request=claimed.name,
            created_at=now_iso(),
            arguments=run_arguments(arguments),
            executor=executor,
            time_limit=template.time_limit or site.config.time_limit,
            retries=template.retries if req.retries is None else req.retries,
            host=site.host,
            sweep=sweep,
        )
        run.history.append({"state": run.state.value, "at": run.created_at, "message": None})
        atomic.write_private(tmp_dir / RUN_JSON, atomic.record_bytes(run.to_dict()))
        hand_over(tmp_dir, claimed.uid)
        faults.point("create")
        os.replace(tmp_dir, run_dir)  # the run exists from here on, complete
        faults.point("created")
        # run.json came with the folder: only the index row is left to write
        try:
            site.store.write(run, change=dict(run.history[-1]), tree=False)
        except Exception:
            # the run exists (its folder is complete): never reject it now; its next
            # state change, or sync_active after a restart, indexes it
            log.exception("run %s created but not indexed yet", run_id)
        log.info(
            "run %s created from %s (workflow %s, group %s)", run.id, label, run.workflow, run.group
        )
        return run

    def _check_files(self, point: Point, claimed: Claimed, label: str) -> dict[str, int]:
        """Open each file argument safely; return name -> open descriptor.

        The path must stay inside the request's folder with no symbolic link on the way
        (each component is opened with ``O_NOFOLLOW`` relative to the previous one, so a
        file swapped for a link after a check cannot lead the daemon elsewhere); the file
        must be regular and belong to the request's owner (a request cannot read another
        user's inputs, and root's cannot take a file its owner could change under root's
        run). Its target was checked by :func:`check_request`.
        """
        out: dict[str, int] = {}
        try:
            for name, value in point.arguments.items():
                if not isinstance(value, FileArg) or not value.source:
                    continue
                field = point.field(name)  # sweep.<name>[<i>] for a swept file
                fd = open_inside(self.layout.queue, value.source, label=label, field=field)
                out[name] = fd
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise ArgumentError(
                        f"{value.source!r} is not a regular file", file=label, field=field
                    )
                refuse_large(st, self.site.config.max_input_bytes, label, field, value.source)
                refuse_foreign(st, claimed.uid, label, field=field, source=value.source)
                # the run reads (or runs) it as its owner's: as for the request itself
                refuse_writers(
                    fd, st, label, field=field, source=value.source, queue=self.layout.queue
                )
        except BaseException:
            for fd in out.values():
                os.close(fd)
            raise
        return out

    # -- rejection ----------------------------------------------------------------------------
    def reject(self, claimed: Claimed, error: FlowbatchError) -> None:
        rejected = self.layout.rejected
        own_folder(rejected)  # one lstat: never a folder or link a participant put there
        name = claimed.name
        dest = rejected / name
        n = 1
        # a name is free when neither it nor its error file is there, or when the error
        # file is alone and names it: a daemon killed between the two writes left it (this
        # very request, claimed again); any other (a request named `x.yaml.error.yaml`
        # rejected earlier) is kept
        while os.path.lexists(dest) or (
            os.path.lexists(rejected / f"{dest.name}.error.yaml")
            and not _error_file_of(rejected / f"{dest.name}.error.yaml", dest.name, claimed.uid)
        ):
            dest = rejected / f"{Path(name).stem}.{n}{Path(name).suffix}"
            n += 1
        info = error.to_dict()
        info.setdefault("file", name)
        info["rejected_at"] = now_iso()
        info["request"] = dest.name
        mode, owner = _error_file_access(claimed)
        atomic.write_text(
            rejected / f"{dest.name}.error.yaml",
            yamlio.dump(info),
            fsync=False,
            mode=mode,
            owner=owner,
        )
        bundle = self._bundle(claimed) if claimed.run_id else None
        if bundle is not None:  # the files `submit` brought stay with the request
            with contextlib.suppress(OSError):
                os.rename(bundle, rejected / f"{dest.name}{BUNDLE_SUFFIX}")
        try:
            os.rename(claimed.path, dest)
        except FileNotFoundError:
            pass
        log.warning("rejected %s: %s", name, error.summary())


def _existing(path: Any) -> Path | None:
    """The deepest folder of ``path`` (an error's file name) that exists: the folder a
    request's run could not be made in, not the temporary name it was to have."""
    if not isinstance(path, (str, os.PathLike)):
        return None
    here = Path(os.fsdecode(path))
    while not here.exists() and here != here.parent:
        here = here.parent
    return here


def _place_fix(exc: OSError, claimed: Claimed) -> str:
    """What to do about a request's runs that could not be made for ``exc`` (a disk
    error) while the site as a whole has room."""
    where = _existing(exc.filename) or "that folder"
    if exc.errno == errno.EROFS:
        return (
            f"{where} is on a read-only file system (a read-only mount beneath the results "
            "tree, or one remounted after an error: see dmesg): mount it read-write"
        )
    if exc.errno == errno.EDQUOT:
        owner = user_name(claimed.uid)
        return (
            f"a disk quota is exceeded on {where} (of {owner}, the request's owner, whose "
            f"runs' files these are, or of the daemon's user): free space of that user's "
            f"there, or raise the quota (quota -u {owner})"
        )
    if exc.errno == errno.ENOSPC:
        return (
            f"the file system of {where} is full (one of its own beneath the results "
            f"tree: the rest has room), or has no inodes left: free space there (df {where}; "
            f"df -i)"
        )
    return f"check the disk or the mount of {where} (dmesg)"


def _error_file_access(claimed: Claimed) -> tuple[int, tuple[int, int] | None]:
    """The mode and owner of a rejected request's error file: readable by whom the
    request was readable, and the request's user's when a root daemon rejects another
    user's request (found by review: the error of a private request, which may quote one
    of its values, was everyone's to read). A request gone meanwhile: its user's alone."""
    if os.geteuid() not in (0, claimed.uid):
        # a service user's daemon cannot give the file to the request's user: readable
        # by all, or its user could not read why (found by review)
        return 0o644, None
    try:
        st = os.lstat(claimed.path)
        mode, group = (stat.S_IMODE(st.st_mode) & 0o644) | 0o600, st.st_gid
    except OSError:
        mode, group = 0o600, -1
    if os.geteuid() == 0 and claimed.uid != 0:
        return mode, (claimed.uid, group)
    return mode, None


def _newest_folder_change(path: str) -> float:
    """The latest modification time of the folders directly in ``path`` (not followed):
    a copy into one of them changes it."""
    newest = 0.0
    with contextlib.suppress(OSError), os.scandir(path) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    newest = max(newest, st.st_mtime)
    return newest


def _request_stems(name: str) -> list[str]:
    """The stem of the request ``name`` is (``x`` of ``x.yaml``), or is being written as
    (``.x.yaml.tmp``, as `submit` writes it): none, or one."""
    if name.endswith(".tmp"):
        name = name[: -len(".tmp")]
        if name.startswith("."):
            name = name[1:]
    elif name.startswith("."):
        return []
    if not name.lower().endswith(REQUEST_SUFFIXES):
        return []
    return [Path(name).stem]


#: the most entries one sweep for orphan bundles removes (:class:`_Budget`): a bundle a
#: participant filled with a million files is removed over several sweeps, never in one
#: tick of the intake (about 10 us an entry here)
BUNDLE_SWEEP_ENTRIES = 20_000


class _OutOfBudget(Exception):
    """This sweep removed its :data:`BUNDLE_SWEEP_ENTRIES`: the rest at the next one."""


@dataclass
class _Budget:
    left: int

    def spend(self) -> None:
        if self.left <= 0:
            raise _OutOfBudget()
        self.left -= 1


def _remove_own_folder(
    parent: int, name: str, st: os.stat_result, budget: _Budget, depth: int = 0
) -> int:
    """Remove the folder ``name`` of the open folder ``parent`` (``st``: its lstat) and
    what its owner has in it, walking by descriptors without following a link (a link
    in it is removed as a name). An entry of another user's is left, and so are the
    folders around it: returns the number of entries left (0: all gone). A folder put
    in its place since ``st`` was taken is not touched. Each removal spends one of
    ``budget`` (:class:`_OutOfBudget` when there is none left)."""
    fd = os.open(name, _TAKE_DIR | os.O_NOFOLLOW, dir_fd=parent)
    try:
        opened = os.fstat(fd)
        if (opened.st_ino, opened.st_dev, opened.st_uid) != (st.st_ino, st.st_dev, st.st_uid):
            return 1
        left = 0
        for sub in os.listdir(fd):
            try:
                sub_st = os.stat(sub, dir_fd=fd, follow_symlinks=False)
                if sub_st.st_uid != st.st_uid:
                    left += 1
                elif stat.S_ISDIR(sub_st.st_mode):
                    if depth < 100:
                        left += _remove_own_folder(fd, sub, sub_st, budget, depth + 1)
                    else:
                        left += 1
                else:
                    budget.spend()
                    os.unlink(sub, dir_fd=fd)
            except FileNotFoundError:
                continue
    finally:
        os.close(fd)
    if not left:
        budget.spend()
        os.rmdir(name, dir_fd=parent)
    return left


def refuse_foreign(st: os.stat_result, owner: int, label: str, *, field: str, source: str) -> None:
    """Refuse an input file (``st``) that is not the request's ``owner``'s: a request may
    only use its owner's files. Root's too: a file of another user's is that user's to
    change, and root's run would read (or run) as root what they put there."""
    if st.st_uid != owner:
        raise ArgumentError(
            f"file {source!r} belongs to {user_name(st.st_uid)}, not to the request's "
            f"owner {user_name(owner)}",
            file=label,
            field=field,
            expected="input files of the request's owner",
            hint="a request may only use its owner's files: copy the file (`cp`, as its "
            "owner) or use `flowbatch submit`, which sends copies",
        )


def refuse_writers(
    fd: int,
    st: os.stat_result,
    label: str,
    *,
    field: str | None = None,
    source: str | None = None,
    queue: Path | None = None,
    links: bool = False,
) -> None:
    """Refuse the request (its input file ``source`` in ``queue``, for ``field``) when
    someone but the file's owner could have written it
    (:func:`~flowbatch.accounts.other_writers`): a run is made as its request file's
    owner, and uses its inputs as theirs."""
    writers = other_writers(fd, st, links=links)
    if not writers:
        return
    owner = user_name(st.st_uid)
    if source is None:
        raise RequestError(
            f"the request file {writers}: a run is made as the file's owner ({owner}), so "
            "no one else may be able to write it",
            file=label,
            expected="a request file only its owner can change (mode 0644 or 0600)",
            hint="copy it into the queue with `cp` (not `ln`) after `chmod go-w` on it, "
            "or drop it with `flowbatch submit`",
        )
    raise ArgumentError(
        f"file {source!r} {writers}: the run uses it as {owner}'s, so no one else may be "
        "able to write it",
        file=label,
        field=field,
        hint=f"run `chmod go-w {(queue or Path()) / source}` and drop the request again, or "
        "send it with "
        "`flowbatch submit` (which copies it, mode 0644)",
    )


def _error_file_of(path: Path, request: str, uid: int) -> bool:
    """Whether ``path`` is a rejection's error file for the request named ``request``,
    of the request's user ``uid`` (a root daemon gives it to them) or the daemon's."""
    try:
        # rejected/ holds what participants dropped (a FIFO named like an error file
        # held the daemon for good): a regular file, not through a link, or not one
        owner = os.lstat(path).st_uid
        if owner not in (os.geteuid(), uid):
            return False
        doc = yamlio.load_file(path, max_bytes=1 << 20, follow=False, owner=owner)
    except (OSError, FlowbatchError):
        return False
    return isinstance(doc, dict) and doc.get("request") == request


# -- the checks of a request -------------------------------------------------------------------
@dataclass
class CheckedRequest:
    """A request that passed :func:`check_request`: what intake makes its runs of."""

    template: Template
    version: str
    executor: str
    #: every point of the request (one without ``sweep:``), cast as its runs get them
    points: list[Point]
    #: the workflow of each point (by index), rendered for ``executor`` (intake renders
    #: only the points it makes, after the ones a resubmitted sweep already ran)
    rendered: dict[int, RenderedWorkflow]
    #: the template version's files (what a file argument's target may not replace)
    files_dir: Path


def file_points(points: Iterable[Point]) -> Iterator[Point]:
    """The points with file arguments, each distinct set of them once: a sweep over other
    parameters has its files checked once, not at every point."""
    seen: set[tuple[tuple[str, str, str], ...]] = set()
    for point in points:
        files = tuple(
            (name, value.source, value.target)
            for name, value in point.arguments.items()
            if isinstance(value, FileArg) and value.source
        )
        if files and files not in seen:
            seen.add(files)
            yield point


def render_points(
    site: Site,
    template: Template,
    points: list[Point],
    executor: str,
    which: Iterable[int] | None = None,
    *,
    about: tuple[str, str] | None = None,
) -> dict[int, RenderedWorkflow]:
    """The points ``which`` (default: all) rendered for ``executor``, by index; an error
    names the sweep's point it comes from. An error that is the template's, whatever the
    values, names the workflow and version ``about`` and says to tell its organiser,
    not the request's file (found by review)."""
    out: dict[int, RenderedWorkflow] = {}
    for index in range(len(points)) if which is None else which:
        point = points[index]
        try:
            try:
                out[index] = render_point(site, template, point.arguments, executor)
            except TemplateRenderError as exc:
                if about is None:
                    raise
                raise exc.for_request(*about) from None
        except FlowbatchError as exc:
            if len(points) > 1:
                swept = ", ".join(
                    f"{name}={point.arguments[name]!r}" for name in sorted(point.fields)
                )
                where = f"in the sweep's point {index} ({swept})"
                exc.hint = f"{where}; {exc.hint}" if exc.hint else where
            raise
    return out


def check_request(
    site: Site,
    req: Request,
    *,
    uid: int,
    label: str,
    daemon_uid: int | None = None,
    render: bool = True,
) -> CheckedRequest:
    """Every check of a request that needs neither its file nor the files it names, in
    the order intake makes them; the first problem raises (a FlowbatchError with the
    field and reason of the rejection).

    Intake calls it for each request it takes in (``uid``: the file's owner); ``flowbatch
    validate`` and ``flowbatch submit`` call it too (``uid``: the caller, who will own the
    queued file; ``daemon_uid``: the user the site's daemon runs as, see
    :func:`site_daemon_uid`), so that what they approve the daemon takes: one function, so the
    three cannot disagree. For intake's hot path it reads no file but the template (from
    the template store's cache) and renders each point once (the renders are the runs').

    The checks: who may submit here (:func:`owner_refusal`); the ``group:``
    (:func:`may_use_group`); the workflow and version; the executor (the request's, else
    the template's, else the site's; :func:`choose_executor`); the arguments and sweep of
    every point; every point's rendering for that executor; every file argument's target
    (:func:`_check_target`). Left to intake, which needs the claimed file and the files
    beside it: the file itself (type, size, text) and opening each file argument
    (:meth:`Intake._check_files`)."""
    root = root_refusal(site, uid, daemon_uid=daemon_uid)
    if root:
        raise RequestError(
            root,
            file=label,
            hint="submit as the user the run should run as (sudo -u USER flowbatch submit "
            "...); or, where only trusted users may write the queue, set "
            "`root_requests: true` in flowbatch.yaml",
        )
    refusal = owner_refusal(site, uid, daemon_uid=daemon_uid)
    if refusal:
        raise RequestError(
            refusal,
            file=label,
            hint="ask the site's admin to add you to "
            "allowed_users or allowed_groups in flowbatch.yaml",
        )
    if req.group and not may_use_group(site, uid, req.group):
        raise RequestError(
            f"user {user_name(uid)} may not submit for group {req.group!r}",
            file=label,
            field="group",
            expected="your user name, a Unix group you belong to, or a team of "
            "`teams` in flowbatch.yaml that lists you",
            hint="leave `group` out to submit under your own name",
        )
    try:
        template, version = site.templates.load(req.workflow, req.version)
    except FlowbatchError as exc:
        raise exc.at(file=label, prefix="workflow" if not req.version else "version")
    executor = choose_executor(site, req, template, version, label)
    points = cast_points(template.parameters, req.arguments, req.sweep or None, file=label)
    # intake (``render=False``) renders only the points it makes (after _already_done)
    try:
        rendered = (
            render_points(site, template, points, executor, about=(req.workflow, version))
            if render
            else {}
        )
    except FlowbatchError as exc:
        raise exc.at(file=label)  # validate and submit named no file
    files_dir = site.templates.files_dir(req.workflow, version)
    for point in file_points(points):
        targets: dict[str, str] = {}
        for name, value in point.arguments.items():
            if isinstance(value, FileArg) and value.source:
                _check_target(template, files_dir, name, value, targets, label, point.field(name))
    return CheckedRequest(template, version, executor, points, rendered, files_dir)


def choose_executor(site: Site, req: Request, template: Template, version: str, label: str) -> str:
    """The executor of a request's runs: the request's ``executor:``, else the
    template's, else the site's default. One the site does not have is refused, saying
    where the name came from (a template installed before the site dropped the name)."""
    known = executor_names(site.config)
    if req.executor:  # an empty one is none, as it always was
        name, source = req.executor, None
    elif template.executor:
        name = template.executor
        source = (
            f"named by `executor:` in the template of workflow {req.workflow!r} "
            f"(version {version}); the request names none"
        )
    else:  # flowbatch.yaml is checked when read: only a config made in code gets here
        name = site.config.executor
        source = (
            "the site's default (`executor:` in flowbatch.yaml); the request and its "
            "template name none"
        )
    if name in known:
        return name
    raise RequestError(
        f"unknown executor {name!r}" + (f", {source}" if source else ""),
        file=label,
        field="executor" if source is None else None,
        expected="one of: " + ", ".join(known),
        hint="executors are declared in the site's flowbatch.yaml"
        if source is None
        else "ask for one with `executor:` in the request, or have the site's admin fix "
        "the name where it is written",
    )


def render_point(
    site: Site, template: Template, arguments: dict[str, Any], executor: str
) -> RenderedWorkflow:
    """A run's steps with the ``${name}`` variables of its executor. A variable only
    some SSH hosts define, used by a run elsewhere, is refused with where it exists."""
    config = site.config
    try:
        return render_workflow(
            template, template.workflow, arguments, config.variables_for(executor)
        )
    except FlowbatchError as exc:
        name = exc.unknown_variable
        hosts = [h for h, host in config.ssh.items() if name and name in host.variables]
        if not hosts:
            raise
        raise RequestError(
            f"${{{name}}} is defined only for runs on {', '.join(hosts)}, not on {executor}",
            field=exc.field,
            hint=f"ask for `executor: {hosts[0]}`, or have the site define {name} "
            "in the `variables` of flowbatch.yaml",
        ) from None


def site_daemon_uid(site: Site) -> int:
    """The user the site's daemon runs as, for a process that is not the daemon
    (``flowbatch validate``, ``submit``): the owner of ``queue/.claimed``, which the daemon
    makes as its own and takes nothing in while it is anyone else's (:func:`check_queue`);
    before any daemon ran, the owner of ``results/`` (as ``flowbatch doctor`` assumes),
    else of the site folder."""
    layout = site.layout
    for path in (layout.claimed, layout.results, site.root):
        try:
            st = path.lstat()
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            return st.st_uid
    return os.geteuid()


#: names at the run folder's root that programs run there load by themselves
#: names at the run folder's root that a program started there reads by itself: make,
#: node, pytest's configuration (a participant's `addopts` changes how a pytest grader
#: collects its tests); not archives (.zip, .egg) nor .pth files, which Python reads only
#: where it is told to or in its site folders (found by review: `data: dataset.zip`
#: refused)
_ROOT_LOADED = frozenset(
    {
        "__pycache__",
        "node_modules",
        "Makefile",
        "makefile",
        "GNUmakefile",
        "pytest.ini",
        "tox.ini",
        "setup.cfg",
        "pyproject.toml",
    }
)
_ROOT_LOADED_SUFFIXES = (".py", ".pyc", ".pyw", ".pyd", ".so")


def _picked_up_at_root(parts: tuple[str, ...]) -> bool:
    """Whether a target with these path parts puts at the run folder's root a name that
    an interpreter run there loads on its own: a Python module or package (the working
    directory is first on ``sys.path`` for ``python -m``/``-c``/``-``), a dot file
    (``.Rprofile``, ``.Renviron``, ``.npmrc``...), ``node_modules``, a Makefile."""
    first = parts[0]
    if first in _ROOT_LOADED or first.startswith("."):
        return True
    if len(parts) == 1:
        return first.lower().endswith(_ROOT_LOADED_SUFFIXES)
    return parts[1] == "__init__.py" or first.lower().endswith(_ROOT_LOADED_SUFFIXES)


def _check_target(
    template: Template,
    files_dir: Path,
    name: str,
    value: FileArg,
    targets: dict[str, str],
    label: str,
    where: str,
) -> None:
    """A target the user chose may not overwrite what the template ships or what
    flowbatch writes (``run.json``, ``status/`` markers...); the author's own target
    (the declared ``target`` or ``defaultValue``) may replace the template's sample.
    ``where`` is the argument's place in the request (``arguments.<name>``)."""
    from .store.templates import RESERVED

    field = f"{where}.target"
    parts = Path(value.target).parts
    if parts and parts[0] in RESERVED:
        raise ArgumentError(
            f"target {value.target!r} is a name flowbatch reserves in the run folder",
            file=label,
            field=field,
            expected=f"a path outside {', '.join(sorted(RESERVED))}",
        )
    if value.target in targets:
        raise ArgumentError(
            f"target {value.target!r} is also the target of {targets[value.target]!r}",
            file=label,
            field=field,
        )
    targets[value.target] = name
    param = template.parameter(name)
    if param and value.target in (param.target, param.default):
        return
    # at the run folder's root, the working directory of every command: no name that a
    # program run there picks up by itself (`python -m code.score` imports a json.py
    # there in place of Python's json: found by review)
    if parts and _picked_up_at_root(parts):
        raise ArgumentError(
            f"target {value.target!r} is a name a program run in the run folder could load "
            "in place of its own (a Python module or package, a dot file, node_modules, "
            "a Makefile, pytest's configuration)",
            file=label,
            field=field,
            expected="a data file's name at the run folder's root (not *.py, *.pyc, *.pyw, "
            "*.pyd, *.so, .*, __pycache__, node_modules, Makefile, pytest.ini, tox.ini, "
            "setup.cfg, pyproject.toml, <folder>/__init__.py), or a path inside a folder of "
            "your own",
            hint="choose another target path, e.g. inputs/" + parts[-1],
        )
    # the target itself, or a file standing where one of its folders would go
    prefixes = [Path(*parts[:i]) for i in range(1, len(parts) + 1)]
    if (
        any((files_dir / p).is_file() or (files_dir / p).is_symlink() for p in prefixes)
        or (files_dir / value.target).exists()
    ):
        raise ArgumentError(
            f"target {value.target!r} would replace a file of the workflow template",
            file=label,
            field=field,
            hint="choose another target path",
        )
    # nor be added to a folder of the template's files (a `code/json.py` beside the
    # organiser's `code/score.py` is imported by it in place of Python's json), except
    # the folder where the template puts this parameter's file (its declared target's,
    # else its default's: where the file goes when the user names no target)
    declared = (param.target or (param.default if param.has_default else None)) if param else None
    parts_of = Path(declared).parts if isinstance(declared, str) else ()
    own = {Path(*parts_of[:i]) for i in range(1, len(parts_of))}
    for folder in prefixes[:-1]:
        if folder not in own and (files_dir / folder).is_dir():
            raise ArgumentError(
                f"target {value.target!r} is inside {folder}/, a folder of the workflow "
                "template's files",
                file=label,
                field=field,
                expected="a path outside the template's folders"
                + (f", or inside {', '.join(sorted(f'{o}/' for o in own))}" if own else ""),
                hint="a file of yours beside the template's code could stand in for it",
            )


def open_inside(folder: Path, rel: str, *, label: str, field: str) -> int:
    """Open ``folder/rel`` for reading, refusing ``..``, absolute paths and symlinks on
    any component (:func:`flowbatch.safeio.open_beneath`), with a user's error."""
    try:
        return open_beneath(folder, rel)
    except FileNotFoundError:
        raise ArgumentError(
            f"file {rel!r} does not exist",
            file=label,
            field=field,
            hint="put the file beside the request, or use `flowbatch submit` which brings it along",
        ) from None
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise ArgumentError(
                "a file path must be relative to the request file and stay inside its folder",
                file=label,
                field=field,
                expected="a relative path without '..'",
            ) from None
        if exc.errno in LINK_ERRORS:
            raise ArgumentError(
                f"{rel!r} goes through a symbolic link (a symlink could lead "
                "outside the request's folder)",
                file=label,
                field=field,
            ) from None
        hint = None
        if exc.errno in (errno.EACCES, errno.EPERM):
            # found by review: a participant's private file (umask 077) on a site whose
            # daemon runs as a service user, rejected with no word on what to do
            hint = (
                f"{user_name(os.geteuid())} cannot read it, the file or a folder on its path "
                "(the daemon's user reads a queued request's files): make them readable to "
                "that user (chmod o+r on the file, o+x on its folders, or a group you share "
                "with them), then queue the request again"
            )
        raise ArgumentError(
            f"cannot open {rel!r}: {exc.strerror}", file=label, field=field, hint=hint
        ) from None


def check_source(
    folder: Path,
    rel: str,
    *,
    label: str,
    field: str,
    writers: bool = False,
    owner: int | None = None,
    max_bytes: int | None = None,
) -> Path:
    """``folder/rel`` if the daemon would take it as a file argument's source: inside the
    folder without ``..`` or a symbolic link on the way (:func:`open_inside`), a regular
    file of at most ``max_bytes`` (:func:`refuse_large`); ``writers``: that only its
    owner can write, as intake wants a file beside a request dropped into the queue
    (:func:`refuse_writers`; ``validate`` asks it,
    ``submit`` not: it sends a copy of its own). ``validate`` and ``submit`` check a
    request's files with it, so that what they approve the intake takes."""
    fd = open_inside(folder, rel, label=label, field=field)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ArgumentError(f"{rel!r} is not a regular file", file=label, field=field)
        if max_bytes is not None:
            refuse_large(st, max_bytes, label, field, rel)
        if owner is not None:  # as intake wants: the request's owner's
            refuse_foreign(st, owner, label, field=field, source=rel)
        if writers:
            refuse_writers(fd, st, label, field=field, source=rel, queue=folder)
    finally:
        os.close(fd)
    return folder / rel


def refuse_large(st: os.stat_result, limit: int, label: str, field: str, source: str) -> None:
    """A file argument over ``max_input_bytes`` is refused: intake copies it into the
    run's folder while it takes the request in (the daemon's other work waits), and a
    root daemon writes it as root, beyond its user's quota."""
    if st.st_size > limit:
        raise ArgumentError(
            f"{source!r} is {st.st_size} bytes, over the limit of {limit} bytes for a file "
            "argument",
            file=label,
            field=field,
            hint="put large data where the runs can read it and pass its path as a string, "
            "or ask the site's admin to raise max_input_bytes in flowbatch.yaml",
        )


def check_request_file(path: Path, label: str) -> None:
    """Refuse the request file at ``path`` as intake refuses one it claimed that someone
    but its owner could have written (:func:`refuse_writers`, hard links included), for
    ``flowbatch validate``: the same message and fix."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        refuse_writers(fd, os.fstat(fd), label, links=True)
    finally:
        os.close(fd)


MAX_NAME_BYTES = 200


def name_problem(name: str) -> str | None:
    """Why a request's file name cannot be taken as it is, or None."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "the file name is not valid UTF-8"
    if size > MAX_NAME_BYTES:
        return f"the file name is too long ({size} bytes; at most {MAX_NAME_BYTES})"
    return None


def printable_name(name: str) -> str:
    """``name`` made safe to write into YAML, JSON and logs, and short enough."""
    raw = os.fsencode(name)
    text = raw.decode("utf-8", "replace").replace("\ufffd", "_")
    if len(text.encode("utf-8")) > MAX_NAME_BYTES:
        digest = hashlib.sha1(raw).hexdigest()[:8]
        suffix = Path(text).suffix[:10]
        text = f"{text[:100]}~{digest}{suffix}"
    return text


def point_run_id(run_id: str, index: int) -> str:
    """The run id of point ``index`` of the request claimed as ``run_id``."""
    return run_id if index == 0 else f"{run_id}-{index}"


def owner_refusal(site: Site, uid: int, *, daemon_uid: int | None = None) -> str | None:
    """Why requests of ``uid`` are not accepted here, or None when they are.

    A root daemon runs each run as its owner, so it accepts everyone unless the config
    lists who may submit. A daemon running as a service user runs everything as itself:
    by default it accepts only its own user's requests. ``daemon_uid``: the daemon's
    user, asked from another process (default: this process's user).
    """
    me = os.geteuid() if daemon_uid is None else daemon_uid
    config = site.config
    if uid == me and (me != 0 or config.allowed_users is None):
        return None
    if config.allowed_users is None and config.allowed_groups is None:
        if me == 0:
            return None
        return (
            f"this daemon runs as {user_name(me)} and accepts only that user's requests "
            f"(the file belongs to {user_name(uid)})"
        )
    name = user_name(uid)
    if name in (config.allowed_users or []):
        return None
    if any(in_group(uid, group) for group in config.allowed_groups or []):
        return None
    return f"user {name} may not submit to this site"


def root_refusal(site: Site, uid: int, *, daemon_uid: int | None = None) -> str | None:
    """Why a root daemon refuses this request of root's, or None. Ownership is all a
    daemon knows of who put a file into its queue, and a user can move a file of root's
    there from any folder they may write on the same file system: the request copy
    (``request.yaml``) a root daemon keeps in a run folder it handed to the run's user
    is one, their own request's text. So root's requests are taken only from a queue no
    one else may write (group and other write bits, which show an ACL's grants too),
    unless ``root_requests`` says otherwise."""
    me = os.geteuid() if daemon_uid is None else daemon_uid
    if uid != 0 or me != 0 or site.config.root_requests:
        return None
    try:
        mode = os.stat(site.layout.queue).st_mode
    except OSError:
        return None  # no queue to take it from: nothing to refuse
    if not mode & 0o022:
        return None
    return (
        f"a request owned by root in a queue other users may write too (mode "
        f"{stat.S_IMODE(mode):04o}) is refused: a user could move a file of root's there "
        "and have it run as root"
    )


def may_use_group(site: Site, uid: int, group: str) -> bool:
    """Whether the user ``uid`` may post runs under ``group`` (see ``group_policy``): a
    leaderboard group, and its fair-share cap, are not anyone's to borrow."""
    config = site.config
    name = user_name(uid)
    if config.group_policy == "open" or uid == 0 or group == name:
        return True
    if name in config.teams.get(group, []):
        return True
    return in_group(uid, group)


#: a folder opened to be walked by descriptors (the queue's bundles, a half-made run folder)
_TAKE_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
