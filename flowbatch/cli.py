"""The ``flowbatch`` command: a thin click layer over :mod:`flowbatch.api`.

Errors from flowbatch are caught once, here, and printed as one line with a non-zero exit
code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import __version__
from .errors import FlowbatchError
from .text import for_terminal, one_line

if TYPE_CHECKING:
    from .site import Site

# The commands import flowbatch.api, the site and the daemon where they run: `flowbatch
# --help`, `--version` and a mistyped command load click alone (0.08 s against 0.37 s
# here, see bench/NOTES.md), and a command loads only what it uses.

F = TypeVar("F", bound=Callable[..., Any])


def shown(text: str) -> str:
    """``text`` as a terminal may show it (:func:`flowbatch.text.for_terminal`). JSON
    output escapes control characters itself; ``runs logs`` writes a run's logs as they
    are, as ``cat`` would."""
    return for_terminal(text)


def echo(message: Any = None, *, err: bool = False, nl: bool = True) -> None:
    """``click.echo`` of :func:`shown` text: every line the commands print goes here."""
    click.echo(None if message is None else shown(str(message)), err=err, nl=nl)


class Context:
    def __init__(self, site_dir: str, debug: bool) -> None:
        self.site_dir = site_dir
        self.debug = debug
        self._site: Site | None = None

    @property
    def site(self) -> Site:
        if self._site is None:
            from .site import Site

            root = Path(self.site_dir)
            if not (root / "flowbatch.yaml").is_file() and not (root / "queue").is_dir():
                # a mistyped --site (a cron line's) must not quietly make a new empty site
                raise FlowbatchError(
                    f"no flowbatch site at {root.resolve()} (no flowbatch.yaml, no queue/)",
                    hint=f"create one: flowbatch init {self.site_dir}; or give the site's "
                    "folder with --site or FLOWBATCH_SITE",
                )
            self._site = Site(self.site_dir)
        return self._site


pass_ctx = click.make_pass_decorator(Context)


def needs_write(site: Site, command: str, *paths: Path, as_owner: bool = True) -> None:
    """Refuse at once, in one line, a command that writes ``paths`` and the index when
    this user may not (a participant on the daemon's site): it would otherwise fail
    half-way, a file at a time, or with advice meant for the site's owner.

    Root running such a command on a site another user owns (a service user's) runs it
    as that user (``as_owner``; :func:`become_site_owner`): what it writes stays theirs.
    Root's index, template versions and trash were root's, which the site's daemon then
    could not write (found by review: a root ``reindex`` kept the service's daemon from
    starting)."""
    from .store.index import may_write, owner_of, sqlite_path, writable

    if as_owner:
        become_site_owner(site)
    for path in paths:
        if not writable(path):
            raise _no_write_access(command, path, owner_of(path), site)
    # the index as the store would open it (read-only for such a user), not opened here:
    # the daemon opens it once it holds the site's lock
    index = sqlite_path(site.config.database, site.layout.index_db)
    if index is not None and not may_write(index):
        raise _no_write_access(command, index, owner_of(index), site)


#: the user who ran the command, for its permission checks (root's, after the command
#: became the site's owner)
_CALLER: list[int] = []
#: the ``flowbatch`` program runs (not ``main`` called in a test's process, which must
#: never change its user)
_PROGRAM = [False]


def caller_uid() -> int:
    return _CALLER[0] if _CALLER else os.geteuid()


def become_site_owner(site: Site) -> None:
    """Root on a site another user owns (the owner of the site's folder): become that
    user for good, with their groups, before anything is written. Nothing for any other
    caller, or on a site of root's."""
    from .accounts import identity

    if os.geteuid() != 0 or not _PROGRAM[0]:
        return
    uid = site.root.stat().st_uid
    if uid == 0:
        return
    who = identity(uid)
    gid = who.gid if who.name is not None else site.root.stat().st_gid
    _CALLER[:] = [0]
    os.setgroups(list(who.groups) or [gid])
    os.setgid(gid)
    os.setuid(uid)


def _no_write_access(command: str, path: Path, owner: str, site: Site) -> FlowbatchError:
    from .accounts import user_name

    try:
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:  # no user could write there (found by review: "run it as root", to root)
        return FlowbatchError(
            f"`flowbatch {command}` needs write access to {path}, on a file system mounted "
            "read-only",
            hint="mount it read-write again (`findmnt -T PATH` names the mount)",
        )
    try:
        site_owner = user_name(site.root.stat().st_uid)
    except OSError:
        site_owner = owner
    if owner != site_owner and path.name.startswith("index.db"):
        # a file of the site another user left (a command run as root by an older
        # flowbatch): the site's own user must get it back
        return FlowbatchError(
            f"`flowbatch {command}` needs write access to {path}, which belongs to {owner}, "
            f"not to the site's owner ({site_owner})",
            hint=f"give it back: chown {site_owner}: {path} (as root)",
        )
    return FlowbatchError(
        f"`flowbatch {command}` needs write access to {path}: run it as the site's owner ({owner})"
    )


def _index_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the index database's own error (peewee's or sqlite3's
    DatabaseError), told apart without importing peewee for every command."""
    names = {cls.__name__ for cls in type(exc).__mro__ if cls.__module__ in ("peewee", "sqlite3")}
    # an integrity or programming error is flowbatch's own bug: its traceback is kept
    # (found by the re-review)
    return "DatabaseError" in names and not names & _CODE_ERRORS


_CODE_ERRORS = frozenset(
    {"IntegrityError", "ProgrammingError", "NotSupportedError", "DataError", "InterfaceError"}
)


class FlowbatchGroup(click.Group):
    """Turns FlowbatchError into one clear line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FlowbatchError as exc:
            obj = ctx.find_object(Context)
            if obj and obj.debug:
                raise
            raise click.ClickException(shown(exc.summary())) from None
        except BrokenPipeError:
            # the reader went away (`flowbatch runs list | head`): quietly, as a program
            # killed by SIGPIPE; stdout pointed at /dev/null so its final flush is silent
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(141)
        except (OSError, ValueError) as exc:
            obj = ctx.find_object(Context)
            if obj and obj.debug:
                raise
            message = f"{type(exc).__name__}: {exc}"
            if _CALLER and isinstance(exc, PermissionError):
                from .accounts import user_name

                message += (
                    f" (root runs this command as the site's owner, {user_name(os.geteuid())}:"
                    " give them access, or put the file where they can read it)"
                )
            raise click.ClickException(shown(message)) from None
        except Exception as exc:
            if not _index_error(exc):
                raise
            obj = ctx.find_object(Context)
            if obj and obj.debug:
                raise
            # the index's own error, not a flowbatch bug: one line and what to do (found
            # by review: a damaged index.db printed peewee's traceback, and the daemon
            # could not start)
            text = one_line(str(exc))[:300]
            damaged = any(w in text for w in ("malformed", "not a database", "disk image"))
            hint = (
                "it is damaged: stop the daemon, then `flowbatch reindex` rebuilds it from "
                "the results tree"
                if damaged
                else "`flowbatch doctor` checks it"
            )
            raise click.ClickException(shown(f"the index database: {text} ({hint})")) from None


def _echo_json(value: Any) -> None:
    echo(json.dumps(value, indent=2, default=str))


def _table(rows: list[dict[str, Any]], columns: list[str], titles: list[str] | None = None) -> None:
    """``rows`` as a text table of ``columns`` (keys of each row), headed by ``titles``
    (default: the keys)."""
    if not rows:
        echo("(none)")
        return
    titles = titles or columns
    # one line a row: a cell's own newlines and tabs (a file's name) escaped too
    cells = [[("" if r.get(c) is None else one_line(str(r.get(c)))) for c in columns] for r in rows]
    widths = [max(len(t), *(len(row[i]) for row in cells)) for i, t in enumerate(titles)]
    heads = [t.upper() if t.isidentifier() else t for t in titles]  # labels stay as written
    echo("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip())
    for row in cells:
        echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


@click.group(cls=FlowbatchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--site",
    "site_dir",
    envvar="FLOWBATCH_SITE",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Site folder (env FLOWBATCH_SITE).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(__version__, prog_name="flowbatch")
@click.pass_context
def main(ctx: click.Context, site_dir: str, debug: bool) -> None:
    """flowbatch: drop YAML run requests into a queue folder; a daemon validates them, runs
    the workflow template they name, and writes states, logs, results and a leaderboard
    into the site's results tree."""
    ctx.obj = Context(site_dir, debug)


def wait_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--wait`` and ``--timeout`` of the commands that queue a request."""
    fn = click.option(
        "--timeout",
        type=click.FloatRange(min=0),
        help="With --wait: give up waiting after this many seconds (exit 124).",
    )(fn)
    return click.option(
        "--wait",
        is_flag=True,
        help="Wait until its runs have ended; exit 0 when every one succeeded.",
    )(fn)


def wait_for_request(
    site: Site,
    name: str,
    timeout: float | None,
    *,
    since: float | None = None,
    failed_skips: int = 0,
) -> None:
    """Wait for the runs of the queued request ``name`` (queued at ``since``, seconds
    since the epoch, where known); print them; exit with the wait's code (see
    :attr:`flowbatch.waiting.Outcome.exit_code`). ``failed_skips``: points of the
    request skipped because their runs had failed (a resubmitted sweep without
    --retry-failed): no success (found by review: all skipped exited 0)."""
    from .waiting import wait_request

    outcome = wait_request(site, name, timeout=timeout, since=since, note=_note)
    if outcome.rejected is not None:
        info = outcome.rejected
        raise FlowbatchError(
            f"rejected: {info.get('reason', 'see its error file')}",
            file=info.get("file"),
            field=info.get("field"),
            expected=info.get("expected"),
            hint=info.get("hint") or f"see {site.layout.rejected}",
        )
    if outcome.unknown:
        raise FlowbatchError(
            f"no request named {name!r}: it is not in the queue, not being taken in, not "
            "rejected, and no run came from it",
            hint="give the name `submit` printed (see `flowbatch runs list --json`, key "
            "`request`, or ls the queue)",
        )
    code = why = None
    if failed_skips and not outcome.timed_out and outcome.exit_code == 0:
        code = 1
        why = (
            f"{failed_skips} point(s) skipped because their runs had failed or were "
            "cancelled: submit with --retry-failed to run them again"
        )
    what = f"{name} made no run (every point had run already)"
    _end_wait(outcome, timeout, what=what, code=code, why=why)


def _note(text: str) -> None:
    echo(text, err=True)


def _end_wait(
    outcome: Any,
    timeout: float | None,
    *,
    what: str,
    code: int | None = None,
    why: str | None = None,
) -> None:
    if outcome.runs:
        _table(
            [
                {
                    **r,
                    "result": _short_result(r),
                }
                for r in outcome.runs
            ],
            ["id", "workflow", "state", "result"],
        )
    elif not outcome.timed_out:  # a wait cut short has not seen the request taken in
        echo(what)
    if outcome.timed_out:
        active = [r["id"] for r in outcome.runs if r["state"] in ("PENDING", "RUNNING")]
        echo(
            f"gave up waiting after {timeout:g} s"
            + (f"; still active: {', '.join(active)}" if active else "; no run made yet"),
            err=True,
        )
    if why:
        echo(why, err=True)
    sys.exit(outcome.exit_code if code is None else code)


def _short_result(run: dict[str, Any]) -> str:
    """A run's results (name=value), or for a run that did not succeed its first message."""
    if run["state"] == "SUCCESS" and run.get("results"):
        text = " ".join(f"{k}={v}" for k, v in run["results"].items())
    elif run["state"] != "SUCCESS" and run.get("messages"):
        from .waiting import first_line

        text = first_line(run["messages"][0])
    else:
        text = ""
    return text if len(text) <= 80 else text[:77] + "..."


@main.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@pass_ctx
def init(obj: Context, directory: str | None) -> None:
    """Create a site: flowbatch.yaml, queue/, results/, templates/ (default: --site)."""
    from .site import Site

    site = Site.init(directory or obj.site_dir)
    echo(f"site ready at {site.root}")


@main.command()
@click.argument("source", type=click.Path(exists=True))
@click.option("--id", "workflow_id", help="Workflow id (default: from the name).")
@click.option("--name", help="Display name (default: the manifest's, else the folder's).")
@click.option(
    "--specfile",
    help="Template file: as given (from the current folder), else inside SOURCE "
    "(default: manifest, then benchmark|workflow|template.yaml/.yml/.json).",
)
@pass_ctx
def install(
    obj: Context, source: str, workflow_id: str | None, name: str | None, specfile: str | None
) -> None:
    """Install a workflow template from a folder (with or without a manifest) or a file."""
    from . import api

    if workflow_id == "":
        raise click.BadParameter("an empty id: give one, or leave --id out", param_hint="--id")
    needs_write(obj.site, "install", obj.site.layout.templates)
    inst = api.install(
        obj.site, Path(source), workflow_id=workflow_id, name=name, specfile=specfile
    )
    if inst.created:
        what = "installed"
    elif inst.previous not in (None, inst.version):
        what = "already installed, current again"  # a switch back (found by review)
    else:
        what = "already installed"
    if not inst.created and inst.shown_changed:
        what += " (its name, description or instructions updated)"
    echo(f"{what}: workflow {inst.id} ({inst.name}), version {inst.version}")


@main.command()
@click.argument("path", type=click.Path(exists=True))
@pass_ctx
def validate(obj: Context, path: str) -> None:
    """Check a template (file or folder) or a request without installing or submitting it."""
    from . import api

    site = obj.site if (Path(obj.site_dir) / "flowbatch.yaml").exists() else None
    echo(api.validate(Path(path), site))


@main.command()
@click.argument("request", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--retry-failed",
    is_flag=True,
    help="A resubmitted sweep: run the points that failed again (default: skip them).",
)
@wait_options
@pass_ctx
def submit(
    obj: Context, request: str, retry_failed: bool, wait: bool, timeout: float | None
) -> None:
    """Queue REQUEST.yaml with the files its arguments name (atomically); print its name.

    A sweep submitted again skips the points that already succeeded (or are running)
    with the same arguments on the same template version for the same group, and says
    which. With --wait, wait for its runs to end (as sbatch --wait): exit 0 when they all
    succeeded, 1 when one failed or was cancelled (or a point was skipped because its runs
    had) or the request was rejected, 124 when --timeout passed first (the runs go on)."""
    from . import api
    from .cli_lifecycle import echo_resume_plan

    failed = echo_resume_plan(obj.site, Path(request), retry_failed)
    queued_at = time.time()
    name = api.submit(obj.site, Path(request), retry_failed=retry_failed)
    echo(name)
    if wait:
        wait_for_request(obj.site, name, timeout, since=queued_at, failed_skips=failed)


@main.command()
@click.option("--once", is_flag=True, help="One tick, then exit (for cron).")
@click.option(
    "--until-idle",
    is_flag=True,
    help="Run until the queue is empty and no run is active (exit 1, saying what to mend, "
    "when for 60 s nothing is left but what waits on a fault: index writes, a full disk, "
    "requests whose place fails). The queue is listed at each tick, without a watcher.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object a line on stderr (for journald or a log collector).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@pass_ctx
def daemon(obj: Context, once: bool, until_idle: bool, log_format: str, verbose: bool) -> None:
    """Watch the queue and run requests (one daemon per site: another exits 0 while a
    daemon serves, 1 while `flowbatch reindex` holds the site)."""
    if once and until_idle:
        raise click.UsageError("give --once (one tick) or --until-idle, not both")
    from .logs import setup_logging

    # first: every line this command writes is in the chosen format (a cron log of JSON
    # lines had "another flowbatch daemon already serves" and "Error: ..." as plain text:
    # found by review)
    setup_logging(log_format, logging.DEBUG if verbose else logging.INFO)
    try:
        _serve(obj, once, until_idle, log_format == "json")
    except FlowbatchError as exc:
        if log_format != "json" or obj.debug:
            raise
        logging.getLogger("flowbatch.daemon").error("%s", exc.summary())
        sys.exit(1)


def _serve(obj: Context, once: bool, until_idle: bool, json_lines: bool) -> None:
    needs_write(obj.site, "daemon", obj.site.root, obj.site.layout.results, as_owner=False)
    import gc

    from .gcpause import paused_gc

    # The daemon's modules make some 40,000 objects that live as long as the process:
    # imported with the cyclic collector paused, then frozen (kept out of every later
    # collection), the collector's time in a 500-run burst fell from about 25 ms to 10
    # (a full collection over them costs 30 ms; a few hundred objects of garbage cycles
    # the imports leave are kept, once).
    with paused_gc():
        from .daemon import run_daemon
    gc.freeze()
    message = run_daemon(obj.site, once=once, until_idle=until_idle)
    if message and json_lines:
        logging.getLogger("flowbatch.daemon").info("%s", message)
    elif message:
        echo(message)
    obj.site.close()  # the index committed and closed: nothing is left to tear down
    _ENDED_CLEANLY[0] = True


@main.group()
def runs() -> None:
    """Look at runs (list, show, logs, files, wait), and cancel, rerun, archive or delete
    them."""


@runs.command("list")
@click.option("--workflow", "-w", help="Only runs of this workflow.")
@click.option("--state", "-s", help="PENDING, RUNNING, SUCCESS, ERROR or CANCELED.")
@click.option("--group", "-g", help="Only runs of this group (a request's `group:`).")
@click.option("--user", "-u", help="Runs owned by this user.")
@click.option("--request", "-r", help="Runs of this queued request (the name submit printed).")
@click.option(
    "--last", "-n", type=click.IntRange(min=1), help="Only the N newest (still oldest first)."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def runs_list(
    obj: Context,
    workflow: str | None,
    state: str | None,
    group: str | None,
    user: str | None,
    request: str | None,
    last: int | None,
    as_json: bool,
) -> None:
    """List runs, oldest first."""
    from . import api

    rows = api.list_runs(
        obj.site,
        workflow=workflow,
        state=state,
        group=group,
        user=user,
        request=request,
        last=last,
    )
    if as_json:
        _echo_json(rows)
    else:
        _table(rows, ["id", "workflow", "group", "name", "state", "created_at"])


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def runs_show(obj: Context, run_id: str, as_json: bool) -> None:
    """Show a run: state, times, arguments, messages, steps, results, files."""
    from . import api

    info = api.show_run(obj.site, run_id)
    if as_json:
        _echo_json(info)
        return
    for key in (
        "id",
        "workflow",
        "version",
        "group",
        "name",
        "owner",
        "state",
        "executor",
        "created_at",
        "started_at",
        "finished_at",
        "run_dir",
    ):
        echo(f"{key + ':':13}{'' if info[key] is None else info[key]}")
    if info.get("waiting") and info["state"] == "PENDING":
        echo(f"{'waiting:':13}{info['waiting']}")  # a fair-share cap
    handle = info.get("handle") or {}
    if handle.get("status") and info["state"] in ("PENDING", "RUNNING"):
        # e.g. Slurm's PENDING (Priority): a run PENDING in the scheduler's queue; an SSH
        # run's word (its wrapper killed from outside while its script goes on)
        if handle.get("job_id"):
            echo(f"{'scheduler:':13}job {handle['job_id']}: {handle['status']}")
        else:
            echo(f"{'status:':13}{handle['status']}")
    echo("arguments:")
    for name, value in info["arguments"].items():
        echo(f"  {name}: {json.dumps(value)}")
    if info["steps"]:
        echo("steps:")
        for s in info["steps"]:
            code = "-" if s["exit_code"] is None else s["exit_code"]
            dur = "" if s["duration"] is None else f"  {s['duration']:.3f}s"
            echo(f"  {s['index']}. {s['name']}  exit {code}{dur}  {s['stderr']}")
    if info["results"]:
        echo("results:")
        for name, value in info["results"].items():
            echo(f"  {name}: {value}")
    if info["messages"]:
        echo("messages:")
        for m in info["messages"]:
            echo("  " + m.replace("\n", "\n  "))


@runs.command("cancel")
@click.argument("run_id")
@click.option("--reason", help="Recorded as the run's message.")
@click.option("--wait", default=15.0, show_default=True, help="Seconds to wait for the daemon.")
@pass_ctx
def runs_cancel(obj: Context, run_id: str, reason: str | None, wait: float) -> None:
    """Cancel a PENDING or RUNNING run (its whole process tree); owner or root only."""
    from . import api
    from .daemon import Busy, Daemon, cancel_run, check_cancel, wait_terminal

    site = obj.site
    if _applies_cancel_itself(site, run_id):
        daemon = Daemon(site, role="cancel")
        try:
            daemon.start(serve=False)
        except Busy:
            daemon = None  # type: ignore[assignment]
        if daemon is not None:
            try:
                cancel_run(site, daemon.runner, run_id, os.getuid(), reason)
                if daemon.runner.changed_workflows:
                    daemon.write_reports()  # no tick: nothing else is taken in or started
            finally:
                daemon.stop()
            echo(_cancel_outcome(run_id, site.store.load(run_id).state.value))
            return
    # the daemon's own checks (owner or root, an active run), as it will make them: the
    # uid is the one that owns the queued request file
    check_cancel(site.store.load(run_id), os.geteuid())
    name = api.request_cancel(site, run_id, reason)
    state = wait_terminal(site, run_id, wait)
    if state in ("PENDING", "RUNNING"):
        echo(
            f"{run_id}: {state} (cancel queued as {name}: the daemon applies it, a cron-run "
            "site at its next tick)"
        )
    else:
        echo(_cancel_outcome(run_id, state))


def _cancel_outcome(run_id: str, state: str) -> str:
    if state == "CANCELED":
        return f"{run_id}: CANCELED"
    return f"{run_id}: {state} (it had ended before the cancel)"


def _applies_cancel_itself(site: Site, run_id: str) -> bool:
    """Whether ``runs cancel`` applies the cancel in this process rather than queueing it:
    only with no daemon serving the site on this host, by the site's own user (the owner
    of ``results/``, whose files the daemon trusts: a record root wrote on a service
    user's site would be refused by that site's daemon), and for a run this host serves
    (on a shared site another host's daemon runs it: only that daemon may end it)."""
    from .daemon import lock_holder

    try:
        owner = site.layout.results.stat().st_uid
    except OSError:
        return False  # no results tree to write into: the daemon's to make
    if lock_holder(site) is not None or os.geteuid() != owner:
        return False
    if not site.shared:
        return True
    return site.store.load(run_id).host in (None, site.host)


@main.command()
@click.argument("workflow")
@click.option(
    "--all", "include_all", is_flag=True, help="Every successful run, not only the best per group."
)
@click.option("--version", "version", help="Rank the runs of this template version.")
@click.option("--all-versions", is_flag=True, help="Rank the runs of every version together.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def ranking(
    obj: Context,
    workflow: str,
    include_all: bool,
    version: str | None,
    all_versions: bool,
    as_json: bool,
) -> None:
    """Show the leaderboard of WORKFLOW: the runs of its current template version
    unless --version or --all-versions says otherwise."""
    from . import api

    board = api.ranking(
        obj.site, workflow, include_all=include_all, version=version, all_versions=all_versions
    )
    if as_json:
        _echo_json(board)
        return
    # the result columns keyed apart from the fixed ones (and from each other): a result
    # labelled "version" (or "rank", "group", "run") must not take their cells
    fixed = ["rank", "group", "id", "run", "version"]
    keys = [f"result {i}" for i in range(len(board["schema"]))]
    rows: list[dict[str, Any]] = []
    for entry in board["ranking"]:
        row: dict[str, Any] = {
            "rank": entry["rank"],
            "group": entry["group"],
            "id": entry["run"]["id"],  # what `runs show` takes (names may repeat)
            "run": entry["run"]["name"] or "",
            "version": entry["run"]["version"],
        }
        for key, col in zip(keys, board["schema"], strict=True):
            value = entry["results"].get(col["name"])
            row[key] = f"{value:.4g}" if isinstance(value, float) else value
        rows.append(row)
    shown = board["version"] or "all versions"
    echo(f"version: {shown}" + (" (current)" if board["version"] == board["current"] else ""))
    _table(rows, fixed + keys, fixed + [c["label"] for c in board["schema"]])


@main.group()
def workflows() -> None:
    """Installed workflow templates."""


@workflows.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def workflows_list(obj: Context, as_json: bool) -> None:
    """List installed workflows with their current version."""
    from . import api

    rows = api.list_workflows(obj.site)
    if as_json:
        _echo_json(rows)
    else:
        _table(rows, ["id", "name", "version", "versions", "runs_current", "runs"])


@main.command()
@click.option(
    "--adopt",
    is_flag=True,
    help="Make the index this site's even where it records another site (a copied "
    "site's `database:` naming the first one's, whose site is gone or has an index of "
    "its own now): the other site's runs and claims of requests leave it.",
)
@pass_ctx
def reindex(obj: Context, adopt: bool) -> None:
    """Rebuild the index database from the results tree alone (with no daemon running:
    it refuses while one serves the site, and holds the site's lock meanwhile)."""
    from . import api

    needs_write(obj.site, "reindex", obj.site.root)
    count = api.reindex(obj.site, adopt=adopt)
    echo(f"indexed {count} runs")


@main.command()
@click.argument("workflow", required=False)
@pass_ctx
def report(obj: Context, workflow: str | None) -> None:
    """Regenerate the report pages: leaderboards, run pages, results/index.html."""
    from . import api
    from .progress import Progress

    needs_write(obj.site, "report", obj.site.layout.results)
    # The progress line draws only on a terminal: a cron job's mail stays one line.
    with Progress("writing reports") as bar:
        done = api.report(obj.site, workflow, progress=lambda name: bar.advance())
    index = obj.site.layout.results / "index.html"
    plural = "s" if len(done) != 1 else ""
    echo(f"reports of {len(done)} workflow{plural} written: {index}")


# config, schema, doctor: admin commands kept in their own module (registers on import)
# and rerun, delete, files, archive, cleanup, uninstall, workflows show (issue 9)
from . import cli_admin, cli_lifecycle  # noqa: E402, F401


@main.group()
def hosts() -> None:
    """SSH hosts of the site config."""


@hosts.command("check")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def hosts_check(obj: Context, name: str | None, as_json: bool) -> None:
    """Connect to NAME (default: every host), verify its host key, check that the remote
    root is writable, and report the round-trip time. Exits 1 when a check fails."""
    from .executors.ssh import check_hosts

    report = check_hosts(obj.site.config, name)
    if as_json:
        _echo_json(report)
    else:
        for host, info in report.items():
            if info["ok"]:
                echo(
                    f"{host}: ok {info['login']}"
                    + (f" via {info['via']}" if info["via"] else "")
                    + f", host key {info['host_key']}, remote root {info['remote_root']} "
                    f"writable, connect {info['connect_ms']} ms, "
                    f"round trip {info['round_trip_ms']} ms"
                )
            else:
                echo(f"{host}: FAILED {info['error']}", err=True)
    if not all(info["ok"] for info in report.values()):
        sys.exit(1)


#: set by a command that ended normally with everything closed (the daemon)
_ENDED_CLEANLY = [False]


def run() -> None:
    """The ``flowbatch`` program (``main`` is the click group, which tests call in-process).

    After a daemon that ended normally (its threads stopped, its runs' files and its index
    closed), the process exits without the interpreter's teardown, which frees every object
    of a daemon one by one: 0.1 s of each start here, paid by every cron tick and every
    burst. Output and logs are flushed first; any other ending exits as usual."""
    _PROGRAM[0] = True
    try:
        main(prog_name="flowbatch")
    except SystemExit as exc:
        if not _ENDED_CLEANLY[0]:
            raise
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        logging.shutdown()  # flushes and closes every log handler
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                code = code or 1  # output lost (a closed pipe): say so by the exit code
        os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
