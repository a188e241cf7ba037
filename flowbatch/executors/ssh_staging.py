"""Moving a run folder up and down by SFTP.

Up: the run's inputs, with their modes and modification times (so that a file the run
did not touch is recognized as unchanged on the way back). Down: every regular file that
the local folder lacks or that differs in size or modification time, written to a
temporary name and renamed into place (a symlink planted in the local folder is
replaced, never followed). Both ways the local tree, which is the run user's, is walked
by folder descriptors opened without following links: a folder swapped for a link
mid-walk never sends or receives anything through it.

flowbatch's own files are neither sent nor fetched: ``run.json`` changes locally while
the run runs (a stale copy coming back would overwrite the truth), ``request.yaml`` is not
the script's business, and ``attempts/`` is the local archive of earlier attempts.

Speed: paramiko's SFTP client gets ~110 MB/s on loopback where OpenSSH's sftp and scp
get ~150 (every 32 KiB read is a request, its response comes in two SSH packets, and each
read copies out of a channel buffer that is then shifted). A file of
:data:`STREAM_MIN_SIZE` or more therefore travels as a plain byte stream, ``cat`` (up)
or ``head -c <size>`` (down) on an exec channel of the same pooled connection
(single-quoted path, wider receive window): about twice SFTP's rate. Smaller files stay
on SFTP, which is quicker for them (no process to start). A stream that fails for any
reason but a lost connection (no ``cat``, a login shell that prints, a file that changed
meanwhile) is not trusted: the file goes again over SFTP, so the stream only ever makes
things faster.

Bounds: a file is read no further than the size its listing gave, by stream or by SFTP
(a process the run left behind may append to a file for ever), and a download stops
taking files once they would add up to more than its budget (a host's
``max_fetch_bytes``: the daemon writes them here, a root daemon beyond the user's
quota, a sparse file whole): those are left on the host (:class:`FetchBudget`). File
names are bytes both sides (one that is not UTF-8 comes home as it is).

Faults: a remote file the daemon cannot read (permission denied, gone since the listing,
the server's failure) is left out with a note and the download goes on; a lost or timed
out connection (every wait is bounded, see :mod:`ssh_pool`) ends the download with the
error, and so does a local failure (a full disk: :class:`LocalWriteError`). Markers and
logs come first, then the other files, smallest first, then the sub-folders.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, cast

import paramiko
from paramiko.sftp import CMD_CLOSE, CMD_HANDLE, CMD_NAME, CMD_OPENDIR, CMD_READDIR, CMD_REALPATH

from .. import text
from ..render.script import LOGS_DIR, STATUS_DIR, shell_quote
from .ssh_pool import Fuse, connection_lost

log = logging.getLogger("flowbatch.ssh")

#: files at least this big are streamed through ``cat``; on loopback a 1 KB file took
#: 2.0 ms by SFTP and 3.6 ms by stream, 1 MiB 6.9 and 7.1 ms, 16 MiB 141 and 61 ms
STREAM_MIN_SIZE = 1 << 20
#: receive window of a download stream (the Transport's default, 2 MiB, is kept for the
#: other channels: a wider SFTP channel window made SFTP slower; a stream got ~15% faster)
STREAM_WINDOW = 8 << 20
#: bytes per read and per write of a stream
STREAM_CHUNK = 1 << 20
#: bytes per SFTP read request (paramiko's own choice, as its ``getfo``)
SFTP_CHUNK = 32768
#: a stream that moves no byte for this long has lost its connection, when the SFTP
#: session gives no timeout of its own (the pool's sessions give their ``io_timeout``)
STREAM_IDLE_TIMEOUT = 300.0


class LocalWriteError(Exception):
    """Writing a fetched file here failed (a full disk, a quota): the download is
    incomplete for a reason of this side's. ``cause`` is the ``OSError``."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(f"writing here failed: {cause.strerror or cause}")
        self.cause = cause


class RemoteFolderMissing(FileNotFoundError):
    """The remote folder a download was to fetch is not there (its files, if any,
    are not the reason: a file gone during the walk is left out with a note)."""


class RemoteFolderReplaced(Exception):
    """The remote folder a download was to fetch is not that folder any more: a symbolic
    link (a run may swap its own folder for one, to anywhere), no folder, or a path that
    resolves elsewhere. ``during``: found so only after files were fetched from it (what
    came home may not be the run's); else nothing was fetched."""

    def __init__(self, why: str, *, during: bool) -> None:
        super().__init__(why)
        self.during = during


class FetchBudget:
    """The most bytes a download may fetch (``limit``: the host's ``max_fetch_bytes``),
    and the files it left on the host for it: ``(path, size)``, the path relative to the
    folder as notes show it. Files that are home already (unchanged) cost nothing."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit
        self.left_out: list[tuple[str, int]] = []

    def take(self, path: str, size: int) -> bool:
        """Whether a file of ``size`` bytes may be fetched (then taken off the budget)."""
        if size > self.left:
            self.left_out.append((path, size))
            return False
        self.left -= size
        return True


class _Skipped(Exception):
    """One remote file or folder cannot be fetched (the reason given); the rest can."""


#: top-level names of a run folder that never go up
NOT_UPLOADED = frozenset({STATUS_DIR, LOGS_DIR, "run.json", "request.yaml", "attempts"})
#: top-level names of a run folder that never come down
NOT_DOWNLOADED = frozenset({"run.json", "request.yaml", "attempts"})

#: a folder of the run user's tree, opened without following a link
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: a file the daemon creates there (never through a link, never an existing one)
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: mode of a folder the download creates (never world-writable)
_FOLDER_MODE = 0o755
#: what a local file system says of a name it cannot store (too long; not its encoding)
_NAME_REFUSED = frozenset({errno.ENAMETOOLONG, errno.EILSEQ})


def upload_tree(sftp: paramiko.SFTPClient, local_dir: Path, remote_dir: str) -> int:
    """Copy ``local_dir``'s inputs into the (existing) ``remote_dir``; the file count.

    Walked by directory descriptors opened without following links, like
    :func:`download_tree`: a sub-folder the run's user swaps for a link meanwhile never
    makes the (root) daemon list or send what the link points at."""
    top = os.open(local_dir, _DIR_FLAGS)
    try:
        return _upload_folder(sftp, top, local_dir, remote_dir, top=True)
    finally:
        os.close(top)


def _upload_folder(
    sftp: paramiko.SFTPClient, dir_fd: int, local_dir: Path, remote_dir: str, *, top: bool = False
) -> int:
    """Upload the open folder ``dir_fd`` (``local_dir`` names it, for messages only)."""
    count = 0
    for name in sorted(os.listdir(dir_fd)):
        if top and name in NOT_UPLOADED:
            continue
        count += _upload(sftp, dir_fd, name, local_dir / name, f"{remote_dir}/{name}")
    return count


def _upload(sftp: paramiko.SFTPClient, dir_fd: int, name: str, path: Path, remote: str) -> int:
    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(info.st_mode):
        # staged inputs are copies; a link could point anywhere on the daemon's host
        log.warning("not uploading symlink %s", path)
        return 0
    if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
        return 0  # a FIFO would block, a device is no input
    # the folder is the run user's: an entry swapped for a link after the lstat above
    # must not make the (root) daemon list or send what it points to
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    if stat.S_ISDIR(info.st_mode):
        flags |= os.O_DIRECTORY
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        log.warning("not uploading %s: %s", path, exc.strerror)
        return 0
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            sftp.mkdir(remote, mode=stat.S_IMODE(info.st_mode) | 0o700)
            return _upload_folder(sftp, fd, path, remote)
        if not stat.S_ISREG(info.st_mode):
            return 0
        with os.fdopen(os.dup(fd), "rb") as src:
            send_file(sftp, src, remote, info.st_size)
    finally:
        os.close(fd)
    sftp.chmod(remote, stat.S_IMODE(info.st_mode))
    sftp.utime(remote, (info.st_atime, info.st_mtime))
    return 1


def download_tree(
    sftp: paramiko.SFTPClient,
    remote_dir: str | bytes,
    local_dir: Path,
    notes: list[str] | None = None,
    *,
    budget: FetchBudget | None = None,
) -> int:
    """Fetch new or changed files of ``remote_dir`` into ``local_dir``; the file count.

    The local tree is the run user's, who may swap any folder in it for a symlink at any
    moment, even while a remote listing is on its way. So it is walked by directory
    descriptors, each folder opened with ``O_NOFOLLOW`` relative to its parent's, and
    every file is created, renamed and given its owner relative to the descriptor of the
    folder that was checked: nothing lands outside ``local_dir``. A sub-folder that is a
    link or no folder, or that was moved while its remote listing came, is skipped with
    a warning.

    A remote file or sub-folder that cannot be read (permission denied, gone since it was
    listed) is skipped too, and ``notes`` gets ``"<path> (<why>)"`` for it (the path
    relative to ``remote_dir``). :class:`RemoteFolderMissing` (a ``FileNotFoundError``)
    means ``remote_dir`` itself is not there; :class:`RemoteFolderReplaced` that it is
    not the folder it was (``remote_dir`` must be a real path: a folder, reached through
    no link), checked before and after it is listed (then nothing was fetched) and once
    more at the end. With ``budget``, a file that would take more bytes than are left of
    it is not fetched (the budget's ``left_out`` names it); every file is read no further
    than the size the listing gave (a file that keeps growing ends). A lost connection
    raises its error (``OSError``, ``EOFError``, ``SSHException``), a failure to write
    here :class:`LocalWriteError`: the download is then incomplete.

    File names are bytes to POSIX, on both sides: a remote name that is not UTF-8 is
    fetched to a local file of the same bytes (see :func:`listdir`), and is shown in
    notes and logs with its odd bytes as ``\\xff`` (:func:`text.shown`)."""
    remote = os.fsencode(remote_dir)
    top = os.open(local_dir, _DIR_FLAGS)
    try:
        try:
            _check_folder(sftp, remote, "")
            entries = listdir(sftp, remote)
        except FileNotFoundError as exc:
            raise RemoteFolderMissing(errno.ENOENT, f"{_shown(remote)}: {exc.strerror}") from None
        # a process the run left may swap the folder at any moment (the listing and each
        # file are requested by path, SFTP has no openat): before any file is fetched,
        # and after all, so that what came home from elsewhere is at least known
        _check_folder(sftp, remote, " once it was listed")
        count = _download(
            sftp, remote, entries, top, local_dir, _Sink(_owner(top), notes, budget), "", top=True
        )
        _check_folder(sftp, remote, " while its files were fetched", during=True)
        return count
    finally:
        os.close(top)


def _check_folder(
    sftp: paramiko.SFTPClient, remote: bytes, when: str, *, during: bool = False
) -> None:
    """:class:`RemoteFolderReplaced` unless ``remote`` is a folder that is no link and
    whose real path is ``remote`` itself (a link higher up moves it too); gone after the
    listing is no replacement (what was gone before it could be fetched is noted)."""
    try:
        info = sftp.lstat(remote)
    except FileNotFoundError:
        if not when:
            raise
        return
    mode = info.st_mode or 0
    if stat.S_ISLNK(mode):
        why = "is a symbolic link"
    elif not stat.S_ISDIR(mode):
        why = "is no folder"
    else:
        real = _realpath(sftp, remote)
        if real == remote:
            return
        why = f"resolves to {_shown(real)}"
    raise RemoteFolderReplaced(f"{_shown(remote)} {why}{when}", during=during)


def _realpath(sftp: paramiko.SFTPClient, path: bytes) -> bytes:
    """The server's real path of ``path``, links resolved (paramiko's ``normalize``
    decodes it as strict UTF-8)."""
    t, msg = cast(Any, sftp)._request(CMD_REALPATH, path)
    if t != CMD_NAME or msg.get_int() != 1:
        raise paramiko.SFTPError("Expected one name")
    return bytes(msg.get_string())


def listdir(sftp: paramiko.SFTPClient, path: bytes) -> list[paramiko.SFTPAttributes]:
    """The entries of the remote folder ``path`` (but ``.`` and ``..``), as
    ``SFTPAttributes`` whose ``filename`` is the name's bytes decoded by
    :func:`os.fsdecode`: ``os.fsencode`` gives them back exactly.

    paramiko's own ``listdir_attr`` decodes names as strict UTF-8: one name that is not
    (legal on Linux, and a run's to choose) made the listing raise, and left the remote
    folder's handle open. Here the handle is closed whatever happens; a listing cut short
    by a lost connection raises, never passes for the end of the folder."""
    # paramiko's own request and parsing calls (not in its type stubs)
    request = cast(Any, sftp)._request
    attributes = cast(Any, paramiko.SFTPAttributes)._from_msg
    t, msg = request(CMD_OPENDIR, path)
    if t != CMD_HANDLE:
        raise paramiko.SFTPError("Expected handle")
    handle = msg.get_binary()
    entries: list[paramiko.SFTPAttributes] = []
    try:
        while True:
            try:
                t, msg = request(CMD_READDIR, handle)
            except EOFError:  # the server's "no more entries", or a lost connection
                if not _session_alive(sftp):
                    raise ConnectionError("the ssh connection was lost") from None
                break
            if t != CMD_NAME:
                raise paramiko.SFTPError("Expected name response")
            for _ in range(msg.get_int()):
                name = msg.get_string()
                longname = msg.get_string().decode("utf-8", "replace")
                attr = attributes(msg, os.fsdecode(name), longname)
                if name not in (b".", b".."):
                    entries.append(attr)
    except BaseException:
        if _session_alive(sftp):
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                request(CMD_CLOSE, handle)
        raise
    request(CMD_CLOSE, handle)
    return entries


def _shown(name: str | bytes | Path) -> str:
    """A remote or local file name or path for a note or the log (:func:`text.shown`)."""
    if isinstance(name, bytes):
        return name.decode("utf-8", "backslashreplace")
    return text.shown(str(name))


def _download(
    sftp: paramiko.SFTPClient,
    remote_dir: bytes,
    entries: list[paramiko.SFTPAttributes],
    dir_fd: int,
    local_dir: Path,
    sink: _Sink,
    prefix: str,
    *,
    top: bool = False,
) -> int:
    """Fetch the listed ``entries`` of ``remote_dir`` into the open folder ``dir_fd``
    (``local_dir`` names it, for messages only: never opened by that path); ``prefix``:
    the folder's path relative to the top, for the notes (as :func:`_shown`). Names are
    ``str`` from :func:`os.fsdecode` locally, bytes remotely: the same bytes both sides."""
    count = 0
    for attr in sorted(entries, key=_fetch_order if top else _file_size_order):
        name = attr.filename
        if (top and name in NOT_DOWNLOADED) or name in (".", "..") or "/" in name or "\0" in name:
            continue
        mode = attr.st_mode or 0
        remote = remote_dir + b"/" + os.fsencode(name)
        local = local_dir / name
        try:
            if stat.S_ISDIR(mode):
                count += _download_folder(
                    sftp, remote, dir_fd, name, local, sink, prefix + _shown(name) + "/"
                )
            elif stat.S_ISREG(mode) and _changed(dir_fd, name, attr):
                size = attr.st_size or 0
                if sink.budget is not None and not sink.budget.take(prefix + _shown(name), size):
                    log.warning(
                        "not fetching %s: %d bytes, over what is left of max_fetch_bytes",
                        _shown(remote),
                        size,
                    )
                    continue
                try:
                    count += _fetch_one(sftp, remote, attr, dir_fd, name, local, sink.owner)
                except BaseException:
                    if sink.budget is not None:
                        sink.budget.left += size  # not fetched: not spent
                    raise
        except _Skipped as skipped:
            _skip(remote, prefix, name, str(skipped), sink.notes)
        except OSError as exc:  # here: the remote side's errors come as _Skipped
            if exc.errno not in _NAME_REFUSED:
                raise
            refused = f"its name cannot be stored here: {exc.strerror}"
            _skip(remote, prefix, name, refused, sink.notes)
    return count


class _Sink:
    """Where a download goes besides the files: their owner here, the notes of what was
    left out, the byte budget."""

    def __init__(
        self,
        owner: tuple[int, int] | None,
        notes: list[str] | None,
        budget: FetchBudget | None,
    ) -> None:
        self.owner = owner
        self.notes = notes
        self.budget = budget


def _skip(remote: bytes, prefix: str, name: str, why: str, notes: list[str] | None) -> None:
    log.warning("not fetching %s: %s", _shown(remote), why)
    if notes is not None:
        notes.append(f"{prefix}{_shown(name)} ({why})")


def _fetch_order(attr: paramiko.SFTPAttributes) -> tuple[int, int]:
    """The top folder: markers, then logs (what says how the run ended, first), then its
    files, smallest first, then its other folders."""
    first = {STATUS_DIR: 0, LOGS_DIR: 1}.get(attr.filename)
    if first is not None:
        return (first, 0)
    return _file_size_order(attr)


def _file_size_order(attr: paramiko.SFTPAttributes) -> tuple[int, int]:
    if stat.S_ISDIR(attr.st_mode or 0):
        return (3, 0)
    return (2, attr.st_size or 0)


def _download_folder(
    sftp: paramiko.SFTPClient,
    remote: bytes,
    dir_fd: int,
    name: str,
    local: Path,
    sink: _Sink,
    prefix: str,
) -> int:
    """The remote sub-folder ``remote`` into ``name`` of the open folder ``dir_fd``."""
    try:
        sub = _open_folder(dir_fd, name, sink.owner)
    except OSError as exc:
        if exc.errno in _NAME_REFUSED:
            raise _Skipped(f"its name cannot be stored here: {exc.strerror}") from None
        raise _Skipped(f"{_shown(local)} is in the way: {exc.strerror}") from None
    try:
        listed = _remote(sftp, lambda: listdir(sftp, remote))
        # the listing is a round trip the run's code can make long: a folder moved
        # or replaced meanwhile is left alone (the descriptor would still keep the
        # writes inside the run folder, but not where the user now expects them)
        if not _still_at(dir_fd, name, sub):
            raise _Skipped(f"{_shown(local)} was moved or replaced while it was listed")
        return _download(sftp, remote, listed, sub, local, sink, prefix)
    finally:
        os.close(sub)


def _remote(sftp: paramiko.SFTPClient, call: Any) -> Any:
    """``call()``, an SFTP request about one file or folder: the server's refusal (no
    such file, permission denied, a failure of its own) is :class:`_Skipped`; a lost
    connection raises as it came."""
    try:
        return call()
    except OSError as exc:
        if connection_lost(exc) or not _session_alive(sftp):
            raise
        raise _Skipped(_why(exc)) from None


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "gone before it could be fetched"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return f"the server could not read it: {exc.strerror or exc}"


def _session_alive(sftp: paramiko.SFTPClient) -> bool:
    """Whether the SFTP session's connection is still up (paramiko reports a closed
    channel as a plain ``OSError``)."""
    channel = sftp.get_channel()
    if channel is None or channel.closed:
        return False
    transport = channel.get_transport()
    return bool(transport and transport.is_active())


def _fetch_one(
    sftp: paramiko.SFTPClient,
    remote: bytes,
    attr: paramiko.SFTPAttributes,
    dir_fd: int,
    name: str,
    local: Path,
    owner: tuple[int, int] | None,
) -> int:
    """Fetch one remote file to a temporary name in the open folder ``dir_fd``, then
    rename it to ``name`` there; 1 when fetched. :class:`_Skipped` when a folder is in
    the way or the server refuses the file; an ``OSError`` of ``_NAME_REFUSED`` when this
    side cannot store the name."""
    try:
        if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise _Skipped(f"{_shown(local)} is a folder")
    except FileNotFoundError:
        pass
    tmp = temporary_name(name)
    mode = attr.st_mode or 0
    try:
        # the folder is the run user's: mode, times and owner are set through the
        # descriptor of the file created here, never by a path a link could replace
        with _create_at(dir_fd, tmp) as out:
            sink = cast(BinaryIO, _Local(out))
            _remote(sftp, lambda: fetch_into(sftp, remote, sink, attr.st_size or 0))
            try:
                out.flush()
            except OSError as exc:
                raise LocalWriteError(exc) from None
            fd = out.fileno()
            os.fchmod(fd, stat.S_IMODE(mode) & 0o777)
            if attr.st_mtime is not None:
                os.utime(fd, (attr.st_atime or attr.st_mtime, attr.st_mtime))
            if owner is not None:
                os.fchown(fd, *owner)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)  # no half-fetched leftover
        raise
    return 1


def temporary_name(name: str) -> str:
    """The name a file to be called ``name`` is fetched under before it is renamed: short
    whatever ``name`` is (``.<name>.flowbatch-fetch`` was longer than 255 bytes for a name
    of 250, and stopped the whole fetch), the same for the same name (a fetch cut short
    by a killed daemon leaves no second one beside it)."""
    return ".fb-fetch-" + hashlib.sha256(os.fsencode(name)).hexdigest()[:16]


class _Local:
    """The local file a download writes (``write``, ``seek``, ``truncate``), its write
    errors made :class:`LocalWriteError`: not to be taken for the server's refusal of
    the remote file, nor for a stream's failure."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def write(self, data: bytes) -> int:
        try:
            return self._out.write(data)
        except OSError as exc:
            raise LocalWriteError(exc) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._out, name)


def _open_folder(dir_fd: int, name: str, owner: tuple[int, int] | None) -> int:
    """A descriptor of the sub-folder ``name`` of ``dir_fd``, created if missing (and
    then given to ``owner``); :class:`OSError` when a link or a non-folder is there.

    A folder this call creates is made private first (0700, the daemon's): when the
    descriptor opened next is of a folder with that owner and mode, it is the one just
    made (the run's user cannot move such a folder in), and only then does it get its
    mode and owner. Anything else swapped in between is refused, never handed over."""
    try:
        os.mkdir(name, 0o700, dir_fd=dir_fd)
        made = True
    except FileExistsError:
        made = False
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)  # ELOOP: a link; ENOTDIR: a file
    try:
        info = os.fstat(fd)
        ours = info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) == 0o700
        if made and not ours:
            raise OSError(errno.EEXIST, "replaced right after it was created")
        # (a root daemon's private folder found in a user's tree is one an earlier
        # download made and did not hand over: the user cannot move such a folder in)
        if made or (ours and owner is not None):
            os.fchmod(fd, _FOLDER_MODE)
            if owner is not None:
                os.fchown(fd, *owner)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _still_at(dir_fd: int, name: str, fd: int) -> bool:
    """Whether ``name`` in the folder ``dir_fd`` still is the open folder ``fd``."""
    try:
        there = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    here = os.fstat(fd)
    return (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino)


def send_file(sftp: paramiko.SFTPClient, local: Path | BinaryIO, remote: str, size: int) -> None:
    """Copy the local regular file ``local`` (a path, or a file open for reading at its
    start; ``size`` bytes) to ``remote``, created or truncated: streamed when large (see
    the module's docstring), else by SFTP."""
    if isinstance(local, Path):
        with open(local, "rb") as src:
            send_file(sftp, src, remote, size)
        return
    if size >= STREAM_MIN_SIZE:
        try:
            _stream_up(sftp, local, remote)
            if sftp.stat(remote).st_size == size:
                return
            why = "the remote size differs"
        except _StreamFailed as exc:
            why = str(exc)
        log.warning("streaming to %s failed (%s); sending it by SFTP", remote, why)
        local.seek(0)
    sftp.putfo(local, remote, file_size=size)


def fetch_file(sftp: paramiko.SFTPClient, remote: str | bytes, local: Path, size: int) -> None:
    """Copy the remote regular file ``remote`` (``size`` bytes when listed) to ``local``.

    ``local`` is created afresh (a file or symlink already there is removed first, never
    written through) with mode 0600; streamed when large, else by SFTP."""
    with _create(local) as out:
        fetch_into(sftp, remote, out, size)


def fetch_into(sftp: paramiko.SFTPClient, remote: str | bytes, out: BinaryIO, size: int) -> None:
    """Write the remote regular file ``remote`` (``size`` bytes when listed; a path as
    bytes or text) into the new, empty file ``out``: streamed when large, else (or when
    the stream fails) by SFTP. No more than ``size`` bytes are read either way: a file
    that grew since it was listed (a process the run left may append to it for ever)
    comes as it was listed, and what it has beyond stays there."""
    remote = os.fsencode(remote)
    if size >= STREAM_MIN_SIZE:
        try:
            got = _stream_down(sftp, remote, out, size)
            if got == size:
                return
            why = f"{got} bytes came, {size} were listed"
        except _StreamFailed as exc:
            why = str(exc)
        log.warning("streaming %s failed (%s); fetching it by SFTP", _shown(remote), why)
        out.seek(0)
        out.truncate()
    _sftp_read(sftp, remote, out, size)


def _sftp_read(sftp: paramiko.SFTPClient, remote: bytes, out: BinaryIO, size: int) -> None:
    """At most ``size`` bytes of the remote file into ``out``, by SFTP (prefetched as
    paramiko's ``getfo`` does, which reads on to the end of a file however far it grows)."""
    with sftp.open(cast(str, remote), "rb") as src:  # paramiko takes a path as bytes too
        src.prefetch(size)
        left = size
        while left > 0:
            data = src.read(min(SFTP_CHUNK, left))
            if not data:
                break
            out.write(data)
            left -= len(data)


class _StreamFailed(Exception):
    """A stream went wrong while its connection stayed up: SFTP may still do it."""


def _create(path: Path) -> Any:
    """``path`` opened for writing as a new file (never through a link planted there)."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    return os.fdopen(os.open(path, _NEW_FILE_FLAGS, 0o600), "wb")


def _create_at(dir_fd: int, name: str) -> Any:
    """The file ``name`` in the open folder ``dir_fd``, opened for writing as a new file
    (whatever was at that name, a link included, is removed first, never followed)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)
    return os.fdopen(os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=dir_fd), "wb")


def _idle_timeout(sftp: paramiko.SFTPClient) -> float:
    """How long a stream may move no byte: the SFTP session's own timeout (the pool's
    ``io_timeout``), else :data:`STREAM_IDLE_TIMEOUT`."""
    channel = sftp.get_channel()
    timeout = channel.gettimeout() if channel is not None else None
    return float(timeout) if timeout else STREAM_IDLE_TIMEOUT


def _open_stream(sftp: paramiko.SFTPClient, command: str | bytes, window: int | None) -> Any:
    """An exec channel running ``command`` on the SFTP session's own connection."""
    channel = sftp.get_channel()
    transport = channel.get_transport() if channel is not None else None
    if transport is None or not transport.is_active():
        raise ConnectionError("the ssh connection is closed")
    idle = _idle_timeout(sftp)
    try:
        chan = transport.open_session(window_size=window)
        chan.settimeout(idle)
        with Fuse(transport, idle):  # paramiko waits for the exec's reply for ever
            chan.exec_command(command)
    except (paramiko.SSHException, OSError) as exc:
        _lost(transport, exc)
        raise _StreamFailed(f"cannot start it: {exc}") from None
    return chan


def _finish(chan: Any, what: str) -> None:
    """Wait for the remote command's exit status; :class:`_StreamFailed` unless 0."""
    if not chan.status_event.wait(chan.gettimeout() or STREAM_IDLE_TIMEOUT):
        _cut(chan.get_transport(), f"{what}: no exit status")
    code = chan.recv_exit_status()
    if code != 0:
        err = b""
        while chan.recv_stderr_ready() and len(err) < 2000:
            err += chan.recv_stderr(2000)
        detail = err.decode("utf-8", "replace").strip()[:500]
        raise _StreamFailed(f"{what} exited with {code}" + (f": {detail}" if detail else ""))


def _lost(transport: paramiko.Transport, exc: BaseException) -> None:
    """Raise ``exc`` as the connection error it is when the connection is gone, or when
    it timed out (the host did not answer: the connection is closed)."""
    if isinstance(exc, TimeoutError):
        _cut(transport, f"no answer for {_timeout_of(exc)}")
    if not transport.is_active():
        raise ConnectionError(f"the ssh connection was lost: {exc}") from None


def _timeout_of(exc: TimeoutError) -> str:
    return str(exc) or "the idle timeout"


def _cut(transport: paramiko.Transport | None, why: str) -> None:
    """The host stopped answering a stream: close the connection, raise the loss."""
    if transport is not None:
        transport.close()
    raise ConnectionError(f"the ssh connection was lost: {why}")


def _stream_down(sftp: paramiko.SFTPClient, remote: bytes, out: Any, size: int) -> int:
    """The remote file's first ``size`` bytes (``head -c``: a file growing meanwhile does
    not hold the stream) into the open file ``out``; the byte count."""
    got = 0
    command = b"exec head -c %d -- " % size + _quote_bytes(remote)
    with _stream(sftp, command, STREAM_WINDOW, "reading") as chan:
        while data := chan.recv(STREAM_CHUNK):
            out.write(data)
            got += len(data)
    return got


def _stream_up(sftp: paramiko.SFTPClient, src: BinaryIO, remote: str) -> None:
    """``cat`` the open local file into the remote file (created or truncated)."""
    with _stream(sftp, "exec cat > " + shell_quote(remote), None, "writing") as chan:
        while data := src.read(STREAM_CHUNK):
            chan.sendall(data)
        chan.shutdown_write()


def _quote_bytes(word: bytes) -> bytes:
    """``word`` as one single-quoted shell word (bytes: a file name need not be UTF-8)."""
    return b"'" + word.replace(b"'", b"'\\''") + b"'"


@contextmanager
def _stream(
    sftp: paramiko.SFTPClient, command: str | bytes, window: int | None, doing: str
) -> Iterator[Any]:
    """An exec channel running ``command`` (a ``cat``) on the pooled connection, for the
    block to move the bytes; a transport error while it does is ``_StreamFailed`` (the
    caller falls back to SFTP), and ``cat``'s own exit status is checked after."""
    chan = _open_stream(sftp, command, window)
    try:
        try:
            yield chan
        except (paramiko.SSHException, OSError) as exc:
            _lost(chan.get_transport(), exc)
            raise _StreamFailed(f"{doing}: {exc}") from None
        _finish(chan, "cat")
    finally:
        chan.close()


def _changed(dir_fd: int, name: str, attr: paramiko.SFTPAttributes) -> bool:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return True
    if not stat.S_ISREG(info.st_mode):
        return True
    # SFTP (version 3) carries whole seconds
    return info.st_size != attr.st_size or int(info.st_mtime) != int(attr.st_mtime or 0)


def _owner(dir_fd: int) -> tuple[int, int] | None:
    """Whose files these are: a root daemon gives fetched files to the run folder's owner."""
    if os.geteuid() != 0:
        return None
    info = os.fstat(dir_fd)
    return (info.st_uid, info.st_gid) if info.st_uid != 0 else None
