"""The site configuration, ``<site>/flowbatch.yaml``, validated with pydantic."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from . import durations, yamlio
from .fairshare import LimitsConfig
from .slurm_profile import SlurmProfile, check_profiles, profiles_by_executor
from .ssh_hosts import SSHHost, check_hosts
from .text import short_repr

CONFIG_NAME = "flowbatch.yaml"


def parse_duration(value: Any) -> float | None:
    """Seconds from ``90``, ``'90s'``, ``'10m'``, ``'2h'``, ``'1d'``, ``'1:30:00'`` or
    ``'1-12:00:00'`` (:mod:`flowbatch.durations`)."""
    if value is None:
        return None
    try:
        return durations.seconds(value)
    except durations.DurationError as exc:
        raise ValueError(f"not a duration {short_repr(value, 40)}: {exc}") from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LocalConfig(_Strict):
    concurrency: int | None = Field(
        default=None, ge=1, description="Runs at once on this host (default: number of cores)."
    )

    def effective_concurrency(self) -> int:
        return self.concurrency or os.cpu_count() or 1


class PollingConfig(_Strict):
    interval: float = Field(
        default=2.0,
        gt=0,
        description="Seconds between ticks when nothing wakes the daemon: the queue rescan "
        "(shared file systems deliver no inotify events from other nodes) and batched polls.",
    )
    settle: float = Field(
        default=0.5,
        ge=0,
        description="A request found by rescanning is read once its size and mtime have not "
        "changed for this many seconds (the daemon looks again after this long, not a whole "
        "interval later).",
    )


#: rows of the leaderboard's all-runs view unless the site says otherwise
ALL_RUNS_SHOWN = 2000


class ReportsConfig(_Strict):
    all_runs_shown: int = Field(
        default=ALL_RUNS_SHOWN,
        ge=1,
        le=1_000_000,
        description='Rows of the leaderboard\'s "All runs" view (page and '
        "leaderboard.json): the best this many runs; `flowbatch ranking WF --all --json` "
        "lists every run. Each row adds about 1 KB to both files.",
    )


#: the largest file argument a request may bring, by default (1 GiB)
MAX_INPUT_BYTES = 1 << 30

#: the URL schemes of the index databases flowbatch supports (peewee's playhouse names)
DATABASE_SCHEMES = ("sqlite", "postgres", "postgresql", "postgresext", "psycopg3")


def check_database_url(url: str) -> str:
    """``url`` when it is an SQLite or PostgreSQL URL with what that needs; else raise."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    if scheme not in DATABASE_SCHEMES:
        raise PydanticCustomError(
            "database_url",
            "not an index database URL flowbatch supports: expected sqlite:////ABSOLUTE/PATH, "
            "sqlite:///PATH (relative to the site folder) or postgresql://USER@HOST:PORT/DB",
        )
    if scheme != "sqlite" and not parts.path.strip("/"):
        raise PydanticCustomError(
            "database_url",
            "a PostgreSQL URL needs its database's name: postgresql://USER@HOST:PORT/DB",
        )
    return url


def resolve_sqlite_url(url: str, site: Path) -> str:
    """``url`` with a relative SQLite path made absolute against the site folder ``site``.

    ``sqlite:///index.db`` names a path relative to something, and SQLite takes it
    relative to the process's current folder: a daemon that systemd starts in ``/``
    opened ``/index.db``, a command run from the user's home another file again, each an
    empty index beside the same tree. The only folder every process of a site agrees on
    is the site's own (where ``flowbatch.yaml`` is), so the path is taken from there.
    Any other URL (a server's, an absolute path, ``:memory:``, an SQLite ``file:`` URI)
    comes back as it is; the text of the path is kept as written (SQLite opens it
    undecoded, so no %-escape is decoded here either)."""
    from urllib.parse import urlsplit

    if not urlsplit(url).scheme.startswith("sqlite"):  # urlsplit lowers the scheme
        return url
    scheme, _, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    end = min((i for i in (tail.find("?"), tail.find("#")) if i >= 0), default=len(tail))
    path, options = tail[:end], tail[end:]
    if not slash or not path or path.startswith(("/", "file:")) or path == ":memory:":
        return url
    absolute = os.path.normpath(site.resolve() / path)
    return f"{scheme}://{netloc}/{absolute}{options}"


class SiteConfig(_Strict):
    """``flowbatch.yaml``: one flowbatch site."""

    site_name: str | None = Field(default=None, description="Default: the site folder's name.")
    database: str | None = Field(
        default=None,
        description="Index database URL (default: SQLite at <site>/index.db). "
        "e.g. sqlite:////abs/index.db, sqlite:///data/index.db (a relative path is taken "
        "from the site folder, never the current one) or postgresql://user@host/db",
    )
    executor: str = Field(default="local", description="Executor used when none is asked for.")
    local: LocalConfig = Field(default_factory=LocalConfig)
    time_limit: float | None = Field(
        default=None, description="Default time limit of a run (seconds, or '90s', '10m', '2h')."
    )
    variables: dict[str, str] = Field(
        default_factory=dict,
        description="Trusted ${name} variables for flowServ templates (e.g. java: /usr/bin/java).",
    )
    polling: PollingConfig = Field(default_factory=PollingConfig)
    slurm: dict[str, SlurmProfile] = Field(
        default_factory=dict,
        description="Slurm profiles by name: `executor: slurm` uses `default` (built-in "
        "defaults when absent), `executor: slurm:<name>` the others.",
    )
    ssh: dict[str, SSHHost] = Field(
        default_factory=dict,
        description="SSH hosts by name (each is an executor: `executor: <name>`); "
        "see flowbatch.ssh_hosts.",
    )
    max_request_bytes: int = Field(default=yamlio.MAX_REQUEST_BYTES, ge=1024)
    max_input_bytes: int = Field(
        default=MAX_INPUT_BYTES,
        ge=1,
        description="File arguments larger than this are rejected: the daemon copies each "
        "into the run's folder (a root daemon as root, beyond the user's quota) while it "
        "takes the request in. Large data belongs in a shared path the template names.",
    )
    allowed_users: list[str] | None = Field(
        default=None,
        description="User names whose requests are accepted. Default: everyone when the "
        "daemon runs as root (each run then runs as its owner), else only the daemon's own "
        "user (a service user runs everything as itself).",
    )
    allowed_groups: list[str] | None = Field(
        default=None, description="Unix groups whose members' requests are accepted."
    )
    root_requests: bool = Field(
        default=False,
        description="A root daemon takes requests owned by root from a queue that other "
        "users may write too. Off by default: a user could move a file of root's (a run's "
        "kept request.yaml, in a folder handed to them) into the queue, and have it run as "
        "root. Requests of root are always taken from a queue only root may write.",
    )
    group_policy: Literal["members", "open"] = Field(
        default="members",
        description="Which `group:` a request may name. members: the submitting user's own "
        "name, a Unix group the user belongs to, or a team of `teams` that lists the user "
        "(root: any); open: any label (a leaderboard where groups are just names).",
    )
    teams: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Leaderboard groups and their members (user names), for group_policy "
        "members: e.g. {team-x: [alice, bob]}.",
    )
    reports: ReportsConfig = Field(
        default_factory=ReportsConfig,
        description="The static report files: all_runs_shown (rows of the all-runs view).",
    )
    postproc_user: str | None = Field(
        default=None,
        description="The user a root daemon runs post-processing as (it reads every "
        "ranked run's files, written by participants): never root, nor a user who can "
        "write the workflow's postproc/ folder or one above it (the site's owner, for "
        "one). Default: `nobody` (with a warning: `nobody` is shared with other "
        "services). A daemon of another user runs it as itself.",
    )
    limits: LimitsConfig = Field(
        default_factory=LimitsConfig,
        description="Fair shares: caps on launched runs (running, or queued in Slurm) per "
        "user and per group (per_user, per_group, users: {name: N}, groups: {name: N}), "
        "besides each executor's own limit.",
    )

    @field_validator("slurm")
    @classmethod
    def _slurm_profiles(cls, value: dict[str, SlurmProfile]) -> dict[str, SlurmProfile]:
        return check_profiles(value)

    @field_validator("ssh")
    @classmethod
    def _ssh_hosts(cls, value: dict[str, SSHHost]) -> dict[str, SSHHost]:
        check_hosts(value, reserved={"local", "slurm"})
        return value

    @field_validator("time_limit", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float | None:
        return parse_duration(value)

    @field_validator("postproc_user")
    @classmethod
    def _postproc_user(cls, value: str | None) -> str | None:
        """A login name, never root's: post-processing parses participants' files."""
        if value is None:
            return None
        if value == "root":
            raise PydanticCustomError(
                "postproc_user",
                "post-processing never runs as root (it reads participants' files): name "
                "an unprivileged user of its own, or leave it out (nobody)",
            )
        if not value or value.startswith("-") or any(c in value for c in "/:\\ \t\n"):
            raise PydanticCustomError("postproc_user", "expected a user name (e.g. fbpost)")
        if value.isdecimal():
            raise PydanticCustomError(
                "postproc_user",
                "expected a user name (e.g. fbpost), not a user ID: name the user",
            )
        return value

    @field_validator("database")
    @classmethod
    def _database(cls, value: str | None) -> str | None:
        """An index URL flowbatch can use, said when the config is read (it was said at
        the first query, as the database library's own error)."""
        return None if value is None else check_database_url(value)

    @model_validator(mode="after")
    def _known_executor(self) -> SiteConfig:
        """``executor`` must name one of this config's executors: a wrong name would
        have every request that asks for none rejected at intake."""
        names = self.executor_names()
        if self.executor not in names:
            # raised with its key: a model's own error has no place (`executor: ...` is
            # where the fix goes); the config's loader names the file and the key
            error = PydanticCustomError(
                "unknown_executor",
                "not an executor of this site (one of: {names})",
                {"names": ", ".join(names)},
            )
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [InitErrorDetails(type=error, loc=("executor",), input=self.executor)],
            )
        return self

    def executor_names(self) -> list[str]:
        """Every executor name a template or request may ask for under this config:
        ``local``, ``slurm`` and ``slurm:<profile>``, the ssh hosts. What
        :func:`flowbatch.executors.executor_names` says, computed from the config's own
        fields (the executors package imports this module)."""
        return ["local", *profiles_by_executor(self.slurm), *self.ssh]

    def all_variables(self) -> dict[str, str]:
        """Site variables plus the built-in ``${python}`` (the daemon's interpreter)."""
        return {"python": sys.executable, **self.variables}

    def variables_for(self, executor: str) -> dict[str, str]:
        """The ``${name}`` values of a run on ``executor``: on an SSH host, ``python3``
        for ``${python}`` (the daemon's interpreter path means nothing there), the site's
        variables, then the host's own; elsewhere :meth:`all_variables`."""
        host = self.ssh.get(executor)
        if host is None:
            return self.all_variables()
        return {"python": "python3", **self.variables, **host.variables}

    def known_variables(self) -> dict[str, str]:
        """Every variable some executor defines: what an installed template may use."""
        hosts = {k: v for host in self.ssh.values() for k, v in host.variables.items()}
        return {**hosts, **self.all_variables()}


def load_config(site: Path) -> SiteConfig:
    """Read ``<site>/flowbatch.yaml`` (missing: the defaults) with ``FLOWBATCH_*`` overrides.

    Errors name the key, what was expected, and the file or variable to fix
    (see :mod:`flowbatch.configsrc`).
    """
    from .configsrc import load  # imports this module: resolved at call time

    return load(site).config


DEFAULT_CONFIG_TEXT = """\
# flowbatch site configuration. Every key is optional; shown here with its default.
#
# database: null          # index URL; default SQLite at <site>/index.db; a relative
#                         #   sqlite:///data/index.db is taken from the site folder
# executor: local         # executor used when a template or request names none
# local:
#   concurrency: null     # runs at once on this host; default: number of cores
# time_limit: null        # default time limit of a run: seconds, or '90s', '10m', '2h'
# variables: {}           # trusted ${name} variables for flowServ templates
#                         #   e.g. java: /usr/bin/java
# polling:
#   interval: 2.0         # seconds between ticks when nothing wakes the daemon (queue rescan)
#   settle: 0.5           # a request found by rescanning is read once unchanged this long
# max_request_bytes: 1048576   # requests larger than this are rejected
# max_input_bytes: 1073741824  # file arguments larger than this are rejected (1 GiB)
# allowed_users: null     # who may submit (default: all when root, else the daemon's user)
# allowed_groups: null
# root_requests: false    # a root daemon takes root's requests from a queue others may
#                         #   write too (off: a user could move a file of root's into it)
# group_policy: members   # `group:` = own name, own Unix group or a team below; or: open
# teams: {}               # e.g. team-x: [alice, bob]
# postproc_user: null    # a root daemon's post-processing runs as this user (never root);
#                         #   default: the site's owner, or nobody on a site of root's
# limits:                # fair shares: launched runs at once (running or in Slurm's queue)
#   per_user: null        # cap of every user; users: {alice: 8} overrides it per user
#   per_group: null       # cap of every group; groups: {teamx: 2} overrides it
# slurm:                  # Slurm profiles: `executor: slurm` = default, `slurm:<name>`
#   default:
#     partition: null     # --partition; also account, qos
#     time: null          # default --time ('30m', '2h', '1-00:00:00'); cpus, mem ('4G'), gpus
#     extra: []           # more #SBATCH options, e.g. ['--exclusive']
#     modules: []         # `module load` these first
#     via: local          # or an ssh host name: run sbatch/squeue on that login node
#     poll: {floor: 2.0, ceiling: 60.0}   # seconds between squeue calls (adaptive)
#     failures: 5         # failed squeue calls in a row tolerated (runs wait)...
#     unreachable_grace: 5m   # ...and this long, before the runs are given up
#     max_array_size: 1000
# ssh:                    # SSH hosts; each name is an executor (`executor: login1`)
#   login1:
#     hostname: login1.example.org
#     port: 22
#     user: null          # default: the daemon's user (required when that is root)
#     key_file: null      # private key; default: the SSH agent (no passwords)
#     known_hosts: ~/.ssh/known_hosts   # the host key must be there (strict)
#     remote_root: flowbatch-runs       # under the remote home unless absolute
#     max_runs: 4
#     jump_host: null     # another host of this section to go through
#     keep_remote: false  # keep the remote run folder after collecting it
#     max_fetch_bytes: 10737418240   # a run's files fetched back at most (10 GiB); the
#                         #   rest is left there, the remote folder kept
#     connect_timeout: 10s
#     unreachable_grace: 5m             # then the host's runs become ERROR
"""
