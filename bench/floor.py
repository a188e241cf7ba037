"""The floor: the least a daemon must do per run for flowbatch's run tree, and nothing else.

Run as its own process (``python bench/floor.py SITE MODE``) on requests dropped into
``SITE/queue`` the way the flowbatch round drops them; it imports nothing of flowbatch and
does no parsing, validation, rendering or reporting beyond a line of the request, one
SQLite row per run and a ``leaderboard.json`` at the end. Two runs at a time, like every
tool of the throughput section. What each mode adds to the one before:

``folder``
    a folder per run, the request renamed into it, the two commands in ``bash -c``, one
    ``run.json`` written at the end: the least any tool keeping a folder per run pays.
``tree``
    what a daemon restarted after a crash needs (issue 2): the request claimed by a rename,
    the run folder built hidden (the request linked in, ``run.sh``, ``run.json``) and renamed
    into place, ``run.sh`` started, ``run.json`` replaced atomically at the end.
``contract``
    ``tree`` with the leanest script that keeps what issue 2 asks of a run: per-step
    stdout/stderr logs and exit-code markers, in the ``logs/`` folder the tree has (the
    markers one appended file).

The harness times it as a whole process, start-up included (``bench/throughput.py``).
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys

#: the two commands of the throughput section; the second only if the first succeeded
CMDS = "echo {n} > out.txt && printf '{{\"score\":%d}}\\n' {n} > results.json\n"

#: ``tree``: the two commands, nothing kept
BARE = 'case $0 in */*) cd -- "${{0%/*}}" || exit 90 ;; esac\n' + CMDS

#: ``contract``: per-step logs and exit markers, one file each, appended
CONTRACT = (
    'case $0 in */*) cd -- "${{0%/*}}" || exit 90 ;; esac\n'
    "printf 'started %s\\n' \"$$\" >> logs/status\n"
    "{{ " + CMDS.rstrip() + "; }} >> logs/step-01.out 2>> logs/step-01.err < /dev/null\n"
    "rc=$?\nprintf 'step 1 exit %s\\nexit %s\\n' $rc $rc >> logs/status\nexit $rc\n"
)

FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def write(path: str, data: bytes, mode: int = 0o644) -> None:
    fd = os.open(path, FLAGS, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def main(site: str, mode: str) -> None:
    queue = os.path.join(site, "queue")
    claimed = os.path.join(queue, ".claimed")
    runs = os.path.join(site, "runs")
    os.makedirs(claimed, exist_ok=True)
    os.makedirs(runs, exist_ok=True)
    db = sqlite3.connect(os.path.join(site, "index.db"))
    db.execute("pragma journal_mode=wal")
    db.execute("create table if not exists run (id text primary key, state text, score int)")
    bash = "/bin/bash"
    script = BARE if mode == "tree" else CONTRACT
    running: dict[int, tuple[str, str]] = {}
    ranked: list[tuple[int, str]] = []

    def start(name: str) -> None:
        rid = name.rsplit(".", 1)[0]
        folder = os.path.join(runs, rid)
        if mode == "folder":
            os.mkdir(folder)
            request = os.path.join(folder, "request.yaml")
            os.rename(os.path.join(queue, name), request)
            with open(request, "rb") as fh:
                n = int(fh.read().rsplit(b"n:", 1)[1])
            cmd = f"cd {folder} && " + CMDS.format(n=n)
            argv = [bash, "-c", cmd]
        else:
            src = os.path.join(claimed, name)
            os.rename(os.path.join(queue, name), src)
            with open(src, "rb") as fh:
                n = int(fh.read().rsplit(b"n:", 1)[1])
            hidden = os.path.join(runs, f".{rid}.tmp")
            os.mkdir(hidden)
            os.link(src, os.path.join(hidden, "request.yaml"))
            write(os.path.join(hidden, "run.sh"), script.format(n=n).encode(), 0o755)
            if mode == "contract":
                os.mkdir(os.path.join(hidden, "logs"))
            record = {"id": rid, "state": "PENDING", "arguments": {"n": n}}
            write(os.path.join(hidden, "run.json"), json.dumps(record, indent=2).encode())
            os.rename(hidden, folder)
            os.unlink(src)
            argv = [bash, os.path.join(folder, "run.sh")]
        db.execute("insert into run values (?, 'RUNNING', null)", (rid,))
        pid = os.posix_spawn(bash, argv, os.environ)
        running[pid] = (rid, folder)

    def finish(pid: int, status: int) -> None:
        rid, folder = running.pop(pid)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"run {rid} failed")
        with open(os.path.join(folder, "results.json"), "rb") as fh:
            results = json.loads(fh.read())
        record = json.dumps({"id": rid, "state": "SUCCESS", "results": results}, indent=2)
        if mode == "folder":
            write(os.path.join(folder, "run.json"), record.encode())
        else:
            tmp = os.path.join(folder, ".run.json.tmp")
            write(tmp, record.encode())
            os.replace(tmp, os.path.join(folder, "run.json"))
        db.execute(
            "update run set state = 'SUCCESS', score = ? where id = ?", (results["score"], rid)
        )
        ranked.append((results["score"], rid))

    for name in sorted(n for n in os.listdir(queue) if n.endswith(".yaml")):
        if len(running) >= 2:
            finish(*os.wait())
        start(name)
        if len(ranked) % 64 == 0:
            db.commit()
    while running:
        finish(*os.wait())
    db.commit()
    ranked.sort(reverse=True)
    write(os.path.join(site, "leaderboard.json"), json.dumps(ranked).encode())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
