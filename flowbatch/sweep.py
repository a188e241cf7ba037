"""Sweeps: one request, one run per point of a cartesian product of argument lists.

``sweep: {lr: [0.1, 0.01], layers: [2, 4]}`` beside ``arguments: {epochs: 10}`` makes four
runs (as BlackDynamite's job space). Identical points (a value listed twice) make one
run. This module is the pure expansion; intake calls it (see the hook described in
issue 4's report) and creates one run per point.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from .errors import RequestError

#: a sweep larger than this is refused: it is almost certainly a mistake
MAX_POINTS = 10_000


def expand_sweep(
    arguments: dict[str, Any] | None, sweep: Any, *, file: str | None = None
) -> list[dict[str, Any]]:
    """The argument mappings of every point, in the order the lists give, without
    duplicates. ``arguments`` are the fixed ones; a name may not be both fixed and swept."""
    fixed = dict(arguments or {})
    if sweep is None:
        return [fixed]
    axes = _axes(sweep, fixed, file)
    size = 1
    for values in axes.values():
        size *= len(values)
    if size > MAX_POINTS:
        raise RequestError(
            f"the sweep has {size} points, more than {MAX_POINTS}",
            file=file,
            field="sweep",
            hint="split it into several requests",
        )
    points: list[dict[str, Any]] = []
    seen: set[str] = set()
    for combo in itertools.product(*axes.values()):
        point = {**fixed, **dict(zip(axes, combo, strict=True))}
        key = point_key(point)
        if key not in seen:  # the same combination is run once
            seen.add(key)
            points.append(point)
    return points


def _axes(sweep: Any, fixed: dict[str, Any], file: str | None) -> dict[str, list[Any]]:
    if not isinstance(sweep, dict) or not sweep:
        raise RequestError(
            "sweep must be a mapping of parameter name -> list of values",
            file=file,
            field="sweep",
            expected="e.g. sweep: {lr: [0.1, 0.01]}",
        )
    for name, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise RequestError(
                "must be a non-empty list of values", file=file, field=f"sweep.{name}"
            )
        if name in fixed:
            raise RequestError(
                f"{name!r} is both in arguments and in sweep",
                file=file,
                field=f"sweep.{name}",
                hint="give it in one place only",
            )
    return {str(k): list(v) for k, v in sweep.items()}


def point_key(point: dict[str, Any]) -> str:
    """A canonical text of one point's arguments: equal points, equal keys."""
    return json.dumps(point, sort_keys=True, separators=(",", ":"), default=str)


def array_ranges(count: int, max_array_size: int, throttle: int | None = None) -> list[str]:
    """``sbatch --array`` values covering ``count`` tasks, at most ``max_array_size`` per
    job array (Slurm's MaxArraySize bounds the indices too, so each chunk starts at 0),
    with an optional ``%N`` throttle."""
    if count <= 0:
        return []
    suffix = f"%{throttle}" if throttle else ""
    out = []
    for start in range(0, count, max_array_size):
        size = min(max_array_size, count - start)
        out.append(f"0-{size - 1}{suffix}")
    return out
