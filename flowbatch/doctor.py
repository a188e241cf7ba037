"""``flowbatch doctor``: what is wrong with this site, before a participant finds out.

Each check looks at one thing and reports ``ok``, ``warn`` (works, but worth a look),
``fail`` (something will not work: the command exits non-zero) or ``skip`` (nothing to
check, or a check that an earlier failure makes meaningless). Checks only look: the
index is not migrated or created, the lock is not taken, nothing is written except a
probe file in each folder that must be writable.

Executors are checked through an optional ``check()`` method on the executor object
(:mod:`flowbatch.executors`): it returns a short detail text (or None) when the backend is
usable and raises an exception whose text says what is wrong otherwise (an SSH host key
missing, a remote root not writable, Slurm commands not answering). Executors without it
are reported as configured but unchecked.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import peewee as pw

from .accounts import closed_to_others, user_name
from .config import SiteConfig
from .errors import FlowbatchError

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"


@dataclass
class Check:
    name: str
    status: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "detail": self.detail}


@dataclass
class _Ctx:
    """What the checks share: the site folder, and its config once it has been read."""

    root: Path
    config: SiteConfig | None = None
    #: ``database`` as given (a relative SQLite path before it was resolved)
    database_written: str | None = None
    results: list[Check] = field(default_factory=list)

    def add(self, name: str, status: str, detail: str) -> None:
        self.results.append(Check(name, status, detail))


def diagnose(root: Path) -> list[Check]:
    """Run every check on the site at ``root``; never raises for a site problem."""
    ctx = _Ctx(root.resolve())
    for check in CHECKS:
        try:
            check(ctx)
        except Exception as exc:  # a check that crashes is a finding, not a traceback
            ctx.add(check.__name__.removeprefix("_check_"), FAIL, _describe(exc))
    return ctx.results


def failed(checks: list[Check]) -> bool:
    return any(c.status == FAIL for c in checks)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FlowbatchError):
        return exc.summary()
    return f"{type(exc).__name__}: {exc}"


# -- the checks, in the order they are shown ---------------------------------------------------


def _check_config(ctx: _Ctx) -> None:
    from .configsrc import load

    if not ctx.root.is_dir():
        ctx.add("config", FAIL, f"no site folder at {ctx.root} (create one: flowbatch init)")
        return
    try:
        loaded = load(ctx.root)
    except FlowbatchError as exc:
        ctx.add("config", FAIL, exc.summary())
        return
    ctx.config = loaded.config
    ctx.database_written = loaded.database_written
    where = "flowbatch.yaml" if loaded.file.exists() else "defaults (no flowbatch.yaml)"
    env = f", {len(loaded.env)} FLOWBATCH_* override(s)" if loaded.env else ""
    ctx.add("config", OK, f"valid: {where}{env}")
    for var in loaded.ignored:
        ctx.add("config", WARN, f"{var} is not a config key and is ignored (a typo?)")


def _check_folders(ctx: _Ctx) -> None:
    """The daemon's user (and root) must be able to write the three folders. Anyone
    else running doctor is a participant: they need to write ``queue/`` (to drop or
    submit requests) and to read ``results/`` and ``templates/``, which only the daemon
    writes: a probe there would say "fail" for a site that works."""
    owner = _daemon_user(ctx.root)
    me = os.geteuid()
    for name in ("queue", "results", "templates"):
        folder = ctx.root / name
        if me in (0, owner) or owner is None:
            ctx.add(f"{name}/", *_writable(folder))
        elif name == "queue":
            status, detail = _writable(folder)
            if status == FAIL and folder.is_dir():
                detail += (
                    f"; you ({user_name(me)}) cannot queue requests on this site: ask its "
                    f"admin ({user_name(owner)}, the daemon's user) to let you write "
                    f"queue/, e.g. through a group of participants: chgrp GROUP {folder} "
                    f"&& chmod 1770 {folder}"
                )
            ctx.add(f"{name}/", status, detail)
        else:
            ctx.add(f"{name}/", *_readable(folder, owner))
    ctx.add("queue/ safety", *_queue_safety(ctx))


def _daemon_user(root: Path) -> int | None:
    """The site's daemon user: the owner of ``results/`` (else of the site folder)."""
    for folder in (root / "results", root):
        try:
            return folder.stat().st_uid
        except OSError:
            continue
    return None


def _readable(folder: Path, owner: int) -> tuple[str, str]:
    """A folder only the daemon's user writes, as a participant needs it: readable."""
    if not folder.is_dir():
        return FAIL, f"{folder} is missing (the site's admin runs: flowbatch init)"
    if not os.access(folder, os.R_OK | os.X_OK):
        return (
            WARN,
            f"{folder} is not readable by you ({user_name(os.geteuid())}): you cannot see "
            "results or templates here (the site's admin decides who may)",
        )
    return OK, f"{folder} readable (written by the daemon's user {user_name(owner)})"


def _queue_safety(ctx: _Ctx) -> tuple[str, str]:
    """Whether a participant could replace the daemon's folders in ``queue/``: the
    daemon's own check (:func:`flowbatch.queue.check_queue`), for the daemon's user
    whoever runs doctor. That is the owner of ``results/``, or root: a root daemon
    serving a service user's site (docs/admins.md) has the queue's folders root's, which
    the service user's daemon would refuse, and the other way round (found by review:
    doctor failed the very setup the docs describe, telling root to give the folders to
    the service user, after which the root daemon took no request in)."""
    from .errors import FlowbatchError
    from .queue import check_queue
    from .site import Site

    queue = ctx.root / "queue"
    if ctx.config is None:  # its error is said once, by the config's own check
        return SKIP, "not checked: the site's config is not valid (see the config check)"
    try:
        st = queue.stat()
    except OSError:
        return SKIP, f"{queue} is missing"
    if not stat.S_ISDIR(st.st_mode):
        return SKIP, f"{queue} is not a folder"
    results = ctx.root / "results"
    owner = (results if results.is_dir() else ctx.root).stat().st_uid
    site = Site(ctx.root)
    hidden = (
        SKIP,
        f"{queue} cannot be looked into by you ({user_name(os.geteuid())}): run doctor as "
        "root or as the daemon's user to check it",
    )
    try:
        claimed_by = site.layout.claimed.lstat().st_uid
    except PermissionError:
        return hidden
    except OSError:
        claimed_by = owner  # none yet: the daemon makes it
    # a root daemon's folders are judged as root's, any other as the site's owner's
    daemon = 0 if claimed_by == 0 else owner
    try:
        check_queue(site, make=False, owner=daemon)
    except FlowbatchError as exc:
        return FAIL, exc.summary()
    except PermissionError:
        return hidden
    mode = stat.S_IMODE(st.st_mode)
    whose = ""
    if daemon != owner:
        whose = (
            f"; its folders are root's, for a root daemon (a daemon run as "
            f"{user_name(owner)} would refuse them)"
        )
    if mode & 0o022:
        return (
            OK,
            f"{queue} (mode {mode:04o}) has the sticky bit: participants cannot replace "
            f"the daemon's folders{whose}",
        )
    return OK, f"{queue} (mode {mode:04o}) is writable by its owner only{whose}"


def _writable(folder: Path) -> tuple[str, str]:
    """Create and remove a probe file: permission bits alone lie on NFS, ACLs, read-only
    mounts and under systemd's ProtectSystem."""
    if not folder.is_dir():
        return FAIL, f"{folder} is missing (run: flowbatch init)"
    try:
        fd, probe = tempfile.mkstemp(prefix=".doctor-", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return FAIL, f"{folder} is not writable by uid {os.getuid()}: {exc.strerror}"
    return OK, f"{folder} writable"


def _check_index(ctx: _Ctx) -> None:
    from .configsrc import redact_url
    from .store import migrate
    from .store.index import SCHEMA_VERSION, RunRow, connect_database, error_line, sqlite_path

    if ctx.config is None:
        ctx.add("index", SKIP, "config invalid")
        return
    url = ctx.config.database
    default = ctx.root / "index.db"
    where = redact_url(url) if url else str(default)
    if url and ctx.database_written not in (None, url):
        # the path the admin wrote, and the file it names (the site folder's, whatever
        # folder doctor, the daemon or a command runs in)
        where += f" ({ctx.database_written}: relative to the site folder)"
    leftover = default.with_name(default.name + ".new")
    if os.path.lexists(leftover):  # found by review: not a word of it
        ctx.add(
            "index leftover",
            WARN,
            f"{leftover}: left by a reindex that did not finish (the index in use is "
            "whole; the next reindex removes it, or remove it and its -wal, -shm)",
        )
    if not url and not default.exists():
        if _tree_has_runs(ctx.root):
            ctx.add("index", FAIL, f"{where}: missing, but the results tree has runs{_REINDEX}")
        else:
            ctx.add("index", OK, f"{where}: not created yet (made on first use)")
        return
    foreign = _foreign_index(ctx.root, sqlite_path(url, default))
    if foreign:
        ctx.add("index", FAIL, foreign)
        return
    db = connect_database(url, default)
    try:
        try:
            found = migrate.read_version(db)
        except pw.ImproperlyConfigured as exc:
            ctx.add(
                "index",
                FAIL,
                f"{where}: {error_line(exc)} (install the driver: "
                "pip install 'flowbatch[postgres]')",
            )
            return
        if found is None:
            if _tree_has_runs(ctx.root):
                ctx.add("index", FAIL, f"{where}: empty, but the results tree has runs{_REINDEX}")
            else:
                ctx.add("index", OK, f"{where}: empty (tables are made on first use)")
        elif found == SCHEMA_VERSION:
            damage = _sqlite_damage(db)
            if damage:
                ctx.add("index", FAIL, f"{where}: damaged: {damage}{_REINDEX}")
            else:
                ctx.add("index", *_runs_indexed(ctx.root, where, found, RunRow))
        else:
            try:
                migrate.check_upgradable(found, SCHEMA_VERSION)
            except FlowbatchError as exc:
                ctx.add("index", FAIL, f"{where}: {exc.summary()}")
            else:
                ctx.add(
                    "index",
                    WARN,
                    f"{where}: schema version {found}, migrated to {SCHEMA_VERSION} "
                    "when flowbatch next opens it",
                )
        if found is not None:
            ctx.add("index owner", *_index_owner(ctx.root, db, url, default))
    except pw.OperationalError as exc:
        # no file to open (a folder that does not exist), no server, no rights: a rebuild
        # fixes none of these
        ctx.add(
            "index",
            FAIL,
            f"{where}: cannot be opened: {error_line(exc)} (check the path or the server, "
            "and this user's rights to it)",
        )
    except pw.DatabaseError as exc:
        ctx.add("index", FAIL, f"{where}: cannot be used: {error_line(exc)}{_REINDEX}")
    finally:
        db.close()


_REINDEX = " (run: flowbatch reindex)"


def _index_owner(root: Path, db: pw.Database, url: str | None, default: Path) -> tuple[str, str]:
    """Whether the index is this site's (:mod:`flowbatch.store.siteid`): a copied site
    whose ``database:`` still names the first one's index is refused by every command."""
    from .store import siteid
    from .store.index import display_url, sqlite_path

    where = display_url(url) if url else str(default)
    in_site = siteid.index_in_site(sqlite_path(url, default), root)
    own = siteid.assess(db, root, in_site=in_site)
    if own.refused:
        return FAIL, siteid.refusal(own, root, where).summary()
    last = own.last_root
    said = {
        siteid.OURS: (OK, f"this site's (site id {own.index_id})"),
        siteid.NEW: (
            OK,
            "records no site yet (new, or made by an older flowbatch): recorded as "
            "this site's when flowbatch next opens it",
        ),
        siteid.MOVED: (
            OK,
            f"recorded for this site at {last}, which no longer holds it (the site was "
            "moved): the index follows it when flowbatch next opens it",
        ),
        siteid.REKEY: (
            OK,
            f"this site is a copy of {last} with its own index file: it gets a site id "
            "of its own when flowbatch next opens it",
        ),
        siteid.RESTORE: (
            WARN,
            f"this site's {siteid.SITE_ID_FILE} file is missing: written again from the "
            "index when flowbatch next opens it",
        ),
        siteid.RECLAIM: (
            WARN,
            f"the index file in this site folder records site id {own.index_id}, this "
            f"site's {siteid.SITE_ID_FILE} says {own.site_id}: recorded as this site's "
            "when flowbatch next opens it",
        ),
    }
    return said[own.state]


def _sqlite_damage(db: pw.Database) -> str | None:
    """What SQLite's own check finds wrong with an SQLite index (None: nothing, or not
    SQLite): a damaged page past the header read as "ok ... N run(s)" (found by
    review), while every command that met it failed."""
    from .store.index import error_line

    if not isinstance(db, pw.SqliteDatabase):
        return None
    try:
        rows = db.execute_sql("PRAGMA quick_check(3)").fetchall()
    except pw.DatabaseError as exc:
        return error_line(exc)
    said = [str(row[0]) for row in rows]
    return None if said == ["ok"] else "; ".join(said).replace("\n", "; ")[:300]


def _foreign_index(root: Path, path: Path | None) -> str | None:
    """An SQLite index (or its ``-wal``, ``-shm``) the site's daemon may not write: one
    left by another user (root's `reindex` by an older flowbatch), which keeps the
    daemon from starting."""
    from .accounts import user_name

    results = root / "results"
    try:
        daemon_uid = (results if results.is_dir() else root).stat().st_uid
    except OSError:
        return None
    if path is None or daemon_uid == 0:
        return None
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            st = file.stat()
        except OSError:
            continue
        if st.st_uid != daemon_uid and not st.st_mode & 0o002:
            daemon = user_name(daemon_uid)
            return (
                f"{file} belongs to {user_name(st.st_uid)}, but the site's daemon runs as "
                f"{daemon} (the owner of results/) and cannot write it (run: chown "
                f"{daemon}: {file})"
            )
    return None


def _tree_has_runs(root: Path) -> bool:
    return any((root / "results").glob("*/runs/*/run.json"))


def _runs_indexed(root: Path, where: str, version: int, model: Any) -> tuple[str, str]:
    """An index without runs beside a tree with runs was deleted or replaced."""
    count = model.select().count()
    if count == 0 and _tree_has_runs(root):
        return FAIL, f"{where}: holds no runs but the results tree does{_REINDEX}"
    return OK, f"{where}: schema version {version}, {count} run(s)"


def _check_templates(ctx: _Ctx) -> None:
    from .site import Site

    if ctx.config is None:
        ctx.add("templates", SKIP, "config invalid")
        return
    store = Site(ctx.root).templates
    ids = store.list_ids()
    broken = []
    for wf_id in ids:
        try:
            store.load(wf_id)
        except FlowbatchError as exc:
            broken.append(f"{wf_id}: {exc.summary()}")
    if broken:
        ctx.add("templates", FAIL, "; ".join(broken))
    else:
        ctx.add("templates", OK, f"{len(ids)} installed, all readable")
    from .report import SITE_TEMPLATES, check_site_templates

    if (ctx.root / SITE_TEMPLATES).is_dir():
        problems = check_site_templates(ctx.root)
        if problems:
            ctx.add("report templates", FAIL, "; ".join(problems))
        else:
            names = sorted(p.name for p in (ctx.root / SITE_TEMPLATES).iterdir())
            ctx.add("report templates", OK, f"site's own: {', '.join(names) or 'none'}")


def _check_postproc(ctx: _Ctx) -> None:
    """Who a root daemon runs post-processing as (:mod:`flowbatch.postproc_user`): never
    root. ``nobody``, when the site names no user, is worth a look where a template
    post-processes; a user that cannot be used there is a failure, and so is one who
    can write a workflow's ``postproc/`` folder or one on the way to it (the site's
    owner, for one): the daemon refuses to post-process as them."""
    from .postproc import postproc_root
    from .postproc_user import FALLBACK, postproc_user, writable_on_the_way
    from .site import Site

    if ctx.config is None:
        ctx.add("post-processing", SKIP, "config invalid")
        return
    site = Site(ctx.root)
    store = site.templates
    used = []
    for wf_id in store.list_ids():
        try:
            if store.load(wf_id)[0].postproc is not None:
                used.append(wf_id)
        except FlowbatchError:
            continue  # said by the templates check
    try:
        who = postproc_user(ctx.root, ctx.config)
    except FlowbatchError as exc:
        ctx.add("post-processing", FAIL if used else WARN, exc.summary())
        return
    detail = f"a root daemon runs it as {who.describe()}"
    writable = [
        why
        for wf_id in used
        if (why := writable_on_the_way(ctx.root, postproc_root(site, wf_id), who.uid))
    ]
    if writable:
        ctx.add(
            "post-processing",
            FAIL,
            f"{detail}, but {writable[0]}"
            + (f" (and {len(writable) - 1} more)" if len(writable) > 1 else "")
            + ": a root daemon starts no post-processing as a user who could swap its "
            "folders; name a user of its own that owns nothing of the site in "
            "flowbatch.yaml (postproc_user: NAME), or give the folder back to the site's "
            "owner without group or other write",
        )
        return
    if who.source == FALLBACK and used:
        ctx.add(
            "post-processing",
            WARN,
            f"{detail}, for {', '.join(used)}: a user other services may share; name one "
            "of its own in flowbatch.yaml: postproc_user: NAME",
        )
        return
    ctx.add("post-processing", OK, detail)


def _check_executors(ctx: _Ctx) -> None:
    from .executors import build_executors, stranded_notes

    config = ctx.config
    if config is None:
        ctx.add("executors", SKIP, "config invalid")
        return
    executors: dict[str, Any] = dict(build_executors(config, lambda: None))
    try:
        for name, executor in executors.items():
            if name == "local":
                ctx.add("executor local", *_local(config))
            elif _section_of(name) == "slurm" and not _uses_slurm(config):
                continue  # the built-in profile of a site that never asked for Slurm
            else:
                ctx.add(f"executor {name}", *_self_check(executor))
        for section in ("ssh", "slurm"):
            if not getattr(config, section, None) and not any(
                _section_of(n) == section for n in executors
            ):
                ctx.add(f"executor {section}", SKIP, "not configured")
        for line in stranded_notes(config, ctx.root):
            ctx.add("abandoned jobs", WARN, line)
    finally:
        for executor in executors.values():
            close = getattr(executor, "close", None)
            if callable(close):
                close()


def _uses_slurm(config: SiteConfig) -> bool:
    return bool(getattr(config, "slurm", None)) or _section_of(config.executor) == "slurm"


def _section_of(name: str) -> str:
    return "slurm" if name == "slurm" or name.startswith("slurm:") else name


def _local(config: SiteConfig) -> tuple[str, str]:
    if shutil.which("bash") is None:
        return FAIL, "bash not found on PATH (run scripts are bash)"
    cores = os.cpu_count() or 1
    limit = config.local.effective_concurrency()
    detail = f"{limit} run(s) at once, {cores} core(s)"
    if limit > 4 * cores:
        return WARN, detail + ": many more runs than cores"
    if os.geteuid() == 0:  # a root daemon starts each run as its user
        from .executors.local import SETPRIV_PLACES, setpriv

        path = setpriv()
        if path is None:
            return WARN, (
                f"{detail}; no usable setpriv (util-linux) in {' or '.join(SETPRIV_PLACES)}: "
                "each run of another user is started by forking the daemon (slower, see "
                "the log for why it was not used)"
            )
        detail += f"; runs of other users started through {path}"
        closed = closed_to_others(config.all_variables()["python"])
        if closed:
            return WARN, (
                f"{detail}; but ${{python}} of their runs is {closed}: set `variables: "
                "{python: /usr/bin/python3}` in flowbatch.yaml (or install flowbatch where "
                "every user can reach it)"
            )
    return OK, detail


def _self_check(executor: Any) -> tuple[str, str]:
    check: Callable[[], Any] | None = getattr(executor, "check", None)
    if not callable(check):
        return SKIP, "configured; this executor offers no self-check"
    try:
        detail = check()
    except Exception as exc:
        return FAIL, _describe(exc)
    if detail is False:
        return FAIL, "its check failed"
    return OK, str(detail) if detail not in (None, True) else "usable"


def _check_daemon(ctx: _Ctx) -> None:
    from .daemon import lock_holder

    if ctx.config is None:
        ctx.add("daemon", SKIP, "config invalid")
        return
    from .site import Site

    holder = lock_holder(Site(ctx.root))
    if holder is None:
        ctx.add("daemon", OK, "not running (start it with systemd, or a cron tick)")
        return
    who = ", ".join(f"{k} {v}" for k, v in holder.items())
    ctx.add("daemon", OK, f"running: {who}")


CHECKS: list[Callable[[_Ctx], None]] = [
    _check_config,
    _check_folders,
    _check_index,
    _check_templates,
    _check_postproc,
    _check_executors,
    _check_daemon,
]
