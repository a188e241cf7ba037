"""Leaderboard files: JSON shape, HTML content, escaping of hostile values, empty ranking."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
from html import escape as html_escape
from pathlib import Path

import pytest

from flowbatch.ranking import RankInput, rank, rank_views
from flowbatch.report import (
    ParamColumn,
    PostProcOutput,
    PostProcRunView,
    PostProcView,
    format_duration,
    format_number,
    write_leaderboard,
)
from flowbatch.site import Site
from flowbatch.spec.model import ResultColumn, ResultSchema, SortKey

from .conftest import drop, run_until_idle

SCHEMA = ResultSchema(
    file="results.json",
    columns=[
        ResultColumn("score", "Score <avg>", "float"),
        ResultColumn("steps", "Steps", "int"),
        ResultColumn("note", "Note", "string", required=False),
    ],
    order_by=[SortKey("score")],
)

HOSTILE = "<script>alert(1)</script>"


def make_run(
    run_id: str,
    group: str,
    score: float,
    *,
    name: str | None = None,
    note: str | None = None,
    started: str | None = "2024-03-01T10:00:00Z",
    finished: str | None = "2024-03-01T10:03:04Z",
) -> RankInput:
    results: dict[str, object] = {"score": score, "steps": 12}
    if note is not None:
        results["note"] = note
    return RankInput(
        run_id=run_id,
        group=group,
        name=name,
        created_at="2024-03-01T09:59:00Z",
        started_at=started,
        finished_at=finished,
        results=results,
        arguments={"lr": 0.01},
        version="1",
    )


def runs() -> list[RankInput]:
    return [
        make_run("r1", "alice", 0.123456789, name="first try"),
        make_run("r2", "alice", 0.5),
        make_run("r3", "bob", 1234.56789, finished="2024-03-01T10:00:01.2Z"),
    ]


def test_files_written_with_json_shape(tmp_path: Path) -> None:
    out = tmp_path / "results" / "wf"
    best = rank(runs(), SCHEMA)
    write_leaderboard(out, "wf", "My benchmark", SCHEMA, best)
    assert sorted(p.name for p in out.iterdir()) == [
        "leaderboard.csv",
        "leaderboard.html",
        "leaderboard.json",
    ]
    data = json.loads((out / "leaderboard.json").read_text())
    # the stable keys come first and keep their names; new ones are only added
    assert list(data)[:3] == ["workflow", "schema", "ranking"]
    assert list(data["ranking"][0])[:5] == ["rank", "run", "group", "results", "arguments"]
    assert data["workflow"] == "wf"
    assert [c["name"] for c in data["schema"]] == ["score", "steps", "note"]
    assert [row["run"]["id"] for row in data["ranking"]] == ["r3", "r2"]
    assert [row["rank"] for row in data["ranking"]] == [1, 2]
    assert data["ranking"][0]["results"] == {"score": 1234.56789, "steps": 12, "note": None}
    assert data["ranking"][0]["arguments"] == {"lr": 0.01}
    assert data["generated_at"].endswith("Z")
    assert "all" not in data


def test_all_entries_added(tmp_path: Path) -> None:
    best = rank(runs(), SCHEMA)
    everything = rank(runs(), SCHEMA, include_all=True)
    write_leaderboard(tmp_path, "wf", "T", SCHEMA, best, all_entries=everything)
    data = json.loads((tmp_path / "leaderboard.json").read_text())
    assert [row["run"]["id"] for row in data["all"]] == ["r3", "r2", "r1"]
    html = (tmp_path / "leaderboard.html").read_text()
    assert "All successful runs" in html


def test_all_runs_view_is_bounded_and_says_how_many(tmp_path: Path) -> None:
    """leaderboard.json and the page hold the best ``all_shown`` runs of the all-runs
    ranking (files stay small at 100,000 runs), with the total and where to get them all."""
    many = [make_run(f"r{i:02d}", f"g{i % 3}", float(i)) for i in range(10)]
    best, everything = rank_views(many, SCHEMA)
    assert [e.run.run_id for e in best] == [e.run.run_id for e in rank(many, SCHEMA)]
    write_leaderboard(tmp_path, "wf", "T", SCHEMA, best, all_entries=everything, all_shown=4)
    data = json.loads((tmp_path / "leaderboard.json").read_text())
    assert [row["run"]["id"] for row in data["all"]] == ["r09", "r08", "r07", "r06"]
    assert data["all_total"] == 10
    assert [row["run"]["id"] for row in data["ranking"]] == ["r09", "r08", "r07"]
    html = (tmp_path / "leaderboard.html").read_text()
    assert "the 4 best of 10 runs" in html
    assert "flowbatch ranking wf --all --json" in html
    assert 'data-run="r05"' not in html  # sixth of all, no group's best


def test_arguments_are_parsed_only_when_read() -> None:
    lazy = RankInput("r1", "g", None, "t", None, None, {}, arguments_json='{"lr": 0.5}')
    assert lazy._arguments is None  # nothing parsed while ranking
    assert lazy.arguments == {"lr": 0.5}
    broken = RankInput("r2", "g", None, "t", None, None, {}, arguments_json="{not json")
    assert broken.arguments == {}  # a broken index row shows no arguments, never crashes
    assert RankInput("r3", "g", None, "t", None, None, {}).arguments == {}


def test_html_content(tmp_path: Path) -> None:
    write_leaderboard(tmp_path, "wf", "My benchmark", SCHEMA, rank(runs(), SCHEMA))
    html = (tmp_path / "leaderboard.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "<title>My benchmark</title>" in html
    for header in ("Rank", "Group", "Run", "Score &lt;avg&gt;", "Steps", "Note", "Run time"):
        assert header in html
    assert 'href="runs/r3/index.html"' in html
    assert "1234.5679" in html  # at most 4 decimals
    assert "3 min 4 s" in html
    assert "1.2 s" in html
    assert "2024-03-01 10:03:04 UTC" in html
    # self-contained: nothing fetched; one script, ours, allowed by its hash only
    assert html.count("<script") == 1
    script = re.search(r"<script>(.*?)</script>", html, re.S)
    assert script is not None
    digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in html
    assert "unsafe-inline'; img-src data:" in html and "script-src 'unsafe-inline'" not in html
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html


def test_run_name_shown_else_id(tmp_path: Path) -> None:
    entries = rank(runs(), SCHEMA, include_all=True)
    write_leaderboard(tmp_path, "wf", "T", SCHEMA, entries)
    html = (tmp_path / "leaderboard.html").read_text()
    assert ">first try</a>" in html
    assert ">r2</a>" in html


def test_hostile_values_are_escaped(tmp_path: Path) -> None:
    bad = [
        make_run(
            "r1", HOSTILE, 1.0, name='"><img src=x onerror=alert(2)>', note="<b>bold</b> & co"
        ),
        make_run('x"/../../y', "g2", 0.5),
    ]
    write_leaderboard(tmp_path, "wf", f"Title {HOSTILE}", SCHEMA, rank(bad, SCHEMA))
    html = (tmp_path / "leaderboard.html").read_text()
    assert HOSTILE not in html
    assert html.count("<script") == 1  # ours
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img" not in html and "&lt;img src=x" in html
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt; &amp; co" in html
    # a run id cannot lead a link out of runs/
    assert 'href="runs/x%22%2F..%2F..%2Fy/index.html"' in html
    # the JSON keeps the raw text (it is data, escaped by whoever renders it)
    data = json.loads((tmp_path / "leaderboard.json").read_text())
    assert data["ranking"][0]["group"] == HOSTILE


def test_empty_ranking(tmp_path: Path) -> None:
    write_leaderboard(tmp_path, "wf", "Nothing yet", SCHEMA, [])
    html = (tmp_path / "leaderboard.html").read_text()
    assert "No successful runs yet" in html
    assert "<table" not in html
    data = json.loads((tmp_path / "leaderboard.json").read_text())
    assert data["ranking"] == []


def test_rewrite_replaces_files(tmp_path: Path) -> None:
    write_leaderboard(tmp_path, "wf", "T", SCHEMA, [])
    write_leaderboard(tmp_path, "wf", "T", SCHEMA, rank(runs(), SCHEMA))
    assert "No successful runs yet" not in (tmp_path / "leaderboard.html").read_text()
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "leaderboard.csv",
        "leaderboard.html",
        "leaderboard.json",
    ]


def test_unknown_times_leave_cells_empty(tmp_path: Path) -> None:
    r = make_run("r1", "g", 1.0, started=None, finished=None)
    write_leaderboard(tmp_path, "wf", "T", SCHEMA, rank([r], SCHEMA))
    assert "r1" in (tmp_path / "leaderboard.html").read_text()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "0"),
        (2.0, "2"),
        (1.23456789, "1.2346"),
        (1234.5, "1234.5"),
        (0.000123456, "0.0001235"),
        (1e-7, "1e-07"),
        (-3.25, "-3.25"),
        (42, "42"),
        (None, ""),
    ],
)
def test_format_number(value: float | None, text: str) -> None:
    assert format_number(value) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.4, "0.4 s"),
        (1.23, "1.2 s"),
        (59.97, "1 min 0 s"),
        (184, "3 min 4 s"),
        (7500, "2 h 5 min"),
        (90000, "1 d 1 h"),
        (None, ""),
        (-5, ""),
    ],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


# -- the rich page: parameters, files, views, chart, post-processing, CSV --------------------

PARAMS = [ParamColumn("lr", "Learning rate", True)]
FILES = {"r3": [{"key": "plot", "source": "results/a b.png", "title": "A plot"}]}


def test_parameters_files_and_views(tmp_path: Path) -> None:
    best = rank(runs(), SCHEMA)
    everything = rank(runs(), SCHEMA, include_all=True)
    write_leaderboard(
        tmp_path, "wf", "T", SCHEMA, best, all_entries=everything, parameters=PARAMS, files=FILES
    )
    html = (tmp_path / "leaderboard.html").read_text()
    assert ">Learning rate</th>" in html and 'data-sort="0.01"' in html
    # each output file links into its run folder, the path percent-encoded
    assert 'href="runs/r3/results/a%20b.png" title="A plot">plot</a>' in html
    # both views are in the page, shown one after the other without a script (found by
    # review: "all runs" could not be reached without JavaScript); the script makes the
    # tabs, which start hidden
    assert 'data-view="best"' in html and 'data-view="all" id="view-all"' in html
    assert (
        'data-view="all" hidden' not in html and '<div class="tabs" role="tablist" hidden>' in html
    )
    assert html.count('<tr data-run="') == len(best) + len(everything)
    # sortable headers carry the ranking's direction for their first click
    assert 'data-key="score" data-type="num" data-first="desc"' in html
    data = json.loads((tmp_path / "leaderboard.json").read_text())
    assert data["ranking"][0]["files"] == [
        {"key": "plot", "source": "results/a b.png", "title": "A plot"}
    ]
    assert data["ranking"][0]["run_seconds"] == pytest.approx(1.2)
    assert data["order_by"] == [{"name": "score", "sort_desc": True}]


def test_chart_draws_best_so_far_per_group(tmp_path: Path) -> None:
    history = [
        make_run("a1", "alice", 0.2, finished="2024-03-01T10:00:00Z"),
        make_run("a2", "alice", 0.1, finished="2024-03-01T11:00:00Z"),  # worse: line stays
        make_run("a3", "alice", 0.6, finished="2024-03-01T12:00:00Z"),  # better: steps up
        make_run("b1", HOSTILE, 0.4, finished="2024-03-01T10:30:00Z"),
    ]
    everything = rank(history, SCHEMA, include_all=True)
    write_leaderboard(tmp_path, "wf", "T", SCHEMA, rank(history, SCHEMA), all_entries=everything)
    html = (tmp_path / "leaderboard.html").read_text()
    svg = html[html.index("<svg") : html.index("</svg>")]
    lines = re.findall(r'<polyline [^>]*points="([^"]+)"', svg)
    assert len(lines) == 2
    alice = [tuple(map(float, p.split(","))) for p in lines[0].split()]
    ys = [y for _, y in alice]
    # best so far: 0.2, held at 0.2 (0.1 is worse), then up to 0.6 (smaller y is higher)
    assert ys[0] == ys[1] == ys[2] and ys[-1] < ys[0]
    assert "<title>alice: 0.6</title>" in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and HOSTILE not in html


def test_an_int_beyond_the_float_range_does_not_stop_the_write(tmp_path: Path) -> None:
    """Results and arguments refuse integers of 2**63 or more, but a run of an older
    flowbatch (or a hand-edited run.json) may hold a 401-digit one: the leaderboard is
    still written, the value shown as it is and left out of the chart (no float has it)."""
    huge = 10**400
    schema = ResultSchema("r.json", SCHEMA.columns, [SortKey("steps")])
    history = [
        make_run("a1", "alice", 0.2, finished="2024-03-01T10:00:00Z"),
        make_run("a2", "alice", 0.3, finished="2024-03-01T11:00:00Z"),
        make_run("b1", "bob", 0.4, finished="2024-03-01T10:30:00Z"),
    ]
    history[0].results["steps"] = huge
    history[1].arguments["n"] = -huge
    everything = rank(history, schema, include_all=True)
    best = rank(history, schema)
    assert best[0].run.run_id == "a1"  # the reference ranks it as the number it is
    params = [ParamColumn("n", "N", True)]
    write_leaderboard(tmp_path, "wf", "T", schema, best, all_entries=everything, parameters=params)
    html = (tmp_path / "leaderboard.html").read_text()
    assert str(huge) in html and str(-huge) in html
    svg = html[html.index("<svg") : html.index("</svg>")]
    assert "<title>bob: 12</title>" in svg and str(huge) not in svg
    data = json.loads((tmp_path / "leaderboard.json").read_text())
    assert data["ranking"][0]["results"]["steps"] == huge


def test_chart_left_out_for_a_text_sort_key(tmp_path: Path) -> None:
    schema = ResultSchema("r.json", SCHEMA.columns, [SortKey("note")])
    write_leaderboard(tmp_path, "wf", "T", schema, rank(runs(), schema))
    assert "<svg" not in (tmp_path / "leaderboard.html").read_text()


def test_postproc_outputs_and_error_shown(tmp_path: Path) -> None:
    good = PostProcRunView(
        id="pp-1",
        state="SUCCESS",
        started_at="2024-03-01T10:00:00Z",
        finished_at="2024-03-01T10:00:05Z",
        runs=2,
        outputs=[
            PostProcOutput(
                "Plot",
                "p.svg",
                "postproc/pp-1/p.svg",
                "A caption",
                "image",
                "data:image/svg+xml;base64,PHN2Zy8+",
            ),
            PostProcOutput(
                "Table",
                "t.csv",
                "postproc/pp-1/t.csv",
                None,
                "table",
                table=[["a", "b"], ["1", HOSTILE]],
            ),
        ],
    )
    bad = PostProcRunView(
        id="pp-2",
        state="ERROR",
        started_at=None,
        finished_at="2024-03-01T11:00:00Z",
        runs=2,
        messages=["step 1 (plot) failed with exit code 3"],
    )
    best = rank(runs(), SCHEMA)
    write_leaderboard(
        tmp_path, "wf", "T", SCHEMA, best, postproc=PostProcView(latest=bad, shown=good)
    )
    html = (tmp_path / "leaderboard.html").read_text()
    assert '<span class="badge ERROR">ERROR</span>' in html
    assert "step 1 (plot) failed with exit code 3" in html
    assert "last successful post-processing run <code>pp-1</code>" in html
    assert '<img src="data:image/svg+xml;base64,PHN2Zy8+" alt="Plot">' in html
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in html
    data = json.loads((tmp_path / "leaderboard.json").read_text())
    assert data["postproc"]["latest"]["state"] == "ERROR" and data["postproc"]["shown"] == "pp-1"
    # the ranking itself is untouched by post-processing
    assert [r["run"]["id"] for r in data["ranking"]] == [e.run.run_id for e in best]


def test_csv(tmp_path: Path) -> None:
    hostile = [make_run("r1", '=HYPERLINK("x")', 2.0, name="-1+1"), *runs()]
    write_leaderboard(tmp_path, "wf", "T", SCHEMA, rank(hostile, SCHEMA), parameters=PARAMS)
    rows = list(csv.reader(io.StringIO((tmp_path / "leaderboard.csv").read_text())))
    assert rows[0] == [
        "rank",
        "group",
        "run_id",
        "run_name",
        "score",
        "steps",
        "note",
        "arg:lr",
        "created_at",
        "started_at",
        "finished_at",
        "run_seconds",
    ]
    assert [r[2] for r in rows[1:]] == ["r3", "r1", "r2"]
    # a spreadsheet must not run a user's text as a formula
    assert rows[2][1] == '\'=HYPERLINK("x")' and rows[2][3] == "'-1+1"
    assert rows[1][4] == "1234.56789" and rows[1][7] == "0.01" and rows[1][11] == "1.200"


def test_compiled_report_templates_are_kept_in_a_private_cache_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The package's report templates are compiled once and kept in the user's cache
    folder ($CACHE_DIRECTORY under systemd, else $XDG_CACHE_HOME): a later daemon loads
    them instead of compiling (70-100 ms a start). What is read from there is run as code,
    so a folder that is not private to this user is not used."""
    import os
    import time

    import jinja2

    from flowbatch import report

    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(report, "_ENVS", {})
    monkeypatch.setattr(report, "_FOLDER", [None])
    folder = tmp_path / "xdg" / "flowbatch" / report.BYTECODE_FOLDER
    write_leaderboard(tmp_path / "one", "wf", "T", SCHEMA, rank(runs(), SCHEMA))
    assert folder.is_dir() and (folder.stat().st_mode & 0o777) == 0o700
    kept = sorted(p.name for p in folder.iterdir())
    assert len(kept) == 2, kept  # leaderboard.html.j2 and the base.html.j2 it extends
    first = (tmp_path / "one" / "leaderboard.html").read_text()

    # a new process (a new environment): loaded, not compiled
    monkeypatch.setattr(report, "_ENVS", {})

    def no_compile(*args: object, **kwargs: object) -> None:
        raise AssertionError("compiled again")

    with monkeypatch.context() as m:
        m.setattr(jinja2.Environment, "compile", no_compile)
        write_leaderboard(tmp_path / "two", "wf", "T", SCHEMA, rank(runs(), SCHEMA))
    again = (tmp_path / "two" / "leaderboard.html").read_text()
    assert again.split("<footer>")[0] == first.split("<footer>")[0]

    # a write removes what no install has written for a month (a flowbatch gone)
    old = folder / "0123456789abcdef.cache"
    old.write_bytes(b"from an install gone")
    month = time.time() - (report.CACHE_DAYS + 1) * 86400
    os.utime(old, (month, month))
    kept = folder / kept[0]
    os.utime(kept, (month + 86400 * 2, month + 86400 * 2))  # 29 days: still kept
    monkeypatch.setattr(report, "_ENVS", {})
    report._environment().get_template("index.html.j2")  # compiled and written
    assert not old.exists() and kept.exists() and len(list(folder.iterdir())) == 3

    # systemd's CacheDirectory= wins
    monkeypatch.setenv("CACHE_DIRECTORY", str(tmp_path / "sd"))
    assert report.cache_folder() == tmp_path / "sd" / "flowbatch" / report.BYTECODE_FOLDER

    # no home folder: nowhere (not a "~" folder made where the daemon runs)
    monkeypatch.setenv("CACHE_DIRECTORY", "")
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", "relative")
    assert report.cache_folder() is None
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    # not private: not used (the templates compile at each start instead)
    monkeypatch.delenv("CACHE_DIRECTORY")
    os.chmod(folder, 0o770)
    assert report.cache_folder() is None
    os.chmod(folder, 0o700)
    assert report.cache_folder() == folder
    if os.geteuid() == 0:
        os.chown(folder, 65534, 65534)
        assert report.cache_folder() is None
        os.chown(folder, 0, 0)
    moved = folder.rename(tmp_path / "elsewhere")
    folder.symlink_to(moved)
    assert report.cache_folder() is None
    monkeypatch.setattr(report, "_ENVS", {})
    write_leaderboard(tmp_path / "three", "wf", "T", SCHEMA, rank(runs(), SCHEMA))
    assert (tmp_path / "three" / "leaderboard.html").is_file()  # compiled, still written


def test_the_manifests_description_and_instructions_head_the_leaderboard(hello_site: Site) -> None:
    """docs/organisers.md says instructions.md is "shown to participants": it was shown
    nowhere (found by review). The leaderboard opens with them, and `workflows show` says
    them."""
    from click.testing import CliRunner

    from flowbatch.cli import main

    drop(hello_site, "a.yaml", {"workflow": "helloworld"})
    run_until_idle(hello_site)
    meta = hello_site.templates.meta("helloworld")
    assert meta["instructions"] and meta["description"]
    html = (hello_site.layout.workflow_results("helloworld") / "leaderboard.html").read_text()
    assert "<summary>Instructions</summary>" in html
    first_line = meta["instructions"].strip().splitlines()[0]
    assert html_escape(first_line, quote=False) in html
    assert html_escape(meta["description"], quote=False) in html
    shown = CliRunner().invoke(
        main, ["--site", str(hello_site.root), "workflows", "show", "helloworld"]
    )
    assert shown.exit_code == 0 and "instructions:" in shown.output and first_line in shown.output


def test_new_instructions_of_the_same_content_reach_the_leaderboard_at_once(
    hello_site: Site, tmp_path: Path
) -> None:
    """Found by review: installing the template again with new instructions alone (the
    same version) said "already installed", and the leaderboard kept the old text until
    `flowbatch report`."""
    import shutil

    from click.testing import CliRunner

    from flowbatch.cli import main

    from .conftest import EXAMPLES

    drop(hello_site, "a.yaml", {"workflow": "helloworld"})
    run_until_idle(hello_site).stop()
    folder = tmp_path / "hello"
    shutil.copytree(EXAMPLES / "helloworld", folder)
    (folder / "instructions.md").write_text("Greet everyone, *politely*.\n")
    hello_site.close()
    done = CliRunner().invoke(
        main, ["--site", str(hello_site.root), "install", str(folder), "--id", "helloworld"]
    )
    assert done.exit_code == 0, done.output
    assert "already installed (its name, description or instructions updated)" in done.output
    html = (hello_site.layout.workflow_results("helloworld") / "leaderboard.html").read_text()
    assert "Greet everyone" in html
