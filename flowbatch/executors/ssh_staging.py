"""Moving a run folder up and down by SFTP.

Up: the run's inputs, with their modes and modification times (so that a file the run
did not touch is recognized as unchanged on the way back). Down: every regular file that
the local folder lacks or that differs in size or modification time, written to a
temporary name and renamed into place (a symlink planted in the local folder is
replaced, never followed).

flowbatch's own files are neither sent nor fetched: ``run.json`` changes locally while
the run runs (a stale copy coming back would overwrite the truth), ``request.yaml`` is not
the script's business, and ``attempts/`` is the local archive of earlier attempts.

Speed: paramiko's SFTP client gets ~110 MB/s on loopback where OpenSSH's sftp and scp
get ~150 (every 32 KiB read is a request, its response comes in two SSH packets, and each
read copies out of a channel buffer that is then shifted). A file of
:data:`STREAM_MIN_SIZE` or more therefore travels as a plain byte stream, ``cat`` on an
exec channel of the same pooled connection (single-quoted path, wider receive window):
about twice SFTP's rate. Smaller files stay on SFTP, which is quicker for them (no
process to start). A stream that fails for any reason but a lost connection (no
``cat``, a login shell that prints, a file that changed meanwhile) is not trusted: the
file goes again over SFTP, so the stream only ever makes things faster.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import paramiko

from ..render.script import LOGS_DIR, STATUS_DIR, shell_quote
from ..safeio import open_beneath

log = logging.getLogger("flowbatch.ssh")

#: files at least this big are streamed through ``cat``; on loopback a 1 KB file took
#: 2.0 ms by SFTP and 3.6 ms by stream, 1 MiB 6.9 and 7.1 ms, 16 MiB 141 and 61 ms
STREAM_MIN_SIZE = 1 << 20
#: receive window of a download stream (the Transport's default, 2 MiB, is kept for the
#: other channels: a wider SFTP channel window made SFTP slower; a stream got ~15% faster)
STREAM_WINDOW = 8 << 20
#: bytes per read and per write of a stream
STREAM_CHUNK = 1 << 20
#: a stream that moves no byte for this long has failed (and the file goes over SFTP)
STREAM_IDLE_TIMEOUT = 300.0

#: top-level names of a run folder that never go up
NOT_UPLOADED = frozenset({STATUS_DIR, LOGS_DIR, "run.json", "request.yaml", "attempts"})
#: top-level names of a run folder that never come down
NOT_DOWNLOADED = frozenset({"run.json", "request.yaml", "attempts"})


def upload_tree(sftp: paramiko.SFTPClient, local_dir: Path, remote_dir: str) -> int:
    """Copy ``local_dir``'s inputs into the (existing) ``remote_dir``; the file count."""
    count = 0
    for entry in sorted(local_dir.iterdir()):
        if entry.name in NOT_UPLOADED:
            continue
        count += _upload(sftp, local_dir, Path(entry.name), f"{remote_dir}/{entry.name}")
    return count


def _upload(sftp: paramiko.SFTPClient, root: Path, rel: Path, remote: str) -> int:
    path = root / rel
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        # staged inputs are copies; a link could point anywhere on the daemon's host
        log.warning("not uploading symlink %s", path)
        return 0
    if stat.S_ISDIR(info.st_mode):
        sftp.mkdir(remote, mode=stat.S_IMODE(info.st_mode) | 0o700)
        return sum(
            _upload(sftp, root, rel / child.name, f"{remote}/{child.name}")
            for child in path.iterdir()
        )
    if not stat.S_ISREG(info.st_mode):
        return 0
    # the folder is the run user's: a file swapped for a link after the lstat above must
    # not make the (root) daemon send what it points to, so open without following links
    try:
        fd = open_beneath(root, rel)
    except OSError as exc:
        log.warning("not uploading %s: %s", path, exc)
        return 0
    with os.fdopen(fd, "rb") as src:
        info = os.fstat(src.fileno())
        if not stat.S_ISREG(info.st_mode):
            return 0
        send_file(sftp, src, remote, info.st_size)
    sftp.chmod(remote, stat.S_IMODE(info.st_mode))
    sftp.utime(remote, (info.st_atime, info.st_mtime))
    return 1


def download_tree(sftp: paramiko.SFTPClient, remote_dir: str, local_dir: Path) -> int:
    """Fetch new or changed files of ``remote_dir`` into ``local_dir``; the file count."""
    owner = _owner(local_dir)
    return _download(sftp, remote_dir, local_dir, owner, top=True)


def _download(
    sftp: paramiko.SFTPClient,
    remote_dir: str,
    local_dir: Path,
    owner: tuple[int, int] | None,
    *,
    top: bool = False,
) -> int:
    count = 0
    for attr in sftp.listdir_attr(remote_dir):
        name = attr.filename
        if (top and name in NOT_DOWNLOADED) or name in (".", "..") or "/" in name:
            continue
        mode = attr.st_mode or 0
        remote = f"{remote_dir}/{name}"
        local = local_dir / name
        if stat.S_ISDIR(mode):
            if local.is_symlink() or (local.exists() and not local.is_dir()):
                log.warning("not fetching %s: %s is in the way", remote, local)
                continue
            if not local.exists():
                local.mkdir()
                _chown(local, owner)
            count += _download(sftp, remote, local, owner)
        elif stat.S_ISREG(mode) and _changed(local, attr):
            tmp = local_dir / f".{name}.flowbatch-fetch"
            try:
                # the folder is the run user's: mode, times and owner are set through the
                # descriptor of the file created here, never by a path a link could replace
                with _create(tmp) as out:
                    fetch_into(sftp, remote, out, attr.st_size or 0)
                    out.flush()
                    fd = out.fileno()
                    os.fchmod(fd, stat.S_IMODE(mode) & 0o777)
                    if attr.st_mtime is not None:
                        os.utime(fd, (attr.st_atime or attr.st_mtime, attr.st_mtime))
                    if owner is not None:
                        os.fchown(fd, *owner)
                os.replace(tmp, local)
            except BaseException:
                tmp.unlink(missing_ok=True)  # no half-fetched leftover
                raise
            count += 1
    return count


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


def fetch_file(sftp: paramiko.SFTPClient, remote: str, local: Path, size: int) -> None:
    """Copy the remote regular file ``remote`` (``size`` bytes when listed) to ``local``.

    ``local`` is created afresh (a file or symlink already there is removed first, never
    written through) with mode 0600; streamed when large, else by SFTP."""
    with _create(local) as out:
        fetch_into(sftp, remote, out, size)


def fetch_into(sftp: paramiko.SFTPClient, remote: str, out: BinaryIO, size: int) -> None:
    """Write the remote regular file ``remote`` (``size`` bytes when listed) into the new,
    empty file ``out``: streamed when large, else (or when the stream fails) by SFTP."""
    if size >= STREAM_MIN_SIZE:
        try:
            got = _stream_down(sftp, remote, out)
            if got == size:
                return
            why = f"{got} bytes came, {size} were listed"
        except _StreamFailed as exc:
            why = str(exc)
        log.warning("streaming %s failed (%s); fetching it by SFTP", remote, why)
        out.seek(0)
        out.truncate()
    sftp.getfo(remote, out)


class _StreamFailed(Exception):
    """A stream went wrong while its connection stayed up: SFTP may still do it."""


def _create(path: Path) -> Any:
    """``path`` opened for writing as a new file (never through a link planted there)."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.fdopen(os.open(path, flags, 0o600), "wb")


def _open_stream(sftp: paramiko.SFTPClient, command: str, window: int | None) -> Any:
    """An exec channel running ``command`` on the SFTP session's own connection."""
    channel = sftp.get_channel()
    transport = channel.get_transport() if channel is not None else None
    if transport is None or not transport.is_active():
        raise ConnectionError("the ssh connection is closed")
    try:
        chan = transport.open_session(window_size=window)
        chan.settimeout(STREAM_IDLE_TIMEOUT)
        chan.exec_command(command)
    except (paramiko.SSHException, OSError) as exc:
        _lost(transport, exc)
        raise _StreamFailed(f"cannot start it: {exc}") from None
    return chan


def _finish(chan: Any, what: str) -> None:
    """Wait for the remote command's exit status; :class:`_StreamFailed` unless 0."""
    if not chan.status_event.wait(STREAM_IDLE_TIMEOUT):
        raise _StreamFailed(f"{what}: no exit status")
    code = chan.recv_exit_status()
    if code != 0:
        err = b""
        while chan.recv_stderr_ready() and len(err) < 2000:
            err += chan.recv_stderr(2000)
        detail = err.decode("utf-8", "replace").strip()[:500]
        raise _StreamFailed(f"{what} exited with {code}" + (f": {detail}" if detail else ""))


def _lost(transport: paramiko.Transport, exc: BaseException) -> None:
    """Raise ``exc`` as the connection error it is when the connection is gone."""
    if not transport.is_active():
        raise ConnectionError(f"the ssh connection was lost: {exc}") from None


def _stream_down(sftp: paramiko.SFTPClient, remote: str, out: Any) -> int:
    """``cat`` the remote file into the open file ``out``; the byte count."""
    got = 0
    with _stream(sftp, "exec cat -- " + shell_quote(remote), STREAM_WINDOW, "reading") as chan:
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


@contextmanager
def _stream(
    sftp: paramiko.SFTPClient, command: str, window: int | None, doing: str
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


def _changed(local: Path, attr: paramiko.SFTPAttributes) -> bool:
    try:
        info = local.lstat()
    except FileNotFoundError:
        return True
    if not stat.S_ISREG(info.st_mode):
        return True
    # SFTP (version 3) carries whole seconds
    return info.st_size != attr.st_size or int(info.st_mtime) != int(attr.st_mtime or 0)


def _owner(local_dir: Path) -> tuple[int, int] | None:
    """Whose files these are: a root daemon gives fetched files to the run folder's owner."""
    if os.geteuid() != 0:
        return None
    info = local_dir.stat()
    return (info.st_uid, info.st_gid) if info.st_uid != 0 else None


def _chown(path: Path, owner: tuple[int, int] | None) -> None:
    if owner is not None:
        os.chown(path, *owner, follow_symlinks=False)
