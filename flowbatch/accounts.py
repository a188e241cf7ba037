"""Facts from the system's account database (passwd, groups), remembered for a while.

The daemon asks for a user's name on every request and for a user's groups on every start
of a run as that user. Each lookup goes through NSS: it reads ``/etc/passwd`` and scans
``/etc/group`` (0.17 ms for a start here), or asks LDAP/SSSD on a cluster. A fact is
looked up again once it is :data:`ACCOUNT_TTL` seconds old, so a user added to a group,
or renamed, is seen within that time.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import threading
import time
from collections.abc import Callable, Hashable
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
