"""Reading YAML and JSON that users wrote, defensively.

``yaml.safe_load`` alone accepts duplicate keys (the last one wins, silently) and expands
alias bombs. Here a document is checked for size first, duplicate keys are refused with
their line, aliases are counted, and nesting depth is bounded.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError
from .safeio import read_up_to

MAX_REQUEST_BYTES = 1 << 20  # 1 MiB: a request is small; its files travel beside it
MAX_TEMPLATE_BYTES = 8 << 20
MAX_ALIASES = 100
MAX_DEPTH = 64
# Values a document may expand to, beyond one per byte of its text. Aliases share one
# parsed object, so a few of them (a "billion laughs" stays well under MAX_ALIASES) can
# still stand for an exponential number of values to anything that walks the result.
EXPANSION_ALLOWANCE = 10_000


class _StrictChecks:
    """What both strict loaders add to a safe loader: duplicate keys refused, alias uses
    counted."""

    def get_single_data(self: Any) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _count_aliases(node)
        return self.construct_document(node)

    def construct_mapping(self: Any, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                try:
                    key = self.construct_object(key_node, deep=True)
                    hash(key)
                except Exception:
                    continue
                if key in seen:
                    raise InputError(
                        f"duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                        f"(first at line {seen[key]})",
                        field=str(key),
                        hint="remove one of the two entries",
                    )
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)  # type: ignore[misc]


class _StrictLoader(_StrictChecks, yaml.SafeLoader):
    """PyYAML's own parser: any input (too deep a nesting ends in RecursionError)."""


#: libyaml's parser, ten times faster on a request, when PyYAML was built with it. Its
#: composer recurses in C without a limit (a flow list nested 200,000 deep crashes the
#: process), so it only gets text whose nesting is bounded by :func:`_depth_bound`.
_FastLoader: Any = (
    type("_FastLoader", (_StrictChecks, yaml.CSafeLoader), {})
    if getattr(yaml, "__with_libyaml__", False)
    else _StrictLoader
)
_LEAD = re.compile(r"^[ \t?:-]*", re.M)


class WrittenInt(int):
    """An integer a request wrote otherwise than Python would (``0x1F``, ``010``,
    ``12:30``, ``1_000``, ``+5``): ``written`` is its text. YAML 1.1 reads these as
    numbers, and a string parameter given one got the number's digits: ``12:30`` became
    ``'750'`` (found by review). :func:`flowbatch.spec.params.cast_value` refuses such a
    value for a string, with the hint to quote it."""

    written: str


class WrittenFloat(float):
    """A float written otherwise than Python would (``1.10``, ``1e3``): see
    :class:`WrittenInt`."""

    written: str


def _number_as_written(loader: Any, node: Any) -> Any:
    """A YAML int or float, a :class:`WrittenInt`/:class:`WrittenFloat` when its text is
    not Python's own for it."""
    if node.tag.endswith(":int"):
        value: Any = yaml.SafeLoader.construct_yaml_int(loader, node)
        kind: Any = WrittenInt
    else:
        value, kind = yaml.SafeLoader.construct_yaml_float(loader, node), WrittenFloat
    if node.value == repr(value):
        return value
    out = kind(value)
    out.written = node.value
    return out


def _as_written(loader: Any) -> Any:
    """``loader`` whose numbers remember how they were written (for requests)."""
    cls: Any = type(f"{loader.__name__}AsWritten", (loader,), {})
    cls.add_constructor("tag:yaml.org,2002:int", _number_as_written)
    cls.add_constructor("tag:yaml.org,2002:float", _number_as_written)
    return cls


def _depth_bound(text: str) -> int:
    """An upper bound of the nesting depth of ``text``: every level is an opening
    bracket, or a step of indentation or a ``- `` / ``? `` in front of a line's content."""
    brackets = text.count("[") + text.count("{")
    return brackets + max((len(m) for m in _LEAD.findall(text)), default=0) + 1


_FastAsWritten = _as_written(_FastLoader)
_StrictAsWritten = _as_written(_StrictLoader)


def _loader(text: str, as_written: bool = False) -> Any:
    if _depth_bound(text) <= 2 * MAX_DEPTH:
        return _FastAsWritten if as_written else _FastLoader
    return _StrictAsWritten if as_written else _StrictLoader


def _count_aliases(root: Any) -> None:
    """Refuse more than MAX_ALIASES alias uses. An alias is the composed node of its
    anchor used once more, so every reference to a node already met is one (each node is
    entered once: linear, and a recursive alias ends too)."""
    seen: set[int] = set()
    stack = [root]
    aliases = 0
    while stack:
        node = stack.pop()
        if id(node) in seen:
            aliases += 1
            if aliases > MAX_ALIASES:
                raise InputError(
                    f"too many YAML aliases (more than {MAX_ALIASES}), e.g. of the value "
                    f"at line {node.start_mark.line + 1}",
                    hint="write the values out instead of using anchors and aliases",
                )
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.append(key)
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _check_shape(value: Any, *, budget: int, limit: int = MAX_DEPTH) -> None:
    """Bound the nesting depth and the number of values the document expands to.

    The walk visits a value shared through aliases once per use, as every later consumer
    (validation, error messages, JSON) would; it stops as soon as ``budget`` is spent, so
    it is linear in the text even for an alias bomb or a recursive alias."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if seen > budget:
            raise InputError(
                f"the document expands to more than {budget} values (aliases repeat too much)",
                hint="write the values out instead of nesting aliases",
            )
        if depth > limit:
            raise InputError(f"nesting deeper than {limit} levels", hint="flatten the document")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def loads(
    text: str, *, file: str | None = None, json_format: bool = False, as_written: bool = False
) -> Any:
    """Parse YAML (or JSON) text with the checks above; errors name ``file``.
    ``as_written``: numbers keep their text where it is not Python's own
    (:class:`WrittenInt`): requests, templates and the site config, not results."""
    try:
        loader = _loader(text, as_written)
        value = (
            json.loads(text, object_pairs_hook=_json_object)
            if json_format
            else yaml.load(text, Loader=loader)
        )
    except InputError as exc:
        raise exc.at(file=file)
    except RecursionError:
        raise InputError("nesting too deep to parse", file=file, hint="flatten the document")
    except json.JSONDecodeError as exc:
        raise InputError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", file=file
        )
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"invalid YAML{where}: {problem}", file=file)
    except Exception as exc:
        # PyYAML's constructors raise plain ValueError/KeyError/OverflowError for scalars
        # its resolvers matched but cannot build: `2024-13-45`, `!!int x`, `!!bool x`, an
        # integer of more than 4300 digits. They are bad input, not a daemon crash.
        detail = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"invalid YAML: a value cannot be read ({detail})", file=file) from None
    try:
        _check_shape(value, budget=len(text) + EXPANSION_ALLOWANCE)
    except InputError as exc:
        raise exc.at(file=file)
    return value


def load_file(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_TEMPLATE_BYTES,
    follow: bool = True,
    owner: int | None = None,
    as_written: bool = False,
) -> Any:
    """Read and parse a YAML or JSON file (JSON by its ``.json`` suffix): a regular file
    only (a FIFO put where a file was expected would hold the reader for ever; it is
    opened without blocking and refused). ``follow=False``: not through a symbolic link
    at its name (a file of a folder someone else may write, such as a run folder);
    ``owner``: the file must belong to that uid (a copy the daemon wrote there, which
    the folder's user may have replaced with their own)."""
    p = Path(path)
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow:
            raise InputError("is a symbolic link, not the file itself", file=str(p)) from None
        raise InputError(f"cannot read file: {exc.strerror}", file=str(p)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(
                "is not a regular file", file=str(p), hint="give the path of a YAML file"
            )
        if owner is not None and st.st_uid != owner:
            raise InputError(
                f"belongs to uid {st.st_uid}, not to uid {owner} who wrote it: it was "
                "replaced and is not trusted",
                file=str(p),
            )
        return load_fd(fd, str(p), max_bytes=max_bytes, as_written=as_written)
    finally:
        os.close(fd)


def load_fd(
    fd: int, name: str, *, max_bytes: int = MAX_TEMPLATE_BYTES, as_written: bool = False
) -> Any:
    """:func:`load_file` of a file already open (read from its start): a caller that
    opened it without following links (:mod:`flowbatch.safeio`) reads what it checked.
    ``name`` is the file's name in errors, and JSON by its ``.json`` suffix."""
    try:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise InputError(
                f"file is {size} bytes, over the limit of {max_bytes} bytes",
                file=name,
                hint="keep data files out of the YAML and pass them as file arguments",
            )
        os.lseek(fd, 0, os.SEEK_SET)
        raw = read_up_to(fd, max_bytes + 1)  # one byte more tells it grew past the limit
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror}", file=name)
    if len(raw) > max_bytes:  # it grew while read
        raise InputError(f"file is over the limit of {max_bytes} bytes", file=name)
    if b"\x00" in raw:
        raise InputError("file is binary (contains NUL bytes)", file=name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"file is not UTF-8 text (byte {exc.start})", file=name, hint="save it as UTF-8"
        )
    json_format = name.lower().endswith(".json")
    return loads(text, file=name, json_format=json_format, as_written=as_written)


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, its keys once each: ``json`` lets the last of two win, silently
    (found by review: ``{"score": 1, "score": 1e9}`` was a result of 1e9), where the
    YAML loaders refuse a duplicate key."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InputError(
                f"duplicate key {key!r} in a JSON object", field=key, hint="remove one of the two"
            )
        out[key] = value
    return out


class _Dumper(yaml.SafeDumper):
    """The safe dumper, with a request's numbers written as they were (a request that
    `submit` writes again is read as its user wrote it)."""


def _written(dumper: Any, data: Any) -> Any:
    tag = "tag:yaml.org,2002:int" if isinstance(data, int) else "tag:yaml.org,2002:float"
    return dumper.represent_scalar(tag, data.written)


_Dumper.add_representer(WrittenInt, _written)
_Dumper.add_representer(WrittenFloat, _written)


def dump(value: Any) -> str:
    """YAML text for files flowbatch writes (error files, request copies)."""
    return yaml.dump(
        value, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False
    )
