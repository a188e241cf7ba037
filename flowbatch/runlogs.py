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
from collections.abc import Callable, Collection, Iterator
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


def read_log(run_dir: Path, log: Log, *, limit: int = WHOLE_BYTES) -> tuple[bytes, Mark]:
    """The end of ``log`` (its last ``limit`` bytes), and where it ended (:class:`Mark`,
    from the same descriptor: a follow goes on from there); b"" when it is missing or no
    regular file (a link is never followed)."""
    return _read(run_dir, log, None, limit, tail=True)


def read_on(
    run_dir: Path, log: Log, mark: Mark | None, *, chunk: int = 1 << 20
) -> tuple[bytes, Mark]:
    """What ``log`` holds past ``mark`` (at most ``chunk`` bytes, from there on), and
    the new mark. A log replaced (another file under its name: a retry's) or cut
    shorter is read from its start."""
    return _read(run_dir, log, mark, chunk, tail=False)


@dataclass(frozen=True)
class Mark:
    """Where a log was read up to: its file (inode) and the offset in it."""

    ino: int = 0
    offset: int = 0


def _read(
    run_dir: Path, log: Log, mark: Mark | None, limit: int, *, tail: bool
) -> tuple[bytes, Mark]:
    try:
        fd = open_beneath(run_dir, log.rel)
    except OSError:
        return b"", mark or Mark()
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return b"", mark or Mark()
        start = 0
        if mark is not None and mark.ino == st.st_ino and mark.offset <= st.st_size:
            start = mark.offset
        end = st.st_size
        if tail:
            start = max(start, end - limit)
        else:
            end = min(end, start + limit)
        out = os.pread(fd, end - start, start) if end > start else b""
        return out, Mark(st.st_ino, start + len(out))
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
    start: dict[str, Mark] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[tuple[Log, bytes]]:
    """New output of the run's logs as it is written: (log, bytes) pairs, a log's header
    being the caller's, until ``ended()`` says the run has ended and a last look found
    nothing more. ``logs`` lists the logs again at each look (a step's logs appear when
    it starts); ``start`` maps a log's path to where it was shown up to. Each look reads
    every log up to its end, a chunk at a time: nothing is skipped or shown twice."""
    marks = dict(start or {})
    while True:
        done = ended()  # asked before the look: output written before the end is shown
        for log in logs():
            while True:
                data, marks[log.rel] = read_on(run_dir, log, marks.get(log.rel))
                if not data:
                    break
                yield log, data
        if done:
            return
        sleep(FOLLOW_EVERY)


def remote_note(run: RunRecord, ssh_hosts: Collection[str]) -> str | None:
    """Why an active run shows no logs here: an SSH run's (its executor one of
    ``ssh_hosts``) are on its host until it ends. A local run's handle names its host
    too, and has its logs here."""
    handle = run.handle or {}
    if run.state.active and run.executor in ssh_hosts and handle.get("host"):
        return (
            f"run {run.id} runs on {handle['host']}: its logs are fetched into its folder "
            "when it ends"
        )
    return None
