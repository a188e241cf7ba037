"""Moving a run folder up and down by SFTP.

Up: the run's inputs, with their modes and modification times (so that a file the run
did not touch is recognized as unchanged on the way back). Down: every regular file that
the local folder lacks or that differs in size or modification time, written to a
temporary name and renamed into place (a symlink planted in the local folder is
replaced, never followed).

flowbatch's own files are neither sent nor fetched: ``run.json`` changes locally while
the run runs (a stale copy coming back would overwrite the truth), ``request.yaml`` is not
the script's business, and ``attempts/`` is the local archive of earlier attempts.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import paramiko

from ..render.script import LOGS_DIR, STATUS_DIR

log = logging.getLogger("flowbatch.ssh")

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
        count += _upload(sftp, entry, f"{remote_dir}/{entry.name}")
    return count


def _upload(sftp: paramiko.SFTPClient, path: Path, remote: str) -> int:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        # staged inputs are copies; a link could point anywhere on the daemon's host
        log.warning("not uploading symlink %s", path)
        return 0
    if stat.S_ISDIR(info.st_mode):
        sftp.mkdir(remote, mode=stat.S_IMODE(info.st_mode) | 0o700)
        return sum(_upload(sftp, child, f"{remote}/{child.name}") for child in path.iterdir())
    if not stat.S_ISREG(info.st_mode):
        return 0
    sftp.put(str(path), remote)
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
            sftp.get(remote, str(tmp))
            os.chmod(tmp, stat.S_IMODE(mode) & 0o777)
            if attr.st_mtime is not None:
                os.utime(tmp, (attr.st_atime or attr.st_mtime, attr.st_mtime))
            _chown(tmp, owner)
            os.replace(tmp, local)
            count += 1
    return count


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
