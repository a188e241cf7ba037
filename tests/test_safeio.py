"""flowbatch.safeio: what an installed template's files become in a new run (copy_tree), and
the one-part-at-a-time opens of files in folders users control (open_beneath)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from flowbatch.safeio import copy_tree, open_beneath, read_tail_or_none, read_up_to


def _tree(root: Path) -> Path:
    src = root / "src"
    (src / "code" / "deep").mkdir(parents=True)
    (src / "run.py").write_text("print('hi')\n")
    os.chmod(src / "run.py", 0o751)
    (src / "code" / "deep" / "data.bin").write_bytes(bytes(range(256)) * 5000)
    (src / "empty").write_bytes(b"")
    os.chmod(src / "code", 0o750)
    os.symlink("run.py", src / "alias.py")
    os.symlink("/nonexistent/target", src / "dangling")
    os.utime(src / "run.py", ns=(1_000_000_000, 1_500_000_000_123))
    return src


def _describe(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                out[rel] = ("dir", st.st_mode & 0o7777)
            else:
                out[rel] = ("file", st.st_mode & 0o7777, st.st_mtime_ns, path.read_bytes())
    return out


def test_copy_tree_gives_what_shutil_copytree_gave(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    copy_tree(str(src), str(ours))
    shutil.copytree(src, theirs, symlinks=True)
    got = _describe(ours)
    assert got == _describe(theirs)
    assert got["run.py"][1:3] == (0o751, 1_500_000_000_123)
    assert got["code"] == ("dir", 0o750)
    assert got["dangling"] == ("link", "/nonexistent/target")
    assert len(got["code/deep/data.bin"][3]) == 256 * 5000


def test_copy_tree_never_writes_through_a_name_already_there(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep")
    os.symlink(victim, dest / "run.py")
    with pytest.raises(FileExistsError):
        copy_tree(str(src), str(dest))
    assert victim.read_text() == "keep"


def test_copy_tree_refuses_a_fifo_instead_of_blocking(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "pipe")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(OSError, match="not a regular file"):
        copy_tree(str(src), str(dest))


def test_open_beneath_takes_the_parts_pathlib_gives_and_nothing_outside(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.out").write_bytes(b"one\ntwo\n")
    (tmp_path / "empty").write_bytes(b"")
    os.symlink("logs", tmp_path / "link")
    os.symlink("/etc/passwd", tmp_path / "logs" / "passwd")

    def read(rel: str | Path) -> bytes:
        fd = open_beneath(tmp_path, rel)
        try:
            return os.read(fd, 100)
        finally:
            os.close(fd)

    for rel in ("logs/a.out", "logs//a.out", "./logs/a.out", "logs/./a.out", Path("logs/a.out")):
        assert read(rel) == b"one\ntwo\n", rel
    for rel in ("/etc/passwd", "../x", "logs/../logs/a.out", "", ".", "./"):
        with pytest.raises(OSError) as caught:
            read(rel)
        assert caught.value.errno == errno.EINVAL, rel
    for rel in ("link/a.out", "logs/passwd"):
        with pytest.raises(OSError) as caught:
            read(rel)
        assert caught.value.errno in (errno.ELOOP, errno.ENOTDIR), rel
    assert read_tail_or_none(tmp_path, "logs/a.out", 4) == b"two\n"
    assert read_tail_or_none(tmp_path, "empty", 4) == b""
    assert read_tail_or_none(tmp_path, "logs/missing", 4) is None
    assert read_tail_or_none(tmp_path, "logs/passwd", 4) is None


def test_read_up_to_reads_from_where_the_file_stands_and_no_more(tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000  # 256,000 bytes: several 64 KiB chunks
    (tmp_path / "f").write_bytes(data)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        assert read_up_to(fd, 200_000) == data[:200_000]
        assert read_up_to(fd, 200_000) == data[200_000:]  # the rest, short of the limit
        os.lseek(fd, 10, os.SEEK_SET)
        assert read_up_to(fd, 5) == data[10:15]
    finally:
        os.close(fd)
