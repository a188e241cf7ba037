"""Waiting for the runs of a queued request, or for given runs, to end: ``flowbatch submit
--wait``, ``runs rerun --wait`` and ``runs wait``, as ``sbatch --wait`` does for a job.

A request goes through three places: ``queue/<name>`` (queued), ``queue/.claimed/<id>--<name>``
(claimed: the daemon is making its runs; a shared site's daemons claim into a folder per
host) and then none. Its claim is removed only once every run of it exists (the claim
settles after the runs are on disk), so a request found in neither place is done with:
rejected (``queue/rejected/<name>.error.yaml`` says why) or made into its runs, which the
index lists by the request's name (``submit`` names each request ``<stem>-<random>``).
The places are looked at in that order: a rename moves the request from one to the next,
so it is never missed between two looks.

The states come from the index, one query a look, as ``runs list`` reads them; the waiting
process only reads (a participant may wait too)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import FlowbatchError
from .runs import TERMINAL, State
from .store.index import RunRow
from .store.layout import CLAIMED_ID

if TYPE_CHECKING:
    from .site import Site
    from .store.layout import Layout

#: the first look after a short wait, then less and less often (seconds)
FIRST_LOOK = 0.2
LAST_LOOK = 2.0
#: a request still in ``queue/`` after this long: no daemon may be serving the site
UNCLAIMED_NOTE = 60.0

QUEUED = "queued"
CLAIMED = "claimed"
DONE = "done"


@dataclass
class Outcome:
    """What the wait found: the runs (index rows: id, state, messages...), the rejection
    (the error file's content) of a rejected request, whether the time ran out first."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    rejected: dict[str, Any] | None = None
    timed_out: bool = False

    @property
    def succeeded(self) -> bool:
        return (
            not self.timed_out
            and self.rejected is None
            and all(r["state"] == State.SUCCESS.value for r in self.runs)
        )

    @property
    def exit_code(self) -> int:
        """0: every run succeeded (or the request needed none); 1: a run failed or was
        cancelled, or the request was rejected; 124: the time ran out first (as
        ``timeout`` says it), the runs go on."""
        if self.timed_out:
            return 124
        return 0 if self.succeeded else 1


def request_stage(layout: Layout, name: str) -> str:
    """Where the request ``name`` is: :data:`QUEUED`, :data:`CLAIMED` or :data:`DONE`."""
    if os.path.lexists(layout.queue / name):
        return QUEUED
    if _claimed(layout.claimed, name):
        return CLAIMED
    return DONE


def _claimed(folder: Path, name: str, *, hosts: bool = True) -> bool:
    """Whether ``folder`` holds the claim ``<id>--<name>``, or (``hosts``) one of its
    folders does: a shared site's daemons claim into a folder per host, whose name may
    hold ``--`` too (``xn--...``)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:  # missing, or not ours to read: nothing found there
        return False
    for entry in entries:
        run_id, sep, rest = entry.name.partition("--")
        if sep and rest == name and CLAIMED_ID.fullmatch(run_id):
            return True
    return hosts and any(
        _claimed(Path(entry.path), name, hosts=False)
        for entry in entries
        if not CLAIMED_ID.fullmatch(entry.name.partition("--")[0])
        and entry.is_dir(follow_symlinks=False)
    )


def rejection(layout: Layout, name: str) -> dict[str, Any] | None:
    """The error file of the rejected request ``name``, or None. It is
    ``rejected/<name>.error.yaml``, or, where an earlier rejection had that name,
    ``rejected/<stem>.<n>.yaml.error.yaml`` whose ``file`` names the request."""
    from . import yamlio

    rejected = layout.rejected
    stem = Path(name).stem
    candidates = [rejected / f"{name}.error.yaml"]
    try:
        candidates += sorted(
            rejected / n
            for n in os.listdir(rejected)
            if n.startswith(f"{stem}.") and n.endswith(".error.yaml") and n != f"{name}.error.yaml"
        )
    except OSError:
        pass
    for path in candidates:
        try:
            info = yamlio.load_file(path, max_bytes=1 << 20)
        except (OSError, FlowbatchError):
            continue
        if isinstance(info, dict) and name in (info.get("file"), info.get("request")):
            return info
    return None


def _rows(query: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": r.id,
            "workflow": r.workflow,
            "state": r.state,
            "messages": list(r.messages or []),
            "results": r.results,
            "created_at": r.created_at,
        }
        for r in query
    ]


def request_runs(site: Site, name: str) -> list[dict[str, Any]]:
    """The index's runs of the queued request ``name``, oldest first."""
    site.store  # noqa: B018 - opens the index
    return _rows(
        RunRow.select().where(RunRow.request == name).order_by(RunRow.created_at, RunRow.id)
    )


def wait_request(
    site: Site,
    name: str,
    *,
    timeout: float | None = None,
    note: Callable[[str], None] = lambda text: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Wait until the request ``name`` (as ``submit`` printed it) is rejected, or made
    into runs that have all ended, or ``timeout`` seconds passed. ``note`` gets a line for
    each step: the request claimed, each run's end, a request left unclaimed for long."""
    layout = site.layout
    start = clock()
    deadline = None if timeout is None else start + timeout
    look = FIRST_LOOK
    stage = QUEUED
    told_unclaimed = False
    ended: set[str] = set()
    while True:
        stage_now = request_stage(layout, name)
        if stage_now != stage and stage_now == CLAIMED:
            note(f"{name}: claimed by the daemon")
        stage = stage_now
        if stage == DONE:
            info = rejection(layout, name)
            if info is not None:
                return Outcome(rejected=info)
        runs = request_runs(site, name) if stage != QUEUED else []
        for run in runs:
            if run["id"] not in ended and State(run["state"]) in TERMINAL:
                ended.add(run["id"])
                note(_ended_line(run))
        if stage == DONE and all(State(r["state"]) in TERMINAL for r in runs):
            return Outcome(runs=runs)
        now = clock()
        if stage == QUEUED and not told_unclaimed and now - start >= UNCLAIMED_NOTE:
            told_unclaimed = True
            note(
                f"{name}: still in the queue after {UNCLAIMED_NOTE:.0f} s: is a daemon "
                "serving this site? (`flowbatch doctor`; the systemd unit or the cron line "
                "in site-config/)"
            )
        if deadline is not None and now >= deadline:
            return Outcome(runs=runs, timed_out=True)
        pause = look if deadline is None else max(0.0, min(look, deadline - now))
        sleep(pause)
        look = min(LAST_LOOK, look * 1.5)


def wait_runs(
    site: Site,
    run_ids: list[str],
    *,
    timeout: float | None = None,
    note: Callable[[str], None] = lambda text: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Wait until every run of ``run_ids`` has ended, or ``timeout`` seconds passed. An id
    the site does not know is refused before the wait."""
    store = site.store
    for run_id in run_ids:
        store.load(run_id)  # unknown: NotFoundError, with its hint
    wanted = list(dict.fromkeys(run_ids))
    start = clock()
    deadline = None if timeout is None else start + timeout
    look = FIRST_LOOK
    ended: set[str] = set()
    while True:
        rows = {r["id"]: r for r in _rows(RunRow.select().where(RunRow.id.in_(wanted)))}
        for run_id in wanted:
            if run_id not in rows:  # not indexed yet (an index write failed): its run.json
                record = store.load(run_id)
                rows[run_id] = {
                    "id": run_id,
                    "workflow": record.workflow,
                    "state": record.state.value,
                    "messages": list(record.messages),
                    "results": record.results,
                    "created_at": record.created_at,
                }
        runs = [rows[i] for i in wanted]
        for run in runs:
            if run["id"] not in ended and State(run["state"]) in TERMINAL:
                ended.add(run["id"])
                note(_ended_line(run))
        if len(ended) == len(wanted):
            return Outcome(runs=runs)
        now = clock()
        if deadline is not None and now >= deadline:
            return Outcome(runs=runs, timed_out=True)
        sleep(look if deadline is None else max(0.0, min(look, deadline - now)))
        look = min(LAST_LOOK, look * 1.5)


def _ended_line(run: dict[str, Any]) -> str:
    line = f"run {run['id']}: {run['state']}"
    if run["state"] != State.SUCCESS.value and run["messages"]:
        line += f" ({_first_line(run['messages'][0])})"
    return line


def _first_line(message: Any) -> str:
    lines = str(message).splitlines()
    return lines[0] if lines else ""
