"""Where the daemon's CPU goes per run: ``python -m bench.phases WORK N`` prints JSON.

The throughput workload (N trivial requests dropped at once, local executor, concurrency
2) served in this process by ``run_daemon(until_idle=True)``, with the CPU time of the
main thread (``time.thread_time``) summed per phase by wrappers around the functions
below. Phases nest (a run folder is part of intake): each figure includes its parts.
Run in a process of its own, so the wrappers never touch another measurement.
"""

from __future__ import annotations

import functools
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

#: (label, depth, module, object, attribute), in the order shown
PHASES: list[tuple[str, int, str, str | None, str]] = [
    ("tick (all the daemon's work)", 0, "flowbatch.daemon", "Daemon", "tick"),
    # Intake.process, not run_once: runs start and end between two requests of a burst
    # (Daemon._start_between), and those belong to the phases below
    ("intake: read, check, build", 1, "flowbatch.queue", "Intake", "process"),
    ("the run folder", 2, "flowbatch.queue", "Intake", "_create_run"),
    ("dispatch", 1, "flowbatch.lifecycle", "Runner", "dispatch"),
    ("start bash (fork, exec)", 2, "flowbatch.executors.local", "LocalExecutor", "launch"),
    ("finishing a run", 1, "flowbatch.lifecycle", "Runner", "finalize"),
    ("markers", 2, "flowbatch.lifecycle", None, "read_markers"),
    ("results", 2, "flowbatch.lifecycle", None, "read_results"),
    ("run page", 2, "flowbatch.report_pages", "RunPageWriter", "__call__"),
    (
        "every atomic file write (run.json 3 times, run page)",
        1,
        "flowbatch.store.atomic",
        None,
        "write_bytes",
    ),
    ("every index write", 1, "flowbatch.store.store", "Store", "_index_run"),
]


def main(work: Path, n: int) -> dict[str, Any]:
    import importlib

    from bench.common import fresh
    from bench.sites import drop_many, make_site, states

    totals: dict[str, float] = {}

    def wrap(label: str, owner: Any, name: str) -> None:
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[label] = totals.get(label, 0.0) + time.thread_time() - start

        setattr(owner, name, timed)

    for label, _depth, module, obj, attr in PHASES:
        mod = importlib.import_module(module)
        wrap(label, getattr(mod, obj) if obj else mod, attr)

    from flowbatch.daemon import run_daemon
    from flowbatch.site import Site

    fresh(work)
    site = make_site(work / "site")
    site.close()
    drop_many(site.layout.queue, n)
    site = Site(site.root)
    before = resource.getrusage(resource.RUSAGE_THREAD)
    process_before = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    run_daemon(site, until_idle=True)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_THREAD)
    process_after = resource.getrusage(resource.RUSAGE_SELF)
    counted = states(site.root)
    if counted.get("SUCCESS") != n:
        raise SystemExit(f"expected {n} SUCCESS, found {counted}")
    main_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    process_cpu = (process_after.ru_utime - process_before.ru_utime) + (
        process_after.ru_stime - process_before.ru_stime
    )
    return {
        "n": n,
        "wall_ms": wall / n * 1000,
        "main_thread_ms": main_cpu / n * 1000,
        # the report thread (leaderboard files), the reaper, the file watcher
        "other_threads_ms": (process_cpu - main_cpu) / n * 1000,
        "phases": [
            {"label": label, "depth": depth, "ms": totals.get(label, 0.0) / n * 1000}
            for label, depth, *_ in PHASES
        ],
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]))))
