"""4. Slurm: scheduler commands per daemon tick with 10, 100, 500 active jobs, and sbatch
calls for a 200-point sweep.

Slurm is the test cluster of ``tests/services/slurm.py`` (started if needed, shared with
test sessions, left to the last user to stop). Every job is submitted held (``--hold`` in
the profile's ``extra``), so the active jobs stay PENDING without taking the cluster's
cores from anybody, and are cancelled at the end. Commands are counted by a PATH shim
(``sbatch``, ``squeue``, ``sacct``, ``scontrol``, ``scancel``: one line each in a log, then
the real command).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from .common import fresh
from .sites import make_site

COMMANDS = ("sbatch", "squeue", "sacct", "scontrol", "scancel", "sinfo")
SLEEP_TEMPLATE = """\
workflow:
  parameters:
    n: $[[n]]
  steps:
    - name: main
      action:
        environment: bash
        commands:
          - sleep 600
          - echo ${n} > out.txt
parameters:
  - name: n
    dtype: int
    defaultValue: 0
"""


def _shim(folder: Path, log: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        real = shutil.which(name)
        if real is None:
            continue
        path = folder / name
        path.write_text(f'#!/bin/sh\necho {name} >> "{log}"\nexec {real} "$@"\n')
        path.chmod(0o755)
    return f"{folder}:{os.environ.get('PATH', '')}"


def _count(log: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    if log.exists():
        for line in log.read_text().split():
            out[line] = out.get(line, 0) + 1
    return out


def _site(work: Path, name: str) -> Any:
    site = make_site(
        work / name,
        {
            "executor": "slurm",
            "slurm": {
                "default": {
                    "partition": "debug",
                    "extra": ["--hold"],
                    "poll": {"floor": 0.2, "ceiling": 0.2},
                }
            },
        },
    )
    template = work / f"{name}-sleep"
    template.mkdir()
    (template / "benchmark.yaml").write_text(SLEEP_TEMPLATE)
    from flowbatch import api

    api.install(site, template, workflow_id="sleep")
    return site


def _cancel_all(site: Any) -> None:
    subprocess.run(
        ["scancel", "--name", f"fb-{site.root.name}-*"], capture_output=True, check=False
    )


def bench(
    work: Path, *, sizes: list[int], sweep_points: int, ticks: int, log: Any = print
) -> dict[str, Any]:
    if os.geteuid() != 0:
        raise RuntimeError("needs root (starts munge and Slurm)")
    from flowbatch.daemon import Daemon
    from tests.services.slurm import SlurmCluster

    fresh(work)
    cluster = SlurmCluster().start()
    calls_log = work / "calls.log"
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = _shim(work / "shim", calls_log)
    per_tick: dict[int, dict[str, float]] = {}
    sweep: dict[str, Any] = {}
    try:
        for size in sizes:
            site = _site(work, f"s{size}")
            for i in range(size):
                (site.layout.queue / f"r{i:04d}.yaml").write_text(
                    f"workflow: sleep\narguments:\n  n: {i}\n"
                )
            daemon = Daemon(site)
            daemon.start()
            try:
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    daemon.tick()
                    running = daemon.runner.launched()
                    if len(running) == size and all(
                        (r.handle or {}).get("job_id") for r in running
                    ):
                        break
                    time.sleep(0.05)
                else:
                    raise RuntimeError(f"{size} jobs not all submitted in time")
                before = _count(calls_log)
                for _ in range(ticks):
                    time.sleep(0.25)  # past the poll floor: every tick asks
                    daemon.tick()
                after = _count(calls_log)
                per_tick[size] = {
                    k: (after.get(k, 0) - before.get(k, 0)) / ticks
                    for k in COMMANDS
                    if after.get(k, 0) != before.get(k, 0)
                }
                per_tick[size]["sbatch_total"] = after.get("sbatch", 0)
                log(f"  {size} active jobs: {per_tick[size]}")
            finally:
                _cancel_all(site)
                daemon.stop()
                site.close()
            calls_log.unlink(missing_ok=True)
        # -- a sweep ------------------------------------------------------------------------
        site = _site(work, "sweep")
        doc = {"workflow": "sleep", "sweep": {"n": list(range(sweep_points))}}
        (site.layout.queue / "sweep.yaml").write_text(yaml.safe_dump(doc))
        daemon = Daemon(site)
        daemon.start()
        try:
            deadline = time.monotonic() + 300
            runs = 0
            while time.monotonic() < deadline:
                daemon.tick()
                running = daemon.runner.launched()
                runs = len(daemon.runner.active)
                if (
                    runs
                    and len(running) == runs
                    and all((r.handle or {}).get("job_id") for r in running)
                ):
                    break
                time.sleep(0.05)
            rejected = list(site.layout.rejected.glob("*.error.yaml"))
            if rejected:
                sweep = {"error": rejected[0].read_text()[:600]}
            else:
                sweep = {
                    "points": sweep_points,
                    "runs": runs,
                    "sbatch": _count(calls_log).get("sbatch", 0),
                }
            log(f"  sweep of {sweep_points}: {sweep}")
        finally:
            _cancel_all(site)
            daemon.stop()
            site.close()
    finally:
        os.environ["PATH"] = old_path
        cluster.stop()
    return {"ticks": ticks, "per_tick": per_tick, "sweep": sweep}


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "## 4. Slurm",
        "",
        "Single-node Slurm 22.05 of the tests (no slurmdbd), jobs submitted held so they "
        "stay active; the daemon ticked in-process, past its poll floor each time, "
        f"{res['ticks']} ticks counted after every job was submitted; commands counted "
        "by a PATH shim.",
        "",
        "| active jobs | scheduler calls per tick | of which |",
        "|---:|---:|---|",
    ]
    totals = []
    for size, calls in res["per_tick"].items():
        each = {k: v for k, v in calls.items() if k != "sbatch_total"}
        total = sum(each.values())
        totals.append(total)
        detail = ", ".join(f"{k} {v:g}" for k, v in each.items()) or "-"
        lines.append(f"| {size} | {total:g} | {detail} |")
    const = "met" if totals and max(totals) == min(totals) else "NOT met"
    lines += ["", f"- Target (constant): {const}."]
    sw = res["sweep"]
    if "error" in sw:
        lines.append(f"- Sweep: refused at intake: `{sw['error'][:300]}`")
    elif sw:
        ok = "met" if sw["sbatch"] <= 2 else "NOT met"
        lines.append(
            f"- Sweep of {sw['points']} points: {sw['runs']} runs, {sw['sbatch']} sbatch calls. "
            f"Target (at most 2): {ok}."
        )
    lines.append("")
    return "\n".join(lines)
