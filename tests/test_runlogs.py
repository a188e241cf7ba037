"""``flowbatch runs logs``: a run's step logs, whole, by step and stream, their last lines,
and followed while the run runs (a real daemon process); links in the run folder are
never followed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowbatch import api
from flowbatch.cli import main
from flowbatch.site import Site

from .conftest import drop, make_site, run_until_idle, serving

TEMPLATE = """\
workflow:
  parameters:
    n: $[[n]]
  steps:
    - name: first
      action:
        environment: bash
        commands:
          - for i in $(seq 1 ${n}); do echo "out line $$i"; done
          - echo "warning one" >&2
    - name: second
      action:
        environment: bash
        commands:
          - echo "second says hi"
          - echo "second complains" >&2
parameters:
  - name: n
    label: N
    dtype: int
    defaultValue: 3
"""

BIG = """\
workflow:
  steps:
    - name: big
      action:
        environment: bash
        commands:
          - sleep 0.5; seq 1 2000000; sleep 0.5
"""

SLOW = """\
workflow:
  steps:
    - name: ticker
      action:
        environment: bash
        commands:
          - for i in 1 2 3 4 5 6; do echo "tick $$i"; sleep 0.4; done
    - name: after
      action:
        environment: bash
        commands:
          - echo "all done"
"""


@pytest.fixture
def lsite(tmp_path: Path) -> Iterator[Site]:
    site = make_site(tmp_path / "site")
    for wid, text in (("w", TEMPLATE), ("slow", SLOW), ("big", BIG)):
        folder = tmp_path / wid
        folder.mkdir()
        (folder / "benchmark.yaml").write_text(text, encoding="utf-8")
        api.install(site, folder, workflow_id=wid)
    yield site
    site.close()


def follow_stdout(site: Site, run_id: str) -> subprocess.CompletedProcess[bytes]:
    """`runs logs -f --stdout RUN` as a process of its own."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "flowbatch",
            "--site",
            str(site.root),
            "runs",
            "logs",
            "-f",
            "--stdout",
            run_id,
        ],
        capture_output=True,
        timeout=120,
    )


def logs(site: Site, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--site", str(site.root), "runs", "logs", *args])
    return result.exit_code, result.output


def one_run(site: Site, n: int = 3) -> str:
    drop(site, "r.yaml", {"workflow": "w", "arguments": {"n": n}})
    run_until_idle(site).stop()
    (run,) = api.list_runs(site)
    assert run["state"] == "SUCCESS"
    return str(run["id"])


def test_every_log_under_its_header_in_the_order_written(lsite: Site) -> None:
    run_id = one_run(lsite)
    code, out = logs(lsite, run_id)
    assert code == 0, out
    expected = [
        "==> step 1 first (stdout) <==",
        "out line 1",
        "out line 2",
        "out line 3",
        "==> step 1 first (stderr) <==",
        "warning one",
        "==> step 2 second (stdout) <==",
        "second says hi",
        "==> step 2 second (stderr) <==",
        "second complains",
    ]
    assert out.splitlines()[: len(expected)] == expected


def test_one_step_one_stream_and_the_last_lines(lsite: Site) -> None:
    run_id = one_run(lsite, n=50)
    code, out = logs(lsite, run_id, "--step", "second", "--stderr")
    assert (code, out.splitlines()) == (0, ["==> step 2 second (stderr) <==", "second complains"])
    code, out = logs(lsite, run_id, "-s", "1", "--stdout", "-n", "2")
    assert (code, out.splitlines()) == (
        0,
        ["==> step 1 first (stdout) <==", "out line 49", "out line 50"],
    )
    code, out = logs(lsite, run_id, "--step", "9")
    assert code == 1
    assert "no step '9'" in out and "1 (first), 2 (second)" in out


def test_a_link_in_the_run_folder_is_never_followed(lsite: Site, tmp_path: Path) -> None:
    """The run's user owns its folder while it runs: a log replaced by a link to a file
    the reader (root) may read but the user may not is not shown."""
    run_id = one_run(lsite)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET\n")
    secret.chmod(0o600)
    run_dir = Path(api.show_run(lsite, run_id)["run_dir"])
    log = run_dir / "logs" / "step-02-second.out"
    log.unlink()
    log.symlink_to(secret)
    (run_dir / "logs" / "zz.log").symlink_to(secret)
    code, out = logs(lsite, run_id)
    assert code == 0 and "TOP SECRET" not in out
    assert "second complains" in out  # the other logs still shown


def test_empty_logs_say_so(lsite: Site) -> None:
    run_id = one_run(lsite, n=0)
    code, out = logs(lsite, run_id, "--step", "1", "--stdout")
    assert code == 0 and "has 1 empty logs" in out
    # --follow of an ended run said nothing at all (found by review)
    code, out = logs(lsite, run_id, "--step", "1", "--stdout", "--follow")
    assert code == 0 and "(SUCCESS) has 1 empty logs" in out


def test_follow_prints_new_output_until_the_run_ends(lsite: Site) -> None:
    with serving(lsite.root):
        drop(lsite, "s.yaml", {"workflow": "slow"})
        deadline = time.monotonic() + 60
        while True:  # until its first line is written
            runs = api.list_runs(lsite)
            if runs and runs[0]["state"] == "RUNNING":
                run_dir = Path(api.show_run(lsite, runs[0]["id"])["run_dir"])
                out = run_dir / "logs" / "step-01-ticker.out"
                if out.exists() and out.stat().st_size:
                    break
            assert time.monotonic() < deadline, runs
            time.sleep(0.05)
        follow = follow_stdout(lsite, str(runs[0]["id"]))
    assert follow.returncode == 0, follow.stderr
    assert b"fetched" not in follow.stderr  # a local run's logs are here (it said so)
    lines = follow.stdout.decode().splitlines()
    # every line once, the second step's after the first's, though written after the start
    assert lines == [
        "==> step 1 ticker (stdout) <==",
        *(f"tick {i}" for i in range(1, 7)),
        "==> step 2 after (stdout) <==",
        "all done",
    ]
    assert os.path.exists(run_dir / "run.json")


def test_follow_shows_a_burst_of_output_whole(lsite: Site) -> None:
    """Fifteen megabytes written between two looks: a look showed only their last 8 MiB,
    and the next ones its end again (found by review: a million of four million lines,
    the last one four times)."""
    with serving(lsite.root):
        drop(lsite, "b.yaml", {"workflow": "big"})
        deadline = time.monotonic() + 60
        while not [r for r in api.list_runs(lsite) if r["state"] == "RUNNING"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        (run,) = api.list_runs(lsite)
        follow = follow_stdout(lsite, str(run["id"]))
    assert follow.returncode == 0, follow.stderr
    lines = follow.stdout.splitlines()
    assert lines[0] == b"==> step 1 big (stdout) <=="
    assert lines[1:] == [str(i).encode() for i in range(1, 2000001)]
