"""The environment a run starts with: what of the daemon's own environment it gets.

The daemon is configured through its environment (``FLOWBATCH_DATABASE=postgresql://...``
in a unit's ``Environment=`` lines, ``PGPASSWORD``, an SSH key's passphrase), so its
environment is never handed to a run wholesale:

- A run of **another user** (a root daemon running a participant's run) gets only the
  harmless variables of :data:`PASSED` (and every ``LC_*``) from the daemon, and the
  user's own ``HOME``, ``USER``, ``LOGNAME`` and ``SHELL`` from the account database
  (:func:`flowbatch.executors.local.run_as`): what a login would give it, nothing that
  says how the daemon reaches its index.
- A run of the **daemon's own user** gets the daemon's environment without flowbatch's
  settings (every ``FLOWBATCH_*`` variable the config or the CLI reads, see
  :func:`flowbatch_setting`) and without the PostgreSQL client's connection variables
  (:data:`LIBPQ`), so that a ``flowbatch`` or ``psql`` command in a run does not act on
  the daemon's site or index by accident. Hiding more would hide nothing: a process of
  the same user reads ``/proc/<daemon>/environ``.

Then come the run's own variables: ``FLOWBATCH_SCRIPT_LOG`` from the local executor,
``FB_*`` and ``FLOWBATCH_RUN_ID`` exported by ``run.sh`` itself. A Slurm job gets the same
environment: the user's ``sbatch`` is started with it, and sbatch's default
``--export=ALL`` hands the job exactly that.

Launches are hot (hundreds a second): each environment is computed once, per account
(uid, home, shell) for other users, and again only when the daemon's own environment
changes (``os.environ`` compared with the copy it was computed from: one dict comparison
in C per launch).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

#: variables another user's run gets from the daemon's environment (and every ``LC_*``):
#: where programs are, the language, the time zone, and where Slurm's config is (its
#: ``sbatch`` runs in this environment)
PASSED = frozenset({"PATH", "LANG", "LANGUAGE", "TZ", "SLURM_CONF"})
PASSED_PREFIX = "LC_"
#: another user's PATH when the daemon has none
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"

#: the PostgreSQL client library's (libpq's) variables: which server, as whom, with which
#: password, certificate or service file. Never in a run, the daemon's own either (every
#: ``PGSSL*`` too).
LIBPQ = frozenset(
    {
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGDATABASE",
        "PGUSER",
        "PGPASSWORD",
        "PGPASSFILE",
        "PGREQUIREAUTH",
        "PGCHANNELBINDING",
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGSYSCONFDIR",
        "PGOPTIONS",
        "PGAPPNAME",
        "PGREQUIRESSL",
        "PGREQUIREPEER",
        "PGGSSENCMODE",
        "PGKRBSRVNAME",
        "PGGSSLIB",
        "PGGSSDELEGATION",
        "PGCONNECT_TIMEOUT",
        "PGCLIENTENCODING",
        "PGTARGETSESSIONATTRS",
        "PGLOADBALANCEHOSTS",
        "PGMINPROTOCOLVERSION",
        "PGMAXPROTOCOLVERSION",
        "PGDATESTYLE",
        "PGTZ",
        "PGGEQO",
        "PGLOCALEDIR",
    }
)
LIBPQ_PREFIX = "PGSSL"

#: distinct accounts remembered at most (then forgotten all at once)
MAX_ACCOUNTS = 10_000


def flowbatch_setting(name: str) -> bool:
    """Whether ``name`` is one of flowbatch's own settings: a ``FLOWBATCH_<KEY>`` config
    override (:mod:`flowbatch.configsrc`) or a variable the CLI or daemon reads
    (``FLOWBATCH_SITE``, ``FLOWBATCH_HOSTNAME``, ``FLOWBATCH_CRASH_AT``). Other
    ``FLOWBATCH_*`` names mean nothing to flowbatch and stay in the daemon's own runs."""
    from .config import SiteConfig
    from .configsrc import NESTING, NOT_CONFIG, PREFIX

    if not name.startswith(PREFIX):
        return False
    if name in NOT_CONFIG:
        return True
    return name[len(PREFIX) :].lower().split(NESTING)[0] in SiteConfig.model_fields


def libpq_variable(name: str) -> bool:
    return name in LIBPQ or name.startswith(LIBPQ_PREFIX)


def own_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """A run of the daemon's own user: ``environ`` without flowbatch's settings and the
    PostgreSQL client's variables."""
    return {
        name: value
        for name, value in environ.items()
        if not (libpq_variable(name) or flowbatch_setting(name))
    }


def passed_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What another user's run gets of ``environ`` (before its account's variables)."""
    env = {
        name: value
        for name, value in environ.items()
        if name in PASSED or name.startswith(PASSED_PREFIX)
    }
    env.setdefault("PATH", DEFAULT_PATH)
    return env


class _Kept:
    """The environments computed from one state of ``os.environ``."""

    def __init__(self, seen: dict[bytes, bytes] | None) -> None:
        self.seen = seen  # a copy of os.environ's data they were computed from
        self.own: dict[str, str] | None = None
        self.others: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}


_LOCK = threading.Lock()
_KEPT = [_Kept(None)]


def for_run(account: Mapping[str, str] | None) -> Mapping[str, str]:
    """The environment of a run before its own variables: the daemon's own user's
    (``account`` None), or another user's with ``account`` (``HOME``, ``USER``, ...: what
    :func:`~flowbatch.executors.local.run_as` gives). Shared: copy it to change it."""
    data = getattr(os.environ, "_data", None)  # CPython's encoded variables
    with _LOCK:
        kept = _KEPT[0]
        if data is None or data != kept.seen:
            kept = _KEPT[0] = _Kept(dict(data) if data is not None else None)
        if account is None:
            if kept.own is None:
                kept.own = own_environment(os.environ)
            return kept.own
        key = tuple(account.items())
        env = kept.others.get(key)
        if env is None:
            if len(kept.others) >= MAX_ACCOUNTS:
                kept.others.clear()
            env = kept.others[key] = {**passed_environment(os.environ), **account}
        return env
