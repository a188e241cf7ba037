"""Leaderboard files: ``leaderboard.json`` for tools and ``leaderboard.html`` for people.

Both are written atomically (a reader never sees half a file) into the workflow's results
folder. The HTML page is one self-contained file: inline CSS, no scripts, no external
resources, so it can be opened straight from a cluster's shared file system or served as a
static file. Every value that comes from a user or a template author (title, group and run
names, string results, labels) goes through Jinja2's autoescaping; a Content-Security-Policy
that forbids scripts is a second line of defence should a value ever slip through.

All HTML rendering lives in :func:`render_leaderboard_html` so a richer page can grow there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from .ranking import RankEntry, entry_json, parse_time, ranking_json, run_seconds
from .spec.model import ResultColumn, ResultSchema
from .store.atomic import write_json, write_text

JSON_NAME = "leaderboard.json"
HTML_NAME = "leaderboard.html"


def write_leaderboard(
    out_dir: Path,
    workflow_id: str,
    title: str,
    schema: ResultSchema,
    entries: list[RankEntry],
    *,
    all_entries: list[RankEntry] | None = None,
) -> None:
    """Write ``leaderboard.json`` and ``leaderboard.html`` into ``out_dir`` (created if
    missing), each atomically.

    ``entries`` is the leaderboard (best run per group, from :func:`flowbatch.ranking.rank`);
    ``all_entries``, when given, is the ranking of every successful run, added to the JSON
    as ``"all"`` and to the page as a second table. The JSON is
    :func:`flowbatch.ranking.ranking_json` plus ``"all"`` (when given) and
    ``"generated_at"`` (ISO-8601 UTC).
    """
    generated_at = datetime.now(UTC).replace(microsecond=0)
    data: dict[str, Any] = ranking_json(workflow_id, schema, entries)
    if all_entries is not None:
        data["all"] = [entry_json(schema, entry) for entry in all_entries]
    data["generated_at"] = _iso(generated_at)

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / JSON_NAME, data)
    html = render_leaderboard_html(
        workflow_id,
        title,
        schema,
        entries,
        all_entries=all_entries,
        generated_at=generated_at,
    )
    write_text(out_dir / HTML_NAME, html)


def render_leaderboard_html(
    workflow_id: str,
    title: str,
    schema: ResultSchema,
    entries: list[RankEntry],
    *,
    all_entries: list[RankEntry] | None = None,
    generated_at: datetime | None = None,
) -> str:
    """The leaderboard page as an HTML string (see the module docstring)."""
    moment = generated_at or datetime.now(UTC).replace(microsecond=0)
    columns = [_Column(c.label, c.dtype in ("int", "float")) for c in schema.columns]
    return _template().render(
        title=title,
        workflow_id=workflow_id,
        columns=columns,
        rows=[_row(schema.columns, entry) for entry in entries],
        all_rows=None if all_entries is None else [_row(schema.columns, e) for e in all_entries],
        generated_iso=_iso(moment),
        generated_text=_human_time(moment),
    )


# --- formatting ---------------------------------------------------------------------------


def format_number(value: Any) -> str:
    """A result value for display: ints as they are; floats with at most 4 decimals
    (trailing zeros dropped), or 4 significant digits when smaller than 1 (so 0.000123
    does not become 0.0001), scientific for extremes."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if magnitude < 1 or magnitude >= 1e15:
        return f"{value:.4g}"  # .4g itself switches to 1.235e-05 below 1e-4
    return f"{value:.4f}".rstrip("0").rstrip(".")


def format_duration(seconds: float | None) -> str:
    """A run time for people: ``0.4 s``, ``1.2 s``, ``3 min 4 s``, ``2 h 5 min``,
    ``1 d 3 h``; empty when unknown or negative (clock skew between hosts)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return ""
    if seconds < 59.95:  # not "60.0 s" for 59.97
        return f"{seconds:.1f} s"
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s"


# --- internals ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    label: str
    numeric: bool


@dataclass(frozen=True)
class _Cell:
    text: str
    exact: str  # full value for the tooltip; "" for none
    numeric: bool


@dataclass(frozen=True)
class _Row:
    rank: int
    group: str
    run_label: str
    run_id: str
    href: str
    cells: list[_Cell]
    finished_iso: str
    finished_text: str
    duration: str


def _row(columns: list[ResultColumn], entry: RankEntry) -> _Row:
    run = entry.run
    cells = []
    for column in columns:
        value = run.results.get(column.name)
        numeric = column.dtype in ("int", "float")
        text = format_number(value) if numeric else ("" if value is None else str(value))
        exact = "" if value is None or not numeric else repr(value)
        cells.append(_Cell(text=text, exact=exact if exact != text else "", numeric=numeric))
    finished = parse_time(run.finished_at)
    return _Row(
        rank=entry.rank,
        group=run.group,
        run_label=run.name or run.run_id,
        run_id=run.run_id,
        # quote(): a run id is ours, but a link must stay inside runs/ whatever it holds.
        href=f"runs/{quote(run.run_id, safe='')}/",
        cells=cells,
        finished_iso=_iso(finished) if finished else (run.finished_at or ""),
        finished_text=_human_time(finished) if finished else (run.finished_at or ""),
        duration=format_duration(run_seconds(run)),
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _human_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_env = jinja2.Environment(
    autoescape=True,  # every {{ }} is HTML-escaped: values come from users
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_compiled: jinja2.Template | None = None


def _template() -> jinja2.Template:
    global _compiled
    if _compiled is None:
        _compiled = _env.from_string(_TEMPLATE)
    return _compiled


_TEMPLATE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="generator" content="flowbatch">
<title>{{ title }}</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         margin: 2rem auto; max-width: 72rem; padding: 0 1rem; color: #1d2330; }
  h1 { font-size: 1.6rem; margin-bottom: .2rem; }
  h2 { font-size: 1.2rem; margin-top: 2.5rem; }
  .meta { color: #5b6475; font-size: .9rem; margin-top: 0; }
  table { border-collapse: collapse; width: 100%; margin-top: 1rem; font-size: .95rem; }
  th, td { padding: .45rem .7rem; border-bottom: 1px solid #e2e5ec; text-align: left;
           vertical-align: top; }
  th { background: #f3f5f9; font-weight: 600; border-bottom: 2px solid #cdd3de; }
  tbody tr:nth-child(even) { background: #fafbfd; }
  tbody tr:hover { background: #eef3ff; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
  td.rank { font-weight: 600; }
  td.time { white-space: nowrap; color: #5b6475; }
  a { color: #1f5fbf; text-decoration: none; }
  a:hover { text-decoration: underline; }
  .empty { padding: 2rem; text-align: center; color: #5b6475; background: #f7f8fa;
           border-radius: 6px; margin-top: 1rem; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="meta">Workflow <code>{{ workflow_id }}</code> &middot; generated
<time datetime="{{ generated_iso }}">{{ generated_text }}</time></p>
{% macro ranking_table(rows) %}
{% if rows %}
<table>
<thead>
<tr>
<th class="num">Rank</th><th>Group</th><th>Run</th>
{% for column in columns %}
<th{% if column.numeric %} class="num"{% endif %}>{{ column.label }}</th>
{% endfor %}
<th>Finished</th><th class="num">Run time</th>
</tr>
</thead>
<tbody>
{% for row in rows %}
<tr>
<td class="num rank">{{ row.rank }}</td>
<td>{{ row.group }}</td>
<td><a href="{{ row.href }}" title="{{ row.run_id }}">{{ row.run_label }}</a></td>
{% for cell in row.cells %}
<td{% if cell.numeric %} class="num"{% endif %}{% if cell.exact %} title="{{ cell.exact }}"{% endif %}>{{ cell.text }}</td>
{% endfor %}
<td class="time">{% if row.finished_iso %}<time datetime="{{ row.finished_iso }}">{{ row.finished_text }}</time>{% endif %}</td>
<td class="num">{{ row.duration }}</td>
</tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p class="empty">No successful runs yet</p>
{% endif %}
{% endmacro %}
{{ ranking_table(rows) }}
{% if all_rows is not none %}
<h2>All successful runs</h2>
{{ ranking_table(all_rows) }}
{% endif %}
</body>
</html>
"""  # noqa: E501 - HTML lines read better unbroken
