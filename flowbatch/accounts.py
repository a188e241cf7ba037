"""Facts from the system's account database (passwd, groups), remembered for a while.

The daemon asks for a user's name on every request and for a user's groups on every start
of a run as that user. Each lookup goes through NSS: it reads ``/etc/passwd`` and scans
``/etc/group`` (0.17 ms for a start here), or asks LDAP/SSSD on a cluster. A fact is
looked up again once it is :data:`ACCOUNT_TTL` seconds old, so a user added to a group,
or renamed, is seen within that time.
"""

from __future__ import annotations

import functools
import os
import pwd
import threading
import time
from collections.abc import Callable
from typing import NamedTuple, TypeVar

#: seconds a fact looked up stays remembered
ACCOUNT_TTL = 30.0

T = TypeVar("T")


def remembered(fn: Callable[[int], T]) -> Callable[[int], T]:
    """``fn(uid)`` looked up at most once every :data:`ACCOUNT_TTL` seconds per uid
    (the answer must not be changed by callers: it is shared)."""
    kept: dict[int, tuple[float, T]] = {}
    lock = threading.Lock()

    @functools.wraps(fn)
    def lookup(uid: int) -> T:
        now = time.monotonic()
        with lock:
            hit = kept.get(uid)
        if hit is not None and now - hit[0] < ACCOUNT_TTL:
            return hit[1]
        value = fn(uid)
        with lock:
            kept[uid] = (now, value)
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

    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups, the primary one included
    name: str | None  # None: a uid the account database does not know
    home: str | None


@remembered
def identity(uid: int) -> Identity:
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return Identity(uid, uid, (), None, None)
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return Identity(uid, entry.pw_gid, groups, entry.pw_name, entry.pw_dir)
