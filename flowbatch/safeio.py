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
from pathlib import Path

#: errno values that mean "a symbolic link was on the way"
LINK_ERRORS = frozenset({errno.ELOOP, errno.ENOTDIR, errno.EMLINK})


def open_beneath(folder: Path, rel: str | Path) -> int:
    """A read-only descriptor of ``folder/rel``; raises :class:`OSError` for ``..``, an
    absolute path (EINVAL), a symlink on the way (ELOOP), or a missing file (ENOENT).
    The caller closes it."""
    path = Path(rel)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise OSError(errno.EINVAL, "a path inside the folder, without '..'", str(rel))
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(path.parts):
            last = i == len(path.parts) - 1
            nxt = os.open(part, flags if last else flags | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_tail(folder: Path, rel: str | Path, max_bytes: int) -> bytes:
    """The last ``max_bytes`` of a regular file under ``folder`` (b"" when it cannot be
    read safely: missing, a symlink on the way, not a regular file)."""
    try:
        fd = open_beneath(folder, rel)
    except OSError:
        return b""
    try:
        st = os.fstat(fd)
        if not _regular(st.st_mode):
            return b""
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


def copy_fd(fd: int, dest: Path) -> None:
    """Copy an open file's content to ``dest`` (a new file)."""
    os.lseek(fd, 0, os.SEEK_SET)
    with open(dest, "wb") as out:
        while chunk := os.read(fd, 1 << 20):
            out.write(chunk)


def _regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)
