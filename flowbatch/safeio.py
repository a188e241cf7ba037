"""Reading files in folders that users control, without following their symlinks.

A run folder belongs to the run's user; the daemon is often root. Every file the daemon
reads there (logs for messages and pages, files staged for post-processing) and every file
a request names is opened one path component at a time with ``O_NOFOLLOW``, relative to
the folder it must stay in: a symlink anywhere on the way is refused, so a user cannot
point the daemon at ``/etc/shadow`` or at another user's files.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .store.atomic import write_all

#: errno values that mean "a symbolic link was on the way"
LINK_ERRORS = frozenset({errno.ELOOP, errno.ENOTDIR, errno.EMLINK})


def open_beneath(folder: Path, rel: str | Path) -> int:
    """A read-only descriptor of ``folder/rel``; raises :class:`OSError` for ``..``, an
    absolute path (EINVAL), a symlink on the way (ELOOP), or a missing file (ENOENT).
    The caller closes it."""
    text = str(rel)
    # the parts as pathlib gives them (empty and "." parts dropped), without its objects:
    # this runs for every log a run page shows
    parts = [part for part in text.split("/") if part and part != "."]
    if text.startswith("/") or ".." in parts or not parts:
        raise OSError(errno.EINVAL, "a path inside the folder, without '..'", text)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        last = len(parts) - 1
        for i, part in enumerate(parts):
            nxt = os.open(part, flags if i == last else flags | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_up_to(fd: int, limit: int) -> bytes:
    """At most ``limit`` bytes of ``fd`` from where it stands, in chunks of 64 KiB (a
    file a user controls may be huge; the usual one is small: no big buffer per read)."""
    chunks = []
    size = 0
    while size < limit:
        chunk = os.read(fd, min(1 << 16, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def read_tail(folder: Path, rel: str | Path, max_bytes: int) -> bytes:
    """The last ``max_bytes`` of a regular file under ``folder`` (b"" when it cannot be
    read safely: missing, a symlink on the way, not a regular file)."""
    return read_tail_or_none(folder, rel, max_bytes) or b""


def read_tail_or_none(folder: Path, rel: str | Path, max_bytes: int) -> bytes | None:
    """:func:`read_tail`, but None when the file cannot be read safely (so a caller
    tells a missing log from an empty one with the same one open)."""
    try:
        fd = open_beneath(folder, rel)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not _regular(st.st_mode):
            return None
        if not st.st_size:
            return b""  # most logs of a run that went well
        os.lseek(fd, max(0, st.st_size - max_bytes), os.SEEK_SET)
        return os.read(fd, max_bytes)
    finally:
        os.close(fd)


def copy_beneath(folder: Path, rel: str | Path, dest: Path) -> None:
    """Copy the regular file ``folder/rel`` (opened safely) to the new file ``dest``."""
    fd = open_beneath(folder, rel)
    try:
        if not _regular(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(rel))
        copy_fd(fd, dest)
    finally:
        os.close(fd)


class CopyLimit(OSError):
    """A copy over the bytes it may write (EFBIG): the source is larger than allowed, or
    grew. Not the destination's file system refusing a large file, which is a plain
    :class:`OSError`."""

    def __init__(self, reason: str) -> None:
        super().__init__(errno.EFBIG, reason)


def copy_fd(fd: int, dest: Path, *, max_bytes: int | None = None) -> None:
    """Copy an open file's content to ``dest`` (a new file, never through a link), its
    holes kept, with the source's read and execute bits for its group and others and
    no setuid: a participant's input of mode 0600 stays theirs alone in a results tree
    everyone reads (it became 0644, found by review). A file over ``max_bytes`` now
    (grown since it was checked) raises :class:`CopyLimit`, and what its owner
    appends while it is copied is not copied (:func:`copy_sparse`)."""
    st = os.fstat(fd)
    if max_bytes is not None and st.st_size > max_bytes:
        raise CopyLimit(f"{st.st_size} bytes, over the limit of {max_bytes}")
    mode = (stat.S_IMODE(st.st_mode) & 0o755) | 0o600
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    out = os.open(dest, flags, 0o600)
    try:
        os.ftruncate(out, 0)
        copy_sparse(fd, out, max_written=max_bytes)
        os.fchmod(out, mode)
    finally:
        os.close(out)


def copy_tree(src: str, dest: str) -> None:
    """Copy the folder ``src`` into the existing, empty folder ``dest``: files with their
    mode and modification time, symlinks as symlinks, folders with their mode. For a
    folder the site itself owns (an installed template's files), copied into every new
    run: ``shutil.copytree(symlinks=True)`` did the same with three times the system
    calls per file (access times, extended attributes, a stat per step)."""
    with os.scandir(src) as listing:
        entries = list(listing)
    for entry in entries:
        target = os.path.join(dest, entry.name)
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        elif entry.is_dir(follow_symlinks=False):
            mode = entry.stat(follow_symlinks=False).st_mode & 0o7777
            os.mkdir(target, 0o700)
            copy_tree(entry.path, target)
            os.chmod(target, mode)
        else:
            _copy_file(entry.path, target, entry.stat(follow_symlinks=False))


def _copy_file(src: str, dest: str, st: os.stat_result) -> None:
    if not _regular(st.st_mode):  # a FIFO would block the daemon, a device is no file
        raise OSError(errno.EINVAL, "not a regular file, a folder or a symlink", src)
    mode = st.st_mode & 0o7777
    fd_in = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not _regular(os.fstat(fd_in).st_mode):  # swapped since the listing
            raise OSError(errno.EINVAL, "not a regular file", src)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd_out = os.open(dest, flags, 0o600)
        try:
            copy_content(fd_in, fd_out)
            os.fchmod(fd_out, mode)  # the umask may have narrowed it
            os.utime(fd_out, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def copy_content(fd_in: int, fd_out: int) -> None:
    """Copy ``fd_in`` (a fresh descriptor: from its start) to ``fd_out`` (sendfile, else reads)."""
    offset = 0
    try:
        while sent := os.sendfile(fd_out, fd_in, offset, 1 << 30):
            offset += sent
        return
    except OSError as exc:
        if offset or exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    while chunk := os.read(fd_in, 1 << 20):  # a file system without sendfile
        write_all(fd_out, chunk)


def copy_sparse(fd_in: int, fd_out: int, *, max_written: int | None = None) -> int:
    """Copy ``fd_in`` to the empty ``fd_out`` keeping its holes (a sparse file of 1 GB
    that holds 4 KiB costs 4 KiB again, not 1 GB): its data ranges found by
    ``SEEK_DATA``/``SEEK_HOLE``, each sent at its offset; a file system that cannot say
    where data is gets a plain copy. Returns the bytes written.

    The file's size when the copy begins bounds it (what its owner appends meanwhile is
    not copied), and ``max_written`` bounds the bytes written: past it (its owner filled
    holes while it was copied, through another name) :class:`CopyLimit` is raised."""
    size = os.fstat(fd_in).st_size
    written = 0

    def send(offset: int, end: int) -> None:
        nonlocal written
        while offset < end:
            count = end - offset
            if max_written is not None and written + count > max_written:
                count = max_written - written
                if count <= 0:
                    raise CopyLimit("over the bytes it may copy")
            sent = os.sendfile(fd_out, fd_in, offset, count)
            if not sent:
                return
            offset += sent
            written += sent

    pos = 0
    try:
        while pos < size:
            try:
                data = os.lseek(fd_in, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole is left
                    break
                raise
            if data >= size:
                break
            hole = min(os.lseek(fd_in, data, os.SEEK_HOLE), size)
            os.lseek(fd_out, data, os.SEEK_SET)
            send(data, hole)
            pos = hole
    except OSError as exc:
        if written or exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
        # no SEEK_DATA or no sendfile here: a plain read and write, bounded the same way
        offset = 0
        while offset < size:
            count = min(1 << 20, size - offset)
            if max_written is not None and written + count > max_written:
                raise CopyLimit("over the bytes it may copy") from None
            chunk = os.pread(fd_in, count, offset)
            if not chunk:
                break
            os.pwrite(fd_out, chunk, offset)
            offset += len(chunk)
            written += len(chunk)
    os.ftruncate(fd_out, size)
    return written


def _regular(mode: int) -> bool:
    return stat.S_ISREG(mode)
