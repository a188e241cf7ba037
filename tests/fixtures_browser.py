"""A real headless Chromium for the report pages (Debian's ``chromium`` package).

Pages are loaded from file://, as a participant opens them from a shared file system.
Two ways to look at a page: :meth:`Browser.dump_dom` returns the DOM after the page's
scripts ran (the leaderboard's ``#selftest=...`` fragment makes its own script click the
real controls and write the result into the DOM), and :meth:`Browser.screenshot` saves a
PNG a person can look at.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.services.apt import ensure_packages

CHROMIUM = "/usr/bin/chromium"
#: without these, Chromium waits on the network (none here) or a GPU and hangs
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT = 60.0
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


class Browser:
    """One Chromium invocation per call, each with a fresh profile folder."""

    def __init__(self, binary: str, scratch: Path) -> None:
        self.binary = binary
        self.scratch = scratch

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        profile = tempfile.mkdtemp(prefix="profile-", dir=self.scratch)
        try:
            return subprocess.run(
                [self.binary, *FLAGS, f"--user-data-dir={profile}", *args],
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                check=True,
            )
        finally:
            shutil.rmtree(profile, ignore_errors=True)

    def dump_dom(self, page: Path, fragment: str = "") -> str:
        """The serialized DOM of ``page`` after its scripts ran."""
        url = page.resolve().as_uri() + (f"#{fragment}" if fragment else "")
        return self._run("--dump-dom", url).stdout

    def self_test(self, page: Path, actions: str = "") -> dict[str, Any]:
        """Run the leaderboard's self-test (``#selftest=<actions>``) and return its result:
        ``{"order": [run ids of the visible table], "clicks": [{"key", "sort"}]}``."""
        dom = self.dump_dom(page, f"selftest={actions}" if actions else "selftest")
        match = re.search(r'<pre id="selftest-result"[^>]*>(.*?)</pre>', dom, re.S)
        assert match, "the page has no self-test output"
        result: dict[str, Any] = json.loads(html.unescape(match.group(1)))
        assert "error" not in result, result
        return result

    def screenshot(self, page: Path, out: Path, *, size: str = "1400,1100") -> Path:
        self._run(f"--screenshot={out}", f"--window-size={size}", page.resolve().as_uri())
        assert out.is_file() and out.stat().st_size > 1000, f"no screenshot at {out}"
        return out


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Debian's Chromium (installed when missing)."""
    ensure_packages(["chromium"], commands=[CHROMIUM])
    yield Browser(CHROMIUM, tmp_path_factory.mktemp("chromium"))


def keep_artifact(path: Path, name: str) -> Path:
    """Copy a screenshot to ``test-artifacts/`` (gitignored) for a person to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / name
    shutil.copyfile(path, target)
    return target
