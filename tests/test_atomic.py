"""Atomic file writes: whole content or none, never through a link, taken names skipped."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from flowbatch.store import atomic


def test_replaces_whole_with_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    target.write_text("old")
    old_umask = os.umask(0o077)  # a narrow umask must not narrow the mode asked for
    try:
        atomic.write_bytes(target, b"new" * 100_000, mode=0o644, fsync=False)
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"new" * 100_000
    assert target.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_a_planted_link_or_taken_name_is_never_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a run user's folder the temporary names are guessable: a link or file planted
    under the next one makes the write pick another name, never follow the link."""
    secret = tmp_path / "secret"
    secret.write_text("untouched")
    folder = tmp_path / "run"
    folder.mkdir()
    monkeypatch.setattr(atomic, "_COUNTER", itertools.count(7))
    planted = folder / f".index.html.{os.getpid()}.7.tmp"  # the next name it would take
    planted.symlink_to(secret)
    atomic.write_text(folder / "index.html", "page", fsync=False)
    assert (folder / "index.html").read_text() == "page"
    assert not (folder / "index.html").is_symlink()
    assert secret.read_text() == "untouched"
    assert planted.is_symlink()  # left alone, and nothing else left behind
    assert sorted(p.name for p in folder.iterdir()) == [planted.name, "index.html"]


def test_a_failed_write_removes_its_temporary(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        atomic.write_bytes(tmp_path / "x", "not bytes", fsync=False)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_private_write_refuses_a_link(tmp_path: Path) -> None:
    (tmp_path / "run.sh").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        atomic.write_private(tmp_path / "run.sh", b"#!/bin/bash\n")
    assert not (tmp_path / "elsewhere").exists()
