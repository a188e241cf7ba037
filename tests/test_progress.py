"""Progress lines: drawn on a terminal (a real pty), silent anywhere else."""

from __future__ import annotations

import io
import os
import pty
import select
import sys
from collections.abc import Iterator

import pytest

from flowbatch import api, progress
from flowbatch.progress import Progress, track
from flowbatch.site import Site
from tests.conftest import EXAMPLES, drop, run_until_idle


@pytest.fixture
def terminal() -> Iterator[tuple[int, io.TextIOWrapper]]:
    master, slave = pty.openpty()
    stream = os.fdopen(slave, "w", encoding="utf-8")
    yield master, stream
    stream.close()
    os.close(master)


def _read(master: int) -> str:
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        if not ready:
            return out.decode()
        out += os.read(master, 65536)


def test_draws_on_a_tty(terminal: tuple[int, io.TextIOWrapper]) -> None:
    master, stream = terminal
    assert stream.isatty()
    assert list(track(range(3), "working", stream=stream, delay=0, enabled=None)) == [0, 1, 2]
    text = _read(master)
    assert "working: 3/3 (100%)" in text
    assert text.endswith("\r\n")  # the line is ended once: the shell prompt starts clean


def test_silent_when_not_a_tty() -> None:
    stream = io.StringIO()
    with Progress("working", 10, stream=stream, delay=0) as bar:
        for _ in range(10):
            bar.advance()
    assert stream.getvalue() == ""


def test_quick_operations_draw_nothing(terminal: tuple[int, io.TextIOWrapper]) -> None:
    master, stream = terminal
    list(track(range(3), "quick", stream=stream, delay=60))
    assert _read(master) == ""


def test_reindex_shows_progress_on_a_terminal(
    hello_site: Site, terminal: tuple[int, io.TextIOWrapper], monkeypatch: pytest.MonkeyPatch
) -> None:
    drop(hello_site, "a.yaml", {"workflow": "helloworld", "group": "alice"})
    run_until_idle(hello_site)
    master, stream = terminal
    monkeypatch.setattr(progress, "DELAY", 0)
    monkeypatch.setattr(sys, "stderr", stream)
    assert api.reindex(hello_site) == 1
    assert "reindex: 1/1 (100%)" in _read(master)


def test_reindex_is_quiet_off_a_terminal(
    hello_site: Site, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    drop(hello_site, "a.yaml", {"workflow": "helloworld", "group": "alice"})
    run_until_idle(hello_site)
    monkeypatch.setattr(progress, "DELAY", 0)
    api.reindex(hello_site)
    assert "reindex" not in capsys.readouterr().err


def test_install_counts_files_on_a_terminal(
    site: Site, terminal: tuple[int, io.TextIOWrapper], monkeypatch: pytest.MonkeyPatch
) -> None:
    master, stream = terminal
    monkeypatch.setattr(progress, "DELAY", 0)
    monkeypatch.setattr(sys, "stderr", stream)
    api.install(site, EXAMPLES / "helloworld", workflow_id="helloworld")
    text = _read(master)
    assert "installing helloworld:" in text and "(100%)" in text
