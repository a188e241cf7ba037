"""The Python API behind the CLI: each function does one user-visible thing on a site."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import yamlio
from .errors import FlowbatchError, NotFoundError, RequestError, TemplateError
from .gcpause import paused_gc
from .progress import Progress, track
from .ranking import rank, ranking_json
from .ranking_sql import leaderboard_views, rank_inputs
from .runs import RunRecord, parse_state
from .site import Site
from .spec.manifest import MANIFEST_NAMES, SPEC_NAMES, find_source
from .spec.model import FileArg, Template
from .spec.params import cast_value
from .spec.request import Request, parse_request
from .spec.template import TOP_KEYS, load_template
from .store import atomic
from .store.index import RunRow, WorkflowRow
from .store.layout import BUNDLE_SUFFIX, CANCEL_PREFIX
from .store.store import Store, other_daemon, run_rows, tree_change
from .store.templates import Installed
from .sweep import Point

if TYPE_CHECKING:
    from .queue import CheckedRequest

LIST_FIELDS = (
    "id",
    "workflow",
    "group",
    "name",
    "state",
    "created_at",
    "started_at",
    "finished_at",
    "owner",
    "version",
    "executor",
    "request",
)

log = logging.getLogger("flowbatch.api")


# -- templates -----------------------------------------------------------------------------
def install(
    site: Site,
    path: Path,
    *,
    workflow_id: str | None = None,
    name: str | None = None,
    specfile: str | None = None,
) -> Installed:
    src = find_source(path, specfile=specfile, name=name)
    # the executor it names must be the site's (parsed once more by the install: cheap)
    template = load_template(src.spec_path, known_variables=site.templates.variables)
    check_template_executor(site, template, str(src.spec_path))
    with (
        tree_change(site.root, "install", owner=site.layout.owner),
        Progress(f"installing {src.spec_path.parent.name}") as bar,  # big templates
    ):
        installed = site.templates.install(src, workflow_id=workflow_id, name=name, progress=bar)
        index_workflow(site, installed.id)
        if installed.previous is not None and (
            installed.previous != installed.version or installed.shown_changed
        ):
            # another version is current: the leaderboard files show its runs now (they
            # kept the old one's until a run ended: found by review); the daemon checks
            # the post-processing. Likewise a new description or instructions.
            from .lifecycle_ops import rewrite_reports

            rewrite_reports(site, {installed.id})
    return installed


def index_workflow(site: Site, workflow_id: str) -> None:
    meta = site.templates.meta(workflow_id)
    versions = {v["version"]: v for v in meta.get("versions", [])}
    values = {
        "name": meta.get("name") or workflow_id,
        "description": meta.get("description"),
        "version": meta["current"],
        "installed_at": versions.get(meta["current"], {}).get("installed_at", ""),
        "has_results": bool(meta.get("has_results")),
    }
    site.store  # noqa: B018 - opens the index
    WorkflowRow.insert(id=workflow_id, **values).on_conflict(
        conflict_target=[WorkflowRow.id], update=values
    ).execute()


def list_workflows(site: Site) -> list[dict[str, Any]]:
    from .versions import run_counts

    site.store  # noqa: B018 - opens the index
    counts = run_counts()
    out = []
    for wf_id in site.templates.list_ids():
        meta = site.templates.meta(wf_id)
        by_version = counts.get(wf_id, {})
        current = by_version.get(str(meta.get("current")), {})
        out.append(
            {
                "id": wf_id,
                "name": meta.get("name"),
                "version": meta.get("current"),
                "versions": len(meta.get("versions", [])),
                "description": meta.get("description"),
                "runs": sum(sum(states.values()) for states in by_version.values()),
                "runs_current": sum(current.values()),  # runs of the current version
            }
        )
    return out


def show_workflow(site: Site, workflow: str) -> dict[str, Any]:
    """A workflow's versions, each with ``installed_at`` and its runs per state."""
    from .versions import workflow_info

    return workflow_info(site, workflow)


def validate(path: Path, site: Site | None = None) -> str:
    """Check a template (folder or file) or a request without installing or submitting it.

    A request is checked as the site's daemon checks it (:func:`_check_request`), a
    template as ``install`` does (with a site: its executor is one of the site's).
    Returns a one-line description of what was checked; raises on the first problem.
    """
    variables = site.config.known_variables() if site else {"python": "python3"}
    if path.is_dir():
        from .store.templates import _file_list, check_shipped

        src = find_source(path)
        template = load_template(src.spec_path, known_variables=variables)
        _check_template(template, variables, site, str(src.spec_path))
        check_shipped(template, _file_list(src), src.spec_path)  # as install checks it
        unchecked = "" if site else "; no site: its executor and variables not checked"
        return f"template {src.spec_path}: valid ({_describe(template)}{unchecked})"
    doc = yamlio.load_file(path, max_bytes=yamlio.MAX_TEMPLATE_BYTES, as_written=True)
    if _looks_like_request(doc, path):
        if doc is None and path.stat().st_size == 0:  # as the intake says it
            raise RequestError(
                "the request file is empty",
                file=str(path),
                expected="a YAML mapping with at least `workflow:`",
                hint=_TEMPLATE_NAMED,
            )
        # a file others could write is refused by the daemon, whatever it says (the
        # intake's own check, message and fix, in the intake's order)
        from .queue import check_request_file

        check_request_file(path, str(path))
        try:
            req = parse_request(doc, file=str(path))
        except RequestError as exc:
            if not isinstance(doc, dict):  # nothing in it said it was a request
                exc.hint = f"{exc.hint}; {_TEMPLATE_NAMED}" if exc.hint else _TEMPLATE_NAMED
            raise
        if not isinstance(req, Request):
            return f"cancel request {path}: valid"
        if site is None:
            return f"request {path}: valid in form (no site to check the workflow against)"
        limit = site.config.max_request_bytes
        if path.stat().st_size > limit:  # as intake says it
            raise RequestError(
                f"the request file is over the size limit of {limit} bytes",
                file=str(path),
                hint="pass data as file arguments, not inline",
            )
        checked = _check_request(site, req, str(path))
        # every file a point names (swept ones too), as submit sends them; beside the
        # request as dropped, the daemon takes none that others could write
        _request_files(
            path,
            checked.template,
            req,
            checked.points,
            writers=True,
            max_bytes=site.config.max_input_bytes,
        )
        size = f", {len(checked.points)} points" if req.sweep else ""
        return f"request {path}: valid for workflow {req.workflow} version {checked.version}{size}"
    template = load_template(path, known_variables=variables)
    _check_template(template, variables, site, str(path))
    return f"template {path}: valid ({_describe(template)})"


#: keys only a request has (a template's `workflow:` is a mapping, a request's a name)
_REQUEST_ONLY = frozenset({"cancel", "arguments", "group", "name", "sweep", "retry_failed"})


#: keys only a template has (a request has its own `executor`, `retries`, `resources`)
_TEMPLATE_ONLY = frozenset(TOP_KEYS) - set(Request.model_fields)

#: what a file that is no mapping is told about templates (it was checked as a request)
_TEMPLATE_NAMED = (
    "a template file is checked as one when named benchmark, workflow or template "
    "(.yaml, .yml, .json), or when its folder is given"
)


def _looks_like_request(doc: Any, path: Path) -> bool:
    """Whether ``validate`` checks ``doc`` (read from ``path``) as a request: its
    ``workflow`` names one, or it has a key only requests have (a mistyped ``workflw:``
    is a request's error then, not a template's). A document that is no mapping (empty,
    null, a scalar, a list) says nothing either way: it is a template only under a name
    a template file has in a folder (``benchmark.yaml``, ...); any other file is told
    what a request needs, as the daemon's intake would tell it."""
    named_template = path.name in SPEC_NAMES or path.name in MANIFEST_NAMES
    if not isinstance(doc, dict):
        return not named_template
    keys = set(doc)
    if _REQUEST_ONLY & keys:
        return True
    if "workflow" in doc:
        # a template's `workflow:` is a mapping (its steps); anything else (a name, a
        # number, a list) is a request's, told what a request's must be
        return not isinstance(doc["workflow"], dict)
    # no key says: a file with no key of a template's, under no template's name, is
    # checked as the request it is more likely to be (`Workflow: x`)
    return not named_template and not (_TEMPLATE_ONLY & keys)


def _check_request(site: Site, req: Request, label: str) -> CheckedRequest:
    """Every check the site's daemon makes of ``req`` that needs neither the queued file
    nor its files (:func:`flowbatch.queue.check_request`, the intake's own), for a
    request the caller will submit: the queued file will be theirs."""
    from .queue import check_request, site_daemon_uid

    return check_request(site, req, uid=os.geteuid(), label=label, daemon_uid=site_daemon_uid(site))


def check_template_executor(site: Site, template: Template, file: str) -> None:
    """A template's ``executor:`` must be one of the site's executors: every request
    that names none would be rejected otherwise."""
    names = site.config.executor_names()
    if not template.executor or template.executor in names:
        return
    raise TemplateError(
        f"unknown executor {template.executor!r}: not an executor of this site",
        file=file,
        field="executor",
        expected="one of: " + ", ".join(names),
        hint="name one of them, or leave `executor` out for the site's default "
        f"({site.config.executor}); executors are declared in the site's flowbatch.yaml",
    )


def _check_template(
    template: Template, variables: dict[str, str], site: Site | None, file: str
) -> None:
    if site is not None:
        check_template_executor(site, template, file)
    _check_rendering(template, variables)


def _check_rendering(template: Template, variables: dict[str, str]) -> None:
    from .render import check_template

    check_template(template, variables)


def _describe(template: Template) -> str:
    steps, params = len(template.workflow.steps), len(template.parameters)
    return (
        f"{template.dialect} dialect, {params} parameter{'s' if params != 1 else ''}, "
        f"{steps} step{'s' if steps != 1 else ''}"
        + (", with a result schema" if template.results else "")
    )


# -- submitting ----------------------------------------------------------------------------
def _may_queue(site: Site) -> None:
    """This user may write the queue: else one line with what to ask for, as `doctor`
    says it (found by review: a bare PermissionError on a temporary file's name)."""
    from .accounts import user_name

    queue = site.layout.queue
    if os.access(queue, os.W_OK | os.X_OK):
        return
    try:
        owner = user_name(queue.stat().st_uid)
    except OSError:
        owner = "the site's owner"
    raise FlowbatchError(
        f"you ({user_name(os.geteuid())}) cannot queue requests on this site: {queue} is "
        "not writable for you",
        hint=f"ask its admin ({owner}, the daemon's user) to let you write queue/, e.g. "
        f"through a group of participants: chgrp GROUP {queue} && chmod 1770 {queue} "
        "(the sticky bit keeps each user's requests their own)",
    )


def submit(site: Site, request_path: Path, *, retry_failed: bool = False) -> str:
    """Queue a request together with the files its arguments name.

    ``retry_failed`` (a resubmitted sweep) asks intake to run failed points again: it is
    written into the queued request as ``retry_failed: true``.

    The files go first, into ``queue/<name>.files/`` (built under a dot-name, then renamed),
    and the request, its file paths rewritten to point there, last (written as a dot-file,
    then renamed): the daemon sees the request only once everything it needs is in place.
    """
    request_path = request_path.resolve()
    _may_queue(site)
    doc = yamlio.load_file(request_path, max_bytes=site.config.max_request_bytes, as_written=True)
    if retry_failed and isinstance(doc, dict):
        doc["retry_failed"] = True
    req = parse_request(doc, file=str(request_path))
    if not isinstance(req, Request):
        raise RequestError("use `flowbatch runs cancel` to cancel a run", file=str(request_path))
    # checked as intake will check it: every point as it will cast it (a sweep over a
    # required parameter is complete only with its sweep, and a swept file travels like
    # a fixed one), rendered for its executor, its targets
    checked = _check_request(site, req, str(request_path))
    files, swept = _request_files(
        request_path,
        checked.template,
        req,
        checked.points,
        max_bytes=site.config.max_input_bytes,
    )
    name = queue_request(site, request_path.stem, doc, files, swept=swept)
    _remove_own_bundles(site)
    return name


def _remove_own_bundles(site: Site) -> None:
    """The caller's own bundles of earlier submits whose requests are done: a daemon of
    a service user may not remove another user's folder from the (sticky) queue, so they
    stayed for ever (found by review). Never a reason for a submit to fail."""
    from .queue import Intake

    try:
        removed = Intake(site).remove_orphan_bundles(owner=os.geteuid())
    except Exception as exc:  # the request is queued: nothing else matters here
        log.debug("old bundles not removed: %s", exc)
        return
    if removed:
        log.info("removed the files of %d earlier requests of yours", len(removed))


def _request_files(
    request_path: Path,
    template: Template,
    req: Request,
    points: list[Point],
    *,
    writers: bool = False,
    max_bytes: int | None = None,
) -> tuple[dict[str, Path], dict[str, dict[int, Path]]]:
    """The files a request names, as intake will look for them (relative to the request
    file, inside its folder, regular files of at most ``max_bytes``; ``writers``: the
    request file's owner's, and that no one but their owner can write, as ``validate``
    asks, where ``submit`` sends copies): ``(fixed, swept)``,
    ``fixed`` mapping a parameter to its file, ``swept`` a swept file parameter to the
    file of each value of its list (by index). Each distinct path is checked once; a
    missing one raises with its field (``arguments.<name>`` or ``sweep.<name>[<i>]``)."""
    from .queue import check_source

    base = request_path.resolve().parent
    checked: dict[str, Path] = {}
    owner = request_path.stat().st_uid if writers else None

    def found(source: str, field: str) -> Path:
        src = checked.get(source)
        if src is None:
            # as intake opens it (no '..', no link on the way, a regular file)
            label = str(request_path)
            src = check_source(
                base,
                source,
                label=label,
                field=field,
                writers=writers,
                owner=owner,
                max_bytes=max_bytes,
            )
            checked[source] = src
        return src

    sweep = req.sweep or {}
    fixed: dict[str, Path] = {}
    for pname, value in points[0].arguments.items():  # the fixed part is every point's
        if pname not in sweep and isinstance(value, FileArg) and value.source:
            fixed[pname] = found(value.source, f"arguments.{pname}")
    swept: dict[str, dict[int, Path]] = {}
    for pname, values in sweep.items():
        param = template.parameter(pname)
        if param is None or param.dtype != "file":
            continue
        for i, raw in enumerate(values):  # every entry, also one that repeats another
            field = f"sweep.{pname}[{i}]"
            value = cast_value(param, raw, field=field)
            if value.source:
                swept.setdefault(pname, {})[i] = found(value.source, field)
    return fixed, swept


def _only_owner_writes(folder: Path) -> None:
    """A bundle's folders 0755 and files without group or other write, whatever the umask
    (002 makes them group writable, which intake refuses: the run uses them as its
    owner's; their read bits are the sources'); the top folder, 0700 while it was built,
    last."""
    for top, dirs, names in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(top, name), 0o755)
        for name in names:
            path = os.path.join(top, name)
            os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) & 0o755)
    folder.chmod(0o755)


def queue_request(
    site: Site,
    stem: str,
    doc: dict[str, Any],
    files: dict[str, Path],
    *,
    uid: int | None = None,
    swept: dict[str, dict[int, Path]] | None = None,
) -> str:
    """Write ``doc`` into the queue as ``<stem>-<random>.yaml``, with ``files`` (parameter
    name -> file to send) and ``swept`` (swept parameter -> index in its ``sweep:`` list
    -> file to send) copied into its bundle, each distinct file once, and the request's
    file paths rewritten to point there. ``uid`` (root only) hands both to that user:
    intake runs a request as its file's owner. Returns the queued name."""
    name = f"{_safe_stem(stem)}-{secrets.token_hex(3)}"
    queue = site.layout.queue
    queue.mkdir(parents=True, exist_ok=True)
    wanted: list[tuple[str, int | None, Path]] = [(p, None, src) for p, src in files.items()]
    for pname, by_index in (swept or {}).items():
        wanted += [(pname, i, src) for i, src in sorted(by_index.items())]
    if wanted:
        tmp = queue / f".{name}{BUNDLE_SUFFIX}.tmp"
        # the user's alone while it is built: a copy another user could open for writing
        # before its chmod (umask 002, a setgid queue) would stay writable for them
        tmp.mkdir(mode=0o700)
        try:
            copies: dict[Path, str] = {}  # file sent -> its path in the bundle
            for pname, index, src in wanted:
                rel = copies.get(src)
                if rel is None:
                    rel = f"{pname}/{src.name}"
                    n = 2
                    while not _free(tmp, rel):  # another file of the same name
                        rel = f"{pname}/{n}/{src.name}"
                        n += 1
                    dest = tmp / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dest)
                    # who may read it stays as the user set it (a 0600 submission stays
                    # theirs alone; it became 0644: found by review)
                    os.chmod(dest, (stat.S_IMODE(src.stat().st_mode) & 0o755) | 0o600)
                    copies[src] = rel
                source = f"{name}{BUNDLE_SUFFIX}/{rel}"
                if index is None:
                    _set_file_source(doc, pname, source)
                else:
                    values = doc["sweep"][pname]
                    values[index] = _with_source(values[index], source)
            _only_owner_writes(tmp)  # intake refuses inputs others could write
            _chown_tree(tmp, uid)
            os.rename(tmp, queue / f"{name}{BUNDLE_SUFFIX}")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    final = queue / f"{name}.yaml"
    atomic.write_text(queue / f".{name}.yaml.tmp", yamlio.dump(doc), fsync=True)
    _chown_tree(queue / f".{name}.yaml.tmp", uid)
    os.rename(queue / f".{name}.yaml.tmp", final)
    return final.name


def _free(folder: Path, rel: str) -> bool:
    """Whether ``folder/rel`` can be made: nothing there, and no file where one of its
    folders would go (a file named ``2`` beside the copies of other files)."""
    path = folder / rel
    if os.path.lexists(path):
        return False
    return all(
        p.is_dir() or not os.path.lexists(p)
        for p in path.parents
        if p != folder and p.is_relative_to(folder)
    )


def _chown_tree(path: Path, uid: int | None) -> None:
    """Give ``path`` (a file, or a folder and its content) to ``uid`` when root asks to."""
    if uid is None or os.geteuid() != 0 or uid == 0:
        return
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for item in paths:
        os.chown(item, uid, -1, follow_symlinks=False)


def _safe_stem(stem: str) -> str:
    clean = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem).strip("._")
    return clean[:64] or "request"


def _set_file_source(doc: dict[str, Any], pname: str, source: str) -> None:
    """Point the fixed argument ``pname`` of ``doc`` at ``source``, in whichever form
    it is written (mapping or list of arguments; see :func:`_with_source`)."""
    args = doc.get("arguments")
    if isinstance(args, dict):
        args[pname] = _with_source(args[pname], source)
    elif isinstance(args, list):
        for item in args:
            if isinstance(item, dict) and item.get("name") == pname:
                item["value"] = _with_source(item.get("value"), source)


def _with_source(value: Any, source: str) -> Any:
    """A file argument's value as written in a request, its path replaced by ``source``:
    a bare path, ``{source|path|file: ..., target: ...}``, or flowServ's
    ``{type: $file, value: {fileId, targetPath}}``; the target stays as it was."""
    if isinstance(value, dict) and value.get("type") == "$file":
        if isinstance(value.get("value"), dict):
            value["value"]["fileId"] = source
        return value
    if isinstance(value, dict):
        for key in ("source", "path", "file"):
            if key in value:
                value[key] = source
        return value
    return source


# -- runs ------------------------------------------------------------------------------------
def _row_dict(row: RunRow) -> dict[str, Any]:
    return {f: getattr(row, f) for f in LIST_FIELDS}


def list_runs(
    site: Site,
    *,
    workflow: str | None = None,
    state: str | None = None,
    group: str | None = None,
    user: str | None = None,
    request: str | None = None,
    last: int | None = None,
) -> list[dict[str, Any]]:
    """Runs of the index, oldest first; ``request``: of that queued request (the name
    ``submit`` printed); ``last``: only the ``last`` newest."""
    st = parse_state(state).value if state else None
    site.store  # noqa: B018 - opens the index
    if workflow:
        known_workflow(site, workflow)
    query = run_rows(workflow, st, group)
    if user:
        query = query.where(RunRow.owner == user)
    if request:
        query = query.where(RunRow.request == request)
    if last:
        newest = query.order_by(RunRow.created_at.desc(), RunRow.id.desc()).limit(last)
        return [_row_dict(r) for r in reversed(list(newest))]
    return [_row_dict(r) for r in query]


def known_workflow(site: Site, workflow: str) -> None:
    """A workflow named to filter by must be one this site has (installed, or with runs
    in the index): a mistyped name listed nothing and said nothing."""
    if workflow in site.templates.list_ids():
        return
    if RunRow.select(RunRow.id).where(RunRow.workflow == workflow).limit(1).exists():
        return
    raise NotFoundError(
        f"unknown workflow {workflow!r}",
        hint="see `flowbatch workflows list`",
    )


def show_run(site: Site, run_id: str) -> dict[str, Any]:
    run = site.store.load(run_id)
    out = {f: getattr(run, f) for f in LIST_FIELDS}
    out["state"] = run.state.value
    out.update(
        {
            "arguments": run.arguments,
            "messages": run.messages,
            "results": run.results,
            "files": run.files,
            "steps": run.steps,
            "run_dir": str(site.store.run_dir(run)),
            "handle": run.handle,
            "time_limit": run.time_limit,
            "history": run.history,
            "owner_uid": run.owner_uid,
            # why a PENDING run waits (a fair-share cap), see flowbatch.fairshare
            "waiting": run.waiting,
        }
    )
    return out


def request_cancel(site: Site, run_id: str, reason: str | None) -> str:
    """Drop a ``cancel:`` request into the queue (the daemon applies it; owner checked)."""
    run = site.store.load(run_id)
    if not run.state.active:
        raise FlowbatchError(
            f"run {run_id} is {run.state.value}, not active",
            hint="only PENDING or RUNNING runs can be cancelled",
        )
    name = f"{CANCEL_PREFIX}{run_id}-{secrets.token_hex(3)}.yaml"
    doc: dict[str, Any] = {"cancel": run_id}
    if reason:
        doc["reason"] = reason
    tmp = site.layout.queue / f".{name}.tmp"
    atomic.write_text(tmp, yamlio.dump(doc), fsync=False)
    os.rename(tmp, site.layout.queue / name)
    return name


# -- ranking and reports -------------------------------------------------------------------
def ranking(
    site: Site,
    workflow: str,
    *,
    include_all: bool = False,
    version: str | None = None,
    all_versions: bool = False,
) -> dict[str, Any]:
    """The leaderboard of one version of ``workflow`` (default: the current one), or of
    all versions together (``all_versions``: the current version's result schema; each
    entry's ``run.version`` says where it comes from). ``version`` is ``ranking_json``'s
    shape plus ``version`` (the version shown, or ``null`` for all) and ``current``."""
    if version and all_versions:
        raise RequestError("give either a version or all versions, not both")
    # an old version is ranked by its own result schema (the fix may have changed it)
    template, shown = site.templates.load(workflow, None if all_versions else version)
    if template.results is None:
        raise NotFoundError(
            f"workflow {workflow!r} has no result schema, so no ranking",
            hint="add a `results:` block to the template",
        )
    site.store  # noqa: B018 - opens the index
    with paused_gc():  # bulk, acyclic: see flowbatch.gcpause
        if include_all:  # every run: the whole ranking in Python
            inputs = rank_inputs(workflow, shown, all_versions=all_versions)
            entries = rank(inputs, template.results, include_all=True)
        else:  # the best of each group: the index picks the candidates
            entries = leaderboard_views(
                workflow, template.results, shown=0, version=shown, all_versions=all_versions
            ).best
        board = ranking_json(workflow, template.results, entries)
    board["version"] = None if all_versions else shown
    board["current"] = site.templates.meta(workflow)["current"]
    return board


def update_reports(site: Site, workflows: set[str] | list[str], *, run_pages: bool = False) -> None:
    """Rewrite the leaderboard files of each workflow and ``results/index.html`` (the
    daemon: once per tick, changed workflows only); see :mod:`flowbatch.publish`."""
    from .publish import update_reports as publish

    publish(site, workflows, run_pages=run_pages)


def report(
    site: Site, workflow: str | None = None, *, progress: Callable[[str], None] | None = None
) -> list[str]:
    """Regenerate every report file (leaderboards, run pages, the front page) of one
    workflow or of all; returns the workflows done."""
    from .publish import update_reports as publish

    if workflow is not None:
        site.templates.meta(workflow)  # NotFoundError for an unknown workflow
    workflows = [workflow] if workflow else site.templates.list_ids()
    publish(site, workflows, run_pages=True, progress=progress)
    return workflows


# -- index -----------------------------------------------------------------------------------
def _readable_runs(store: Store, dirs: Iterable[Path]) -> Iterator[RunRecord]:
    """The run records of ``dirs``; one that cannot be read is logged and left out (a
    broken or tampered ``run.json`` must not stop the index of every other run)."""
    for run_dir in dirs:
        try:
            yield store.load_dir(run_dir)
        except (OSError, FlowbatchError) as exc:
            log.error("reindex: %s left out: %s", run_dir, exc)


def reindex(site: Site, *, adopt: bool = False) -> int:
    """Rebuild the index from the tree alone (a corrupt index file is replaced).

    An index that records another site (a copied site's ``database:`` naming the first
    one's: :mod:`flowbatch.store.siteid`) is refused, as every command refuses it, unless
    ``adopt``: it is then made this site's and rebuilt, the other site's rows gone.

    Never under a running daemon: it would go on writing into the index file deleted
    here (its runs' changes lost from the new one), or, on a shared site, into the
    tables being emptied. The site's daemon lock of this host is held for the whole
    rebuild, so no daemon starts meanwhile either; on a shared site the other hosts'
    locks are looked at too (as far as the file system's locks reach across hosts)."""
    from .daemon import Busy, SiteLock, role_of

    # a lock file root makes is the site owner's: their daemon must be able to open it
    lock = SiteLock(site.lock_path, site.host, role="reindex", owner=site.layout.owner)
    try:
        lock.acquire()
    except Busy as busy:
        raise _daemon_running(site, str(busy), cancel=role_of(str(busy)) == "cancel") from None
    try:
        other = other_daemon(site.root, site.host) if site.shared else None  # another host's
        if other is not None:
            raise _daemon_running(site, other)
        with tree_change(site.root, "reindex", rebuild=True, owner=site.layout.owner):
            return _reindex(site, adopt=adopt)
    finally:
        lock.release()


def _daemon_running(site: Site, holder: str, *, cancel: bool = False) -> FlowbatchError:
    if cancel:
        return FlowbatchError(
            f"a `flowbatch runs cancel` holds the lock of {site.root} while it applies a "
            f"cancel ({holder})",
            hint="run `flowbatch reindex` again in a moment",
        )
    return FlowbatchError(
        f"a flowbatch daemon is serving {site.root} ({holder}): reindex would replace the "
        "index under it",
        hint="stop the daemon first (systemctl stop flowbatch, or kill -TERM its pid; a "
        "cron site: wait for its tick to end), run `flowbatch reindex`, then start it again",
    )


def _reindex(site: Site, *, adopt: bool = False) -> int:
    """The index built afresh from the tree. The site's SQLite index is built in a file of
    its own (``index.db.new``) and renamed over the old one when whole: a reindex killed
    half-way leaves the old index as it was (it left an empty one: every list and
    leaderboard empty until a daemon caught up). A server's index is cleared and filled
    in its tables."""
    from .store import index as idx

    path = site.layout.index_db
    site.close()
    site.__dict__.pop("store", None)
    new = path.with_name(path.name + ".new")
    url = site.config.database or f"sqlite:///{new}"
    if not site.config.database:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{new}{suffix}").unlink(missing_ok=True)
    store = site.__dict__["store"] = Store(site.layout, url, check_index=False, adopt_index=adopt)
    idx.clear(store.db)
    for wf_id in site.templates.list_ids():
        index_workflow(site, wf_id)
    dirs = list(store.iter_run_dirs())  # a count first: the progress line shows a total
    runs = _readable_runs(store, track(dirs, "reindex"))
    count = store.index_many(runs)
    if not site.config.database:
        store.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # all of it in the file
        site.close()
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        os.replace(new, path)
        Path(f"{new}-wal").unlink(missing_ok=True)
        Path(f"{new}-shm").unlink(missing_ok=True)
        site.__dict__["store"] = Store(site.layout, None, check_index=False)
    update_reports(site, site.templates.list_ids())
    return count
