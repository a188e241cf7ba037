"""What starting one run costs the daemon, by who the run belongs to:
``python -m bench.launch WORK N`` prints JSON.

A root daemon starts each run as the user who dropped its request. Python's subprocess
starts a program from a ``vfork`` (the parent's memory is shared until the child execs)
unless it is asked to change the user, group or groups: then it ``fork``s, copying the
whole daemon's page tables, and the daemon pays for that in every launch. The throughput
section's requests belong to the daemon's own user, so this is measured here, in a
process the size of a daemon (flowbatch imported, some heap), with the local executor's
own ``launch``: the same user; another user through ``setpriv`` (what flowbatch does);
another user through subprocess's own change (what it did, and still does where setpriv
is missing). Rounds alternate the three; figures are medians over rounds.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

#: a user every Debian system has (``nobody``); the launches need no home or shell
OTHER_UID = 65534
MODES = ("same user", "another user, setpriv", "another user, subprocess's own change")


def main(work: Path, n: int, rounds: int = 5) -> dict[str, Any]:
    import flowbatch.daemon  # noqa: F401  (the size of a daemon: everything it imports)
    from flowbatch.executors import local
    from flowbatch.executors.base import Launch

    if os.geteuid() != 0:
        return {"skipped": "needs root (a daemon that starts runs as their users)"}
    ballast = [bytearray(512) for _ in range(60_000)]  # a daemon's heap after a while
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    folder = work / "run"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o755)
    (folder / "run.sh").write_text(":\n")
    setpriv = local.setpriv()
    cpu: dict[str, list[float]] = {m: [] for m in MODES}
    wall: dict[str, list[float]] = {m: [] for m in MODES}
    ex = local.LocalExecutor(limit=n)
    for r in range(rounds):
        order = MODES if r % 2 == 0 else tuple(reversed(MODES))
        for mode in order:
            if mode.endswith("setpriv") and setpriv is None:
                continue
            local._SETPRIV[:] = [None if mode.endswith("change") else setpriv]
            uid = None if mode == "same user" else OTHER_UID
            handles = []
            spent = 0.0
            started = time.perf_counter()
            for i in range(n):
                before = time.thread_time()
                handles.append((f"r{i}", ex.launch(Launch(f"r{i}", folder, "run.sh", uid=uid))))
                spent += time.thread_time() - before
            elapsed = time.perf_counter() - started
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                probes = ex.poll(handles)
                if all(p.exit_code is not None for p in probes.values()):
                    break
                time.sleep(0.01)
            for _, handle in handles:
                ex.forget(handle)
            cpu[mode].append(spent / n * 1000)
            wall[mode].append(elapsed / n * 1000)
    local._SETPRIV[:] = [setpriv]
    rss = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    del ballast
    rows = [
        {
            "mode": mode,
            "cpu_ms": statistics.median(cpu[mode]),
            "wall_ms": statistics.median(wall[mode]),
            "rounds": len(cpu[mode]),
        }
        for mode in MODES
        if cpu[mode]
    ]
    return {"n": n, "rounds": rounds, "rss_mib": rss / 2**20, "setpriv": setpriv, "rows": rows}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]))))
