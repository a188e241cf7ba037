"""Bringing the static report files up to date: each workflow's leaderboard files, the
site's front page and (on demand) the run pages.

The daemon calls :func:`update_reports` (through :func:`flowbatch.api.update_reports`) at
most once per tick, with the workflows whose runs changed; ``flowbatch report`` calls
it for every workflow with ``run_pages=True``. Every file is written atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import peewee as pw

from . import postproc
from .errors import FlowbatchError
from .gcpause import paused_gc
from .ranking_sql import group_runs, leaderboard_views
from .report import chart_runs, param_columns, use_site_templates, write_leaderboard
from .report_pages import write_run_pages, write_site_index
from .runs import State
from .site import Site
from .store.index import RunFileRow, RunRow
from .store.owner import make_dirs

log = logging.getLogger("flowbatch.report")


def update_reports(
    site: Site,
    workflows: Iterable[str],
    *,
    run_pages: bool = False,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Rewrite the leaderboard files of each of ``workflows`` (those with a result schema),
    then ``results/index.html``. ``run_pages`` also rewrites the page of every finished run
    of those workflows (the daemon writes each once, when the run ends). ``progress`` is
    told each workflow's id before its turn.

    One workflow's failure does not stop the others' nor the front page: it is logged
    with the workflow's id and the loop goes on. A :class:`FlowbatchError` (a template
    that no longer loads, say) is only logged, as a rewrite would fail the same way. Any
    other error (a full disk, a bug) is raised once everything else is written, as a
    :class:`FlowbatchError` naming the workflows, so that the caller knows the reports
    are still owed (the daemon then keeps its notes of them and tries again). With
    ``run_pages`` (`flowbatch report`, run by a person), a :class:`FlowbatchError` is
    raised at the end too: the command must not say "written" for a leaderboard that
    is not."""
    use_site_templates(site.root)
    failed: list[tuple[str, Exception]] = []
    refused: list[FlowbatchError] = []
    # daemons of several hosts: one at a time reads the index and writes the files, so
    # the last one written saw every run committed before it (none is left out for good)
    with site.store.exclusive("reports"), paused_gc():
        for workflow in sorted(workflows):
            if progress is not None:
                progress(workflow)
            try:
                write_workflow_report(site, workflow)
            except FlowbatchError as exc:
                if run_pages:
                    refused.append(exc)  # said once, by the command
                else:
                    log.error("leaderboard of %s not written: %s", workflow, exc.summary())
            except OSError as exc:  # a full disk: one line, not a traceback
                log.error("leaderboard of %s not written: %s", workflow, exc.strerror or exc)
                failed.append((workflow, exc))
            except Exception as exc:
                log.exception("leaderboard of %s not written", workflow)
                failed.append((workflow, exc))
            if run_pages:
                write_run_pages(site, site.store.iter_run_dirs(workflow))
        try:
            current = {
                w: str(site.templates.meta(w).get("current")) for w in site.templates.list_ids()
            }
            write_site_index(site, state_counts(current))
        except OSError as exc:
            log.error("the results' front page not written: %s", exc.strerror or exc)
            failed.append(("the results' front page", exc))
    if failed:
        names = ", ".join(workflow for workflow, _ in failed)
        first = failed[0][1]
        raise FlowbatchError(
            f"leaderboard{'s' if len(failed) > 1 else ''} of {names} not written: "
            f"{type(first).__name__}: {first}",
            hint="the other reports are written; see the log for the details",
        ) from first
    if refused:
        for other in refused[1:]:
            log.error("%s", other.summary())
        raise refused[0]


def write_workflow_report(site: Site, workflow: str) -> bool:
    """Write one workflow's ``leaderboard.{json,csv,html}``; False when it has no ranking
    (no result schema)."""
    template, version = site.templates.load(workflow)
    if template.results is None:
        return False
    all_shown = site.config.reports.all_runs_shown
    # the index picks the runs shown where it can (flowbatch.ranking_sql)
    views = leaderboard_views(workflow, template.results, shown=all_shown)
    best = views.best
    chart = views.everything
    if chart is None:
        chart = chart_runs(template.results, best, lambda groups: group_runs(workflow, groups))
    shown = {e.run.run_id for e in best} | {e.run.run_id for e in views.top}
    meta = site.templates.meta(workflow)
    title = meta.get("name") or workflow
    folder = site.layout.workflow_results(workflow)
    if site.layout.owner is not None:  # a root daemon's first report of the workflow
        make_dirs(folder, site.layout.owner)
    write_leaderboard(
        folder,
        workflow,
        title,
        template.results,
        best,
        all_entries=views.top,
        parameters=param_columns(template.parameters),
        files=run_files(workflow, shown),
        postproc=postproc.leaderboard_view(site, workflow, version, [e.run.run_id for e in best]),
        all_shown=all_shown,
        all_total=views.total,
        chart_entries=chart,
        description=meta.get("description"),
        instructions=meta.get("instructions"),
    )
    return True


def run_files(workflow: str, runs: set[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The output files of the successful runs of ``workflow`` (only of ``runs`` when
    given: the leaderboard files list those of the runs they show), by run id."""
    where = (RunRow.workflow == workflow) & (RunRow.state == State.SUCCESS.value)
    ids = sorted(runs) if runs is not None else None
    out: dict[str, list[dict[str, Any]]] = {}
    # SQLite binds at most 32,766 parameters; the shown runs are a few thousand at most
    chunks = [None] if ids is None else [ids[i : i + 5000] for i in range(0, len(ids), 5000)]
    for chunk in chunks:
        rows = (
            RunFileRow.select(RunFileRow.run, RunFileRow.key, RunFileRow.source, RunFileRow.title)
            .join(RunRow, on=(RunFileRow.run == RunRow.id))
            .where(where if chunk is None else where & RunFileRow.run.in_(chunk))
            .order_by(RunFileRow._meta.primary_key)  # the run's own file order
        )
        found: Any = rows.tuples()  # no model object per row (peewee's types say RunFileRow)
        for run_id, key, source, title in found:
            out.setdefault(run_id, []).append({"key": key, "source": source, "title": title})
    return out


def state_counts(current: dict[str, str] | None = None) -> dict[str, dict[str, int]]:
    """Runs by workflow and state (one grouped query); ``current``: workflow -> the
    version counted (the one its leaderboard shows: the site's index counted every
    version's runs beside a leaderboard of the current one's, found by review)."""
    query = RunRow.select(
        RunRow.workflow, RunRow.version, RunRow.state, pw.fn.COUNT(RunRow.id).alias("n")
    ).group_by(RunRow.workflow, RunRow.version, RunRow.state)
    out: dict[str, dict[str, int]] = {}
    rows: Any = query.tuples()  # (workflow, version, state, count): peewee says RunRow
    for workflow, version, state, count in rows:
        if current is not None and current.get(workflow, version) != version:
            continue
        counts = out.setdefault(workflow, {})
        counts[state] = counts.get(state, 0) + count
    return out
