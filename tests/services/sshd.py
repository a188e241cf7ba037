"""Private OpenSSH servers on loopback for the tests (never the system's sshd).

Each :class:`Sshd` is one ``sshd -D`` child of the test process with its own config, host
key, PID file and log, listening on one 127.0.0.0/8 address. It is stopped by its own
PID (and, to drop live connections like a real restart, the per-connection sshd
processes it forked, found through its PID), never by name.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .apt import ensure_packages

SSHD = "/usr/sbin/sshd"
TEST_USER = "fbtest"

_CONFIG = """\
Port {port}
ListenAddress {address}
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {keys_dir}/%u
AllowUsers {user}
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
UseDNS no
AllowTcpForwarding yes
MaxSessions 50
MaxStartups 50:30:100
LogLevel VERBOSE
Subsystem sftp internal-sftp
"""


def ensure_sshd() -> None:
    """openssh-server installed (apt, serialized), /run/sshd present."""
    ensure_packages(["openssh-server"], commands=[SSHD, "ssh-keygen", "ssh-keyscan"])
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)


def ensure_user(name: str = TEST_USER) -> pwd.struct_passwd:
    """A login user for the tests: key login only, bash without a heavy rc file."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--create-home", "--shell", "/bin/bash", name],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(name)
    # a fresh account is "locked" (!): sshd without PAM refuses it even with a valid key
    subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
    home = Path(entry.pw_dir)
    for rc in (".bashrc", ".profile", ".bash_profile", ".bash_login"):
        path = home / rc
        if rc == ".bashrc" or path.exists():
            path.write_text("# flowbatch test user: nothing to load\n", encoding="utf-8")
            os.chown(path, entry.pw_uid, entry.pw_gid)
    return entry


def keygen(path: Path, comment: str) -> Path:
    """A new ed25519 key pair at ``path`` (+ ``.pub``), no passphrase."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


@dataclass
class Sshd:
    """One private sshd instance."""

    name: str
    address: str
    port: int
    folder: Path  # state: config, host key, pid file, log
    keys_dir: Path  # AuthorizedKeysFile folder (readable by the test user)
    user: str = TEST_USER
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def host_key(self) -> Path:
        return self.folder / "host_ed25519"

    @property
    def log(self) -> Path:
        return self.folder / "sshd.log"

    def write_config(self) -> Path:
        if not self.host_key.exists():
            keygen(self.host_key, f"flowbatch-test-{self.name}")
        path = self.folder / "sshd_config"
        path.write_text(
            _CONFIG.format(
                port=self.port,
                address=self.address,
                host_key=self.host_key,
                pid_file=self.folder / "sshd.pid",
                keys_dir=self.keys_dir,
                user=self.user,
            ),
            encoding="utf-8",
        )
        return path

    def start(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # a second sshd on the port would fail to bind, the first one would answer
            # the check below, and stop() would then stop the dead one: a stray server
            raise RuntimeError(f"sshd {self.name} is already running (pid {self.proc.pid})")
        config = self.write_config()
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-f", str(config), "-E", str(self.log)],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd {self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.address, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sshd {self.name} not listening after {timeout}s")
                time.sleep(0.02)

    def stop(self, *, drop_sessions: bool = True) -> None:
        """Stop the listener by its PID and, like a host going down, the sessions it forked."""
        if self.proc is None:
            return
        sessions: list[psutil.Process] = []
        if drop_sessions:
            try:
                sessions = psutil.Process(self.proc.pid).children(recursive=True)
            except psutil.Error:
                sessions = []
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for session in sessions:
            try:
                session.kill()
            except psutil.Error:
                pass
        # orphans are reparented to init, which in some containers never reaps them
        deadline = time.monotonic() + 5
        while any(_running(s) for s in sessions) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.proc = None

    def keyscan(self) -> str:
        """known_hosts lines for this server, as ssh-keyscan reports them."""
        out = subprocess.run(
            ["ssh-keyscan", "-T", "5", "-t", "ed25519", "-p", str(self.port), self.address],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        if not out.strip():
            raise RuntimeError(f"ssh-keyscan found no key on {self.address}:{self.port}")
        return out

    def fingerprint(self) -> str:
        """``SHA256:...`` of the host key, as ``ssh-keygen -l`` shows it."""
        out = subprocess.run(
            ["ssh-keygen", "-l", "-f", f"{self.host_key}.pub"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return out.split()[1]

    def accepted_logins(self) -> int:
        """How many logins this server has accepted so far (from its log)."""
        try:
            return self.log.read_text(errors="replace").count("Accepted publickey")
        except FileNotFoundError:
            return 0


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
