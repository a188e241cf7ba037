"""A run's logs for ``flowbatch runs logs``: each step's stdout and stderr
(``logs/step-NN-<name>.out|.err``), the script's own log (``logs/script.log``) and a
Slurm job's (``logs/slurm-<job>.out|.err``), printed whole, by their last lines, or
followed while the run runs (as ``tail -f``).

The run folder is its user's while it runs: every log is opened beneath it without
following a symbolic link (:func:`flowbatch.safeio.open_beneath`), so a link placed there
never shows the reader (who may be root) another file. An SSH run's logs stay on its host
until it ends; they are here once the daemon fetched them."""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import FlowbatchError
from .render.script import LOGS_DIR
from .runs import RunRecord
from .safeio import open_beneath

#: ``step-NN-<name>.out|err``
_STEP_LOG = re.compile(r"step-([0-9]+)-(.*)\.(out|err)")
#: at most this much of a log is printed without --tail (its end)
WHOLE_BYTES = 8 << 20
#: a follow looks for new output this often (seconds)
FOLLOW_EVERY = 0.5


@dataclass(frozen=True)
class Log:
    """One log file of a run: its path in the run folder and what it is."""

    rel: str
    step: int | None  # a step's log: its 1-based index
    name: str  # the step's name (as in its file name), or the file's name
    stream: str  # "out", "err", or "log" (the script's and Slurm's own)

    @property
    def title(self) -> str:
        if self.step is None:
            return self.rel
        return f"step {self.step} {self.name} ({'stdout' if self.stream == 'out' else 'stderr'})"


def run_logs(run_dir: Path) -> list[Log]:
    """The run's logs, in the order they are written: the steps' (stdout then stderr of
    each), then the script's and the scheduler's own."""
    try:
        names = os.listdir(run_dir / LOGS_DIR)
    except FileNotFoundError:
        return []
    steps: list[Log] = []
    others: list[Log] = []
    for name in names:
        match = _STEP_LOG.fullmatch(name)
        if match:
            index, step, stream = match.groups()
            steps.append(Log(f"{LOGS_DIR}/{name}", int(index), step, stream))
        elif name.endswith((".out", ".err", ".log")) and not name.startswith("."):
            others.append(Log(f"{LOGS_DIR}/{name}", None, name, "log"))
    steps.sort(key=lambda log: (log.step or 0, log.stream != "out", log.name))
    others.sort(key=lambda log: log.name)
    return steps + others


def select(logs: list[Log], step: str | None, stream: str | None) -> list[Log]:
    """The logs of ``step`` (its number or name; None: every one) and ``stream``
    ("out", "err"; None: both, and the script's and scheduler's logs when no step was
    asked for)."""
    chosen = logs
    if step is not None:
        chosen = [
            log
            for log in chosen
            if log.step is not None and (str(log.step) == step.lstrip("0") or log.name == step)
        ]
        if not chosen:
            known = sorted({f"{log.step} ({log.name})" for log in logs if log.step is not None})
            raise FlowbatchError(
                f"no step {step!r} among this run's logs",
                field="--step",
                expected="a step number or name: " + (", ".join(known) or "none yet"),
            )
    if stream is not None:
        chosen = [log for log in chosen if log.stream == stream]
    return chosen


def read_log(run_dir: Path, log: Log, *, offset: int = 0, limit: int = WHOLE_BYTES) -> bytes:
    """What ``log`` holds from ``offset`` on, at most ``limit`` bytes (its last ones);
    b"" when it is missing or no regular file (a link is never followed)."""
    try:
        fd = open_beneath(run_dir, log.rel)
    except OSError:
        return b""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size <= offset:
            return b""
        start = max(offset, st.st_size - limit)
        os.lseek(fd, start, os.SEEK_SET)
        out = bytearray()
        while len(out) < st.st_size - start:
            chunk = os.read(fd, min(1 << 16, st.st_size - start - len(out)))
            if not chunk:
                break
            out += chunk
        return bytes(out)
    finally:
        os.close(fd)


def last_lines(data: bytes, lines: int) -> bytes:
    """The last ``lines`` lines of ``data`` (a final line without a newline counts)."""
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


def follow(
    run_dir: Path,
    logs: Callable[[], list[Log]],
    ended: Callable[[], bool],
    *,
    start: dict[str, int] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[tuple[Log, bytes]]:
    """New output of the run's logs as it is written: (log, bytes) pairs, a log's header
    being the caller's, until ``ended()`` says the run has ended and a last look found
    nothing more. ``logs`` lists the logs again at each look (a step's logs appear when
    it starts); ``start`` maps a log's path to the offset already shown."""
    offsets = dict(start or {})
    while True:
        done = ended()  # asked before the look: output written before the end is shown
        for log in logs():
            data = read_log(run_dir, log, offset=offsets.get(log.rel, 0))
            if data:
                offsets[log.rel] = offsets.get(log.rel, 0) + len(data)
                yield log, data
        if done:
            return
        sleep(FOLLOW_EVERY)


def remote_note(run: RunRecord) -> str | None:
    """Why an active run shows no logs here: an SSH run's are on its host until it ends."""
    handle = run.handle or {}
    if run.state.active and handle.get("host"):
        return (
            f"run {run.id} runs on {handle['host']}: its logs are fetched into its folder "
            "when it ends"
        )
    return None
