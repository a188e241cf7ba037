"""A tick that fails for a reason flowbatch names (a FlowbatchError: an index away, a
file refused) is said plainly, once, then once a minute while it lasts, and its end once:
the serving loop logged it with a traceback at every poll interval (found by review).
A bug (any other exception) keeps its traceback. The real serving loop, in process."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from flowbatch.daemon import Daemon
from flowbatch.errors import IndexError_

from .conftest import make_site


def serve_failing(tmp_path: Path, failures: list[Exception], after: int) -> None:
    """Serve a site whose first ticks raise ``failures`` in turn, stopping ``after``
    ticks in all (the poll interval made short)."""
    site = make_site(tmp_path / "site")
    d = Daemon(site)
    d.start()
    calls: list[int] = []
    real = d.tick

    def tick() -> None:
        calls.append(1)
        if len(calls) >= after:
            d.stopping = True
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        real()

    d.tick = tick  # type: ignore[method-assign]
    try:
        d._serve(0.01, until_idle=False)
    finally:
        d.stop()
    assert len(calls) == after


def test_a_named_failure_is_said_once_without_a_traceback_and_its_end_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flowbatch")
    away = IndexError_("the index database cannot be used: disk I/O error", file="index.db")
    serve_failing(tmp_path, [away] * 5, after=8)
    failed = [r for r in caplog.records if "tick failed" in r.getMessage()]
    assert len(failed) == 1, [r.getMessage() for r in failed]
    assert "index.db: the index database cannot be used: disk I/O error" in failed[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)
    again = [r for r in caplog.records if "ticks go through again" in r.getMessage()]
    assert len(again) == 1


def test_a_bug_keeps_its_traceback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flowbatch")
    serve_failing(tmp_path, [KeyError("bug")] * 2, after=3)
    failed = [r for r in caplog.records if "tick failed" in r.getMessage()]
    assert len(failed) == 2 and all(r.exc_info for r in failed)


def test_another_named_failure_is_said_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flowbatch")
    first = IndexError_("the index database cannot be used: disk I/O error", file="index.db")
    second = IndexError_("the index database cannot be used: database is locked", file="index.db")
    serve_failing(tmp_path, [first, first, second, second], after=6)
    failed = [r.getMessage() for r in caplog.records if "tick failed" in r.getMessage()]
    assert len(failed) == 2 and "disk I/O" in failed[0] and "locked" in failed[1], failed
