"""The other static report pages: one per run (``runs/<run_id>/index.html``) and the
site's front page (``results/index.html``).

A run page is written once, when the run reaches a terminal state
(:class:`RunPageWriter` is a :class:`~flowbatch.store.store.Store` listener), and again on
demand by ``flowbatch report``. It needs nothing but the run's record, its folder and
(for labels) its template, so it costs one small file write per finished run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from markupsafe import escape

from .errors import FlowbatchError
from .lifecycle import TAIL_BYTES, tail_text
from .report import (
    JSON_NAME,
    Page,
    display_argument,
    format_duration,
    format_number,
    format_size,
    human_time_text,
    iso_text,
    own_templates,
    page_frame,
    render_page,
    use_site_templates,
)
from .runs import TERMINAL, RunRecord, State, parse_time
from .safeio import read_tail_or_none
from .spec.model import Template
from .store.atomic import write_text
from .store.layout import RUN_PAGE
from .store.owner import make_dirs

log = logging.getLogger("flowbatch.report")

SITE_INDEX = "index.html"
#: lines of each log shown on a run page (the whole log is a link away)
LOG_TAIL_LINES = 40
#: entries of each workflow's ranking on the front page
TOP_ENTRIES = 3


# --- run pages ------------------------------------------------------------------------------


def write_run_page(run_dir: Path, run: RunRecord, template: Template | None = None) -> Path:
    """Write ``<run_dir>/index.html`` atomically; ``template`` gives labels and may be
    ``None`` (a template that no longer loads: names stand in for labels)."""
    path = run_dir / RUN_PAGE
    write_text(path, render_run_page(run_dir, run, template), fsync=False)
    return path


def render_run_page(run_dir: Path, run: RunRecord, template: Template | None = None) -> str:
    title = f"{run.name or run.id} ({run.group})"
    started, finished = parse_time(run.started_at), parse_time(run.finished_at)
    seconds = (finished - started).total_seconds() if started and finished else None
    page = page_frame(
        title,
        script=False,
        crumbs=[
            ("All workflows", "../../../index.html"),
            # a workflow without results has no leaderboard (never written)
            (
                run.workflow,
                "" if template and template.results is None else "../../leaderboard.html",
            ),
        ],
    )
    times = [
        (label, iso_text(value), human_time_text(value))
        for label, value in (
            ("Created", run.created_at),
            ("Started", run.started_at),
            ("Finished", run.finished_at),
        )
    ]
    duration = format_duration(seconds)
    results = _results(run, template)
    arguments = _arguments(run, template)
    steps = _steps(run_dir, run.steps)
    files = [_file(f) for f in run.files]
    if not own_templates(*RUN_PAGE_TEMPLATES):
        return _run_html(page, run, times, duration, results, arguments, steps, files)
    return render_page(
        "run.html.j2",
        page=page,
        run={**run.to_dict(), "state": run.state.value},
        times=times,
        duration=duration,
        results=results,
        arguments=arguments,
        steps=steps,
        files=files,
        history=run.history,
    )


#: a site's own copy of one of these makes its run pages rendered by Jinja2 from them
RUN_PAGE_TEMPLATES = ("run.html.j2", "base.html.j2")


def _run_html(
    page: Page,
    run: RunRecord,
    times: list[tuple[str, str, str]],
    duration: str,
    results: list[tuple[str, str, str]],
    arguments: list[tuple[str, str, str]],
    steps: list[_StepView],
    files: list[dict[str, str]],
) -> str:
    """The package's ``run.html.j2`` in ``base.html.j2``, written out in Python: the same
    bytes (a test renders both for runs of every shape), at a third of Jinja2's cost, on
    the path of every finished run. A site with its own copy of either template gets
    Jinja2 (:data:`RUN_PAGE_TEMPLATES`)."""
    e = escape
    state = e(run.state.value)
    out = [
        _frame_head(page),
        f'<span class="badge {state}">{state}</span> &middot; workflow '
        f"<code>{e(run.workflow)}</code> &middot; run <code>{e(run.id)}</code>",
        '</p>\n</div></header>\n<main><div class="wrap">\n<div class="card">\n'
        f'<dl class="facts">\n<dt>Group</dt><dd>{e(run.group)}</dd>\n'
        f"<dt>Name</dt><dd>{e(run.name or '')}</dd>\n<dt>Owner</dt><dd>{e(run.owner)}</dd>\n"
        f"<dt>Version</dt><dd><code>{e(run.version)}</code></dd>\n"
        f"<dt>Executor</dt><dd>{e(run.executor)}</dd>\n",
    ]
    for label, iso_value, text in times:
        moment = f'<time datetime="{e(iso_value)}">{e(text)}</time>' if iso_value else ""
        out.append(f"<dt>{e(label)}</dt><dd>{moment}</dd>\n")
    out.append(f"<dt>Run time</dt><dd>{e(duration)}</dd>\n</dl>\n</div>\n")
    if run.messages:
        out.append("<h2>Messages</h2>\n")
        out.extend(f"<pre>{e(message)}</pre>\n" for message in run.messages)
    if results:
        out.append(f"<h2>Results</h2>\n{_kv_table(results, '', '')}")
    out.append("<h2>Arguments</h2>\n")
    if arguments:
        out.append(_kv_table(arguments, "<code>", "</code>"))
    else:
        out.append('<p class="muted">None.</p>\n')
    out.append("<h2>Steps</h2>\n")
    if steps:
        out.append(
            '<div class="scroll"><table>\n<thead><tr><th class="num">#</th><th>Step</th>'
            '<th class="num">Exit code</th><th>Started</th><th class="num">Duration</th>'
            "<th>Logs</th></tr></thead>\n<tbody>\n"
        )
        for step in steps:
            code = step.exit_code
            if code is None:
                shown = '<span class="muted">&ndash;</span>'
            elif code == 0:
                shown = "0"
            else:
                shown = f'<span class="badge ERROR">{e(code)}</span>'
            logs = f'<a href="{e(step.stdout)}">stdout</a> ' if step.stdout else ""
            if step.stderr:
                logs += f'<a href="{e(step.stderr)}">stderr</a>'
            out.append(
                f'<tr>\n<td class="num">{e(step.index)}</td>\n<td>{e(step.name)}</td>\n'
                f'<td class="num">{shown}</td>\n<td class="time">{e(step.started_text)}</td>\n'
                f'<td class="num">{e(step.duration)}</td>\n<td>{logs}</td>\n</tr>\n'
            )
        out.append("</tbody>\n</table></div>\n")
        for step in steps:
            if not (step.out_tail or step.err_tail):
                continue
            opened = " open" if step.exit_code not in (None, 0) else ""
            out.append(
                f"<details{opened}>\n<summary>Step {e(step.index)} ({e(step.name)}): "
                "last lines of its logs</summary>\n"
            )
            if step.out_tail:
                out.append(f"<h3>stdout</h3><pre>{e(step.out_tail)}</pre>")
            if step.err_tail:
                out.append(f"<h3>stderr</h3><pre>{e(step.err_tail)}</pre>")
            out.append("</details>\n")
    else:
        out.append('<p class="muted">No step ran.</p>\n')
    out.append("<h2>Output files</h2>\n")
    if files:
        out.append(
            '<table>\n<thead><tr><th>File</th><th>Description</th><th class="num">Size</th>'
            "</tr></thead>\n<tbody>\n"
        )
        out.extend(
            f'<tr><td><a href="{e(f["href"])}">{e(f["title"])}</a><br>'
            f'<code class="muted">{e(f["source"])}</code></td><td>{e(f["caption"])}</td>'
            f'<td class="num">{e(f["size"])}</td></tr>\n'
            for f in files
        )
        out.append("</tbody>\n</table>\n")
    else:
        out.append('<p class="muted">None.</p>\n')
    out.append(
        "<h2>History</h2>\n<table>\n<thead><tr><th>State</th><th>At</th><th>Message</th>"
        "</tr></thead>\n<tbody>\n"
    )
    for change in run.history:
        state = e(change["state"])
        out.append(
            f'<tr><td><span class="badge {state}">{state}</span></td>'
            f'<td class="time">{e(change["at"])}</td><td>{e(change.get("message") or "")}</td>'
            "</tr>\n"
        )
    out.append("</tbody>\n</table>\n")
    out.append(_frame_foot(page))
    return "".join(out)


def _kv_table(rows: list[tuple[str, str, str]], before: str, after: str) -> str:
    """The label-value tables of ``run.html.j2`` (results, arguments)."""
    e = escape
    lines = "".join(
        f'<tr><th title="{e(name)}">{e(label)}</th><td>{before}{e(text)}{after}</td></tr>\n'
        for label, name, text in rows
    )
    return f'<table class="kv"><tbody>\n{lines}</tbody></table>\n'


def _frame_head(page: Page) -> str:
    """``base.html.j2`` up to its ``meta`` block (a page without the script)."""
    e = escape
    crumbs = ""
    if page.crumbs:
        links = "".join(
            (f'<a href="{e(href)}">{e(label)}</a> / ' if href else f"{e(label)} / ")
            for label, href in page.crumbs
        )
        crumbs = f'<nav class="crumbs">{links}</nav>\n'
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{e(page.csp)}">\n'
        '<meta name="generator" content="flowbatch">\n'
        f"<title>{e(page.title)}</title>\n<style>\n{e(page.style)}\n</style>\n</head>\n"
        f'<body>\n<header class="top"><div class="wrap">\n{crumbs}'
        f'<h1>{e(page.title)}</h1>\n<p class="meta">'
    )


def _frame_foot(page: Page) -> str:
    """``base.html.j2`` after its ``body`` block (a page without the script)."""
    e = escape
    return (
        '</div></main>\n<footer><div class="wrap">Generated by flowbatch '
        f'<time datetime="{e(page.generated_iso)}">{e(page.generated_text)}</time>'
        "</div></footer>\n</body>\n</html>"
    )


def _results(run: RunRecord, template: Template | None) -> list[tuple[str, str, str]]:
    if not run.results:
        return []
    labels = (
        {c.name: c.label for c in template.results.columns} if template and template.results else {}
    )
    names = list(labels) if labels else list(run.results)
    return [
        (labels.get(name, name), name, format_number(run.results.get(name)))
        for name in names
        if name in run.results
    ]


def _arguments(run: RunRecord, template: Template | None) -> list[tuple[str, str, str]]:
    labels = {p.name: p.display_name() for p in template.parameters} if template else {}
    out = []
    for name, value in run.arguments.items():
        shown = display_argument(value)
        text = format_number(shown) if isinstance(shown, float) else str(shown)
        out.append((labels.get(name, name), name, text))
    return out


@dataclass(frozen=True)
class _StepView:
    index: int
    name: str
    exit_code: int | None
    started_text: str
    duration: str
    stdout: str
    stderr: str
    out_tail: str
    err_tail: str


def _steps(run_dir: Path, steps: list[dict[str, Any]]) -> list[_StepView]:
    return [_step(run_dir, step) for step in steps]


def _step(run_dir: Path, step: dict[str, Any]) -> _StepView:
    stdout, out_tail = _log(run_dir, str(step.get("stdout") or ""))
    stderr, err_tail = _log(run_dir, str(step.get("stderr") or ""))
    return _StepView(
        index=int(step.get("index", 0)),
        name=str(step.get("name", "")),
        exit_code=step.get("exit_code"),
        started_text=human_time_text(step.get("started_at")),
        duration=format_duration(step.get("duration")),
        stdout=stdout,
        stderr=stderr,
        out_tail=out_tail,
        err_tail=err_tail,
    )


def _log(run_dir: Path, rel: str) -> tuple[str, str]:
    """A step log's link and last lines, from one safe open: no link to a log that is
    missing, or that is not a regular file of the run folder (a symlink on the way)."""
    data = read_tail_or_none(run_dir, rel, TAIL_BYTES) if rel else None
    if data is None:
        return "", ""
    return quote(rel, safe="/"), tail_text(data, LOG_TAIL_LINES)


def _file(spec: dict[str, Any]) -> dict[str, str]:
    source = str(spec.get("source") or spec.get("key") or "")
    return {
        "href": quote(source, safe="/"),
        "source": source,
        "title": str(spec.get("title") or spec.get("key") or source),
        "caption": str(spec.get("caption") or ""),
        "size": format_size(spec.get("size")),
    }


class RunPageWriter:
    """A :class:`~flowbatch.store.store.Store` listener: writes a run's page when it reaches
    a terminal state (once per run: terminal states stay terminal).

    A failure to write the page is logged, never raised: a report must not break the
    state change that triggered it."""

    def __init__(self, site: Any) -> None:
        self.site = site

    @classmethod
    def attach(cls, site: Any) -> None:
        """Register a writer on ``site``'s store, unless one is there already (a second
        daemon object on the same site must not write every page twice)."""
        if not any(isinstance(listener, cls) for listener in site.store.listeners):
            site.store.listeners.append(cls(site))

    def __call__(self, run: RunRecord, previous: State) -> None:
        if run.state not in TERMINAL:
            return
        use_site_templates(self.site.root)
        try:
            write_run_page(self.site.store.run_dir(run), run, _template(self.site, run))
        except (OSError, FlowbatchError, ValueError) as exc:
            log.error("run page of %s not written: %s", run.id, exc)


def _template(site: Any, run: RunRecord) -> Template | None:
    try:
        template, _ = site.templates.load(run.workflow, run.version)
    except FlowbatchError:
        return None
    return template


def write_run_pages(site: Any, run_dirs: Iterable[Path]) -> int:
    """(Re)write the page of every terminal run among ``run_dirs``; returns how many. A
    page that cannot be written is logged and skipped, as :class:`RunPageWriter` does:
    the run's own code may have left a folder named ``index.html`` in its run folder,
    and that must not stop the pages of the other runs (nor the rest of the reports)."""
    use_site_templates(site.root)
    count = 0
    for run_dir in run_dirs:
        try:
            run = site.store.load_dir(run_dir)
        except (OSError, ValueError, FlowbatchError) as exc:
            log.error("cannot read %s: %s", run_dir, exc)
            continue
        if run.state in TERMINAL:
            try:
                write_run_page(run_dir, run, _template(site, run))
            except (OSError, FlowbatchError, ValueError) as exc:
                log.error("run page of %s not written: %s", run.id, exc)
                continue
            count += 1
    return count


# --- the site's front page ------------------------------------------------------------------


def write_site_index(site: Any, counts: dict[str, dict[str, int]]) -> Path:
    """Write ``results/index.html``: every installed workflow, its run counts by state
    (``counts``: workflow -> state -> number) and the top of its leaderboard (read from
    each ``leaderboard.json``, so unchanged workflows cost one small read)."""
    workflows = []
    for workflow_id in site.templates.list_ids():
        meta = site.templates.meta(workflow_id)
        out_dir = site.layout.workflow_results(workflow_id)
        board = _read_board(out_dir / JSON_NAME)
        by_state = counts.get(workflow_id, {})
        workflows.append(
            {
                "id": workflow_id,
                "name": meta.get("name") or workflow_id,
                "description": meta.get("description") or "",
                "counts": [(s.value, by_state.get(s.value, 0)) for s in State],
                "leaderboard": f"{quote(workflow_id, safe='')}/leaderboard.html"
                if board is not None
                else "",
                **_top(workflow_id, board),
            }
        )
    results = site.layout.results
    make_dirs(results, site.layout.owner)
    html = render_page(
        "index.html.j2", page=page_frame(f"{site.name}: results", script=False), workflows=workflows
    )
    path = results / SITE_INDEX
    write_text(path, html, fsync=False)
    return path


#: path -> (mtime_ns, size, parsed board): a big leaderboard.json is parsed again only
#: when it changed, not for every front-page rewrite of every tick
_BOARDS: dict[Path, tuple[int, int, dict[str, Any]]] = {}


def _read_board(path: Path) -> dict[str, Any] | None:
    try:
        stat = path.stat()
        cached = _BOARDS.get(path)
        if cached and cached[:2] == (stat.st_mtime_ns, stat.st_size):
            return cached[2]
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    data = {k: data.get(k) for k in ("schema", "order_by", "ranking")}  # keep only these
    data["ranking"] = (data["ranking"] or [])[:TOP_ENTRIES]
    _BOARDS[path] = (stat.st_mtime_ns, stat.st_size, data)
    return data


def _top(workflow_id: str, board: dict[str, Any] | None) -> dict[str, Any]:
    if not board or not board.get("ranking"):
        return {"top": [], "top_label": ""}
    schema = board.get("schema") or []
    order = board.get("order_by") or ([{"name": schema[0]["name"]}] if schema else [])
    key = order[0]["name"] if order else None
    label = next((c.get("label") for c in schema if c.get("name") == key), key or "")
    top = []
    for entry in board["ranking"][:TOP_ENTRIES]:
        run_id = str(entry.get("run", {}).get("id", ""))
        top.append(
            {
                "rank": entry.get("rank"),
                "group": entry.get("group"),
                "value": format_number((entry.get("results") or {}).get(key)),
                "href": f"{quote(workflow_id, safe='')}/runs/{quote(run_id, safe='')}/index.html",
            }
        )
    return {"top": top, "top_label": label}
