"""What happens to runs and templates after the fact: rerun, delete, cleanup, uninstall,
orphans (seed-inventory §5.5, §12.2).

The tree is the truth, so a removal takes the run out of the tree first and out of the
index second: a run folder is first moved into ``results/<wf>/.trash/`` (one rename, so
``reindex`` never brings back a half-deleted run), then its index rows go, then the
folder. A crash in between leaves a ``.trash`` entry: ``runs delete`` of that run again
finishes the delete (also of a run whose folder is gone but whose rows are left), and
``cleanup --orphans`` removes the entry and its run's rows. The workflows whose reports
(leaderboards) a removal changes are noted in ``reports-pending/`` first, as the daemon
notes its own changes, so a crash before the reports are rewritten leaves them owed to
the daemon's next start; the notes of workflows with a post-processing step stay for the
daemon, which starts it again when the best runs per group changed. Active runs
(PENDING, RUNNING) are never removed: they are cancelled first.

``uninstall`` hides the template first (``templates/.<wf>.uninstalling``) and removes that
last: while it is there, ``uninstall <wf>`` again finishes the interrupted uninstall.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

import peewee as pw

from .errors import FlowbatchError, NotFoundError, RequestError, StateError
from .runs import ACTIVE, RunRecord, State, parse_state
from .safeio import copy_beneath
from .site import Site
from .store import atomic
from .store.index import (
    ResultRow,
    RunFileRow,
    RunRow,
    StateChangeRow,
    WorkflowRow,
    error_line,
)
from .store.layout import ID_PATTERN, REQUEST_COPY, RUN_JSON, checked_id
from .store.owner import make_dirs, open_folder_in
from .store.store import lock_holder_at, lock_holders, other_daemon, tree_change
from .store.templates import META

log = logging.getLogger("flowbatch.lifecycle_ops")

P = ParamSpec("P")
R = TypeVar("R")

TRASH = ".trash"
#: a ``.tmp`` leftover younger than this may still be written by a live intake or submit
TMP_GRACE = 3600.0


# -- sizes and removal -------------------------------------------------------------------------
def tree_size(path: Path) -> int:
    """Bytes of the files under ``path`` (symbolic links count as themselves)."""
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass  # vanished while counting
    return total


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _no_daemon_serving(site: Site, command: str) -> None:
    """Refuse while a daemon (another process's) serves the site: its intake may be
    making runs of the workflow this moment, which the index shows only once they are
    committed (found by review: `uninstall` went ahead beside such a run, took its folder
    away and left its PENDING row, or failed half-way on a locked database)."""
    who = other_daemon(site.root, site.host)
    if who is not None:
        raise StateError(
            f"a flowbatch daemon serves {site.root} ({who}): `{command}` needs it stopped",
            hint=f"stop the daemon (systemctl stop flowbatch), run `flowbatch {command}`, "
            "then start it again",
        )


def _changes_tree(command: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """The command holds the site's rebuild lock, shared (:func:`tree_change`): never
    beside a ``reindex`` (a dry run changes nothing)."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            if kwargs.get("dry_run"):
                return fn(*args, **kwargs)
            site = cast(Site, args[0])  # every guarded function takes the site first
            with tree_change(site.root, command, owner=site.layout.owner):
                return fn(*args, **kwargs)

        return guarded

    return wrap


def _unindex(run_ids: list[str]) -> None:
    for table in (RunFileRow, ResultRow, StateChangeRow):
        table.delete().where(table.run.in_(run_ids)).execute()
    RunRow.delete().where(RunRow.id.in_(run_ids)).execute()


def remove_runs(site: Site, runs: list[RunRecord]) -> int:
    """Take inactive ``runs`` out of the tree and the index; returns the bytes freed."""
    trashed: list[Path] = []
    for run in runs:
        run_dir = site.store.run_dir(run)
        trash = site.layout.workflow_results(run.workflow) / TRASH
        make_dirs(trash, site.layout.owner)  # root's, the owner's `runs delete` failed there
        dest = trash / run.id
        _remove(dest)  # a leftover of an earlier crash
        os.rename(run_dir, dest)  # from here on the tree no longer has the run
        trashed.append(dest)
    freed = 0
    try:
        with site.store.db.atomic():
            for chunk in range(0, len(runs), 500):  # SQLite's bound-parameter limit
                _unindex([r.id for r in runs[chunk : chunk + 500]])
    except (pw.DatabaseError, pw.InterfaceError) as exc:  # InterfaceError: a connection lost
        # the index refused (locked by a daemon's burst of writes): the folders go back,
        # nothing is deleted (found by review: the folder was in .trash and the run still
        # listed, with a traceback)
        for run, path in zip(runs, trashed, strict=True):
            with contextlib.suppress(OSError):
                os.rename(path, site.store.run_dir(run))
        raise FlowbatchError(
            f"the index could not be changed ({error_line(exc)}): nothing was deleted",
            hint="try again in a moment (a daemon writing a burst of runs holds the index "
            "for a while)",
        ) from None
    for path in trashed:
        freed += tree_size(path)
        _remove(path)
    return freed


def _check_inactive(run_id: str, state: State) -> None:
    if state in ACTIVE:
        raise StateError(
            f"run {run_id} is {state.value}: an active run cannot be deleted",
            hint=f"cancel it first: flowbatch runs cancel {run_id}",
        )


def _check_owner(run: RunRecord | RunRow, uid: int, site: Site | None = None) -> None:
    """Only the run's owner or root; with ``site``, the site's owner too (a delete, as
    `cleanup` does: found by review, the site's owner was sent to the run's owner, who
    was sent back to the site's owner for write access)."""
    if uid in (0, run.owner_uid):
        return
    if site is not None and uid == _site_owner(site):
        return
    who = "its owner, the site's owner or root" if site is not None else "its owner or root"
    raise StateError(f"run {run.id} belongs to {run.owner}", hint=f"only {who} may do this")


def _site_owner(site: Site) -> int | None:
    try:
        return site.root.stat().st_uid
    except OSError:
        return None


# -- delete ------------------------------------------------------------------------------------
@_changes_tree("runs delete")
def delete_runs(
    site: Site, run_ids: list[str], *, uid: int | None = None
) -> tuple[int, list[str], dict[str, FlowbatchError]]:
    """Delete the inactive runs of ``run_ids`` (tree and index), in one removal and one
    rewrite of their workflows' reports: (bytes freed, the runs deleted, the runs
    refused with why). Each run is checked on its own, as ``rm`` does its files: one
    that is active, another user's or unknown is refused, the others are deleted. A run
    whose delete was interrupted (its folder in ``.trash`` or gone, its rows left) is
    finished. The index refusing the change (:func:`remove_runs`) raises: nothing of the
    checked runs is deleted then."""
    caller = os.geteuid() if uid is None else uid
    runs: list[RunRecord] = []
    deleted: list[str] = []
    refused: dict[str, FlowbatchError] = {}
    freed = 0
    for run_id in dict.fromkeys(run_ids):
        try:
            try:
                run = site.store.load(run_id)
            except NotFoundError:
                finished = _finish_delete(site, run_id, caller)
                if finished is None:
                    raise
                freed += finished
                deleted.append(run_id)
                continue
            _check_inactive(run.id, run.state)
            _check_owner(run, caller, site)
        except FlowbatchError as exc:
            refused[run_id] = exc
            continue
        runs.append(run)
    if runs:
        workflows = {run.workflow for run in runs}
        noted = _owe_reports(site, workflows)
        freed += remove_runs(site, runs)
        _refresh(site, workflows)
        _reports_written(site, noted)
        deleted += [run.id for run in runs]
    return freed, deleted, refused


def delete_run(site: Site, run_id: str, *, uid: int | None = None) -> int:
    """Delete one inactive run (:func:`delete_runs`); returns the bytes freed, or raises
    why it cannot be deleted."""
    freed, _, refused = delete_runs(site, [run_id], uid=uid)
    if run_id in refused:
        raise refused[run_id]
    return freed


def _finish_delete(site: Site, run_id: str, uid: int) -> int | None:
    """Finish the delete of ``run_id`` that a crash interrupted: its folder is in its
    workflow's ``.trash`` (or already gone) while its index rows may be left. None when
    the run does not look like that (no rows and no ``.trash`` entry, or a run folder
    still in place): nothing here to finish."""
    checked_id(run_id, "run")
    row = RunRow.get_or_none(RunRow.id == run_id)
    if row is not None:
        run_dir = site.store.row_dir(row)
        workflow_dir = run_dir.parent.parent
        if os.path.lexists(run_dir):
            return None  # a run folder without a readable run.json: not a delete's leftover
    else:
        results = site.layout.results
        found = [
            wf
            for wf in (sorted(results.iterdir()) if results.is_dir() else [])
            if os.path.lexists(wf / TRASH / run_id)
        ]
        if not found:
            return None
        workflow_dir = found[0]
    trash = workflow_dir / TRASH / run_id
    record = None
    if trash.is_dir() and not trash.is_symlink():
        try:
            record = site.store.load_dir(trash)
        except FlowbatchError:
            pass  # half removed already: the rows (if any) say whose it was
    if record is not None:  # the tree has the last word
        _check_inactive(run_id, record.state)
        _check_owner(record, uid, site)
    elif row is not None:
        _check_inactive(run_id, parse_state(row.state))
        _check_owner(row, uid, site)
    noted = _owe_reports(site, {workflow_dir.name})
    if row is not None:
        with site.store.db.atomic():
            _unindex([run_id])
    freed = 0
    if os.path.lexists(trash):
        freed = tree_size(trash)
        _remove(trash)
    _refresh(site, {workflow_dir.name})
    _reports_written(site, noted)
    return freed


def rewrite_reports(site: Site, workflows: set[str]) -> None:
    """Rewrite the reports of ``workflows`` now, noted as owed first (as a removal does),
    for a change made outside the daemon (another version made current)."""
    noted = _owe_reports(site, workflows)
    _refresh(site, workflows)
    _reports_written(site, noted)


def _refresh(site: Site, workflows: set[str]) -> None:
    """Rewrite the reports of the workflows that lost runs (their leaderboards changed)."""
    from .api import update_reports

    update_reports(site, sorted(w for w in workflows if w in site.templates.list_ids()))


def _owe_reports(site: Site, workflows: set[str]) -> set[str]:
    """Note on disk, before a removal, that the reports of ``workflows`` are owed, as the
    daemon notes its own changes (:class:`flowbatch.daemon.PendingReports`: one empty
    file per workflow in ``reports-pending/``): a crash before :func:`_refresh` leaves
    the note, and the daemon writes those reports (at its next start, or within
    :data:`~flowbatch.daemon.OTHERS_EVERY` seconds of an idle tick when it runs, once
    the process the note names, this one, is gone). Returns the notes made here; one
    already there is the daemon's, which it removes itself.

    Made as the daemon makes its notes: through no link below the site folder, and,
    by root on a site another user owns (the API in root's process), the folder and the
    notes the owner's, whose commands and daemon note and clear them too (found by
    review: a removal by root left ``reports-pending/`` root's)."""
    made: set[str] = set()
    for workflow in sorted(workflows):
        if not ID_PATTERN.match(workflow):
            continue
        try:
            _note_owed(site, site.reports_pending_dir, workflow, f"{os.getpid()}\n")
        except FileExistsError:
            continue
        except OSError as exc:  # the reports are still written; only a crash forgets
            log.warning("cannot note pending reports of %s: %s", workflow, exc)
            continue
        made.add(workflow)
    return made


def _note_owed(site: Site, folder: Path, workflow: str, text: str) -> None:
    """Make the note ``folder/workflow`` (a folder of ``reports-pending/``) holding
    ``text``; FileExistsError when there is one. The site owner's, made by root."""
    owner = site.layout.owner
    fd = open_folder_in(site.root, folder, owner, make=True)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        note = os.open(workflow, flags, 0o644, dir_fd=fd)
        try:  # who owes them: a running daemon leaves the note to a live command
            if text:
                atomic.write_all(note, text.encode())
        finally:
            os.close(note)
        if owner is not None:
            owner.give_at(workflow, fd)
    finally:
        os.close(fd)


def _reports_written(site: Site, noted: set[str]) -> None:
    """The reports noted by :func:`_owe_reports` are written: its notes go, but those of
    workflows with a post-processing step, which stay for the daemon: the best runs per
    group may have changed, and only the daemon starts post-processing (found by review:
    a `runs delete` of a group's best run left the post-processing over it)."""
    for workflow in noted:
        try:
            template, _ = site.templates.load(workflow)
        except FlowbatchError:
            template = None
        if template is not None and template.postproc is not None:
            _to_a_serving_host(site, workflow)
            continue  # the daemon's (its idle tick, or its next start)
        try:
            (site.reports_pending_dir / workflow).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot clear pending reports of %s: %s", workflow, exc)


def _to_a_serving_host(site: Site, workflow: str) -> None:
    """On a site several hosts serve, a note left for the daemon by a command on a host
    where none serves goes to a host whose daemon does, as a daemon's own note (empty):
    each daemon reads its host's notes only (found by review: a `runs delete` on a login
    node without a daemon left the post-processing over the deleted run for good). With
    no daemon serving anywhere it stays, for this host's next daemon."""
    if not site.shared or lock_holder_at(site.lock_path) is not None:
        return
    for holder in lock_holders(site.root):
        host = str(holder.get("host") or "")
        if holder.get("role", "daemon") != "daemon":
            continue  # a `runs cancel` applying a cancel holds it for a moment
        if not host or host == site.host or not ID_PATTERN.match(host):
            continue
        folder = site.reports_pending_dir.parent / host
        try:
            with contextlib.suppress(FileExistsError):
                _note_owed(site, folder, workflow, "")  # empty: a daemon's own
            (site.reports_pending_dir / workflow).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot hand pending reports of %s to host %s: %s", workflow, host, exc)
            continue
        return


# -- cleanup -----------------------------------------------------------------------------------
def parse_date(text: str) -> datetime:
    """``2024-05-01`` (midnight) or an ISO-8601 time, in this machine's local time (``TZ``)
    unless it gives an offset, as ``date`` and ``find -newermt`` read one (it was UTC
    whatever ``TZ`` said, which the help did not tell: found by review)."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise RequestError(
            f"not a date: {text!r}", expected="YYYY-MM-DD or an ISO-8601 time"
        ) from None
    return value if value.tzinfo else value.astimezone()


def postproc_feeders(site: Site, workflow: str) -> set[str]:
    """Runs that feed the workflow's current post-processing: those of the last one
    started and of the last successful one (whose outputs the leaderboard shows)."""
    from . import postproc

    state = postproc.read_state(site, workflow)
    ids = set(state.get("ranking") or [])
    for key in ("latest", "last_success"):
        if state.get(key):
            record = postproc.load_record(site, workflow, state[key])
            if record is not None:
                ids.update(record.ranking)
    return ids


@dataclass
class CleanupReport:
    removed: list[dict[str, Any]] = field(default_factory=list)  # id, workflow, state, ...
    spared: list[dict[str, Any]] = field(default_factory=list)  # ... and why
    freed: int = 0  # bytes (with dry_run: what would be freed), post-processing included
    dry_run: bool = False
    #: post-processing runs removed (id, workflow, state, created_at, bytes): those created
    #: before the date, except the latest and the one whose outputs the leaderboard shows
    postproc_removed: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@_changes_tree("cleanup")
def cleanup(
    site: Site,
    before: str,
    *,
    state: str | None = None,
    workflow: str | None = None,
    dry_run: bool = False,
) -> CleanupReport:
    """Remove the inactive runs created before ``before`` (optionally of one state and one
    workflow) from the tree and the index, sparing the runs that feed the current
    post-processing. Creation times are compared as times, not as text (flowServ compared
    ISO strings, so offsets and precision changed the answer)."""
    cutoff = parse_date(before)
    st = parse_state(state) if state else None
    if st is not None and st in ACTIVE:
        raise StateError(f"{st.value} runs are active and are never cleaned up")
    site.store  # noqa: B018 - opens the index
    if workflow:
        from .api import known_workflow

        checked_id(workflow, "workflow")
        known_workflow(site, workflow)
    query = RunRow.select().where(RunRow.state.not_in([s.value for s in ACTIVE]))
    if st is not None:
        query = query.where(RunRow.state == st.value)
    if workflow:
        query = query.where(RunRow.workflow == workflow)
    report = CleanupReport(dry_run=dry_run)
    feeders: dict[str, set[str]] = {}
    chosen: list[RunRecord] = []
    leftovers: list[Path] = []  # folders an interrupted delete left in .trash
    for row in query.order_by(RunRow.created_at, RunRow.id):
        if datetime.fromisoformat(row.created_at) >= cutoff:
            continue
        entry: dict[str, Any] = {"id": row.id, "workflow": row.workflow, "state": row.state}
        entry["created_at"] = row.created_at
        if row.workflow not in feeders:
            feeders[row.workflow] = postproc_feeders(site, row.workflow)
        if row.id in feeders[row.workflow]:
            report.spared.append({**entry, "why": "feeds the current post-processing"})
            continue
        try:
            run = site.store.load_dir(site.store.row_dir(row))
        except FlowbatchError:
            run = None  # the index is behind the tree: only its rows go
        if run is not None:
            entry["bytes"] = tree_size(site.store.row_dir(row))
        else:  # a delete or cleanup a crash interrupted left its folder in .trash
            trashed = site.layout.workflow_results(row.workflow) / TRASH / row.id
            entry["bytes"] = tree_size(trashed) if trashed.is_dir() else 0
            if trashed.is_dir():
                leftovers.append(trashed)
        report.removed.append(entry)
        if run is not None and run.state not in ACTIVE:  # the tree has the last word
            chosen.append(run)
    if st is None:  # a state filter names run states: post-processing is left alone
        report.postproc_removed = _old_postproc(site, cutoff, workflow)
    old_postproc = sum(e["bytes"] for e in report.postproc_removed)
    report.freed = sum(e["bytes"] for e in report.removed) + old_postproc
    if not dry_run:
        changed = {e["workflow"] for e in report.removed}
        noted = _owe_reports(site, changed)
        report.freed = remove_runs(site, chosen) + old_postproc
        stale = sorted({e["id"] for e in report.removed} - {r.id for r in chosen})
        with site.store.db.atomic():
            for chunk in range(0, len(stale), 500):
                _unindex(stale[chunk : chunk + 500])
        for path in leftovers:  # their rows gone: the folders too (found by review)
            report.freed += tree_size(path)
            _remove(path)
        for entry in report.postproc_removed:
            _remove(Path(entry["path"]))
        _refresh(site, changed)
        _reports_written(site, noted)
    return report


def _old_postproc(site: Site, cutoff: datetime, workflow: str | None) -> list[dict[str, Any]]:
    """Post-processing runs created before ``cutoff`` that have ended, except each
    workflow's latest one and the one whose outputs its leaderboard shows."""
    from . import postproc

    out: list[dict[str, Any]] = []
    for wf in [workflow] if workflow else site.templates.list_ids():
        root = postproc.postproc_root(site, wf)
        if not root.is_dir():
            continue
        state = postproc.read_state(site, wf)
        keep = {state.get("latest"), state.get("last_success")}
        for folder in sorted(root.iterdir()):
            if folder.name in keep or folder.name.startswith(".") or not folder.is_dir():
                continue
            record = postproc.load_record(site, wf, folder.name)
            if record is None or record.state == "RUNNING":
                continue  # not ours to judge, or still running
            try:
                created = datetime.fromisoformat(record.created_at)
            except ValueError:
                continue
            if (created if created.tzinfo else created.replace(tzinfo=UTC)) >= cutoff:
                continue
            out.append(
                {
                    "id": record.id,
                    "workflow": wf,
                    "state": record.state,
                    "created_at": record.created_at,
                    "path": str(folder),
                    "bytes": tree_size(folder),
                }
            )
    return out


# -- uninstall ---------------------------------------------------------------------------------
@_changes_tree("uninstall")
def uninstall(site: Site, workflow: str) -> dict[str, Any]:
    """Remove a workflow: its template (every version), its results tree and its index
    rows. Refused while any of its runs is active.

    The template is hidden first (one rename to ``templates/.<wf>.uninstalling``: intake
    now refuses new requests for it) and removed last, after the results (first hidden
    as ``results/.<wf>.uninstalling``, removed once their rows are gone) and the front
    page: a crash at any step leaves the hidden template, and ``uninstall <wf>`` again
    finishes the job ("resumed" in the answer)."""
    checked_id(workflow, "workflow")
    _no_daemon_serving(site, "uninstall")
    tpl = site.layout.template_dir(workflow)
    hidden = tpl.with_name(f".{workflow}.uninstalling")
    results = site.layout.workflow_results(workflow)
    gone = results.with_name(f".{workflow}.uninstalling")
    site.store  # noqa: B018 - opens the index
    try:
        site.templates.meta(workflow)  # NotFoundError for an unknown workflow
        resumed = False
    except NotFoundError:
        if not os.path.lexists(hidden):
            raise
        resumed = True  # an uninstall of it was interrupted
        log.warning("workflow %s: finishing an uninstall that was interrupted", workflow)
    if not resumed:
        _refuse_active(workflow)
        _remove(hidden)  # left by an interrupted uninstall of an earlier install
        os.rename(tpl, hidden)
    if not os.path.lexists(gone) or not resumed:
        # look again, since a request may have become a run in between (once the results
        # are hidden the runs were looked at: they are out of the tree)
        try:
            _refuse_active(workflow)
        except StateError:
            if not os.path.lexists(tpl):
                os.rename(hidden, tpl)
            raise
    runs = RunRow.select().where(RunRow.workflow == workflow).count()
    freed = sum(tree_size(p) for p in (hidden, results, gone) if os.path.lexists(p))
    if os.path.lexists(results):
        # out of the tree in one rename, its run folders first hidden within (``reindex``
        # and a daemon's start index the run folders of any ``results/*/runs/``)
        if (results / "runs").is_dir():
            _remove(results / ".runs.uninstalling")
            os.rename(results / "runs", results / ".runs.uninstalling")
        _remove(gone)  # left by an interrupted uninstall of an earlier install
        os.rename(results, gone)
    with site.store.db.atomic():
        ids = [r.id for r in RunRow.select(RunRow.id).where(RunRow.workflow == workflow)]
        for chunk in range(0, len(ids), 500):
            _unindex(ids[chunk : chunk + 500])
        WorkflowRow.delete().where(WorkflowRow.id == workflow).execute()
    _remove(gone)
    _refresh(site, set())  # the front page lists workflows
    _remove(hidden)  # last: while it is there, `uninstall` again finishes the job
    return {"workflow": workflow, "runs": runs, "freed": freed, "resumed": resumed}


#: what a retire hides a template version's folder as, in ``templates/<wf>/``, before it
#: removes it (a version is named by a hash: a dot-name is never one)
RETIRING = ".{version}.retiring"


@_changes_tree("workflows retire")
def retire_version(
    site: Site, workflow: str, version: str, *, with_runs: bool = False
) -> dict[str, Any]:
    """Remove one installed version of a workflow's template that is not its current
    one (a broken install, or old versions' shipped data taking space), with its runs if
    ``with_runs`` (refused otherwise while it has any: their records would point at a
    template that is gone). Refused while a daemon serves the site, as ``uninstall``
    is (its intake may be making a run of a request that asks for this version), and
    while a run of the version is active. A unique prefix of the version will do.

    Order, so that running it again finishes what a crash cut short: the runs (as
    ``runs delete`` removes them), then the version's entry in ``workflow.json``, then
    its folder (hidden first as :data:`RETIRING`). Returns the version, its runs
    removed, the bytes freed and whether an interrupted retire was finished."""
    checked_id(workflow, "workflow")
    _no_daemon_serving(site, "workflows retire")
    meta = site.templates.meta(workflow)  # NotFoundError for an unknown workflow
    wf_dir = site.layout.template_dir(workflow)
    listed = [e["version"] for e in meta.get("versions", [])]
    version = _version_named(workflow, version, listed, wf_dir)
    if version == meta.get("current"):
        raise StateError(
            f"version {version} is the current version of {workflow}",
            hint="install the template you want current first (installing a folder "
            "whose content an earlier version had makes that version current again), "
            "then retire this one",
        )
    site.store  # noqa: B018 - opens the index
    query: Any = (
        RunRow.select(RunRow.id, RunRow.state)
        .where((RunRow.workflow == workflow) & (RunRow.version == version))
        .order_by(RunRow.created_at)
        .tuples()
    )
    rows: list[tuple[str, str]] = list(query)
    active = [run_id for run_id, state in rows if parse_state(state) in ACTIVE]
    if active:
        shown = ", ".join(active[:5]) + (" ..." if len(active) > 5 else "")
        raise StateError(
            f"version {version} of {workflow} has {len(active)} active runs ({shown})",
            hint="cancel them or wait until they end",
        )
    if rows and not with_runs:
        raise StateError(
            f"{len(rows)} runs of {workflow} ran on version {version}",
            hint="add --with-runs to remove them with it (their folders, results and "
            "index rows: `flowbatch runs delete` for each), or keep the version",
        )
    freed = 0
    if rows:
        runs = [site.store.load(run_id) for run_id, _ in rows]
        noted = _owe_reports(site, {workflow})
        freed += remove_runs(site, runs)
        _refresh(site, {workflow})
        _reports_written(site, noted)
    resumed = version not in listed
    if not resumed:
        meta["versions"] = [e for e in meta["versions"] if e["version"] != version]
        atomic.write_json(wf_dir / META, meta)
    site.templates.forget(workflow, version)
    hidden = wf_dir / RETIRING.format(version=version)
    if os.path.lexists(wf_dir / version):
        _remove(hidden)  # a leftover of a retire of it cut short, then installed again
        os.rename(wf_dir / version, hidden)
    if os.path.lexists(hidden):
        freed += tree_size(hidden)
        _remove(hidden)
    return {
        "workflow": workflow,
        "version": version,
        "runs": len(rows),
        "freed": freed,
        "resumed": resumed,
    }


def _version_named(workflow: str, given: str, listed: list[str], wf_dir: Path) -> str:
    """The version ``given`` names: itself, or the one listed version it begins (at
    least 4 characters); a version no longer listed whose folder a cut-short retire
    left (itself or hidden) is named by its whole name: a folder, never a file beside
    the versions (found by review: ``workflow.json`` was taken for one such, and the
    workflow's own record removed)."""
    if given in listed:
        return given
    if ID_PATTERN.match(given) and not given.startswith("."):
        left = wf_dir / given
        if _real_dir(left) or _real_dir(wf_dir / RETIRING.format(version=given)):
            return given
    found = [v for v in listed if len(given) >= 4 and v.startswith(given)]
    if len(found) == 1:
        return found[0]
    raise NotFoundError(
        f"workflow {workflow} has no version {given!r}"
        + (f" (it begins {len(found)} of them)" if found else ""),
        hint=f"see `flowbatch workflows show {workflow}` for its versions",
    )


def _real_dir(path: Path) -> bool:
    """Whether ``path`` is a folder itself (not a file, nor a link to a folder)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _refuse_active(workflow: str) -> None:
    active = (
        RunRow.select(RunRow.id, RunRow.state)
        .where((RunRow.workflow == workflow) & RunRow.state.in_([s.value for s in ACTIVE]))
        .order_by(RunRow.created_at)
    )
    ids = [r.id for r in active]
    if ids:
        shown = ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")
        raise StateError(
            f"workflow {workflow} has {len(ids)} active runs ({shown})",
            hint="cancel them or wait until they end",
        )


# -- rerun -------------------------------------------------------------------------------------
def rerun(site: Site, run_id: str, *, latest: bool = False, uid: int | None = None) -> str:
    """Queue a new request with the arguments and input files of run ``run_id``, on the
    same template version (``latest``: the current one). Returns the queued name.

    Non-file arguments are the run's recorded (cast) values; each file argument the user
    gave is sent again from the old run folder, where it sits at its target; a file
    argument that was the template's own default is left out (the template supplies it).
    ``executor``, ``retries`` and ``resources`` come from the old request."""
    from .api import queue_request

    run = site.store.load(run_id)
    caller = os.geteuid() if uid is None else uid
    _check_owner(run, caller)
    run_dir = site.store.run_dir(run)
    try:  # the file parameters, by the template (a record may have such keys too)
        template, _ = site.templates.load(run.workflow, run.version)
        file_params = {p.name for p in template.parameters if p.dtype == "file"}
    except FlowbatchError:  # its version removed: by the recorded values' shape
        file_params = {
            k
            for k, v in run.arguments.items()
            if isinstance(v, dict) and set(v) == {"source", "target"}
        }
    arguments: dict[str, Any] = {}
    files: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix=".rerun-") as scratch:
        for name, value in run.arguments.items():
            if name in file_params and isinstance(value, dict):
                if not value.get("source"):
                    continue  # the template's default file
                target = str(value["target"])
                files[name] = _input_copy(run, run_dir, target, Path(scratch) / name)
                arguments[name] = {"source": target, "target": target}
            else:
                arguments[name] = value
        doc: dict[str, Any] = {"workflow": run.workflow, "group": run.group}
        if run.name:
            doc["name"] = run.name
        if not latest:
            doc["version"] = run.version
        doc.update(_old_request_options(run_dir))
        doc["arguments"] = arguments
        return queue_request(site, f"rerun-{run.id}", doc, files, uid=run.owner_uid)


def _input_copy(run: RunRecord, run_dir: Path, target: str, dest: Path) -> Path:
    """A copy of the input file ``target`` as the run folder holds it, read beneath it
    without following a link on the way: the run's user could have left a link there,
    a folder of it included, to another user's private file, which root's rerun then
    copied for them (found by review). It is the file as the run left it."""
    try:
        copy_beneath(run_dir, target, dest)
    except OSError as exc:
        raise NotFoundError(
            f"input file {target!r} of run {run.id} cannot be read in its folder: "
            f"{exc.strerror or exc}",
            hint="submit a new request with the file instead",
        ) from None
    return dest


def _old_request_options(run_dir: Path) -> dict[str, Any]:
    """``executor``, ``retries`` and ``resources`` of the request that made the run."""
    from . import yamlio

    path = run_dir / REQUEST_COPY
    if not os.path.lexists(path):
        return {}  # an older run's folder
    # the run's user may have replaced the daemon's copy while it ran (the folder was
    # theirs): a rerun takes nothing from a copy the tree's owner did not write
    try:
        owner = run_dir.parent.parent.parent.stat().st_uid  # results/'s: the daemon's
    except OSError:
        owner = None
    old = yamlio.load_file(path, follow=False, owner=owner)
    if not isinstance(old, dict):
        return {}
    return {k: old[k] for k in ("executor", "retries", "resources") if old.get(k) is not None}


# -- orphans -----------------------------------------------------------------------------------
@dataclass
class Orphan:
    where: str  # "local" or the ssh host's name
    path: str
    why: str
    bytes: int | None = None
    #: a remote folder's run (ended here) may still have processes there: a host that
    #: came back after its runs were declared lost. Its handle: ended before removal.
    handle: dict[str, Any] | None = None


def local_orphans(site: Site, *, grace: float = TMP_GRACE) -> list[Orphan]:
    """Leftovers in the results tree and the queue: run folders without ``run.json``,
    ``.trash`` entries, and ``.tmp`` folders or files older than ``grace`` seconds (a
    younger one may still be written by intake or ``flowbatch submit``)."""
    out: list[Orphan] = []
    now = datetime.now(UTC).timestamp()
    results = site.layout.results
    for wf in sorted(results.iterdir()) if results.is_dir() else []:
        for entry in sorted((wf / TRASH).iterdir()) if (wf / TRASH).is_dir() else []:
            out.append(Orphan("local", str(entry), "left by an interrupted delete"))
        runs = wf / "runs"
        for entry in sorted(runs.iterdir()) if runs.is_dir() else []:
            if entry.name.endswith(".tmp"):
                if now - entry.lstat().st_mtime > grace:
                    out.append(Orphan("local", str(entry), "unfinished run folder"))
            elif entry.is_dir() and not (entry / RUN_JSON).is_file():
                out.append(Orphan("local", str(entry), "run folder without run.json"))
    queue = site.layout.queue
    for entry in sorted(queue.iterdir()) if queue.is_dir() else []:
        leftover = entry.name.startswith(".") and entry.name.endswith(".tmp")
        if leftover and now - entry.lstat().st_mtime > grace:
            out.append(Orphan("local", str(entry), "unfinished queue file"))
    out.extend(_ended_arrays(site, now - grace))
    for orphan in out:
        orphan.bytes = tree_size(Path(orphan.path))
    return out


def _ended_arrays(site: Site, older_than: float) -> list[Orphan]:
    """``<site>/slurm-arrays/<name>/`` folders (an array's batch script and one link per
    task to its run folder, through which Slurm writes the task's logs) whose runs have
    all ended or are gone. One with a task still active, or whose run cannot be read, is
    kept: Slurm writes through it."""
    from .executors.slurm import ARRAYS_DIR

    arrays = site.root / ARRAYS_DIR
    out: list[Orphan] = []
    for folder in sorted(arrays.iterdir()) if arrays.is_dir() else []:
        if folder.is_symlink() or not folder.is_dir():
            continue
        links = [entry for entry in folder.iterdir() if entry.is_symlink()]
        if not links:
            if folder.lstat().st_mtime < older_than:
                out.append(Orphan("local", str(folder), "Slurm array folder without tasks"))
            continue
        if all(_run_ended(site, Path(os.readlink(link))) for link in links):
            out.append(Orphan("local", str(folder), "Slurm array whose runs have all ended"))
    return out


def _run_ended(site: Site, run_dir: Path) -> bool:
    """The run of ``run_dir`` has ended or its folder is gone; False when unsure (a
    ``run.json`` that cannot be read or is not trusted)."""
    if not run_dir.exists():
        return True
    try:
        return site.store.load_dir(run_dir).state not in ACTIVE
    except (OSError, FlowbatchError):
        return False


#: lists ``<remote_root>/<workflow>/<run>`` folders with their size in KiB
_LIST_REMOTE = r"""cd -- {root} 2>/dev/null || exit 0
for d in */*/; do
  [ -d "$d" ] || continue
  printf '%s\t%s\n' "$(du -sk -- "$d" 2>/dev/null | cut -f1)" "${{d%/}}"
done
"""


def remote_orphans(site: Site) -> list[Orphan]:
    """Run folders on the SSH hosts (``<remote_root>/<workflow>/<run_id>``) whose run is
    not active here: left by a crashed run or daemon, or by a host that was down when
    the run was collected. A host that cannot be reached is reported, not skipped."""
    from .executors.ssh import ssh_runner

    site.store  # noqa: B018 - opens the index
    active = {
        r.id for r in RunRow.select(RunRow.id).where(RunRow.state.in_([s.value for s in ACTIVE]))
    }
    out: list[Orphan] = []
    for name, host in sorted(site.config.ssh.items()):
        root = host.remote_root
        try:
            result = ssh_runner(site.config, name).run(_LIST_REMOTE.format(root=_q(root)))
        except FlowbatchError as exc:
            raise FlowbatchError(
                f"ssh host {name}: cannot list {root}: {exc.summary()}",
                hint=f"`flowbatch hosts check {name}`",
            ) from None
        for line in result.stdout.splitlines():
            size, _, rel = line.partition("\t")
            run_id = rel.rsplit("/", 1)[-1]
            if not rel or run_id in active:
                continue
            path = f"{root.rstrip('/')}/{rel}"
            kib = int(size) if size.isdigit() else None
            orphan = Orphan(name, path, _remote_why(run_id), None if kib is None else kib * 1024)
            orphan.handle = _remote_handle(site, run_id, name)
            out.append(orphan)
    return out


def _remote_handle(site: Site, run_id: str, host: str) -> dict[str, Any] | None:
    """The handle of an ended run that ran on ``host`` (its remote process group)."""
    try:
        run = site.store.load(run_id)
    except FlowbatchError:
        return None
    handle = run.handle or {}
    return handle if handle.get("host") == host and handle.get("pid") else None


def _remote_why(run_id: str) -> str:
    row = RunRow.get_or_none(RunRow.id == run_id)
    if row is None:
        return "no such run here"
    return f"run is {row.state}"


def remove_orphans(site: Site, orphans: list[Orphan]) -> None:
    """Remove what :func:`local_orphans` and :func:`remote_orphans` found."""
    from .executors.ssh import ssh_runner

    _unindex_trashed(site, [Path(o.path) for o in orphans if o.where == "local"])
    for orphan in orphans:
        if orphan.where == "local":
            _remove(Path(orphan.path))
            continue
        if orphan.handle:
            # its processes first (only if the recorded PID still is that process: same
            # start time, same boot), or they would go on writing into a removed folder
            from .executors.ssh import ssh_executors

            ssh_executors(site.config)[orphan.where].cancel(orphan.handle, "orphan cleanup")
        result = ssh_runner(site.config, orphan.where).run(f"rm -rf -- {_q(orphan.path)}")
        if not result.ok:
            raise FlowbatchError(
                f"ssh host {orphan.where}: cannot remove {orphan.path}: {result.stderr.strip()}"
            )


def _unindex_trashed(site: Site, paths: list[Path]) -> None:
    """The index rows of the runs whose folders are ``.trash`` entries among ``paths``
    (a delete interrupted before its rows went), then those workflows' reports. A run
    whose row names a folder that still holds its ``run.json`` keeps its rows."""
    trashed = {p.name: p.parent.parent.name for p in paths if p.parent.name == TRASH}
    if not trashed:
        return
    site.store  # noqa: B018 - opens the index
    ids = sorted(trashed)
    rows: list[Any] = []
    for chunk in range(0, len(ids), 500):
        query = RunRow.select(RunRow.id, RunRow.workflow).where(
            RunRow.id.in_(ids[chunk : chunk + 500])
        )
        rows.extend(r for r in query if not (site.store.row_dir(r) / RUN_JSON).is_file())
    if not rows:
        return
    changed = {trashed[r.id] for r in rows}
    noted = _owe_reports(site, changed)
    with site.store.db.atomic():
        for chunk in range(0, len(rows), 500):
            _unindex([r.id for r in rows[chunk : chunk + 500]])
    _refresh(site, changed)
    _reports_written(site, noted)


@_changes_tree("cleanup --orphans")  # never beside a reindex (found by review)
def orphans_report(site: Site, *, dry_run: bool = False) -> dict[str, Any]:
    """Find (and unless ``dry_run`` remove) local and remote orphans."""
    found = local_orphans(site) + (remote_orphans(site) if site.config.ssh else [])
    if not dry_run:
        remove_orphans(site, found)
    return {
        "orphans": [asdict(o) for o in found],
        "freed": sum(o.bytes or 0 for o in found),
        "dry_run": dry_run,
    }


def _q(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
