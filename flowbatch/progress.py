"""A tiny progress line for long operations (reindex, reports, installing big templates).

It draws ``label: 120/4000 (3%)`` on stderr, rewritten in place, only when stderr is a
terminal: in cron mails, systemd's journal, pipes and tests it prints nothing, so logs and
``--json`` output stay clean. Redraws are throttled (a reindex of many thousand runs
must not spend its time writing to the terminal).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")

#: seconds between redraws
INTERVAL = 0.1
#: nothing is drawn for operations shorter than this (no flicker for small jobs)
DELAY = 0.5


class Progress:
    """Counts steps of one operation; draws on a TTY, is silent elsewhere.

    ``enabled`` defaults to ``stream.isatty()``; tests may force it either way. Nothing
    is drawn before ``delay`` seconds have passed, so quick operations leave no trace.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        interval: float = INTERVAL,
        delay: float | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _is_tty(self.stream) if enabled is None else enabled
        self.interval = interval
        self.delay = DELAY if delay is None else delay  # read late: tests lower it
        self.done = 0
        self._start = time.monotonic()
        self._last = 0.0
        self._drawn = False
        self._width = 0  # of the last line drawn, to blank it out when it gets shorter

    def advance(self, steps: int = 1) -> None:
        self.done += steps
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._start < self.delay:
            return
        if now - self._last >= self.interval or self.done == self.total:
            self._last = now
            self._draw(self.text())

    def text(self) -> str:
        if self.total:
            return f"{self.label}: {self.done}/{self.total} ({100 * self.done // self.total}%)"
        return f"{self.label}: {self.done}"

    def close(self) -> None:
        """Draw the final count and end the line (if a line was drawn at all)."""
        if self.enabled and self._drawn:
            self._draw(self.text())
            self.stream.write("\n")
            self.stream.flush()
        self.enabled = False

    def _draw(self, line: str) -> None:
        pad = max(0, self._width - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._width = len(line)
        self._drawn = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False


def track(
    items: Iterable[T],
    label: str,
    *,
    total: int | None = None,
    stream: TextIO | None = None,
    enabled: bool | None = None,
    delay: float | None = None,
) -> Iterator[T]:
    """Yield ``items``, counting them on a progress line (``total`` from ``len()`` if any)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(label, total, stream=stream, enabled=enabled, delay=delay) as bar:
        for item in items:
            yield item
            bar.advance()
