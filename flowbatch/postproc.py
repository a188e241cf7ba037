"""Post-processing workflows (seed-inventory §4): a template's ``postproc`` block runs when
the set of top-per-group runs of its workflow has changed.

Trigger (flowServ's rule, §4.2): after a workflow's runs changed, its ranking (best run per
group, default order) is computed; the *sorted* run ids are compared with those that fed
the previous post-processing run, kept in ``results/<wf>/postproc/state.json``. A change
of the set starts a new run; a change of order alone does not. The ids are recorded when
a run starts, so a failing post-processing run is not retried until the set changes again.

Each run lives in ``results/<wf>/postproc/<id>/``, apart from the workflow's runs (it is no
run of the ranking and never enters the index): the template's files, then the staged
inputs (§4.3) at ``<runs>/runs.json`` (rank order: ``[{"id", "name", "files"}]``, as flowServ
writes it) and ``<runs>/<run_id>/<file>`` for each of ``postproc.inputs.files``, where
``<runs>`` is ``postproc.inputs.runs`` (default ``runs``) and ``$[[runs]]`` expands to it
(flowServ always staged at ``runs`` whatever ``inputs.runs`` said: a GAP, fixed). The
rendered ``run.sh`` runs with the local executor; its markers decide how it ended, like a
run's. ``postproc.json`` in the folder is its record. A staging or rendering problem makes
the record ERROR at once, with the reason; a failure never touches the ranking.

A daemon may be killed anywhere in a start; the order of the writes is what lets the next
one finish the job. The folder (with its RUNNING record) is complete before ``state.json``
names it (``ranking``, ``latest``), and ``state.json`` names it before the script is
launched (as the runner records a Slurm job's intent before submitting it): a run started
is always found by the next daemon, which never starts a second copy of it elsewhere (a
folder left before state.json named it was never launched, and its set of best runs is
not recorded: the next daemon starts a new run for it, the folder stays unused). The
record's handle is written after the launch; a RUNNING record without one is what a kill in
between leaves, and :meth:`PostProcManager._recover` takes it over from the script's
``started`` marker (the process is adopted by PID and start time, as the runner adopts a
local run) or, with no marker (it was never launched), launches it again in its folder once
a local slot is free. A SUCCESS record is written before ``state.json``'s ``last_success``:
the view takes the latest run as the one shown when it succeeded, and ``_recover`` repairs
``state.json``. A latest run whose record is not the daemon's (its user's, put there
while the folder was theirs, or none) is moved aside and run again
(:meth:`PostProcManager._set_aside`).

:class:`PostProcManager` is what the daemon calls once per tick; :func:`leaderboard_view`
is what the leaderboard page shows.
"""

from __future__ import annotations

import base64
import csv
import errno
import io
import json
import logging
import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import faults
from .accounts import user_name
from .errors import ConfigError, FlowbatchError
from .executors.base import Launch, Liveness
from .executors.local import LocalExecutor
from .lifecycle import (
    LAUNCH_CLOCK,
    TIME_LIMIT,
    Ending,
    RunClock,
    describe_code,
    epoch,
    handle_from_marker,
    iso,
    launch_clock,
    overran,
    step_records,
    tail,
    times_marked,
)
from .postproc_user import FALLBACK, postproc_user, refuse_writable
from .ranking import RankEntry
from .ranking_sql import leaderboard_views
from .render import SCRIPT_NAME, build_script, read_markers, render_workflow
from .report import PostProcOutput, PostProcRunView, PostProcView, href_in
from .runs import State, now_iso
from .safeio import copy_beneath, open_beneath, read_up_to
from .site import Site
from .spec.model import Template
from .store import atomic
from .store.owner import make_dirs
from .store.store import lock_holder_at
from .takeback import hand_over, take_back

log = logging.getLogger("flowbatch.postproc")

POSTPROC_DIR = "postproc"
STATE_FILE = "state.json"
RECORD = "postproc.json"
RUNS_FILE = "runs.json"

#: largest image shown inline (as a data: URI); bigger ones are a link
MAX_INLINE_IMAGE = 2 * 1024 * 1024
#: largest table or text shown inline
MAX_INLINE_TEXT = 64 * 1024
MAX_TABLE_ROWS = 200
_IMAGES = {".svg": "image/svg+xml", ".png": "image/png", ".jpg": "image/jpeg", ".gif": "image/gif"}
_IMAGES[".jpeg"] = _IMAGES[".jpg"]
_TEXTS = {".txt", ".json", ".md", ".log", ".yaml", ".yml"}


@dataclass
class PostProcRecord:
    """What ``postproc/<id>/postproc.json`` says about one post-processing run."""

    id: str
    workflow: str
    version: str
    state: str  # RUNNING, SUCCESS or ERROR (flowServ's names)
    created_at: str
    ranking: list[str]  # the sorted run ids it was started for (the trigger's key)
    ranked: list[str]  # the same ids in rank order (as staged in runs.json)
    started_at: str | None = None
    finished_at: str | None = None
    handle: dict[str, Any] | None = None
    time_limit: float | None = None
    messages: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    #: the daemon host that started it, on a site several hosts serve (None: one host)
    host: str | None = None
    #: the user its script runs as, a root daemon's choice (flowbatch.postproc_user): its
    #: folder is handed to that user while it runs; None: the daemon's own user
    uid: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PostProcRecord:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def postproc_root(site: Site, workflow: str) -> Path:
    return site.layout.workflow_results(workflow) / POSTPROC_DIR


def read_state(site: Site, workflow: str) -> dict[str, Any]:
    """``state.json``: ``ranking`` (sorted ids of the last run started), ``latest`` and
    ``last_success`` (run ids); empty when post-processing never ran."""
    try:
        data = json.loads((postproc_root(site, workflow) / STATE_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load_record(site: Site, workflow: str, pp_id: str) -> PostProcRecord | None:
    """The record of post-processing run ``pp_id``; None when there is none the daemon
    wrote (see :func:`_read_record`)."""
    return _record_or_why(postproc_root(site, workflow), pp_id)[0]


def _record_or_why(root: Path, pp_id: str) -> tuple[PostProcRecord | None, str | None]:
    """The record of ``<root>/<pp_id>`` and None, or None and why it is not trusted
    (what to say after "its"): none there, not the daemon's, not a record of this run.
    None and None when the folder is not there at all."""
    try:
        data, writer = _read_record(root, pp_id)
        record = PostProcRecord.from_dict(json.loads(data.decode("utf-8")))
    except FileNotFoundError:
        if not os.path.lexists(root / pp_id):
            return None, None
        return None, f"{RECORD} is missing"
    except OSError as exc:
        return None, f"{RECORD} {exc.strerror or exc}"
    except (ValueError, TypeError) as exc:
        return None, f"{RECORD} is not a record ({type(exc).__name__})"
    if record.id != pp_id:
        # a copy of another run's record (a hard link, where the kernel allows one to a
        # file of root's): not this run's outcome
        return None, f"{RECORD} is the record of {record.id!r}"
    borrowed = _borrowed_user(record, writer)
    if borrowed is not None:
        return None, f"{RECORD} {borrowed}"
    return record, None


def _borrowed_user(record: PostProcRecord, writer: int) -> str | None:
    """Why a record that ``writer`` wrote, read by root, is not trusted: it is not
    root's but the owner's of ``postproc/`` (a service user's daemon writes such
    records, as itself), and names another user to run as, or a process it does not
    say is the writer's. The site's owner can write one there: a root daemon adopted
    the process of another user's that its handle named and ended its group at the
    record's time limit (found by review). None when it names the writer alone."""
    if writer == 0 or os.geteuid() != 0:
        return None
    handle = record.handle or {}
    if record.uid not in (None, writer):
        return f"belongs to uid {writer}, not to root, and names uid {record.uid} as its user"
    if "pid" in handle and handle.get("uid") != writer:
        named = handle.get("uid")
        return (
            f"belongs to uid {writer}, not to root, and its handle names a process of "
            f"{'no user' if named is None else f'uid {named}'}"
        )
    return None


#: the largest ``postproc.json`` read (its messages hold a few lines of stderr at most)
MAX_RECORD_BYTES = 16 << 20


def _read_record(root: Path, pp_id: str) -> tuple[bytes, int]:
    """``<root>/<pp_id>/postproc.json``, read without following a link or waiting on a
    FIFO, and only when the daemon wrote it (root's, the daemon's user's, or the owner
    of ``postproc/``'s, with no other name). A root daemon hands the folder to the user
    its script runs as while it runs (:mod:`flowbatch.postproc_user`): a record of
    theirs put in place of the daemon's could give a restarted daemon a handle to adopt,
    time and signal another process by, or a success the run never had.

    Their record stays theirs, and so untrusted, through the take-back: the take-back
    keeps ``postproc.json`` out of what it gives the tree (as a run's ``run.json``), so
    that a daemon killed between the take-back and its final record leaves the next
    one a record it refuses, not one of the tree's owner (found by review: it was taken
    with the rest, and trusted). That rests on ``postproc/`` not being the user's: the
    daemon starts no post-processing as a user who could write it
    (:func:`flowbatch.postproc_user.writable_on_the_way`). The record is checked here,
    by its owner and its names, rather than kept elsewhere: it stays in the folder the
    leaderboard, ``cleanup`` and the site's admin read, and the daemon only ever writes
    it by an atomic rename (one name, its own), which its user cannot make."""
    fd = open_beneath(root, f"{pp_id}/{RECORD}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "is not a regular file", RECORD)
        if st.st_uid not in (0, os.geteuid(), root.stat().st_uid):
            raise OSError(
                errno.EPERM,
                f"belongs to uid {st.st_uid}, not to the daemon: it was put there from "
                "inside the post-processing",
                RECORD,
            )
        if st.st_nlink != 1:
            raise OSError(
                errno.EPERM,
                f"has {st.st_nlink} names (hard links): the daemon writes it under one",
                RECORD,
            )
        return read_up_to(fd, MAX_RECORD_BYTES), st.st_uid
    finally:
        os.close(fd)


class PostProcManager:
    """Starts and watches post-processing runs; the daemon calls :meth:`poll` and
    :meth:`maybe_start` once per tick (at most one run per workflow at a time)."""

    def __init__(
        self,
        site: Site,
        wake: Callable[[], None] | None = None,
        room: Callable[[], bool] | None = None,
    ) -> None:
        self.site = site
        #: this daemon's host on a site several hosts serve: it starts and watches only
        #: the post-processing runs it started (found by review: a second host took a
        #: first host's running one for ended, and started another beside it)
        self.host = site.host if site.shared else None
        self.executor = LocalExecutor(wake, limit=1)
        self.active: dict[str, PostProcRecord] = {}
        #: a serving daemon's: a run over its time limit is sent SIGTERM and concluded
        #: once gone, SIGKILLed from a later poll (as the Runner's runs: a script that
        #: ignores SIGTERM held the daemon's tick for the grace)
        self.defer_kills = False
        #: workflow -> its run being ended
        self.ending: dict[str, Ending] = {}
        self.clock = RunClock()  # time limits, step-free
        #: runs a previous daemon recorded as started but never launched (see _recover):
        #: launched in their folder by maybe_start, when a local slot is free
        self.unlaunched: dict[str, PostProcRecord] = {}
        self._recovered = False
        #: whether a local slot is free (a post-processing run is a process on the same
        #: cores as the local runs); without one, the workflow waits in ``deferred``
        self.room: Callable[[], bool] = room or (lambda: True)
        self.deferred: set[str] = set()
        #: called with a workflow before a post-processing run of it ends (the daemon
        #: keeps a durable note that the workflow's leaderboard is owed its outcome)
        self.before_report_change: Callable[[str], None] = lambda workflow: None
        self._warned_fallback = False
        #: (workflow, why) of the post-processing refused for its user (said once)
        self._refusals: set[tuple[str, str]] = set()

    # -- starting ---------------------------------------------------------------------------
    def maybe_start(self, workflows: Iterable[str]) -> set[str]:
        """Start post-processing for each of ``workflows`` whose set of top-per-group runs
        changed; returns the workflows where a run was started (or failed at staging)."""
        self._recover()
        started = set()
        for workflow in sorted(workflows):
            if workflow in self.active:
                continue  # poll() asks again when the running one has ended
            if not self.room():
                self.deferred.add(workflow)  # poll() asks again once a slot is free
                continue
            try:
                # before anything is made or written in postproc/ (found by review: a
                # user who could write it could swap its folders for links root then
                # writes through)
                self._refuse_writable(workflow, self.unlaunched.get(workflow))
            except ConfigError as exc:
                # asked again at each change of the workflow: said once a daemon
                if (workflow, exc.reason) not in self._refusals:
                    self._refusals.add((workflow, exc.reason))
                    log.error("post-processing of %s not started: %s", workflow, exc)
                continue
            try:
                if self._maybe_start_one(workflow):
                    started.add(workflow)
            except (FlowbatchError, OSError) as exc:
                log.error("post-processing of %s not started: %s", workflow, exc)
        return started

    def _maybe_start_one(self, workflow: str) -> bool:
        record = self.unlaunched.pop(workflow, None)
        if record is not None:  # first the one a stopped daemon recorded but never launched
            self._launch(record)
            return True
        template, version = self.site.templates.load(workflow)
        if template.postproc is None or template.results is None:
            return False
        # hosts sharing the site decide one at a time, each seeing the other's start
        with self.site.store.exclusive(f"postproc:{workflow}"):
            return self._start_new(workflow, template, version)

    def _start_new(self, workflow: str, template: Template, version: str) -> bool:
        assert template.results is not None
        entries = leaderboard_views(workflow, template.results, shown=0).best
        keys = sorted(e.run.run_id for e in entries)
        state = read_state(self.site, workflow)
        elsewhere = self._elsewhere(workflow, state) if self.host is not None else None
        if elsewhere == "running":
            return False  # that host asks again when its run has ended
        if not keys or (state.get("ranking") == keys and elsewhere is None):
            return False
        record = PostProcRecord(
            id=_new_id(),
            workflow=workflow,
            version=version,
            state="RUNNING",
            created_at=now_iso(),
            ranking=keys,
            ranked=[e.run.run_id for e in entries],
            time_limit=template.time_limit or self.site.config.time_limit,
            host=self.host,
        )
        folder = postproc_root(self.site, workflow) / record.id
        try:
            record.uid = self._uid()
            self._prepare(template, record, entries, folder)
        except (FlowbatchError, OSError) as exc:
            # flowServ: a staging failure is a post-processing run that is ERROR at once
            make_dirs(folder, self.site.layout.owner)
            self._finish(record, "ERROR", [f"post-processing not started: {_summary(exc)}"])
            return True
        # named in state.json before the launch: a daemon killed from here on leaves a
        # record the next one finds (the module docstring; _recover)
        self._write_state(record, started=True)
        self._launch(record)
        return True

    def _elsewhere(self, workflow: str, state: dict[str, Any]) -> str | None:
        """The workflow's latest post-processing run, when another host's that is still
        RUNNING: ``"running"`` while that host's daemon serves (one run of a workflow at
        a time, site-wide), ``"orphaned"`` when it does not (a host retired or down: the
        workflow is not left without post-processing until it comes back, found by the
        re-review; the run, if it still goes, is that host's daemon's to end)."""
        latest = state.get("latest")
        record = load_record(self.site, workflow, str(latest)) if latest else None
        if record is None or record.state != "RUNNING" or not _others(record, self.host):
            return None
        assert record.host is not None
        if lock_holder_at(self.site.host_lock_path(record.host)) is not None:
            return "running"
        log.warning(
            "post-processing %s of %s was started on %s, whose daemon is not serving: "
            "starting another here",
            record.id,
            workflow,
            record.host,
        )
        return "orphaned"

    def _refuse_writable(self, workflow: str, record: PostProcRecord | None) -> None:
        """Raise :class:`ConfigError` when a root daemon would run the post-processing
        of ``workflow`` (``record``'s, when one waits for its launch) as a user who can
        write its ``postproc/`` folder or a folder on the way to it
        (:func:`flowbatch.postproc_user.refuse_writable`): nothing is started, nothing
        written there, and the log says which folder and what to do."""
        if os.geteuid() != 0:
            return
        try:
            who = postproc_user(self.site.root, self.site.config)
        except ConfigError:
            return  # said by the start, as its ERROR record
        folder = postproc_root(self.site, workflow)
        refuse_writable(self.site.root, folder, who.uid, who.describe())
        if record is not None and record.uid is not None and record.uid != who.uid:
            said = f"{user_name(record.uid)} (uid {record.uid}, whom it was prepared for)"
            refuse_writable(self.site.root, folder, record.uid, said)

    def _uid(self) -> int | None:
        """The user a new post-processing run runs as: a root daemon's choice (never
        root, :mod:`flowbatch.postproc_user`), None for any other daemon (itself)."""
        if os.geteuid() != 0:
            return None
        who = postproc_user(self.site.root, self.site.config)
        if who.source == FALLBACK and not self._warned_fallback:
            self._warned_fallback = True
            log.warning(
                "post-processing runs as %s: a user other services may share; name one of "
                "its own in flowbatch.yaml (postproc_user: NAME)",
                who.describe(),
            )
        return who.uid

    def _launch(self, record: PostProcRecord) -> None:
        """Start the prepared run's script (as its user) and record its handle."""
        folder = postproc_root(self.site, record.workflow) / record.id
        try:
            record.handle = self.executor.launch(
                Launch(
                    record.id,
                    folder,
                    SCRIPT_NAME,
                    record.workflow,
                    record.time_limit,
                    uid=record.uid,
                )
            )
            clock = launch_clock()
            if clock is not None:
                record.handle[LAUNCH_CLOCK] = clock
        except FlowbatchError as exc:
            self._finish(record, "ERROR", [exc.summary(), *self._take_back(record, None)])
            return
        record.started_at = now_iso()
        self._write_record(record)
        self.active[record.workflow] = record
        log.info(
            "post-processing %s of %s started over %d runs",
            record.id,
            record.workflow,
            len(record.ranking),
        )

    def _prepare(
        self, template: Template, record: PostProcRecord, entries: list[RankEntry], folder: Path
    ) -> None:
        """The run folder: template files, staged inputs, ``run.sh``; built under a dot
        name and renamed, so a half-built folder never looks like a run. A root daemon
        hands it to the run's user (:attr:`PostProcRecord.uid`) before the rename, as
        intake does a run's: the script writes there as that user, and the staged
        inputs are theirs to read; ``run.sh`` and the record stay the daemon's."""
        assert template.postproc is not None
        spec = template.postproc
        rendered = render_workflow(template, spec.workflow, {}, self.site.config.all_variables())
        tmp = folder.with_name(f".{record.id}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        make_dirs(tmp.parent, self.site.layout.owner)  # postproc/: the site owner's
        tmp.mkdir()
        try:
            files_dir = self.site.templates.files_dir(record.workflow, record.version)
            if files_dir.is_dir():
                shutil.copytree(files_dir, tmp, dirs_exist_ok=True, symlinks=True)
            _stage_runs(
                self.site, record.workflow, tmp / spec.runs_target, entries, spec.input_files
            )
            atomic.write_text(
                tmp / SCRIPT_NAME, build_script(rendered, run_id=record.id), mode=0o755, fsync=False
            )
            if record.uid is not None:
                hand_over(tmp, record.uid)
            atomic.write_json(tmp / RECORD, asdict(record), fsync=False)  # the daemon's
            tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    # -- watching ---------------------------------------------------------------------------
    def poll(self) -> set[str]:
        """Look at the running post-processing runs; returns the workflows whose run ended
        (their leaderboard needs rewriting, and their ranking another look)."""
        self._recover()
        ended = set()
        for workflow, record in list(self.active.items()):
            probe = self.executor.poll([(record.id, record.handle or {})])[record.id]
            alive = probe.liveness in (Liveness.ALIVE, Liveness.UNKNOWN)
            if workflow in self.ending:
                if self._tend_ending(record, alive):
                    ended.add(workflow)
                continue
            if alive:
                if self._over_time(record) and self._end_over_time(record):
                    ended.add(workflow)
                continue
            self._conclude(record)
            ended.add(workflow)
        if self.deferred and self.room():
            waiting, self.deferred = self.deferred, set()
            self.maybe_start(waiting - ended)  # the ended ones are asked by the daemon
        return ended

    def _end_over_time(self, record: PostProcRecord) -> bool:
        """End a run over its time limit: at once (cancel: SIGTERM, the grace, SIGKILL),
        or with :attr:`defer_kills` SIGTERM now and the rest from later polls. True when
        concluded now."""
        handle = record.handle or {}
        if self.defer_kills:
            token = self.executor.terminate(handle)
            if token is not None:
                due = time.monotonic() + self.executor.cancel_grace
                grace = self.executor.cancel_grace
                self.ending[record.workflow] = Ending(
                    State.ERROR, TIME_LIMIT, due, due + grace, token
                )
                return False
        else:
            self.executor.cancel(handle, TIME_LIMIT)
        self._conclude(record, reason=TIME_LIMIT)
        return True

    def _tend_ending(self, record: PostProcRecord, alive: bool) -> bool:
        """A run being ended: SIGKILL what is left at its deadline; concluded once nothing
        SIGTERM was sent to runs (or, never for ever, one grace after the SIGKILL)."""
        ending = self.ending[record.workflow]
        now = time.monotonic()
        if (not alive and not self.executor.left(ending.token)) or now >= ending.give_up:
            del self.ending[record.workflow]
            self._conclude(record, reason=ending.reason)
            return True
        if not ending.killed and now >= ending.deadline:
            ending.killed = True
            self.executor.kill(record.handle or {}, ending.token)
        return False

    def next_kill(self) -> float | None:
        """When the next run being ended is due its SIGKILL (monotonic), if any."""
        due = [e.deadline for e in self.ending.values() if not e.killed]
        return min(due) if due else None

    def end_ending(self, patience: float = 2.0) -> set[str]:
        """At a stop: SIGKILL what is left of the runs being ended and conclude them (a
        next daemon would take the SIGKILL for the script's own end); the workflows
        concluded."""
        for workflow, ending in list(self.ending.items()):
            record = self.active.get(workflow)
            if record is None:
                del self.ending[workflow]
                continue
            self.executor.kill(record.handle or {}, ending.token)
            ending.killed = True
            ending.give_up = time.monotonic() + patience
        ended: set[str] = set()
        while self.ending:
            for workflow in list(self.ending):
                record = self.active[workflow]
                probe = self.executor.poll([(record.id, record.handle or {})])[record.id]
                alive = probe.liveness in (Liveness.ALIVE, Liveness.UNKNOWN)
                if self._tend_ending(record, alive):
                    ended.add(workflow)
            if self.ending:
                time.sleep(0.02)
        return ended

    @property
    def busy(self) -> bool:
        """Whether a post-processing run is still running, or waits for a local slot."""
        return bool(self.active or self.deferred)

    def _over_time(self, record: PostProcRecord) -> bool:
        return self.clock.over(record.id, record.started_at, record.time_limit, record.handle)

    def _conclude(self, record: PostProcRecord, reason: str | None = None) -> None:
        """The script ended (or was ended): markers, then the outputs, decide."""
        self.active.pop(record.workflow, None)
        self.clock.forget(record.id)
        self.executor.collect(record.id, record.handle or {}, Path())
        folder = postproc_root(self.site, record.workflow) / record.id
        try:
            template, _ = self.site.templates.load(record.workflow, record.version)
        except FlowbatchError as exc:  # its version is gone: nothing to read outputs by
            self._finish(record, "ERROR", [exc.summary(), *self._take_back(record, None)])
            return
        # taken back before anything in it is read as the outcome (markers, outputs);
        # what the take-back left out is said after the outcome
        notes = self._take_back(record, template)
        faults.point("postproc-taken-back")

        def finish(state: str, messages: list[str]) -> None:
            self._finish(record, state, [*messages, *notes])

        markers = read_markers(folder)
        assert template.postproc is not None
        record.steps = step_records([s.name for s in template.postproc.workflow.steps], markers)
        marked = self._marked_times(record, markers)
        if reason is not None:
            finish("ERROR", [reason])
        elif markers.exit is None:
            why = "the post-processing script ended without its exit marker"
            if markers.started is None:  # it never ran: the start as its user failed?
                found = self._why_not_started(record)
                why = "the post-processing script never started" + (f"; {found}" if found else "")
            finish("ERROR", [why])
        elif markers.exit[0] != 0:
            finish("ERROR", _failure(folder, record.steps, markers.exit))
        elif over := overran(record.time_limit, marked):
            finish("ERROR", [over])
        else:
            try:
                record.files = _outputs(folder, template)
            except FlowbatchError as exc:
                finish("ERROR", [exc.summary()])
                return
            finish("SUCCESS", [])

    def _take_back(self, record: PostProcRecord, template: Template | None) -> list[str]:
        """A root daemon takes the folder it handed to the run's user back (with what the
        script wrote there: :func:`flowbatch.takeback.take_back`, as for a run), giving it to
        the owner of ``postproc/`` without group or other write: the user can no longer
        change the outputs the leaderboard shows. The outputs get copies of their own (a
        process of the script still going could write to one it holds open). Returns
        what it says it had to leave out (for the record's messages)."""
        if record.uid is None:
            return []
        fresh = _output_sources(template) if template is not None else []
        folder = postproc_root(self.site, record.workflow) / record.id
        return take_back(folder, record.uid, fresh, kept=(RECORD,)).notes

    def _why_not_started(self, record: PostProcRecord) -> str | None:
        """The executor's account of a start as another user that failed (a folder on
        the way the user cannot enter, the usual one), None where it has none."""
        try:
            return self.executor.why_not_started(record.handle or {})
        except Exception:  # a diagnosis must never keep the run from its end state
            log.exception("could not find why post-processing %s did not start", record.id)
            return None

    def _marked_times(self, record: PostProcRecord, markers: Any) -> dict[str, str]:
        """The times its script marked, where plausible (a run's rule, the job made at
        its ``created_at``), in place of when the daemon saw them: a slow tick must not
        stretch a post-processing's time. Returns them."""
        marked = times_marked(markers, epoch(record.created_at))
        for key, value in marked.items():
            setattr(record, key, value)
        return marked

    def _finish(self, record: PostProcRecord, state: str, messages: list[str]) -> None:
        self.before_report_change(record.workflow)
        record.state = state
        record.finished_at = record.finished_at or now_iso()
        record.started_at = record.started_at or record.finished_at
        record.messages.extend(messages)
        self._write_record(record)
        self._write_state(record, started=False)
        log.log(
            logging.INFO if state == "SUCCESS" else logging.WARNING,
            "post-processing %s of %s: %s%s",
            record.id,
            record.workflow,
            state,
            f" ({messages[0].splitlines()[0]})" if messages else "",
        )

    def _write_record(self, record: PostProcRecord) -> None:
        folder = postproc_root(self.site, record.workflow) / record.id
        atomic.write_json(folder / RECORD, asdict(record), fsync=False)

    def _write_state(self, record: PostProcRecord, *, started: bool) -> None:
        with self.site.store.exclusive(f"postproc:{record.workflow}"):
            self._write_state_now(record, started=started)

    def _write_state_now(self, record: PostProcRecord, *, started: bool) -> None:
        state = read_state(self.site, record.workflow)
        state["ranking"] = record.ranking
        state["latest"] = record.id
        if not started and record.state == "SUCCESS":
            state["last_success"] = record.id
        state.setdefault("last_success", None)
        root = postproc_root(self.site, record.workflow)
        make_dirs(root, self.site.layout.owner)
        atomic.write_json(root / STATE_FILE, state, fsync=False)

    def recover(self) -> None:
        """At a daemon's start: :meth:`_recover` now, not at the first poll."""
        self._recover()

    def _recover(self) -> None:
        """Once: take over post-processing runs a previous daemon left running (the local
        executor adopts them by PID and start time, or finds them ended), and finish what
        a daemon killed in a start or an end left half-written (the module docstring)."""
        if self._recovered:
            return
        self._recovered = True
        results = self.site.layout.results
        for state_file in sorted(results.glob(f"*/{POSTPROC_DIR}/{STATE_FILE}")):
            workflow = state_file.parent.parent.name
            state = read_state(self.site, workflow)
            latest = state.get("latest")
            if not latest:
                continue
            record, why = _record_or_why(postproc_root(self.site, workflow), str(latest))
            if record is None:
                if why is not None:
                    self._set_aside(workflow, str(latest), why)
                continue
            if record.state == "SUCCESS" and state.get("last_success") != record.id:
                self._write_state(record, started=False)  # killed in _finish, between the two
            if record.state != "RUNNING":
                continue
            if _others(record, self.host):
                continue  # another host's: that host's daemon watches it
            if record.handle is None and not self._adopt_from_marker(record):
                self.unlaunched[workflow] = record  # never launched: maybe_start launches it
                continue
            self.active[workflow] = record
        # a workflow that waited for a slot when the previous daemon stopped would
        # otherwise wait for its next change: ask each again (an unchanged set of best
        # runs starts nothing)
        self.deferred |= set(self.site.templates.list_ids()) - set(self.active)
        self.deferred |= set(self.unlaunched)

    def _set_aside(self, workflow: str, pp_id: str, why: str) -> None:
        """The latest post-processing of ``workflow``, ``pp_id``, has no record the
        daemon wrote (``why``, after "its"): one its user put there while the folder was
        theirs, or none. Nothing it says is taken (its state, its handle, its outputs),
        and it is not left as it was, neither run again nor ever ended (found by review:
        it was only logged, at every read). Its process, if one still runs the script
        as the folder's user (found in the process table: the record's handle is not
        read), is ended; the folder is taken back and moved aside to
        ``postproc/.<id>.refused`` (nothing in it deleted: the admin may want to see
        what was put there; a name with a dot, which cleanup and the leaderboard pass
        over); and ``state.json`` forgets the set of best runs it was started for, so
        that post-processing runs again at once (its outputs are derived from the
        runs' results, which are where they were). Said once, in the log, with the
        folder and why. On a site several hosts serve it is only said: the run may be
        another host's, whose daemon holds its record and writes it at its end."""
        root = postproc_root(self.site, workflow)
        folder = root / pp_id
        if self.host is not None:
            log.error(
                "post-processing %s of %s (%s): its %s: not trusted, and left where it is "
                "on a site several hosts serve (another host may be running it); the site's "
                "admin can move the folder aside",
                pp_id,
                workflow,
                folder,
                why,
            )
            return
        try:
            st = os.lstat(folder)
            tree = os.lstat(root)
        except OSError:
            return
        if stat.S_ISDIR(st.st_mode) and st.st_uid not in (0, os.geteuid(), tree.st_uid):
            # still handed over: the daemon was stopped while it ran
            script = str(folder / SCRIPT_NAME)
            handle = self.executor.find_started({script: st.st_uid}).get(script)
            if handle is not None:
                self.executor.cancel(handle, "its record was not the daemon's")
            take_back(folder, st.st_uid, kept=(RECORD,))
        aside = root / f".{pp_id}.refused"
        if os.path.lexists(aside):
            aside = root / f".{pp_id}.refused-{secrets.token_hex(3)}"
        try:
            os.rename(folder, aside)
        except OSError as exc:
            log.error(
                "post-processing %s of %s (%s): its %s: not trusted, and the folder could not "
                "be moved aside (%s): post-processing runs again beside it",
                pp_id,
                workflow,
                folder,
                why,
                exc.strerror or exc,
            )
            aside = folder
        with self.site.store.exclusive(f"postproc:{workflow}"):
            state = read_state(self.site, workflow)
            state["ranking"] = None  # its set of best runs: started again
            if state.get("last_success") == pp_id:
                state["last_success"] = None
            state["latest"] = state.get("last_success")
            atomic.write_json(root / STATE_FILE, state, fsync=False)
        if aside != folder:
            log.error(
                "post-processing %s of %s: its %s: not trusted (its outcome, handle and "
                "outputs are not read); the folder is moved aside to %s for the site's admin "
                "to look at (nothing deleted), and the post-processing runs again",
                pp_id,
                workflow,
                why,
                aside,
            )

    def _adopt_from_marker(self, record: PostProcRecord) -> bool:
        """A RUNNING record without a handle: its daemon was killed between state.json and
        the record of the launch. Launched, the script wrote its ``started`` marker (its
        first act, a few milliseconds after the launch, long before a new daemon is up):
        the handle is rebuilt from it and the process adopted by PID, as the marker's time
        stands in for its start time (a PID reused since has a later one), and the markers
        decide how it ended. Without the marker, a process running its script (killed a
        moment after the launch) is adopted; False without either: never launched."""
        folder = postproc_root(self.site, record.workflow) / record.id
        started = read_markers(folder).started
        # it runs as the user it was launched as (the marker is that user's text: the
        # adoption checks the process's user and script, as for a run)
        uid = record.uid if record.uid is not None else os.geteuid()
        if started is not None:
            record.handle = handle_from_marker(started, folder / SCRIPT_NAME, uid)
            record.started_at = iso(started[1])
        else:
            # or launched a moment before the kill, its marker not written yet: its
            # process, if one runs the script (see LocalExecutor.find_started)
            script = str(folder / SCRIPT_NAME)
            handle = self.executor.find_started({script: uid}).get(script)
            if handle is None:
                return False
            record.handle = handle
            record.started_at = iso(handle["start"])
        self._write_record(record)
        log.info("post-processing %s of %s adopted from its marker", record.id, record.workflow)
        return True


# --- staging and results ------------------------------------------------------------------------


def _others(record: PostProcRecord, host: str | None) -> bool:
    """Whether another daemon host than ``host`` started ``record`` (one recorded before
    records named their host is taken as this host's, as it was)."""
    return record.host is not None and record.host != host


def _new_id() -> str:
    return datetime.now(UTC).strftime("pp-%Y%m%dT%H%M%S-") + secrets.token_hex(3)


def _summary(exc: BaseException) -> str:
    return exc.summary() if isinstance(exc, FlowbatchError) else f"{type(exc).__name__}: {exc}"


def _stage_runs(
    site: Site, workflow: str, target: Path, entries: list[RankEntry], files: list[str]
) -> None:
    """``runs.json`` in rank order and each run's input files at ``<run_id>/<file>``."""
    target.mkdir(parents=True, exist_ok=True)
    listing = []
    for entry in entries:
        run_id = entry.run.run_id
        source_dir = site.layout.run_dir(workflow, run_id)
        for name in files:
            dest = target / run_id / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:  # the run's folder is its user's: never follow a symlink out of it
                copy_beneath(source_dir, name, dest)
            except OSError:
                raise FlowbatchError(
                    f"run {run_id} has no file {name!r} to post-process (or not a regular "
                    "file inside its run folder)",
                    field="postproc.inputs.files",
                ) from None
        listing.append({"id": run_id, "name": entry.run.group, "files": list(files)})
    atomic.write_json(target / RUNS_FILE, listing, fsync=False)


def _failure(
    folder: Path, steps: list[dict[str, Any]], exit_marker: tuple[int, float, int]
) -> list[str]:

    code, _, failed = exit_marker
    step = next((s for s in steps if s["index"] == failed), None)
    if step is None:
        return [f"the post-processing script ended with {describe_code(code)}"]
    messages = [f"step {failed} ({step['name']}) failed with {describe_code(code)}"]
    err = tail(folder, step["stderr"])
    if err:
        messages.append(f"stderr of step {failed} (last lines):\n{err}")
    return messages


def _output_sources(template: Template) -> list[str]:
    """The files of the folder :func:`_outputs` reads: the declared outputs, else the
    post-processing workflow's ``files.outputs``."""
    spec = template.postproc
    if spec is None:
        return []
    if spec.outputs is not None:
        return [o.source for o in spec.outputs]
    return list(spec.workflow.output_files)


def _outputs(folder: Path, template: Template) -> list[dict[str, Any]]:
    """``postproc.outputs`` (each must exist), else the post-processing workflow's
    ``files.outputs`` that exist (§4.4): regular files of the folder reached without a
    symbolic link (what the page shows of them is read the same way: a link, made from a
    participant's data by the post-processing, would show what it points at)."""
    assert template.postproc is not None
    spec = template.postproc
    if spec.outputs is not None:
        missing = [o.source for o in spec.outputs if not _regular_file(folder, o.source)]
        if missing:
            raise FlowbatchError(
                "declared post-processing outputs are missing: " + ", ".join(missing),
                field="postproc.outputs",
            )
        return [
            {"key": o.key, "source": o.source, "title": o.title, "caption": o.caption}
            for o in spec.outputs
        ]
    return [
        {"key": s, "source": s, "title": None, "caption": None}
        for s in spec.workflow.output_files
        if _regular_file(folder, s)
    ]


def _regular_file(folder: Path, rel: str) -> bool:
    try:
        fd = open_beneath(folder, rel)
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


# --- what the leaderboard shows ------------------------------------------------------------------


def leaderboard_view(
    site: Site, workflow: str, version: str, best: list[str]
) -> PostProcView | None:
    """The latest post-processing run and the outputs of the latest successful one, for
    the leaderboard of ``version`` whose best runs per group are ``best``; ``None`` when
    post-processing never ran for them. Only runs of that version are shown (an older
    version's outputs went on showing its runs beside an empty leaderboard), none while
    no run is ranked (they named a deleted run), and one given another set of best runs
    than ``best`` says so (found by review)."""
    state = read_state(site, workflow)
    if not state.get("latest") or not best:
        return None
    latest = load_record(site, workflow, str(state["latest"]))
    success_id = state.get("last_success")
    if latest is not None and latest.state == "SUCCESS":
        success_id = latest.id  # also before state.json says so (the module docstring)
    success = load_record(site, workflow, str(success_id)) if success_id else None
    keys = sorted(best)
    latest_view = _run_view(site, latest, keys) if latest and latest.version == version else None
    if success is not None and success.version != version:
        success = None
    if latest_view is None and success is None:
        return None
    if success is not None and latest_view is not None and success.id == latest_view.id:
        return PostProcView(latest=latest_view, shown=latest_view)
    shown = _run_view(site, success, keys) if success else None
    return PostProcView(latest=latest_view, shown=shown)


def _run_view(site: Site, record: PostProcRecord, best: list[str]) -> PostProcRunView:
    folder = postproc_root(site, record.workflow) / record.id
    base = href_in(POSTPROC_DIR, record.id)
    outputs = (
        [_output_view(folder, record.id, f) for f in record.files]
        if record.state == "SUCCESS"
        else []
    )
    return PostProcRunView(
        id=record.id,
        state=record.state,
        started_at=record.started_at,
        finished_at=record.finished_at,
        runs=len(record.ranked),
        messages=list(record.messages),
        href=base + "/",
        outputs=outputs,
        current=sorted(record.ranking) == best,
    )


def _output_view(folder: Path, record_id: str, spec: dict[str, Any]) -> PostProcOutput:
    source = str(spec.get("source") or "")
    path = folder / source
    link = PostProcOutput(
        title=str(spec.get("title") or spec.get("key") or source),
        source=source,
        # the file's path keeps its "/": encoded, a page opened from the file system
        # linked nowhere (file:// takes no %2F: found by review)
        href=href_in(POSTPROC_DIR, record_id, source),
        caption=spec.get("caption"),
    )
    suffix = path.suffix.lower()
    try:
        fd = open_beneath(folder, source)  # never through a link (see _outputs)
    except OSError:
        return link
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return link
        if suffix in _IMAGES and st.st_size <= MAX_INLINE_IMAGE:
            data = base64.b64encode(read_up_to(fd, MAX_INLINE_IMAGE)).decode("ascii")
            uri = f"data:{_IMAGES[suffix]};base64,{data}"
            return replace(link, kind="image", data_uri=uri)
        if st.st_size > MAX_INLINE_TEXT:
            return link
        text = read_up_to(fd, MAX_INLINE_TEXT).decode("utf-8", errors="replace")
    except OSError:
        return link
    finally:
        os.close(fd)
    if suffix in (".csv", ".tsv"):
        # a table the csv module cannot read (a carriage return of a participant's
        # string result in an unquoted cell) is shown as its link: it stopped every
        # leaderboard of the workflow (found by review)
        delimiter = "\t" if suffix == ".tsv" else ","
        try:
            rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
        except csv.Error as exc:
            log.warning(
                "post-processing output %s of %s: not shown as a table: %s", source, record_id, exc
            )
            return link
        if rows:
            return replace(link, kind="table", table=rows[: MAX_TABLE_ROWS + 1])
    if suffix in _TEXTS:
        return replace(link, kind="text", text=text)
    return link
