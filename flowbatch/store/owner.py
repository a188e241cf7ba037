"""What a root process makes in a site another user owns is that user's.

docs/admins.md recommends a root daemon serving a site a service user owns: the runs run
as their users, the site stays the service user's. Every folder the daemon makes in the
site (``results/<wf>/``, ``runs/``, ``postproc/``, ``reports-pending/``) and every file
the owner's commands open for writing in place (the lock files, ``claims-boot``, a new
index) is therefore given to the site's owner, with the site folder's group, as soon as
it is made: made root's, the owner's ``report``, ``install``, ``runs delete``,
``cleanup``, ``workflows retire`` and ``reindex`` failed on a permission error (found by
an end-to-end trial). So is what root's own programs make there through
:mod:`flowbatch.api` (``reindex.lock``, ``.trash``, a template's folders and files,
notes of owed reports), and the folders of the notes of runs given up on
(``ssh-abandoned/<host>/``, ``slurm-abandoned/<profile>/``): the owner's ``install``,
``runs delete``, ``uninstall`` and a daemon of theirs failed on them (found by review).
Files the daemon writes by rename into the owner's folders (``run.json``, leaderboards,
pages, the notes of runs given up on) may stay root's: the owner replaces and removes
them with write access to the folder alone.

On a site of root's, or in a process that is not root, there is nothing to give, and
nothing here costs more than a comparison: the site folder is looked at once per
:class:`~flowbatch.store.layout.Layout`.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: a folder opened to give what is in it (the path to it may be a link of the admin's)
_IN = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
#: a folder opened never through a link at its last name
_DIR = _IN | os.O_NOFOLLOW


def _other_names(st: os.stat_result) -> bool:
    """Whether ``st`` is a file with another name than the one being given: a hard
    link the owner made to a file of root's would give that file away."""
    return stat.S_ISREG(st.st_mode) and st.st_nlink > 1


@dataclass(frozen=True)
class SiteOwner:
    """The site folder's owner and group, whom root gives what it makes in the site."""

    uid: int
    gid: int

    def give(self, path: str | os.PathLike[str] | int) -> None:
        """Give ``path`` (an open descriptor, or a path never followed through a link)
        to the site's owner, when the owner could have made it: it is in a folder of
        theirs, and a file has no other name. Nothing once this process is no longer
        root (a command that became the owner, :func:`flowbatch.cli.become_site_owner`):
        what it makes is the owner's already. The owner controls the site folder and
        can put a link where the daemon makes things (``results`` -> a folder of
        root's): what the daemon then makes there stays root's (found by review: the
        owner got folders of names of theirs in root's places)."""
        if os.geteuid() != 0:
            return
        if isinstance(path, int):
            if not _other_names(os.fstat(path)):
                os.fchown(path, self.uid, self.gid)
            return
        name = os.fspath(path)
        folder = os.open(os.path.dirname(name) or ".", _IN)
        try:
            self.give_at(os.path.basename(name), folder)
        finally:
            os.close(folder)

    def give_at(self, name: str, folder: int) -> bool:
        """Give ``name`` in the open folder ``folder`` (not followed through a link) to
        the site's owner, when ``folder`` is theirs and a file of that name has no
        other name (see :meth:`give`); nothing once this process is no longer root.
        Whether it was given."""
        if os.geteuid() != 0 or os.fstat(folder).st_uid != self.uid:
            return False
        if _other_names(os.stat(name, dir_fd=folder, follow_symlinks=False)):
            return False
        os.chown(name, self.uid, self.gid, dir_fd=folder, follow_symlinks=False)
        return True

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

    def give_tree(self, path: Path) -> int:
        """Give the folder ``path``, when it is in a folder of the owner's, with the
        folders and files beneath it that are root's (:data:`FOLDER_DEPTH` levels at
        most), walked by descriptors, never through a link; a file with another name
        stays root's. For a tree root fills before it is given (a template's version):
        a folder the owner held while root wrote into it could have had a link put in
        it, which root's writes would have followed. Returns how many were given;
        nothing once this process is no longer root."""
        if os.geteuid() != 0:
            return 0
        folder = os.open(path.parent, _IN)
        try:
            if os.fstat(folder).st_uid != self.uid:
                return 0
            top = _open_folder(path.name, folder)
        finally:
            os.close(folder)
        if top is None:
            return 0
        try:
            return _give_tree(top, self, FOLDER_DEPTH)
        finally:
            os.close(top)


def open_folder_in(root: Path, folder: Path, owner: SiteOwner | None, *, make: bool) -> int:
    """A descriptor of ``folder``, a folder beneath the site folder ``root``, each of its
    names below ``root`` opened through no link (ELOOP where one is a link: the owner
    controls the site folder and could lead root's writes where they chose with one);
    ``make``: the missing ones made, each given to ``owner`` where there is one (when
    made in a folder of theirs: :meth:`SiteOwner.give_at`)."""
    fd = os.open(root, _IN)
    try:
        for name in folder.relative_to(root).parts:
            if make:
                try:
                    os.mkdir(name, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass
                else:
                    if owner is not None:
                        owner.give_at(name, fd)
            sub = os.open(name, _DIR, dir_fd=fd)
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    return fd


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


def _open_folder(name: str | Path, at: int | None = None) -> int | None:
    """A descriptor of the folder ``name`` (beneath the folder ``at``), never opened
    through a link at its last name; None where there is no such folder."""
    try:
        return os.open(name, _DIR, dir_fd=at)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link: not followed
            return None
        raise


def _give_own(fd: int, owner: SiteOwner) -> bool:
    """Give the open folder ``fd`` to ``owner`` where it is root's; whether it was."""
    if os.fstat(fd).st_uid != 0:
        return False
    os.fchown(fd, owner.uid, owner.gid)
    return True


def _give_tree(fd: int, owner: SiteOwner, depth: int) -> int:
    """Give the open folder ``fd``, and the folders and files in it (``depth`` levels
    of folders), that are root's to ``owner``: the notes of ``reports-pending/``, a
    template's version. Walked by descriptors: no name is followed through a link.
    Returns how many were given. The folder itself goes last: a walk cut short finds
    it root's at the next look, and is made again whole. Nothing in a folder of a
    third user's: the owner could have made nothing there."""
    if os.fstat(fd).st_uid not in (0, owner.uid):
        return 0
    count = 0
    with os.scandir(fd) as entries:
        found = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    for name, folder in found:
        if folder:
            if depth <= 0:
                continue
            sub = _open_folder(name, fd)
            if sub is None:
                continue
            try:
                count += _give_tree(sub, owner, depth - 1)
            finally:
                os.close(sub)
            continue
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        # none with another name (a hard link); the folder is the owner's, or is given
        # to them last
        if st.st_uid == 0 and stat.S_ISREG(st.st_mode) and not _other_names(st):
            os.chown(name, owner.uid, owner.gid, dir_fd=fd, follow_symlinks=False)
            count += 1
    return count + _give_own(fd, owner)


def give_back(
    owner: SiteOwner,
    files: list[Path],
    results: Path,
    notes: list[Path],
    templates: Path | None = None,
) -> list[str]:
    """Repair a site an older flowbatch's root daemon served: give the site's owner what
    that daemon made root's, and returns what was given (paths, for the log). ``files``
    are the site's files the owner opens in place (lock files, ``claims-boot``, the
    index); ``notes`` are folders of notes, one level of folders deep
    (``reports-pending/``, ``ssh-abandoned/``, ``slurm-abandoned/``), given with their
    notes. In ``templates/``: each workflow's folder, and its versions where they are
    root's, with what is in them (an install by root's process: the owner's
    ``install``, ``workflows retire`` and ``uninstall`` failed there). In
    ``results/``: each workflow's folder, ``runs/``, ``postproc/`` and ``.trash`` with
    the folders in them. Run folders only where their ``runs/`` is root's: an older
    daemon took its runs back to root, and ``runs/`` is given last, so a repair cut
    short is done again whole at the next start, and a site already repaired (or never
    served so) costs a few looks per workflow, not one per run. A run folder its user
    holds (a run still running) is not walked into.

    ``results/``, ``templates/`` and the folders of notes are in the owner's own site
    folder: the owner can put a link in their place (to another site's results, whose
    runs are root's). All are therefore walked by descriptors, none opened through a link, so that
    nothing outside the site is given (found by review: the repair gave another tree's
    ``runs/`` and the folders of its runs to the owner through a ``results`` link)."""
    given: list[str] = []
    for path in files:
        if _roots(path) and not os.path.islink(path):
            owner.give(path)
            given.append(path.name)
    for folder in notes:
        fd = _open_folder(folder)
        if fd is None:
            continue
        try:
            if _give_tree(fd, owner, 1):  # and its hosts' (or profiles') folders
                given.append(folder.name)
        finally:
            os.close(fd)
    if templates is not None:
        given += _give_templates(templates, owner)
    fd = _open_folder(results)
    if fd is None:
        return given
    try:
        if _give_own(fd, owner):
            given.append(results.name)
        for workflow, top in _subfolders(fd):
            given += _give_workflow(top, owner, f"{results.name}/{workflow}")
    finally:
        os.close(fd)
    return given


def _subfolders(fd: int) -> Iterator[tuple[str, int]]:
    """The folders in the folder open at ``fd`` (no link), each by name with a
    descriptor open while the caller looks at it (:func:`_open_folder`)."""
    with os.scandir(fd) as entries:
        names = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
    for name in names:
        sub = _open_folder(name, fd)
        if sub is None:
            continue
        try:
            yield name, sub
        finally:
            os.close(sub)


def _give_templates(templates: Path, owner: SiteOwner) -> list[str]:
    """:func:`give_back` in ``templates/``: a workflow's folder where it is root's, and
    in it each folder of root's (a version, one being installed or retired) with what
    is in it. A site already repaired costs a look per version."""
    given: list[str] = []
    fd = _open_folder(templates)
    if fd is None:
        return given
    try:
        if _give_own(fd, owner):
            given.append(templates.name)
        for workflow, top in _subfolders(fd):
            if _give_own(top, owner):
                given.append(f"{templates.name}/{workflow}")
            for version, sub in _subfolders(top):
                if os.fstat(sub).st_uid == 0:
                    _give_tree(sub, owner, FOLDER_DEPTH)
                    given.append(f"{templates.name}/{workflow}/{version}")
    finally:
        os.close(fd)
    return given


def _give_workflow(top: int, owner: SiteOwner, shown: str) -> list[str]:
    """:func:`give_back` in one workflow's folder, open at ``top``."""
    given: list[str] = []
    for name in ("runs", "postproc", ".trash"):
        folder = _open_folder(name, top)
        if folder is None:
            continue
        try:
            if os.fstat(folder).st_uid != 0:
                continue
            # a run's (or a post-processing's) folder, its folders too
            for _run, sub in _subfolders(folder):
                if os.fstat(sub).st_uid == 0:
                    _give_folder(sub, owner.uid, owner.gid, FOLDER_DEPTH)
            os.fchown(folder, owner.uid, owner.gid)
            given.append(f"{shown}/{name}")
        finally:
            os.close(folder)
    if _give_own(top, owner):
        given.append(shown)
    return given
