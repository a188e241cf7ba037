"""Trying a failing thing again less and less often: after a first wait, the wait
doubles at each failure up to a most. Kept in memory (a restart tries at once).

The claims a daemon cannot remove (:class:`flowbatch.queue.ClaimSettler`) and the
requests whose runs cannot be made where they belong (a read-only mount or a quota
beneath the results tree: :class:`flowbatch.queue.Intake`) wait so, each on its own,
instead of being tried, and logged, at every tick."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass
class Tries:
    """The failures of one thing so far."""

    error: int | None  # the errno of the last failure
    since: float  # the clock at the first failure
    tries: int
    wait: float  # seconds from one try to the next
    due: float  # the clock at the next try
    said: float  # the clock when the log last said so
    why: str = ""  # what the last failure was, and what mends it (the caller's words)


class Backoff(Generic[K]):
    """The things whose last try failed, each with the time of its next try. The clock
    is the caller's (a test's may stand in)."""

    def __init__(self, first: float, most: float) -> None:
        self.first = first
        self.most = most
        self._tries: dict[K, Tries] = {}

    def failed(self, key: K, error: int | None, now: float) -> tuple[Tries, bool]:
        """Note that ``key`` failed at ``now`` with ``error``; returns its record and
        whether that is news: its first failure, or another error than the last one."""
        tries = self._tries.get(key)
        if tries is None:
            wait = self.first
            tries = self._tries[key] = Tries(error, now, 1, wait, now + wait, now)
            return tries, True
        tries.tries += 1
        tries.wait = min(tries.wait * 2, self.most)
        tries.due = now + tries.wait
        changed = error != tries.error
        tries.error = error
        return tries, changed

    def due(self, key: K, now: float) -> bool:
        """Whether ``key`` may be tried now (it never failed, or its wait is over)."""
        tries = self._tries.get(key)
        return tries is None or tries.due <= now

    def get(self, key: K) -> Tries | None:
        return self._tries.get(key)

    def done(self, key: K) -> Tries | None:
        """``key`` went through (or went away): its record, if it had failed before."""
        return self._tries.pop(key, None)

    def keep(self, keys: Iterable[K]) -> list[K]:
        """Forget the things not in ``keys`` (gone meanwhile); returns them."""
        present = set(keys)
        gone = [key for key in self._tries if key not in present]
        for key in gone:
            del self._tries[key]
        return gone

    def __contains__(self, key: object) -> bool:
        return key in self._tries

    def __len__(self) -> int:
        return len(self._tries)
