"""Commands for the life of runs and templates after the fact: ``runs rerun``, ``runs
delete``, ``runs files``, ``runs archive``, ``cleanup``, ``uninstall``, ``workflows show``.

They live beside :mod:`flowbatch.cli` (which imports this module to register them); the
logic is in :mod:`flowbatch.lifecycle_ops`, :mod:`flowbatch.archive`,
:mod:`flowbatch.resume` and :mod:`flowbatch.versions`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .cli import (
    Context,
    _echo_json,
    _table,
    caller_uid,
    echo,
    main,
    needs_write,
    pass_ctx,
    runs,
    wait_for_request,
    wait_options,
    workflows,
)

if TYPE_CHECKING:
    from .site import Site


def human(size: int | None) -> str:
    """Bytes as people read them: 512 B, 1.5 KiB, 3.2 GiB (``-``: not known)."""
    from .report import format_size

    return format_size(size, "-")


def echo_resume_plan(site: Site, request: Path, retry_failed: bool) -> int:
    """Before queueing a sweep again: say which points will be skipped, and why. Returns
    how many are skipped because their runs failed (or were cancelled)."""
    from .resume import FAILED, plan_request

    plan = plan_request(site, request)
    if plan is None:
        return 0
    skipped = plan.skipped(retry_failed=retry_failed)
    todo = len(plan.points) - len(skipped)
    echo(
        f"sweep of {len(plan.points)} points on version {plan.version}: {todo} to run, "
        f"{len(skipped)} skipped",
        err=True,
    )
    for point in plan.points:
        if point.index in skipped:
            args = ", ".join(f"{k}={_shown(v)}" for k, v in point.arguments.items())
            runs_ = ", ".join((point.because or point.runs)[-3:])
            echo(f"  skip {args}: {skipped[point.index]} (runs {runs_})", err=True)
    return sum(1 for p in plan.points if p.index in skipped and p.status == FAILED)


def _shown(value: object) -> str:
    """An argument as a user wrote it: a file by its path (the template's own file, for
    a default), not as the record it is stored as ({'source': '', 'target': ...})."""
    if isinstance(value, dict) and set(value) == {"source", "target"}:
        return str(value["source"] or f"{value['target']} (the template's)")
    return str(value)


# -- workflows --------------------------------------------------------------------------------
@workflows.command("show")
@click.argument("workflow")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def workflows_show(obj: Context, workflow: str, as_json: bool) -> None:
    """Show WORKFLOW's template versions (oldest first) with their runs per state."""
    from . import api

    info = api.show_workflow(obj.site, workflow)
    if as_json:
        _echo_json(info)
        return
    echo(f"workflow: {info['id']} ({info['name']})")
    echo(f"current:  {info['current']}")
    rows = [
        {
            "version": v["version"] + (" *" if v["current"] else ""),
            "installed_at": v["installed_at"] or "(removed)",
            "runs": v["runs"],
            "states": " ".join(f"{k}={n}" for k, n in v["states"].items()),
        }
        for v in info["versions"]
    ]
    _table(rows, ["version", "installed_at", "runs", "states"])
    if info.get("description"):
        echo(f"\n{info['description']}")
    if info.get("instructions"):
        echo(f"\ninstructions:\n{info['instructions'].rstrip()}")


# -- runs ---------------------------------------------------------------------------------------
@runs.command("rerun")
@click.argument("run_id")
@click.option("--latest", is_flag=True, help="On the current template version, not the run's.")
@wait_options
@pass_ctx
def runs_rerun(obj: Context, run_id: str, latest: bool, wait: bool, timeout: float | None) -> None:
    """Queue a new run with RUN_ID's arguments and input files (as the run left them in
    its folder), on the same template version (--latest: the current one); print the
    queued request's name. --wait: as `submit --wait`."""
    from .lifecycle_ops import rerun

    queued_at = time.time()
    name = rerun(obj.site, run_id, latest=latest)
    echo(name)
    if wait:
        wait_for_request(obj.site, name, timeout, since=queued_at)


@runs.command("logs")
@click.argument("run_id")
@click.option("--step", "-s", help="Only this step's logs (its number or name).")
@click.option("--stdout", "stream", flag_value="out", help="Only the steps' standard output.")
@click.option("--stderr", "stream", flag_value="err", help="Only the steps' standard error.")
@click.option("--tail", "-n", "lines", type=click.IntRange(min=0), help="The last N lines of each.")
@click.option(
    "--follow", "-f", is_flag=True, help="Go on printing new output until the run has ended."
)
@pass_ctx
def runs_logs(
    obj: Context,
    run_id: str,
    step: str | None,
    stream: str | None,
    lines: int | None,
    follow: bool,
) -> None:
    """Print RUN_ID's logs: each step's stdout and stderr, the script's and the
    scheduler's own, each under a header (a log over 8 MiB: its end)."""
    from . import runlogs

    store = obj.site.store
    run = store.load(run_id)
    run_dir = store.run_dir(run)
    note = runlogs.remote_note(run, obj.site.config.ssh)
    if note:
        echo(note, err=True)

    def chosen() -> list[runlogs.Log]:
        return runlogs.select(runlogs.run_logs(run_dir), step, stream)

    shown: dict[str, runlogs.Mark] = {}
    current: list[str | None] = [None]

    def show(log: runlogs.Log, data: bytes) -> None:
        if current[0] != log.rel:
            echo(f"==> {log.title} <==")
            current[0] = log.rel
        sys.stdout.buffer.write(data if data.endswith(b"\n") or follow else data + b"\n")
        sys.stdout.buffer.flush()

    logs = chosen()
    for log in logs:
        data, shown[log.rel] = runlogs.read_log(run_dir, log)
        if lines is not None:
            data = runlogs.last_lines(data, lines)
        if data:  # empty logs (most stderr) are left out
            show(log, data)
    if follow:
        for log, data in runlogs.follow(
            run_dir, chosen, lambda: not store.load(run_id).state.active, start=shown
        ):
            show(log, data)
    if current[0] is None:  # nothing shown (with --follow too, once the run ended)
        if follow:
            logs, run = chosen(), store.load(run_id)
        some = f"{len(logs)} empty" if logs else "no"
        echo(f"run {run_id} ({run.state.value}) has {some} logs", err=True)


@runs.command("wait")
@click.argument("run_ids", nargs=-1)
@click.option(
    "--request", "-r", help="Wait for the runs of this queued request (the name submit printed)."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    help="Give up waiting after this many seconds (exit 124).",
)
@pass_ctx
def runs_wait(
    obj: Context, run_ids: tuple[str, ...], request: str | None, timeout: float | None
) -> None:
    """Wait until every run of RUN_IDS (or of --request) has ended; print them. Exit 0
    when every one succeeded, 1 when one failed or was cancelled (or the request was
    rejected), 124 when --timeout passed first (the runs go on)."""
    from .cli import _end_wait, _note
    from .waiting import wait_runs

    if bool(run_ids) == bool(request):
        raise click.UsageError("give RUN_IDS or --request NAME")
    if request:
        wait_for_request(obj.site, request, timeout)
        return
    outcome = wait_runs(obj.site, list(run_ids), timeout=timeout, note=_note)
    _end_wait(outcome, timeout, what="no run")


@runs.command("delete")
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN_ID...")
@pass_ctx
def runs_delete(obj: Context, run_ids: tuple[str, ...]) -> None:
    """Delete ended runs from the results tree and the index, their leaderboards rewritten
    once. A run that is active (cancel it first), another user's or unknown is refused
    with why, and the others are deleted; the exit status is 1 when one was refused."""
    from .lifecycle_ops import delete_runs

    needs_write(obj.site, "runs delete", obj.site.layout.results)
    freed, deleted, refused = delete_runs(obj.site, list(run_ids), uid=caller_uid())
    if len(run_ids) == 1 and deleted:
        echo(f"deleted run {deleted[0]}, freed {human(freed)}")
    elif deleted:
        echo(f"deleted {len(deleted)} runs ({', '.join(deleted)}), freed {human(freed)}")
    for exc in refused.values():
        echo(f"Error: {exc.summary()}", err=True)
    if refused:
        raise SystemExit(1)


@runs.command("files")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def runs_files(obj: Context, run_id: str, as_json: bool) -> None:
    """List RUN_ID's output files: key, title, size, path in the run folder."""
    from .archive import run_files

    files = run_files(obj.site, run_id)
    if as_json:
        _echo_json(files)
        return
    rows = [{**f, "size": human(f["size"])} for f in files]
    _table(rows, ["key", "title", "size", "source"])


@runs.command("archive")
@click.argument("run_id")
@click.option(
    "-o",
    "--output",
    type=click.Path(),
    help="Archive file, or a folder for run.<id>.tar.gz (default: the current folder).",
)
@pass_ctx
def runs_archive(obj: Context, run_id: str, output: str | None) -> None:
    """Write the output files of a successful run into run.<id>.tar.gz, each member named
    by its file key; print the archive's path."""
    from .archive import write_archive

    echo(str(write_archive(obj.site, run_id, output or None)))


@workflows.command("retire")
@click.argument("workflow")
@click.argument("version")
@click.option(
    "--with-runs",
    is_flag=True,
    help="Remove the runs of that version too (refused without it while it has any).",
)
@pass_ctx
def workflows_retire(obj: Context, workflow: str, version: str, with_runs: bool) -> None:
    """Remove VERSION of WORKFLOW's template (a unique prefix will do): not the current
    one, none of whose runs is active. Refused while a daemon serves the site: stop it
    first. See the versions with `flowbatch workflows show WORKFLOW`."""
    from .lifecycle_ops import retire_version

    needs_write(obj.site, "workflows retire", obj.site.layout.templates, obj.site.layout.results)
    info = retire_version(obj.site, workflow, version, with_runs=with_runs)
    again = " (an interrupted retire, finished)" if info["resumed"] else ""
    echo(
        f"retired version {info['version']} of {workflow}{again}: {info['runs']} runs, "
        f"freed {human(info['freed'])}"
    )


# -- cleanup and uninstall ----------------------------------------------------------------------
@main.command()
@click.option(
    "--before",
    "-d",
    help="Runs created before this date (YYYY-MM-DD or ISO time, local time unless it gives "
    "an offset such as +00:00); without --state also the post-processing runs of then, but "
    "each workflow's latest and the one shown.",
)
@click.option("--state", "-s", help="Only runs in this state (SUCCESS, ERROR, CANCELED).")
@click.option("--workflow", "-w", help="Only runs of this workflow.")
@click.option(
    "--orphans",
    is_flag=True,
    help="Instead: remove leftovers of crashed runs (remote run folders on the SSH hosts, "
    "local folders without run.json, old .tmp files) and the Slurm array folders of "
    "ended runs.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def cleanup(
    obj: Context,
    before: str | None,
    state: str | None,
    workflow: str | None,
    orphans: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Remove old ended runs from the results tree and the index, sparing those that feed
    the current post-processing; report the space freed."""
    from .lifecycle_ops import cleanup as clean
    from .lifecycle_ops import orphans_report

    verb = "would remove" if dry_run else "removed"
    if not dry_run:
        needs_write(obj.site, "cleanup", obj.site.layout.results)
    if orphans:
        if before or state or workflow:
            raise click.UsageError("--orphans takes no --before, --state or --workflow")
        found = orphans_report(obj.site, dry_run=dry_run)
        if as_json:
            _echo_json(found)
            return
        for o in found["orphans"]:
            echo(f"{o['where']}: {o['path']} ({o['why']}, {human(o['bytes'])})")
        echo(f"{verb} {len(found['orphans'])} orphans, {human(found['freed'])}")
        return
    if not before:
        raise click.UsageError("give --before DATE (or --orphans)")
    report = clean(obj.site, before, state=state, workflow=workflow, dry_run=dry_run)
    if as_json:
        _echo_json(report.to_json())
        return
    for entry in report.removed:
        echo(
            f"{entry['id']}  {entry['workflow']}  {entry['state']}  {entry['created_at']}  "
            f"{human(entry['bytes'])}"
        )
    for entry in report.spared:
        echo(f"{entry['id']}  spared: {entry['why']}")
    for entry in report.postproc_removed:
        echo(
            f"{entry['id']}  {entry['workflow']}  post-processing {entry['state']}  "
            f"{entry['created_at']}  {human(entry['bytes'])}"
        )
    extra = (
        f" and {len(report.postproc_removed)} post-processing runs"
        if report.postproc_removed
        else ""
    )
    echo(f"{verb} {len(report.removed)} runs{extra}, {human(report.freed)}")


@main.command()
@click.argument("workflow")
@pass_ctx
def uninstall(obj: Context, workflow: str) -> None:
    """Remove WORKFLOW: every template version, its runs and reports (refused while any
    of its runs is active, and while a daemon serves the site: stop it first)."""
    from .lifecycle_ops import uninstall as remove

    needs_write(obj.site, "uninstall", obj.site.layout.templates, obj.site.layout.results)
    info = remove(obj.site, workflow)
    again = " (an interrupted uninstall, finished)" if info.get("resumed") else ""
    echo(f"uninstalled {workflow}{again}: {info['runs']} runs, freed {human(info['freed'])}")
