"""2. Latency: one request dropped into an idle daemon, to RUNNING and to SUCCESS.

The daemon (``flowbatch daemon``, default polling) runs as its own process; each drop is
written under a temporary name and renamed into ``queue/`` (as the README asks), one at a
time, the next only once the previous run has ended and the daemon is idle again. The
times come from the run's own ``run.json`` (``started_at``, ``finished_at``: when the
daemon recorded each state) against the wall clock taken just before the rename.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from .common import FLOWBATCH, fresh, percentile
from .sites import WORKFLOW, drop, make_site


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def bench(work: Path, *, drops: int, log: Any = print) -> dict[str, Any]:
    fresh(work)
    site = make_site(work / "site", {"polling": {"interval": 2.0, "settle": 0.5}})
    site.close()
    runs = site.root / "results" / WORKFLOW / "runs"
    env = {**os.environ, "FLOWBATCH_SITE": str(site.root)}
    errlog = open(work / "daemon.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [*FLOWBATCH, "daemon"], env=env, stdout=subprocess.DEVNULL, stderr=errlog
    )
    to_running: list[float] = []
    to_success: list[float] = []
    seen_success: list[float] = []
    to_created: list[float] = []
    try:
        time.sleep(1.5)  # started and idle (its first ticks are done)
        known: set[str] = set()
        for i in range(drops):
            time.sleep(0.25)  # idle again: the previous run's reports are written
            t0 = time.time()
            drop(site.layout.queue, f"lat{i:03d}.yaml", i)
            deadline = time.monotonic() + 30
            record = None
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"daemon exited: {(work / 'daemon.log').read_text()[-800:]}")
                new = [p for p in runs.glob("[!.]*/run.json") if p.parent.name not in known]
                if new:
                    data = json.loads(new[0].read_text())
                    if data["state"] in ("SUCCESS", "ERROR", "CANCELED"):
                        record = data
                        seen_success.append(time.time() - t0)
                        known.add(new[0].parent.name)
                        break
                time.sleep(0.002)
            if record is None or record["state"] != "SUCCESS":
                raise RuntimeError(f"drop {i} did not reach SUCCESS: {record}")
            to_created.append(_epoch(record["created_at"]) - t0)
            to_running.append(_epoch(record["started_at"]) - t0)
            to_success.append(_epoch(record["finished_at"]) - t0)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        errlog.close()
    return {
        "drops": drops,
        "running_p50": percentile(to_running, 0.5),
        "running_p95": percentile(to_running, 0.95),
        "success_p50": percentile(to_success, 0.5),
        "success_p95": percentile(to_success, 0.95),
        "created_p50": percentile(to_created, 0.5),
        "seen_p50": percentile(seen_success, 0.5),
        "seen_p95": percentile(seen_success, 0.95),
    }


def markdown(res: dict[str, Any]) -> str:
    met = "met" if res["running_p50"] <= 0.05 else "NOT met"
    return "\n".join(
        [
            "## 2. Latency",
            "",
            f"{res['drops']} requests dropped one at a time (temporary name, then rename) "
            "into an idle `flowbatch daemon` (default polling: interval 2 s, settle 0.5 s; "
            "inotify wakes it); times from each run's `run.json` against the wall clock "
            "before the rename.",
            "",
            "| from the drop to | p50 | p95 |",
            "|---|---:|---:|",
            f"| RUNNING (`started_at`) | {res['running_p50'] * 1000:.1f} ms | "
            f"{res['running_p95'] * 1000:.1f} ms |",
            f"| SUCCESS (`finished_at`) | {res['success_p50'] * 1000:.1f} ms | "
            f"{res['success_p95'] * 1000:.1f} ms |",
            f"| SUCCESS seen in run.json by a reader polling every 2 ms | "
            f"{res['seen_p50'] * 1000:.1f} ms | {res['seen_p95'] * 1000:.1f} ms |",
            "",
            f"- Target (p50 at most 50 ms to RUNNING): {met}.",
            "",
        ]
    )
