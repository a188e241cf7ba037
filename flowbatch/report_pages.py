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

from .errors import FlowbatchError
from .lifecycle import TAIL_BYTES, tail_text
from .ranking import parse_time
from .report import (
    JSON_NAME,
    display_argument,
    format_duration,
    format_number,
    format_size,
    human_time_text,
    iso_text,
    page_frame,
    render_page,
    use_site_templates,
)
from .runs import TERMINAL, RunRecord, State
from .safeio import read_tail_or_none
from .spec.model import Template
from .store.atomic import write_text

log = logging.getLogger("flowbatch.report")

RUN_PAGE = "index.html"
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
    return render_page(
        "run.html.j2",
        page=page_frame(
            title,
            script=False,
            crumbs=[
                ("All workflows", "../../../index.html"),
                (run.workflow, "../../leaderboard.html"),
            ],
        ),
        run={**run.to_dict(), "state": run.state.value},
        times=[
            (label, iso_text(value), human_time_text(value))
            for label, value in (
                ("Created", run.created_at),
                ("Started", run.started_at),
                ("Finished", run.finished_at),
            )
        ],
        duration=format_duration(seconds),
        results=_results(run, template),
        arguments=_arguments(run, template),
        steps=[_step(run_dir, step) for step in run.steps],
        files=[_file(f) for f in run.files],
        history=run.history,
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
    """(Re)write the page of every terminal run among ``run_dirs``; returns how many."""
    use_site_templates(site.root)
    count = 0
    for run_dir in run_dirs:
        try:
            run = site.store.load_dir(run_dir)
        except (OSError, ValueError, FlowbatchError) as exc:
            log.error("cannot read %s: %s", run_dir, exc)
            continue
        if run.state in TERMINAL:
            write_run_page(run_dir, run, _template(site, run))
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
    results.mkdir(parents=True, exist_ok=True)
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
