"""Atomic file writes: a temporary file in the same folder, fsync, then rename.

A reader (another process, a daemon restarted after a crash) sees the old content or the
new one, never half of it.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
from typing import Any


def write_bytes(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int = 0o644,
    fsync: bool = True,
    owner: tuple[int, int] | None = None,
    dir_fd: int | None = None,
) -> None:
    """Replace ``path`` with ``data`` atomically (``owner``: its user and group, given
    before it is in place; ``dir_fd``: ``path`` is a name in that open folder)."""
    p = os.fspath(path)
    fd, tmp = _new_temporary(p, mode, dir_fd)
    try:
        try:
            write_all(fd, data)
            if owner is not None:
                os.fchown(fd, *owner)
            os.fchmod(fd, mode)  # the umask may have narrowed it
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise


def sync_folder(path: str | os.PathLike[str]) -> None:
    """fsync a folder: the names made or replaced in it are on disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_SYNCFS: list[Any] = []  # libc's syncfs, looked up once (None: not there)


def sync_file_system(path: str | os.PathLike[str]) -> None:
    """``syncfs(2)`` of the file system that holds the folder ``path``: everything written
    there so far is on disk (``os.sync()`` where the C library has no syncfs)."""
    import ctypes  # only where something is synced: not a cost of every start

    if not _SYNCFS:
        fn = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
        if fn is not None:
            fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        _SYNCFS.append(fn)
    if _SYNCFS[0] is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _SYNCFS[0](fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fspath(path))
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may take less than given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


_COUNTER = itertools.count()


def _new_temporary(path: str, mode: int, dir_fd: int | None = None) -> tuple[int, str]:
    """A new file beside ``path`` (``.<name>.<pid>.<n>.tmp``), created exclusively and
    never through a link: a name someone else took (a user's folder) is skipped for a
    random one. (``tempfile.mkstemp`` did the same at several times the cost.)"""
    folder, name = os.path.split(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    suffix = f"{os.getpid()}.{next(_COUNTER)}"
    for _ in range(100):
        tmp = os.path.join(folder, f".{name}.{suffix}.tmp")
        try:
            return os.open(tmp, flags, mode, dir_fd=dir_fd), tmp
        except FileExistsError:
            suffix = secrets.token_hex(8)
    raise FileExistsError(f"no free temporary name beside {path}")


def write_private(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> None:
    """Write ``path`` in a folder no one else sees yet (a run folder before it is renamed
    into place): the folder's rename is the atomic step, so no temporary file here. A
    link already at ``path`` is never followed (the write fails instead)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it
        write_all(fd, data)
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike[str], text: str, **kw: Any) -> None:
    write_bytes(path, text.encode("utf-8"), **kw)


def write_json(
    path: str | os.PathLike[str], value: Any, *, indent: int | None = 2, **kw: Any
) -> None:
    """``indent=None`` writes compact JSON with the C encoder (an indented dump goes
    through Python's pure encoder: ten times slower on a large leaderboard)."""
    write_bytes(path, json_bytes(value, indent=indent), **kw)


def json_bytes(value: Any, *, indent: int | None = 2) -> bytes:
    """``value`` as the JSON text :func:`write_json` writes (UTF-8, final newline)."""
    if indent is None:
        text = json.dumps(value, separators=(",", ":"), default=str)
    else:
        text = json.dumps(value, indent=indent, default=str)
    return (text + "\n").encode("utf-8")


# The encoder behind ``json.dumps`` without indent (C, when ``_json`` is there), built once:
# json.dumps makes a new one per call, and ``indent=2`` goes through the pure-Python
# encoder, three times slower on a run.json.
_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_ENCODE: Any = (
    _make_encoder(
        None, str, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )
    if _make_encoder is not None
    else None
)


def _compact(value: Any) -> str:
    if _ENCODE is None:
        return json.dumps(value, separators=(", ", ": "), default=str)
    return "".join(_ENCODE(value, 0))


_QUOTE = json.encoder.encode_basestring_ascii
#: the plain values a record holds most, written as the encoder writes them
_PLAIN: dict[type, Any] = {
    str: _QUOTE,
    int: int.__repr__,
    bool: lambda value: "true" if value else "false",
    type(None): lambda value: "null",
}


def record_bytes(record: dict[str, Any]) -> bytes:
    """A flat record (``run.json``) as JSON a person reads line by line: a key per line,
    each object of a list of objects (steps, history, files) on a line of its own,
    anything else on its key's line. Half the cost of ``indent=2``. (Written three times
    a run: keys and plain values go straight to the C string encoder or ``repr``, the
    rest through the encoder.)"""
    lines = []
    for key, value in record.items():
        plain = _PLAIN.get(type(value))
        if plain is not None:
            lines.append(f"  {_QUOTE(key)}: {plain(value)}")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            items = ",\n    ".join([_compact(v) for v in value])
            lines.append(f"  {_QUOTE(key)}: [\n    {items}\n  ]")
        else:
            lines.append(f"  {_QUOTE(key)}: {_compact(value)}")
    if not lines:
        return b"{}\n"
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode("utf-8")
