"""Bounds on what a run puts into the reports: a string result's length, a long text
value's cell on the leaderboard (written once, shortened), the chart with extreme finite
values, a history entry without a message on the run page (Jinja2 and its Python twin
alike), and spreadsheet formulas in the CSV files (the leaderboard's and the plots
example's)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
from pathlib import Path

import pytest

from flowbatch import api
from flowbatch.postproc import postproc_root, read_state
from flowbatch.ranking import rank
from flowbatch.report import (
    CELL_CHARS,
    leaderboard_csv,
    render_leaderboard_html,
    write_leaderboard,
)
from flowbatch.results import MAX_STRING_CHARS
from flowbatch.site import Site

from .conftest import EXAMPLES, SCORE_TEMPLATE, drop, run_until_idle, write_template
from .fixtures_browser import Browser
from .test_browser import SCHEMA, run

#: a score, a label of ``width`` characters and a free text argument shown on the board
LABEL_TEMPLATE = """
workflow:
  steps:
    - name: score
      action:
        commands:
          - >-
            printf '{"score": %s, "label": "%s"}' "${score}"
            "$(head -c ${width} /dev/zero | tr '\\0' W)" > r.json
parameters:
  - {name: score, dtype: float}
  - {name: width, dtype: int}
  - {name: note, dtype: string, defaultValue: ""}
results:
  file: r.json
  schema:
    - {name: score, label: Score, dtype: float}
    - {name: label, label: Label, dtype: string}
"""


def _label_site(site: Site, tmp_path: Path) -> None:
    write_template(tmp_path / "t", LABEL_TEMPLATE)
    api.install(site, tmp_path / "t", workflow_id="wf")


def _runs_by_group(site: Site) -> dict[str, dict[str, object]]:
    return {r["group"]: api.show_run(site, r["id"]) for r in api.list_runs(site)}


def test_a_string_result_longer_than_the_limit_makes_the_run_an_error(
    site: Site, tmp_path: Path
) -> None:
    """A 15 MiB label made a 346 MB leaderboard page and a 315 MB index: a string result
    holds at most MAX_STRING_CHARS characters; one more is an ERROR naming the result and
    the limit, and nothing of it reaches the reports."""
    _label_site(site, tmp_path)
    for group, width in (("fits", MAX_STRING_CHARS), ("long", MAX_STRING_CHARS + 1)):
        args = {"score": 1.0, "width": width}
        drop(site, f"{group}.yaml", {"workflow": "wf", "group": group, "arguments": args})
    run_until_idle(site)
    runs = _runs_by_group(site)
    assert runs["fits"]["state"] == "SUCCESS"
    assert runs["fits"]["results"] == {"score": 1.0, "label": "W" * MAX_STRING_CHARS}
    assert runs["long"]["state"] == "ERROR" and not runs["long"]["results"]
    message = " ".join(runs["long"]["messages"])  # type: ignore[arg-type]
    assert "label" in message and str(MAX_STRING_CHARS) in message
    assert f"{MAX_STRING_CHARS + 1} characters" in message
    assert "W" * 200 not in message  # the value itself is cut short
    board = site.layout.workflow_results("wf")
    data = json.loads((board / "leaderboard.json").read_text())
    assert [row["group"] for row in data["ranking"]] == ["fits"]


def test_text_cells_are_written_once_and_long_ones_shortened(site: Site, tmp_path: Path) -> None:
    """A text cell's value was written twice (data-sort and text), and a 100 KiB
    argument (what intake allows) in full into every row of both views. Now a text cell
    has no data-sort when its text is its sort key, and a value beyond CELL_CHARS shows
    its start, an ellipsis and a title; the run page still shows the whole value."""
    _label_site(site, tmp_path)
    note = "".join(f"{i:07d} " for i in range(100 * 1024 // 8))  # 100 KiB
    label = "W" * MAX_STRING_CHARS
    args = {"score": 2.0, "width": MAX_STRING_CHARS, "note": note}
    drop(site, "a.yaml", {"workflow": "wf", "group": "alice", "arguments": args})
    drop(
        site,
        "b.yaml",
        {"workflow": "wf", "group": "bob", "arguments": {"score": 1.0, "width": 3, "note": "x"}},
    )
    run_until_idle(site)
    runs = _runs_by_group(site)
    assert {g: r["state"] for g, r in runs.items()} == {"alice": "SUCCESS", "bob": "SUCCESS"}
    html = (site.layout.workflow_results("wf") / "leaderboard.html").read_text()
    # alice's row is in both views: each value once per row
    assert html.count(label[: CELL_CHARS + 1]) == 0  # shortened, even a valid result
    assert html.count(label[:CELL_CHARS] + "\u2026</td>") == 2
    assert html.count(note[:CELL_CHARS] + "\u2026</td>") == 2
    assert note[: CELL_CHARS + 1] not in html
    assert html.count(f'title="{len(note)} characters, shortened here') == 2
    assert html.count(f'title="{len(label)} characters, shortened here') == 2
    assert len(html) < 60_000
    assert "<td>WWW</td>" in html and '<td class="param">x</td>' in html  # no data-sort
    # numbers keep their raw value to sort by
    assert 'data-sort="2.0"' in html
    page = (Path(str(runs["alice"]["run_dir"])) / "index.html").read_text()
    assert note in page and label in page


def test_text_columns_sort_by_their_text_in_the_browser(browser: Browser, tmp_path: Path) -> None:
    """Without data-sort the page's script sorts a text column by the cell's text (the
    shortened one by what it shows); missing values stay last both ways."""
    runs = [
        run("r-b", "b", 0.9, 1, note="beta"),
        run("r-a", "a", 0.8, 2, note="alpha"),
        run("r-w", "w", 0.7, 3, note="W" * (CELL_CHARS * 2)),
        run("r-g", "g", 0.6, 4, note="gamma"),
        run("r-m", "m", 0.5, 5),
    ]
    out = tmp_path / "wf"
    write_leaderboard(out, "wf", "Sorting", SCHEMA, rank(runs, SCHEMA))
    page = out / "leaderboard.html"
    assert 'data-sort="beta"' not in page.read_text()
    up = browser.self_test(page, "click:note")
    assert up["clicks"] == [{"key": "note", "sort": "ascending"}]
    assert up["order"] == ["r-a", "r-b", "r-g", "r-w", "r-m"]
    down = browser.self_test(page, "click:note,click:note")
    assert down["order"] == ["r-w", "r-g", "r-b", "r-a", "r-m"]


def test_a_text_with_spaces_around_keeps_its_sort_key() -> None:
    """The script trims a cell's text; a value that trimming would change keeps its own
    data-sort, so it sorts as before."""
    runs = [run("r-1", "a", 1.0, 1, note=" padded "), run("r-2", "b", 0.5, 2, note="\ufeffbom")]
    html = render_leaderboard_html("wf", "t", SCHEMA, rank(runs, SCHEMA))
    assert 'data-sort=" padded "' in html and 'data-sort="\ufeffbom"' in html


def _chart_svg(html: str) -> str:
    match = re.search(r"<svg .*?</svg>", html, re.S)
    assert match, "no chart"
    return match.group(0)


def _assert_drawable(svg: str, groups: int) -> None:
    for word in ("nan", "inf"):
        assert word not in svg.lower(), svg
    for attr in re.findall(r' (?:x|y|cx|cy|x1|x2|y1|y2)="([^"]*)"', svg):
        assert math.isfinite(float(attr)), svg
    lines = re.findall(r'<polyline [^>]*points="([^"]*)"', svg)
    assert len(lines) == groups
    for points in lines:
        pairs = points.split()
        assert len(pairs) >= 2
        for pair in pairs:
            x, y = (float(v) for v in pair.split(","))
            assert 0 <= x <= 760 and 0 <= y <= 260, svg  # inside the drawing
    labels = re.findall(r'text-anchor="end">([^<]*)</text>', svg)
    assert len(labels) >= 4 and all(label.strip() for label in labels)


BIG = 1.7976931348623157e308


@pytest.mark.parametrize(
    "scores",
    [
        [1.7e308],
        [-1.7e308],
        [BIG],
        [1e308, -1e308],
        [BIG, -BIG],
        [BIG, BIG * 0.999999],
        [5e-324, 1e-323],
        [0.0],
    ],
)
def test_the_chart_is_drawn_for_extreme_finite_values(scores: list[float]) -> None:
    """1.7e308 alone, or groups at +-1e308, overflowed the axis (``v1 + pad``,
    ``v1 - v0``): labels nan/inf, y coordinates nan, the leading line not drawn."""
    runs = [run(f"r-{i}", f"g{i}", score, i + 1) for i, score in enumerate(scores)]
    html = render_leaderboard_html("wf", "t", SCHEMA, rank(runs, SCHEMA))
    _assert_drawable(_chart_svg(html), len(scores))


def test_the_daemons_chart_of_scores_at_the_float_limits(site: Site, tmp_path: Path) -> None:
    write_template(tmp_path / "t", SCORE_TEMPLATE)
    api.install(site, tmp_path / "t", workflow_id="wf")
    for group, score in (("top", "1.7e308"), ("low", "-1.7e308")):
        args = {"score": score}
        drop(site, f"{group}.yaml", {"workflow": "wf", "group": group, "arguments": args})
    run_until_idle(site)
    assert {r["state"] for r in api.list_runs(site)} == {"SUCCESS"}
    html = (site.layout.workflow_results("wf") / "leaderboard.html").read_text()
    _assert_drawable(_chart_svg(html), 2)


def test_a_history_entry_without_a_message_renders_alike(
    hello_site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run.html.j2 read ``change.message`` under StrictUndefined: a history entry without
    that key (an older record, a hand-edited one) raised in Jinja2 while the Python twin
    rendered it. Both now give the same page."""
    from datetime import UTC, datetime

    from flowbatch import report, report_pages

    site = hello_site
    (site.layout.queue / "names.txt").write_text("Alice\n")
    drop(
        site,
        "a.yaml",
        {"workflow": "helloworld", "group": "alice", "arguments": {"names": "names.txt"}},
    )
    run_until_idle(site)
    (run_id,) = [r["id"] for r in api.list_runs(site)]
    run_dir = Path(api.show_run(site, run_id)["run_dir"])
    run = site.store.load_dir(run_dir)
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    frame = report_pages.page_frame
    monkeypatch.setattr(
        report_pages, "page_frame", lambda *a, **k: frame(*a, generated_at=moment, **k)
    )
    monkeypatch.setattr(report, "_FOLDER", [None])  # this test's choice, undone after it
    report.use_site_templates(site.root)
    bare = dataclasses.replace(
        run,
        history=[
            *({k: v for k, v in h.items() if k != "message"} for h in run.history),
            {"state": "ERROR", "at": "later", "message": "<why>"},
            {"state": "ERROR", "at": "later", "message": None},
        ],
    )
    template = report_pages._template(site, bare)
    fast = report_pages.render_run_page(run_dir, bare, template)
    with monkeypatch.context() as m:
        m.setattr(report_pages, "own_templates", lambda *names: True)
        slow = report_pages.render_run_page(run_dir, bare, template)
    assert fast == slow
    assert "&lt;why&gt;" in fast and "None</td>" not in fast


# --- spreadsheet formulas ------------------------------------------------------------------

FORMULAS = [
    "=1+1",
    "+1",
    "-1",
    "@SUM(A1)",
    "\t=1",
    "\r=1",
    "\n=1+1",  # LF, as some guides add to OWASP's list
    " =1+1",  # spaces, then a formula: trimmed on import by some spreadsheets
    "   @x",
    "\0=1",
    " \0 -2",
    " \u00a0=2+2",  # a no-break space, an em space, an ideographic space (found by review)
    "\u2003@x",
    "\u3000+1",
]
PLAIN = ["a=b", "  plain", "x-1", "", " ", "'=already", "x\r=1+1", "y\n@z", "a\r\nb"]


def test_the_leaderboard_csv_quotes_formulas_after_spaces_and_line_breaks() -> None:
    """OWASP's rule (= + - @ TAB CR at the start) plus LF, and the same after leading
    spaces or NULs. A cell holding a CR is quoted (Python's writer quoted only LF, the
    terminator used): a spreadsheet ends a row at a bare CR, and the rest of the cell,
    ``=1+1``, was a formula of a row of its own. Lines still end with LF."""
    runs = [
        run(f"r-{i}", f"g{i}", float(i), i + 1, note=text)
        for i, text in enumerate(FORMULAS + PLAIN)
    ]
    text = leaderboard_csv(SCHEMA, rank(runs, SCHEMA))
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == 1 + len(FORMULAS) + len(PLAIN)
    assert text.startswith("rank,group,run_id,run_name,score,note,created_at,") and (
        text.split("\n", 1)[0].endswith("run_seconds")
    )
    assert '"x\r=1+1"' in text and text.endswith("\n") and not text.endswith("\r\n")
    notes = {row[2]: row[5] for row in rows[1:]}
    for i, text in enumerate(FORMULAS):
        assert notes[f"r-{i}"] == "'" + text, text
    for i, text in enumerate(PLAIN, start=len(FORMULAS)):
        assert notes[f"r-{i}"] == text, text


def test_the_plots_examples_summary_quotes_a_formula_group(public_site: Site) -> None:
    """The plots example's summary.csv wrote participants' group names as they are: a
    group ``=HYPERLINK(...)`` was a formula in a spreadsheet."""
    site = public_site  # post-processing runs as another user (conftest)
    api.install(site, EXAMPLES / "plots", workflow_id="plots")
    groups = ['=HYPERLINK("http://evil/","x")', "alice"]
    for i, group in enumerate(groups):
        args = {"samples": 100 * (i + 1), "seed": 1}
        drop(site, f"r{i}.yaml", {"workflow": "plots", "group": group, "arguments": args})
    run_until_idle(site)
    assert {r["state"] for r in api.list_runs(site)} == {"SUCCESS"}
    latest = read_state(site, "plots")["last_success"]
    summary = postproc_root(site, "plots") / latest / "results" / "summary.csv"
    rows = list(csv.reader(io.StringIO(summary.read_text(encoding="utf-8"), newline="")))
    shown = sorted(row[1] for row in rows[1:])
    assert shown == ["'" + groups[0], "alice"]
    board = (site.layout.workflow_results("plots") / "leaderboard.csv").read_text()
    assert "'=HYPERLINK" in board


def test_leaderboard_json_shortens_long_arguments_and_says_which(
    site: Site, tmp_path: Path
) -> None:
    """leaderboard.json held every argument in full for each of up to 2,000 runs (100 KiB
    a value: gigabytes, rewritten at every change); a long one is shortened there and
    named, and `runs show` keeps the whole value."""
    from flowbatch.report import JSON_ARGUMENT_CHARS

    _label_site(site, tmp_path)
    note = "n" * (JSON_ARGUMENT_CHARS + 500)
    drop(
        site,
        "a.yaml",
        {"workflow": "wf", "group": "alice", "arguments": {"score": 2.0, "width": 3, "note": note}},
    )
    drop(
        site,
        "b.yaml",
        {
            "workflow": "wf",
            "group": "bob",
            "arguments": {"score": 1.0, "width": 3, "note": "short"},
        },
    )
    run_until_idle(site)
    board = json.loads((site.layout.workflow_results("wf") / "leaderboard.json").read_text())
    for view in ("ranking", "all"):
        alice, bob = board[view]
        assert alice["arguments"]["note"] == "n" * JSON_ARGUMENT_CHARS + "\u2026"
        assert alice["arguments_shortened"] == ["note"]
        assert bob["arguments"]["note"] == "short" and "arguments_shortened" not in bob
    assert _runs_by_group(site)["alice"]["arguments"]["note"] == note  # type: ignore[index]


def test_long_axis_labels_fit_in_the_chart() -> None:
    """Found by review: labels longer than the frame's margin ("-1234567.891") ran past
    the picture's left edge and read as other numbers ("34567.891"). The view box grows
    left by what the longest one needs."""
    from flowbatch.report import _LABEL_CHAR

    runs = [run("r-a", "a", -1234567.891, 1), run("r-b", "b", 1e308, 2)]
    svg = _chart_svg(render_leaderboard_html("wf", "t", SCHEMA, rank(runs, SCHEMA)))
    box = re.search(r'viewBox="(-?[\d.]+) ', svg)
    assert box is not None
    labels = re.findall(r'text-anchor="end">([^<]+)</text>', svg)
    xs = [float(x) for x in re.findall(r'<text x="([\d.]+)" y="[\d.]+" text-anchor="end">', svg)]
    assert labels and xs
    left_edge = min(x - len(t) * _LABEL_CHAR for x, t in zip(xs, labels, strict=False))
    assert float(box.group(1)) <= left_edge, (box.group(1), labels)
