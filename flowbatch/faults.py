"""Fault injection for crash tests: ``FLOWBATCH_CRASH_AT=intake:3,finalize:1``.

The daemon calls :func:`point` at the moments where a crash is most dangerous (after a
claim, after a run folder is created, between a launch and its record, during finalize and
ranking, between a post-processing's take-back and its record). With the variable unset,
a point costs one dictionary lookup. With it set, the N-th time a named point is reached
the process SIGKILLs itself: no cleanup, no flush, as the kernel or an administrator
would kill it.

A test that serves a daemon in its own process cannot be SIGKILLed: :func:`stop_at`
raises :class:`Stopped` at a point instead, which no handler of the daemon's catches
(it is no :class:`Exception`), so the daemon is left where a kill would have left it,
for the test to drop and start another on the same site.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

_PLAN: dict[str, int] = {}
for _item in os.environ.get("FLOWBATCH_CRASH_AT", "").split(","):
    _name, _, _count = _item.strip().partition(":")
    if _name:
        _PLAN[_name] = int(_count or 1)

#: points a test of this process stops at (:func:`stop_at`): name -> times left to pass
_STOPS: dict[str, int] = {}


class Stopped(BaseException):
    """Raised at a point :func:`stop_at` named: the daemon stops there as if killed."""


def point(name: str) -> None:
    """Crash here if the plan says so (see the module docstring)."""
    if _STOPS and name in _STOPS:
        _STOPS[name] -= 1
        if _STOPS[name] <= 0:
            del _STOPS[name]
            raise Stopped(name)
    if not _PLAN or name not in _PLAN:
        return
    _PLAN[name] -= 1
    if _PLAN[name] <= 0:
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def stop_at(name: str, count: int = 1) -> Iterator[None]:
    """Within the block, the ``count``-th time this process reaches the point ``name``
    raises :class:`Stopped` (for tests: see the module docstring)."""
    _STOPS[name] = count
    try:
        yield
    finally:
        _STOPS.pop(name, None)
