"""Fault injection for crash tests: ``FLOWBATCH_CRASH_AT=intake:3,finalize:1``.

The daemon calls :func:`point` at the moments where a crash is most dangerous (after a
claim, after a run folder is created, between a launch and its record, during finalize and
ranking). With the variable unset, a point costs one dictionary lookup. With it set, the
N-th time a named point is reached the process SIGKILLs itself: no cleanup, no flush, as
the kernel or an administrator would kill it.
"""

from __future__ import annotations

import os
import signal

_PLAN: dict[str, int] = {}
for _item in os.environ.get("FLOWBATCH_CRASH_AT", "").split(","):
    _name, _, _count = _item.strip().partition(":")
    if _name:
        _PLAN[_name] = int(_count or 1)


def point(name: str) -> None:
    """Crash here if the plan says so (see the module docstring)."""
    if not _PLAN or name not in _PLAN:
        return
    _PLAN[name] -= 1
    if _PLAN[name] <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
