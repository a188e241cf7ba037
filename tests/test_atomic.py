"""Atomic file writes: whole content or none, never through a link, taken names skipped."""

from __future__ import annotations

import itertools
import json
import os
from datetime import UTC, datetime
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


@pytest.mark.parametrize("c_encoder", [True, False])
def test_a_record_reads_a_key_per_line_and_loads_as_json_dumps_would(
    monkeypatch: pytest.MonkeyPatch, c_encoder: bool
) -> None:
    if not c_encoder:  # an interpreter without the C encoder
        monkeypatch.setattr(atomic, "_ENCODE", None)
    when = datetime(2026, 11, 23, tzinfo=UTC)
    record = {
        "id": "r1",
        "name": None,
        "arguments": {"n": 3, "text": 'é "q"\nline', "list": [1, 2.5, True]},
        "history": [{"state": "PENDING", "at": "x"}, {"state": "RUNNING", "at": "y"}],
        "mixed": [1, {"a": 1}],
        "empty": [],
        "when": when,  # not JSON: written as its text, as json.dumps(default=str)
    }
    data = atomic.record_bytes(record)
    assert json.loads(data) == json.loads(json.dumps(record, default=str))
    lines = data.decode().splitlines()
    assert lines[0] == "{" and lines[-1] == "}" and data.endswith(b"}\n")
    assert lines[1] == '  "id": "r1",'
    assert '    {"state": "PENDING", "at": "x"},' in lines  # an object of a list per line
    assert '  "mixed": [1, {"a": 1}],' in lines
    assert sum(1 for line in lines if line.startswith('  "')) == len(record)
    assert atomic.record_bytes({}) == b"{}\n"
    # plain values written directly, as the encoder writes them: the same bytes
    plain = {
        "s": 'é "q"\n\t\x00\u2028 <>&',
        "i": -(2**70),
        "t": True,
        "f": False,
        "n": None,
        "x": 1.5,
        "é": 0,
    }
    expected = ",\n".join(f"  {atomic._compact(k)}: {atomic._compact(v)}" for k, v in plain.items())
    assert atomic.record_bytes(plain) == f"{{\n{expected}\n}}\n".encode()
