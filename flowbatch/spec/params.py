"""Parameter declarations and run arguments (seed-inventory §2).

Three jobs live here:

* :func:`parse_parameters` turns the ``parameters`` list of a template into
  :class:`~flowbatch.spec.model.Parameter` objects, strictly: every key is known, every
  default is cast (a bad default is an install-time error, not a run-time surprise);
* :func:`cast_value` checks one argument value against its declaration (flowServ's cast
  rules, with its loose spots closed: no ``int(3.9) == 3``, no NaN, no silent defaults);
* :func:`resolve_arguments` turns a request's arguments (a mapping, or flowServ's
  ``[{name, value}]`` list) into the validated values a run uses.

Small validation helpers used by :mod:`flowbatch.spec.template` and
:mod:`flowbatch.spec.manifest` live here too (:func:`check_keys`, :func:`relative_path`),
so the three modules word their errors the same way.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any, NoReturn, cast

from ..errors import ArgumentError, TemplateError
from ..text import short_repr
from .model import DType, FileArg, Parameter, Range, SelectValue

__all__ = [
    "DTYPES",
    "INT_LIMIT",
    "cast_value",
    "check_keys",
    "parse_parameters",
    "parse_range",
    "relative_path",
    "resolve_arguments",
]

#: every dtype flowbatch accepts, in the order error messages list them
DTYPES: tuple[DType, ...] = ("bool", "select", "file", "int", "float", "string", "list", "record")

#: An ``int`` argument (and an ``int`` result, :mod:`flowbatch.results`) lies strictly
#: between ``-INT_LIMIT`` and ``INT_LIMIT``: what a 64-bit integer (SQLite's INTEGER, C's
#: int64_t) holds, bar -2**63. Python's ints have no bound, but a 400-digit one cannot be
#: converted to a float: the reports, charts and the index's ordering need that.
INT_LIMIT = 2**63

# A top-level parameter name becomes a shell environment variable (FB_<name>) and a
# ${name} placeholder, so it must be an identifier.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# The docs and the code of flowServ disagree on some field names (seed-inventory §2.1
# DRIFT); both spellings are accepted, but only one of them per declaration.
_ALIASES: dict[str, tuple[str, ...]] = {
    "dtype": ("dtype", "type", "datatype"),
    "help": ("help", "description"),
    "group": ("group", "module"),
    "target": ("target", "as"),
}
_COMMON_KEYS = ("name", "dtype", "index", "label", "help", "defaultValue", "isRequired", "group")
_EXTRA_KEYS: dict[str, tuple[str, ...]] = {
    "int": ("range",),
    "float": ("range",),
    "select": ("values",),
    "file": ("target",),
    "list": ("para",),
    "record": ("fields",),
}

_TRUE = frozenset({"1", "t", "true", "yes", "y"})
_FALSE = frozenset({"0", "f", "false", "no", "n", ""})
_INT_TEXT = re.compile(r"[+-]?\d+\Z")
# Plain decimal notation only: float() would also take 'nan', 'inf' and '1_0'.
_FLOAT_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z")


# -- shared helpers ----------------------------------------------------------------------


def _join(path: str, key: str | int) -> str:
    """Extend a field path: ``a`` + ``b`` → ``a.b``; ``a`` + ``2`` → ``a[2]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _quote_list(items: Iterable[Any]) -> str:
    return ", ".join(repr(i) for i in items)


def check_keys(
    doc: Any,
    *,
    field: str,
    file: str | None,
    allowed: Iterable[str],
    required: Iterable[str] = (),
    what: str = "a mapping",
) -> dict[str, Any]:
    """Check that ``doc`` is a mapping with only ``allowed`` keys and all ``required`` ones.

    Returns the mapping. Errors are :class:`TemplateError` naming the exact path of the
    offending key and listing the allowed keys, because a typo is the usual cause.
    """
    allowed = tuple(allowed)
    if not isinstance(doc, dict):
        raise TemplateError(
            f"must be {what}, not {_type_name(doc)}",
            file=file,
            field=field or None,
            expected=f"{what} with keys {', '.join(allowed)}",
        )
    for key in doc:
        if key not in allowed:
            raise TemplateError(
                f"unknown key {key!r}",
                file=file,
                field=_join(field, str(key)),
                expected=f"one of the keys {', '.join(allowed)}",
            )
    for key in required:
        if key not in doc:
            raise TemplateError(f"missing required key {key!r}", file=file, field=field or None)
    return doc


def _type_name(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "empty (null)"
    for cls, name in names.items():
        if type(value) is cls:
            return name
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    return type(value).__name__


def relative_path(
    value: Any,
    *,
    field: str,
    file: str | None = None,
    error: type[TemplateError] | type[ArgumentError] = TemplateError,
    allow_empty: bool = False,
) -> str:
    """Validate a path that must stay inside a folder: relative, no ``..``, no NUL.

    Returns the normalized POSIX form (``a/./b`` → ``a/b``). With ``allow_empty``, ``''``
    and ``'.'`` are accepted and returned as ``''`` (the folder itself).
    """
    if not isinstance(value, str):
        raise error(
            f"must be a path (string), not {_type_name(value)}",
            file=file,
            field=field,
            expected="a relative path",
        )
    if "\x00" in value:
        raise error("path contains a NUL character", file=file, field=field)
    pure = PurePosixPath(value)
    if pure.is_absolute() or value.startswith("~"):
        raise error(
            f"path {value!r} is absolute",
            file=file,
            field=field,
            expected="a relative path",
            hint="paths are relative to the template or run folder",
        )
    if ".." in pure.parts:
        raise error(
            f"path {value!r} leaves its folder ('..')",
            file=file,
            field=field,
            expected="a relative path without '..'",
        )
    text = pure.as_posix()
    if text == ".":
        text = ""
    if not text and not allow_empty:
        raise error("path is empty", file=file, field=field, expected="a relative path")
    return text


# -- ranges ------------------------------------------------------------------------------

_RANGE = re.compile(r"\s*([\[(])\s*([^,\s]*)\s*,\s*([^,\s]*)\s*([\])])\s*\Z")


def parse_range(text: str, *, field: str, file: str | None = None) -> Range:
    """Parse an interval such as ``'[0,1)'``.

    ``[``/``]`` are closed ends, ``(``/``)`` open ones; an empty bound, ``-inf`` or
    ``inf`` is unbounded (``'(,10]'``). A left bound above the right one is an error.
    """
    if not isinstance(text, str):
        raise TemplateError(
            f"a range must be a string, not {_type_name(text)}",
            file=file,
            field=field,
            expected="an interval such as '[0,10]' or '(0,]'",
        )
    m = _RANGE.match(text)
    if m is None:
        raise TemplateError(
            f"invalid range {text!r}",
            file=file,
            field=field,
            expected="an interval such as '[0,10]', '(0,1)', '[1,)' or '(,5]'",
        )
    opening, low_text, high_text, closing = m.groups()
    low = _bound(low_text, -1, where=text, field=field, file=file)
    high = _bound(high_text, +1, where=text, field=field, file=file)
    if low is not None and high is not None and low > high:
        raise TemplateError(
            f"invalid range {text!r}: the left bound is greater than the right one",
            file=file,
            field=field,
        )
    return Range(
        low=low,
        high=high,
        low_closed=opening == "[",
        high_closed=closing == "]",
        text=text.strip(),
    )


def _bound(text: str, sign: int, *, where: str, field: str, file: str | None) -> float | None:
    """One bound of a range: ``''`` or an infinity of the right sign is unbounded."""
    unbounded = ("", "inf", "+inf") if sign > 0 else ("", "-inf")
    if text.lower() in unbounded:
        return None
    if _FLOAT_TEXT.match(text) is None:
        raise TemplateError(
            f"invalid bound {text!r} in range {where!r}",
            file=file,
            field=field,
            expected="a number, or empty for no bound",
        )
    return float(text)


def _range_text(rng: Range | None) -> str:
    return f" in {rng.text}" if rng is not None and rng.text else ""


# -- declarations ------------------------------------------------------------------------


def parse_parameters(decls: Any, *, file: str, field: str = "parameters") -> list[Parameter]:
    """Parse a template's ``parameters`` list into :class:`Parameter` objects.

    Strict: unknown keys, unknown dtypes, duplicate names and defaults that do not fit
    their own declaration are :class:`TemplateError`\\ s naming the path, e.g.
    ``parameters[1].colour``. The docs' spellings ``type``/``datatype``, ``description``,
    ``module`` and ``as`` are accepted for ``dtype``, ``help``, ``group`` and ``target``.
    """
    params = _parse_list(decls, file=file, field=field, identifiers=True)
    return params


def _parse_list(decls: Any, *, file: str, field: str, identifiers: bool) -> list[Parameter]:
    if decls is None:
        return []
    if not isinstance(decls, list):
        raise TemplateError(
            f"must be a list of parameter declarations, not {_type_name(decls)}",
            file=file,
            field=field,
        )
    params: list[Parameter] = []
    seen: set[str] = set()
    for pos, decl in enumerate(decls):
        path = _join(field, pos)
        param = _parse_decl(decl, pos, file=file, field=path, identifier=identifiers)
        if param.name in seen:
            raise TemplateError(
                f"duplicate parameter name {param.name!r}",
                file=file,
                field=_join(path, "name"),
                hint="each parameter (or record field) needs its own name",
            )
        seen.add(param.name)
        params.append(param)
    return params


def _canonical(decl: dict[str, Any], *, file: str, field: str) -> dict[str, Any]:
    """Map the docs' alias keys to flowServ's names; refuse two spellings of one key."""
    out: dict[str, Any] = {}
    for key, value in decl.items():
        canon = next((c for c, names in _ALIASES.items() if key in names), key)
        if canon in out:
            raise TemplateError(
                f"{key!r} repeats another spelling of {canon!r}",
                file=file,
                field=_join(field, str(key)),
                hint=f"give only one of {', '.join(_ALIASES[canon])}",
            )
        out[canon] = value
    return out


def _parse_decl(
    decl: Any, pos: int, *, file: str, field: str, identifier: bool, name: str | None = None
) -> Parameter:
    if not isinstance(decl, dict):
        raise TemplateError(
            f"a parameter declaration must be a mapping, not {_type_name(decl)}",
            file=file,
            field=field,
        )
    doc = _canonical(decl, file=file, field=field)
    if "name" not in doc and name is not None:
        doc["name"] = name  # a list's element declaration may leave its name out
    dtype = _parse_dtype(doc, file=file, field=field)
    allowed = _COMMON_KEYS + _EXTRA_KEYS.get(dtype, ())
    for key, original in zip(doc, decl, strict=False):
        if key not in allowed:
            raise TemplateError(
                f"unknown key {original!r} for a {dtype} parameter",
                file=file,
                field=_join(field, str(original)),
                expected=f"one of the keys {', '.join(allowed)}",
            )
    param = Parameter(
        name=_parse_name(doc, file=file, field=field, identifier=identifier),
        dtype=dtype,
        index=_opt_int(doc, "index", pos, file=file, field=field),
        required=_opt_bool(doc, "isRequired", "defaultValue" not in doc, file=file, field=field),
        label=_opt_str(doc, "label", file=file, field=field),
        help=_opt_str(doc, "help", file=file, field=field),
        group=_opt_str(doc, "group", file=file, field=field),
    )
    _parse_extras(param, doc, file=file, field=field)
    if "defaultValue" in doc:
        _set_default(param, doc["defaultValue"], file=file, field=_join(field, "defaultValue"))
    else:
        _select_default(param, doc, file=file, field=field)
    return param


def _select_default(param: Parameter, doc: dict[str, Any], *, file: str, field: str) -> None:
    """A select without ``defaultValue`` defaults to its value marked ``isDefault: true``
    (``defaultValue`` wins where both are given), and is then not required unless
    ``isRequired`` says so. flowServ's docs call isDefault the item "declared as the
    default value (for display purposes)": the choice its input form starts with, so a
    participant who leaves it alone runs with it. A request is flowbatch's form: leaving
    the argument out is leaving the choice alone."""
    chosen = [(pos, v) for pos, v in enumerate(param.values) if v.is_default]
    if not chosen:
        return
    pos, value = chosen[0]
    where = _join(_join(_join(field, "values"), pos), "value")
    _set_default(param, value.value, file=file, field=where)
    if "isRequired" not in doc:
        param.required = False


def _parse_dtype(doc: dict[str, Any], *, file: str, field: str) -> DType:
    if "dtype" not in doc:
        raise TemplateError(
            "missing key 'dtype'",
            file=file,
            field=field,
            expected=f"one of: {', '.join(DTYPES)}",
        )
    dtype = doc["dtype"]
    if dtype == "actor":
        raise TemplateError(
            "dtype 'actor' is not supported by flowbatch (runs shell steps only)",
            file=file,
            field=_join(field, "dtype"),
            hint="declare the participant's program as a file or string parameter "
            "and call it from a command",
        )
    if dtype not in DTYPES:
        raise TemplateError(
            f"unknown dtype {dtype!r}",
            file=file,
            field=_join(field, "dtype"),
            expected=f"one of: {', '.join(DTYPES)}",
        )
    return cast(DType, dtype)


def _parse_name(doc: dict[str, Any], *, file: str, field: str, identifier: bool) -> str:
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        raise TemplateError(
            "missing or empty 'name'", file=file, field=_join(field, "name"), expected="a name"
        )
    if identifier and _IDENTIFIER.match(name) is None:
        raise TemplateError(
            f"invalid parameter name {name!r}",
            file=file,
            field=_join(field, "name"),
            expected="letters, digits and '_', not starting with a digit",
            hint="the name is used as ${name} in commands and as a shell variable",
        )
    return name


def _opt_str(doc: dict[str, Any], key: str, *, file: str, field: str) -> str | None:
    value = doc.get(key)
    if value is None or isinstance(value, str):
        return value
    raise TemplateError(
        f"must be a string, not {_type_name(value)}", file=file, field=_join(field, key)
    )


def _opt_int(doc: dict[str, Any], key: str, default: int, *, file: str, field: str) -> int:
    value = doc.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TemplateError(
        f"must be an integer, not {_type_name(value)}", file=file, field=_join(field, key)
    )


def _opt_bool(doc: dict[str, Any], key: str, default: bool, *, file: str, field: str) -> bool:
    value = doc.get(key, default)
    if isinstance(value, bool):
        return value
    raise TemplateError(
        f"must be true or false, not {_type_name(value)}", file=file, field=_join(field, key)
    )


def _parse_extras(param: Parameter, doc: dict[str, Any], *, file: str, field: str) -> None:
    """The dtype-specific keys: range, values, target, para, fields."""
    if "range" in doc:
        param.range = parse_range(doc["range"], field=_join(field, "range"), file=file)
    if param.dtype == "select":
        param.values = _parse_values(doc.get("values"), file=file, field=_join(field, "values"))
    if "target" in doc:
        param.target = relative_path(doc["target"], field=_join(field, "target"), file=file)
    if param.dtype == "list":
        if "para" not in doc:
            raise TemplateError(
                "a list parameter needs 'para' (the declaration of its elements)",
                file=file,
                field=field,
            )
        param.para = _parse_decl(
            doc["para"],
            0,
            file=file,
            field=_join(field, "para"),
            identifier=False,
            name=param.name,
        )
        _no_file_inside(param.para, file=file, field=_join(field, "para"))
    if param.dtype == "record":
        if "fields" not in doc:
            raise TemplateError(
                "a record parameter needs 'fields' (a list of declarations)",
                file=file,
                field=field,
            )
        param.fields = _parse_list(
            doc["fields"], file=file, field=_join(field, "fields"), identifiers=False
        )
        if not param.fields:
            raise TemplateError(
                "a record needs at least one field", file=file, field=_join(field, "fields")
            )
        for pos, member in enumerate(param.fields):
            _no_file_inside(member, file=file, field=_join(_join(field, "fields"), pos))


def _no_file_inside(member: Parameter, *, file: str, field: str) -> None:
    """A list's element or a record's field is never a file: files are staged (checked,
    copied into the run folder, given to the run's user) for top-level parameters only,
    and a file inside a list would reach the command as text naming the user's path."""
    if member.dtype == "file":
        raise TemplateError(
            "a file cannot be an element of a list or a field of a record",
            file=file,
            field=field,
            expected="a top-level parameter of dtype file for each file",
            hint="declare one file parameter per file the workflow reads",
        )


def _parse_values(values: Any, *, file: str, field: str) -> list[SelectValue]:
    if not isinstance(values, list) or not values:
        raise TemplateError(
            "a select parameter needs 'values': a non-empty list of {name, value}",
            file=file,
            field=field,
        )
    out: list[SelectValue] = []
    for pos, item in enumerate(values):
        path = _join(field, pos)
        check_keys(
            item,
            field=path,
            file=file,
            allowed=("name", "value", "isDefault"),
            required=("name", "value"),
        )
        value = item["value"]
        finite = not isinstance(value, float) or math.isfinite(value)
        if not isinstance(value, str | int | float) or not finite:
            raise TemplateError(
                f"a select value must be a string or a number, not {_type_name(value)}",
                file=file,
                field=_join(path, "value"),
            )
        if any(_same(value, v.value) for v in out):
            raise TemplateError(
                f"duplicate select value {value!r}", file=file, field=_join(path, "value")
            )
        is_default = _opt_bool(item, "isDefault", False, file=file, field=path)
        out.append(SelectValue(name=str(item["name"]), value=value, is_default=is_default))
    return out


def check_select_marks(parameters: list[Parameter], *, file: str | None, field: str) -> None:
    """At install (and ``validate``): a select with two values marked ``isDefault``
    names no one default (the first is taken). Not a parse error: a template installed
    before this check must still load."""
    for index, param in enumerate(parameters):
        where = _join(field, index)
        marked = [pos for pos, v in enumerate(param.values) if v.is_default]
        if len(marked) > 1:
            raise TemplateError(
                f"a second value marked isDefault (values[{marked[0]}] is one already)",
                file=file,
                field=_join(_join(_join(where, "values"), marked[1]), "isDefault"),
                expected="at most one value with isDefault: true",
                hint="mark one choice only (a defaultValue, if given, is the default all the same)",
            )
        check_select_marks(param.fields, file=file, field=_join(where, "fields"))


def _set_default(param: Parameter, value: Any, *, file: str, field: str) -> None:
    """Validate a declared default by casting it: a bad default fails at install."""
    param.has_default = True  # even for 0, False and '' (flowServ GAP)
    if param.dtype == "file":
        # A file default names a file shipped inside the template; it doubles as the
        # default target path (seed docs §2.2), so it must be a safe relative path.
        param.default = relative_path(value, field=field, file=file)
        return
    try:
        param.default = cast_value(param, value, field=field)
    except ArgumentError as exc:
        raise TemplateError(
            f"invalid default: {exc.reason}",
            file=file,
            field=field,
            expected=exc.expected,
        )


# -- casting -----------------------------------------------------------------------------


def _fail(
    reason: str, *, field: str, expected: str | None = None, hint: str | None = None
) -> NoReturn:
    raise ArgumentError(reason, field=field, expected=expected, hint=hint)


def cast_value(param: Parameter, value: Any, *, field: str) -> Any:
    """Check ``value`` against ``param`` and return it in its canonical type.

    The flowServ cast rules (seed-inventory §2.2), made strict: no truncation of 3.9 to 3,
    no NaN or infinity, no bool passing as a number, no dict turned into a string. Errors
    are :class:`ArgumentError` with ``field`` and a human ``expected`` text.
    """
    caster = _CASTERS[param.dtype]
    return caster(param, value, field)


def _cast_bool(param: Parameter, value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    _fail(
        f"not a boolean: {short_repr(value)}", field=field, expected="true or false (yes/no, 1/0)"
    )


def _cast_select(param: Parameter, value: Any, field: str) -> Any:
    for option in param.values:
        if _same(value, option.value):
            return option.value
    _fail(
        f"unknown value {short_repr(value)}",
        field=field,
        expected=f"one of: {_quote_list(v.value for v in param.values)}",
    )


def _same(a: Any, b: Any) -> bool:
    """Equality that does not let True pass for 1 (bool is an int in Python)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _cast_int(param: Parameter, value: Any, field: str) -> int:
    expected = f"an integer{_range_text(param.range)}"
    result: int | None = None
    if isinstance(value, bool):
        result = None
    elif isinstance(value, int):
        result = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        result = int(value)
    elif isinstance(value, str) and _INT_TEXT.match(value.strip()):
        try:
            result = int(value.strip())
        except ValueError:  # over Python's 4300-digit limit of int(str)
            _fail("not an integer: too many digits", field=field, expected=expected)
    if result is None:
        _fail(f"not an integer: {short_repr(value)}", field=field, expected=expected)
    if not -INT_LIMIT < result < INT_LIMIT:  # whatever the declared range says
        _fail(
            f"{short_repr(result, 40)} is out of range: an integer must lie between "
            f"-{INT_LIMIT - 1} and {INT_LIMIT - 1}",
            field=field,
            expected=expected,
        )
    _check_range(param, result, field=field, expected=expected)
    return result


def _cast_float(param: Parameter, value: Any, field: str) -> float:
    expected = f"a finite number{_range_text(param.range)}"
    result: float | None = None
    if isinstance(value, bool):
        result = None
    elif isinstance(value, int | float):
        try:
            result = float(value)
        except OverflowError:  # an integer beyond the float range (10**400)
            result = math.inf
    elif isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
        result = float(value.strip())
    if result is None:
        _fail(f"not a number: {short_repr(value)}", field=field, expected=expected)
    if not math.isfinite(result):
        _fail(
            f"not a finite number: {short_repr(value)}",
            field=field,
            expected=expected,
            hint="NaN and infinity are not accepted",
        )
    _check_range(param, result, field=field, expected=expected)
    return result


def _check_range(param: Parameter, value: float, *, field: str, expected: str) -> None:
    if param.range is not None and not param.range.contains(value):
        _fail(
            f"{short_repr(value)} is out of range {param.range.text}",
            field=field,
            expected=expected,
        )


def _cast_string(param: Parameter, value: Any, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        # A YAML `yes` is True, not the text 'yes': say so rather than passing 'True'.
        _fail(
            f"not a string: {short_repr(value)}",
            field=field,
            expected="a string (a number is accepted too)",
            hint="quote the value in YAML"
            if isinstance(value, bool | datetime.date)  # `2024-05-01` is read as a date
            else None,
        )
    text = value if isinstance(value, str) else str(value)
    written = getattr(value, "written", None)  # yamlio.WrittenInt: YAML 1.1 read a number
    if written is not None and written != text:
        _fail(
            f"YAML reads {short_repr(written)} as the number {text}",
            field=field,
            expected="a string",
            hint=f"quote the value in YAML to keep it as written: {short_repr(written)}",
        )
    if "\x00" in text:
        _fail("the string contains a NUL character", field=field, expected="text without NUL")
    return text


def _cast_list(param: Parameter, value: Any, field: str) -> list[Any]:
    if not isinstance(value, list):
        _fail(f"not a list: {short_repr(value)}", field=field, expected="a list")
    assert param.para is not None  # parse_parameters guarantees it for dtype list
    return [cast_value(param.para, item, field=_join(field, i)) for i, item in enumerate(value)]


def _cast_record(param: Parameter, value: Any, field: str) -> dict[str, Any]:
    given = _record_items(value, field=field)
    known = {f.name: f for f in param.fields}
    for name in given:
        if name not in known:
            _fail(
                f"unknown field {name!r}",
                field=_join(field, name),
                expected=f"one of the fields {_quote_list(known)}",
            )
    out: dict[str, Any] = {}
    for spec in sorted(param.fields, key=lambda f: f.index):
        path = _join(field, spec.name)
        if spec.name in given:
            out[spec.name] = cast_value(spec, given[spec.name], field=path)
        elif spec.has_default:
            out[spec.name] = _default_value(spec)
        elif spec.required:
            _fail(f"missing field {spec.name!r}", field=path, expected=f"a {spec.dtype} value")
    return out


def _record_items(value: Any, *, field: str) -> dict[str, Any]:
    """A record value: a mapping, or flowServ's list of ``{name, value}``."""
    expected = "a mapping of field → value, or a list of {name, value}"
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            _fail("record field names must be strings", field=field, expected=expected)
        return dict(value)
    if not isinstance(value, list):
        _fail(f"not a record: {short_repr(value)}", field=field, expected=expected)
    out: dict[str, Any] = {}
    for i, item in enumerate(value):
        path = _join(field, i)
        if not isinstance(item, dict) or set(item) != {"name", "value"}:
            _fail("a record entry needs exactly 'name' and 'value'", field=path, expected=expected)
        name = item["name"]
        if not isinstance(name, str):
            _fail("a record field name must be a string", field=_join(path, "name"))
        if name in out:
            _fail(f"duplicate field {name!r}", field=_join(path, "name"))
        out[name] = item["value"]
    return out


_FILE_SOURCE_KEYS = ("source", "path", "file")
_FILE_TARGET_KEYS = ("target", "as")


def _cast_file(param: Parameter, value: Any, field: str) -> FileArg:
    source, target = _file_parts(value, field=field)
    if not source:
        _fail("empty file path", field=field, expected="a path to a file")
    if "\x00" in source:
        _fail("the file path contains a NUL character", field=field)
    if target is None:
        # Precedence (flowServ): the user's target > the declared target > the default.
        target = param.target or (param.default if param.has_default else None)
    if target is None:
        target = PurePosixPath(source).name
        if not target or target in (".", ".."):
            _fail(
                f"cannot derive a target name from {source!r}",
                field=field,
                hint="give {source: ..., target: ...}",
            )
    target = relative_path(target, field=_join(field, "target"), error=ArgumentError)
    return FileArg(source=source, target=target)


def _file_parts(value: Any, *, field: str) -> tuple[str, str | None]:
    """The (source, user target) of a file value in any of its accepted shapes."""
    expected = "a path, or {source: path, target: relative path}"
    if isinstance(value, str):
        return value, None
    if isinstance(value, FileArg):
        return value.source, value.target
    if not isinstance(value, dict):
        _fail(f"not a file argument: {short_repr(value)}", field=field, expected=expected)
    if value.get("type") == "$file":
        # flowServ's wire format: {"type": "$file", "value": {"fileId", "targetPath"}}
        inner = value.get("value")
        if set(value) != {"type", "value"} or not isinstance(inner, dict):
            _fail("invalid $file argument", field=field, expected=expected)
        value = {"source": inner.get("fileId"), "target": inner.get("targetPath")}
        if set(inner) - {"fileId", "targetPath"}:
            _fail("invalid $file argument", field=field, expected="{fileId, targetPath}")
    for key in value:
        if key not in _FILE_SOURCE_KEYS + _FILE_TARGET_KEYS:
            _fail(f"unknown key {key!r}", field=_join(field, str(key)), expected=expected)
    sources = [k for k in _FILE_SOURCE_KEYS if k in value]
    targets = [k for k in _FILE_TARGET_KEYS if k in value]
    if len(sources) != 1 or len(targets) > 1:
        _fail(
            "give the file path once (source) and the target at most once",
            field=field,
            expected=expected,
        )
    source = value[sources[0]]
    target = value[targets[0]] if targets else None
    if not isinstance(source, str):
        _fail(f"the file path must be a string, not {_type_name(source)}", field=field)
    if target is not None and not isinstance(target, str):
        _fail("the target must be a string", field=_join(field, "target"))
    return source, target


_CASTERS = {
    "bool": _cast_bool,
    "select": _cast_select,
    "int": _cast_int,
    "float": _cast_float,
    "string": _cast_string,
    "list": _cast_list,
    "record": _cast_record,
    "file": _cast_file,
}


# -- arguments ---------------------------------------------------------------------------


def _default_value(param: Parameter) -> Any:
    """The value a missing argument takes. A file default is a file shipped with the
    template (already in the run folder at that path): ``FileArg('', default)``."""
    if param.dtype == "file":
        return FileArg(source="", target=param.default)
    return copy.deepcopy(param.default)  # a list/record default must not be shared


def resolve_arguments(
    params: list[Parameter],
    arguments: Mapping[str, Any] | list[Any] | None,
    *,
    file: str | None = None,
) -> dict[str, Any]:
    """Validate a run's arguments against the declarations; return ``{name: value}``.

    ``arguments`` is a mapping ``name → value`` or flowServ's list ``[{name, value}]``
    (where a file value may also be ``{"type": "$file", "value": {"fileId", "targetPath"}}``;
    the file id is taken as the path). Unknown or duplicate names are errors; a missing
    argument takes its parameter's default, is an error if the parameter is required, and
    is otherwise left out. A missing file argument with a default becomes
    ``FileArg(source='', target=default)``: an empty source means the file ships inside
    the template and is already at ``target`` in the run folder, nothing to copy.

    The result is ordered by parameter ``index``. Errors are :class:`ArgumentError` with
    ``field`` = ``arguments.<name>`` (mapping form) or ``arguments[<i>]`` (list form).
    """
    known = {p.name: p for p in params}
    given = _given_arguments(arguments, known, file=file)
    out: dict[str, Any] = {}
    for param in sorted(params, key=lambda p: p.index):
        if param.name in given:
            value, path = given[param.name]
            try:
                out[param.name] = cast_value(param, value, field=path)
                _check_size(out[param.name], field=path)
            except ArgumentError as exc:
                raise exc.at(file=file)
        elif param.has_default:
            out[param.name] = _default_value(param)
        elif param.required:
            raise ArgumentError(
                f"missing argument for required parameter {param.name!r}",
                file=file,
                field=f"arguments.{param.name}",
                expected=f"a {param.dtype} value",
            )
    return out


#: the most text one argument may hold: the run script exports each argument as an
#: environment variable, and Linux refuses to start any program (even ``true``) whose
#: environment holds a single ``NAME=value`` of 128 KiB or more
MAX_VALUE_BYTES = 100 * 1024


def _check_size(value: Any, *, field: str) -> None:
    if isinstance(value, str):
        size = len(value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, list | dict):  # exported as JSON text
        size = len(json.dumps(value, ensure_ascii=False, default=str).encode("utf-8"))
    else:
        return
    if size > MAX_VALUE_BYTES:
        _fail(
            f"the value is {size} bytes: too long for the environment variable that passes "
            "it to the run (every program of the run would fail to start)",
            field=field,
            expected=f"at most {MAX_VALUE_BYTES} bytes of text",
            hint="pass large data as a file parameter",
        )


def _given_arguments(
    arguments: Any, known: dict[str, Parameter], *, file: str | None
) -> dict[str, tuple[Any, str]]:
    """The user's arguments as ``name → (value, field path)``, names checked."""
    if arguments is None:
        return {}
    given: dict[str, tuple[Any, str]] = {}
    if isinstance(arguments, Mapping):
        for name, value in arguments.items():
            path = f"arguments.{name}"
            _check_name(name, known, field=path, file=file)
            given[name] = (value, path)
        return given
    if not isinstance(arguments, list):
        raise ArgumentError(
            f"arguments must be a mapping or a list, not {_type_name(arguments)}",
            file=file,
            field="arguments",
            expected="a mapping of parameter name → value",
        )
    for i, item in enumerate(arguments):
        name, value = _list_item(item, known, field=f"arguments[{i}]", file=file)
        if name in given:
            raise ArgumentError(
                f"duplicate argument {name!r}", file=file, field=f"arguments[{i}].name"
            )
        given[name] = (value, f"arguments[{i}].value")
    return given


def _list_item(
    item: Any, known: dict[str, Parameter], *, field: str, file: str | None
) -> tuple[str, Any]:
    """One ``{name, value}`` entry of flowServ's list form (docs DRIFT: ``as`` for a
    file's target is accepted too)."""
    if not isinstance(item, dict) or "name" not in item or "value" not in item:
        raise ArgumentError(
            "an argument needs 'name' and 'value'",
            file=file,
            field=field,
            expected="{name: parameter name, value: value}",
        )
    extra = set(item) - {"name", "value", "as", "target"}
    if extra:
        raise ArgumentError(
            f"unknown key {sorted(extra)[0]!r}",
            file=file,
            field=field,
            expected="the keys name, value",
        )
    name = item["name"]
    _check_name(name, known, field=f"{field}.name", file=file)
    value = item["value"]
    target = item.get("as", item.get("target"))
    if target is not None:
        if known[name].dtype != "file":
            raise ArgumentError("only a file argument has a target", file=file, field=field)
        source, _ = _file_parts(value, field=f"{field}.value")
        value = {"source": source, "target": target}
    return name, value


def _check_name(name: Any, known: dict[str, Parameter], *, field: str, file: str | None) -> None:
    if not isinstance(name, str) or name not in known:
        raise ArgumentError(
            f"unknown parameter {name!r}",
            file=file,
            field=field,
            expected=f"one of: {', '.join(known)}" if known else "no arguments",
            hint=unknown_hint(name, known),
        )


def unknown_hint(name: Any, known: Iterable[str]) -> str:
    """What to do about an argument the template has no parameter for (the error file
    said what was expected, not what to do: found by review)."""
    names = list(known)
    if not names:
        return "this template declares no parameters: leave `arguments:` out"
    import difflib

    close = difflib.get_close_matches(str(name), names, n=1)
    spelled = f"did you mean {close[0]!r}? " if close else ""
    return f"{spelled}remove it, or see the parameters with `flowbatch workflows show`"
