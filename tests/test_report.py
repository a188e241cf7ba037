"""Leaderboard files: JSON shape, HTML content, escaping of hostile values, empty ranking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowbatch.ranking import RankInput, rank
from flowbatch.report import format_duration, format_number, write_leaderboard
from flowbatch.spec.model import ResultColumn, ResultSchema, SortKey

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
    assert sorted(p.name for p in out.iterdir()) == ["leaderboard.html", "leaderboard.json"]
    data = json.loads((out / "leaderboard.json").read_text())
    assert list(data) == ["workflow", "schema", "ranking", "generated_at"]
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


def test_html_content(tmp_path: Path) -> None:
    write_leaderboard(tmp_path, "wf", "My benchmark", SCHEMA, rank(runs(), SCHEMA))
    html = (tmp_path / "leaderboard.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "<title>My benchmark</title>" in html
    for header in ("Rank", "Group", "Run", "Score &lt;avg&gt;", "Steps", "Note", "Run time"):
        assert header in html
    assert 'href="runs/r3/"' in html
    assert "1234.5679" in html  # at most 4 decimals
    assert "3 min 4 s" in html
    assert "1.2 s" in html
    assert "2024-03-01 10:03:04 UTC" in html
    # self-contained: nothing fetched, nothing executed
    assert "<script" not in html
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
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img" not in html and "&lt;img src=x" in html
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt; &amp; co" in html
    # a run id cannot lead a link out of runs/
    assert 'href="runs/x%22%2F..%2F..%2Fy/"' in html
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leaderboard.html", "leaderboard.json"]


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
