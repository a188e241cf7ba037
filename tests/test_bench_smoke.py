"""The benchmark harness (bench/) still runs end to end: a tiny size, no peers, no SSH or
Slurm. Checks the report's shape only; a benchmark is never a timed test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    raw = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--n",
            "10",
            "--repeats",
            "1",
            "--no-peers",
            "--skip",
            "ssh",
            "--skip",
            "slurm",
            "--drops",
            "3",
            "--tree",
            "30",
            "--index",
            "100",
            "--idle-seconds",
            "0.5",
            "--settle",
            "0",  # the suite removes files all the time: measure the disk, never wait
            "--here",  # the suite's flowbatch (a plain install: tests/test_install.py)
            "--work",
            str(tmp_path / "work"),
            "--out",
            str(out),
            "--json",
            str(raw),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(raw.read_text())
    for name in ("throughput", "latency", "scale"):
        assert results["sections"][name]["ok"], results["sections"][name]
    assert {"ssh", "slurm"}.isdisjoint(results["sections"])
    assert results["flowbatch"] == "here"
    assert "the Python environment the bench ran in" in out.read_text()
    tools = {r["tool"]: r for r in results["sections"]["throughput"]["rows"]}
    assert set(tools) == {
        "xargs -P 2",
        "flowbatch",
        "flowbatch run.sh by xargs -P 2",
        "floor 1: a folder per run",
        "floor 2: + what a restart needs",
        "floor 3: + step logs and exit markers",
        "floor 4: + flowbatch's records, written plainly",
        "floor 5: + the libraries chosen for flowbatch",
        # a root daemon serving another user's requests (each run started as that user)
        *(["flowbatch, another user's requests"] if os.geteuid() == 0 else []),
    }
    assert all(r["runs_per_s"] > 0 for r in tools.values())
    fb = tools["flowbatch"]  # its start and end, from the runs' own times
    assert 0 < fb["start_ms"] < fb["median_s"] * 1000 and 0 < fb["end_ms"] < fb["median_s"] * 1000
    settled = results["sections"]["throughput"]["settle"]
    # one probe before each timed run, and one before the phases
    assert len(settled["before_us"]) == len(tools) + 1 and min(settled["before_us"]) > 0
    phases = results["sections"]["throughput"]["phases"]
    assert phases["main_thread_ms"] > 0 and phases["phases"][0]["ms"] > 0
    launch = results["sections"]["throughput"]["launch"]
    if os.geteuid() == 0:  # a root daemon starting runs as their users
        modes = {r["mode"]: r for r in launch["rows"]}
        assert set(modes) == {
            "same user",
            "another user, setpriv",
            "another user, subprocess's own change",
        }
        assert all(r["cpu_ms"] > 0 and r["wall_ms"] > 0 for r in modes.values())
    else:
        assert launch["skipped"]
    lat = results["sections"]["latency"]
    assert 0 < lat["running_p50"] <= lat["success_p50"]
    text = out.read_text()
    for heading in (
        "# Benchmarks",
        "| cores (nproc) | ",
        "## 1. Throughput",
        "## 2. Latency",
        "## 5. Scale",
        "| flowbatch |",
        "without the daemon",
        "The floor (`bench/floor.py`",
        "Floor 4 adds the rest of what flowbatch keeps",
        "Floor 5 runs floor 4 on the libraries",
        "Where the daemon's CPU goes per run",
        "A quiet disk before each timing",
        "Starting a run as its user",
        "flowbatch's start and end (medians of its rounds): its first run RUNNING",
    ):
        assert heading in text, heading
    assert "Not measured" not in text


def test_the_create_probe_waits_for_a_quiet_disk(tmp_path: Path) -> None:
    """settle() probes again while a file costs more than a quiet disk's (100 µs, or
    twice the best probe of the earlier settles on a slower disk), and gives up after
    its patience."""
    from bench.common import CreateProbe

    class Scripted(CreateProbe):
        def __init__(self, figures: list[float]) -> None:
            super().__init__(tmp_path)
            self.figures = figures

        def probe(self) -> float:
            us = self.figures.pop(0)
            self.best = us if self.best is None else min(self.best, us)
            return us

    busy = Scripted([700.0, 400.0, 90.0, 500.0])
    assert busy.settle(pause=0) == 90.0 and busy.figures == [500.0]
    recovering = Scripted([250.0, 220.0, 195.0, 171.0, 60.0])  # slowly: still not quiet
    assert recovering.settle(pause=0) == 60.0 and not recovering.figures
    slow = Scripted([150.0, 260.0, 400.0, 280.0])  # a slower disk, quiet at 150 µs
    assert slow.settle(patience=0.0, pause=0) == 150.0  # nothing to compare with yet
    assert slow.settle(pause=0) == 260.0  # within twice the best earlier probe
    assert slow.settle(pause=0) == 280.0 and slow.before == [150.0, 260.0, 280.0]
    stuck = Scripted([900.0] * 50)
    assert stuck.settle(patience=0.0, pause=0) == 900.0  # no patience: measured, no wait
    real = CreateProbe(tmp_path / "real", files=20)
    assert real.settle(pause=0) > 0 and real.count >= 1
    assert len(list((tmp_path / "real" / ".create-probe" / "1").iterdir())) == 20


def test_each_round_is_shown_against_its_own_limit() -> None:
    """The medians hide the spread between rounds: each round of flowbatch's rows is
    also shown against the limit of that same round."""
    from bench import throughput

    def row(tool: str, seconds: list[float]) -> dict[str, object]:
        return {
            "tool": tool,
            "version": "",
            "seconds": seconds,
            "median_s": sorted(seconds)[1],
            "runs_per_s": 100 / sorted(seconds)[1],
            "per_job_ms": sorted(seconds)[1] * 10,
            "overhead_ms": 0.0,
            "vs_limit": 1.0,
        }

    res = {
        "n": 100,
        "repeats": 3,
        "notes": {},
        "rows": [
            row("xargs -P 2", [0.2, 0.25, 0.4]),
            row("flowbatch", [0.6, 1.0, 0.8]),
            row(throughput.AS_USER, [0.8, 1.0, 1.2]),
        ],
    }
    text = throughput.markdown(res)
    line = next(x for x in text.splitlines() if x.startswith("- Round by round"))
    assert "flowbatch 3.00x, 4.00x, 2.00x the limit (+4.00, +7.50, +4.00 ms per run)" in line
    assert f"{throughput.AS_USER} 4.00x, 4.00x, 3.00x the limit" in line


def test_the_target_is_met_only_by_the_medians_and_the_rounds_together() -> None:
    """The verdict weighs each round against its own limit too: a run whose medians meet
    the 2 ms but whose rounds mostly do not (a fast limit in one round) says so."""
    from bench import throughput

    limit = {"tool": "xargs -P 2", "seconds": [0.71, 0.85, 0.83]}

    def verdict(seconds: list[float], overhead_ms: float) -> str:
        fb = {"tool": "flowbatch", "seconds": seconds, "overhead_ms": overhead_ms}
        return throughput._target_line(fb, limit, 500)

    # this session's full run: medians 1.75 - 0.83 s, rounds +2.08, +2.37, +1.66 ms
    line = verdict([1.75, 2.035, 1.66], 1.84)
    assert "met by the medians only (1.84 ms" in line
    assert "+2.08, +2.37, +1.66 ms, median +2.08: 1 of 3 rounds within it" in line
    assert ": met (" in verdict([1.6, 1.7, 1.75], 1.84)
    assert ": NOT met (" in verdict([2.0, 2.2, 2.1], 2.54)
    assert "met by the rounds only" in verdict([1.6, 1.8, 1.8], 2.10)
    no_rounds = throughput._target_line(
        {"tool": "flowbatch", "seconds": [1.7], "overhead_ms": 2.5}, limit, 500
    )
    assert no_rounds.endswith("NOT met (2.50 ms).")


def test_what_being_ahead_of_the_nearest_peer_leaves_the_daemon() -> None:
    """Session 23's figures: the limit 1.25 ms a job, signac-flow +0.64 ms against its
    own, flowbatch's start 214 ms and end 47 ms of 500 runs, its CPU 4.46 ms a run and
    its run.sh files' 2.01: 0.73 ms of CPU a run left for the daemon in the burst,
    which uses 1.93."""
    from bench import throughput

    fb = {"cpu_ms": 4.46, "start_ms": 214.0, "end_ms": 47.0}
    limit = {"per_job_ms": 1.25}
    peers = [
        {"tool": "signac-flow", "overhead_ms": 0.64},
        {"tool": "Snakemake", "overhead_ms": 14.9},
    ]
    (line,) = throughput._peer_budget_lines(peers, fb, limit, {"cpu_ms": 2.01}, 500)
    assert "ahead of signac-flow" in line
    assert "1.25 + 0.64 = 1.89 ms of wall time" in line
    assert "start and end (0.52 ms" in line and "1.37 ms a run for the burst" in line
    assert f"at most 2.74 ms of CPU on {throughput.CORES} cores" in line
    assert "0.73 ms a run left for the daemon, which uses about 1.93 (2.7x)" in line
    slow = throughput._peer_budget_lines(peers, fb, limit, {"cpu_ms": 3.0}, 500)
    assert "nothing left for the daemon" in slow[0]
    assert throughput._peer_budget_lines([], fb, limit, {"cpu_ms": 2.01}, 500) == []


def test_whether_ahead_of_the_nearest_peer_is_within_reach_of_a_daemon_on_the_stack() -> None:
    """Floor 5 (floor 4 on the libraries chosen for flowbatch) against the nearest peer,
    round by round, each against the limit of its own shell in that round: behind in every
    round says the target is out of reach here; in some, that the run does not settle it;
    in none, that flowbatch's own code is what keeps it behind."""
    from bench import throughput

    n = 500

    def row(tool: str, seconds: list[float], **extra: Any) -> dict[str, Any]:
        return {"tool": tool, "seconds": seconds, **extra}

    bash = row("xargs -P 2", [0.70, 0.80, 0.60])
    sh = row(throughput.SH_LIMIT, [0.50, 0.60, 0.40])
    peer = row("signac-flow", [0.80, 0.90, 0.70], overhead_ms=0.6, limit_shell="sh")
    snake = row("Snakemake", [9.0, 9.0, 9.0], overhead_ms=15.0)
    peers = [peer, snake]

    def floor5(seconds: list[float]) -> list[dict[str, Any]]:
        return [bash, sh, row(throughput.FLOOR5, seconds)]

    # floor 5 +0.70, +0.70, +0.80 ms a run against the peer's +0.60 each round
    (behind,) = throughput._reach_lines(peers, floor5([1.05, 1.15, 1.00]), n)
    assert "No, on this machine" in behind and "behind signac-flow in every round" in behind
    assert "floor 5 +0.70, +0.70, +0.80 ms a run against signac-flow's +0.60, +0.60, +0.60" in (
        behind
    )
    (mixed,) = throughput._reach_lines(peers, floor5([0.95, 1.15, 0.85]), n)
    assert "Not settled by this run" in mixed and "in 1 of 3 rounds" in mixed
    (ahead,) = throughput._reach_lines(peers, floor5([0.90, 1.00, 0.80]), n)
    assert "Yes: floor 5 is ahead of signac-flow in every round" in ahead
    assert throughput._reach_lines(peers, [bash, sh], n) == []  # no floor 5 measured


def test_the_bench_reinstalls_flowbatch_when_the_tree_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bench runs a plain install of the work tree (bench/.venvs/flowbatch), made
    again when the package's files or the project file changed, not for bytecode."""
    from bench import common

    (tmp_path / "flowbatch" / "data").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "flowbatch" / "a.py").write_text("x = 1\n")
    (tmp_path / "flowbatch" / "data" / "t.j2").write_text("{{ x }}\n")
    monkeypatch.setattr(common, "ROOT", tmp_path)
    first = common.source_digest()
    (tmp_path / "flowbatch" / "__pycache__").mkdir()
    (tmp_path / "flowbatch" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    assert common.source_digest() == first
    for path, text in (
        ("flowbatch/a.py", "x = 2\n"),
        ("flowbatch/data/t.j2", "{{ y }}\n"),
        ("pyproject.toml", "[project]\nname = 'x'\n"),
    ):
        before = common.source_digest()
        (tmp_path / path).write_text(text)
        assert common.source_digest() != before, path


def test_peers_in_sh_are_measured_against_the_limit_in_sh(tmp_path: Path) -> None:
    """flowServ and signac-flow run their jobs' commands in /bin/sh: the harness runs
    the limit in sh too (the same jobs, really run) and says so beside their rows."""
    from bench import throughput

    assert throughput.run_xargs(tmp_path / "sh", 20, shell="sh") > 0
    assert len(list((tmp_path / "sh" / "jobs").glob("*/results.json"))) == 20

    def row(tool: str, median: float, shell: str = "bash", over: float = 0.0) -> dict[str, object]:
        return {
            "tool": tool,
            "version": "",
            "limit_shell": shell,
            "seconds": [median],
            "median_s": median,
            "runs_per_s": 100 / median,
            "per_job_ms": median * 10,
            "overhead_ms": over,
            "vs_limit": 1.0,
            "cpu_ms": median * 15,
        }

    res = {
        "n": 100,
        "repeats": 1,
        "notes": {},
        "rows": [
            row("xargs -P 2", 0.3),
            row(throughput.SH_LIMIT, 0.2, "sh"),
            row("flowbatch", 0.6, over=3.0),
            row("signac-flow", 0.35, "sh", over=1.5),
        ],
    }
    text = throughput.markdown(res)
    assert "| signac-flow (sh) |" in text
    assert "| flowbatch |" in text
    line = next(x for x in text.splitlines() if x.startswith("- The shell:"))
    assert "signac-flow run each job's commands with `/bin/sh`" in line
    assert "2.00 ms a job against bash's 3.00 ms (bash 1.00 ms a job more; CPU 3.00 " in line
    # the sh limit is one of ours, not a peer flowbatch is compared with
    assert "- flowbatch / xargs -P 2, sh" not in text
    ahead = next(x for x in text.splitlines() if "ahead of every peer" in x)
    assert ": NOT met (flowbatch +3.00 ms a run; the nearest peer, signac-flow (in sh" in ahead
    res["rows"][2]["overhead_ms"] = 1.0
    assert "ahead of every peer, each against the limit in its own shell): met (" in (
        throughput.markdown(res)
    )
