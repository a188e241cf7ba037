"""Sweep expansion (pure): the cartesian product, duplicates, limits, array chunks."""

from __future__ import annotations

import pytest

from flowbatch.errors import RequestError
from flowbatch.sweep import MAX_POINTS, array_ranges, expand_sweep, point_key


def test_cartesian_product_over_fixed_arguments() -> None:
    points = expand_sweep({"epochs": 10}, {"lr": [0.1, 0.01], "layers": [2, 4]})
    assert points == [
        {"epochs": 10, "lr": 0.1, "layers": 2},
        {"epochs": 10, "lr": 0.1, "layers": 4},
        {"epochs": 10, "lr": 0.01, "layers": 2},
        {"epochs": 10, "lr": 0.01, "layers": 4},
    ]


def test_identical_points_run_once() -> None:
    points = expand_sweep(None, {"a": [1, 1, 2], "b": ["x", "x"]})
    assert points == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    assert point_key({"a": 1, "b": 2}) == point_key({"b": 2, "a": 1})


def test_no_sweep_is_one_point() -> None:
    assert expand_sweep({"a": 1}, None) == [{"a": 1}]


@pytest.mark.parametrize(
    ("sweep", "field"),
    [
        ([1, 2], "sweep"),
        ({}, "sweep"),
        ({"a": []}, "sweep.a"),
        ({"a": 3}, "sweep.a"),
        ({"x": [1]}, "sweep.x"),
    ],
)
def test_bad_sweeps(sweep: object, field: str) -> None:
    with pytest.raises(RequestError) as err:
        expand_sweep({"x": 0}, sweep, file="r.yaml")
    assert err.value.field == field and err.value.file == "r.yaml"


def test_too_many_points() -> None:
    with pytest.raises(RequestError, match="more than"):
        expand_sweep(None, {"a": list(range(MAX_POINTS)), "b": [1, 2]})


def test_array_chunks_and_throttle() -> None:
    assert array_ranges(0, 1000) == []
    assert array_ranges(5, 1000) == ["0-4"]
    assert array_ranges(2500, 1000, throttle=8) == ["0-999%8", "0-999%8", "0-499%8"]


@pytest.mark.parametrize("values", ["[8, 010]", "[750, 12:30]", "['8', 010]"])
def test_a_swept_string_written_as_another_number_is_refused_not_merged(values: str) -> None:
    """`[750, 12:30]` of a string parameter was one point, `'750'`: the second value
    dropped as the first's duplicate before casting, which refuses it (found by review)."""
    from flowbatch import yamlio
    from flowbatch.errors import FlowbatchError
    from flowbatch.spec.model import Parameter
    from flowbatch.sweep import cast_points

    doc = yamlio.loads(f"sweep:\n  s: {values}\n", as_written=True)
    params = [Parameter("s", "string", 0, True)]  # type: ignore[arg-type]
    with pytest.raises(FlowbatchError, match="quote the value in YAML"):
        cast_points(params, {}, doc["sweep"])
