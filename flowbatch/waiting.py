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

The states come from the runs' ``run.json`` files (the truth: the index lags them by up to
a commit, and a claim can go before its runs' rows are committed); the index only tells
a request's claim id when its claim was not seen. The waiting process only reads (a
participant may wait too)."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import FlowbatchError
from .runs import TERMINAL, RunRecord, State, epoch
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
    #: no trace of the request anywhere: not queued, claimed or rejected, no run of it
    unknown: bool = False

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
        return 0 if self.succeeded and not self.unknown else 1


def request_stage(layout: Layout, name: str) -> str:
    """Where the request ``name`` is: :data:`QUEUED`, :data:`CLAIMED` or :data:`DONE`."""
    return claim_of(layout, name)[0]


def claim_of(layout: Layout, name: str) -> tuple[str, str | None]:
    """Where the request ``name`` is, and, claimed, the run id its claim carries (its
    runs' ids are that id, and ``<id>-<n>`` for a sweep's other points)."""
    if os.path.lexists(layout.queue / name):
        return QUEUED, None
    token = _claimed(layout.claimed, name)
    return (CLAIMED, token) if token else (DONE, None)


def _claimed(folder: Path, name: str, *, hosts: bool = True) -> str | None:
    """The run id of the claim ``<id>--<name>`` in ``folder``, or (``hosts``) in one of
    its folders: a shared site's daemons claim into a folder per host (its name holds no
    ``--`` claim part: ``node07``, ``xn--...``, or twelve hex digits as a container's)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:  # missing, or not ours to read: nothing found there
        return None
    for entry in entries:
        run_id, sep, rest = entry.name.partition("--")
        if sep and rest == name and CLAIMED_ID.fullmatch(run_id):
            return run_id
    if not hosts:
        return None
    for entry in entries:
        run_id, sep, _ = entry.name.partition("--")
        if sep and CLAIMED_ID.fullmatch(run_id):
            continue  # a claim (a file, or a folder)
        if entry.is_dir(follow_symlinks=False):
            found = _claimed(Path(entry.path), name, hosts=False)
            if found:
                return found
    return None


def rejection(
    layout: Layout, name: str, *, since: float | None = None, owner: int | None = None
) -> dict[str, Any] | None:
    """The error file of the rejected request ``name``, or None. It is
    ``rejected/<name>.error.yaml``, or, where an earlier rejection had that name,
    ``rejected/<stem>.<n>.yaml.error.yaml`` whose ``file`` names the request. ``since``
    (seconds since the epoch): only one rejected then or later (an older request of the
    same name, dropped into the queue by hand, was rejected before)."""
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
    if owner is None and os.geteuid() != 0:
        owner = os.geteuid()  # a user waits for their own requests
    try:
        daemons = os.stat(rejected).st_uid
    except OSError:
        return None
    for path in candidates:
        try:
            # an error file is its request's user's (a root daemon's rejection of another
            # user's request), who may edit it: one user's must not answer for another's
            # request, root's wait included (found by review)
            by = os.lstat(path).st_uid
            if by not in (daemons, owner) and not (
                owner is None  # root, who never saw the request queued: the file of the
                and path.name == f"{name}.error.yaml"  # very name, its request's user's
                and os.lstat(rejected / name).st_uid == by
            ):
                continue
            info = yamlio.load_file(path, max_bytes=1 << 20)
        except (OSError, FlowbatchError):
            continue
        if not isinstance(info, dict) or name not in (info.get("file"), info.get("request")):
            continue
        if since is not None and (epoch(info.get("rejected_at")) or 0) < since - CLOCK_SLACK:
            continue
        return info
    return None


#: seconds a daemon's clock may lag this host's (a shared site)
CLOCK_SLACK = 5.0
#: a request gone from the queue and its claims with no run found yet: seconds to look
#: again before it counts as one that made none (an index lags its claims by a commit)
NO_RUN_GRACE = 5.0


def _row(record: RunRecord) -> dict[str, Any]:
    """What a wait shows of a run, from its record."""
    return {
        "id": record.id,
        "workflow": record.workflow,
        "state": record.state.value,
        "messages": list(record.messages),
        "results": record.results,
        "created_at": record.created_at,
    }


def claim_id_of(site: Site, name: str, *, since: float | None = None) -> str | None:
    """The run id the claim of the request ``name`` carried, from the index's runs of that
    name (``since``: made then or later, not an older request's of the same name); None
    while the index has none."""
    site.store  # noqa: B018 - opens the index
    query = (
        RunRow.select(RunRow.id, RunRow.created_at)
        .where(RunRow.request == name)
        .order_by(RunRow.created_at, RunRow.id)
    )
    for row in query:
        if since is None or (epoch(row.created_at) or 0) >= since - CLOCK_SLACK:
            return str(row.id).split("-")[0]
    return None


def tree_runs(
    site: Site, run_id: str, unreadable: list[FlowbatchError] | None = None
) -> list[dict[str, Any]]:
    """The runs a claim of ``run_id`` made, from their ``run.json`` (the truth: the index
    lags the tree by up to a commit): ``<id>`` and ``<id>-<n>``, in point order. A run
    folder whose record cannot be read (refused, or not readable by this user) is left
    out, and why goes into ``unreadable``."""
    store = site.store
    point = re.compile(rf"{re.escape(run_id)}(?:-([0-9]+))?")
    found: list[tuple[int, dict[str, Any]]] = []
    try:
        workflows = list(os.scandir(site.layout.results))
    except OSError:
        return []
    for workflow in workflows:
        runs_dir = Path(workflow.path) / "runs"
        try:
            names = [n for n in os.listdir(runs_dir) if n.startswith(run_id)]
        except OSError:
            continue
        for name in names:
            match = point.fullmatch(name)
            if not match:
                continue
            try:
                record = store.load_dir(runs_dir / name)
            except FlowbatchError as exc:
                if unreadable is not None:
                    unreadable.append(exc)
                continue
            except (OSError, ValueError) as exc:  # not a run's folder, or not ours to read
                if isinstance(exc, FileNotFoundError) and not os.path.lexists(runs_dir / name):
                    continue  # removed since the listing (runs delete, cleanup)
                if unreadable is not None:
                    reason = getattr(exc, "strerror", None) or str(exc)
                    unreadable.append(
                        FlowbatchError(f"cannot read the run in {runs_dir / name}: {reason}")
                    )
                continue
            found.append((int(match.group(1) or 0), _row(record)))
    return [row for _, row in sorted(found, key=lambda item: item[0])]


def wait_request(
    site: Site,
    name: str,
    *,
    timeout: float | None = None,
    since: float | None = None,
    note: Callable[[str], None] = lambda text: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Wait until the request ``name`` (as ``submit`` printed it) is rejected, or made
    into runs that have all ended, or ``timeout`` seconds passed. ``since``: when it was
    queued (seconds since the epoch), as ``submit`` knows it: an older request's runs
    or rejection under the same name are not its. ``note`` gets a line for each step:
    the request claimed, each run's end, a request left unclaimed for long.

    Its runs are read from their ``run.json`` once the run id of its claim is known (seen
    claimed, or from the index's rows of its name): the index lags the claims by a
    commit, and a wait that read it alone saw a request done with no run yet (found by
    review: exit 0 for a run that failed)."""
    layout = site.layout
    start = clock()
    deadline = None if timeout is None else start + timeout
    look = FIRST_LOOK
    stage = QUEUED
    token: str | None = None
    told_unclaimed = False
    empty_since: float | None = None  # when it was first found done with no run
    ended: set[str] = set()
    seen = since is not None  # queued by this process (submit): it existed
    owner: int | None = None  # the request file's user, once seen in the queue
    while True:
        stage_now, claimed = claim_of(layout, name)
        if stage_now == QUEUED and owner is None:
            with contextlib.suppress(OSError):
                owner = os.lstat(layout.queue / name).st_uid
        seen = seen or stage_now != DONE
        if stage_now != DONE and since is None:
            since = time.time()  # seen waiting: what is older is another request's
        if claimed:
            token = claimed
        if stage_now != stage and stage_now == CLAIMED:
            note(f"{name}: claimed by the daemon")
        stage = stage_now
        if stage == DONE:
            info = rejection(layout, name, since=since, owner=owner)
            if info is not None:
                return Outcome(rejected=info)
        if token is None and stage != QUEUED:
            token = claim_id_of(site, name, since=since)
        unreadable: list[FlowbatchError] = []
        runs = tree_runs(site, token, unreadable) if token else []
        for run in runs:
            if run["id"] not in ended and State(run["state"]) in TERMINAL:
                ended.add(run["id"])
                note(_ended_line(run))
        now = clock()
        if stage == DONE and all(State(r["state"]) in TERMINAL for r in runs):
            if unreadable:
                # its runs were made, but some records cannot be read here: said, not
                # "made no run" with exit 0, nor the others' outcome alone (a sweep one
                # of whose records was refused ended on the rest: found by review)
                raise unreadable[0]
            if runs:
                return Outcome(runs=runs)
            if not seen and token is None:
                # never seen waiting, no claim in the index, no rejection: a name no
                # request had (found by review: a typo exited 0, "made no run")
                return Outcome(unknown=True)
            empty_since = now if empty_since is None else empty_since
            if now - empty_since >= NO_RUN_GRACE:
                return Outcome(runs=[])  # a sweep whose points had all run
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
        if empty_since is not None:
            pause = min(pause, 0.5)
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
    the site does not know is refused before the wait. The states are their ``run.json``'s
    (the index lags them by up to a commit)."""
    store = site.store
    for run_id in run_ids:
        store.load(run_id)  # unknown: NotFoundError, with its hint
    wanted = list(dict.fromkeys(run_ids))
    start = clock()
    deadline = None if timeout is None else start + timeout
    look = FIRST_LOOK
    ended: set[str] = set()
    while True:
        runs = [_row(store.load(run_id)) for run_id in wanted]  # their run.json: the truth
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
        line += f" ({first_line(run['messages'][0])})"
    return line


def first_line(message: Any) -> str:
    """A run's message, its first line (a message may carry a log's tail)."""
    lines = str(message).splitlines()
    return lines[0] if lines else ""
