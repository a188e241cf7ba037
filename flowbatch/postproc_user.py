"""Who a root daemon runs post-processing as: never root.

A post-processing script is the organiser's, but what it reads is not: the staged result
files of every ranked run, written by participants, who may shape them to attack the
parser that reads them. Run as root, a script that trusted them could hand a participant
the machine. So a root daemon runs it as an unprivileged user, like each participant's
own run:

- the user that ``postproc_user:`` in ``flowbatch.yaml`` names, when it does;
- else the site's owner (the owner of the site folder: the service user the site stays
  with when root runs the daemon, docs/admins.md), when that is not root;
- else, on a site of root's, ``nobody``. It works out of the box where the runs of
  other users do (the site must be reachable by users other than root for them too),
  and ``nobody`` owns nothing of the site; but it is shared with other services, whose
  processes and post-processing's could signal each other, so the daemon's log and
  ``flowbatch doctor`` warn and name the setting. Refusing to post-process there was
  the other choice: safe too, but every leaderboard of a fresh root site would show a
  failure until an admin acted.

A daemon that is not root runs post-processing as itself, as it runs everything.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from .config import CONFIG_NAME, SiteConfig
from .errors import ConfigError

#: who a root daemon's post-processing runs as on a site of root's with no setting
FALLBACK_USER = "nobody"

#: where the user came from, as :class:`PostProcUser` says it
CONFIGURED, SITE_OWNER, FALLBACK = "postproc_user", "site owner", "fallback"


@dataclass(frozen=True)
class PostProcUser:
    """The user post-processing runs as under a root daemon, and why that one."""

    uid: int
    name: str
    source: str  # CONFIGURED, SITE_OWNER or FALLBACK

    def describe(self) -> str:
        """``fbpost (uid 1001, postproc_user)`` and the like, for logs and doctor."""
        why = {
            CONFIGURED: "postproc_user in flowbatch.yaml",
            SITE_OWNER: "the site's owner",
            FALLBACK: "the site is root's and flowbatch.yaml names no postproc_user",
        }[self.source]
        return f"{self.name} (uid {self.uid}, {why})"


def postproc_user(root: Path, config: SiteConfig) -> PostProcUser:
    """The user a root daemon runs the post-processing of the site at ``root`` as (see
    the module docstring); raises :class:`ConfigError` when there is none it may use."""
    name = config.postproc_user
    if name is not None:
        entry = _entry(name, root, configured=True)
        return PostProcUser(entry.pw_uid, entry.pw_name, CONFIGURED)
    owner = root.stat().st_uid
    if owner != 0:
        try:
            return PostProcUser(owner, pwd.getpwuid(owner).pw_name, SITE_OWNER)
        except KeyError:  # a uid of no account (a site copied from elsewhere): still not root
            return PostProcUser(owner, f"uid{owner}", SITE_OWNER)
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
                f"post-processing would run as {name!r} (the site is root's and names no "
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
