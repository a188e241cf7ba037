"""Notes that outlive a daemon: one JSON file each in a folder of the site.

The Slurm and SSH executors note here the jobs and process groups of runs they gave up
on while their scheduler or host did not answer (``<site>/slurm-abandoned/<profile>/``,
``<site>/ssh-abandoned/<host>/``), so that the next daemon (a restart, the next
``--once`` tick, after a ``runs cancel`` in its own process) ends them too. Without a
folder (an executor built without the site's root) nothing is written and the caller
keeps its notes in memory only.

A root daemon serving a site another user owns (docs/admins.md) makes those folders the
site owner's (:mod:`flowbatch.store.owner`): made root's, a later daemon run as the
owner could end what they note but neither remove a note nor write one, and the
owner could not remove the folder of a host or profile the config no longer has, as
``doctor`` tells them to (found by review). The notes are written by rename into those
folders: root's, but the owner reads, replaces and removes them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..store import atomic
from ..store.owner import SiteOwner, open_folder_in, site_owner

log = logging.getLogger("flowbatch.executors")

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")

#: the site's folders of notes: one folder per Slurm profile, per SSH host
SLURM_ABANDONED = "slurm-abandoned"
SSH_ABANDONED = "ssh-abandoned"


class Notes:
    """The notes in ``folder`` (``<site>/<kind>/<name>``; None: none are kept), each
    named by a key."""

    def __init__(self, folder: Path | None, what: str) -> None:
        self.folder = folder
        self.what = what  # for messages: "abandoned Slurm job", "ssh login1: abandoned"
        #: whom root gives the folders it makes (looked up at the first note: a daemon
        #: that never gives up on a run never looks)
        self._owner: list[SiteOwner | None] = []

    @staticmethod
    def name(key: str) -> str:
        """The file name of ``key`` (characters other than letters, digits, ``_.-`` as
        ``_``: a key made of a remote host's words never leaves the folder)."""
        return _UNSAFE.sub("_", key) + ".json"

    def note(self, key: str, value: dict[str, Any]) -> None:
        """Write ``value`` under ``key`` (atomically); a failure is logged, not raised:
        the caller keeps it in memory all the same."""
        if self.folder is None:
            return
        try:
            fd = self._open(make=True)
            try:
                atomic.write_json(self.name(key), value, dir_fd=fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("cannot note %s %s in %s: %s", self.what, key, self.folder, exc)

    def forget(self, key: str) -> None:
        if self.folder is not None:
            with contextlib.suppress(OSError):
                fd = self._open(make=False)
                try:
                    os.unlink(self.name(key), dir_fd=fd)
                finally:
                    os.close(fd)

    def _open(self, *, make: bool) -> int:
        """The notes' folder, opened through no link below the site folder (the site's
        owner could lead root's notes anywhere with one); ``make``: the missing folders
        made, a root daemon's given to the site's owner."""
        assert self.folder is not None
        root = self.folder.parent.parent
        if not self._owner:
            self._owner.append(site_owner(root))
        return open_folder_in(root, self.folder, self._owner[0], make=make)

    def load(self) -> list[dict[str, Any]]:
        """Every note (a mapping) in the folder, in name order; unreadable ones logged.

        Read through the folder opened with no link below the site folder, each note
        with no link followed (a link there led root's read anywhere). A root daemon
        takes only the notes root wrote: the folders are the site owner's, who could
        put a note there naming any user's Slurm job, which a root daemon would
        ``scancel`` (found by review). One the owner wrote is left where it is, and
        said: its jobs are the owner's to end."""
        if self.folder is None:
            return []
        try:
            fd = self._open(make=False)
        except OSError:
            return []
        try:
            names = sorted(os.listdir(fd))
            out = []
            for name in names:
                if not name.endswith(".json") or name.startswith("."):
                    continue
                try:
                    value = self._read(fd, name)
                except (OSError, ValueError) as exc:
                    log.warning("%s %s: cannot read it: %s", self.what, name, exc)
                    continue
                if isinstance(value, dict):
                    out.append(value)
            return out
        finally:
            os.close(fd)

    def _read(self, fd: int, name: str) -> Any:
        """The note ``name`` in the folder open at ``fd``, as JSON; OSError when it is
        not a regular file, or (read by root) not root's."""
        note = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        try:
            st = os.fstat(note)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            if os.geteuid() == 0 and st.st_uid != 0:
                raise OSError(
                    errno.EPERM,
                    f"written by uid {st.st_uid}, not by root: a root daemon ends only what "
                    f"it noted itself; end what it names as that user, then remove "
                    f"{self.folder}/{name}",
                )
            with os.fdopen(os.dup(note), "rb") as fh:
                return json.loads(fh.read(1 << 20).decode("utf-8"))
        finally:
            os.close(note)


def stranded(site_root: Path, profiles: Iterable[str], hosts: Iterable[str]) -> list[str]:
    """What is noted under a Slurm profile or an SSH host the site config no longer has:
    no executor reads those notes, so nothing ends those jobs or processes. One line per
    such folder, saying what is there and what to do (empty: nothing stranded)."""
    out = []
    for folder, known, kind in (
        (SLURM_ABANDONED, set(profiles), "Slurm profile"),
        (SSH_ABANDONED, set(hosts), "ssh host"),
    ):
        try:
            names = sorted(os.listdir(site_root / folder))
        except OSError:
            continue
        for name in names:
            if name in known or name.startswith("."):
                continue
            entries = Notes(site_root / folder / name, f"{kind} {name}").load()
            if not entries:
                continue
            if folder == SLURM_ABANDONED:
                what = "job(s) " + " ".join(
                    str(e.get("job_id") or e.get("job_name")) for e in entries
                )
                end = "scancel them"
            else:
                # ssh notes hold {"handle": {pid, pgid, ...}, "reason"} (ssh._note_abandoned)
                what = "process group(s) " + " ".join(
                    str(e.get("handle", {}).get("pgid")) for e in entries
                )
                end = "end them on that host (kill -- -PGID, once sure it is still the run)"
            out.append(
                f"{site_root / folder / name}: {what} of runs given up on wait to be ended, "
                f"but the config has no {kind} {name!r} any more: put it back in "
                f"flowbatch.yaml (the daemon then ends them), or {end} and remove the folder"
            )
    return out
