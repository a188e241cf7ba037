"""The run script: the one contract every executor runs and the daemon reads back.

``run.sh`` sits in the run directory and runs there. It exports the ``FB_`` variables and
``FLOWBATCH_RUN_ID`` (nothing else: the environment it was started with stays, see
:mod:`flowbatch.runenv`), runs each
command of each step in its own subshell (a brace group, one fork less, where the command
provably changes nothing in the shell: :mod:`~flowbatch.render.grouping`) with
stdout/stderr appended to per-step logs, and records its markers as lines appended to one
file, ``status/markers``, each line written by one ``printf`` (one write, bash builtins
only, so markers cost no forks; one file, so a run creates one marker file, not one per
event: on a cluster's shared file system each file created is a metadata round trip):

``started <pid> <epoch> <host>``
``start <NN> <epoch>``                     step NN began
``end <NN> <rc> <epoch>``                  step NN ended with rc
``exit <rc> <epoch> <failed step, 0 if none>``  the run ended

The first failing command ends the run with its exit code. TERM, INT and HUP end it with
``128+signal``. Times are ``$EPOCHREALTIME`` (bash >= 5; whole seconds from
``printf '%(%s)T'`` on older bash). :func:`read_markers` parses them back and treats a
line without its final newline as not written yet. It also reads the one-file-per-marker
layout of earlier versions (``status/started``, ``status/step-NN.start``,
``status/step-NN.exit``, ``status/exit``): runs started before an upgrade still end well.

A scheduler may run the script again in the same folder: Slurm requeues a job (``scontrol
requeue``, a node failure or preemption with requeue) by ending it (SIGTERM: the trap
appends ``exit 143``) and later running its batch script anew, which appends a second
``started`` line and its own markers. The markers are those of the last execution: a
``started`` line drops what came before it, and an execution the requeue ended is no
execution of the run's while its ``started`` line is still the last (``superseded``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from flowbatch.render.grouping import GROUP_GUARD, needs_subshell
from flowbatch.render.values import RenderedWorkflow
from flowbatch.safeio import read_up_to

SCRIPT_NAME = "run.sh"
STATUS_DIR = "status"
#: the script's markers, a line each, in STATUS_DIR
MARKERS_FILE = "markers"
#: in STATUS_DIR, made by the daemon when a run whose scheduler may run its script again
#: has ended: the script then exits at once (found by review: ``scontrol requeue`` of a
#: finished job ran a SUCCESS run's script again, its files no longer those recorded)
CLOSED_MARK = "closed"
LOGS_DIR = "logs"

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOT_STEP_CHAR = re.compile(r"[^A-Za-z0-9_.-]")
_STEP_MARKER = re.compile(r"step-([0-9]+)\.(start|exit)")

# the script's folder without a fork (``$(dirname "$0")`` cost a subshell and an exec)
_PRELUDE = r"""case $0 in */*) cd -- "${0%/*}" || exit 90 ;; esac
umask 022
"""

# intake makes logs/ and status/ in a new run folder (two syscalls there; a mkdir process
# here); the script makes them where they are missing: a folder staged to an SSH host, a
# retry's fresh attempt
_MACHINERY = r"""if [ -e status/closed ]; then
  echo "flowbatch: this run has ended (status/closed): it is not run again" >&2
  exit 0
fi
[ -d logs ] && [ -d status ] || mkdir -p logs status
# the local executor has the script keep its own output (opened here, as the run's user)
if [ -n "${FLOWBATCH_SCRIPT_LOG:-}" ]; then
  exec >>"$FLOWBATCH_SCRIPT_LOG" 2>&1
  unset FLOWBATCH_SCRIPT_LOG
fi
# fb_now sets fb_t to the time without a fork
if [ -n "${EPOCHREALTIME:-}" ]; then
  fb_now() { fb_t=$EPOCHREALTIME; }
else
  fb_now() { printf -v fb_t '%(%s)T' -1; }
fi
fb_step=0
fb_signal() {
  fb_now
  printf 'exit %s %s %s\n' "$1" "$fb_t" "$fb_step" >> status/markers
  exit "$1"
}
# fb_fail NN rc: the command of step NN failed with rc; the run ends with it
fb_fail() {
  fb_now
  printf 'end %s %s %s\n' "$1" "$2" "$fb_t" >> status/markers
  printf 'exit %s %s %s\n' "$2" "$fb_t" "$fb_step" >> status/markers
  exit "$2"
}
trap 'fb_signal 129' HUP
trap 'fb_signal 130' INT
trap 'fb_signal 143' TERM
fb_now
printf 'started %s %s %s\n' "$$" "$fb_t" "${HOSTNAME:-}" >> status/markers
"""

_EPILOGUE = r"""fb_step=0
fb_now
printf 'exit 0 %s 0\n' "$fb_t" >> status/markers
exit 0
"""


def shell_quote(value: str) -> str:
    """``value`` as one single-quoted bash word."""
    return "'" + value.replace("'", "'\\''") + "'"


def step_slug(index: int, name: str) -> str:
    """``NN-name`` of a step (1-based index), the name reduced to [A-Za-z0-9_.-]."""
    return f"{index:02d}-{_NOT_STEP_CHAR.sub('_', name) or 'step'}"


def step_log_paths(index: int, name: str) -> tuple[str, str]:
    """(stdout, stderr) log paths of step ``index`` (1-based), relative to the run dir."""
    slug = step_slug(index, name)
    return f"{LOGS_DIR}/step-{slug}.out", f"{LOGS_DIR}/step-{slug}.err"


def build_script(rendered: RenderedWorkflow, *, run_id: str) -> str:
    """The bash text of ``run.sh`` for a rendered workflow."""
    header = (
        "#!/usr/bin/env bash\n"
        f"# Generated by flowbatch for run {_one_line(run_id)}. Do not edit: the daemon\n"
        "# reads the status/ markers this script writes.\n"
    )
    parts = [header, _PRELUDE, _exports(rendered.env, run_id), _MACHINERY]
    if any(not needs_subshell(c) for step in rendered.steps for c in step.commands):
        parts.append("# commands of builtins only run without a fork, unless one is a function\n")
        parts.append(GROUP_GUARD)
    for index, step in enumerate(rendered.steps, start=1):
        parts.append(_step(index, step.name, step.commands))
    parts.append(_EPILOGUE)
    return "".join(parts)


def _one_line(text: str) -> str:
    return text.replace("\n", " ").replace("\r", " ")


def _exports(env: dict[str, str], run_id: str) -> str:
    lines = [f"export FLOWBATCH_RUN_ID={shell_quote(run_id)}"]
    for name, value in env.items():
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"not an environment variable name: {name!r}")
        lines.append(f"export {name}={shell_quote(value)}")
    return "\n".join(lines) + "\n"


def _step(index: int, name: str, commands: list[str]) -> str:
    nn = f"{index:02d}"
    out, err = step_log_paths(index, name)
    lines = [
        f"# step {index}: {_one_line(name)}",
        f"fb_step={index}",
        f": > {out}",
        f": > {err}",
        "fb_now",
        f"printf 'start {nn} %s\\n' \"$fb_t\" >> status/markers",
    ]
    for command in commands:
        # a subshell, or a brace group where the command provably changes nothing in
        # this shell (grouping.py); each closes on its own line, so a trailing
        # '# comment' cannot swallow it
        redirect = f">>{out} 2>>{err} </dev/null"
        if needs_subshell(command):
            lines += ["(", command, f") {redirect}"]
        else:
            lines += [
                'if [ "$fb_group" = 1 ]; then {',
                command,
                "}; else (",
                command,
                f"); fi {redirect}",
            ]
        lines += [
            "fb_rc=$?",
            f'if [ "$fb_rc" -ne 0 ]; then fb_fail {nn} "$fb_rc"; fi',
        ]
    lines += ["fb_now", f"printf 'end {nn} 0 %s\\n' \"$fb_t\" >> status/markers", ""]
    return "\n".join(lines) + "\n"


# -- reading markers back --------------------------------------------------------------


@dataclass
class StepMarker:
    """What the markers of one step say; ``None`` where nothing (complete) was written."""

    start: float | None = None
    exit_code: int | None = None
    end: float | None = None


@dataclass
class Markers:
    """The markers of a run directory.

    ``started``: (pid, time, host); ``steps``: by 1-based step number; ``exit``:
    (code, time, failed step number or 0)."""

    started: tuple[int, float, str] | None = None
    steps: dict[int, StepMarker] = field(default_factory=dict)
    exit: tuple[int, float, int] | None = None


#: how much of a marker is read: each is one short line (a host name is at most 255 bytes)
_MARKER_BYTES = 4096
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _fields(folder: int, name: str, count: int) -> list[str] | None:
    """The ``count`` space-separated fields of the complete one-line marker ``name`` in
    the open folder ``folder``, else None (missing, a link, not a complete line).

    A marker is complete when its line ends with a newline: printf writes it at once,
    so a missing newline means the write has not finished (or the file is damaged)."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=folder)
    except OSError:
        return None
    try:
        raw = os.read(fd, _MARKER_BYTES)
    except OSError:  # a folder, a FIFO with no writer
        return None
    finally:
        os.close(fd)
    text = raw.decode("utf-8", errors="replace")
    if not text.endswith("\n") or text.count("\n") != 1:
        return None
    parts = text[:-1].split(" ", count - 1)
    return parts if len(parts) == count else None


def _time(text: str) -> float:
    # EPOCHREALTIME uses the locale's decimal point
    return float(text.replace(",", "."))


#: how much of ``status/markers`` is read: two short lines a step (the run's user owns the
#: file: a huge one must not make the daemon read it all)
_MARKERS_FILE_BYTES = 1 << 20


def read_markers(run_dir: Path, *, superseded: tuple[int, float] | None = None) -> Markers:
    """Parse the markers in ``run_dir/status/``; absent, partial or unreadable ones are
    left out (a later line of the same kind wins). The folder is the run user's: it is
    opened once, and nothing is read through a symbolic link.

    Only the last execution of the script counts: a ``started`` line starts the markers
    afresh (a scheduler ran the script again in the folder after a requeue). With
    ``superseded``, the (pid, time) of the ``started`` line of an execution a requeue
    ended: while that is still the last execution, no marker is the run's (empty
    :class:`Markers`: the killed execution's ``exit 143`` is not the run's end)."""
    markers = _read_markers(run_dir)
    if superseded is not None and _same_start(markers.started, superseded):
        return Markers()
    return markers


def _same_start(started: tuple[int, float, str] | None, other: tuple[int, float]) -> bool:
    return started is not None and started[0] == other[0] and abs(started[1] - other[1]) < 1e-3


def _read_markers(run_dir: Path) -> Markers:
    markers = Markers()
    try:
        folder = os.open(
            os.path.join(run_dir, STATUS_DIR),
            os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
        )
    except OSError:
        return markers
    try:
        try:
            fd = os.open(MARKERS_FILE, _READ_FLAGS, dir_fd=folder)
        except FileNotFoundError:
            _read_marker_files(folder, markers)  # a run started by an earlier version
            return markers
        except OSError:  # a link, a FIFO: not the script's
            return markers
        try:
            raw = read_up_to(fd, _MARKERS_FILE_BYTES)
        except OSError:  # a folder
            return markers
        finally:
            os.close(fd)
    finally:
        os.close(folder)
    # a line without its newline is still being written (or damaged): left out
    for line in raw.decode("utf-8", errors="replace").split("\n")[:-1]:
        _read_marker_line(line, markers)
    return markers


def _read_marker_line(line: str, markers: Markers) -> None:
    kind, _, rest = line.partition(" ")
    try:
        if kind == "started":
            pid, at, host = rest.split(" ", 2)
            started = (int(pid), _time(at), host)
            if not _same_start(markers.started, started[:2]):
                # the script run again (a requeue): what came before was another
                # execution's (the same line again is no new execution)
                markers.steps.clear()
                markers.exit = None
            markers.started = started
        elif kind == "start":
            number, at = rest.split(" ")
            markers.steps.setdefault(int(number), StepMarker()).start = _time(at)
        elif kind == "end":
            number, code, at = rest.split(" ")
            step = markers.steps.setdefault(int(number), StepMarker())
            step.exit_code, step.end = int(code), _time(at)
        elif kind == "exit":
            code, at, failed = rest.split(" ")
            markers.exit = (int(code), _time(at), int(failed))
    except ValueError:  # a damaged line: as if not written
        return


def _read_marker_files(folder: int, markers: Markers) -> None:
    """The layout of earlier versions: a file per marker, one line each."""
    started = _fields(folder, "started", 3)
    if started:
        try:
            markers.started = (int(started[0]), _time(started[1]), started[2])
        except ValueError:
            pass
    ended = _fields(folder, "exit", 3)
    if ended:
        try:
            markers.exit = (int(ended[0]), _time(ended[1]), int(ended[2]))
        except ValueError:
            pass
    for name in sorted(os.listdir(folder)):
        _read_step_marker(folder, name, markers.steps)


def _read_step_marker(folder: int, name: str, steps: dict[int, StepMarker]) -> None:
    match = _STEP_MARKER.fullmatch(name)
    if not match:
        return
    number = int(match.group(1))
    try:
        if match.group(2) == "start":
            fields = _fields(folder, name, 1)
            if fields:
                steps.setdefault(number, StepMarker()).start = _time(fields[0])
        else:
            fields = _fields(folder, name, 2)
            if fields:
                marker = steps.setdefault(number, StepMarker())
                marker.exit_code, marker.end = int(fields[0]), _time(fields[1])
    except ValueError:
        return
