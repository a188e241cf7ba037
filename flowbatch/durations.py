"""Durations, written one way everywhere: the site's ``time_limit`` and grace times, a
template's ``timeLimit``, a request's or a Slurm profile's ``resources.time``.

Accepted: a number with a unit (``90s``, ``1.5 min``, ``10m``, ``2h``, ``1d``; ``s``,
``sec``, ``m``, ``min``, ``h``, ``d``, in any case), and Slurm's clock forms ``MM:SS``,
``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS`` (minutes and seconds below 60 after
the first field). A bare number (``90``, ``'90'``) is seconds where ``bare_number`` allows
it; Slurm's own fields refuse it, since Slurm reads it as minutes. Three parsers had
drifted apart (``'10min'`` taken by one and refused by another, ``'1:99:99'`` the other
way round; found by review)."""

from __future__ import annotations

import math
import re
from typing import Any

_WITH_UNIT = re.compile(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?\Z", re.IGNORECASE)
_CLOCK = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d{1,2}))?(?::(\d{1,2}))?\Z")
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}

#: what the texts may be, for messages
FORMS = "a duration with a unit ('90s', '10m', '2h', '1d') or Slurm's [D-]HH:MM[:SS] / MM:SS"


class DurationError(ValueError):
    """Not a duration; the message says what was expected."""


def seconds(value: Any, *, bare_number: bool = True) -> float:
    """Seconds (positive, finite) from ``value``, or :class:`DurationError`."""
    expected = f"a number of seconds or {FORMS}" if bare_number else FORMS
    found: float | None = None
    # YAML 1.1 reads an unquoted 1:30:00 as the number 5400 (yamlio.WrittenInt keeps its
    # text): the text is what was meant (found by review: refused as a bare number)
    value = getattr(value, "written", value)
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not bare_number:
                raise DurationError(
                    f"a bare number is ambiguous here (Slurm reads minutes): write {FORMS}"
                )
            found = float(value)
        elif isinstance(value, str):
            found = _text(value.strip(), bare_number)
    except (OverflowError, ValueError) as exc:  # beyond a float, or digits beyond int()'s
        if isinstance(exc, DurationError):
            raise
        found = None
    if found is None or not math.isfinite(found) or found <= 0:
        raise DurationError(f"expected {expected}, positive")
    return found


def _text(text: str, bare_number: bool) -> float | None:
    m = _WITH_UNIT.match(text)
    if m:
        if m.group(2) is None and not bare_number:
            raise DurationError(
                f"a bare number is ambiguous here (Slurm reads minutes): write {FORMS}"
            )
        return float(m.group(1)) * _UNITS[(m.group(2) or "s").lower()]
    m = _CLOCK.match(text)
    if m is None:
        return None
    days, first, second, third = m.groups()
    if days is None and second is None:
        return None  # a bare number, matched above
    nums = [int(x) for x in (first, second, third) if x is not None]
    if any(n >= 60 for n in nums[1:]):
        return None
    if days is not None:  # D-HH[:MM[:SS]]
        hours, minutes, secs = [*nums, 0, 0][:3]
        return float(int(days) * 86400 + hours * 3600 + minutes * 60 + secs)
    if len(nums) == 2:  # MM:SS
        return float(nums[0] * 60 + nums[1])
    hours, minutes, secs = nums  # HH:MM:SS
    return float(hours * 3600 + minutes * 60 + secs)
