"""Resources a run asks of a scheduler: ``resources: {time, cpus, mem, gpus, partition}``.

Templates (top-level ``resources:``) and requests (``resources:``) may set them; the
request wins key by key. They are validated strictly when the template is installed or
the request is taken in, so that a typo is refused with its field instead of surfacing as
a cryptic sbatch error later. Only the partition's existence is left to sbatch (it knows).
"""

from __future__ import annotations

import os
import re
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from .. import durations
from ..errors import InputError
from ..text import short_repr
from ..yamlio import load_file
from .model import Resources

KEYS = tuple(f.name for f in fields(Resources))

_MEM = re.compile(r"(\d+)\s*([KMGT]?)B?\Z", re.IGNORECASE)
_PARTITION = re.compile(r"[A-Za-z0-9_.-]{1,64}(,[A-Za-z0-9_.-]{1,64})*\Z")


class ResourceError(ValueError):
    """A resource value is invalid; ``field`` names the key."""

    def __init__(self, field: str, message: str) -> None:
        # str() is what pydantic shows under the ``resources`` field: name the key only
        key = field.removeprefix("resources").lstrip(".")
        super().__init__(f"{key}: {message}" if key else message)
        self.field = field
        self.message = message


def parse_seconds(value: Any) -> float:
    """Seconds from ``'90s'``, ``'30m'``, ``'2h'``, ``'1-12:00:00'``, ``'1:30:00'``, ``'5:00'``
    (:mod:`flowbatch.durations`).

    A bare number is refused: Slurm reads it as minutes and flowbatch's ``timeLimit`` as
    seconds, so either reading would surprise someone."""
    try:
        return durations.seconds(value, bare_number=False)
    except durations.DurationError as exc:
        raise ValueError(f"not a time {short_repr(value, 80)} ({exc})") from None


def check_mem(value: Any) -> str:
    """Slurm's memory size (``500M``, ``4G``; a bare number is megabytes) as ``<n><unit>``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    m = _MEM.match(value.strip()) if isinstance(value, str) else None
    if m is None or len(m.group(1)) > 30 or int(m.group(1)) <= 0:  # 30 digits: no memory size
        raise ValueError(
            f"not a memory size {short_repr(value, 80)} (expected e.g. 500M, 4G, or megabytes)"
        )
    return f"{int(m.group(1))}{(m.group(2) or 'M').upper()}"


def check_partition(value: Any) -> str:
    """A partition (or account, qos) name: a word, or a comma list of words."""
    if not isinstance(value, str) or not _PARTITION.match(value):
        raise ValueError(
            f"not a Slurm name {short_repr(value, 80)} (letters, digits, _ . -, comma lists)"
        )
    return value


def _count(value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"must be an integer ≥ {minimum}, not {short_repr(value, 80)}")
    return value


_CHECKS: dict[str, Any] = {
    "time": parse_seconds,
    "cpus": lambda v: _count(v, 1),
    "mem": check_mem,
    "gpus": lambda v: _count(v, 0),
    "partition": check_partition,
}


def parse_resources(doc: Any) -> Resources | None:
    """Validate a ``resources:`` mapping; raises :class:`ResourceError` naming the key."""
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise ResourceError("resources", f"must be a mapping with keys {', '.join(KEYS)}")
    values: dict[str, Any] = {}
    for key, value in doc.items():
        if key not in _CHECKS:
            expected = ", ".join(KEYS)
            raise ResourceError(f"resources.{key}", f"unknown key (expected one of {expected})")
        if value is None:
            continue
        try:
            values[key] = _CHECKS[key](value)
        except ValueError as exc:
            raise ResourceError(f"resources.{key}", str(exc)) from None
    return Resources(**values)


def merge(base: Resources | None, override: Resources | None) -> Resources:
    """``override``'s keys that are set win over ``base``'s (a request over its template)."""
    out = base or Resources()
    if override is None:
        return out
    changes = {k: getattr(override, k) for k in KEYS if getattr(override, k) is not None}
    return replace(out, **changes)


def as_dict(resources: Resources | None) -> dict[str, Any]:
    """The keys that are set, JSON-able (for run.json and the executor's launch)."""
    if resources is None:
        return {}
    return {k: getattr(resources, k) for k in KEYS if getattr(resources, k) is not None}


def run_resources(
    template: Resources | None, request_file: Path, owner: int | None = None
) -> dict[str, Any]:
    """A run's resources: its request's (the copy in the run folder) over its template's.

    The request was validated at intake; reading it again keeps the run record's format
    unchanged (see the README: the run folder holds ``request.yaml`` as received).
    ``owner``: the uid that wrote the copy (the daemon's). The run folder is its user's
    while the run runs, so a retry finds the copy as they left it: one replaced (by
    their own file, a link, a FIFO) raises :class:`~flowbatch.errors.InputError`, rather
    than giving the retry resources no one checked. A copy that is missing (an older
    run) gives the template's."""
    try:
        doc = load_file(request_file, follow=False, owner=owner)
    except InputError:
        if os.path.lexists(request_file):
            raise
        doc = None
    raw = doc.get("resources") if isinstance(doc, dict) else None
    try:
        requested = parse_resources(raw)
    except ResourceError:
        requested = None  # cannot happen after intake; the template's then apply
    return as_dict(merge(template, requested))
