"""Resumed sweeps: which points of a sweep already ran, on the same template version.

jobmon never adds DONE work to a later run of a workflow (seed-inventory §12.3); here a
resubmitted sweep skips the points that already **succeeded** with the same arguments on
the same template version, runs the **missing** ones, and runs the **failed** ones again
only when asked (``retry_failed: true`` in the request; ``flowbatch submit --retry-failed``
writes it). A point that is still **active** (PENDING or RUNNING) is skipped too: running
it twice at once is never what was meant.

Use from intake (the daemon), after the points were cast by ``resolve_arguments``::

    plan = classify_points(site, req.workflow, version, points)
    skipped = plan.skipped(retry_failed=req.retry_failed)   # index -> why
    for index, arguments in enumerate(points):
        if index in skipped: continue
        ...create the run...

and from ``flowbatch submit`` (:func:`plan_request`) to tell the user, before queueing,
what will be skipped. Both read the index only (one query per call).

Arguments are compared in the form ``run.json`` records them
(:func:`flowbatch.sweep.run_arguments`): a file argument is ``{"source", "target"}``, and
``flowbatch submit`` copies files under a fresh name each time, so a point with a file
argument never matches an earlier run and is run again (a needless run rather than a
wrong skip).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import yamlio
from .accounts import user_name
from .errors import FlowbatchError
from .runs import State
from .site import Site
from .spec.model import FileArg
from .spec.request import Request, parse_request
from .store.index import RunRow
from .sweep import cast_points, point_key, run_arguments

SUCCEEDED = "succeeded"
ACTIVE = "active"
FAILED = "failed"
MISSING = "missing"

#: state of a point from the states of its earlier runs, strongest first
_ORDER = (
    (State.SUCCESS.value, SUCCEEDED),
    (State.RUNNING.value, ACTIVE),
    (State.PENDING.value, ACTIVE),
    (State.ERROR.value, FAILED),
    (State.CANCELED.value, FAILED),
)


@dataclass
class PointStatus:
    """One point of a sweep and what became of its earlier runs."""

    index: int
    arguments: dict[str, Any]
    status: str  # succeeded, active, failed or missing
    runs: list[str] = field(default_factory=list)  # earlier runs with these arguments
    #: the runs that made the status (the successful ones of a succeeded point): a list of
    #: every run named a failed one as a point's success (found by review)
    because: list[str] = field(default_factory=list)


@dataclass
class ResumePlan:
    """The points of a sweep sorted by what their earlier runs did."""

    workflow: str
    version: str
    points: list[PointStatus]

    def with_status(self, status: str) -> list[PointStatus]:
        return [p for p in self.points if p.status == status]

    def skipped(self, *, retry_failed: bool = False) -> dict[int, str]:
        """Point index -> why it gets no new run."""
        out: dict[int, str] = {}
        for point in self.points:
            if point.status == SUCCEEDED:
                out[point.index] = "succeeded"
            elif point.status == ACTIVE:
                out[point.index] = "active"
            elif point.status == FAILED and not retry_failed:
                out[point.index] = (
                    "failed or cancelled; submit with --retry-failed (retry_failed: true) to "
                    "run it again"
                )
        return out

    def to_run(self, *, retry_failed: bool = False) -> list[int]:
        skipped = self.skipped(retry_failed=retry_failed)
        return [p.index for p in self.points if p.index not in skipped]

    def to_json(self, *, retry_failed: bool = False) -> dict[str, Any]:
        skipped = self.skipped(retry_failed=retry_failed)
        return {
            "workflow": self.workflow,
            "version": self.version,
            "points": len(self.points),
            "to_run": self.to_run(retry_failed=retry_failed),
            "skipped": [
                {
                    "point": p.index,
                    "arguments": p.arguments,
                    "why": skipped[p.index],
                    "runs": p.runs,
                }
                for p in self.points
                if p.index in skipped
            ],
        }


def classify_points(
    site: Site,
    workflow: str,
    version: str,
    points: list[dict[str, Any]],
    *,
    group: str | None = None,
) -> ResumePlan:
    """Sort ``points`` (cast arguments, as ``resolve_arguments`` returns them) by what the
    earlier runs of ``workflow`` at ``version`` with equal arguments did.

    A point is ``succeeded`` when any such run succeeded, else ``active`` when one is
    PENDING or RUNNING, else ``failed`` when all ended in ERROR or CANCELED, else
    ``missing``. ``group`` limits the earlier runs to one group's (None: every group's).
    Runs of another version never count: a fixed template must run the points again.
    """
    site.store  # noqa: B018 - opens the index
    query = RunRow.select(RunRow.id, RunRow.arguments, RunRow.state).where(
        (RunRow.workflow == workflow) & (RunRow.version == version)
    )
    if group is not None:
        query = query.where(RunRow.group == group)
    earlier: dict[str, list[tuple[str, str]]] = {}
    for row in query.order_by(RunRow.created_at, RunRow.id):
        earlier.setdefault(point_key(row.arguments or {}), []).append((row.id, row.state))
    out = []
    for index, arguments in enumerate(points):
        normal = run_arguments(arguments)
        # a point with a file of the participant's is never one that ran: the same name
        # may hold other data (a request dropped again by hand keeps its files' names:
        # its points were skipped, found by review), as the README says
        brought = any(isinstance(v, FileArg) and v.source for v in arguments.values())
        runs = [] if brought else earlier.get(point_key(normal), [])
        status = _status({s for _, s in runs})
        because = [r for r, s in runs if _status({s}) == status]
        out.append(PointStatus(index, normal, status, [r for r, _ in runs], because))
    return ResumePlan(workflow, version, out)


def _status(states: set[str]) -> str:
    for state, status in _ORDER:
        if state in states:
            return status
    return MISSING


def plan_request(site: Site, path: Path) -> ResumePlan | None:
    """What resubmitting the sweep request at ``path`` (by this process's user, as
    ``flowbatch submit`` does) would skip (None: not a sweep).

    Casts every point as intake does, so ``lr: 1`` and ``lr: 1.0`` of a float
    parameter are the same point; duplicates after casting are one point."""
    doc = yamlio.load_file(path, max_bytes=site.config.max_request_bytes, as_written=True)
    if not isinstance(doc, dict) or not doc.get("sweep"):
        return None
    # parsed first, as validate and intake do: the same errors ("unknown workflow 'None'"
    # for a sweep without `workflow:` was found by review)
    req = parse_request(doc, file=str(path))
    if not isinstance(req, Request) or not req.sweep:
        return None
    try:
        template, version = site.templates.load(req.workflow, req.version)
    except FlowbatchError as exc:
        raise exc.at(file=str(path), prefix="workflow" if not req.version else "version")
    # as intake casts them: the same points, the same errors (sweep.<name>[<i>])
    cast = cast_points(template.parameters, req.arguments, req.sweep, file=str(path))
    points = [point.arguments for point in cast]
    # the group the runs would count for: the request's, else the submitting user's name
    group = req.group or user_name(os.getuid())
    return classify_points(site, req.workflow, version, points, group=group)
