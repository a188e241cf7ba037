"""Run states and the record of a run.

The state machine is flowServ's (seed-inventory §5.2): PENDING → RUNNING; PENDING or
RUNNING → SUCCESS | ERROR | CANCELED; the terminal states stay terminal; a change to the
current state is a no-op. :class:`RunRecord` is what ``run.json`` holds. The one place that
changes a state is :meth:`flowbatch.store.Store.transition`, which calls :func:`apply`
here and then writes the tree and the index.

A run submitted to a scheduler (Slurm) is PENDING while its job waits in the scheduler's
queue, as flowServ's PENDING means (the workflow does not run yet), and RUNNING once the
job starts. Such a run is *launched* all the same (its handle has :data:`QUEUED`): it
holds its executor's slot and its user's share, is polled, and is never submitted again.
A retry after its job was lost before it started makes it PENDING again (``again``).
A job the scheduler puts back in its queue after it started (Slurm's requeue: ``scontrol
requeue``, a node failure or preemption with requeue) makes its RUNNING run PENDING and
queued again: the same job and attempt (no retry is used), ``started_at`` cleared, the
requeue in its history; it becomes RUNNING again when the job starts again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import StateError

RUN_FORMAT = 1

#: the key of a handle whose job waits in a scheduler's own queue: its run is PENDING and
#: launched (:attr:`RunRecord.queued`) until the job starts
QUEUED = "queued"
#: the key of a handle whose job a scheduler requeued: the ``started`` marker (pid, time)
#: of the execution the requeue ended, whose markers are not the run's while no later
#: execution has started (:func:`superseded`; ``read_markers(superseded=)``)
SUPERSEDED = "superseded"
#: the key of a handle counting the requeues of its job that the daemon saw
REQUEUES = "requeues"


class State(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    CANCELED = "CANCELED"

    @property
    def active(self) -> bool:
        return self in ACTIVE


ACTIVE: frozenset[State] = frozenset({State.PENDING, State.RUNNING})
TERMINAL: frozenset[State] = frozenset({State.SUCCESS, State.ERROR, State.CANCELED})

#: target state -> the states it may be reached from
ALLOWED: dict[State, frozenset[State]] = {
    # a retry (a new attempt after an infrastructure failure), or a scheduler's requeue
    # of its job (the same attempt, queued again), sends a RUNNING run back to PENDING;
    # flowServ had neither, so nothing else reaches PENDING
    State.PENDING: frozenset({State.RUNNING}),
    State.RUNNING: frozenset({State.PENDING}),
    State.SUCCESS: ACTIVE,
    State.ERROR: ACTIVE,
    State.CANCELED: ACTIVE,
}


def now_iso() -> str:
    """UTC ISO-8601 with offset, to the microsecond (sorts as text)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def parse_time(text: str | None) -> datetime | None:
    """An ISO-8601 timestamp as an aware UTC datetime; naive times are taken as UTC.
    ``None`` for a missing or unreadable value (callers treat it as unknown)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def epoch(text: str | None) -> float | None:
    """An ISO time of a run record as seconds since the epoch (None if unreadable)."""
    moment = parse_time(text)
    return None if moment is None else moment.timestamp()


def parse_state(text: str) -> State:
    try:
        return State(text.upper())
    except ValueError:
        raise StateError(
            f"unknown state {text!r}", expected=", ".join(s.value for s in State)
        ) from None


@dataclass
class RunRecord:
    """Everything ``run.json`` says about a run. The tree is the truth; the index mirrors it."""

    id: str
    workflow: str
    version: str
    group: str
    name: str | None
    owner_uid: int
    owner: str
    request: str  # the request file's name as dropped into the queue
    created_at: str
    state: State = State.PENDING
    started_at: str | None = None
    finished_at: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    executor: str = "local"
    handle: dict[str, Any] | None = None
    time_limit: float | None = None
    messages: list[str] = field(default_factory=list)
    results: dict[str, Any] | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    attempt: int = 1
    retries: int = 0  # further attempts allowed after infrastructure failures
    host: str | None = None  # the daemon host that owns the run (several hosts, one site)
    sweep: dict[str, Any] | None = None  # {id, point, of} for a run of a sweep
    waiting: str | None = None  # why a PENDING run does not start (a fair-share cap)
    format: int = RUN_FORMAT

    @property
    def queued(self) -> bool:
        """PENDING with its job submitted to a scheduler, waiting in its queue: launched."""
        return self.state == State.PENDING and bool(self.handle and self.handle.get(QUEUED))

    @property
    def launched(self) -> bool:
        """Its executor has it (RUNNING, or queued in a scheduler): polled, never launched
        again, holding a slot."""
        return self.state == State.RUNNING or self.queued

    def to_dict(self) -> dict[str, Any]:
        # a shallow copy: the values are JSON data already, and asdict()'s deep copy
        # was a measurable part of every state change
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["state"] = self.state.value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["state"] = State(values.get("state", "PENDING"))
        return cls(**values)


def superseded(handle: dict[str, Any] | None) -> tuple[int, float] | None:
    """The ``started`` marker (pid, time) of the execution a requeue of the job of
    ``handle`` ended (:data:`SUPERSEDED`), None when there is none (a handle of a job
    never requeued, or of an earlier version)."""
    value = (handle or {}).get(SUPERSEDED)
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    pid, at = value
    if isinstance(pid, bool) or not isinstance(pid, int):
        return None
    if isinstance(at, bool) or not isinstance(at, int | float):
        return None
    return pid, float(at)


def apply(
    run: RunRecord,
    target: State,
    *,
    messages: list[str] | None = None,
    at: str | None = None,
    reason: str | None = None,
    again: bool = False,
) -> bool:
    """Move ``run`` to ``target`` in memory, checking the transition.

    Returns False for a same-state no-op. Timestamps follow flowServ: RUNNING sets
    ``started_at``; a terminal state sets ``finished_at`` (and ``started_at`` when the run
    never started, so the run time reads zero rather than missing). These are the moments
    of the change; the history keeps them. The runner puts the times the run's script
    marked in their place where they are plausible (``started_at=``/``finished_at=``
    updates of the same change: :func:`flowbatch.lifecycle.marker_times`).

    ``again``: a PENDING run becomes PENDING again, a change all the same (a new attempt
    of a run whose job was lost while it waited in a scheduler's queue).
    """
    renewed = again and run.state == target == State.PENDING
    if run.state == target and not renewed:
        return False
    if run.state not in ALLOWED[target] and not renewed:
        raise StateError(
            f"cannot change run {run.id} in state {run.state.value} to {target.value}",
            hint="only PENDING → RUNNING and an active state → SUCCESS, ERROR or CANCELED "
            "are allowed",
        )
    stamp = at or now_iso()
    if target == State.RUNNING:
        run.started_at = stamp
    elif target in TERMINAL:
        run.started_at = run.started_at or stamp
        run.finished_at = stamp
    if messages:
        run.messages.extend(messages)
    run.history.append(
        {
            "state": target.value,
            "at": stamp,
            "message": reason or (messages[0] if messages else None),
        }
    )
    run.state = target
    return True
