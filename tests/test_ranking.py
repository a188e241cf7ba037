"""Leaderboard ordering: multi-key sort, missing values last, ties, best per group."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from flowbatch.errors import ResultError
from flowbatch.ranking import RankInput, rank, ranking_json, run_seconds
from flowbatch.spec.model import ResultColumn, ResultSchema, SortKey

SCHEMA = ResultSchema(
    file="results.json",
    columns=[
        ResultColumn("score", "Score", "float"),
        ResultColumn("steps", "Steps", "int", required=False),
        ResultColumn("model", "Model", "string", required=False),
    ],
    order_by=[SortKey("score")],  # the normalized default: first column, descending
)


def run(
    run_id: str,
    group: str | None = None,
    finished: str | None = "2024-01-01T10:00:00Z",
    created: str = "2024-01-01T09:00:00Z",
    **results: Any,
) -> RankInput:
    return RankInput(
        run_id=run_id,
        group=group or f"g-{run_id}",
        name=None,
        created_at=created,
        started_at="2024-01-01T09:30:00Z",
        finished_at=finished,
        results=results,
    )


def ids(entries: list[Any]) -> list[str]:
    return [e.run.run_id for e in entries]


def test_default_order_is_schema_order_by_descending() -> None:
    runs = [run("a", score=0.5), run("b", score=0.9), run("c", score=0.7)]
    entries = rank(runs, SCHEMA)
    assert ids(entries) == ["b", "c", "a"]
    assert [e.rank for e in entries] == [1, 2, 3]


def test_ascending_key() -> None:
    runs = [run("a", score=0.5), run("b", score=0.9), run("c", score=0.7)]
    entries = rank(runs, SCHEMA, order_by=[SortKey("score", sort_desc=False)])
    assert ids(entries) == ["a", "c", "b"]


def test_empty_order_by_falls_back_to_schema() -> None:
    runs = [run("a", score=0.5), run("b", score=0.9)]
    assert ids(rank(runs, SCHEMA, order_by=[])) == ["b", "a"]


def test_multi_key_mixed_directions() -> None:
    runs = [
        run("a", score=1.0, steps=30),
        run("b", score=2.0, steps=50),
        run("c", score=1.0, steps=10),
        run("d", score=2.0, steps=20),
    ]
    order = [SortKey("score", sort_desc=True), SortKey("steps", sort_desc=False)]
    assert ids(rank(runs, SCHEMA, order_by=order)) == ["d", "b", "c", "a"]
    order = [SortKey("score", sort_desc=False), SortKey("steps", sort_desc=True)]
    assert ids(rank(runs, SCHEMA, order_by=order)) == ["a", "c", "b", "d"]


@pytest.mark.parametrize("desc", [True, False])
def test_string_keys_both_directions(desc: bool) -> None:
    names = ["b", "ab", "a", "B", "", "ba", "é"]
    runs = [run(f"r{i}", score=1.0, model=m) for i, m in enumerate(names)]
    entries = rank(runs, SCHEMA, order_by=[SortKey("model", sort_desc=desc)])
    got = [e.run.results["model"] for e in entries]
    assert got == sorted(names, reverse=desc)


@pytest.mark.parametrize("desc", [True, False])
def test_missing_values_sort_last_in_both_directions(desc: bool) -> None:
    runs = [
        run("none1", score=0.1),
        run("low", score=0.2, steps=1, model="x"),
        run("none2", score=0.3, steps=None, model=None),
        run("high", score=0.4, steps=9, model="y"),
    ]
    for key in ("steps", "model"):
        entries = rank(runs, SCHEMA, order_by=[SortKey(key, sort_desc=desc)])
        present = ["high", "low"] if desc else ["low", "high"]
        assert ids(entries)[:2] == present
        assert set(ids(entries)[2:]) == {"none1", "none2"}


def test_missing_values_then_next_key_decides() -> None:
    runs = [run("a", score=0.1), run("b", score=0.9), run("c", score=0.5, steps=3)]
    order = [SortKey("steps"), SortKey("score")]
    assert ids(rank(runs, SCHEMA, order_by=order)) == ["c", "b", "a"]


def test_non_finite_or_bad_numbers_in_index_count_as_missing() -> None:
    runs = [
        run("nan", score=float("nan")),
        run("text", score="oops"),
        run("ok", score=0.1),
        run("bool", score=True),
    ]
    entries = rank(runs, SCHEMA, include_all=True)
    assert ids(entries)[0] == "ok"


def test_tie_broken_by_earlier_submission_then_run_id() -> None:
    """Not by the finish: a run's own marks give it, which a run could set back."""
    runs = [
        run("late", created="2024-01-02T00:00:00Z", finished="2024-01-01T00:00:00Z", score=1.0),
        run("early", created="2024-01-01T00:00:00+00:00", score=1.0),
        run("z-same", created="2024-01-01T12:00:00Z", score=1.0),
        run("a-same", created="2024-01-01T12:00:00.000+00:00", score=1.0),
        run("unknown", created="", score=1.0),
        run("best", created="2024-01-03T00:00:00Z", score=2.0),
    ]
    entries = rank(runs, SCHEMA)
    assert ids(entries) == ["best", "early", "a-same", "z-same", "late", "unknown"]


def test_tie_order_independent_of_input_order() -> None:
    runs = [run(f"r{i}", created=f"2024-01-01T00:00:{i % 3:02d}Z", score=i % 2) for i in range(30)]
    expected = ids(rank(runs, SCHEMA, include_all=True))
    shuffled = runs[:]
    random.Random(4).shuffle(shuffled)
    assert ids(rank(shuffled, SCHEMA, include_all=True)) == expected


def test_best_per_group_vs_include_all() -> None:
    runs = [
        run("a1", group="alice", score=0.5),
        run("a2", group="alice", score=0.8),
        run("b1", group="bob", score=0.7),
        run("b2", group="bob", score=0.6),
        run("c1", group="carol", score=0.1),
    ]
    best = rank(runs, SCHEMA)
    assert ids(best) == ["a2", "b1", "c1"]
    assert [e.rank for e in best] == [1, 2, 3]
    everything = rank(runs, SCHEMA, include_all=True)
    assert ids(everything) == ["a2", "b1", "b2", "a1", "c1"]
    assert [e.rank for e in everything] == [1, 2, 3, 4, 5]


def test_equal_values_get_distinct_ranks() -> None:
    runs = [run(x, score=1.0) for x in "abc"]
    assert [e.rank for e in rank(runs, SCHEMA)] == [1, 2, 3]


def test_empty_and_generator_input() -> None:
    assert rank([], SCHEMA) == []
    assert ids(rank((run(x, score=1.0) for x in "ba"), SCHEMA)) == ["a", "b"]


def test_unknown_sort_column_is_an_error() -> None:
    with pytest.raises(ResultError) as info:
        rank([run("a", score=1.0)], SCHEMA, order_by=[SortKey("nope")])
    assert info.value.field == "order_by"
    assert "nope" in str(info.value) and "score" in str(info.value)


def test_large_ints_keep_exact_order() -> None:
    schema = ResultSchema(
        file="r.json", columns=[ResultColumn("n", "N", "int")], order_by=[SortKey("n")]
    )
    big = 2**60
    runs = [run("a", n=big), run("b", n=big + 1), run("c", n=5)]
    assert ids(rank(runs, schema)) == ["b", "a", "c"]
    asc = rank(runs, schema, order_by=[SortKey("n", sort_desc=False)])
    assert ids(asc) == ["c", "a", "b"]


def test_hundred_thousand_runs() -> None:
    # Size check for correctness only; speed is documented in ranking.py, not asserted.
    rng = random.Random(7)
    runs = []
    for i in range(100_000):
        results: dict[str, Any] = {"score": round(rng.random(), 2), "steps": rng.randint(0, 50)}
        if rng.random() < 0.7:
            results["model"] = rng.choice(["cnn", "rnn", "mlp", "ab", "a"])
        runs.append(
            run(
                f"r{i:06d}",
                group=f"g{rng.randint(0, 999)}",
                created=f"2024-01-01T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z",
                **results,
            )
        )
    order = [SortKey("score"), SortKey("model", sort_desc=False), SortKey("steps")]
    entries = rank(runs, SCHEMA, order_by=order, include_all=True)
    assert len(entries) == 100_000
    assert [e.rank for e in entries] == list(range(1, 100_001))

    def reference_key(r: RankInput) -> tuple[Any, ...]:
        model = r.results.get("model")
        return (
            -r.results["score"],
            model is None,
            model or "",
            -r.results["steps"],
            r.created_at,
            r.run_id,
        )

    assert ids(entries) == [r.run_id for r in sorted(runs, key=reference_key)]

    best = rank(runs, SCHEMA, order_by=order)
    assert len(best) == len({r.group for r in runs})
    assert len({e.run.group for e in best}) == len(best)


def test_run_seconds() -> None:
    r = run("a", score=1.0)
    assert run_seconds(r) == 1800.0
    r.started_at = None
    assert run_seconds(r) is None


def test_ranking_json_shape() -> None:
    r = run("a1", group="alice", score=0.5, model="cnn")
    r.name = "try 1"
    r.version = "2"
    r.arguments = {"lr": 0.1, "layers": [1, 2]}
    entries = rank([r, run("b1", group="bob", score=0.25)], SCHEMA)
    data = ranking_json("wf", SCHEMA, entries)
    assert list(data) == ["workflow", "schema", "ranking"]
    assert data["workflow"] == "wf"
    assert data["schema"] == [
        {"name": "score", "label": "Score", "dtype": "float"},
        {"name": "steps", "label": "Steps", "dtype": "int"},
        {"name": "model", "label": "Model", "dtype": "string"},
    ]
    first = data["ranking"][0]
    assert list(first) == ["rank", "run", "group", "results", "arguments"]
    assert first["rank"] == 1
    assert first["run"] == {
        "id": "a1",
        "name": "try 1",
        "created_at": "2024-01-01T09:00:00Z",
        "started_at": "2024-01-01T09:30:00Z",
        "finished_at": "2024-01-01T10:00:00Z",
        "version": "2",
    }
    assert first["group"] == "alice"
    assert first["results"] == {"score": 0.5, "steps": None, "model": "cnn"}
    assert first["arguments"] == {"lr": 0.1, "layers": [1, 2]}
    assert data["ranking"][1]["rank"] == 2
    # strict JSON: no NaN/Infinity literals
    json.loads(json.dumps(data, allow_nan=False))
