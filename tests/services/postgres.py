"""A private PostgreSQL server on loopback for the tests.

Never the system cluster: ``initdb`` into a fresh temporary folder (owned by user
``postgres`` when the tests run as root, since the server refuses to run as root), started
on 127.0.0.1 and a free port with its socket in that folder, trust authentication for
loopback only, durability off (fsync, synchronous_commit: a test server). Each test gets
an empty database of its own (:meth:`PostgresServer.create_database`). Stopped by the
postmaster's own PID at the end, and its folder removed.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .apt import ensure_packages

USER = "postgres"
HOST = "127.0.0.1"
PREFIX = "flowbatch-pg-"  # the server's folder in the temporary directory
OWNER_FILE = "owner.pid"  # the PID of the test session that started it


def bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding the server programs."""
    found = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        if all(os.access(os.path.join(d, p), os.X_OK) for p in ("initdb", "pg_ctl", "postgres")):
            try:
                found.append((float(Path(d).parent.name), d))
            except ValueError:
                continue
    return Path(max(found)[1]) if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    root: Path | None = None
    port: int = 0
    pid: int | None = None
    bin: Path | None = None
    _counter: int = field(default=0, repr=False)

    @property
    def data(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@{HOST}:{self.port}/{database}"

    # -- start / stop --------------------------------------------------------------------
    def _as_user(self, *args: str) -> list[str]:
        return ["runuser", "-u", USER, "--", *args] if os.geteuid() == 0 else list(args)

    def start(self) -> PostgresServer:
        reap_stale()
        self.bin = bin_dir()
        if self.bin is None:
            ensure_packages(["postgresql"], commands=["pg_ctlcluster"])
            self.bin = bin_dir()
        if self.bin is None:
            raise RuntimeError("the PostgreSQL server programs are not installed")
        self.root = Path(tempfile.mkdtemp(prefix=PREFIX))
        sock = self.root / "sock"
        sock.mkdir()
        if os.geteuid() == 0:
            for path in (self.root, sock):
                shutil.chown(path, USER, USER)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            USER,
            "-A",
            "trust",  # loopback only (listen_addresses below), a private test server
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )
        self.port = free_port()
        options = (
            f"-h {HOST} -p {self.port} -k {sock} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200 -c shared_buffers=64MB"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "30",
            "start",
        )
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        (self.root / OWNER_FILE).write_text(f"{os.getpid()}\n")
        return self

    def _run(self, *args: str) -> None:
        proc = subprocess.run(
            self._as_user(*args), capture_output=True, text=True, timeout=60, check=False
        )
        if proc.returncode != 0:
            log = ""
            if self.root and (self.root / "server.log").exists():
                log = (self.root / "server.log").read_text()[-2000:]
            raise RuntimeError(
                f"{Path(args[0]).name} failed ({proc.returncode}): {proc.stderr.strip()}\n{log}"
            )

    def stop(self) -> None:
        """Fast shutdown of our own postmaster (by its PID), then remove its folder."""
        if self.pid is not None and self._serves_our_folder(self.pid):
            try:
                os.kill(self.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and _alive(self.pid):
                time.sleep(0.05)
            if _alive(self.pid):
                os.kill(self.pid, signal.SIGQUIT)  # immediate shutdown
            self.pid = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def _serves_our_folder(self, pid: int) -> bool:
        """The PID is still our postmaster (not a PID reused since by another process)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return str(self.data).encode() in cmdline

    # -- databases -----------------------------------------------------------------------
    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its URL."""
        import psycopg2

        self._counter += 1
        name = f"{prefix}_{os.getpid()}_{self._counter}"
        conn = psycopg2.connect(host=HOST, port=self.port, user=USER, dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg2

        name = url.rsplit("/", 1)[1]
        conn = psycopg2.connect(host=HOST, port=self.port, user=USER, dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            conn.close()


def reap_stale() -> None:
    """Stop the servers of earlier test sessions that were killed before their teardown
    (pg_ctl detaches the server): each by the PID in its own folder, then the folder."""
    for owner in glob.glob(os.path.join(tempfile.gettempdir(), PREFIX + "*", OWNER_FILE)):
        root = Path(owner).parent
        try:
            if _alive(int(Path(owner).read_text().split()[0])):
                continue  # its session still runs
        except (OSError, ValueError, IndexError):
            continue
        try:
            pid = int((root / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = None
        PostgresServer(root=root, pid=pid).stop()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
