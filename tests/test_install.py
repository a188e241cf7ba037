"""A plain `pip install .` (not editable) carries everything and runs the example."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO


@pytest.mark.slow
def test_plain_install_runs_the_example(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # build from a copy so no file of the work tree (egg-info, caches) helps
    subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", "--disable-pip-version-check", str(REPO)],
        check=True,
        cwd=tmp_path,
    )
    env = {**os.environ, "FLOWBATCH_VENV": str(venv)}
    out = subprocess.run(
        ["bash", str(REPO / "scripts/demo.sh"), str(tmp_path / "site")],
        check=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "SUCCESS" in out.stdout and "alice" in out.stdout and "bob" in out.stdout
    assert (tmp_path / "site/results/helloworld/leaderboard.html").exists()
    # the report templates and assets are package data: the rich pages are written
    board = (tmp_path / "site/results/helloworld/leaderboard.html").read_text()
    assert "th.sortable" in board and "<script>" in board
    assert len(list((tmp_path / "site/results/helloworld/runs").glob("*/index.html"))) == 2
    assert (tmp_path / "site/results/index.html").is_file()
    # the installed package holds no reference to the source tree
    where = subprocess.run(
        [str(venv / "bin/python"), "-c", "import flowbatch; print(flowbatch.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    assert str(REPO) not in where
