"""Which site an index belongs to: a copied site must not quietly write into another's.

A site folder copied whole (``cp -a``, an rsync that makes a second benchmark from the
first) keeps its ``database:`` line: an absolute SQLite path or a PostgreSQL URL then
names the first site's index, and both daemons wrote their runs into one index (each
ranking showed the other's runs, a ``reindex`` or ``cleanup`` of one removed the other's
rows, and nothing said so).

So each site has an id: random, kept in the file ``site-id`` in the site folder (copied
with it; its second line is the folder it was written for) and in the index's
``meta_row`` (``site_id``), together with the site's root path as last seen
(``site_root``). Opening an index, :func:`check` compares them:

- the same id, at the same folder: this site's index.
- the same id, another folder: the site was **moved** when the recorded folder no longer
  holds a site of that id (the index follows it: the recorded root is updated, in one log
  line), and **copied** when it still does. A copy is refused, unless its index is a file
  inside its own folder (the default ``index.db``, or an SQLite path in the site): the
  copy has its own copy of the file then, which is its own by construction, and it is
  given a new id of its own (re-keyed) without a word to anyone.
- another id (or a site with no id yet, whose index records another folder): another
  site's index, refused; ``flowbatch reindex --adopt`` makes it this site's.
- an index with no id (new, or made by an older flowbatch): adopted by the first site
  that opens it, under the id of its ``site-id`` file; a file written for another
  folder that still holds that id (a copy given a new ``database:``) is replaced by a
  new id first. Two copies made before this existed: the first one opened keeps the
  index, and the other is refused (its message names the first).

Whether a folder "holds a site of that id" is read from its ``site-id`` file; the same
folder seen through another path (a bind mount) is recognised by
:func:`os.path.samefile`, and is no copy. A ``site-id`` file the user may not read (a
site folder of another user's, 0700) is taken to hold it: that folder may well be there,
served (found by review: a copy made for another user took the first site's index as
"moved", while the first site's daemon went on writing into it). A shared site mounted
at different paths on its hosts looks moved to each host that opens it after another:
its recorded root follows, a log line each time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import peewee as pw

from ..errors import IndexError_
from .migrate import META_TABLE

log = logging.getLogger("flowbatch.store")

#: the site's id, in its folder (copied along with it)
SITE_ID_FILE = "site-id"
#: meta_row keys: the id of the site the index belongs to, and that site's root as last seen
ID_KEY = "site_id"
ROOT_KEY = "site_root"

# what an index is to the site opening it (Ownership.state)
OURS = "ours"  # its id and folder: nothing to do
NEW = "new"  # no site recorded yet (new, or from an older flowbatch): record this one
MOVED = "moved"  # its id, recorded at a folder that no longer holds it: record the new root
REKEY = "rekey"  # a copy with its own index file: a new id for the copy
RESTORE = "restore"  # this site's index (its folder, or its own file), its id file lost
RECLAIM = "reclaim"  # its own index file, recorded under another id: record this site's
COPY = "copy"  # refused: the index of the site this one is a copy of (still there)
FOREIGN = "foreign"  # refused: another site's index
REFUSED = frozenset({COPY, FOREIGN})


@dataclass(frozen=True)
class Ownership:
    """What an index records of its site, next to the site that opens it."""

    state: str
    #: the site id and root the index records (None: not recorded)
    index_id: str | None
    last_root: Path | None
    #: this site's id (its ``site-id`` file; None: there is none)
    site_id: str | None
    #: the recorded folder still holds the site the index records (not this one)
    other_there: bool = False
    #: this site's ``site-id`` was written for that other folder, which still holds a
    #: site of the same id: this one is a copy of it, and needs an id of its own
    copy_of: Path | None = None
    #: the recorded folder could not be looked into (no right to read its ``site-id``):
    #: taken to hold the site the index records (``other_there``)
    unseen: bool = False

    @property
    def refused(self) -> bool:
        return self.state in REFUSED


def new_id() -> str:
    return secrets.token_hex(16)


def read_site_file(root: Path) -> tuple[str | None, Path | None]:
    """The id in ``root/site-id`` and the folder it was written for (None, None: no such
    file, or no site, there)."""
    try:
        lines = (root / SITE_ID_FILE).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None, None
    site_id = lines[0].strip() if lines else ""
    written_for = lines[1].strip() if len(lines) > 1 else ""
    return site_id or None, Path(written_for) if written_for else None


def read_site_id(root: Path) -> str | None:
    """The id in ``root/site-id``; None when there is no such file (or no site) there."""
    return read_site_file(root)[0]


#: what :func:`_id_in` says of a ``site-id`` file the user may not read
UNSEEN = "\0unseen"


def _id_in(folder: Path) -> str | None:
    """The id that ``folder`` holds, as :func:`read_site_id` reads it, or :data:`UNSEEN`
    when this user may not read its ``site-id`` file (a folder of another user's): it
    may well hold a site, which must not be taken for gone."""
    try:
        lines = (folder / SITE_ID_FILE).read_text(encoding="utf-8").splitlines()
    except PermissionError:
        return UNSEEN
    except (OSError, UnicodeDecodeError):
        return None
    return (lines[0].strip() if lines else "") or None


def _site_file_bytes(root: Path, site_id: str) -> bytes:
    return f"{site_id}\n{root}\n".encode()


def _create_site_id(root: Path, site_id: str) -> str:
    """Write ``site_id`` into ``root/site-id`` unless the file exists; the id on file
    afterwards. The file is linked into place whole: two processes of one site that
    found none (daemons of several hosts starting together) agree on the first's."""
    tmp = root / f".{SITE_ID_FILE}.{secrets.token_hex(4)}.tmp"
    try:  # a write a full disk refuses leaves no empty file (found by review)
        tmp.write_bytes(_site_file_bytes(root, site_id))
        tmp.chmod(0o644)  # participants' commands read it too
        os.link(tmp, root / SITE_ID_FILE)
    except FileExistsError:
        on_file = read_site_id(root)
        if on_file is None:
            raise
        return on_file
    finally:
        tmp.unlink(missing_ok=True)
    return site_id


def _write_site_id(root: Path, site_id: str) -> None:
    from .atomic import write_bytes

    write_bytes(root / SITE_ID_FILE, _site_file_bytes(root, site_id), mode=0o644)


def same_folder(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def read_record(db: pw.Database) -> tuple[str | None, Path | None]:
    """The site id and root the index records (None, None: none, or no tables yet)."""
    if not db.table_exists(META_TABLE):
        return None, None
    cursor = db.execute_sql(
        f'SELECT "key", "value" FROM "{META_TABLE}" WHERE "key" IN ({db.param}, {db.param})',
        (ID_KEY, ROOT_KEY),
    )
    found = dict(cursor.fetchall())
    root = found.get(ROOT_KEY)
    return found.get(ID_KEY) or None, Path(root) if root else None


def assess(db: pw.Database, root: Path, *, in_site: bool) -> Ownership:
    """What the index is to the site at ``root`` (resolved); reads, never writes.
    ``in_site``: the index is an SQLite file inside the site folder."""
    index_id, last = read_record(db)
    site_id, written_for = read_site_file(root)
    copy_of = None
    if (
        site_id is not None
        and written_for is not None
        and not same_folder(written_for, root)
        and _id_in(written_for) in (site_id, UNSEEN)
    ):
        copy_of = written_for
    if index_id is None:
        return Ownership(NEW, None, last, site_id, copy_of=copy_of)
    here = last is not None and same_folder(last, root)
    # the recorded folder (not this one) still holds the site the index records, or
    # may: this user cannot look
    held = _id_in(last) if last is not None and not here else None
    there = held is not None and held in (index_id, UNSEEN)
    state = _state(site_id, index_id, here, there, in_site)
    return Ownership(state, index_id, last, site_id, there, copy_of, held == UNSEEN)


def _state(site_id: str | None, index_id: str, here: bool, there: bool, in_site: bool) -> str:
    """See the module's docstring. ``here``: the index records this folder; ``there``:
    it records another folder, which still holds a site of the index's id."""
    if site_id == index_id:
        if here:
            return OURS
        if not there:
            return MOVED
        return REKEY if in_site else COPY
    if in_site:  # the file is this folder's own: the index is this site's, whatever it says
        if site_id is not None:
            return RECLAIM
        return REKEY if there else RESTORE
    if site_id is None and here:
        return RESTORE  # this folder's id file was lost; the index says which it was
    return FOREIGN


def claimant(db: pw.Database, site_id: str) -> tuple[str, Path | None] | None:
    """The site the index records, when that is no longer ``site_id``: (its id, its
    root as recorded); None while it is this site's, or records none. The serving
    daemon's look (:meth:`flowbatch.daemon.Daemon.index_taken`): one read of two meta
    rows."""
    index_id, last = read_record(db)
    if index_id is None or index_id == site_id:
        return None
    return index_id, last


def taken_over(
    where: str, root: Path, site_id: str, other_id: str, other_root: Path | None
) -> IndexError_:
    """The error a daemon stops with when its index became another site's under it."""
    if other_root is None:
        there = "at a folder it does not name"
    elif other_root == root:  # this very path: the other site's folder is another host's
        there = f"at {other_root} on another host"
    else:
        there = f"at {other_root}"
    return IndexError_(
        f"this index was made the index of another site, {there} (site id {other_id}), "
        f"while this daemon served {root} (site id {site_id}) with it: `flowbatch reindex "
        "--adopt` there, on a host that did not see this daemon; this daemon takes no "
        "more requests in, writes nothing more into the index, and stops. Its runs are "
        "in the results tree: running ones go on, requests wait in the queue",
        file=where,
        hint=f"give this site an index of its own: set `database:` in {root}/flowbatch.yaml "
        "(or FLOWBATCH_DATABASE) to a new database, or remove it for an SQLite index.db in "
        "the site folder, then run `flowbatch reindex` and start the daemon again (it "
        "takes the running runs over); or, if this site is to keep this index, stop the "
        "other site's daemon and run `flowbatch reindex --adopt` here",
    )


def refusal(own: Ownership, root: Path, where: str) -> IndexError_:
    """The error of an index that belongs to another site, with the ways out."""
    if own.unseen:
        from ..accounts import user_name

        reason = (
            f"this index belongs to the site at {own.last_root} (site id {own.index_id}), "
            f"which this user ({user_name(os.geteuid())}) cannot look into: it may still be "
            f"there and use the index, this site ({root}) a copy of it, and the two would "
            "write their runs into one index"
        )
    elif own.state == COPY:
        reason = (
            f"this index belongs to the site at {own.last_root} (site id {own.index_id}), "
            f"which is still there: this site ({root}) is a copy of it, and the two would "
            "write their runs into one index"
        )
    elif own.other_there:
        reason = (
            f"this index belongs to another site, at {own.last_root} (site id "
            f"{own.index_id}): the two would write their runs into one index"
        )
    elif own.last_root is not None and same_folder(own.last_root, root):
        # this very folder, whose site-id file changed (found by review: the message
        # said the folder "no longer holds" the site, and named the folder twice)
        return IndexError_(
            f"this index records site id {own.index_id} for this very folder ({root}), "
            f"but its {SITE_ID_FILE} file says "
            + (f"{own.site_id}" if own.site_id else "nothing")
            + ": the file was changed or replaced (by another site's, copied over it?)",
            file=where,
            hint=f"if the index is this site's, remove {root / SITE_ID_FILE}: it is "
            "written again from the index; otherwise give this site an index of its own "
            f"(`database:` in {root}/flowbatch.yaml), or make this one its own with "
            "`flowbatch reindex --adopt`",
        )
    else:
        reason = (
            f"this index belongs to another site (site id {own.index_id}), last seen at "
            f"{own.last_root}, which no longer holds it; this site ({root}) has "
            + (f"site id {own.site_id}" if own.site_id else "no site id of its own yet")
        )
    return IndexError_(
        reason,
        file=where,
        hint=f"give this site an index of its own: set `database:` in {root}/flowbatch.yaml "
        "(or FLOWBATCH_DATABASE) to a new database, or remove it for an SQLite index.db "
        "in the site folder, then run `flowbatch reindex`; or, if the other site no longer "
        "uses this index, `flowbatch reindex --adopt` makes it this site's (rebuilt from "
        "this site's tree: the other site's runs leave it)",
    )


def check(
    db: pw.Database,
    root: Path,
    where: str,
    *,
    in_site: bool,
    read_only: bool = False,
    adopt: bool = False,
) -> Ownership:
    """Refuse an index that belongs to another site (:func:`refusal`); record this site
    in an index that is its own but says otherwise (new, moved, a copy's own file).
    ``read_only``: write nothing (a participant's read-only index: the daemon records it).
    ``adopt``: make another site's index this one's (``reindex --adopt``), unless a daemon
    serves the other site."""
    root = root.resolve()
    own = assess(db, root, in_site=in_site)
    if own.state == OURS:
        return own
    if own.refused and not adopt:
        raise refusal(own, root, where)
    if read_only:
        return own
    with _record_lock(db):
        own = assess(db, root, in_site=in_site)  # another process may have come first
        if own.refused and not adopt:
            raise refusal(own, root, where)
        if own.state == OURS:
            return own
        try:
            _record(db, root, own, where)
        except OSError as exc:
            if adopt:
                raise IndexError_(
                    f"cannot write this site's id into {root / SITE_ID_FILE}: "
                    f"{exc.strerror or exc}",
                    file=where,
                    hint="run it as the site's owner",
                ) from None
            # a user who may not write the site folder (a participant): the site's
            # daemon records it at its start
            log.debug("site id of %s not recorded: %s", root, exc)
    return own


@contextlib.contextmanager
def _record_lock(db: pw.Database) -> Iterator[None]:
    """One process at a time records a site: a transaction that holds the write lock
    from its start (SQLite), or an advisory lock (PostgreSQL)."""
    if isinstance(db, pw.PostgresqlDatabase):
        from .index import _SCHEMA_LOCK

        with db.atomic():
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            yield
    elif isinstance(db, pw.SqliteDatabase):
        with db.atomic("IMMEDIATE"):
            yield
    else:
        with db.atomic():
            yield


def _record(db: pw.Database, root: Path, own: Ownership, where: str) -> None:
    """Write this site's id and root into the index, and into its ``site-id`` file (the
    root there tells a later copy of the folder from the folder itself)."""
    if own.state in REFUSED:
        _may_adopt(own, where)
    site_id = own.site_id
    if own.state in (REKEY, *REFUSED) or (own.state == NEW and own.copy_of is not None):
        # a copy must not keep the other site's id
        if site_id is None or site_id == own.index_id or own.copy_of is not None:
            site_id = new_id()
        _write_site_id(root, site_id)
    elif own.state in (NEW, RESTORE):
        site_id = _create_site_id(root, site_id or str(own.index_id or new_id()))
    if site_id is None:
        raise AssertionError(f"no site id to record for state {own.state}")
    if read_site_file(root) != (site_id, root):  # moved, or written by an older version
        _write_site_id(root, site_id)
    _write_meta(db, {ID_KEY: site_id, ROOT_KEY: str(root)})
    dropped = _drop_claims(db) if own.state in REFUSED else 0
    if own.state in REFUSED:
        log.warning(
            "index %s adopted by the site at %s (site id %s); it belonged to site %s, "
            "last seen at %s (its %d claim(s) of requests dropped)",
            where,
            root,
            site_id,
            own.index_id,
            own.last_root,
            dropped,
        )
    elif own.state == REKEY or own.copy_of is not None:
        log.info(
            "the site at %s is a copy of %s with an index of its own: given its own site id %s",
            root,
            own.copy_of or own.last_root,
            site_id,
        )
    elif own.state == MOVED:
        log.info("index %s follows its site from %s to %s", where, own.last_root, root)
    else:
        log.debug("index %s recorded as the index of the site at %s", where, root)


def _drop_claims(db: pw.Database) -> int:
    """The claims an adopted index holds, deleted; how many there were.

    A claim row is the unique key that keeps two daemon hosts of one shared site from
    both making runs of one request file in that site's queue (a rename NFS let succeed
    twice), from the claim until its runs are made. Every row of an index being adopted
    was written by the other site's daemons, about files of the other site's queue: this
    site's daemons were refused the index, so none of its own claims is there (a claim
    of its own left over in its ``queue/.claimed`` is recorded again when taken up). So
    the rows guard nothing of this site's, and they can only do harm: the key is the
    file's name, inode, mtime and size, and a request file of this site's that matches
    one (the other site's kept ``request.yaml`` moved into this queue under its first
    name: the same inode; a file rsynced to another host's file system at the inode
    number of the first's) was taken for a second claim of the same file, and dropped
    with its request. The other site is refused this index from now on, so it needs
    them no more either."""
    from .index import ClaimRow

    if not db.table_exists(ClaimRow._meta.table_name):
        return 0
    cursor = db.execute_sql(f'DELETE FROM "{ClaimRow._meta.table_name}"')
    return max(cursor.rowcount, 0)


def _may_adopt(own: Ownership, where: str) -> None:
    """``reindex --adopt`` takes no index from under a daemon of the site it records."""
    from .store import other_daemon, this_host

    if not own.other_there or own.last_root is None:
        return
    who = other_daemon(own.last_root, this_host())
    if who is not None:
        raise IndexError_(
            f"the index belongs to the site at {own.last_root}, which a daemon serves "
            f"({who}): it would go on writing into it",
            file=where,
            hint=f"stop that daemon (and give {own.last_root} an index of its own) first, "
            "then run `flowbatch reindex --adopt` again",
        )


def _write_meta(db: pw.Database, values: dict[str, str]) -> None:
    sql = (
        f'INSERT INTO "{META_TABLE}" ("key", "value") VALUES ({db.param}, {db.param}) '
        'ON CONFLICT ("key") DO UPDATE SET "value" = excluded."value"'
    )
    for key, value in values.items():
        db.execute_sql(sql, (key, value))


def index_in_site(path: Path | None, root: Path) -> bool:
    """Whether the SQLite file ``path`` (None: a server's database) lies in the site
    folder ``root``: a copy of the site has its own copy of it."""
    if path is None:
        return False
    try:
        return path.resolve().is_relative_to(root.resolve())
    except OSError:
        return False
