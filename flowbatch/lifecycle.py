"""What happens to a run after intake: launch, watch, cancel, finalize.

The :class:`Runner` keeps no fate in memory that the tree does not also hold: the handle
is in ``run.json`` as soon as the launch returns, the script's markers say how each step
ended, and after a restart :meth:`Runner.recover` rebuilds everything from those.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import re
import signal
import stat
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import fairshare, faults
from .errors import ExecutorUnavailable, FlowbatchError
from .executors.base import Executor, Launch, LaunchDeferred, LaunchesMany, Liveness, Probe
from .logs import Repeated
from .queue import boot_id
from .render.script import (
    CLOSED_MARK,
    LOGS_DIR,
    SCRIPT_NAME,
    STATUS_DIR,
    Markers,
    read_markers,
    step_log_paths,
)
from .results import read_results
from .runs import (  # epoch: lifecycle.epoch for its callers
    ACTIVE,
    QUEUED,
    REQUEUES,
    SUPERSEDED,
    RunRecord,
    State,
    epoch,
    superseded,
)
from .safeio import LINK_ERRORS, read_tail
from .site import Site
from .spec.model import Template
from .spec.resources import run_resources
from .store.layout import REQUEST_COPY
from .takeback import TakenBack, take_back
from .text import is_text, shown

log = logging.getLogger("flowbatch.runner")

#: the message of a run ended at its time limit
TIME_LIMIT = "time limit exceeded"

_DIR_NOFOLLOW = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: a new file, never through a link, never waiting (a FIFO put there)
_NEW_MARK = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: a root daemon hands each run's folder to its user, and takes it back at the end
_ROOT = os.geteuid() == 0

TAIL_LINES = 20
TAIL_BYTES = 4096

#: how far past the daemon's clock a marker's time may lie and still be taken (seconds):
#: the script may run on another machine (an SSH host, a Slurm node) whose clock is a
#: little ahead of the daemon's
MARKER_CLOCK_SLACK = 2.0


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return _stamp(epoch)


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")


def tail(folder: Path, rel: str | Path, lines: int = TAIL_LINES) -> str:
    """The last lines of a log in a run folder, read without following symlinks (the run's
    user owns the folder; the daemon reading it may be root)."""
    return tail_text(read_tail(folder, rel, TAIL_BYTES), lines)


def tail_text(data: bytes, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a log's tail as read (:data:`TAIL_BYTES` of it)."""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def describe_code(code: int) -> str:
    """``exit code 143: killed by SIGTERM`` (it read "failed with killed by signal")."""
    if code > 128:
        try:
            return f"exit code {code}: killed by {signal.Signals(code - 128).name}"
        except ValueError:
            pass
    if code in _SHELL_CODES:
        return f"exit code {code}: {_SHELL_CODES[code]}"
    return f"exit code {code}"


#: bash's own exit codes for a command it could not start (found by review: a run of
#: another user, whose ${python} sat under /root, ended "exit code 126" and no more)
_SHELL_CODES = {
    126: "a command could not be executed (no permission to run it, or to enter its folder)",
    127: "a command was not found",
}


#: exit codes of a script the daemon's kill ended (SIGTERM, then SIGKILL after a grace)
_KILLED = {128 + signal.SIGTERM, 128 + signal.SIGKILL}


def _age(run: RunRecord) -> tuple[str, str]:
    return (run.created_at, run.id)


class ActiveRuns(MutableMapping[str, RunRecord]):
    """The daemon's active runs by id, with the ones waiting for a launch (PENDING) and
    the launched ones (RUNNING, or PENDING in a scheduler's queue: ``RunRecord.launched``)
    also kept apart, so that a tick finds them without a pass over every active run (500
    runs dropped at once were 500 passes over 500 runs, and a sort of them in each).

    A run is filed by its state when it is added; after a state change of a run held
    here, :meth:`refile` moves it (:class:`Runner` does so for every change it makes).
    The PENDING ones are kept oldest first, the order dispatch takes them in: they are
    sorted again only when a run older than the newest one comes in (a retry)."""

    def __init__(self) -> None:
        self._runs: dict[str, RunRecord] = {}
        self._pending: dict[str, RunRecord] = {}
        self._waiting: Counter[str] = Counter()  # executor -> PENDING runs filed for it
        self._launched: dict[str, RunRecord] = {}
        self._newest: tuple[str, str] | None = None  # the age of the last PENDING filed
        self._in_order = True

    def __getitem__(self, run_id: str) -> RunRecord:
        return self._runs[run_id]

    def __setitem__(self, run_id: str, run: RunRecord) -> None:
        self._runs[run_id] = run
        self.refile(run)

    def __delitem__(self, run_id: str) -> None:
        del self._runs[run_id]
        self._unfile(run_id)
        self._launched.pop(run_id, None)

    def _unfile(self, run_id: str) -> None:
        run = self._pending.pop(run_id, None)
        if run is not None:
            self._waiting[run.executor] -= 1

    def __iter__(self) -> Iterator[str]:
        return iter(self._runs)

    def __len__(self) -> int:
        return len(self._runs)

    def __repr__(self) -> str:
        return f"ActiveRuns({list(self._runs)})"

    def refile(self, run: RunRecord) -> None:
        """File ``run`` again by its state (after a change of it)."""
        self._unfile(run.id)
        self._launched.pop(run.id, None)
        if self._runs.get(run.id) is not run:
            return
        if run.launched:
            self._launched[run.id] = run
        elif run.state == State.PENDING:
            age = _age(run)
            if self._newest is not None and age < self._newest:
                self._in_order = False
            else:
                self._newest = age
            self._pending[run.id] = run
            self._waiting[run.executor] += 1

    def pending(self) -> list[RunRecord]:
        """The PENDING runs waiting for a launch, oldest first."""
        if not self._in_order:
            self._pending = dict(sorted(self._pending.items(), key=lambda item: _age(item[1])))
            self._in_order = True
        return list(self._pending.values())

    def launched(self) -> list[RunRecord]:
        """The runs their executors have: RUNNING, or queued in a scheduler."""
        return list(self._launched.values())

    def set_aside(self, run_id: str) -> None:
        """No longer count ``run_id`` as launched (its script ended; its end is recorded
        next): its slot is free. :meth:`refile` files it again by its state."""
        self._launched.pop(run_id, None)

    def waiting(self) -> Counter[str]:
        """How many PENDING runs wait for each executor (a copy)."""
        return +self._waiting  # the executors with none left out


class Runner:
    def __init__(self, site: Site, executors: dict[str, Executor]) -> None:
        self.site = site
        self.store = site.store
        #: the executors by name, as the site config has them now (dispatch uses these)
        self.executors = executors
        #: runs still served by an executor object that a config reload replaced or
        #: removed (:meth:`reconfigure`): run id -> that object, until the run ends (its
        #: retries too: the job or processes of a lost attempt are ended by that object)
        self.pinned: dict[str, Executor] = {}
        self.clock = RunClock()  # time limits, step-free
        #: runs being ended (:meth:`_kill`): sent SIGTERM, SIGKILLed at the deadline,
        #: recorded once gone; only where a caller polls again (the serving daemon)
        self.ending: dict[str, Ending] = {}
        self.defer_kills = False
        self._poll_failing: dict[str, Repeated] = {}  # by executor name
        #: executor objects a reload replaced or removed that still serve runs (or have
        #: processes or jobs of lost runs to end: ``tend``)
        self.retired: list[Executor] = []
        #: every state change of a run held here goes through this class (``_transition``),
        #: which keeps the runs filed by state
        self.active = ActiveRuns()
        self.changed_workflows: set[str] = set()
        #: called with a run's workflow before the run reaches a terminal state (the
        #: daemon keeps a durable note that this workflow's reports are owed)
        self.before_report_change: Callable[[str], None] = lambda workflow: None
        #: slots of an executor taken by processes that are not runs (the daemon counts
        #: its post-processing on ``local``): executor name -> how many
        self.reserved: Callable[[str], int] = lambda name: 0
        #: asked before each launch: False when this daemon no longer serves the site
        #: (another took its lock), so that it launches nothing another one holds too
        self.may_launch: Callable[[], bool] = lambda: True
        #: waiting runs taken from the tree, whose run.json dispatch reads once more
        self._from_tree: set[str] = set()
        #: runs whose folder was taken back before their results were read (finalize),
        #: with what the take-back said, for their terminal state change
        self._taken: dict[str, TakenBack] = {}

    # -- bookkeeping --------------------------------------------------------------------------
    def add(self, run: RunRecord) -> None:
        self.active[run.id] = run

    def _transition(self, run: RunRecord, target: State, **kw: Any) -> None:
        if target not in ACTIVE and run.state != target:  # a same-state no-op changes nothing
            self.before_report_change(run.workflow)
            if run.owner_uid and _ROOT:  # the folder a root daemon handed to the run's user
                taken = self._taken.pop(run.id, None) or self._take_back(run)
                if taken.notes:  # outputs it had to leave out (their copies over budget)
                    kw["messages"] = [*(kw.get("messages") or []), *taken.notes]
                if taken.removed and kw.get("files"):
                    kw["files"] = [f for f in kw["files"] if f.get("source") not in taken.removed]
            elif _ROOT and self.site.layout.owner is not None:
                # root's own run on a service user's site: its folders become the site
                # owner's, who may then remove the run (flowbatch.store.owner)
                self._take_back(run)
            if run.handle and getattr(self.executor_of(run), "reruns_scripts", False):
                self._close(run)
        if not self.store.transition(run, target, **kw):
            return
        if target in ACTIVE:
            self.active.refile(run)
        else:
            self._ended(run)

    def _take_back(self, run: RunRecord) -> TakenBack:
        """Take back the folder a root daemon handed to the run's user (:func:`take_back`),
        the files read after the run's end given a copy of their own."""
        return take_back(self.store.run_dir(run), run.owner_uid, self._read_later(run))

    def _read_later(self, run: RunRecord) -> list[str]:
        """The files of a run the daemon or its post-processing reads after the run's end:
        its result file and the post-processing's inputs (see :func:`take_back`)."""
        try:
            template, _ = self.site.templates.load(run.workflow, run.version)
        except FlowbatchError:
            return []
        files = [template.results.file] if template.results else []
        if template.postproc is not None:
            files += template.postproc.input_files
        return files

    def _close(self, run: RunRecord) -> None:
        """Mark the ended run's folder closed (``status/closed``): its script, run again
        by a scheduler, exits at once. Made beneath the run folder through no link (a
        folder a root daemon took back is its own by now; otherwise it is the run
        user's, the daemon's own user then)."""
        try:
            fd = os.open(self.store.run_dir(run) / STATUS_DIR, _DIR_NOFOLLOW)
        except OSError as exc:
            log.warning("run %s: cannot mark it closed: %s", run.id, exc)
            return
        try:
            try:
                os.close(os.open(CLOSED_MARK, _NEW_MARK, 0o644, dir_fd=fd))
            except FileExistsError:
                # whatever the run left at that name: a FIFO opened for writing waits for
                # a reader for ever, the daemon's whole tick with it (found by review); a
                # dangling link is no mark to run.sh's `[ -e ]`
                st = os.stat(CLOSED_MARK, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    os.unlink(CLOSED_MARK, dir_fd=fd)
                    os.close(os.open(CLOSED_MARK, _NEW_MARK, 0o644, dir_fd=fd))
        except OSError as exc:
            log.warning("run %s: cannot mark it closed: %s", run.id, exc)
        finally:
            os.close(fd)

    def _ended(self, run: RunRecord) -> None:
        """A run reached a terminal state: no longer held as active, its executor (one a
        reload replaced) let go, its workflow's reports due."""
        self.active.pop(run.id, None)
        self.clock.forget(run.id)
        self.ending.pop(run.id, None)
        if self.pinned.pop(run.id, None) is not None:
            self._prune_retired()
        self.changed_workflows.add(run.workflow)

    def pending(self) -> list[RunRecord]:
        """The PENDING runs waiting for a launch, oldest first."""
        return self.active.pending()

    def launched(self, executor: str | None = None) -> list[RunRecord]:
        """The runs their executors have (RUNNING, or queued in a scheduler), of
        ``executor`` or of all."""
        runs = self.active.launched()
        return runs if executor is None else [r for r in runs if r.executor == executor]

    # -- executors ----------------------------------------------------------------------------
    def executor_of(self, run: RunRecord) -> Executor | None:
        """The executor object that serves ``run``: the one it was launched with when a
        config reload has replaced it since, else the current one of its name."""
        pinned = self.pinned.get(run.id)
        return pinned if pinned is not None else self.executors.get(run.executor)

    def reconfigure(self, executors: dict[str, Executor]) -> list[str]:
        """A config reload: ``executors`` (objects kept where their settings did not
        change) become the current ones. A replaced or removed object keeps serving
        the runs it has launched, or whose submission it may have begun (a recorded
        handle), until they end (their retries too); new runs go to the new object.
        Returns the names of the replaced or removed executors that keep serving runs."""
        old = dict(self.executors)
        kept_busy: list[str] = []
        for name, executor in old.items():
            if executors.get(name) is executor:
                continue
            mine = [
                run
                for run in self.active.values()
                if run.executor == name
                and run.id not in self.pinned
                # launched, its submission perhaps begun (a handle), or a retry (its lost
                # attempt's processes or job are ended by this object first)
                and (run.state == State.RUNNING or run.handle or run.attempt > 1)
            ]
            for run in mine:
                self.pinned[run.id] = executor
            if mine:
                kept_busy.append(name)
            if mine or hasattr(executor, "tend"):
                self.retired.append(executor)
            else:
                _let_go(executor)
        self.executors.clear()  # the same dict: the daemon holds it too
        self.executors.update(executors)
        self._prune_retired()
        return kept_busy

    def _prune_retired(self) -> None:
        """Close and forget the retired executors that serve no run and have nothing
        left to end (``has_abandoned()``: processes or jobs of lost runs)."""
        serving = {id(executor) for executor in self.pinned.values()}

        def has_abandoned(executor: Any) -> bool:
            method = getattr(executor, "has_abandoned", None)
            return bool(method()) if callable(method) else False

        kept: list[Executor] = []
        done: list[Executor] = []
        for executor in self.retired:
            (kept if id(executor) in serving or has_abandoned(executor) else done).append(executor)
        self.retired = kept
        for executor in done:  # its connections (an old ssh host's) end with it
            _let_go(executor)

    # -- recovery -----------------------------------------------------------------------------
    def recover(self) -> list[RunRecord]:
        """After a start: take over every active run the tree knows; again when the tree
        is read again (another daemon served the site for a moment). A run held here is
        left as it is (its record in memory is newer), unless it waits here and the tree
        says another daemon launched it. Returns the runs taken over."""
        # a shared site: only this host's runs (the others are another daemon's); a site
        # of one host takes every active run, even if the machine's name has changed
        return self._take(self.store.sync_active(self.site.host if self.site.shared else None))

    def _take(self, runs: Iterable[RunRecord]) -> list[RunRecord]:
        """Take over ``runs`` as the tree has them (:meth:`recover`); returns those taken."""
        unmarked: list[RunRecord] = []
        taken: list[RunRecord] = []
        for run in runs:
            held = self.active.get(run.id)
            if held is not None:
                if held.state != State.PENDING or held.handle or not (run.launched or run.handle):
                    continue
                # held here as waiting, launched since by the daemon that had the lock
                # (found by review: it was launched here again, and ran twice)
                del self.active[run.id]
            taken.append(run)
            self.active[run.id] = run
            if run.state == State.PENDING:
                self._from_tree.add(run.id)  # dispatch looks at its run.json once more
            run_dir = self.store.run_dir(run)
            executor = self.executor_of(run)
            if run.state == State.PENDING and run.executor == "local":
                markers = read_markers(run_dir)
                if markers.started is None:
                    unmarked.append(run)  # never launched (dispatch will), or just now
                    continue
                # launched, but the daemon died before recording it: adopt from the marker
                uid = run.owner_uid if os.geteuid() == 0 else os.geteuid()
                run.handle = handle_from_marker(markers.started, run_dir / SCRIPT_NAME, uid)
                # it started when its marker says (if plausible), not now; the history
                # keeps the moment this daemon saw it
                started = marker_times(run, markers, ended=False)
                self._transition(run, State.RUNNING, handle=run.handle, **started)
            if executor is None:
                self._transition(
                    run, State.ERROR, messages=[f"executor {run.executor!r} is not configured"]
                )
                continue
            if run.handle and executor.adopt(run.handle):
                log.info("run %s adopted (pid %s)", run.id, run.handle.get("pid"))
            # else: the next poll finds it finished and the markers decide
        self._adopt_unmarked(unmarked)
        self._adopt_submitted({run.id for run in taken})
        return taken

    def _adopt_submitted(self, ids: set[str]) -> None:
        """PENDING runs whose submission may have gone out just before the daemon died
        (a scheduler's intent recorded, no job id): the jobs the scheduler lists under
        their intents' names are theirs, launched (``find_submitted``, one lookup per
        executor). Left to dispatch, the executor's limit or a fair-share cap could hold
        such a run back while its job runs unseen and uncounted, and its launch, once it
        had room, would submit it again after the job left the queue."""
        by_executor: dict[int, tuple[Executor, list[RunRecord]]] = {}
        for run in self.pending():
            executor = self.executor_of(run)
            if run.id not in ids:
                continue
            if run.handle and run.handle.get("submitting") and executor is not None:
                by_executor.setdefault(id(executor), (executor, []))[1].append(run)
        for executor, runs in by_executor.values():
            find = getattr(executor, "find_submitted", None)
            if find is None:
                continue
            try:
                found = find([(run.id, run.handle or {}) for run in runs])
            except Exception:  # never the end of a start: their launches look again
                log.exception("looking for the jobs of interrupted submissions failed")
                continue
            for run in runs:
                handle = found.get(run.id)
                if handle is not None:
                    self._launched(run, executor, handle)

    def _adopt_unmarked(self, runs: list[RunRecord]) -> None:
        """PENDING local runs without a ``started`` marker whose script runs all the same:
        the daemon was killed in the moment between a launch and the script's first
        marker (longer where the run folder sits on a slow file system). Launched again
        they would run twice in one folder: their processes are adopted instead."""
        executor = self.executors.get("local")
        find = getattr(executor, "find_started", None)
        if not runs or executor is None or find is None:
            return
        uid = os.geteuid()
        by_script = {str(self.store.run_dir(run) / SCRIPT_NAME): run for run in runs}
        found = find(
            {script: (run.owner_uid if uid == 0 else uid) for script, run in by_script.items()}
        )
        for script, handle in found.items():
            run = by_script[script]
            log.warning(
                "run %s was started just before the daemon stopped (pid %s, no marker yet): "
                "adopted, not started again",
                run.id,
                handle["pid"],
            )
            # it started when its process did (this host's clock; where plausible, as a
            # marker), not when it was adopted
            begun = Markers(started=(handle["pid"], float(handle.get("start") or 0), ""))
            started = marker_times(run, begun, ended=False)
            self._transition(run, State.RUNNING, handle=handle, **started)
            executor.adopt(handle)

    # -- dispatch -----------------------------------------------------------------------------
    def dispatch(self) -> int:
        """Launch PENDING runs, oldest first, within each executor's concurrency, while
        the results tree has room: a run launched on a full disk fails at once, its
        script unable to write a marker (found by review: runs waiting for a slot that
        a run freed on a full disk were launched there, and ended ERROR for good)."""
        if not self.store.has_room():
            return 0
        launched = 0
        holding = self.launched()  # one pass over the active runs for both lists
        busy = {name: self.reserved(name) for name in self.executors}
        for run in holding:
            busy[run.executor] = busy.get(run.executor, 0) + 1
        shares = fairshare.Shares(self.site.config.limits, holding)
        pending = self.pending()
        # executors some pending run still waits for: once each of them is full, the rest
        # wait for the next tick (scanning every pending run at every tick was O(N^2))
        waiting = self.active.waiting()
        for run in pending:
            if (
                all(
                    busy.get(name, 0) >= ex.limit
                    for name, ex in self.executors.items()
                    if waiting[name] > 0
                )
                and run.executor in self.executors
            ):
                break
            waiting[run.executor] -= 1
            if run.state != State.PENDING or run.queued:
                continue  # launched (or failed) with the other runs of its sweep
            executor = self.executor_of(run)
            if executor is None:
                self._transition(
                    run, State.ERROR, messages=[f"executor {run.executor!r} is not configured"]
                )
                continue
            if busy.setdefault(run.executor, 0) >= executor.limit:
                continue  # another executor may still have room
            if fairshare.hold(self.store, run, shares):
                continue  # over its user's or group's cap; others' runs may start
            if not self.may_launch():
                break  # another daemon serves the site now
            if run.id in self._from_tree:
                self._from_tree.discard(run.id)
                if self._launched_elsewhere(run):
                    continue
            if run.sweep and isinstance(executor, LaunchesMany):
                launched += self._launch_sweep(run, executor, busy, shares)
                continue
            job = self._launch_of(run)
            faults.point("launch")
            try:
                self._check_folder(run)
                self._record_intent(run, executor, job)
                handle = executor.launch(job)
            except ExecutorUnavailable as exc:
                # the host or scheduler is away for now: the run waits, with the reason
                self._wait(run, f"waiting for {run.executor}: {exc.summary()}")
                if not isinstance(exc, LaunchDeferred):  # only this run has to wait
                    busy[run.executor] = executor.limit  # no more tries there this tick
                continue
            except FlowbatchError as exc:
                self._transition(run, State.ERROR, messages=[exc.summary()])
                continue
            except Exception as exc:  # e.g. the run folder is not what it should be
                log.exception("launching run %s failed", run.id)
                self._transition(run, State.ERROR, messages=[f"cannot launch: {exc}"])
                continue
            faults.point("launched")
            self._launched(run, executor, handle)
            busy[run.executor] += 1
            shares.add(run)
            launched += 1
        return launched

    def _launched_elsewhere(self, run: RunRecord) -> bool:
        """A waiting run this daemon took from the tree (at its start, or when it read the
        tree again) that another daemon launched since, in the moment two daemons served
        the site (a lock file removed: found by review, it ran twice): its record, or its
        ``started`` marker, says so. Taken over as it is, not launched here."""
        run_dir = self.store.run_dir(run)
        try:
            found = self.store.load_dir(run_dir, acts=True)
        except (OSError, FlowbatchError):
            return False
        started = found.executor == "local" and read_markers(run_dir).started is not None
        # a handle of its own (a scheduler's intent this daemon read with it) is no other
        # daemon's launch: its launch looks for the job by name (found by CI: a refused
        # submission's run was taken over at each dispatch, and never launched)
        if not (found.launched or started or (found.handle and found.handle != run.handle)):
            return False
        log.warning("run %s was launched by another daemon: taken over, not launched", run.id)
        del self.active[run.id]
        self._take([found])
        return True

    def _launch_of(self, run: RunRecord) -> Launch:
        return Launch(
            run.id,
            self.store.run_dir(run),
            SCRIPT_NAME,
            run.workflow,
            run.time_limit,
            uid=run.owner_uid,
            attempt=run.attempt,
        )

    def _launch_sweep(
        self, first: RunRecord, executor: Any, busy: dict[str, int], shares: Any
    ) -> int:
        """``first`` with the other PENDING runs of its sweep on the same executor (within
        its room and the fair shares) in ONE ``launch_many`` call (Slurm: job arrays),
        every run's intent recorded before it. Returns how many started."""
        sweep_id = (first.sweep or {}).get("id")
        batch = [first]
        shares.add(first)
        for run in self.pending():
            if len(batch) >= executor.limit - busy[first.executor]:
                break
            if run is first or run.executor != first.executor:
                continue
            if self.executor_of(run) is not executor:
                continue  # its launch was begun by an executor a reload has replaced since
            if (run.sweep or {}).get("id") != sweep_id or fairshare.hold(self.store, run, shares):
                continue
            batch.append(run)
            shares.add(run)
        jobs = [self._launch_of(run) for run in batch]
        faults.point("launch")
        results: list[Any]
        try:
            for run, job in zip(batch, jobs, strict=True):
                self._check_folder(run)
                self._prepare_launch(run, job)
            for run, intent in zip(batch, executor.intents(jobs), strict=True):
                if intent != run.handle:  # on disk already when unchanged (a retry)
                    self._write_handle(run, intent)
            results = executor.launch_many(jobs)
        except FlowbatchError as exc:
            results = [exc] * len(batch)
        faults.point("launched")
        started = 0
        for run, result in zip(batch, results, strict=True):
            if isinstance(result, ExecutorUnavailable):
                self._wait(run, f"waiting for {run.executor}: {result.summary()}")
                if not isinstance(result, LaunchDeferred):  # only this run has to wait
                    busy[run.executor] = executor.limit  # no more tries there this tick
            elif isinstance(result, FlowbatchError):
                self._transition(run, State.ERROR, messages=[result.summary()])
            else:
                self._launched(run, executor, result)
                busy[run.executor] += 1
                started += 1
        return started

    def _launched(self, run: RunRecord, executor: Executor, handle: dict[str, Any]) -> None:
        """Record a launch: RUNNING, or, for a scheduler's job that waits in its queue
        (``queues_jobs``), PENDING with the handle marked :data:`QUEUED` until a poll
        finds the job started (:meth:`_note_status`)."""
        if not queues_jobs(executor):
            clock = launch_clock()
            if clock is not None:  # else measured as a run this daemon did not launch
                handle = {**handle, LAUNCH_CLOCK: clock}
            self._transition(run, State.RUNNING, handle=handle, waiting=None)
            return
        run.handle = {**handle, QUEUED: True}
        run.waiting = None
        # filed as launched before the write: should it fail, the run is polled all the
        # same, never submitted again by this daemon (a next one finds its job by the
        # intent's name, which is on disk)
        self.active.refile(run)
        # on disk (synced) as the intent before it: the index row still says PENDING, and
        # after a power loss a run PENDING with no record left would be made again (and
        # its job submitted twice) were its claim not settled yet (queue.redo_unstarted)
        self.store.write(run, index=False, durable=True)
        log.info("run %s submitted (%s), waiting in its queue", run.id, _job_of(run.handle))

    def _wait(self, run: RunRecord, reason: str) -> None:
        """Note why a PENDING run waits (written only when the reason changes)."""
        if run.waiting != reason:
            run.waiting = reason
            self.store.write(run, index=False)
            log.warning("run %s: %s", run.id, reason)

    # -- polling ------------------------------------------------------------------------------
    def poll(self, only: Collection[str] | None = None) -> int:
        """One batched look per executor (those named in ``only``, or all) at its running
        runs; finalize those that ended."""
        finished = 0
        ended: list[tuple[RunRecord, Probe]] = []
        by_executor: dict[int, list[RunRecord]] = {}  # id of the executor object -> runs
        for run in self.launched():
            executor = self.executor_of(run)
            if executor is not None:
                by_executor.setdefault(id(executor), []).append(run)
        serving = [*self.executors.items(), *((ex.name, ex) for ex in self.retired)]
        for name, executor in serving:
            runs = by_executor.get(id(executor))
            if only is not None and name not in only:
                continue
            failing = self._poll_failing.setdefault(name, Repeated(log))
            try:
                # SSH, Slurm: end the processes or jobs of runs given up on, if they answer
                tend = getattr(executor, "tend", None)
                if tend is not None:
                    tend()
                probes = executor.poll([(r.id, r.handle or {}) for r in runs]) if runs else {}
            except Exception:
                # a bug met by one executor's look (found by review: a remote file name
                # that was not UTF-8) must not stop the other executors' runs from ending,
                # nor the rest of the tick: its runs are looked at again at the next tick
                failing.failed(
                    "looking at the runs of executor %s failed; its %d run(s) are looked at "
                    "again at the next tick",
                    name,
                    len(runs or ()),
                    exc_info=True,
                )
                # their time limits still hold (found by review: never enforced while the
                # look kept failing), and runs being ended are ended (their processes
                # looked at directly)
                for run in runs or ():
                    try:
                        ending = self.ending.get(run.id)
                        if ending is not None:
                            finished += self._tend_ending(run, executor, ending, False)
                        elif self._over_time(run) and not enforces_time_limit(executor):
                            finished += self._kill(run, executor, State.ERROR, TIME_LIMIT)
                    except Exception:
                        log.exception("ending run %s failed", run.id)
                continue
            failing.ok("the runs of executor %s are looked at again", name)
            if not runs:
                continue
            for run in runs:
                probe = probes.get(run.id)
                alive = _alive(probe)
                ending = self.ending.get(run.id)
                if ending is not None:  # being ended: recorded as such once it is gone
                    finished += self._tend_ending(run, executor, ending, alive)
                    continue
                if probe is None or alive:
                    if probe is not None:
                        self._note_status(run, probe)
                    if self._over_time(run) and not enforces_time_limit(executor):
                        finished += self._kill(run, executor, State.ERROR, TIME_LIMIT)
                    continue
                ended.append((run, probe))
        if ended:
            # the slots first, then the books: runs waiting for the slots the ended runs
            # held start now, and the ended runs' markers, results, records and pages are
            # written while they run (a slot stood empty for all of that)
            for run, _probe in ended:
                self.active.set_aside(run.id)
            try:
                if self.active.waiting():
                    try:
                        self.dispatch()
                    except Exception:  # the ended runs are recorded all the same
                        log.exception("starting runs in freed slots failed")
                for run, probe in ended:
                    self._finalize_safely(run, probe)
                    finished += 1
            finally:
                for run, _probe in ended:  # an end not recorded: polled again
                    if run.launched and self.active.get(run.id) is run:
                        self.active.refile(run)
        if self.retired:  # one whose tend() ended its last abandoned job or process goes
            self._prune_retired()
        return finished

    def _finalize_safely(self, run: RunRecord, probe: Probe) -> None:
        """Finalize; a failure of flowbatch's own makes the run ERROR with the reason
        instead of leaving it RUNNING (and the daemon stopping on it) forever."""
        try:
            self.finalize(run, probe)
        except Exception as exc:
            log.exception("finalizing run %s failed", run.id)
            if run.state in ACTIVE:
                self._transition(run, State.ERROR, messages=[f"internal error: {exc}"])
            elif self.active.get(run.id) is run:
                # the change was made, what came after failed (the index, a listener):
                # held as active, it kept its executor slot and the daemon never idle
                self._ended(run)

    def _check_folder(self, run: RunRecord) -> None:
        """Raise when the folder a root daemon is about to launch ``run`` in, on a site
        another user owns, is not the run's: not a folder of the run's user (root's for
        a run of root's). ``runs/`` is the site owner's, who could rename a waiting
        run's folder and put one of theirs, with a ``run.sh`` of theirs, in its place:
        the daemon launched that script as the run's user, root for a request of root's
        (found by review). Intake makes the folder the run's user's (``hand_over``)
        before it is in ``runs/``; a run of the owner's own needs no look. One
        ``lstat`` a launch, only on such a site; the moment between it and the start
        of the script is not covered (see docs/admins.md)."""
        owner = self.site.layout.owner
        if not _ROOT or owner is None or run.owner_uid == owner.uid:
            return
        run_dir = self.store.run_dir(run)
        try:
            st = os.lstat(run_dir)
        except OSError as exc:
            raise FlowbatchError(f"cannot look at the run's folder {run_dir}: {exc.strerror}")
        if stat.S_ISDIR(st.st_mode) and st.st_uid == run.owner_uid:
            return
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a folder"
        raise FlowbatchError(
            f"the run's folder {run_dir} is {what} of uid {st.st_uid}, not of the run's user "
            f"(uid {run.owner_uid}): it was replaced while the run waited (the owner of "
            "results/ can rename it) and is not launched",
            hint="look at the folder and at who replaced it; submit the request again",
        )

    def _record_intent(self, run: RunRecord, executor: Executor, job: Launch) -> None:
        """Scheduler executors (Slurm): record the intent (job name) in run.json BEFORE
        submitting, so that a crash between submission and record finds the job by name
        instead of submitting it twice; and hand them the run's resources."""
        intent = getattr(executor, "intent", None)
        if intent is None:
            return
        self._prepare_launch(run, job)
        handle = intent(job)
        if handle != run.handle:  # a run waiting for its partition is not rewritten each try
            self._write_handle(run, handle)

    def _write_handle(self, run: RunRecord, handle: dict[str, Any]) -> None:
        """Record the intent ``handle`` in ``run.json``, on disk (synced) before its
        submission: a power loss must not lose it while the job lives on in the
        scheduler, or the run would be submitted again. Kept in memory only once written
        (a failed write must not look, at the next try, like an intent already on disk)."""
        previous, run.handle = run.handle, handle
        try:
            self.store.write(run, durable=True)
        except BaseException:
            run.handle = previous
            raise

    def _prepare_launch(self, run: RunRecord, job: Launch) -> None:
        """A scheduler's launch gets the run's resources and its earlier handle."""
        template, _ = self.site.templates.load(run.workflow, run.version)
        job.resources = run_resources(
            template.resources, self.store.run_dir(run) / REQUEST_COPY, owner=os.geteuid()
        )
        job.handle = run.handle

    def _note_status(self, run: RunRecord, probe: Probe) -> None:
        """Keep the backend's word on a live run (Slurm: PENDING (Priority)) in its handle,
        for `runs show`; written only when it changes. A scheduler's run is PENDING while
        its job waits in the queue (:data:`QUEUED`) and becomes RUNNING when a probe says
        the job started (``started``: Slurm's StartTime, seconds since the epoch, or None
        when the scheduler does not say); its ``started_at`` is then when the job started
        where that is plausible, else when this poll saw it (its markers still correct it
        at its end)."""
        changed = False
        status = probe.detail.get("status")
        if status and run.handle is not None and run.handle.get("status") != status:
            run.handle = {**run.handle, "status": status}
            changed = True
        # what else the executor keeps in the handle (SSH: when the run's group was last
        # found the run's, for a cancel by another process), written when it changes
        keep = {k: v for k, v in (probe.detail.get("keep") or {}).items() if v is not None}
        if keep and run.handle is not None and any(run.handle.get(k) != v for k, v in keep.items()):
            run.handle = {**run.handle, **keep}
            changed = True
        requeued = probe.detail.get("requeued")
        if requeued and run.state == State.RUNNING:
            self._requeued(run, str(requeued))
            return
        began = "started" in probe.detail
        started = probe.detail.get("started")
        queued = attempt_queued_at(run)  # not before this attempt (Slurm: whole seconds)
        at = (
            _stamp(started)
            if isinstance(started, int | float)
            and not isinstance(started, bool)
            and math.isfinite(started)
            and (queued or 0) - 1 <= started <= time.time() + MARKER_CLOCK_SLACK
            and started > 0
            else None
        )
        if began and run.queued:
            handle = {k: v for k, v in (run.handle or {}).items() if k != QUEUED}
            times = {"started_at": at} if at else {}
            self._transition(run, State.RUNNING, handle=handle, **times)
            return
        moved = bool(at) and run.started_at != at
        if moved:
            run.started_at = at
        if changed or moved:
            self.store.write(run, index=moved)  # the index has no handle

    def _requeued(self, run: RunRecord, why: str) -> None:
        """A RUNNING run whose job its scheduler put back in its queue (Slurm's requeue):
        PENDING again and queued (:data:`QUEUED`: launched, so polled, holding its slot
        and share, never submitted again), the same job and attempt (a requeue is no
        retry: ``retries`` are not used), with ``why`` in its history and messages. Its
        ``started_at`` goes (its time does not run while it waits; the next start sets
        it). The handle keeps the ``started`` marker of the execution the requeue ended
        (:data:`SUPERSEDED`): its markers (the TERM trap's ``exit 143``) are not the
        run's end while no later execution has started."""
        handle = dict(run.handle or {})
        killed = run_markers(self.store.run_dir(run), run).started  # not one ended before
        if killed is not None:
            handle[SUPERSEDED] = [killed[0], killed[1]]
        handle[REQUEUES] = _count(handle.get(REQUEUES)) + 1
        handle[QUEUED] = True
        self._transition(
            run, State.PENDING, reason=why, messages=[why], handle=handle, started_at=None
        )

    def _over_time(self, run: RunRecord) -> bool:
        return self.clock.over(run.id, run.started_at, run.time_limit, run.handle)

    def _kill(self, run: RunRecord, executor: Executor, state: State, reason: str) -> bool:
        """End the run's processes or job, then record it ``state`` with ``reason``; True
        when recorded now. With :attr:`defer_kills` and an executor that can
        (``terminate``/``kill``: the local and SSH ones), a RUNNING run is sent SIGTERM and
        recorded once it is gone, SIGKILLed at the end of the grace by a later poll: a
        program that ignores SIGTERM held the daemon's whole tick for the grace, run
        after run (found by review: 8 cancels, 24 s without a run started)."""
        terminate = getattr(executor, "terminate", None) if self.defer_kills else None
        if terminate is not None and run.handle and run.state == State.RUNNING:
            if run.id not in self.ending:
                token = terminate(run.handle)
                if token is not None:
                    grace = float(getattr(executor, "cancel_grace", 3.0))
                    due = time.monotonic() + grace
                    self.ending[run.id] = Ending(state, reason, due, due + grace, token)
            if run.id in self.ending:
                return False
        elif run.handle:
            executor.cancel(run.handle, reason)
        self._record_kill(run, executor, state, reason)
        return True

    def _tend_ending(self, run: RunRecord, executor: Executor, ending: Ending, alive: bool) -> int:
        """A run being ended: SIGKILL what is left of it at its deadline, record it once
        neither its script (``alive``: the executor's word) nor anything SIGTERM was sent
        to still runs. 1 when recorded. One whose SIGKILL the executor could not send
        and gave over to what it ends once it can (an SSH host away: its abandoned
        groups, kept on disk) is recorded at once: nothing here can end it sooner (found
        by review: a stop then left the run RUNNING for the next daemon)."""
        left = getattr(executor, "left", None)
        handed = bool(getattr(ending.token, "away", False))
        gone = handed or (not alive and not (left is not None and left(ending.token)))
        if gone or time.monotonic() >= ending.give_up:
            if not gone:  # never active for ever: a process SIGKILL cannot end (D state)
                log.warning(
                    "run %s: a process of it outlived its SIGKILL, or its host could not be "
                    "asked; it is recorded %s all the same",
                    run.id,
                    ending.state.value,
                )
            self._record_kill(run, executor, ending.state, ending.reason)
            return 1
        if not ending.killed and time.monotonic() >= ending.deadline:
            ending.killed = True
            executor.kill(run.handle or {}, ending.token)  # type: ignore[attr-defined]
        return 0

    def next_kill(self) -> float | None:
        """When the next run being ended is due its SIGKILL (monotonic), if any."""
        due = [e.deadline for e in self.ending.values() if not e.killed]
        return min(due) if due else None

    def end_ending(self, patience: float = 2.0) -> None:
        """At a stop: SIGKILL what is left of the runs being ended and record them, rather
        than leave them to a next daemon, which would take a cancelled run's SIGKILL for
        its own end."""
        if not self.ending:
            return
        doomed: list[tuple[RunRecord, Executor, Ending]] = []
        for run_id, ending in list(self.ending.items()):
            run = self.active.get(run_id)
            executor = self.executor_of(run) if run is not None else None
            if run is None or executor is None:
                self.ending.pop(run_id, None)
                continue
            executor.kill(run.handle or {}, ending.token)  # type: ignore[attr-defined]
            doomed.append((run, executor, ending))
        # only these runs are looked at: a whole poll would start waiting runs in the
        # slots of others that ended meanwhile (found by review: a stop launched runs)
        deadline = time.monotonic() + patience
        while doomed and time.monotonic() < deadline:
            for item in list(doomed):
                run, executor, ending = item
                probe = executor.poll([(run.id, run.handle or {})]).get(run.id)
                if self._tend_ending(run, executor, ending, _alive(probe)):
                    doomed.remove(item)
            if doomed:
                time.sleep(0.02)

    def _record_kill(self, run: RunRecord, executor: Executor, state: State, reason: str) -> None:
        """Record the run ended by :meth:`_kill`: its markers (an exit the TERM trap wrote:
        its time), ``state`` and ``reason``."""
        self.ending.pop(run.id, None)
        if run.handle:
            executor.collect(run.id, run.handle, self.store.run_dir(run))
        markers = run_markers(self.store.run_dir(run), run)
        steps = self._steps(run, markers)
        times = marker_times(run, markers)  # an exit marker the TERM trap wrote: its time
        messages = [reason, *_executor_notes(executor, run)]
        self._transition(run, state, messages=messages, reason=reason, steps=steps, **times)

    # -- cancel -------------------------------------------------------------------------------
    def cancel(self, run: RunRecord, reason: str) -> None:
        """End the run: CANCELED with ``reason``. A RUNNING run's processes or job are
        ended through its executor, and so is a PENDING run's that has a handle: a job
        waiting in a scheduler's queue, or a scheduler's intent, recorded before a
        submission whose answer never came (the job may exist, and is cancelled by
        name)."""
        executor = self.executor_of(run)
        if run.id in self.ending:  # being ended already (SIGTERM sent): recorded once gone
            return
        if executor is not None and run.state == State.RUNNING and run.handle:
            # a script that ended before the cancel came (no poll saw it yet, or no
            # daemon ran): its end stands (found by review: a SUCCESS and its results
            # were recorded as CANCELED)
            try:
                probe = executor.poll([(run.id, run.handle)]).get(run.id)
            except Exception:  # no answer: the cancel goes on as it would have
                log.exception("looking at run %s before its cancel failed", run.id)
                probe = None
            if probe is not None and probe.liveness == Liveness.FINISHED:
                log.info("run %s had ended before its cancel: its end is recorded", run.id)
                self._finalize_safely(run, probe)
                return
        if executor is not None and (run.state == State.RUNNING or run.handle):
            self._kill(run, executor, State.CANCELED, reason)
        else:
            self._transition(run, State.CANCELED, messages=[reason], reason=reason)

    # -- finalize -----------------------------------------------------------------------------
    def finalize(self, run: RunRecord, probe: Probe) -> None:
        """The script ended: its markers, then the results, decide the final state."""
        faults.point("finalize")
        run_dir = self.store.run_dir(run)
        executor = self.executor_of(run)
        if executor is None:
            raise FlowbatchError(f"executor {run.executor!r} is not configured")
        if run.handle:
            executor.collect(run.id, run.handle, run_dir)
        # the executor's notes on the run's files (SSH: files its fetch left out, a remote
        # folder kept), all taken now (none left over for a retry); those the probe's own
        # text already gives (a lost run's reason, a failed run's scheduler message) are
        # not said twice
        fetched = _executor_notes(executor, run)
        markers = run_markers(run_dir, run)
        steps = self._steps(run, markers)
        # when the run started and ended, by its script's clock where plausible (the
        # daemon may notice the end a whole slow tick later)
        times = marker_times(run, markers)
        canceled = probe.detail.get("canceled")  # e.g. scancel outside flowbatch
        if canceled:
            messages = [canceled, *fetched]
            self._transition(
                run, State.CANCELED, steps=steps, messages=messages, reason=canceled, **times
            )
            return
        refused = probe.detail.get("refused")  # the backend will never run it: no retry
        if refused and markers.exit is None:
            self._transition(run, State.ERROR, steps=steps, messages=[refused, *fetched], **times)
            return
        limit = probe.detail.get("limit")  # the scheduler ended it at the run's own limit
        if limit and markers.exit is None:
            # killed before its script could write its end (it outlived SIGTERM): the
            # run's own ERROR, not a lost run to retry (see slurm_states.LIMIT_STATES)
            messages = [
                f"{limit}: {probe.raw}; the run's process was killed before it could write "
                "its exit marker (it did not end within the scheduler's grace after SIGTERM)",
                *fetched,
            ]
            self._transition(
                run, State.ERROR, steps=steps, messages=messages, reason=limit, **times
            )
            return
        # a scheduler that did not answer tells nothing of a run whose exit marker is
        # there: it ended, as its markers say (only a failure the backend reported, a
        # node failure or a preemption, makes an ended run lost)
        ended = markers.exit is not None and probe.detail.get("unanswered")
        if markers.exit is None or (probe.infra_failure and not ended):
            started = markers.started is not None
            unsaid = [note for note in fetched if note not in probe.raw]
            self._lost(run, probe, steps, started=started, times=times, extra=unsaid)
            return
        code, _, failed = markers.exit
        real = probe.exit_code
        if code == 0 and real and getattr(executor, "exit_status_known", False):
            # the markers are the run's to write, the script's own end is not (found by
            # review: a participant's step wrote the exit marker and killed run.sh, the
            # organiser's scoring step never ran, and its own score was ranked)
            reason = (
                f"its script ended with {describe_code(real)}, though its markers say it "
                "ended well: something of the run wrote them (not all of its steps ran)"
            )
            self._transition(
                run, State.ERROR, steps=steps, messages=[reason, *fetched], reason=reason, **times
            )
            return
        if code in _KILLED and self._over_time(run) and not enforces_time_limit(executor):
            # killed past its time limit: this daemon's kill, whose end the daemon killed
            # meanwhile never recorded (found by review: it read as a plain SIGTERM)
            reason = TIME_LIMIT
            self._transition(
                run, State.ERROR, steps=steps, messages=[reason, *fetched], reason=reason, **times
            )
            return
        ended_by_restart = getattr(executor, "ended_by_restart", None)
        if code in _KILLED and ended_by_restart is not None and ended_by_restart(run.handle):
            # the host's shutdown ended it (its TERM trap wrote the exit marker): no fault
            # of the run's, retried as a lost run is (found by review: an ERROR of the
            # user's own, "killed by SIGTERM", and `retries` not used)
            restart = Probe(
                Liveness.FINISHED,
                exit_code=code,
                infra_failure=f"the host restarted while the run ran ({describe_code(code)})",
            )
            self._lost(run, restart, steps, started=True, times=times, extra=fetched)
            return
        if code == 0 and (overran := _overran(run, times, executor)):
            self._transition(
                run, State.ERROR, steps=steps, messages=[overran, *fetched], reason=overran, **times
            )
            return
        if code != 0:
            scheduler = [probe.detail["message"]] if probe.detail.get("message") else []
            unsaid = [note for note in fetched if not any(note in said for said in scheduler)]
            self._transition(
                run,
                State.ERROR,
                steps=steps,
                messages=self._failure_messages(run, steps, code, failed) + scheduler + unsaid,
                **times,
            )
            return
        if run.owner_uid and _ROOT and run.id not in self._taken:
            # taken back before its results are read, not after: a process of the run
            # still going (setsid) could change the result file in between, and the
            # post-processing would read, from the take-back's copy, what the leaderboard
            # never checked (found by review)
            self._taken[run.id] = self._take_back(run)
        template, _ = self.site.templates.load(run.workflow, run.version)
        notes: list[str] = []  # what of the run folder was left out of its files, and why
        try:
            results = read_results(run_dir, template.results) if template.results else None
            files = output_files(run_dir, template, notes, run.arguments)
        except FlowbatchError as exc:
            messages = [exc.summary(), *fetched]
            self._transition(run, State.ERROR, steps=steps, messages=messages, **times)
            return
        notes += fetched
        self._transition(
            run,
            State.SUCCESS,
            steps=steps,
            results=results,
            files=files,
            messages=notes or None,
            **times,
        )

    def _lost(
        self,
        run: RunRecord,
        probe: Probe,
        steps: list[dict[str, Any]],
        *,
        started: bool,
        times: dict[str, str] | None = None,
        extra: list[str] | None = None,
    ) -> None:
        """The run vanished (no exit marker) or its infrastructure failed: retry or ERROR.

        A retry is a new attempt of the same run: this attempt's logs and markers move to
        ``attempts/<n>/`` and the run goes back to PENDING. A user's own non-zero exit never
        comes here. ``times``: the attempt's times from its markers (:func:`marker_times`),
        for the ERROR; without an exit marker the finish is the daemon's own time.
        ``extra``: more to say in its messages (the executor's notes on its files).
        """
        if probe.infra_failure:
            why = probe.infra_failure
            # its processes or job may still be going: ended once they can be (SSH: the
            # host answers; Slurm: scancel, before the run is submitted again)
            abandon = getattr(self.executor_of(run), "abandon", None)
            if abandon is not None and run.handle:
                abandon(run.handle, f"run {run.id} lost: {why}")  # it may still be going
        else:
            code = f" ({describe_code(probe.exit_code)})" if probe.exit_code is not None else ""
            if started:
                why = f"the run's process ended without writing its exit marker{code}"
            elif superseded(run.handle) is not None:
                # its script ran, and a requeue ended it; the job ended before it ran again
                why = f"its job ended after a requeue, before its script ran again{code}"
            else:  # not even its first marker: the script itself never ran
                why = f"the run's script never started (it wrote no marker){code}"
                found = self._why_not_started(run)
                if found:
                    why += f"; {found}"
            if probe.raw:
                why += f"; {probe.raw}"
            script_log = tail(self.store.run_dir(run), f"{LOGS_DIR}/script.log", 5)
            if script_log:
                why += f"; the script said: {script_log}"
        if run.attempt <= run.retries:
            archive_attempt(self.store.run_dir(run), run.attempt)
            reason = f"retry {run.attempt} of {run.retries} after: {why}"
            self._transition(
                run,
                State.PENDING,
                again=True,  # a job lost while it was queued: the run was PENDING already
                reason=reason,
                # this attempt's times go with it (attempts/<n>/ keeps its markers): the
                # next one's start is unknown while it waits (in Slurm's queue: minutes)
                started_at=None,
                finished_at=None,
                messages=[reason, *(extra or [])],
                handle=None,
                steps=[],
                attempt=run.attempt + 1,
            )
            return
        messages = [f"lost: {why}", *(extra or [])]
        self._transition(run, State.ERROR, steps=steps, messages=messages, **(times or {}))

    def _why_not_started(self, run: RunRecord) -> str | None:
        """The executor's own account of a start that failed, where it can give one (an
        optional executor method: the local executor's, for runs of other users)."""
        explain = getattr(self.executor_of(run), "why_not_started", None)
        if explain is None:
            return None
        try:
            said = explain(run.handle or {})
        except Exception:  # a diagnosis must never keep the run from its end state
            log.exception("could not find why run %s did not start", run.id)
            return None
        return str(said) if said else None

    def _failure_messages(
        self, run: RunRecord, steps: list[dict[str, Any]], code: int, failed: int
    ) -> list[str]:
        step = next((s for s in steps if s["index"] == failed), None)
        if step is None:
            return [f"the run script ended with {describe_code(code)}"]
        messages = [f"step {failed} ({step['name']}) failed with {describe_code(code)}"]
        err = tail(self.store.run_dir(run), step["stderr"])
        if err:
            messages.append(f"stderr of step {failed} (last lines):\n{err}")
        return messages

    def _steps(self, run: RunRecord, markers: Any = None) -> list[dict[str, Any]]:
        """Per-step record for run.json: exit code, times, log files."""
        run_dir = self.store.run_dir(run)
        markers = markers or run_markers(run_dir, run)
        try:
            template, _ = self.site.templates.load(run.workflow, run.version)
        except FlowbatchError:
            return []
        return step_records([s.name for s in template.workflow.steps], markers)


def _let_go(executor: Executor) -> None:
    """Close an executor object a config reload has left behind (its SSH connection)."""
    try:
        executor.close()
    except Exception as exc:  # a connection that fails to close is gone all the same
        log.warning("closing the replaced executor %s: %s", executor.name, exc)


def _executor_notes(executor: Executor, run: RunRecord) -> list[str]:
    """What the executor noted about the run's files (an optional executor method: the
    SSH executor's, for remote files its fetch left out or a remote folder it kept)."""
    take = getattr(executor, "take_messages", None)
    return list(take(run.id)) if take is not None else []


def handle_from_marker(
    started: tuple[int, float, str], script: Path, uid: int | None
) -> dict[str, Any]:
    """The local handle of a process known only by its script's ``started`` marker (a
    daemon killed between the launch and its record). The marker's time stands in for
    the process's start time: a PID reused since has a later one and is not adopted."""
    pid, at, host = started
    return {
        "pid": pid,
        "pgid": pid,
        "start": at,
        "host": host or None,
        "from_marker": True,
        "uid": uid,
        "script": str(script),
    }


def run_markers(run_dir: Path, run: RunRecord) -> Markers:
    """The markers of ``run``'s current execution: none of one a requeue of its job
    ended (:func:`flowbatch.runs.superseded`) while no later one has started."""
    return read_markers(run_dir, superseded=superseded(run.handle))


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def attempt_queued_at(run: RunRecord) -> float | None:
    """When the daemon queued the run's current attempt: its last PENDING state change
    (the creation, or the retry that made this attempt), else ``created_at``."""
    for change in reversed(run.history):
        if change.get("state") == State.PENDING.value:
            return epoch(change.get("at"))
    return epoch(run.created_at)


def marker_times(
    run: RunRecord, markers: Markers, *, ended: bool = True, now: float | None = None
) -> dict[str, str]:
    """``started_at`` and ``finished_at`` of ``run`` as its script's markers give them
    (the ``started`` and ``exit`` lines), for the state change that ends the run (or, with
    ``ended=False``, ``started_at`` alone, for one that makes it RUNNING); ``{}`` where the
    daemon's own times stay.

    The daemon notices an end at its next look, which a slow tick (a scheduler command, a
    host that is slow to answer) can put seconds after it: the run's own marks say when it
    ran. They are taken when plausible, as the clock of one host: the start no earlier
    than the daemon queued this attempt (:func:`attempt_queued_at`, by the daemon's clock),
    the end no earlier than the start, and neither later than now (the daemon's clock) by
    more than :data:`MARKER_CLOCK_SLACK`. Else neither is taken: the markers come from a
    clock that is off (another host's: an SSH host, a Slurm node) or were not written by
    the script. Without an exit marker (a lost run, a cancel before the script's trap
    wrote one) the finish is the daemon's time and only a start not past now is taken.
    Both from one clock, the run time (finish - start) is right whatever that clock's
    offset; the run's history keeps the daemon's own moments."""
    return times_marked(markers, attempt_queued_at(run), ended=ended, now=now)


def times_marked(
    markers: Markers, floor: float | None, *, ended: bool = True, now: float | None = None
) -> dict[str, str]:
    """:func:`marker_times` for a job queued at ``floor`` (seconds since the epoch): a
    run's attempt, a post-processing job."""
    started = markers.started
    if started is None or floor is None:
        return {}
    now = time.time() if now is None else now
    latest = now + MARKER_CLOCK_SLACK
    start = started[1]
    if not (math.isfinite(start) and floor <= start <= latest):
        return {}
    if not ended or markers.exit is None:
        # no end to take: the finish (if any) is the daemon's time, now or later, and a
        # start past it is not taken
        return {"started_at": _stamp(start)} if start <= now else {}
    end = markers.exit[1]
    if not (math.isfinite(end) and start <= end <= latest):
        return {}
    return {"started_at": _stamp(start), "finished_at": _stamp(end)}


def queues_jobs(executor: Executor) -> bool:
    """A scheduler whose jobs wait in a queue of its own (Slurm): its runs are PENDING
    until their jobs start."""
    return bool(getattr(executor, "queues_jobs", False))


def _job_of(handle: dict[str, Any] | None) -> str:
    """How a log line names a run's job: its scheduler's id."""
    job = (handle or {}).get("job_id")
    return f"job {job}" if job else "no job id"


#: seconds a run's own marks may show it past its time limit before it counts as over
#: (the marks' and the limit's rounding)
OVERRUN_SLACK = 1.0


def _overran(run: RunRecord, times: dict[str, str], executor: Executor) -> str | None:
    """:func:`overran` for a run; a scheduler that enforces the limit itself (Slurm) is
    left to."""
    return None if enforces_time_limit(executor) else overran(run.time_limit, times)


def _alive(probe: Probe | None) -> bool:
    """Whether a probe leaves the run running (no word counts as running)."""
    return probe is None or probe.liveness in (Liveness.ALIVE, Liveness.UNKNOWN)


@dataclass
class Ending:
    """A run :meth:`Runner._kill` (or a post-processing run the daemon) is ending: what
    it is to be recorded as, and when what is left of it is SIGKILLed (monotonic)."""

    state: State
    reason: str
    deadline: float
    give_up: float  # recorded then even if something of it still runs (after SIGKILL)
    token: Any = None  # what the executor's terminate() returned: its kill() and left()
    killed: bool = False


#: the key of a run's handle that holds this host's boot id and boot clock at its launch
LAUNCH_CLOCK = "launch_clock"


def launch_clock() -> list[Any] | None:
    """This host's boot id and its boot clock now (CLOCK_BOOTTIME: steady, suspend
    included), for :data:`LAUNCH_CLOCK`; None when the boot id is not known (the clocks
    of two boots would be compared: found by the re-review)."""
    this_boot = _this_boot()
    if this_boot is None:
        return None
    return [this_boot, round(time.clock_gettime(time.CLOCK_BOOTTIME), 3)]


#: this host's boot id, read once (it changes only with a reboot)
_this_boot = functools.cache(boot_id)


class RunClock:
    """Seconds each run has run, for its time limit, by a steady clock: a step of the
    wall clock (NTP, an admin's `date`) neither leaves a run unlimited (a step back) nor
    kills a young one (a step forward; found by review). A run launched on this host
    since its boot is measured by the boot clock from its launch (:data:`LAUNCH_CLOCK`
    in its handle), in any process: a cron tick's, a restarted daemon's (found by
    review: each ``--once`` tick measured it from its ``started_at`` by the wall
    clock). Any other, by the monotonic clock from the moment this process first looks
    at it, what it had run before that taken from its ``started_at`` by the wall clock."""

    def __init__(self) -> None:
        self._origins: dict[str, tuple[str, float]] = {}  # key -> (started_at, origin)

    def ran(self, key: str, started_at: str, handle: dict[str, Any] | None = None) -> float:
        launched = (handle or {}).get(LAUNCH_CLOCK)
        this_boot = _this_boot()
        if (
            isinstance(launched, list)
            and len(launched) == 2
            and this_boot
            and launched[0] == this_boot
        ):
            try:
                return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - float(launched[1]))
            except (TypeError, ValueError):
                pass
        mono = time.monotonic()
        known = self._origins.get(key)
        if known is None or known[0] != started_at:  # a retry starts again
            before = (datetime.now(UTC) - datetime.fromisoformat(started_at)).total_seconds()
            known = self._origins[key] = (started_at, mono - max(0.0, before))
        return mono - known[1]

    def over(
        self,
        key: str,
        started_at: str | None,
        limit: float | None,
        handle: dict[str, Any] | None = None,
    ) -> bool:
        return bool(limit and started_at) and self.ran(key, started_at or "", handle) > (limit or 0)

    def forget(self, key: str) -> None:
        self._origins.pop(key, None)


def overran(limit: float | None, times: dict[str, str]) -> str | None:
    """Why a run (or post-processing run) that ended well is over its time ``limit`` by
    its own marks (``times``: :func:`marker_times`), or None: a daemon watching it ends
    it at the limit, so this one ended while none did (stopped, or between two cron
    ticks). It counts as over all the same, as the README says (found by review:
    recorded SUCCESS, and ranked)."""
    start, end = times.get("started_at"), times.get("finished_at")
    if not limit or not start or not end:
        return None
    took = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    if took <= limit + OVERRUN_SLACK:
        return None
    return (
        f"time limit exceeded: it ran {took:.0f} s, past its limit of {limit:g} s, "
        "while no daemon watched it"
    )


def enforces_time_limit(executor: Executor) -> bool:
    """A scheduler that kills over-time jobs itself (Slurm's --time): the Runner must not
    count time spent waiting in its queue."""
    return bool(getattr(executor, "enforces_time_limit", False))


def step_records(names: list[str], markers: Markers) -> list[dict[str, Any]]:
    """Per-step record for run.json from the script's markers: exit code, times, logs."""
    out = []
    for i, name in enumerate(names, start=1):
        mark = markers.steps.get(i)
        stdout, stderr = step_log_paths(i, name)
        start, end = (mark.start, mark.end) if mark else (None, None)
        out.append(
            {
                "index": i,
                "name": name,
                "exit_code": mark.exit_code if mark else None,
                "started_at": iso(start),
                "finished_at": iso(end),
                "duration": round(end - start, 6)
                if start is not None and end is not None
                else None,
                "stdout": stdout,
                "stderr": stderr,
            }
        )
    return out


def archive_attempt(run_dir: Path, attempt: int) -> Path:
    """Move one attempt's ``logs/`` and ``status/`` to ``attempts/<attempt>/``.

    Done relative to directory descriptors, never following a symlink: the run's user
    owns the folder and could have put an ``attempts`` link there pointing elsewhere."""
    dest = run_dir / "attempts" / str(attempt)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    run_fd = os.open(run_dir, flags)
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir("attempts", 0o755, dir_fd=run_fd)
        attempts_fd = os.open("attempts", flags, dir_fd=run_fd)
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(str(attempt), 0o755, dir_fd=attempts_fd)
            dest_fd = os.open(str(attempt), flags, dir_fd=attempts_fd)
            try:
                for name in (LOGS_DIR, STATUS_DIR):
                    with contextlib.suppress(FileNotFoundError):
                        os.rename(name, name, src_dir_fd=run_fd, dst_dir_fd=dest_fd)
            finally:
                os.close(dest_fd)
        finally:
            os.close(attempts_fd)
    finally:
        os.close(run_fd)
    return dest


def output_files(
    run_dir: Path,
    template: Template,
    notes: list[str] | None = None,
    arguments: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The run's output files: the template's ``outputs`` (each must exist), else the
    workflow's ``files.outputs``, else every file the run folder holds but flowbatch's own.

    Only regular files of the run folder count, reached without following a symlink (the
    run's user owns the folder: a root daemon must neither list nor size what their link
    points at, ``/etc/shadow``), and only names that are valid UTF-8 (the index, run.json,
    the pages and their links hold text, and an escaped name would link to no file).
    Anything else is left out; ``notes`` (when given) gets a line saying what and why.
    An entry of ``files.outputs`` that is a parameter reference (``$[[name]]``, which
    flowServ allows there) names the file the run's ``arguments`` give (a file
    parameter's target)."""
    from .store.templates import RESERVED

    if template.outputs is not None:
        out = []
        missing = []
        for spec in template.outputs:
            size, why = _output_size(run_dir, spec.source)
            if size is None:
                missing.append(shown(spec.source) + (f" ({why})" if why else ""))
                continue
            out.append(
                {
                    "key": spec.key,
                    "source": spec.source,
                    "size": size,
                    "title": spec.title,
                    "caption": spec.caption,
                }
            )
        if missing:
            raise FlowbatchError(
                "declared output files are missing: " + ", ".join(missing),
                field="outputs",
                hint="the workflow must write them, as files of the run folder (a symbolic "
                "link is not one)",
            )
        return out
    if template.workflow.output_files:
        out = []
        for entry in template.workflow.output_files:
            source = _output_name(entry, arguments or {})
            if source is None:
                if notes is not None:
                    notes.append(f"output file {entry} left out: its parameter has no value")
                continue
            size, why = _output_size(run_dir, source)
            if size is not None:
                out.append({"key": source, "source": source, "size": size})
            elif why and notes is not None:  # one simply not written is left out silently
                notes.append(f"output file {shown(source)} left out: {why}")
        return out
    found = _some_files(run_dir, RESERVED, notes)
    return [{"key": source, "source": source, "size": size} for source, size in found]


_REFERENCE = re.compile(r"\$\[\[\s*(\w+)\s*\]\]")


def _output_name(entry: str, arguments: dict[str, Any]) -> str | None:
    """``entry`` of ``files.outputs``, its reference (the whole entry) filled in from the
    run's arguments; None when the parameter has no value."""
    match = _REFERENCE.fullmatch(entry)
    if match is None:
        return entry
    value = arguments.get(match.group(1))
    if isinstance(value, dict):  # a file parameter, as run.json keeps it
        value = value.get("target")
    if value is None or isinstance(value, bool | dict | list):
        return None
    return str(value)


#: the most files of a run recorded when the template names none (its run.json, run page
#: and leaderboard rows list them; a run that leaves 100,000 files made each of them
#: megabytes and its end a 5 s stall of the daemon)
MAX_RUN_FILES = 1000
#: how deep the walk of a run folder goes (each folder on the way is held open)
MAX_RUN_DEPTH = 64

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _output_size(run_dir: Path, rel: str) -> tuple[int | None, str | None]:
    """``(size, None)`` for a regular file ``run_dir/rel`` reached without following a
    symlink; else ``(None, why)``, ``why`` None when there is simply nothing there."""
    if not is_text(rel):
        return None, "its name is not valid UTF-8"
    parts = [part for part in rel.split("/") if part and part != "."]
    if not parts or ".." in parts or rel.startswith("/"):
        return None, None  # the template's paths are checked to stay inside at install
    try:
        fd = os.open(run_dir, _DIR_FLAGS)
    except OSError:
        return None, None
    try:
        for i, part in enumerate(parts[:-1]):
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in LINK_ERRORS and _is_link(fd, part):
                    where = "/".join(parts[: i + 1])
                    return None, f"{where} is a symbolic link (a file of the run folder counts)"
                return None, None
            os.close(fd)
            fd = nxt
        st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
    except OSError:
        return None, None
    finally:
        os.close(fd)
    if stat.S_ISLNK(st.st_mode):
        return None, "it is a symbolic link (a file of the run folder counts)"
    if not stat.S_ISREG(st.st_mode):
        return None, "not a regular file"
    return st.st_size, None


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _some_files(
    run_dir: Path, reserved: frozenset[str] | set[str], notes: list[str] | None = None
) -> list[tuple[str, int]]:
    """The regular files of ``run_dir`` with their sizes, as sorted paths relative to it
    (flowbatch's own top-level names left out), at most :data:`MAX_RUN_FILES`: the walk
    (a folder's files first, then its folders in name order) stops there, whatever the
    folder holds.

    The walk goes through descriptors of the folders, never through a symlink (one swapped
    in for a folder during the walk is refused by ``O_NOFOLLOW``), and looks at each file
    with ``lstat``: a link to a file is no file of the run's. A name that is not valid
    UTF-8 is left out (with the folder under it), and ``notes`` gets a line about them."""
    out: list[tuple[str, int]] = []
    odd: list[str] = []  # names left out for not being UTF-8
    try:
        top = os.open(run_dir, _DIR_FLAGS)
    except OSError:
        return []
    try:
        _walk(top, "", reserved, out, odd, 0)
    finally:
        os.close(top)
    if odd and notes is not None:
        some = ", ".join(shown(name) for name in odd[:3])
        more = f" and {len(odd) - 3} more" if len(odd) > 3 else ""
        notes.append(
            f"{len(odd)} file name(s) of the run folder left out of its files, not being "
            f"valid UTF-8: {some}{more}"
        )
    return sorted(out)


def _walk(
    fd: int,
    prefix: str,
    reserved: frozenset[str] | set[str],
    out: list[tuple[str, int]],
    odd: list[str],
    depth: int,
) -> bool:
    """One folder of :func:`_some_files` (open as ``fd``); True once the walk is full."""
    try:
        with os.scandir(fd) as listing:
            # the kinds from the listing (d_type) without following links; looked at
            # while the listing's own descriptor is open
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in listing]
    except OSError:
        return False
    entries.sort()
    folders = []
    for name, is_dir in entries:
        if not prefix and name in reserved:
            continue
        if not is_text(name):
            odd.append(prefix + name)
            continue
        if is_dir:
            folders.append(name)
            continue
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):  # a symlink, a FIFO, a socket
            continue
        out.append((prefix + name, st.st_size))
        if len(out) >= MAX_RUN_FILES:
            return True
    if depth + 1 >= MAX_RUN_DEPTH:
        return False
    for name in folders:
        try:
            sub = os.open(name, _DIR_FLAGS, dir_fd=fd)  # a link swapped in since: refused
        except OSError:
            continue
        try:
            if _walk(sub, f"{prefix}{name}/", reserved, out, odd, depth + 1):
                return True
        finally:
            os.close(sub)
    return False
