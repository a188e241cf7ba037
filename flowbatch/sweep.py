"""Sweeps: one request, one run per point of a cartesian product of argument lists.

``sweep: {lr: [0.1, 0.01], layers: [2, 4]}`` beside ``arguments: {epochs: 10}`` makes four
runs (as BlackDynamite's job space). Identical points (a value listed twice) make one
run. :func:`expand_sweep` is the pure expansion; :func:`cast_points` casts every point
against a template's parameters, as intake does (and ``flowbatch submit`` and
``flowbatch validate`` before it), naming a bad swept value by its place in the sweep.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any, NamedTuple

from .errors import ArgumentError, RequestError
from .spec.model import FileArg, Parameter
from .spec.params import resolve_arguments, unknown_hint
from .text import short_repr

#: a sweep larger than this is refused: it is almost certainly a mistake
MAX_POINTS = 10_000


def expand_sweep(
    arguments: dict[str, Any] | None, sweep: Any, *, file: str | None = None
) -> list[dict[str, Any]]:
    """The argument mappings of every point, in the order the lists give, without
    duplicates. ``arguments`` are the fixed ones; a name may not be both fixed and swept."""
    return [point for point, _ in _expand(arguments, sweep, file)]


def _expand(
    arguments: dict[str, Any] | None, sweep: Any, file: str | None
) -> Iterator[tuple[dict[str, Any], dict[str, int]]]:
    """:func:`expand_sweep`'s points, each with the index of each swept value in its list."""
    fixed = dict(arguments or {})
    if sweep is None:
        yield fixed, {}
        return
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
    seen: set[str] = set()
    lists = [list(enumerate(values)) for values in axes.values()]
    for combo in itertools.product(*lists):
        point = {**fixed, **{name: value for name, (_, value) in zip(axes, combo, strict=True)}}
        key = point_key(_as_written(point))
        if key not in seen:  # the same combination is run once
            seen.add(key)
            yield point, {name: i for name, (i, _) in zip(axes, combo, strict=True)}


class Point(NamedTuple):
    """One point of a request: its cast arguments, and where each swept value stands in
    the request (``sweep.<name>[<i>]``; a fixed argument is ``arguments.<name>``)."""

    arguments: dict[str, Any]
    fields: dict[str, str]

    def field(self, name: str) -> str:
        return self.fields.get(name) or f"arguments.{name}"


def cast_points(
    parameters: list[Parameter],
    arguments: Any,
    sweep: Any,
    *,
    file: str | None = None,
) -> list[Point]:
    """The cast arguments of every point of a request (one point without ``sweep``),
    as intake makes its runs; points that are the same after casting (``1`` and ``"1"``
    of an int) are one. A bad swept value is an :class:`ArgumentError` whose field is
    ``sweep.<name>[<i>]`` and whose reason names the value."""
    if sweep is None:
        return [Point(resolve_arguments(parameters, arguments, file=file), {})]
    if arguments is not None and not isinstance(arguments, dict):
        raise RequestError(
            "a sweep needs arguments as a mapping (name: value)", file=file, field="arguments"
        )
    known = [p.name for p in parameters]
    for name in sweep if isinstance(sweep, dict) else ():
        if name not in known:
            raise ArgumentError(
                f"unknown parameter {name!r}",
                file=file,
                field=f"sweep.{name}",
                expected=f"one of: {', '.join(known)}" if known else "no arguments",
                hint=unknown_hint(name, known),
            )
    points: list[Point] = []
    seen: set[str] = set()
    for raw, where in _expand(arguments, sweep, file):
        fields = {name: f"sweep.{name}[{i}]" for name, i in where.items()}
        try:
            cast = resolve_arguments(parameters, raw, file=file)
        except ArgumentError as exc:
            raise _at_swept_value(exc, fields, raw) from None
        key = point_key(run_arguments(cast))
        if key not in seen:
            seen.add(key)
            points.append(Point(cast, fields))
    return points


def _at_swept_value(
    exc: ArgumentError, fields: dict[str, str], raw: dict[str, Any]
) -> ArgumentError:
    """An error of a swept value points at the value in ``sweep:`` (``arguments.x``, as
    the merged point has it, is a field the request does not have) and names it."""
    for name, place in fields.items():
        prefix = f"arguments.{name}"
        rest = (exc.field or "")[len(prefix) :]
        if (exc.field or "").startswith(prefix) and (not rest or rest[0] in ".["):
            exc.field = place + rest
            shown = short_repr(raw[name])
            if shown not in exc.reason:
                exc.reason = f"{exc.reason} (the value {shown})"
            break
    return exc


def run_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """Cast arguments as run.json keeps them (a file argument as source and target): the
    form points are compared in (intake's sweep skipping and submit's preview)."""
    return {
        name: {"source": v.source, "target": v.target} if isinstance(v, FileArg) else v
        for name, v in arguments.items()
    }


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


def _as_written(value: Any) -> Any:
    """``value`` with the numbers YAML read otherwise than written (``12:30``: 750,
    :class:`flowbatch.yamlio.WrittenInt`) as their text: told apart from the number
    written plainly before casting, which refuses them for a string parameter (found by
    review: ``[750, 12:30]`` was one point, silently)."""
    if isinstance(value, dict):
        return {k: _as_written(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_written(v) for v in value]
    written = getattr(value, "written", None)
    return value if written is None else f"\0{written}"


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
