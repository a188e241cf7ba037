"""The daemon's text log is one line per event: a request's name or a message with a
newline cannot forge a line (found by review: a queue file named `nl<newline>name.yaml`
split one entry over two lines)."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flowbatch.logs import one_line

from .conftest import make_site

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


def test_a_request_name_cannot_forge_a_log_line(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site")
    forged = "x\n2026-01-01 00:00:00,000 INFO flowbatch.store: run 0 RUNNING -> SUCCESS\ny.yaml"
    (site.layout.queue / forged).write_text("workflow: nowhere\n")
    site.close()
    done = subprocess.run(
        [sys.executable, "-m", "flowbatch", "--site", str(site.root), "daemon", "--until-idle"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines and all(STAMP.match(line) for line in lines), lines
    assert not any(line.startswith("2026-01-01") for line in lines)
    assert any("x\\n2026-01-01" in line for line in lines)  # shown, escaped


def test_one_line_escapes_what_a_terminal_or_a_reader_would_take_for_a_line() -> None:
    assert one_line("plain text é") == "plain text é"
    assert one_line("a\nb\rc\x1b[2Jd\u2028e\x85f") == "a\\nb\\rc\\x1b[2Jd\\u2028e\\x85f"


def test_a_lasting_error_is_said_once_a_minute_and_its_end_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server index away was two error lines a tick, every 2 s (found by review)."""
    from flowbatch import logs

    now = [1000.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: now[0])
    said = logs.Repeated(logging.getLogger("flowbatch.test"), every=60)
    with caplog.at_level(logging.INFO, logger="flowbatch.test"):
        for _ in range(100):  # 200 s of ticks every 2 s
            said.failed("index database unreachable: %s", "refused")
            now[0] += 2
        said.ok("index database reachable again")
        said.ok("index database reachable again")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5, lines  # at 0, 60, 120, 180 s, and the end
    assert lines[0] == "index database unreachable: refused"
    assert lines[1].startswith("index database unreachable: refused (for 60 s now")
    assert lines[-1] == "index database reachable again (after 200 s)"
