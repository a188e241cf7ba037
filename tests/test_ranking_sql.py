"""The leaderboard's views through the index (flowbatch.ranking_sql) against the reference
ranking in Python, on SQLite and on PostgreSQL (``db_url``, tests/fixtures_postgres.py).

Every test compares with the reference path (``python=True``: every run read and ranked
by flowbatch.ranking) and checks which path answered, so a change that quietly sends
everything the reference way, or lets the index rank what it cannot, fails here.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from flowbatch import api, publish, ranking_sql
from flowbatch import report as report_mod
from flowbatch.ranking import RankEntry
from flowbatch.ranking_sql import LeaderboardViews, leaderboard_views
from flowbatch.runs import RunRecord
from flowbatch.site import Site
from flowbatch.spec.model import ResultColumn, ResultSchema, SortKey
from flowbatch.store.index import ResultRow

from .conftest import make_site, write_template
from .services.postgres import HOST, USER

COLUMNS = [
    ResultColumn("score", "Score", "float", required=False),
    ResultColumn("steps", "Steps", "int", required=False),
    ResultColumn("model", "Model", "string", required=False),
]
GROUPS = ["alice", "bob", "Émile", "zoë", "日本", "g\U0001f600", "", "a b", "Z", "zz"]
#: code point order differs from UTF-16's and from any locale's here
MODELS = ["a", "ab", "B", "b", "", "é", "e\u0301", "\uffff", "\U0001f600", "Z", "zz", "a\u00a0"]
#: ties on purpose; the forms differ in offset and precision (Python compares instants)
FINISHED = [
    "2024-01-01T10:00:00.000000+00:00",
    "2024-01-01T10:00:00Z",
    "2024-01-01T12:00:00+02:00",
    "2024-01-01T09:59:59.999999+00:00",
    "2024-01-02T00:00:00",
    "not a time",
    None,
]


@pytest.fixture
def site(tmp_path: Path, db_url: str | None) -> Iterator[Site]:
    s = make_site(tmp_path / "site", {"database": db_url} if db_url else None)
    s.store  # noqa: B018 - opens the index
    yield s
    s.close()


def record(
    run_id: str,
    workflow: str,
    group: str,
    results: dict[str, Any] | None,
    *,
    finished: str | None = FINISHED[0],
    version: str = "1",
    state: str = "SUCCESS",
) -> RunRecord:
    return RunRecord.from_dict(
        {
            "id": run_id,
            "workflow": workflow,
            "version": version,
            "group": group,
            "name": None,
            "owner_uid": 1000,
            "owner": "u",
            "request": f"{run_id}.yaml",
            "created_at": "2024-01-01T00:00:00.000000+00:00",
            "started_at": "2024-01-01T00:00:01.000000+00:00",
            "finished_at": finished,
            "state": state,
            "arguments": {"i": run_id},
            "results": results,
        }
    )


def random_results(rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rng.random() < 0.85:  # absent otherwise: a missing value
        out["score"] = rng.choice([0.5, 0.25, 1.0, -3.0, 0.1 + 0.2, 0.3, 7, 0, -0.0, 9e15, 5e-324])
    if rng.random() < 0.7:
        out["steps"] = rng.choice([1, 2, 3, -5, 0, 2**53 - 1, -(2**53) + 1])
    if rng.random() < 0.7:
        out["model"] = rng.choice(MODELS)
    return out


def random_order(rng: random.Random) -> list[SortKey]:
    names = rng.sample([c.name for c in COLUMNS], rng.randint(1, 3))
    return [SortKey(name, sort_desc=rng.random() < 0.5) for name in names]


def views_pair(
    workflow: str, schema: ResultSchema, shown: int, **kwargs: Any
) -> tuple[LeaderboardViews, LeaderboardViews]:
    fast = leaderboard_views(workflow, schema, shown=shown, **kwargs)
    reference = leaderboard_views(workflow, schema, shown=shown, python=True, **kwargs)
    assert reference.sql is False and reference.everything is not None
    return fast, reference


def listed(entries: list[RankEntry]) -> list[tuple[int, str]]:
    return [(e.rank, e.run.run_id) for e in entries]


def assert_same(fast: LeaderboardViews, reference: LeaderboardViews) -> None:
    assert listed(fast.best) == listed(reference.best)
    assert listed(fast.top) == listed(reference.top)
    assert fast.total == reference.total


def test_random_indexes_rank_as_the_reference(site: Site) -> None:
    check_random_indexes(site, random.Random(20240501), 24)


def test_postgres_with_a_language_collation_still_orders_by_code_point(
    tmp_path: Path, postgres_server: Any
) -> None:
    """A database whose default collation is a language's (ICU "en": "a" < "B" < "b"),
    not the test server's C: the index must still order strings by code point."""
    import psycopg2

    name = f"icu_{os.getpid()}"
    conn = psycopg2.connect(host=HOST, port=postgres_server.port, user=USER, dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            try:
                cur.execute(
                    f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' "
                    "LOCALE_PROVIDER icu ICU_LOCALE 'en' LOCALE 'C'"
                )
            except psycopg2.Error as exc:
                pytest.skip(f"no ICU collation on the test server: {exc}")
        site = make_site(tmp_path / "site", {"database": postgres_server.url(name)})
        try:
            site.store  # noqa: B018 - opens the index
            rows = site.store.db.execute_sql("SELECT 'B' < 'a', 'a' < 'B'").fetchone()
            assert rows == (False, True)  # the database's own order is not code points
            check_random_indexes(site, random.Random(77), 12)
        finally:
            site.close()
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def check_random_indexes(site: Site, rng: random.Random, count_cases: int) -> None:
    """Random workflows indexed, each ranked with random keys and view sizes both ways."""
    records = []
    cases = []
    for case in range(count_cases):
        workflow = f"wf{case}"
        groups = rng.sample(GROUPS, rng.randint(1, len(GROUPS)))
        count = rng.randint(1, 120)
        for i in range(count):
            results = random_results(rng)
            finished = rng.choice(FINISHED)
            records.append(
                record(
                    f"{workflow}-{i:04d}", workflow, rng.choice(groups), results, finished=finished
                )
            )
        # runs that must never be ranked: another version, not successful, no results
        records.append(
            record(f"{workflow}-old", workflow, groups[0], {"score": 1e308}, version="0")
        )
        records.append(
            record(f"{workflow}-err", workflow, groups[0], {"score": 1e308}, state="ERROR")
        )
        records.append(record(f"{workflow}-none", workflow, groups[0], None))
        cases.append((workflow, count))
    site.store.index_many(records)

    sizes = set()
    for workflow, count in cases:
        schema = ResultSchema(file="r.json", columns=COLUMNS, order_by=random_order(rng))
        for shown in {1, rng.randint(1, count + 3), count, count + 5}:
            fast, reference = views_pair(workflow, schema, shown, version="1")
            assert fast.sql is True, (workflow, schema.order_by)
            assert fast.everything is None
            assert_same(fast, reference)
            assert fast.total == count
            sizes.add((len(fast.best) > 1, shown < count))
        # the best of each group alone (`flowbatch ranking`, post-processing)
        fast, reference = views_pair(workflow, schema, 0, version="1")
        assert fast.sql is True and fast.top == []
        assert listed(fast.best) == listed(reference.best)
    assert sizes == {(True, True), (True, False), (False, True), (False, False)}


def test_all_versions_and_the_current_one(site: Site) -> None:
    schema = ResultSchema(file="r.json", columns=COLUMNS, order_by=[SortKey("score")])
    site.store.index_many(
        [
            record("a", "wf", "g", {"score": 1.0}, version="1"),
            record("b", "wf", "g", {"score": 2.0}, version="2"),
            record("c", "wf", "h", {"score": 0.5}, version="2"),
        ]
    )
    fast, reference = views_pair("wf", schema, 5, all_versions=True)
    assert fast.sql and listed(fast.best) == [(1, "b"), (2, "c")] == listed(reference.best)
    assert listed(fast.top) == [(1, "b"), (2, "a"), (3, "c")] == listed(reference.top)
    fast, reference = views_pair("wf", schema, 5, version="1")
    assert fast.sql and listed(fast.top) == [(1, "a")] == listed(reference.top)


# A value the index would order differently (left), with what shows the difference.
ODD_VALUES = [
    # numeric text: Python ranks "9.5" as 9.5, the index has no number for it
    ("score", "9.5", False),
    # beyond 2**53 the double is not the integer: 2**60 and 2**60 + 1 tie there
    ("steps", 2**60 + 1, False),
    # an infinity in a number column: missing for Python
    ("score", float("inf"), False),
    # a number, a boolean in a string column: Python compares str() of them
    ("model", 5, False),
    ("model", True, False),
    # NUL is stored as U+FFFD in the result rows
    ("model", "\x00", False),
    ("model", "\ufffd", False),
    # NaN and booleans in a number column are missing for both: the index may rank NaN
    # (stored as NULL by SQLite, as NaN by PostgreSQL)
    ("score", float("nan"), None),
    # a result row with no value at all: the index cannot tell a boolean from an int
    # beyond a double's range (both NULL), which Python ranks as a number
    ("score", True, False),
]


@pytest.mark.parametrize(("column", "value", "sql"), ODD_VALUES)
def test_values_the_index_cannot_order_go_the_reference_way(
    site: Site, column: str, value: Any, sql: bool | None
) -> None:
    order = [SortKey(column, sort_desc=column != "model"), SortKey("score")]
    schema = ResultSchema(file="r.json", columns=COLUMNS, order_by=order)
    runs = [
        record("odd", "wf", "g1", {"score": 1.0, "steps": 2**60, "model": "m"} | {column: value}),
        record("big", "wf", "g1", {"score": 2.0, "steps": 2**60, "model": "\x01"}),
    ]
    runs += [
        record(f"r{i}", "wf", f"g{i % 3}", {"score": float(i), "steps": i, "model": chr(97 + i)})
        for i in range(8)
    ]
    site.store.index_many(runs)
    fast, reference = views_pair("wf", schema, 3, version="1")
    assert_same(fast, reference)
    if sql is not None:
        assert fast.sql is sql


def test_an_int_beyond_a_doubles_range_goes_the_reference_way(site: Site) -> None:
    """Results refuse integers of 2**63 or more now, but a run indexed before may hold a
    401-digit one: its result row has no number (NULL), which the index would rank as a
    missing value while Python ranks the number, whether or not the run is among the
    index's candidates."""
    huge = 10**400
    schema = ResultSchema(
        file="r.json", columns=[ResultColumn("steps", "Steps", "int")], order_by=[SortKey("steps")]
    )
    site.store.index_many(
        [
            record("m-huge", "wf", "mallory", {"steps": huge}),
            record("m-small", "wf", "mallory", {"steps": 5}),
            record("a", "wf", "alice", {"steps": 7}),
        ]
    )
    for shown in (0, 1, 5):
        fast, reference = views_pair("wf", schema, shown, version="1")
        assert fast.sql is False
        assert_same(fast, reference)
        assert listed(fast.best) == [(1, "m-huge"), (2, "a")]
    # descending too, and with the huge value negative
    site.store.index_many([record("m-huge", "wf", "mallory", {"steps": -huge})])
    schema = ResultSchema(
        file="r.json",
        columns=schema.columns,
        order_by=[SortKey("steps", sort_desc=False)],
    )
    fast, reference = views_pair("wf", schema, 1, version="1")
    assert fast.sql is False
    assert_same(fast, reference)
    assert listed(fast.top) == [(1, "m-huge")]


def test_result_rows_that_drifted_from_the_run_rows_are_not_trusted(site: Site) -> None:
    """The result rows are written with the run rows; should they differ anyway, the
    index must not rank by them where that would change the leaderboard."""
    schema = ResultSchema(file="r.json", columns=COLUMNS, order_by=[SortKey("score")])
    site.store.index_many(
        [record(f"r{i:02d}", "wf", f"g{i % 4}", {"score": float(i)}) for i in range(20)]
    )
    fast, reference = views_pair("wf", schema, 5, version="1")
    assert fast.sql and listed(fast.top)[0] == (1, "r19")
    # the best run's result row gone: the index alone would rank r19 last
    ResultRow.delete().where(ResultRow.run == "r19").execute()
    fast, reference = views_pair("wf", schema, 5, version="1")
    assert fast.sql is False
    assert_same(fast, reference)
    assert listed(fast.top)[0] == (1, "r19")
    site.store.index_many([record("r19", "wf", "g3", {"score": 19.0})])
    assert leaderboard_views("wf", schema, shown=5, version="1").sql is True
    # a result row with another value than its run row: caught on the candidates
    ResultRow.update(value_num=100.0).where(ResultRow.run == "r00").execute()
    fast, reference = views_pair("wf", schema, 5, version="1")
    assert fast.sql is False
    assert_same(fast, reference)
    assert "r00" not in [run_id for _, run_id in listed(fast.top)]
    site.store.index_many([record("r00", "wf", "g0", {"score": 0.0})])
    # a run with two result rows of one name would count twice
    ResultRow.insert(run="r18", name="score", value_num=18.0, value_text=None).execute()
    fast, reference = views_pair("wf", schema, 30, version="1")
    assert fast.sql is False and fast.total == 20
    assert_same(fast, reference)


def test_a_database_error_falls_back(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    schema = ResultSchema(file="r.json", columns=COLUMNS, order_by=[SortKey("score")])
    site.store.index_many([record(f"r{i}", "wf", "g", {"score": float(i)}) for i in range(3)])
    real = ranking_sql._candidates_sql

    def broken(*args: Any) -> tuple[str, list[Any]]:
        sql, params = real(*args)
        return sql.replace("COUNT(*)", "COUNT(no_such_column)", 1), params

    monkeypatch.setattr(ranking_sql, "_candidates_sql", broken)
    fast, reference = views_pair("wf", schema, 2, version="1")
    assert fast.sql is False
    assert_same(fast, reference)
    site.store.index_many([record("r9", "wf", "g", {"score": 9.0})])  # still usable
    assert listed(leaderboard_views("wf", schema, shown=1, version="1").top) == [(1, "r9")]


MULTI_TEMPLATE = """
workflow:
  steps:
    - name: s
      action:
        commands: ["true"]
parameters:
  - {name: i, dtype: string}
results:
  file: r.json
  schema:
    - {name: score, label: Score, dtype: float, required: false}
    - {name: steps, label: Steps, dtype: int, required: false}
    - {name: model, label: Model, dtype: string, required: false}
  orderBy:
    - {name: score, sortDesc: true}
    - {name: model, sortDesc: false}
"""


class _FixedNow(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> _FixedNow:
        return cls(2024, 6, 1, 12, 0, 0, tzinfo=UTC)


def test_leaderboard_files_and_ranking_are_the_references(
    tmp_path: Path, db_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole leaderboard (JSON, CSV, HTML with its chart and counts) and `flowbatch
    ranking` come out byte for byte as the reference path writes them."""
    config: dict[str, Any] = {"reports": {"all_runs_shown": 57}}
    if db_url:
        config["database"] = db_url
    site = make_site(tmp_path / "site", config)
    write_template(tmp_path / "t", MULTI_TEMPLATE)
    api.install(site, tmp_path / "t", workflow_id="wf")
    version = site.templates.meta("wf")["current"]
    rng = random.Random(3)
    records = []
    skipped = ("g20", "g21", "g22")
    for i in range(400):
        group = f"g{i % 23:02d}"
        results = random_results(rng)
        finished = rng.choice(FINISHED[:5])
        if group in skipped:  # the best groups, with no time the chart can use
            results["score"], finished = 9.005e15, None
        records.append(
            record(f"r{i:03d}", "wf", group, results, finished=finished, version=version)
        )
    site.store.index_many(records)
    monkeypatch.setattr(report_mod, "datetime", _FixedNow)
    board = site.layout.workflow_results("wf")
    schema = site.templates.load("wf")[0].results
    assert schema is not None

    def written() -> dict[str, str]:
        publish.write_workflow_report(site, "wf")
        return {p.name: p.read_text() for p in sorted(board.iterdir())}

    fast_files, fast_board = written(), api.ranking(site, "wf")
    assert leaderboard_views("wf", schema, shown=57).sql is True
    monkeypatch.setattr(ranking_sql, "_sql_views", lambda *args: None)
    assert leaderboard_views("wf", schema, shown=57).sql is False
    reference_files, reference_board = written(), api.ranking(site, "wf")
    site.close()
    assert fast_files == reference_files
    assert fast_board == reference_board
    data = json.loads(fast_files["leaderboard.json"])
    assert len(data["all"]) == 57 and data["all_total"] == 400 and len(data["ranking"]) == 23
    assert sorted(row["group"] for row in data["ranking"][:3]) == sorted(skipped)
    html = fast_files["leaderboard.html"]
    assert "the 57 best of 400 runs" in html
    legend = re.search(r'<div class="legend">(.*?)</div>', html)
    assert legend is not None
    drawn = re.findall(r"<span[^>]*>([^<]*)</span>", legend.group(1))
    assert len(drawn) == 8 and not set(drawn) & set(skipped)
    assert "15 more groups not drawn" in html
