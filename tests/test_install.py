"""A plain `pip install .` (not editable) carries everything and runs the example: as
root, and as another user (the README's first command, followed literally)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from .conftest import REPO
from .test_robust import _user


def source_copy(dest: Path) -> Path:
    """The work tree's files, as a clean clone has them (tracked, and new ones not
    ignored): never its build leftovers (``build/``, ``*.egg-info``), which let an
    undeclared package file reach the wheel, or a removed module stay in it (found by
    review)."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        src = REPO / name
        if src.is_file():  # a file deleted but not yet from the index is left out
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def demo(source: Path, site: Path, venv: Path, user: str | None = None) -> str:
    """The README's first command (scripts/demo.sh) in ``source``; as ``user``, with a
    bare environment, as a new login would have it."""
    command = ["bash", str(source / "scripts/demo.sh"), str(site)]
    env = {**os.environ, "FLOWBATCH_VENV": str(venv)}
    if user is not None:
        home = _user(user).pw_dir
        command = [
            "runuser", "-u", user, "--", "env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin",
            f"FLOWBATCH_VENV={venv}", "PIP_NO_CACHE_DIR=1", *command,
        ]  # fmt: skip
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=600, cwd=source.parent
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_plain_install_runs_the_example(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    out = demo(source_copy(tmp_path / "src"), tmp_path / "site", venv)
    assert "SUCCESS" in out and "alice" in out and "bob" in out
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
    assert str(REPO) not in where and str(tmp_path / "src") not in where


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="switches to a test user")
def test_the_readmes_first_command_works_for_a_user_who_is_not_root(public_tmp: Path) -> None:
    """The example requests name the groups alice and bob, which only root may use for
    anyone: demo.sh as any other user stopped at its first submit (found by review)."""
    user = _user("fbtest")
    source = source_copy(public_tmp / "src")
    subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(public_tmp)], check=True)
    out = demo(source, public_tmp / "site", public_tmp / "venv", user="fbtest")
    assert out.count("SUCCESS") == 2 and "alice" in out and "bob" in out
    assert (public_tmp / "site/results/helloworld/leaderboard.html").stat().st_uid == user.pw_uid


@pytest.mark.slow
def test_the_source_distribution_carries_what_the_readme_names(tmp_path: Path) -> None:
    """The sdist had the test files but not their conftest, fixtures and services, nor
    examples/, scripts/, site-config/, docs/ or schemas/ (found by review); the build
    warned that the license's form would stop working in 2027."""
    source = source_copy(tmp_path / "src")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert "deprecated" not in (built.stdout + built.stderr).lower()
    (sdist,) = (tmp_path / "dist").glob("flowbatch-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for name in (
        "LICENSE",
        "tests/conftest.py",
        "tests/fixtures_ssh.py",
        "tests/services/slurm.py",
        "examples/helloworld/benchmark.yaml",
        "scripts/demo.sh",
        "scripts/test.sh",
        "site-config/flowbatch.service",
        "docs/admins.md",
        "schemas/site.schema.json",
        "flowbatch/data/sbatch.sh.j2",
    ):
        assert name in names, name
    assert not any("__pycache__" in name or name.startswith("bench/.venvs") for name in names)
