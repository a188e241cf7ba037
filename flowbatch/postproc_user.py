"""Who a root daemon runs post-processing as: never root.

A post-processing script is the organiser's, but what it reads is not: the staged result
files of every ranked run, written by participants, who may shape them to attack the
parser that reads them. Run as root, a script that trusted them could hand a participant
the machine. So a root daemon runs it as an unprivileged user, like each participant's
own run:

- the user that ``postproc_user:`` in ``flowbatch.yaml`` names, when it does;
- else ``nobody``. It works out of the box where the runs of other users do (the site
  must be reachable by users other than root for them too), and ``nobody`` owns nothing
  of the site; but it is shared with other services, whose processes and
  post-processing's could signal each other, so the daemon's log and ``flowbatch
  doctor`` warn and name the setting. Refusing to post-process there was the other
  choice: safe too, but every leaderboard of a fresh site would show a failure until an
  admin acted.

Whoever it is must not be able to write the workflow's ``postproc/`` folder, nor a
folder on the way to it from the site's (:func:`writable_on_the_way`): the daemon, as
root, makes the post-processing's folder there, hands it over, takes it back, and
trusts a record there by its owner. A user who could write there could swap those
folders for links root then writes through, or put a record of theirs where the daemon
reads its own. The daemon refuses to start post-processing as such a user (its log says
which folder and what to do; ``flowbatch doctor`` fails). The site's owner, who owns the
whole results tree, is such a user: it was the default after ``postproc_user`` until a
review found that, and is no longer (a site that names it is refused).

A daemon that is not root runs post-processing as itself, as it runs everything.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from .accounts import identity, user_name
from .config import CONFIG_NAME, SiteConfig
from .errors import ConfigError

#: who a root daemon's post-processing runs as when the site names no one
FALLBACK_USER = "nobody"

#: where the user came from, as :class:`PostProcUser` says it
CONFIGURED, FALLBACK = "postproc_user", "fallback"


@dataclass(frozen=True)
class PostProcUser:
    """The user post-processing runs as under a root daemon, and why that one."""

    uid: int
    name: str
    source: str  # CONFIGURED or FALLBACK

    def describe(self) -> str:
        """``fbpost (uid 1001, postproc_user)`` and the like, for logs and doctor."""
        why = {
            CONFIGURED: "postproc_user in flowbatch.yaml",
            FALLBACK: "flowbatch.yaml names no postproc_user",
        }[self.source]
        return f"{self.name} (uid {self.uid}, {why})"


def postproc_user(root: Path, config: SiteConfig) -> PostProcUser:
    """The user a root daemon runs the post-processing of the site at ``root`` as (see
    the module docstring); raises :class:`ConfigError` when there is none it may use."""
    name = config.postproc_user
    if name is not None:
        entry = _entry(name, root, configured=True)
        return PostProcUser(entry.pw_uid, entry.pw_name, CONFIGURED)
    entry = _entry(FALLBACK_USER, root, configured=False)
    return PostProcUser(entry.pw_uid, entry.pw_name, FALLBACK)


def _entry(name: str, root: Path, *, configured: bool) -> pwd.struct_passwd:
    """The account ``name`` (``configured``: the one ``postproc_user`` names), refused
    when it is unknown or has root's user ID."""
    file = str(root / CONFIG_NAME)
    hint = (
        "create it (useradd --system --no-create-home NAME) or name another user in "
        "flowbatch.yaml: postproc_user: NAME"
    )
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if not configured:  # the fallback itself is missing
            raise ConfigError(
                f"post-processing would run as {name!r} (flowbatch.yaml names no "
                "postproc_user), but this host has no such user",
                file=file,
                field="postproc_user",
                expected="an unprivileged user of this host",
                hint=hint.replace("NAME", "fbpost"),
            ) from None
        raise ConfigError(
            f"no user {name!r} on this host to run post-processing as",
            file=file,
            field="postproc_user",
            expected="an unprivileged user of this host",
            hint=hint.replace("NAME", name, 1).replace("NAME", "OTHER"),
        ) from None
    if entry.pw_uid == 0:
        raise ConfigError(
            f"user {name!r} has root's user ID: post-processing never runs as root (it "
            "reads participants' files)",
            file=file,
            field="postproc_user",
            expected="an unprivileged user of this host",
            hint="name a user of its own in flowbatch.yaml: postproc_user: fbpost",
        )
    return entry


def postproc_uid(root: Path, config: SiteConfig) -> int | None:
    """The user ID post-processing is launched as: :func:`postproc_user`'s under a root
    daemon, None (the daemon's own) under any other."""
    if os.geteuid() != 0:
        return None
    return postproc_user(root, config).uid


def writable_on_the_way(site: Path, folder: Path, uid: int) -> str | None:
    """What lets the user ``uid`` change ``folder`` (a workflow's ``postproc/``) or a
    folder on the way to it from the site folder ``site`` (both included), said as
    ``<folder> <why>``; None when nothing does. Such a user could rename ``folder`` or
    what is in it and put a folder or a link of theirs in its place, where a root
    daemon makes, hands over, takes back and reads the post-processing's folders (the
    module docstring). ``folder`` itself must not be writable by them at all; a folder
    on the way may be, for all users, with the sticky bit (``/tmp``-like: they cannot
    rename what is not theirs there, and the next folder down is looked at in turn).
    Folders not made yet are skipped: the daemon makes them the site owner's or its
    own. An access ACL's entries for the user or a group of theirs count where its
    mask (the group bits) lets them write (found by review: ``setfacl -m
    u:nobody:rwx postproc`` went unseen, the folder's group being no group of
    nobody's)."""
    who = identity(uid)
    here = folder
    while True:
        try:
            st: os.stat_result | None = os.stat(here)
        except FileNotFoundError:
            st = None
        if st is not None:
            mode = stat.S_IMODE(st.st_mode)
            sticky = here != folder and bool(mode & stat.S_ISVTX)
            why = None
            if st.st_uid == uid:
                why = f"belongs to {user_name(uid)}"
            elif mode & 0o002 and not sticky:
                why = f"is writable by every user (mode {mode:04o})"
            elif mode & 0o020 and not sticky and st.st_gid in (who.gid, *who.groups):
                why = f"is writable by a group of {user_name(uid)}'s (mode {mode:04o})"
            elif mode & 0o020 and not sticky:
                why = _acl_lets_write(here, uid, (who.gid, *who.groups))
            if why is not None:
                return f"{here} {why}"
        if here == site or here == here.parent:
            return None
        here = here.parent


def _acl_lets_write(folder: Path, uid: int, groups: tuple[int, ...]) -> str | None:
    """Why the access ACL of ``folder``, whose mask lets a named entry write, lets the
    user ``uid`` (in ``groups``) write there: an entry of theirs or of one of their
    groups that has write. None without such an entry (or an ACL)."""
    from .takeback import ACL_XATTR, acl_entries  # the ACL's binary form is read there

    try:
        data = os.getxattr(folder, ACL_XATTR)
    except OSError:
        return None  # none (ENODATA), or a file system without ACLs
    for tag, perm, who in acl_entries(data):
        if not perm & 0o2:
            continue
        if tag == "user" and who == uid:
            return f"has an ACL entry that lets {user_name(uid)} write (getfacl {folder})"
        if tag == "group" and who in groups:
            return (
                f"has an ACL entry that lets a group of {user_name(uid)}'s write (getfacl {folder})"
            )
    return None


def refuse_writable(site: Path, folder: Path, uid: int, who: str) -> None:
    """Raise :class:`ConfigError` when post-processing as the user ``uid`` (``who``
    describes them) could change ``folder`` (a workflow's ``postproc/``:
    :func:`writable_on_the_way`), naming the folder and what to do."""
    why = writable_on_the_way(site, folder, uid)
    if why is None:
        return
    raise ConfigError(
        f"post-processing would run as {who}, but {why}: that user could swap "
        "the post-processing's folders for links the daemon writes through as root, or put "
        "a record of theirs where the daemon reads its own",
        file=str(site / CONFIG_NAME),
        field="postproc_user",
        expected="a user who cannot write the post-processing's folder nor one above it",
        hint="name a user of its own that owns nothing of the site in flowbatch.yaml "
        "(postproc_user: NAME; useradd --system --no-create-home NAME makes one), or give "
        "the folder back to the site's owner without group or other write (chown OWNER "
        "FOLDER; chmod go-w FOLDER)",
    )
