"""What a root process makes in a site another user owns is that user's.

docs/admins.md recommends a root daemon serving a site a service user owns: the runs run
as their users, the site stays the service user's. Every folder the daemon makes in the
site (``results/<wf>/``, ``runs/``, ``postproc/``, ``reports-pending/``) and every file
the owner's commands open for writing in place (the lock files, ``claims-boot``, a new
index) is therefore given to the site's owner, with the site folder's group, as soon as
it is made: made root's, the owner's ``report``, ``install``, ``runs delete``,
``cleanup``, ``workflows retire`` and ``reindex`` failed on a permission error (found by
an end-to-end trial). Files the daemon writes by rename into the owner's folders
(``run.json``, leaderboards, pages) may stay root's: the owner replaces and removes them
with write access to the folder alone.

On a site of root's, or in a process that is not root, there is nothing to give, and
nothing here costs more than a comparison: the site folder is looked at once per
:class:`~flowbatch.store.layout.Layout`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SiteOwner:
    """The site folder's owner and group, whom root gives what it makes in the site."""

    uid: int
    gid: int

    def give(self, path: str | os.PathLike[str] | int) -> None:
        """Give ``path`` (an open descriptor, or a path never followed through a link)
        to the site's owner. Nothing once this process is no longer root (a command
        that became the owner, :func:`flowbatch.cli.become_site_owner`): what it makes
        is the owner's already."""
        if os.geteuid() != 0:
            return
        if isinstance(path, int):
            os.fchown(path, self.uid, self.gid)
        else:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)

    def make_dirs(self, path: Path, mode: int = 0o777) -> None:
        """``mkdir -p path``, each folder it makes given to the owner (an existing one is
        left as it is)."""
        missing = []
        here = path
        while not os.path.lexists(here) and here != here.parent:
            missing.append(here)
            here = here.parent
        for folder in reversed(missing):
            try:
                os.mkdir(folder, mode)
            except FileExistsError:
                continue  # made meanwhile: by whom it was made decides
            self.give(folder)


def site_owner(root: Path) -> SiteOwner | None:
    """Whom root gives what it makes in the site at ``root``: its folder's owner and
    group, when this process is root and the site another user's; None otherwise."""
    if os.geteuid() != 0:
        return None
    try:
        st = os.stat(root)
    except OSError:
        return None
    return None if st.st_uid == 0 else SiteOwner(st.st_uid, st.st_gid)


def make_dirs(path: Path, owner: SiteOwner | None, mode: int = 0o777) -> None:
    """``mkdir -p path``; what it makes is ``owner``'s, where there is one."""
    if owner is None:
        path.mkdir(mode, parents=True, exist_ok=True)
    else:
        owner.make_dirs(path, mode)


def give(path: str | os.PathLike[str] | int, owner: SiteOwner | None) -> None:
    """Give ``path`` (or an open descriptor) to ``owner``, where there is one."""
    if owner is not None:
        owner.give(path)


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: how deep the folders of a run are given at most (a take-back's depth)
FOLDER_DEPTH = 100


def give_folders(path: Path, uid: int, gid: int, depth: int) -> int:
    """Give ``path`` and the folders beneath it (at most ``depth`` levels) that are
    root's to ``uid:gid``; their files stay as they are (removing them needs write
    access to their folder alone). Walked by descriptors, never through a link.
    Returns how many folders were given."""
    fd = os.open(path, _DIR)
    try:
        return _give_folder(fd, uid, gid, depth)
    finally:
        os.close(fd)


def _give_folder(fd: int, uid: int, gid: int, depth: int) -> int:
    given = 0
    if os.fstat(fd).st_uid == 0:
        os.fchown(fd, uid, gid)
        given = 1
    if depth <= 0:
        return given
    with os.scandir(fd) as entries:
        names = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
    for name in names:
        try:
            sub = os.open(name, _DIR, dir_fd=fd)
        except OSError:  # gone, or swapped for a link since the listing
            continue
        try:
            given += _give_folder(sub, uid, gid, depth - 1)
        finally:
            os.close(sub)
    return given


def _roots(path: Path) -> bool:
    """Whether ``path`` (not followed) is root's."""
    try:
        return os.lstat(path).st_uid == 0
    except OSError:
        return False


def give_back(owner: SiteOwner, files: list[Path], results: Path, notes: Path) -> list[str]:
    """Repair a site an older flowbatch's root daemon served: give the site's owner what
    that daemon made root's, and returns what was given (paths, for the log). ``files``
    are the site's files the owner opens in place (lock files, ``claims-boot``, the
    index); ``notes`` is ``reports-pending/``. In ``results/``: each workflow's folder,
    ``runs/``, ``postproc/`` and ``.trash`` with the folders in them. Run folders only
    where their ``runs/`` is root's: an older daemon took its runs back to root, and
    ``runs/`` is given last, so a repair cut short is done again whole at the next
    start, and a site already repaired (or never served so) costs a few looks per
    workflow, not one per run. A run folder its user holds (a run still running) is
    not walked into."""
    given: list[str] = []
    for path in files:
        if _roots(path) and not os.path.islink(path):
            owner.give(path)
            given.append(path.name)
    if os.path.isdir(notes) and not os.path.islink(notes):
        count = give_folders(notes, owner.uid, owner.gid, 1)  # and its hosts' folders
        for where, _, names in os.walk(notes):
            for name in names:
                if _roots(Path(where) / name):
                    owner.give(Path(where) / name)
                    count += 1
        if count:
            given.append(notes.name)
    if _roots(results):
        owner.give(results)
        given.append(results.name)
    try:
        workflows = [e for e in os.scandir(results) if e.is_dir(follow_symlinks=False)]
    except OSError:
        workflows = []
    for workflow in workflows:
        top = Path(workflow.path)
        for name in ("runs", "postproc", ".trash"):
            folder = top / name
            if not _roots(folder) or os.path.islink(folder):
                continue
            with os.scandir(folder) as entries:
                inner = [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
            for run in inner:  # a run's (or a post-processing's) folder, its folders too
                if _roots(run):
                    give_folders(run, owner.uid, owner.gid, FOLDER_DEPTH)
            owner.give(folder)
            given.append(f"{results.name}/{workflow.name}/{name}")
        if _roots(top):
            owner.give(top)
            given.append(f"{results.name}/{workflow.name}")
    return given
