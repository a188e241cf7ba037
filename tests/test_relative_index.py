"""A relative SQLite path in ``database:`` (``sqlite:///data/index.db``) is the site
folder's, whatever folder a process runs in: SQLite took it from the current folder, so a
daemon that systemd starts in ``/`` opened ``/data/index.db``, and each command run from
another folder an index of its own beside the same tree (found by review). The daemon,
the commands, doctor, reindex and the site-id check all get the path resolved, from
``flowbatch.yaml`` and from ``FLOWBATCH_DATABASE`` alike."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from flowbatch import api
from flowbatch.config import resolve_sqlite_url
from flowbatch.configsrc import load
from flowbatch.site import Site
from flowbatch.store import siteid

from .conftest import EXAMPLES, drop, make_site

RELATIVE = "sqlite:///data/index.db"


def _fb(
    site: Path, *args: str, cwd: Path, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """A flowbatch command on ``site`` run in the folder ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "flowbatch", "--site", str(site), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        check=check,
        timeout=120,
    )


def _elsewhere(tmp_path: Path, name: str) -> Path:
    """A folder to run commands in, with a ``data`` folder of its own: where SQLite made
    the index when it took the path from the current folder."""
    folder = tmp_path / name
    (folder / "data").mkdir(parents=True)
    return folder


def _site(root: Path, database: str = RELATIVE) -> Path:
    site = make_site(root, {"database": database})
    (root / "data").mkdir()
    api.install(site, EXAMPLES / "helloworld", workflow_id="helloworld")
    drop(site, "a.yaml", {"workflow": "helloworld", "name": "a", "group": "a"})
    site.close()
    return root


def _record(index: Path) -> tuple[str | None, Path | None]:
    """The site id and root the SQLite index file ``index`` records."""
    with sqlite3.connect(index) as conn:
        found = dict(conn.execute("SELECT key, value FROM meta_row").fetchall())
    conn.close()
    root = found.get(siteid.ROOT_KEY)
    return found.get(siteid.ID_KEY), Path(root) if root else None


def _names(site: Path, cwd: Path, env: dict[str, str] | None = None) -> list[str]:
    out = _fb(site, "runs", "list", "--json", cwd=cwd, env=env)
    return sorted(str(r["name"]) for r in json.loads(out.stdout))


def test_resolve_sqlite_url() -> None:
    site = Path("/srv/site")
    assert resolve_sqlite_url("sqlite:///index.db", site) == "sqlite:////srv/site/index.db"
    assert resolve_sqlite_url("sqlite:///./db/x.db?timeout=5", site) == (
        "sqlite:////srv/site/db/x.db?timeout=5"
    )
    assert resolve_sqlite_url("SQLITE:///../shared/x.db", site) == "SQLITE:////srv/shared/x.db"
    for unchanged in (
        "sqlite:////abs/index.db",
        "sqlite:///:memory:",
        "sqlite://",
        "sqlite:///file:x.db?mode=ro",
        "postgresql://user@host/db",
    ):
        assert resolve_sqlite_url(unchanged, site) == unchanged


def test_the_daemon_and_commands_use_the_site_folders_index(tmp_path: Path) -> None:
    root = _site(tmp_path / "site")
    index = root / "data" / "index.db"
    cwd = _elsewhere(tmp_path, "cwd")  # as systemd's / for the daemon
    _fb(root, "daemon", "--until-idle", cwd=cwd)
    assert index.is_file()
    other = _elsewhere(tmp_path, "home")
    assert _names(root, other) == ["a"]  # another folder: the same index
    assert _names(root, root) == ["a"]
    for folder in (cwd, other, tmp_path / "test-cwd"):
        assert list((folder / "data").iterdir()) == []
    assert _record(index) == (siteid.read_site_id(root), root)
    # config show and doctor say which file it is
    shown = json.loads(_fb(root, "config", "show", "--json", cwd=other).stdout)
    value = next(v for v in shown["values"] if v["key"] == "database")
    assert value == {"key": "database", "value": f"sqlite:///{index}", "source": "flowbatch.yaml"}
    doctor = _fb(root, "doctor", cwd=other).stdout
    line = next(x for x in doctor.splitlines() if x.startswith("index "))
    assert " ok " in line and f"sqlite:///{index}" in line and RELATIVE in line
    assert "1 run" in line
    # reindex rebuilds that same file
    out = _fb(root, "reindex", cwd=other)
    assert "indexed 1 run" in out.stdout
    assert list((other / "data").iterdir()) == []
    assert _names(root, cwd) == ["a"]


def test_flowbatch_database_is_resolved_against_the_site_folder_too(tmp_path: Path) -> None:
    root = _site(tmp_path / "site")  # installed with data/index.db: the variable wins
    cwd = _elsewhere(tmp_path, "cwd")
    env = {"FLOWBATCH_DATABASE": "sqlite:///data/env.db"}
    _fb(root, "daemon", "--until-idle", cwd=cwd, env=env)
    assert (root / "data" / "env.db").is_file()
    assert _names(root, tmp_path, env) == ["a"]
    assert list((cwd / "data").iterdir()) == []
    assert load(root, env).config.database == f"sqlite:///{root / 'data' / 'env.db'}"


def test_a_copy_with_a_relative_index_has_its_own_from_any_folder(tmp_path: Path) -> None:
    first = _site(tmp_path / "first")
    _fb(first, "daemon", "--until-idle", cwd=first)
    copy = tmp_path / "copy"
    shutil.copytree(first, copy, symlinks=True)
    # run from the first site's folder: the copy's path names the copy's own file, not
    # the first one's (the copy was refused as "a copy of it", or wrote into it)
    site = Site(copy)
    drop(site, "b.yaml", {"workflow": "helloworld", "name": "b", "group": "b"})
    site.close()
    _fb(copy, "daemon", "--until-idle", cwd=first)
    assert _names(copy, first) == ["a", "b"]
    assert _names(first, copy) == ["a"]
    assert siteid.read_site_id(copy) != siteid.read_site_id(first)
    assert _record(copy / "data" / "index.db") == (siteid.read_site_id(copy), copy)
    assert _record(first / "data" / "index.db") == (
        siteid.read_site_id(first),
        first,
    )


@pytest.fixture(autouse=True)
def _in_another_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process too runs in a folder of its own with a ``data`` folder, the site's
    set up in-process there (none of the site's paths may come from it)."""
    monkeypatch.delenv("FLOWBATCH_DATABASE", raising=False)
    monkeypatch.chdir(_elsewhere(tmp_path, "test-cwd"))
