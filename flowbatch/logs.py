"""Logging for the daemon: one line per event, as text or as JSON lines."""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime

from .text import one_line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("run", "state", "workflow"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out)


class TextFormatter(logging.Formatter):
    """One line per event: the message's control characters escaped (a traceback still
    follows on lines of its own)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = one_line(record.message)
        return super().formatMessage(record)


class Repeated:
    """One error said once, then at most every ``every`` seconds while it lasts, and its
    end said once: a server index away logged two lines a tick, every 2 s (found by
    review)."""

    def __init__(self, logger: logging.Logger, every: float = 60.0) -> None:
        self.log = logger
        self.every = every
        self._since: float | None = None  # when it began (monotonic)
        self._said_at = 0.0

    def failed(self, message: str, *args: object, exc_info: bool = False) -> None:
        """``exc_info``: the first time, with the exception being handled (a bug's
        traceback, said once)."""
        now = time.monotonic()
        if self._since is None:
            self._since = self._said_at = now
            self.log.error(message, *args, exc_info=exc_info)
        elif now - self._said_at >= self.every:
            self._said_at = now
            self.log.error(
                message + " (for %.0f s now; said again every %.0f s)",
                *args,
                now - self._since,
                self.every,
            )

    @property
    def failing(self) -> bool:
        """Whether the error was said and its end not yet."""
        return self._since is not None

    def ok(self, message: str, *args: object) -> None:
        if self._since is not None:
            self.log.info(message + " (after %.0f s)", *args, time.monotonic() - self._since)
            self._since = None


def setup_logging(fmt: str = "text", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # every library's records go through the same handler, so --log-format json gives
    # JSON lines only
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("flowbatch").setLevel(level)
    # watchdog reports a benign race when its observer stops with events queued
    logging.getLogger("watchdog.observers.inotify").setLevel(logging.CRITICAL)
