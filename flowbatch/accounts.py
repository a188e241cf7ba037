"""Facts from the system's account database (passwd, groups), remembered for a while.

The daemon asks for a user's name on every request and for a user's groups on every start
of a run as that user. Each lookup goes through NSS: it reads ``/etc/passwd`` and scans
``/etc/group`` (0.17 ms for a start here), or asks LDAP/SSSD on a cluster. A fact is
looked up again once it is :data:`ACCOUNT_TTL` seconds old, so a user added to a group,
or renamed, is seen within that time.
"""

from __future__ import annotations

import errno
import functools
import grp
import os
import pwd
import shutil
import stat
import threading
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import NamedTuple, TypeVar

#: seconds a fact looked up stays remembered
ACCOUNT_TTL = 30.0

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


def remembered(fn: Callable[[K], T]) -> Callable[[K], T]:
    """``fn(key)`` looked up at most once every :data:`ACCOUNT_TTL` seconds per key
    (the answer must not be changed by callers: it is shared)."""
    kept: dict[K, tuple[float, T]] = {}
    lock = threading.Lock()

    @functools.wraps(fn)
    def lookup(key: K) -> T:
        now = time.monotonic()
        with lock:
            hit = kept.get(key)
        if hit is not None and now - hit[0] < ACCOUNT_TTL:
            return hit[1]
        value = fn(key)
        with lock:
            kept[key] = (now, value)
        return value

    lookup.forget = kept.clear  # type: ignore[attr-defined]
    return lookup


@remembered
def user_name(uid: int) -> str:
    """The user's login name, ``uid<N>`` for an ID the account database does not know."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


class Identity(NamedTuple):
    """Who a process of the user is: what a login gives it."""

    gid: int
    groups: tuple[int, ...]  # supplementary groups, the primary one included
    name: str | None  # None: a uid the account database does not know
    home: str | None
    shell: str | None = None  # the login shell (``/bin/sh`` where the entry names none)


@remembered
def identity(uid: int) -> Identity:
    """The user's IDs, groups, home and shell (the bare uid as its group for an unknown
    user)."""
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return Identity(uid, (), None, None)
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return Identity(entry.pw_gid, groups, entry.pw_name, entry.pw_dir, entry.pw_shell or "/bin/sh")


def primary_gid(uid: int) -> int:
    """The user's primary group; -1 (no group) for a user the account database does not
    know, so that a check never takes the bare uid for a group."""
    who = identity(uid)
    return who.gid if who.name is not None else -1


class Group(NamedTuple):
    gid: int
    members: frozenset[str]  # listed members (a user's primary group may not list them)


@remembered
def group(name: str) -> Group | None:
    """A group by name, None when there is no such group."""
    try:
        info = grp.getgrnam(name)
    except KeyError:
        return None
    return Group(info.gr_gid, frozenset(info.gr_mem))


def in_group(uid: int, name: str) -> bool:
    """Whether the user ``uid`` belongs to the group ``name`` (as its primary group or
    as a listed member)."""
    info = group(name)
    return info is not None and (info.gid == primary_gid(uid) or user_name(uid) in info.members)


def other_writers(fd: int, st: os.stat_result, *, links: bool = True) -> str | None:
    """Why a user other than its owner could have written the file open as ``fd``
    (``st``: its fstat; what to say after "the file"), or None.

    A run is made as its request file's owner and uses its input files as theirs, so
    their content must be the owner's: not writable by others nor by a group (an ACL's
    named users and groups show in the group bits, as its mask), except the owner's
    user-private group (:func:`_private_group`, which a umask of 002 makes writable on
    many clusters). ``links``: no other name either (a request hard-linked into the queue
    from a file its dropper may write but does not own; not asked of inputs, nor of a
    claim of the daemon's own user found after a crash, which intake may have linked
    into a run folder already)."""
    if links and st.st_nlink != 1:
        return f"has {st.st_nlink} names (hard links), and other names reach the same file"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o002:
        return f"is writable by every user (mode {mode:04o})"
    if mode & 0o020 and not _private_group(fd, st):
        try:
            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = str(st.st_gid)
        return f"is writable by the group {group} (mode {mode:04o}, or an ACL)"
    return None


def _private_group(fd: int, st: os.stat_result) -> bool:
    """Whether the file's group is its owner's alone (named as the user, no other
    member listed, nobody else's primary group) and no ACL gives anyone else a say
    (then the group bits are the ACL's mask)."""
    try:
        os.getxattr(fd, "system.posix_acl_access")
        return False
    except OSError as exc:
        if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
    owner = identity(st.st_uid)
    if owner.name is None or st.st_gid != owner.gid:
        return False
    try:
        group = grp.getgrgid(st.st_gid)
    except KeyError:
        return False
    return (
        group.gr_name == owner.name
        and set(group.gr_mem) <= {owner.name}
        and primary_members(st.st_gid) <= {owner.name}
    )


def primary_members(gid: int) -> frozenset[str]:
    """The users whose primary group is ``gid`` (the group's member list leaves them
    out), as far as the account database lists its users (``getpwall``: a directory
    that does not enumerate, such as SSSD by default, lists its local users only)."""
    return _primary_groups(None).get(gid, frozenset())


@remembered
def _primary_groups(_: None) -> dict[int, frozenset[str]]:
    """gid -> the users whose primary group it is: one ``getpwall`` every ACCOUNT_TTL."""
    groups: dict[int, set[str]] = {}
    for entry in pwd.getpwall():
        groups.setdefault(entry.pw_gid, set()).add(entry.pw_name)
    return {gid: frozenset(names) for gid, names in groups.items()}


def closed_to_others(python: str) -> str | None:
    """Why a user other than the daemon's could not run ``python`` (a path, or a name
    looked up on PATH), or None: a folder on the way, or the file, without the execute
    bit for others (a virtual environment under /root, 0700, is the usual case). The
    link a virtual environment's ``python`` is, and its target, are both checked."""
    found = python if os.path.isabs(python) else shutil.which(python)
    if found is None:
        return f"{python}, which is not on PATH"
    for path in dict.fromkeys((Path(found), Path(os.path.realpath(found)))):
        for folder in reversed(path.parents):
            try:
                mode = folder.stat().st_mode
            except OSError as exc:
                return f"{found}: {folder} cannot be looked at ({exc.strerror})"
            if not mode & 0o001:
                return f"{found}: {folder} is closed to other users (mode {mode & 0o777:o})"
        try:
            if not path.stat().st_mode & 0o001:
                return f"{found}: {path} is not executable by other users"
        except OSError as exc:
            return f"{found}: {exc.strerror}"
    return None
