"""Leaderboard files: ``leaderboard.json`` and ``leaderboard.csv`` for tools,
``leaderboard.html`` for people.

All three are written atomically (a reader never sees half a file) into the workflow's
results folder. The HTML page is one self-contained file, so it can be opened straight
from a cluster's shared file system or copied out to a web folder without internet
access: inline CSS, one inline script (sortable columns, the best/all toggle), the chart as
inline SVG, post-processing images as ``data:`` URIs; nothing is fetched.

Every value that comes from a user or a template author (title, group and run names,
string results, labels, argument values) goes through Jinja2's autoescaping. A
Content-Security-Policy that lets only our own script run (by its SHA-256 hash) is a
second line of defence should a value ever slip through.

The templates and assets are package data (``flowbatch/data/report/``). This module also
holds what the other pages (:mod:`flowbatch.report_pages`) share: the Jinja2 environment,
the page frame and number/time formatting.
"""

from __future__ import annotations

import base64
import csv
import functools
import hashlib
import io
import json
import math
import os
import stat
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from markupsafe import Markup

from .config import ALL_RUNS_SHOWN
from .errors import FlowbatchError
from .ranking import RankEntry, RankInput, entry_json, ranking_json, run_seconds
from .runs import parse_time
from .spec.model import Parameter, ResultColumn, ResultSchema
from .store.atomic import write_json, write_text

if TYPE_CHECKING:
    import jinja2

JSON_NAME = "leaderboard.json"
HTML_NAME = "leaderboard.html"
CSV_NAME = "leaderboard.csv"

#: groups drawn in the chart (the best-ranked ones); more lines are unreadable
CHART_GROUPS = 8
_FLOAT_MAX = sys.float_info.max
_PALETTE = ("#1f5fbf", "#d1495b", "#2a9d8f", "#e09f3e", "#6a4c93", "#3d405b", "#8ab17d", "#b5838d")


# --- public view types --------------------------------------------------------------------


@dataclass(frozen=True)
class ParamColumn:
    """A template parameter shown as a leaderboard column."""

    key: str
    label: str
    numeric: bool


def param_columns(parameters: Sequence[Parameter]) -> list[ParamColumn]:
    """The leaderboard's parameter columns, in the template's declaration order."""
    ordered = sorted(parameters, key=lambda p: p.index)
    return [ParamColumn(p.name, p.display_name(), p.dtype in ("int", "float")) for p in ordered]


@dataclass(frozen=True)
class PostProcOutput:
    """One output file of a post-processing run, as the leaderboard shows it.

    ``kind``: ``image`` (``data_uri`` set), ``table`` (``table``: header row first),
    ``text`` or ``link`` (too big or unknown: only the link)."""

    title: str
    source: str
    href: str
    caption: str | None = None
    kind: str = "link"
    data_uri: str = ""
    table: list[list[str]] = field(default_factory=list)
    text: str = ""


@dataclass(frozen=True)
class PostProcRunView:
    """A post-processing run for the leaderboard page (built by :mod:`flowbatch.postproc`)."""

    id: str
    state: str
    started_at: str | None
    finished_at: str | None
    runs: int  # how many ranked runs it was given
    messages: list[str] = field(default_factory=list)
    href: str = ""
    outputs: list[PostProcOutput] = field(default_factory=list)
    #: False: it was given another set of best runs than the leaderboard has now
    current: bool = True

    @property
    def started_text(self) -> str:
        return human_time_text(self.started_at)

    @property
    def finished_text(self) -> str:
        return human_time_text(self.finished_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "runs": self.runs,
            "current": self.current,
            "messages": self.messages,
            "outputs": [
                {"title": o.title, "source": o.source, "href": o.href} for o in self.outputs
            ],
        }


@dataclass(frozen=True)
class PostProcView:
    """``latest``: the newest post-processing run (maybe failed or running); ``shown``: the
    newest successful one, whose outputs the page shows."""

    latest: PostProcRunView | None
    shown: PostProcRunView | None


# --- writing ------------------------------------------------------------------------------


def write_leaderboard(
    out_dir: Path,
    workflow_id: str,
    title: str,
    schema: ResultSchema,
    entries: list[RankEntry],
    *,
    all_entries: list[RankEntry] | None = None,
    parameters: Sequence[ParamColumn] = (),
    files: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    postproc: PostProcView | None = None,
    all_shown: int = ALL_RUNS_SHOWN,
    all_total: int | None = None,
    chart_entries: list[RankEntry] | None = None,
    description: str | None = None,
    instructions: str | None = None,
) -> None:
    """Write ``leaderboard.json``, ``leaderboard.csv`` and ``leaderboard.html`` into
    ``out_dir`` (created if missing), each atomically.

    ``entries`` is the leaderboard (best run per group, from :func:`flowbatch.ranking.rank`);
    ``all_entries``, when given, the ranking of every successful run (JSON ``"all"``, the
    page's "All runs" view, the chart). ``parameters`` are the argument columns;
    ``files`` maps run ids to their output files (``key``, ``source``, ``title``);
    ``postproc`` is what post-processing produced; ``all_shown``, the rows of the all-runs
    view (a site sets ``reports.all_runs_shown``; 100,000 rows took seconds to write, a
    32 MB JSON file to read and a browser long to open).

    ``all_entries`` may be only the first runs of that ranking (at least ``all_shown``
    of them, or all): ``all_total`` then says how many runs it has, ``entries`` must be
    the best run of every group (the page counts the groups in it), and
    ``chart_entries`` holds every run of the groups the chart may draw
    (:func:`chart_runs`); by default both come from ``all_entries``.

    The JSON is :func:`flowbatch.ranking.ranking_json` (its keys are stable) plus, per
    entry, ``files`` (at most :data:`FILES_SHOWN`), ``files_total`` and ``run_seconds``,
    and at the top ``title``, ``order_by``, ``all``
    and ``all_total`` (when given: the best ``all_shown`` runs of the all-runs
    ranking, and how many runs it has), ``postproc`` (when given) and ``generated_at``
    (ISO-8601 UTC). The CSV holds the best-per-group ranking. Every file is bounded in
    size whatever the number of runs; ``flowbatch ranking --all --json`` gives every run.
    ``description`` and ``instructions`` (the template's manifest) head the page, for
    the participants (the instructions were shown nowhere: found by review).
    """
    generated_at = datetime.now(UTC).replace(microsecond=0)
    files = files or {}
    data: dict[str, Any] = ranking_json(workflow_id, schema, entries)
    _add_extras(data["ranking"], entries, files)
    data["title"] = title
    data["order_by"] = [{"name": k.name, "sort_desc": k.sort_desc} for k in schema.order_by]
    if all_entries is not None:
        top = all_entries[:all_shown]
        data["all"] = [entry_json(schema, entry) for entry in top]
        data["all_total"] = len(all_entries) if all_total is None else all_total
        _add_extras(data["all"], top, files)
    if postproc is not None:
        data["postproc"] = {
            "latest": postproc.latest.to_json() if postproc.latest else None,
            "shown": postproc.shown.id if postproc.shown else None,
        }
    data["generated_at"] = iso(generated_at)

    out_dir.mkdir(parents=True, exist_ok=True)
    # compact: thousands of entries, and indenting is slow
    write_json(out_dir / JSON_NAME, data, indent=None)
    write_text(out_dir / CSV_NAME, leaderboard_csv(schema, entries, parameters))
    html = render_leaderboard_html(
        workflow_id,
        title,
        schema,
        entries,
        all_entries=all_entries,
        parameters=parameters,
        files=files,
        postproc=postproc,
        generated_at=generated_at,
        all_shown=all_shown,
        all_total=all_total,
        chart_entries=chart_entries,
        description=description,
        instructions=instructions,
    )
    write_text(out_dir / HTML_NAME, html)


def _add_extras(
    rows: list[dict[str, Any]],
    entries: list[RankEntry],
    files: Mapping[str, Sequence[Mapping[str, Any]]],
) -> None:
    """New per-entry JSON fields, added after the stable ones; an argument longer than
    :data:`JSON_ARGUMENT_CHARS` is shortened (named in ``arguments_shortened``)."""
    for row, entry in zip(rows, entries, strict=True):
        shortened = _shorten_arguments(row["arguments"])
        if shortened:
            row["arguments_shortened"] = shortened
        row["run_seconds"] = run_seconds(entry.run)
        listed = files.get(entry.run.run_id, ())
        row["files"] = [
            {"key": f.get("key"), "source": f.get("source"), "title": f.get("title")}
            for f in listed[:FILES_SHOWN]
        ]
        row["files_total"] = len(listed)


#: the longest argument ``leaderboard.json`` holds in full, in characters (its JSON text
#: for a list or a record): a request may hold 100 KiB in one value, and the file lists
#: up to :data:`flowbatch.config.ALL_RUNS_SHOWN` runs (gigabytes, rewritten at every
#: change); ``flowbatch runs show`` and the run's page show the whole value
JSON_ARGUMENT_CHARS = 1000


def _shorten_arguments(arguments: dict[str, Any]) -> list[str]:
    """Shorten, in place, the arguments longer than :data:`JSON_ARGUMENT_CHARS` (a text
    cut, with an ellipsis; a list or record as its cut JSON text); their names."""
    names = []
    for name, value in arguments.items():
        if isinstance(value, str):
            text = value
        elif isinstance(value, list | dict):
            if isinstance(value, dict) and "target" in value and len(value) <= 2:
                continue  # a file argument: its source and target, each a short path
            text = json.dumps(value, separators=(",", ":"), default=str)
        else:
            continue
        if len(text) > JSON_ARGUMENT_CHARS:
            arguments[name] = text[:JSON_ARGUMENT_CHARS] + "\u2026"
            names.append(name)
    return names


def render_leaderboard_html(
    workflow_id: str,
    title: str,
    schema: ResultSchema,
    entries: list[RankEntry],
    *,
    all_entries: list[RankEntry] | None = None,
    parameters: Sequence[ParamColumn] = (),
    files: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    postproc: PostProcView | None = None,
    generated_at: datetime | None = None,
    all_shown: int = ALL_RUNS_SHOWN,
    all_total: int | None = None,
    chart_entries: list[RankEntry] | None = None,
    description: str | None = None,
    instructions: str | None = None,
) -> str:
    """The leaderboard page as an HTML string (see the module docstring); ``all_total``,
    ``chart_entries``, ``description`` and ``instructions`` as for
    :func:`write_leaderboard`."""
    files = files or {}
    desc = {k.name: k.sort_desc for k in schema.order_by}
    columns = [
        _Column(
            key=c.name,
            label=c.label,
            numeric=c.dtype in ("int", "float"),
            first="desc" if desc.get(c.name, c.dtype != "string") else "asc",
        )
        for c in schema.columns
    ]
    if all_total is None:  # every run given
        groups = len({entry.run.group for entry in (all_entries or entries)})
        runs = len(all_entries or entries)
    else:  # the first runs of the ranking, and the best run of every group
        groups, runs = len({entry.run.group for entry in entries}), all_total
    if chart_entries is None:
        chart_entries = all_entries if all_entries is not None else entries
    return render_page(
        "leaderboard.html.j2",
        page=page_frame(title, generated_at, crumbs=[("All workflows", "../index.html")]),
        workflow_id=workflow_id,
        columns=columns,
        parameters=list(parameters),
        rows=[_row(schema.columns, parameters, files, entry) for entry in entries],
        all_rows=None
        if all_entries is None
        else [_row(schema.columns, parameters, files, e) for e in all_entries[:all_shown]],
        all_total=0 if all_entries is None else runs,
        counts={"groups": groups, "runs": runs},
        order_text=", ".join(
            f"{schema.column(k.name).label} ({'higher' if k.sort_desc else 'lower'} is better)"
            for k in schema.order_by
        ),
        chart=_chart(schema, chart_entries, groups=groups),
        description=description,
        instructions=instructions,
        postproc=postproc,
    )


def leaderboard_csv(
    schema: ResultSchema, entries: list[RankEntry], parameters: Sequence[ParamColumn] = ()
) -> str:
    """The ranking as CSV: one header row of column *names* (stable for tools), then one
    row per entry. Text that a spreadsheet would run as a formula is prefixed with ``'``."""
    out: list[str] = []
    writer = _CsvLines(out)
    writer.writerow(
        ["rank", "group", "run_id", "run_name"]
        + [c.name for c in schema.columns]
        + [f"arg:{p.key}" for p in parameters]
        + ["created_at", "started_at", "finished_at", "run_seconds"]
    )
    for entry in entries:
        run = entry.run
        seconds = run_seconds(run)
        writer.writerow(
            [entry.rank, _csv_text(run.group), run.run_id, _csv_text(run.name or "")]
            + [_csv_value(run.results.get(c.name)) for c in schema.columns]
            + [_csv_value(display_argument(run.arguments.get(p.key))) for p in parameters]
            + [run.created_at, run.started_at or "", run.finished_at or ""]
            + ["" if seconds is None else f"{seconds:.3f}"]
        )
    return "".join(out)


class _CsvLines:
    """CSV rows ended by LF whose fields holding a CR or an LF are quoted. Python's
    writer (3.11) quotes only the characters of its line terminator: with ``"\\n"`` a
    lone CR was written bare, and a spreadsheet ends a row there (``x<CR>=1+1`` became a
    formula cell of a row of its own). Each row is written with CRLF, which quotes both,
    and its end made LF."""

    def __init__(self, out: list[str]) -> None:
        self._out = out
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")

    def writerow(self, row: Sequence[Any]) -> None:
        self._buffer.seek(0)
        self._buffer.truncate()
        self._writer.writerow(row)
        self._out.append(self._buffer.getvalue()[:-2] + "\n")


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return "" if isinstance(value, float) and not math.isfinite(value) else repr(value)
    return _csv_text(value if isinstance(value, str) else json.dumps(value))


#: what a cell must not start with (OWASP's CSV injection rule: = + - @ TAB CR), plus LF
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def _csv_text(text: str) -> str:
    # CSV injection: a cell starting like a formula is run by spreadsheets when opened.
    # Leading blanks (any, a no-break space too: found by review) and NULs are looked
    # past: some spreadsheets drop them on import (LibreOffice's "trim spaces"), and
    # " =1+1" then is a formula again.
    start = text.lstrip("\0\u200b\ufeff")
    while start[:1].isspace() and start[:1] not in _FORMULA_START:
        start = start[1:].lstrip("\0\u200b\ufeff")
    return "'" + text if start[:1] in _FORMULA_START else text


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


def format_size(size: int | None, missing: str = "") -> str:
    """Bytes for people: ``512 B``, ``1.5 KiB``, ``2.0 MiB``, up to TiB; ``missing`` for
    None. The one formatter of sizes (pages and the command line)."""
    if size is None:
        return missing
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def iso(moment: datetime) -> str:
    """``moment`` as ISO-8601 UTC with a ``Z``."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def human_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def human_time_text(text: str | None) -> str:
    """An ISO timestamp for people; the text itself when unreadable, empty when missing."""
    moment = parse_time(text)
    return human_time(moment) if moment else (text or "")


def iso_text(text: str | None) -> str:
    moment = parse_time(text)
    return iso(moment) if moment else (text or "")


def href_in(base: str, *parts: str) -> str:
    """A relative link ``base/part/...``; each part is percent-encoded (``/`` kept inside
    file paths) so a value can neither break the attribute nor lead out of ``base``."""
    encoded = [quote(p, safe="/") if i else quote(p, safe="") for i, p in enumerate(parts)]
    return "/".join([base.rstrip("/"), *encoded]) if base else "/".join(encoded)


# --- the shared page frame and environment ------------------------------------------------


@dataclass(frozen=True)
class Page:
    """What ``base.html.j2`` needs: title, CSP, inline assets, breadcrumbs, time."""

    title: str
    csp: Markup
    style: Markup
    script: Markup | None
    crumbs: list[tuple[str, str]]
    generated_iso: str
    generated_text: str


def page_frame(
    title: str,
    generated_at: datetime | None = None,
    *,
    crumbs: list[tuple[str, str]] | None = None,
    script: bool = True,
) -> Page:
    """The frame of a report page; ``script`` adds the leaderboard script (sorting)."""
    moment = generated_at or datetime.now(UTC).replace(microsecond=0)
    js = _asset("leaderboard.js") if script else None
    csp = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    if js is not None:
        digest = base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode()
        csp += f"; script-src 'sha256-{digest}'"
    return Page(
        title=title,
        csp=Markup(csp),  # ours, no user text: quotes stay readable
        # our own package files, not user data: inserted as they are
        style=Markup(_asset("style.css")),
        script=Markup(js) if js is not None else None,
        crumbs=crumbs or [],
        generated_iso=iso(moment),
        generated_text=human_time(moment),
    )


def render_page(template_name: str, **context: Any) -> str:
    """Render one of the report templates (autoescaped): the site's own copy from
    ``<site>/report-templates/`` when :func:`use_site_templates` found one, else the
    package's. A site's template that fails (its syntax, a name it uses) is a
    :class:`FlowbatchError` naming the file and line: rewriting fails the same way until
    an admin fixes it."""
    import jinja2  # loaded by _environment() already

    env = _environment()
    try:
        return env.get_template(template_name).render(**context)
    except jinja2.TemplateError as exc:
        folder = _FOLDER[0]
        if folder is None:
            raise  # the package's own: a bug, with its traceback
        where = getattr(exc, "filename", None) or getattr(exc, "name", None)
        line = getattr(exc, "lineno", None)
        place = f"{where}{f', line {line}' if line else ''}" if where else str(folder)
        raise FlowbatchError(
            f"report template {place}: {type(exc).__name__}: {exc.message or exc}",
            hint=f"fix it, or remove it from {folder} to use the package's own "
            "(`flowbatch doctor` checks them)",
        ) from None


#: the folder of a site's own report templates and assets (same names as the package's)
SITE_TEMPLATES = "report-templates"

_ASSETS: dict[str, str] = {}
_ENVS: dict[str | None, jinja2.Environment] = {}
#: the override folder of the site whose reports are being written (one site per daemon)
_FOLDER: list[Path | None] = [None]


def use_site_templates(site_root: Path) -> None:
    """Reports from now on use ``<site_root>/report-templates/`` where it has a file of
    the same name as a package template or asset (``leaderboard.html.j2``,
    ``run.html.j2``, ``index.html.j2``, ``base.html.j2``, ``style.css``,
    ``leaderboard.js``); the package's otherwise."""
    folder = site_root / SITE_TEMPLATES
    _FOLDER[0] = folder if folder.is_dir() else None


def own_templates(*names: str) -> bool:
    """Whether the site's ``report-templates/`` (see :func:`use_site_templates`) has its
    own copy of any of ``names``."""
    folder = _FOLDER[0]
    return folder is not None and any((folder / name).is_file() for name in names)


def _asset(name: str) -> str:
    folder = _FOLDER[0]
    if folder is not None and (folder / name).is_file():
        return (folder / name).read_text(encoding="utf-8").strip()  # an admin's edit shows
    if name not in _ASSETS:
        path = resources.files("flowbatch") / "data" / "report" / name
        _ASSETS[name] = path.read_text(encoding="utf-8").strip()
    return _ASSETS[name]


def _environment() -> jinja2.Environment:
    import jinja2  # here, not at import: a daemon's start and an idle tick render nothing

    folder = _FOLDER[0]
    key = None if folder is None else str(folder)
    env = _ENVS.get(key)
    if env is None:
        package = jinja2.PackageLoader("flowbatch", "data/report")
        env = jinja2.Environment(
            loader=package
            if folder is None
            else jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(folder)), package]),
            autoescape=True,  # every {{ }} is HTML-escaped: values come from users
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            # package data never changes under a running daemon: no stat per page; a
            # site's own templates are checked, so an admin's edit shows at once
            auto_reload=folder is not None,
            # the package's templates compiled once, not at every start (70-100 ms of a
            # daemon's start or a cron tick that writes reports)
            bytecode_cache=_bytecode_cache() if folder is None else None,
        )
        _ENVS[key] = env
    return env


#: the folder, under the daemon user's cache folder, of the compiled report templates
BYTECODE_FOLDER = "report-templates"


def cache_folder() -> Path | None:
    """A folder only this process's user can write, for compiled report templates:
    ``flowbatch/report-templates`` in systemd's ``$CACHE_DIRECTORY`` (``CacheDirectory=``
    of the unit), else in ``$XDG_CACHE_HOME`` or ``~/.cache``. None when it cannot be made
    or is not private (owned by another user, a symlink, open to group or others): what
    is read from it is run as code, so Jinja2 then compiles at every start instead."""
    base = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    if not base:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    if not os.path.isabs(base):
        return None  # no home folder ("~" unexpanded) or a relative setting: not here
    folder = Path(base) / "flowbatch" / BYTECODE_FOLDER
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(folder)
    except OSError:
        return None
    private = stat.S_ISDIR(st.st_mode) and not st.st_mode & 0o077
    return folder if private and st.st_uid == os.geteuid() else None


#: compiled templates not written for this long are removed when another is written
#: (each flowbatch installed elsewhere has its own; one still in use is written again)
CACHE_DAYS = 30


@functools.cache
def _template_cache_class() -> type[jinja2.FileSystemBytecodeCache]:
    """Jinja2's file cache, keyed by the template's name and file and checked against
    its source's hash and the Jinja2 and Python versions (an upgrade recompiles), whose
    writes also remove the files of installs gone for :data:`CACHE_DAYS`. (Defined at
    first use: Jinja2 is imported when a page is first rendered, not at every start.)"""
    import jinja2

    class _TemplateCache(jinja2.FileSystemBytecodeCache):
        def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
            super().dump_bytecode(bucket)
            horizon = time.time() - CACHE_DAYS * 86400
            try:
                with os.scandir(self.directory) as entries:
                    for entry in entries:
                        if entry.name.endswith(".cache") and entry.stat().st_mtime < horizon:
                            os.unlink(entry.path)
            except OSError:
                pass  # a cache: the next write tries again

    return _TemplateCache


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    folder = cache_folder()
    return _template_cache_class()(str(folder), "%s.cache") if folder else None


def check_site_templates(site_root: Path) -> list[str]:
    """Problems of the site's own report templates (syntax errors, with file and line);
    empty when there are none or all parse."""
    folder = site_root / SITE_TEMPLATES
    if not folder.is_dir():
        return []
    import jinja2

    env = jinja2.Environment(autoescape=True)
    problems = []
    for path in sorted(folder.glob("*.j2")):
        try:
            env.parse(path.read_text(encoding="utf-8"))
        except jinja2.TemplateSyntaxError as exc:
            problems.append(f"{path} line {exc.lineno}: {exc.message}")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path}: {exc}")
    return problems


# --- leaderboard rows ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    key: str
    label: str
    numeric: bool
    first: str  # "asc" | "desc": the first click sorts this way (the ranking's direction)


@dataclass(frozen=True)
class _Cell:
    text: str
    # the raw value the script sorts by ("" for missing); None when that is the text: the
    # script then sorts by the text, which is not written a second time
    sort: str | None
    exact: str  # full value (or what a shortened one was) for the tooltip; "" for none
    numeric: bool


#: a text value (a string result or argument) is shown in a leaderboard cell up to this
#: many characters, then cut with an ellipsis: a 100 KiB argument would otherwise be
#: written into every row of both views. The run page shows the whole value.
CELL_CHARS = 200


@dataclass(frozen=True)
class _Link:
    label: str
    href: str
    title: str


@dataclass(frozen=True)
class _Row:
    rank: int
    group: str
    run_label: str
    run_id: str
    href: str
    cells: list[_Cell]
    params: list[_Cell]
    finished_iso: str
    finished_text: str  # compact, to the minute
    finished_title: str  # to the second, for the tooltip
    finished_sort: str
    duration: str
    duration_sort: str
    files: list[_Link]
    version: str = ""


def _value_cell(value: Any, numeric: bool) -> _Cell:
    if numeric and isinstance(value, int | float) and not isinstance(value, bool):
        text = format_number(value)
        exact = repr(value)
        # an int is finite (math.isfinite would convert it to a float: OverflowError for
        # one beyond the float range, which results and arguments refuse but old runs
        # or hand-edited files may hold)
        sort = exact if isinstance(value, int) or math.isfinite(value) else ""
        return _Cell(text, sort, exact if exact != text else "", True)
    text = "" if value is None else str(value)
    if len(text) > CELL_CHARS:
        # sorted by the part shown (the script reads the text when there is no data-sort)
        note = f"{len(text)} characters, shortened here; the run page shows the whole value"
        return _Cell(text[:CELL_CHARS] + "\u2026", None, note, numeric)
    # the script sorts by the text as trimmed by JavaScript (Python's white space and the
    # BOM): a value with such characters at an end keeps its own key
    return _Cell(text, None if text.strip().strip("\ufeff") == text else text, "", numeric)


def display_argument(value: Any) -> Any:
    """An argument as stored in run.json, reduced to what a person recognises: a file
    argument (``{source, target}``) by its file name, lists and records as JSON."""
    if isinstance(value, dict) and "target" in value:
        name = value.get("source") or value.get("target") or ""
        return str(name).rsplit("/", 1)[-1]
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _row(
    columns: list[ResultColumn],
    parameters: Sequence[ParamColumn],
    files: Mapping[str, Sequence[Mapping[str, Any]]],
    entry: RankEntry,
) -> _Row:
    run = entry.run
    cells = [_value_cell(run.results.get(c.name), c.dtype in ("int", "float")) for c in columns]
    params = [
        _value_cell(display_argument(run.arguments.get(p.key)), p.numeric) for p in parameters
    ]
    finished = parse_time(run.finished_at)
    stamp = iso(finished) if finished else ""
    seconds = run_seconds(run)
    run_href = href_in("runs", run.run_id) + "/"
    return _Row(
        rank=entry.rank,
        group=run.group,
        run_label=run.name or run.run_id,
        run_id=run.run_id,
        href=run_href + "index.html",
        cells=cells,
        params=params,
        finished_iso=stamp or (run.finished_at or ""),
        finished_text=finished.strftime("%Y-%m-%d %H:%M") if finished else (run.finished_at or ""),
        finished_title=human_time(finished) if finished else "",
        finished_sort=stamp,
        duration=format_duration(seconds),
        duration_sort="" if seconds is None else f"{seconds:.6f}",
        version=run.version or "",
        files=_file_links(run.run_id, files.get(run.run_id, ()), run_href + "index.html"),
    )


#: files of a run listed in its leaderboard row (the run page lists them all)
FILES_SHOWN = 20


def _file_links(run_id: str, files: Sequence[Mapping[str, Any]], page: str) -> list[_Link]:
    links = [
        _Link(
            label=str(f.get("key") or f.get("source")),
            href=href_in("runs", run_id, str(f.get("source") or f.get("key"))),
            title=str(f.get("title") or ""),
        )
        for f in files[:FILES_SHOWN]
    ]
    if len(files) > FILES_SHOWN:
        more = len(files) - FILES_SHOWN
        links.append(_Link(label=f"{more} more", href=page, title="every file on the run page"))
    return links


# --- chart ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tick:
    text: str
    x: float = 0.0
    y: float = 0.0
    anchor: str = "middle"


@dataclass(frozen=True)
class _Dot:
    x: float
    y: float
    text: str


@dataclass(frozen=True)
class _Series:
    label: str
    color: str
    points: str  # SVG polyline points: numbers only
    dots: list[_Dot]


@dataclass(frozen=True)
class _Chart:
    label: str
    series: list[_Series]
    y_ticks: list[_Tick]
    x_ticks: list[_Tick]
    omitted: int
    width: int = 760
    height: int = 260
    left: int = 64
    top: int = 12
    plot_width: int = 680
    plot_height: int = 214
    #: room left of the frame for y labels longer than ``left`` holds (the view box grows
    #: that way: "-1234567.891" read "34567.891", cut at the edge: found by review)
    pad: int = 0


def chart_runs(
    schema: ResultSchema, best: list[RankEntry], fetch: Callable[[list[str]], list[RankInput]]
) -> list[RankEntry]:
    """Every run of the groups the chart draws (and of the groups before them that it
    cannot draw): ``best`` is the best run of every group, ranked; ``fetch`` gives the
    runs of some groups. Entries in ranked group order; their ``rank`` is 0 (not known)."""
    key = schema.order_by[0] if schema.order_by else None
    if key is None or schema.column(key.name).dtype not in ("int", "float"):
        return []
    groups = [entry.run.group for entry in best]
    out: list[RankEntry] = []
    drawn = start = 0
    while drawn < CHART_GROUPS and start < len(groups):
        batch = groups[start : start + CHART_GROUPS - drawn]
        start += len(batch)
        by_group: dict[str, list[RankEntry]] = {group: [] for group in batch}
        for run in fetch(batch):
            by_group[run.group].append(RankEntry(0, run))
        for members in by_group.values():
            out += members
            drawn += bool(_points(members, key.name))
    return out


def _points(members: list[RankEntry], name: str) -> list[tuple[float, float]]:
    """(finish time, value of ``name``) of the runs that have both, as a chart draws them."""
    points = []
    for entry in members:
        finished = parse_time(entry.run.finished_at)
        value = entry.run.results.get(name)
        if finished is None or not isinstance(value, int | float) or isinstance(value, bool):
            continue
        try:
            number = float(value)
        except OverflowError:  # an int beyond the float range: not drawable
            continue
        if math.isfinite(number):
            points.append((finished.timestamp(), number))
    return points


def _chart(
    schema: ResultSchema, entries: list[RankEntry], *, groups: int | None = None
) -> _Chart | None:
    """Best value of the first sort key over time, one step line per group (the best
    ranked groups first). ``None`` when that key is not numeric or nothing has a time.
    ``groups``: how many groups there are, when ``entries`` holds the first ones only."""
    key = schema.order_by[0]
    if schema.column(key.name).dtype not in ("int", "float"):
        return None
    better = max if key.sort_desc else min
    # the runs of each group, groups in ranked order (the first group met is the best);
    # only the drawn groups' times are parsed: with 100,000 runs that is a few hundred
    by_group: dict[str, list[RankEntry]] = {}
    for entry in entries:
        by_group.setdefault(entry.run.group, []).append(entry)
    drawn: list[tuple[str, list[tuple[float, float]]]] = []
    for group, members in by_group.items():
        if len(drawn) == CHART_GROUPS:
            break
        points = _points(members, key.name)
        if points:
            drawn.append((group, sorted(points)))
    if not drawn:
        return None
    bests: list[tuple[str, list[tuple[float, float]]]] = []
    for group, points in drawn:
        running: list[tuple[float, float]] = []
        for stamp, value in points:
            best = value if not running else better(running[-1][1], value)
            running.append((stamp, best))
        bests.append((group, running))
    total = len(by_group) if groups is None else groups
    return _layout_chart(schema.column(key.name).label, bests, omitted=total - len(drawn))


def _layout_chart(
    label: str, bests: list[tuple[str, list[tuple[float, float]]]], *, omitted: int
) -> _Chart:
    frame = _Chart(label=label, series=[], y_ticks=[], x_ticks=[], omitted=omitted)
    times = [t for _, pts in bests for t, _ in pts]
    values = [v for _, pts in bests for _, v in pts]
    t0, t1 = min(times), max(times)
    v0, v1 = min(values), max(values)
    if t1 - t0 < 1:  # one moment: give the lines some width
        t0, t1 = t0 - 30, t1 + 30
    # Values are any finite floats: the difference of two (1e308 - -1e308) or a padded
    # bound (1.7e308 * 1.1) may overflow, which drew nothing and labelled the axis "inf".
    # Differences are taken of halves (never overflow) and the bounds kept finite.
    if v1 / 2 - v0 / 2 <= abs(v1) / 2 * 1e-12:
        pad = abs(v1) * 0.1 or 1.0
        v0, v1 = max(v0 - pad, -_FLOAT_MAX), min(v1 + pad, _FLOAT_MAX)
    h0, half_span = v0 / 2, v1 / 2 - v0 / 2

    def x(t: float) -> float:
        return round(frame.left + (t - t0) / (t1 - t0) * frame.plot_width, 1)

    def y(v: float) -> float:
        return round(frame.top + (1 - (v / 2 - h0) / half_span) * frame.plot_height, 1)

    series = []
    for i, (group, points) in enumerate(bests):
        coords: list[tuple[float, float]] = []
        dots = []
        for j, (stamp, value) in enumerate(points):
            if j:
                coords.append((x(stamp), y(points[j - 1][1])))  # a step: flat, then up/down
            coords.append((x(stamp), y(value)))
            if j == 0 or value != points[j - 1][1]:
                dots.append(_Dot(x(stamp), y(value), format_number(value)))
        coords.append((x(t1), y(points[-1][1])))  # the best holds until the latest run
        text = " ".join(f"{a},{b}" for a, b in coords)
        series.append(_Series(group, _PALETTE[i % len(_PALETTE)], text, dots))
    levels = [v0, *(2 * (h0 + half_span / 3 * k) for k in (1, 2)), v1]
    y_ticks = [_Tick(format_number(v), y=y(v)) for v in levels]
    x_ticks = [
        _Tick(_short_time(t0), x=x(t0), anchor="start"),
        _Tick(_short_time((t0 + t1) / 2), x=x((t0 + t1) / 2)),
        _Tick(_short_time(t1), x=x(t1), anchor="end"),
    ]
    longest = max((len(t.text) for t in y_ticks), default=0)
    pad = max(0, longest * _LABEL_CHAR + 10 - frame.left)
    return _Chart(
        label=label, series=series, y_ticks=y_ticks, x_ticks=x_ticks, omitted=omitted, pad=pad
    )


#: the width of a label's character at the chart's font size, in view box units (wide
#: enough for digits, a sign, an exponent)
_LABEL_CHAR = 7


def _short_time(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%m-%d %H:%M")
