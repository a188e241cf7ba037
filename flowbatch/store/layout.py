"""Where things live in a site folder (see the README's "Site layout")."""

from __future__ import annotations

import os
import re
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..errors import NotFoundError
from .owner import SiteOwner, site_owner

#: ids of workflows and runs: safe as folder names and in URLs
ID_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
#: the run id a claim (``queue/.claimed/<id>--<name>``) carries: six random bytes in hex
CLAIMED_ID = re.compile(r"[0-9a-f]{12}")

RUN_JSON = "run.json"
REQUEST_COPY = "request.yaml"
#: a run's page in its folder (written by the daemon when the run ends)
RUN_PAGE = "index.html"
#: `flowbatch submit` puts the files a request names in `queue/<name>.files/`
BUNDLE_SUFFIX = ".files"
#: the names `runs cancel` gives its requests (``cancel-<run>-<random>.yaml``): intake
#: reads them first (a cancel of a PENDING run comes before a free slot starts it)
CANCEL_PREFIX = "cancel-"


@dataclass(frozen=True)
class Layout:
    """The site's paths; each is built once per Layout (a path join costs microseconds,
    and a busy daemon asks for a run's folder several times per state change)."""

    root: Path
    #: (workflow,) -> its ``runs`` folder; (workflow, run id) -> the run's folder
    _paths: dict[tuple[str, ...], Path] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    @cached_property
    def owner(self) -> SiteOwner | None:
        """Whom root gives what it makes in this site (a root daemon serving a service
        user's site: :mod:`.owner`); None on a site of root's or in a process that is
        not root. Looked at once: a daemon does not pay for it per run."""
        return site_owner(self.root)

    @cached_property
    def config(self) -> Path:
        return self.root / "flowbatch.yaml"

    @cached_property
    def queue(self) -> Path:
        return self.root / "queue"

    @cached_property
    def rejected(self) -> Path:
        return self.queue / "rejected"

    @cached_property
    def claimed(self) -> Path:
        """Requests being turned into runs; a request here survives a daemon crash."""
        return self.queue / ".claimed"

    @cached_property
    def templates(self) -> Path:
        return self.root / "templates"

    @cached_property
    def results(self) -> Path:
        return self.root / "results"

    @cached_property
    def index_db(self) -> Path:
        return self.root / "index.db"

    @cached_property
    def lock(self) -> Path:
        return self.root / "daemon.lock"

    def template_dir(self, workflow: str) -> Path:
        return self.templates / checked_id(workflow, "workflow")

    def workflow_results(self, workflow: str) -> Path:
        return self.results / checked_id(workflow, "workflow")

    def runs_dir(self, workflow: str) -> Path:
        return self._kept((workflow,), lambda: self.workflow_results(workflow) / "runs")

    def run_dir(self, workflow: str, run_id: str) -> Path:
        return self._kept(
            (workflow, run_id), lambda: self.runs_dir(workflow) / checked_id(run_id, "run")
        )

    def _kept(self, key: tuple[str, ...], make: Callable[[], Path]) -> Path:
        """A path asked for several times per state change of every run, built once
        (an id is checked, then kept; any id may be asked for, so the cache is bounded)."""
        try:
            return self._paths[key]
        except KeyError:
            path = make()
            if len(self._paths) >= 4096:
                self._paths.clear()
            self._paths[key] = path
            return path

    def find_run_dir(self, run_id: str) -> Path:
        """The run folder of ``run_id`` in any workflow, from the tree alone."""
        checked_id(run_id, "run")
        if self.results.is_dir():
            for wf in self.results.iterdir():
                candidate = wf / "runs" / run_id
                if (candidate / RUN_JSON).is_file():
                    return candidate
        raise NotFoundError(f"unknown run {run_id!r}", hint="see `flowbatch runs list`")

    def ensure(self) -> None:
        """Make the folders that are missing. A new ``queue/`` gets the sticky bit, so
        whatever write access the admin gives participants there, they can add entries
        but never rename or remove the daemon's ``.claimed`` and ``rejected`` (see
        :func:`queue_mode_problem`); those two are writable by their owner only."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.queue.mkdir()
        except FileExistsError:
            pass
        else:
            os.chmod(self.queue, stat.S_IMODE(self.queue.stat().st_mode) | stat.S_ISVTX)
        for d in (self.rejected, self.claimed):
            d.mkdir(mode=0o755, exist_ok=True)
        for d in (self.templates, self.results):
            try:
                d.mkdir()
            except FileExistsError:
                continue
            if self.owner is not None:  # not the queue's: a root daemon's are root's
                self.owner.give(d)


def checked_id(value: str, what: str) -> str:
    """Refuse ids that could escape a folder or break a URL."""
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise NotFoundError(
            f"invalid {what} id {value!r}",
            expected="1-64 letters, digits, '_', '.', '-', not starting with '.' or '-'",
        )
    return value


def queue_mode_problem(queue: Path, st: os.stat_result) -> str | None:
    """Why ``queue/`` (``st``: its stat) lets a participant replace the daemon's folders
    in it, or None. A folder others may write without the sticky bit lets any of them
    rename ``queue/.claimed`` or ``queue/rejected`` away and put their own folder, or a
    link, in its place: the daemon would then write and move files where they chose."""
    mode = st.st_mode
    if not mode & 0o022 or mode & stat.S_ISVTX:
        return None
    who = " and ".join(w for w, bit in (("its group", 0o020), ("everyone", 0o002)) if mode & bit)
    return (
        f"{queue} is writable by {who} (mode {stat.S_IMODE(mode):04o}) without the sticky "
        "bit: a participant could replace the daemon's folders .claimed and rejected in it; "
        f"run: chmod +t {queue}"
    )


def this_host() -> str:
    """This daemon host's name (``FLOWBATCH_HOSTNAME`` overrides it, for tests)."""
    return os.environ.get("FLOWBATCH_HOSTNAME") or socket.gethostname()
