"""Reading a run's result file against the workflow's result schema (seed-inventory §3.2).

flowServ swallows every exception here: a missing file, bad JSON, a missing required value
or a failed cast leave the run in SUCCESS without results, silently absent from the
leaderboard (GAP). Here every such problem raises :class:`~flowbatch.errors.ResultError`
naming the file, the column(s) and what was expected, so the caller can record the run as
ERROR with that reason. Column problems are collected so one run attempt reports all of
them at once instead of one per fix-and-rerun cycle.

Also unlike flowServ (JSON only, despite its docs), the file may be JSON or YAML.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import yamlio
from .errors import InputError, ResultError
from .safeio import LINK_ERRORS, open_beneath
from .spec.model import ResultColumn, ResultSchema
from .spec.params import INT_LIMIT
from .text import short_repr

#: Result files are small summaries; refuse anything that looks like a data dump.
MAX_RESULT_BYTES = 16 << 20
#: A YAML one is parsed by pure Python on the daemon's main thread (16 MiB of a list took
#: 53 s and 3 GB here, 1 MiB 2.7 s): held to the size of a request.
MAX_YAML_RESULT_BYTES = 1 << 20
#: The longest text a ``string`` result may hold, in characters. A string result is a
#: label or a short note: it is stored in the index and written into every leaderboard row,
#: its JSON and CSV (one of 15 MiB made a 346 MB page, a 315 MB index and a daemon of
#: 1.5 GB). A longer one makes the run an ERROR naming the result and this limit.
MAX_STRING_CHARS = 1000

ResultValue = int | float | str

_MISSING: Any = object()


class _CastError(ValueError):
    """A value that does not fit its column's dtype; the message says what it was."""


def read_results(run_dir: Path, schema: ResultSchema) -> dict[str, ResultValue]:
    """Read ``run_dir / schema.file`` and return ``{column name: cast value}``.

    The file is JSON when its suffix is ``.json``, YAML otherwise (strict loader: no
    duplicate keys, bounded aliases and size). Each column's value is looked up at
    ``column.path`` (``'/'``-separated keys into nested mappings) or, without a path, at
    the top-level key ``column.name``. Optional columns whose value is missing (absent or
    null) are omitted from the result; required ones are an error. Values are cast to the
    column's dtype:

    - ``int``: integers, integral floats (``3.0``) and integral numeric strings
      (``"42"``, ``"3.0"``), of magnitude below 2**63 (:data:`INT_LIMIT`, what a 64-bit
      integer holds: a larger one breaks the reports and the index's ordering); booleans
      and non-integral numbers are refused.
    - ``float``: integers, floats and numeric strings; booleans, NaN and infinities are
      refused (they would break the ranking's ordering).
    - ``string``: any scalar (booleans as ``true``/``false``, as written in the file)
      of at most :data:`MAX_STRING_CHARS` characters; mappings and lists are refused.

    Raises:
        ResultError: the file is missing, unreadable, escapes ``run_dir``, is not a
            mapping, or one or more columns are missing or fail their cast (all such
            column problems are reported in the one error).
    """
    path = run_dir / schema.file
    doc = _load(run_dir, schema.file)
    if not isinstance(doc, Mapping):
        raise ResultError(
            f"result file holds a {_kind(doc)}, not a mapping",
            file=str(path),
            expected="a mapping of result names to values",
            hint="write a JSON object (or YAML mapping) with one entry per result column",
        )

    values: dict[str, ResultValue] = {}
    problems: list[tuple[ResultColumn, str, str]] = []  # (column, what went wrong, expected)
    for column in schema.columns:
        try:
            raw = _lookup(doc, column)
        except _CastError as exc:
            problems.append((column, str(exc), "nested mappings along the path"))
            continue
        if raw is _MISSING or raw is None:
            if column.required:
                problems.append((column, "missing required value", f"a {column.dtype} value"))
            continue
        try:
            values[column.name] = cast_value(raw, column.dtype)
        except _CastError as exc:
            problems.append((column, str(exc), _EXPECTED[column.dtype]))

    if problems:
        raise _problems_error(path, problems)
    return values


_EXPECTED: dict[str, str] = {
    "int": f"an integer between -{INT_LIMIT - 1} and {INT_LIMIT - 1} (or an integral number "
    "or numeric string)",
    "float": "a finite number (or numeric string)",
    "string": f"a scalar value (text, number or boolean) of at most {MAX_STRING_CHARS} characters",
}


def cast_value(value: Any, dtype: str) -> ResultValue:
    """Cast one raw result value to ``dtype`` (``int``, ``float`` or ``string``).

    Raises:
        ValueError: the value does not fit; the message describes the offending value
            (:func:`read_results` turns it into a :class:`ResultError`).
    """
    if dtype == "int":
        return _to_int(value)
    if dtype == "float":
        return _to_float(value)
    if dtype == "string":
        return _to_str(value)
    # The spec parser only produces the three dtypes above; this guards hand-built schemas.
    raise _CastError(f"unknown result dtype {dtype!r}")


def _to_int(value: Any) -> int:
    number = _int_value(value)
    if not -INT_LIMIT < number < INT_LIMIT:
        raise _CastError(f"got an integer out of range ({short_repr(value, 60)})")
    return number


def _int_value(value: Any) -> int:
    # bool is a subclass of int: `True` silently becoming 1 would hide a wrong column.
    if isinstance(value, bool):
        raise _CastError(f"got a boolean ({short_repr(value, 60)})")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise _CastError(f"got a non-integral number ({short_repr(value, 60)})")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if not _NUMERIC.fullmatch(text):
            raise _CastError(f"got text that is not a number ({short_repr(value, 60)})")
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            raise _CastError(f"got text that is not a number ({short_repr(value, 60)})")
        if not math.isfinite(number) or not number.is_integer():
            raise _CastError(f"got a non-integral number ({short_repr(value, 60)})")
        return int(number)
    raise _CastError(f"got a {_kind(value)} ({short_repr(value, 60)})")


#: a number written as text, as a result file may: ASCII digits only (NaN and
#: infinities are read, to be refused as such; Python's own
#: int() and float() take "1_000_000" and full-width digits, which no other reader of
#: the file would: found by review)
_NUMERIC = re.compile(
    r"[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|nan|inf|infinity)", re.IGNORECASE
)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise _CastError(f"got a boolean ({short_repr(value, 60)})")
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            raise _CastError(f"got an integer too large for a float ({short_repr(value, 60)})")
    elif isinstance(value, str):
        try:
            if not _NUMERIC.fullmatch(value.strip()):
                raise ValueError(value)
            number = float(value.strip())
        except ValueError:
            raise _CastError(f"got text that is not a number ({short_repr(value, 60)})")
    else:
        raise _CastError(f"got a {_kind(value)} ({short_repr(value, 60)})")
    # NaN compares false with everything and would scramble the ranking; inf is almost
    # always a division by zero in the participant's code. Neither is a result.
    if not math.isfinite(number):
        raise _CastError(f"got a non-finite number ({short_repr(value, 60)})")
    return number


def _to_str(value: Any) -> str:
    text = _str_value(value)
    if len(text) > MAX_STRING_CHARS:
        raise _CastError(
            f"got text of {len(text)} characters, longer than the {MAX_STRING_CHARS} a string "
            f"result may hold ({short_repr(text[:100], 60)})"
        )
    return text


def _str_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a JSON \udc80 escape
            raise _CastError("got text that is not valid Unicode") from None
        return value
    if isinstance(value, int | float):
        return str(value)
    # YAML may yield dates/timestamps: they are scalars, keep their ISO form.
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):
        return str(isoformat())
    raise _CastError(f"got a {_kind(value)} ({short_repr(value, 60)})")


def _open_result(run_dir: Path, file: str) -> int:
    """A descriptor of ``run_dir / file``, never of a file outside the run directory: a
    template must not make the daemon read files of other runs or of the host. Opened one
    part at a time without following links (:func:`flowbatch.safeio.open_beneath`), so a
    link put in place after a check cannot lead the open elsewhere. A link that stays
    inside the run directory is followed: its target is found, checked to be inside, and
    opened by its own path the same way (a link changed meanwhile fails that open)."""
    if Path(file).is_absolute():
        raise ResultError(
            "result file path is absolute",
            file=file,
            field="results.file",
            expected="a path relative to the run directory",
        )
    try:
        return open_beneath(run_dir, file)
    except OSError as exc:
        # a link on the way, or a ".." part (EINVAL): both may still stay inside
        if exc.errno not in LINK_ERRORS and exc.errno != errno.EINVAL:
            raise
    base = run_dir.resolve()
    try:
        inside = (run_dir / file).resolve().relative_to(base)
    except ValueError:
        raise _outside(run_dir / file) from None
    return open_beneath(base, inside)


def _outside(path: Path) -> ResultError:
    return ResultError(
        "result file path leads outside the run directory",
        file=str(path),
        field="results.file",
        expected="a path inside the run directory",
    )


def _load(run_dir: Path, file: str) -> Any:
    path = run_dir / file
    try:
        fd = _open_result(run_dir, file)
    except FileNotFoundError:
        raise ResultError(
            "result file not found",
            file=str(path),
            expected="the file named by results.file, written by the workflow",
            hint="check that a step writes this file (relative to the run directory)",
        ) from None
    except OSError as exc:
        raise ResultError(f"cannot open result file: {exc.strerror}", file=str(path)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ResultError(
                "result file is not a regular file", file=str(path), expected="a JSON or YAML file"
            )
        json_file = path.suffix.lower() == ".json"
        limit = MAX_RESULT_BYTES if json_file else MAX_YAML_RESULT_BYTES
        return yamlio.load_fd(fd, str(path), max_bytes=limit)
    except InputError as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise ResultError(
            f"cannot read result file: {exc.reason}",
            file=str(path),
            expected=f"a {kind} mapping of result names to values",
            hint=exc.hint,
        ) from None
    finally:
        os.close(fd)


def _lookup(doc: Mapping[str, Any], column: ResultColumn) -> Any:
    """The raw value for ``column`` or ``_MISSING``. Without a ``path`` the column name is
    one key (it is not split on '/'). A path through a non-mapping is a structural error,
    not a missing value: it means the file's layout differs from what the template says."""
    if not column.path:
        return doc.get(column.name, _MISSING)
    keys = [k for k in column.path.split("/") if k]
    node: Any = doc
    for depth, key in enumerate(keys):
        if not isinstance(node, Mapping):
            where = "/".join(keys[:depth])
            raise _CastError(f"path {column.path!r}: {where!r} is a {_kind(node)}, not a mapping")
        if key not in node:
            return _MISSING
        node = node[key]
    return node


def _problems_error(path: Path, problems: list[tuple[ResultColumn, str, str]]) -> ResultError:
    def where(column: ResultColumn) -> str:
        return f"{column.name} (at {column.path!r})" if column.path else column.name

    if len(problems) == 1:
        column, what, expected = problems[0]
        return ResultError(
            f"result column {where(column)}: {what}",
            file=str(path),
            field=column.name,
            expected=expected,
        )
    lines = "; ".join(
        f"{where(column)}: {what} (expected {expected})" for column, what, expected in problems
    )
    return ResultError(
        f"{len(problems)} result columns do not fit the schema: {lines}",
        file=str(path),
        field=", ".join(column.name for column, _, _ in problems),
    )


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list | tuple):
        return "list"
    if value is None:
        return "null"
    return type(value).__name__
