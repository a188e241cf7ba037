"""The executor protocol: where a run's script runs, and how we learn that it ended.

Every backend runs the same rendered ``run.sh`` (see :mod:`flowbatch.render.script`);
the script's markers in the run folder have the last word on how each step ended. An
executor only starts the script, looks at it (all active runs in one batched call), ends
it, and brings its files home. Backends translate their native states into
:class:`Probe` values at this edge and keep the raw text for diagnostics.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import ExecutorUnavailable, FlowbatchError


class Liveness(enum.Enum):
    ALIVE = "alive"  # still running (or queued, for a scheduler)
    FINISHED = "finished"  # ended; the markers tell how
    GONE = "gone"  # no trace of it: it vanished (killed, host lost, never started)
    UNKNOWN = "unknown"  # could not look (connection down); ask again later


class LaunchDeferred(ExecutorUnavailable):
    """This run cannot be launched yet (its earlier attempt's job has not ended), the
    executor can take others: the run stays PENDING, with the reason, and is tried again
    at a later tick."""


@dataclass
class Probe:
    """The backend's word on one run at one poll."""

    liveness: Liveness
    exit_code: int | None = None
    raw: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    #: why the run ended for a reason outside the user's command (host lost, node failure,
    #: preemption): such a run may be retried; a user's non-zero exit never is
    infra_failure: str | None = None


@dataclass
class Launch:
    """What an executor needs to start a run: its folder and script."""

    run_id: str
    run_dir: Path
    script: str  # the script's file name inside run_dir
    workflow: str = ""
    time_limit: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    uid: int | None = None  # run as this user (when the daemon is root)
    #: scheduler resources (time, cpus, mem, gpus, partition) set by the template/request
    resources: dict[str, Any] = field(default_factory=dict)
    #: the handle recorded before this launch (a scheduler's intent): look for the job it
    #: names before submitting again
    handle: dict[str, Any] | None = None
    #: which attempt of the run this is (a retry after an infrastructure failure: 2, ...)
    attempt: int = 1


class Executor(Protocol):
    name: str
    limit: int  # runs at once on this executor (the dispatcher respects it)

    def launch(self, job: Launch) -> dict[str, Any]:
        """Start the run detached; return its handle (JSON-able), written into run.json."""
        ...

    def poll(self, handles: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Probe]:
        """Look at all active runs of this executor at once: run id -> probe."""
        ...

    def cancel(self, handle: dict[str, Any], reason: str) -> None:
        """End the run's whole process tree."""
        ...

    def collect(self, run_id: str, handle: dict[str, Any], run_dir: Path) -> None:
        """Bring logs, markers and outputs home (nothing to do locally)."""
        ...

    def adopt(self, handle: dict[str, Any]) -> bool:
        """After a daemon restart: is this handle still the run we started?"""
        ...

    def close(self) -> None: ...


@runtime_checkable
class LaunchesMany(Protocol):
    """Optional: an executor that starts the runs of one sweep together (Slurm: one job
    array per chunk). The Runner records :meth:`intents` (one handle per run, in order) in
    every run's ``run.json`` before calling :meth:`launch_many`; ``jobs`` carry each run's
    earlier handle, so an interrupted launch is found again instead of repeated."""

    def intents(self, jobs: Sequence[Launch]) -> list[dict[str, Any]]: ...

    def launch_many(self, jobs: Sequence[Launch]) -> list[dict[str, Any] | FlowbatchError]:
        """Per run, in order: its handle, or the error that kept it from starting."""
        ...
