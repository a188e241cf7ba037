"""The report pages in a real headless Chromium, loaded from file:// as a participant
opens them: the table order, click-to-sort (the page's own script, real click events),
the best/all toggle, escaping, and screenshots a person can look at
(``test-artifacts/leaderboard.png``, ``test-artifacts/run-page.png``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flowbatch import api
from flowbatch.ranking import RankInput, rank
from flowbatch.report import ParamColumn, write_leaderboard
from flowbatch.site import Site
from flowbatch.spec.model import ResultColumn, ResultSchema, SortKey

from .conftest import EXAMPLES, drop, run_until_idle
from .fixtures_browser import Browser, keep_artifact

HOSTILE = "<script>alert(1)</script>"
SCHEMA = ResultSchema(
    file="r.json",
    columns=[
        ResultColumn("score", "Score", "float"),
        ResultColumn("note", "Note", "string", required=False),
    ],
    order_by=[SortKey("score")],
)


def run(run_id: str, group: str, score: float, minute: int, note: str | None = None) -> RankInput:
    results: dict[str, object] = {"score": score}
    if note is not None:
        results["note"] = note
    return RankInput(
        run_id=run_id,
        group=group,
        name=None,
        created_at="2024-03-01T09:00:00Z",
        started_at="2024-03-01T10:00:00Z",
        finished_at=f"2024-03-01T10:{minute:02d}:00Z",
        results=results,
        arguments={"lr": minute / 100},
    )


RUNS = [
    run("r-a1", "alice", 0.50, 10, note="beta"),
    run("r-a2", "alice", 0.90, 40),
    run("r-b1", "bob", 0.70, 20, note="alpha"),
    run("r-c1", HOSTILE, 0.10, 5, note="gamma"),
    run("r-d1", "dora", 0.30, 30),
]


@pytest.fixture
def board(tmp_path: Path) -> Path:
    out = tmp_path / "results" / "wf"
    best = rank(RUNS, SCHEMA)
    everything = rank(RUNS, SCHEMA, include_all=True)
    params = [ParamColumn("lr", "Learning rate", True)]
    write_leaderboard(out, "wf", "Sorting", SCHEMA, best, all_entries=everything, parameters=params)
    return out / "leaderboard.html"


def test_order_and_click_to_sort(browser: Browser, board: Path) -> None:
    # as written: best per group, in rank order
    assert browser.self_test(board)["order"] == ["r-a2", "r-b1", "r-d1", "r-c1"]
    # first click on a result column sorts its ranking way (higher score first) ...
    result = browser.self_test(board, "click:score")
    assert result["clicks"] == [{"key": "score", "sort": "descending"}]
    assert result["order"] == ["r-a2", "r-b1", "r-d1", "r-c1"]
    # ... the second reverses it
    result = browser.self_test(board, "click:score,click:score")
    assert result["clicks"][-1] == {"key": "score", "sort": "ascending"}
    assert result["order"] == ["r-c1", "r-d1", "r-b1", "r-a2"]
    # text columns sort as text; the hostile group is just a string here
    assert browser.self_test(board, "click:group")["order"] == ["r-c1", "r-a2", "r-b1", "r-d1"]
    # a parameter column, numerically
    assert browser.self_test(board, "click:arg-lr")["order"] == ["r-c1", "r-b1", "r-d1", "r-a2"]


def test_missing_values_sort_last_both_ways(browser: Browser, board: Path) -> None:
    up = browser.self_test(board, "view:all,click:note")
    assert up["order"] == ["r-b1", "r-a1", "r-c1", "r-a2", "r-d1"]
    down = browser.self_test(board, "view:all,click:note,click:note")
    assert down["order"][:3] == ["r-c1", "r-a1", "r-b1"]
    assert sorted(down["order"][3:]) == ["r-a2", "r-d1"]  # no note: last, whichever way


def test_a_header_sorts_from_the_keyboard(browser: Browser, board: Path) -> None:
    """Found by review: the headers took clicks only (no focus, no key)."""
    result = browser.self_test(board, "key:score,key:score")
    assert result["clicks"][-1] == {"key": "score", "sort": "ascending"}
    assert result["order"] == ["r-c1", "r-d1", "r-b1", "r-a2"]


def test_all_runs_view(browser: Browser, board: Path) -> None:
    result = browser.self_test(board, "view:all")
    assert result["order"] == ["r-a2", "r-b1", "r-a1", "r-d1", "r-c1"]
    result = browser.self_test(board, "view:all,click:runtime")  # shortest first
    assert result["order"] == ["r-c1", "r-a1", "r-b1", "r-d1", "r-a2"]


def test_hostile_values_stay_text_in_the_browser(browser: Browser, board: Path) -> None:
    dom = browser.dump_dom(board)
    assert len(re.findall(r"<script[ >]", dom)) == 1  # ours only
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in dom


def test_screenshots_of_the_plots_example(
    browser: Browser, public_site: Site, tmp_path: Path
) -> None:
    site = public_site  # post-processing runs as another user (conftest)
    api.install(site, EXAMPLES / "plots", workflow_id="plots")
    for group, samples, seed in (
        ("alice", 2000, 1),
        ("bob", 50000, 2),
        ("carol", 200000, 3),
        ("bob", 400, 4),
        (HOSTILE, 30000, 5),
    ):
        drop(
            site,
            f"{len(list(site.layout.queue.iterdir()))}.yaml",
            {
                "workflow": "plots",
                "group": group,
                "name": f"{samples} samples",
                "arguments": {"samples": samples, "seed": seed},
            },
        )
    run_until_idle(site)
    page = site.layout.workflow_results("plots") / "leaderboard.html"
    board = json.loads(page.with_suffix(".json").read_text())
    ranked = [e["run"]["id"] for e in board["ranking"]]
    assert browser.self_test(page)["order"] == ranked
    shot = browser.screenshot(page, tmp_path / "leaderboard.png", size="1400,1400")
    keep_artifact(shot, "leaderboard.png")
    run_page = Path(api.show_run(site, ranked[0])["run_dir"]) / "index.html"
    keep_artifact(browser.screenshot(run_page, tmp_path / "run-page.png"), "run-page.png")
    front = site.layout.results / "index.html"
    keep_artifact(browser.screenshot(front, tmp_path / "index.png", size="1200,700"), "index.png")
