"""Take-back: a root daemon hands a run's folder to the run's user (:func:`hand_over`) and
takes it back, with what the run wrote in it, when the run ends (:func:`take_back`).

While a run runs, its folder is its user's: the script writes its logs, markers and
outputs there as that user. Once it has ended, the folder and its files are the results
tree's owner's again, without group or other write, so that the run's record stands as
it ended. The walk goes by descriptors and never through a link, because the run's
leftover processes may still be changing the folder while it is taken back.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import re
import secrets
import stat
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import faults
from .accounts import identity
from .render.script import SCRIPT_NAME
from .safeio import CopyLimit, copy_sparse
from .store.layout import REQUEST_COPY, RUN_JSON, RUN_PAGE
from .store.owner import give_folders as give_folders_to

# the area's name, as before the take-back had a module of its own: the messages of a
# site's logs keep their source
log = logging.getLogger("flowbatch.queue")


#: files of a run folder that stay the daemon's when the folder is handed to its user
DAEMON_FILES = frozenset({RUN_JSON, REQUEST_COPY, SCRIPT_NAME})


def hand_over(path: Path, uid: int) -> None:
    """A root daemon gives a run's folder to its owner (who runs it); never world-writable."""
    if os.geteuid() != 0 or uid == 0:
        return
    _hand_over_folder(str(path), uid, identity(uid).gid, top=True)


@dataclass
class TakenBack:
    """What a take-back left out of the run folder: the paths it removed (relative, with
    ``/``) and the messages that say why."""

    removed: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    #: folders past :data:`TAKE_BACK_DEPTH`, closed with what they hold
    closed: list[str] = field(default_factory=list)
    #: links that led out of the run folder, and FIFOs, sockets and devices, removed
    strays: list[str] = field(default_factory=list)
    #: the run's links, to be looked at once the walk is done
    links: list[tuple[str, ...]] = field(default_factory=list)
    #: what its user could read and now cannot: no ACL could be set (:func:`_set_mode`)
    private: list[str] = field(default_factory=list)
    #: why the first of :attr:`private` got no ACL
    why_private: str = ""
    #: False once the file system said it keeps no ACLs: none is tried again
    acls: bool = True
    #: the folder was the tree's already: a take-back cut short is done again, and what
    #: the tree's owner has in it is taken as the run's user's (see :func:`take_back`)
    resumed: bool = False
    #: the default ACL of the tree's folder (``runs/``), which every folder made in it
    #: inherits; None without one (see :func:`_keep_default_acl`)
    tree_default: bytes | None = None
    #: folders given to the tree's owner beneath those of :attr:`closed`
    deep: int = 0
    #: whether :data:`TAKE_BACK_DEEP_FOLDERS` were given and more were left as they were
    deep_left: bool = False


def take_back(
    path: Path, uid: int | None, fresh: Iterable[str] = (), kept: Iterable[str] = ()
) -> TakenBack:
    """When a run ends, a root daemon takes back the folder it handed to the run's owner
    (:func:`hand_over`) and what the run wrote in it, giving them to the owner of the
    tree (``runs/``'s), without group or other write: the run's record stands as it
    ended. Else a participant could put a page of their own where the leaderboard links
    to the run's (``index.html``), remove its ``run.json``, or remove or change the
    result files the post-processing reads from every ranked run (making it fail for
    everyone). Walked by descriptors, never through a link. A file with other hard links
    is taken once (all of its names in the folder); one with a name outside the folder
    too (``ln r.json ~/keep``) gets one copy for all its names here, its holes kept, the
    other name staying the user's, within :data:`TAKE_BACK_COPY_BYTES` a run; past that
    its names here are removed (:class:`TakenBack` says which, and why). The files of
    ``fresh`` (paths in the folder: the result file, what post-processing reads) get a
    copy of their own all the same, up to :data:`FRESH_COPY_BYTES` each: a process of
    the run still going (``setsid``) that holds one open for writing changed it after
    the run had ended, the post-processing reading what the leaderboard never checked
    (found by review); it writes to the old file now, which no name reaches. What its
    user could read and others could not (a file of mode 0600, a folder of 0700) gets an
    ACL entry that lets the user go on reading it, and no more (:func:`_set_mode`); where
    the file system keeps no ACLs, it stays the tree owner's alone and a note says so.
    Every folder keeps the default ACL the tree gives (``runs/``'s, which a folder made
    in it inherits), none where it has none: one the user set (``setfacl -d -m
    u:other:rwx``) would be inherited by what the daemon or the post-processing makes
    there later. A folder that cannot be taken back (an NFS root_squash) is logged: the
    run ends all the same. ``kept``: names at the top the daemon writes besides
    :data:`DAEMON_FILES` (post-processing's record), never taken either (see
    :func:`_take_back_folder`).

    A take-back cut short (a daemon killed, the host down) is done whole by the next
    one: the folder is the tree's first, so one that finds it so takes the tree
    owner's entries in it as the user's too (:attr:`TakenBack.resumed`), giving them
    the modes and ACLs they would have had, and removes the copies it left half-made
    (:func:`_leftover`). A take-back done to its end and done again changes nothing."""
    taken = TakenBack()
    forced = {Path(p).parts for p in fresh}
    own = DAEMON_FILES.union(kept)
    if os.geteuid() != 0:
        return taken
    if not uid:  # root's own run: only its folders go to the tree's owner
        try:
            give_folders(path)
        except OSError as exc:
            log.warning("run folder %s: its folders not given to its tree's owner: %s", path, exc)
        return taken
    try:
        st = os.lstat(path)
        tree = os.lstat(path.parent)
        # the tree's already: a take-back cut short (the folder is taken first, then
        # what is in it), done whole now (found by review: a daemon killed mid-walk left
        # the results the run's user could still change, and the next one skipped them)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (uid, tree.st_uid):
            return taken
        taken.resumed = st.st_uid == tree.st_uid != uid
        taken.tree_default = _default_acl(path.parent)
        fd = os.open(path, _TAKE_DIR | os.O_NOFOLLOW)
        try:
            linked: dict[tuple[int, int], list[tuple[str, ...]]] = {}
            _take_back_folder(
                fd,
                uid,
                tree.st_uid,
                tree.st_gid,
                linked=linked,
                taken=taken,
                forced=forced,
                own=own,
            )
            _take_back_linked(fd, linked, uid, tree.st_uid, tree.st_gid, taken, forced)
            _remove_links_out(path, fd, taken)
            if taken.strays:
                taken.notes.append(
                    f"{len(taken.strays)} link(s) leading out of the run folder, FIFO(s) or "
                    "other special file(s) were removed at its end: a web server following "
                    "links would serve what they point at, and a FIFO blocks whatever reads "
                    "the results tree"
                )
            if taken.private:
                taken.notes.append(
                    f"{len(taken.private)} file(s) or folder(s) of the run that only its "
                    f"user could read (the first: {taken.private[0]}) can no longer be read "
                    "by them: the results tree took no ACL that would let them "
                    f"({taken.why_private}), and they were not opened to others instead; "
                    "the site's admin can give the user a copy (or mount the results tree "
                    "with POSIX ACLs)"
                )
            if taken.closed:
                first = taken.closed[0].split("/")
                left = (
                    f"; more than {TAKE_BACK_DEEP_FOLDERS} folders were below them, and "
                    "the rest stay the run's user's: the site's admin removes the run "
                    "folder as root"
                    if taken.deep_left
                    else ", and remove the run whole"
                )
                taken.notes.append(
                    f"{len(taken.closed)} folder(s) more than {TAKE_BACK_DEPTH} levels deep "
                    f"(the first under {'/'.join(first[:3])}/...) were closed with what "
                    f"they hold: only the site's owner can read it{left}"
                )
            for note in taken.notes:
                log.warning("run folder %s: %s", path, note)
        finally:
            os.close(fd)
        # a folder the user made where the daemon writes its files (its own page inside
        # `index.html/`, theirs to edit for ever) is moved aside: the daemon's file goes
        # there (a link or a file there is replaced by the daemon's atomic rename)
        for name in (RUN_PAGE, RUN_JSON, *kept):
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISDIR(os.lstat(path / name).st_mode):
                    os.rename(path / name, path / f".{name}.{secrets.token_hex(4)}.moved")
    except OSError as exc:
        log.warning("run folder %s: not taken back from uid %s: %s", path, uid, exc.strerror)
    return taken


_TAKE_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def give_folders(path: Path) -> None:
    """At the end of a run of root's, a root daemon gives the run folder and the folders
    in it (made by intake, by the daemon, by the run) to the owner of the tree
    (``runs/``'s) where that is another user (a service user's site, docs/admins.md):
    root's, they kept the owner's `runs delete`, `cleanup` and `workflows retire` from
    removing the run (moving a folder to ``.trash`` and emptying it need write access
    to it). The files stay root's: the owner removes them with write access to their
    folder alone, and cannot change the record of a run of root's. Nothing on a tree of
    root's. Walked by descriptors, never through a link, at most
    :data:`TAKE_BACK_DEPTH` levels deep."""
    tree = os.lstat(path.parent)
    if tree.st_uid != 0:
        give_folders_to(path, tree.st_uid, tree.st_gid, TAKE_BACK_DEPTH)


_TAKE_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: the bytes (allocated: holes are kept) a run's take-back copies at most for files that
#: also have a name outside its folder; past it, such files' names in the folder go
TAKE_BACK_COPY_BYTES = 1 << 30
#: the size up to which a take-back copies a result file or a post-processing input that
#: has no other name (see :func:`take_back`): a larger one is only taken
FRESH_COPY_BYTES = 64 << 20
#: the folder levels a take-back walks; a deeper folder is closed (:func:`_take_back_folder`)
TAKE_BACK_DEPTH = 100
#: the folders beneath the closed ones a take-back gives to the tree's owner at most
#: (:func:`_close_beneath`): a run can make a million, and the daemon has other work
TAKE_BACK_DEEP_FOLDERS = 10_000


def _take_back_folder(
    fd: int,
    user: int,
    owner: int,
    group: int,
    depth: int = 0,
    *,
    linked: dict[tuple[int, int], list[tuple[str, ...]]],
    taken: TakenBack,
    rel: tuple[str, ...] = (),
    forced: set[tuple[str, ...]] | None = None,
    own: frozenset[str] = DAEMON_FILES,
) -> None:
    """:func:`take_back` of the open folder ``fd`` and of what is in it: the entries of
    ``user`` (the daemon's own files are its already) get ``owner:group`` and lose
    group and other write. Each entry is opened without following a link and changed
    through its descriptor, so an entry swapped meanwhile (the run's leftover processes
    may still be at work) is never what gets changed; the folder is the tree's before
    its entries are looked at, so none can be added or renamed there meanwhile. A file
    with more than one name goes into ``linked`` (its device and inode -> its paths
    here), for :func:`_take_back_linked` once every folder is the tree's. A folder
    deeper than :data:`TAKE_BACK_DEPTH` is taken and closed to all but the tree's owner
    (mode 0700, no ACL), and so are the folders beneath it (:func:`_close_beneath`), their
    files left as they are: its user can no longer reach them (found by review: below
    the depth limit the run's user kept a writable area for ever, where the walk simply
    stopped), and the tree's owner can remove them (``runs delete``, ``cleanup``).

    The daemon's own files at the top (``own``: ``run.json``, ``request.yaml``,
    ``run.sh``, and a post-processing's ``postproc.json``) are never taken: one of the
    user's there is one they put in place of the daemon's, and must stay theirs, so
    that it is refused as such (a ``run.json`` or ``postproc.json`` taken back would be
    trusted by the next daemon, were this one killed before its final write)."""
    st = os.fstat(fd)
    if st.st_uid == user or (st.st_uid == 0 and owner != 0):
        # a folder of root's in the run's is the daemon's (``attempts/``): the tree's
        # owner must be able to remove what is in it (see give_folders)
        os.fchown(fd, owner, group)
    faults.point("take-back-folder")  # taken, its mode and ACLs not yet
    if depth >= TAKE_BACK_DEPTH:
        _close(fd, user, owner, group, taken)
        taken.closed.append("/".join(rel))
        _close_beneath(fd, user, owner, group, taken)
        return
    mode = stat.S_IMODE(st.st_mode) & ~0o022
    if _theirs(st, user, owner, taken):  # one the user kept to themselves stays theirs to read
        _set_mode(fd, st.st_mode, mode, user, taken, rel)
    elif st.st_mode & 0o022:
        os.fchmod(fd, mode)
    _keep_default_acl(fd, taken, rel)
    for name in os.listdir(fd):
        if depth == 0 and name in own:
            # one of the user's in place of the daemon's stays theirs (refused as such),
            # but a link or a FIFO there goes as anywhere (found by review)
            with contextlib.suppress(OSError):
                entry = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if entry.st_uid == user and not stat.S_ISREG(entry.st_mode):
                    _remove_stray(fd, name, (name,), taken)
            continue
        try:
            entry = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(entry.st_mode):
                sub = os.open(name, _TAKE_DIR | os.O_NOFOLLOW, dir_fd=fd)
                try:
                    _take_back_folder(
                        sub,
                        user,
                        owner,
                        group,
                        depth + 1,
                        linked=linked,
                        taken=taken,
                        rel=(*rel, name),
                        forced=forced,
                        own=own,
                    )
                finally:
                    os.close(sub)
            elif not stat.S_ISREG(entry.st_mode):
                # a FIFO, a socket: the tree's from now on, read by others; a link is
                # looked at once every folder is the tree's (see take_back)
                if entry.st_uid == user:
                    if stat.S_ISLNK(entry.st_mode):
                        taken.links.append((*rel, name))
                    else:
                        _remove_stray(fd, name, (*rel, name), taken)
            elif taken.resumed and _leftover(name, entry, user):
                os.unlink(name, dir_fd=fd)  # a copy a take-back cut short left half-made
            elif _theirs(entry, user, owner, taken):
                file_fd = os.open(name, _TAKE_FILE, dir_fd=fd)
                try:
                    opened = os.fstat(file_fd)
                    if not stat.S_ISREG(opened.st_mode):
                        continue  # swapped since the listing
                    if opened.st_nlink != 1 or (forced and (*rel, name) in forced):
                        linked.setdefault((opened.st_dev, opened.st_ino), []).append((*rel, name))
                        continue
                    _take_file(file_fd, opened, user, owner, group, taken, (*rel, name))
                finally:
                    os.close(file_fd)
        except OSError as exc:  # gone, or swapped for a link since the listing
            log.debug("taking back %s: %s", name, exc.strerror)


def _theirs(st: os.stat_result, user: int, owner: int, taken: TakenBack) -> bool:
    """Whether the entry ``st`` is taken as the run user's: theirs, or, in a take-back
    done again (:attr:`TakenBack.resumed`), the tree owner's. An earlier one cut short
    may have given it to the tree's owner and stopped before its mode and ACL (found
    by review: a folder the run kept to its user was left with no ACL of theirs, a
    file writable by others stayed so, and the next take-back passed them by). The
    tree owner's own entries in a run folder (``attempts/``, which the daemon makes
    0755) are open to others, and stay as they are."""
    return st.st_uid == user or (taken.resumed and st.st_uid == owner)


#: the names of the copies :func:`_take_back_copy` makes before it renames them
_TAKEN_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.taken", re.DOTALL)


def _leftover(name: str, st: os.stat_result, user: int) -> bool:
    """Whether ``name`` (``st``: its lstat) is a copy a take-back cut short made and did
    not rename into place: named as :func:`_take_back_copy` names them, a file not of
    the run's user (root's until it is the tree's). The user could name a file so, but
    not make it root's; one the first take-back gave to the tree's owner goes too."""
    return st.st_uid != user and stat.S_ISREG(st.st_mode) and bool(_TAKEN_NAME.fullmatch(name))


#: the extended attribute that holds a folder's default ACL (what is made in it inherits)
DEFAULT_ACL_XATTR = "system.posix_acl_default"


def _default_acl(folder: Path) -> bytes | None:
    """The default ACL of ``folder`` (the tree's, never the run user's), None where it has
    none or the file system keeps none."""
    try:
        return os.getxattr(folder, DEFAULT_ACL_XATTR, follow_symlinks=False)
    except OSError:
        return None


def _keep_default_acl(fd: int, taken: TakenBack, rel: tuple[str, ...]) -> None:
    """Give the folder ``fd`` the tree's default ACL (:attr:`TakenBack.tree_default`) in
    place of one its user set (found by review: ``setfacl -d -m u:other:rwx`` made
    during the run let ``other`` write what the daemon or the post-processing made there
    after the run's end); none where the tree has none. One that was removed is not
    given back: what is made there then gets its own mode, no more. The names of the
    folder's extended attributes are listed first: most folders have none."""
    if not taken.acls:
        return
    try:
        if DEFAULT_ACL_XATTR not in os.listxattr(fd):
            return
        if taken.tree_default is None:
            os.removexattr(fd, DEFAULT_ACL_XATTR)
        elif os.getxattr(fd, DEFAULT_ACL_XATTR) != taken.tree_default:
            os.setxattr(fd, DEFAULT_ACL_XATTR, taken.tree_default)
    except OSError as exc:  # a file system without extended attributes: none to keep
        log.debug("default ACL of %s: %s", "/".join(rel) or ".", exc.strerror)


def _close(fd: int, user: int, owner: int, group: int, taken: TakenBack) -> None:
    """Close the open folder ``fd`` (one past :data:`TAKE_BACK_DEPTH`) to all but the
    tree's owner: theirs (from the run's user, or root), mode 0700 and no ACL, access
    or default, so that nobody else can reach what it holds and the owner can remove it."""
    st = os.fstat(fd)
    if st.st_uid == user or (st.st_uid == 0 and owner != 0):
        os.fchown(fd, owner, group)
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.fchmod(fd, 0o700)  # an access ACL's mask with it: its entries give nothing
    if not taken.acls:
        return
    try:
        for name in set(os.listxattr(fd)) & {ACL_XATTR, DEFAULT_ACL_XATTR}:
            os.removexattr(fd, name)
    except OSError as exc:
        log.debug("ACLs of a closed folder: %s", exc.strerror)


def _subfolders(fd: int) -> list[str]:
    with os.scandir(fd) as entries:
        return [e.name for e in entries if e.is_dir(follow_symlinks=False)]


def _close_beneath(top: int, user: int, owner: int, group: int, taken: TakenBack) -> None:
    """:func:`_close` the folders beneath the open folder ``top`` (closed already), at
    most :data:`TAKE_BACK_DEEP_FOLDERS` in a take-back (:attr:`TakenBack.deep_left`
    says when more were left): owned by the run's user, they kept the tree's owner
    from removing the run (``runs delete`` and ``cleanup`` need write access to every
    folder; found by review). Their files stay as they are: removing one needs write
    access to its folder alone, and nobody else reaches them.

    Walked without recursion and with one descriptor open, however deep the folders
    go: down by a name, back by ``..``. Each folder is closed before its names are
    listed, so that none of them is renamed meanwhile (by a process of the run still
    in there), and none of the folders above can be moved: ``..`` is the folder the
    walk came from, which its device and inode check all the same."""
    fd = os.dup(top)
    try:
        st = os.fstat(fd)
        # the folders being walked, top first: each one's identity and the names left in it
        stack = [((st.st_dev, st.st_ino), _subfolders(fd))]
        while stack:
            names = stack[-1][1]
            if not names:
                stack.pop()
                if stack:
                    up = os.open("..", _TAKE_DIR | os.O_NOFOLLOW, dir_fd=fd)
                    os.close(fd)
                    fd = up
                    st = os.fstat(fd)
                    if (st.st_dev, st.st_ino) != stack[-1][0]:
                        raise OSError(errno.ESTALE, "a folder beneath moved while walked")
                continue
            name = names.pop()
            if taken.deep >= TAKE_BACK_DEEP_FOLDERS:
                taken.deep_left = True
                return
            try:
                sub = os.open(name, _TAKE_DIR | os.O_NOFOLLOW, dir_fd=fd)
            except OSError:  # a link, or a folder gone (a process of the run still there)
                continue
            try:
                _close(sub, user, owner, group, taken)
                st = os.fstat(sub)
                stack.append(((st.st_dev, st.st_ino), _subfolders(sub)))
            except BaseException:
                os.close(sub)
                raise
            taken.deep += 1
            os.close(fd)
            fd = sub
    except OSError as exc:
        taken.deep_left = True
        log.warning("closing the folders beneath %s levels: %s", TAKE_BACK_DEPTH, exc.strerror)
    finally:
        os.close(fd)


def _remove_stray(fd: int, name: str, rel: tuple[str, ...], taken: TakenBack) -> None:
    """Remove ``name`` in the folder ``fd`` (``rel`` in the run folder), noted in ``taken``."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=fd)
    taken.strays.append("/".join(rel))
    taken.removed.add("/".join(rel))


def _remove_links_out(path: Path, top: int, taken: TakenBack) -> None:
    """Remove the run's links (``taken.links``) that lead out of the run folder ``path``
    as resolved, once every folder is the tree's: no link or folder can change under
    the look. By their text, ``p -> .`` made ``p/p/.../../../etc/passwd`` look inside
    (found by the re-review); a link that stays inside stands."""
    root = os.path.realpath(path)
    for rel in taken.links:
        target = os.path.realpath(os.path.join(path, *rel))
        if target == root or target.startswith(root + os.sep):
            continue
        try:
            folder, name = _open_parent(top, rel)
        except OSError:
            continue
        try:
            if stat.S_ISLNK(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode):
                _remove_stray(folder, name, rel, taken)
        except OSError:
            pass
        finally:
            os.close(folder)


def _take_file(
    fd: int,
    st: os.stat_result,
    user: int,
    owner: int,
    group: int,
    taken: TakenBack,
    rel: tuple[str, ...],
) -> None:
    """Take the user's file ``fd`` (``st``: its fstat, ``rel``: its path in the run folder;
    one of the tree's owner in a take-back done again: its mode and ACL alone)."""
    if not (taken.resumed and st.st_uid == owner):
        os.fchown(fd, owner, group)  # the kernel clears setuid and setgid bits with it
        faults.point("take-back-file")  # taken, its mode and ACL not yet
    _set_mode(fd, st.st_mode, stat.S_IMODE(st.st_mode) & ~0o7022, user, taken, rel)


#: the extended attribute that holds a file's access ACL
ACL_XATTR = "system.posix_acl_access"
#: its binary form (the kernel's ``linux/posix_acl_xattr.h``), little-endian: a version,
#: then one (tag, permissions, id) entry each, in the order of their tags
_ACL_HEADER = struct.Struct("<I")
_ACL_ENTRY = struct.Struct("<HHI")
_ACL_VERSION = 2
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_MASK, _ACL_OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_ACL_GROUP = 0x08
_ACL_NO_ID = 0xFFFFFFFF
#: what says that the file system keeps no ACLs (then none is tried again in the walk)
_NO_ACLS = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP})


def acl_entries(data: bytes) -> list[tuple[str, int, int]]:
    """The named entries of an access ACL (the value of :data:`ACL_XATTR`): ("user"
    or "group", permissions, id) each; the owner's, the owning group's, the mask and
    others' are in the mode."""
    named = {_ACL_USER: "user", _ACL_GROUP: "group"}
    return [
        (named[tag], perm, who)
        for tag, perm, who in _ACL_ENTRY.iter_unpack(data[_ACL_HEADER.size :])
        if tag in named
    ]


@functools.lru_cache(maxsize=256)
def acl_bytes(mode: int, user: int, perm: int, group_perm: int) -> bytes:
    """The access ACL, as its extended attribute, of a file of ``mode`` (its owner's and
    others' permissions) whose group (the owning one) has ``group_perm`` and the user
    ``user`` has ``perm``: the mask lets both through, so that an ACL gives the group no
    more than it had. Kept for the next file: a run's files have a few modes."""
    entries = (
        (_ACL_USER_OBJ, (mode >> 6) & 0o7, _ACL_NO_ID),
        (_ACL_USER, perm, user),
        (_ACL_GROUP_OBJ, group_perm, _ACL_NO_ID),
        (_ACL_MASK, group_perm | perm, _ACL_NO_ID),
        (_ACL_OTHER, mode & 0o7, _ACL_NO_ID),
    )
    return _ACL_HEADER.pack(_ACL_VERSION) + b"".join(_ACL_ENTRY.pack(*e) for e in entries)


def _group_perm(fd: int, mode: int) -> int:
    """What the owning group may do with the file ``fd`` once it has ``mode``: the group
    bits of the mode, or, when the file has an ACL already (its user may set one), its
    group entry within them (the group bits are then the ACL's mask). The names of its
    extended attributes are listed first: most files have none, and a listing costs a
    third of a failed read."""
    if ACL_XATTR not in os.listxattr(fd):
        return (mode >> 3) & 0o7
    data = os.getxattr(fd, ACL_XATTR)
    for tag, perm, _ in _ACL_ENTRY.iter_unpack(data[_ACL_HEADER.size :]):
        if tag == _ACL_GROUP_OBJ:
            return perm & (mode >> 3) & 0o7
    return (mode >> 3) & 0o7


def _set_mode(
    fd: int,
    before: int,
    mode: int,
    user: int,
    taken: TakenBack,
    rel: tuple[str, ...],
    *,
    now: int | None = None,
    source: int | None = None,
) -> None:
    """Give the entry ``fd``, taken from ``user`` (``before``: its mode while it was
    theirs), the permissions ``mode``; what the user could read or traverse as its owner
    and would no longer through the group or others' bits gets an ACL entry of theirs
    (``user:<uid>:r--``, ``r-x`` for a folder or a program), never write. Else a file the
    run kept to its user (0600) became the tree owner's 0600, and the user could no
    longer read their own outputs and logs. Others get nothing more: the ACL's mask lets through the
    group's permissions and the user's, and an ACL the user had set is replaced (its
    entries for others go). Entries already open to the group and others, most of them,
    cost nothing more. ``now`` is the entry's mode when not ``before`` (a copy, made
    0600), and ``source`` the file whose ACL a copy's group permissions come from. Where
    no ACL can be set (a file system without them), the entry keeps ``mode`` alone and
    its path goes into ``taken``: it was not for others to read, so it is not opened to
    them instead."""
    now = stat.S_IMODE(before) if now is None else now
    perm = (before >> 6) & 0o5  # what its user could read (r), traverse or run (x)
    if perm & mode & (mode >> 3) != perm:  # the group's and others' bits do not give it all
        if taken.acls:
            try:
                if now & ~mode & 0o7000:
                    os.fchmod(fd, mode)  # an ACL sets the permission bits, not these
                group_perm = _group_perm(fd if source is None else source, mode)
                os.setxattr(fd, ACL_XATTR, acl_bytes(mode, user, perm, group_perm))
                return
            except OSError as exc:
                taken.acls = exc.errno not in _NO_ACLS
                taken.why_private = taken.why_private or exc.strerror or str(exc)
        taken.private.append("/".join(rel) or ".")
    if now != mode:
        os.fchmod(fd, mode)


def _take_back_linked(
    top: int,
    linked: dict[tuple[int, int], list[tuple[str, ...]]],
    user: int,
    owner: int,
    group: int,
    taken: TakenBack,
    forced: set[tuple[str, ...]] | None = None,
) -> None:
    """Take back the files with several names, and those of ``forced`` (always a copy;
    every folder is the tree's by now, so no name can be added or removed here). A file
    all of whose names are in the run folder is taken once, through one descriptor (ten
    links to one big file were ten copies). One with a name elsewhere too, through which
    its user could change it, gets one copy for all its names here (holes kept), while
    the copies of the run stay within :data:`TAKE_BACK_COPY_BYTES`; past that its names
    here are removed (and noted in ``taken``)."""
    budget = TAKE_BACK_COPY_BYTES
    for (dev, ino), paths in sorted(linked.items(), key=lambda item: item[1][0]):
        paths.sort()
        first = paths[0]
        try:
            folder, name = _open_parent(top, first)
        except OSError as exc:
            log.debug("taking back %s: %s", "/".join(first), exc.strerror)
            continue
        try:
            fd = os.open(name, _TAKE_FILE, dir_fd=folder)
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != (dev, ino) or not _theirs(st, user, owner, taken):
                    continue  # changed since the walk
                if st.st_uid != user:  # taken by a take-back cut short: never copied again
                    if st.st_nlink <= len(paths):  # (one with a name outside is not ours)
                        _take_file(fd, st, user, owner, group, taken, first)
                    continue
                if st.st_nlink <= len(paths):  # every name is here
                    # a result file or an input of the post-processing gets a copy of its
                    # own while small: a large one is only taken (found by review: one of
                    # 1.1 GB was removed as over the links' budget, and its copy held the
                    # tick), as is one past the budget
                    small = st.st_blocks * 512 <= min(FRESH_COPY_BYTES, budget)
                    if not (forced and forced.intersection(paths)) or not small:
                        _take_file(fd, st, user, owner, group, taken, first)
                        continue
                try:
                    if st.st_blocks * 512 > budget:
                        raise CopyLimit("over the budget")
                    # the budget bounds the bytes written, whatever the user writes into
                    # it meanwhile through its other name (holes filled: found by review)
                    budget -= _take_back_copy(
                        top, paths, folder, name, fd, st, user, owner, group, budget, taken
                    )
                except CopyLimit:
                    for path in paths:
                        _remove_name(top, path)
                        taken.removed.add("/".join(path))
                    taken.notes.append(
                        f"output {'/'.join(first)} ({st.st_size} bytes) also had a name "
                        "outside the run folder, and a copy of it would pass the "
                        f"{TAKE_BACK_COPY_BYTES} bytes a run's take-back copies: its "
                        f"{len(paths)} name(s) here were removed"
                    )
            finally:
                os.close(fd)
        except OSError as exc:
            log.debug("taking back %s: %s", "/".join(first), exc.strerror)
        finally:
            os.close(folder)


def _open_parent(top: int, path: tuple[str, ...]) -> tuple[int, str]:
    """The folder of ``path`` (inside the folder ``top``, opened without following a
    link) and the name in it; the caller closes the folder."""
    fd = os.dup(top)
    try:
        for part in path[:-1]:
            nxt = os.open(part, _TAKE_DIR | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd, path[-1]


def _remove_name(top: int, path: tuple[str, ...]) -> None:
    try:
        folder, name = _open_parent(top, path)
    except OSError:
        return
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=folder)
    finally:
        os.close(folder)


def _take_back_copy(
    top: int,
    paths: list[tuple[str, ...]],
    folder: int,
    name: str,
    fd: int,
    st: os.stat_result,
    user: int,
    owner: int,
    group: int,
    max_written: int,
    taken: TakenBack,
) -> int:
    """Replace every name of ``paths`` (``paths[0]`` is ``name`` in ``folder``) by one
    copy of ``fd``'s content (``st``: its fstat) owned by ``owner:group``, of at most
    ``max_written`` bytes written (else :class:`CopyLimit`, nothing replaced): the other
    names of the file, outside the run folder, stay as they are. The copy has the
    file's mode without group or other write, and what its user could read they still
    can (:func:`_set_mode`). Returns the bytes written."""
    tmp = f".{name}.{secrets.token_hex(4)}.taken"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    out = os.open(tmp, flags, 0o600, dir_fd=folder)
    try:
        try:
            written = copy_sparse(fd, out, max_written=max_written)
            os.fchown(out, owner, group)
            mode = stat.S_IMODE(st.st_mode) & ~0o7022
            _set_mode(out, st.st_mode, mode, user, taken, paths[0], now=0o600, source=fd)
        finally:
            os.close(out)
        for path in paths[1:]:  # the copy's other names, each renamed over one here
            other, other_name = _open_parent(top, path)
            try:
                link = f".{other_name}.{secrets.token_hex(4)}.taken"
                os.link(tmp, link, src_dir_fd=folder, dst_dir_fd=other)
                faults.point("take-back-copy")  # a name made, not yet in place
                os.rename(link, other_name, src_dir_fd=other, dst_dir_fd=other)
            finally:
                os.close(other)
        faults.point("take-back-copy")  # the copy made, its first name not yet replaced
        os.rename(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=folder)
        raise
    return written


def _hand_over_folder(folder: str, uid: int, gid: int, *, top: bool = False) -> None:
    """One folder of :func:`hand_over`: one listing, and per file its lstat (from the
    listing's entry), a chown and a chmod only when the mode needs one. Links are left
    as they are; the folder is private to the daemon until intake renames it into place."""
    os.chown(folder, uid, gid)
    os.chmod(folder, 0o755)
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_symlink():
                continue
            if entry.is_dir():
                _hand_over_folder(entry.path, uid, gid)
                continue
            if top and entry.name in DAEMON_FILES:
                os.chmod(entry.path, 0o644)  # readable by the user, written only by the daemon
                continue
            os.chown(entry.path, uid, gid)
            mode = entry.stat(follow_symlinks=False).st_mode
            if mode & 0o022:
                os.chmod(entry.path, mode & ~0o022)
