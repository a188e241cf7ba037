"""A run's output files and their archive (seed-inventory §5.4).

``files`` lists what ``run.json`` recorded as the run's outputs (key, source, title,
caption, size). ``archive`` writes ``run.<id>.tar.gz`` whose members are named by file
key, as flowServ's ``get_runarchive``; only a SUCCESS run has one (flowServ answered an
unknown-run error for the others; here the refusal says which state the run is in).
"""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import FlowbatchError, NotFoundError, StateError
from .runs import RunRecord, State
from .site import Site


def run_files(site: Site, run_id: str) -> list[dict[str, Any]]:
    """The run's output files: ``key``, ``source`` (path in the run folder), ``title``,
    ``caption``, ``size`` in bytes now (None when the file is gone)."""
    run = site.store.load(run_id)
    run_dir = site.store.run_dir(run)
    out = []
    for f in run.files:
        path = run_dir / f.get("source", f["key"])
        out.append(
            {
                "key": f["key"],
                "source": f.get("source", f["key"]),
                "title": f.get("title"),
                "caption": f.get("caption"),
                "size": path.lstat().st_size if path.is_file() else None,
            }
        )
    return out


def archive_name(run_id: str) -> str:
    return f"run.{run_id}.tar.gz"


def write_archive(site: Site, run_id: str, output: str | os.PathLike[str] | None = None) -> Path:
    """Write the run's output files into a tar.gz, members named by key; returns its path.

    ``output`` is a file, or a folder to put ``run.<id>.tar.gz`` in (default: the
    current folder). Written under a temporary name and renamed: never half an archive.
    """
    run = site.store.load(run_id)
    if run.state != State.SUCCESS:
        raise StateError(
            f"run {run.id} is {run.state.value}: only a successful run has an archive",
            hint=f"`flowbatch runs show {run.id}` says why" if run.state != State.PENDING else None,
        )
    members = _members(site, run)
    target = Path(output) if output is not None else Path.cwd()
    if target.is_dir() or (output is not None and os.fspath(output).endswith(os.sep)):
        target = target / archive_name(run.id)
    folder = target.parent.resolve()
    if not folder.is_dir():
        raise FlowbatchError(
            f"cannot write the archive {target}: no folder {target.parent}",
            hint="make the folder first, or give -o a file in an existing folder",
        )
    results = site.layout.results.resolve()
    if folder == results or results in folder.parents:
        raise FlowbatchError(
            f"cannot write the archive {target}: it is inside the results tree "
            f"({results}), whose files the daemon keeps",
            hint="give -o a file or folder outside the site's results/",
        )
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for key, path in members:
                _add(tar, key, path)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _members(site: Site, run: RunRecord) -> list[tuple[str, Path]]:
    """(member name, file) of each output; a key that is no safe relative path, or a
    file that is gone or is a link, is refused (a run must not make the archiver read
    what lies outside its folder)."""
    run_dir = site.store.run_dir(run).resolve()
    out = []
    for f in run.files:
        key = str(f["key"])
        parts = PurePosixPath(key).parts
        if not parts or PurePosixPath(key).is_absolute() or ".." in parts:
            raise NotFoundError(f"run {run.id}: file key {key!r} is not a safe archive name")
        path = run_dir / f.get("source", key)
        if path.is_symlink() or not path.is_file() or not path.resolve().is_relative_to(run_dir):
            raise NotFoundError(
                f"run {run.id}: output file {f.get('source', key)!r} is missing or not a "
                "regular file in the run folder"
            )
        if not os.access(path, os.R_OK):
            # a participant's private (0600) input, which the site took back as its own
            # when the run ended: said as that, not as a PermissionError (found by review)
            raise FlowbatchError(
                f"run {run.id}: output file {f.get('source', key)!r} is not readable by you "
                f"(mode {stat.S_IMODE(path.stat().st_mode):04o}, the site's own since the run "
                "ended)",
                hint="a private input stays private: ask the site's admin for the archive",
            )
        out.append((key, path))
    return out


def _add(tar: tarfile.TarFile, key: str, path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NotFoundError(f"{path} is not a regular file")
        info = tarfile.TarInfo(key)
        info.size = st.st_size
        info.mtime = int(st.st_mtime)
        info.mode = 0o644
        tar.addfile(info, fh)
