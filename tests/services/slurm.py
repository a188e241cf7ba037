"""A real single-node Slurm on localhost for the tests (see reference/test-services.md).

munged (as user munge), slurmctld and ``slurmd -N localhost`` from the Debian packages,
configured by ``/etc/slurm/slurm.conf`` (a global path, so that clients started over SSH
find it too). Several test sessions may run at once on one machine: each holds a shared
lock on :data:`USERS_LOCK` while it uses the cluster; the first one starts it (under an
exclusive start lock), and the last one to leave stops it, by the PIDs in its own PID
files, never by name.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .apt import ensure_packages

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
COMMANDS = ["slurmctld", "slurmd", "sbatch", "squeue", "scancel", "munged"]
STATE = Path("/tmp/flowbatch-tests-slurm")
CONF = Path("/etc/slurm/slurm.conf")
USERS_LOCK = "/tmp/flowbatch-tests-slurm.users.lock"
START_LOCK = "/tmp/flowbatch-tests-slurm.start.lock"
MUNGE_RUN = Path("/run/munge")
MUNGE_PID = Path("/tmp/flowbatch-tests-munged.pid")  # outside STATE: survives its wipe
PARTITION = "debug"

SLURM_CONF = """\
# written by flowbatch's tests (tests/services/slurm.py)
ClusterName=test
SlurmctldHost=localhost
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={sd}/state
SlurmdSpoolDir={sd}/spool
SlurmctldPidFile={sd}/run/slurmctld.pid
SlurmdPidFile={sd}/run/slurmd.pid
SlurmctldLogFile={sd}/log/slurmctld.log
SlurmdLogFile={sd}/log/slurmd.log
# cgroup plugins make jobs COMPLETED without running their script here
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={sd}/log/jobcomp.txt
MinJobAge=300
KillWait=2
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName={partition} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=30)


def pid_alive(pid: int) -> bool:
    """True for a live process; a zombie (state Z) counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _wait(what: str, ok: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(ok) and ok():
            return
        time.sleep(0.1)
    log = "\n".join(_tail(STATE / "log" / n) for n in ("slurmctld.log", "slurmd.log"))
    raise RuntimeError(f"slurm test service: {what} not ready after {timeout}s\n{log}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return f"--- {path}\n" + "\n".join(path.read_text().splitlines()[-lines:])
    except OSError:
        return ""


def munge_works() -> bool:
    cred = subprocess.run(["munge", "-n"], capture_output=True, check=False)
    if cred.returncode != 0:
        return False
    return subprocess.run(["unmunge"], input=cred.stdout, capture_output=True).returncode == 0


def controller_up() -> bool:
    return _run("scontrol", "ping", check=False).stdout.count("UP") > 0


def node_idle() -> bool:
    out = _run("sinfo", "-h", "-N", "-o", "%t", check=False).stdout.split()
    return bool(out) and out[0] in ("idle", "mix", "alloc")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _pids() -> dict[str, int | None]:
    return {
        "slurmd": _read_pid(STATE / "run" / "slurmd.pid"),
        "slurmctld": _read_pid(STATE / "run" / "slurmctld.pid"),
        "munged": _read_pid(MUNGE_PID),
    }


def running() -> bool:
    pids = _pids()
    return all(p is not None and pid_alive(p) for p in (pids["slurmctld"], pids["slurmd"]))


@dataclass
class SlurmCluster:
    """Handle on the started cluster for the tests."""

    partition: str = PARTITION
    started_here: bool = False
    _users: IO[str] | None = field(default=None, repr=False)

    # -- start ------------------------------------------------------------------------------
    def start(self) -> SlurmCluster:
        ensure_packages(PACKAGES, commands=COMMANDS)
        self._users = open(USERS_LOCK, "a")  # noqa: SIM115 - held for the session
        fcntl.flock(self._users, fcntl.LOCK_SH)
        with open(START_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if running() and controller_up() and munge_works():
                return self  # another session started it: share it
            self._stop_daemons()
            self._fresh_state()
            self._start_munge()
            subprocess.run(["slurmctld"], check=True, capture_output=True, timeout=30)
            _wait("slurmctld", controller_up)
            subprocess.run(["slurmd", "-N", "localhost"], check=True, capture_output=True)
            _wait("the node", node_idle)
            self.started_here = True
        return self

    def _fresh_state(self) -> None:
        """Wipe the state folder: controller state survives restarts (job ids go on)."""
        shutil.rmtree(STATE, ignore_errors=True)
        for sub in ("state", "spool", "run", "log"):
            (STATE / sub).mkdir(parents=True, exist_ok=True)
        subprocess.run(["chown", "-R", "slurm:slurm", str(STATE)], check=True)
        STATE.chmod(0o755)
        CONF.parent.mkdir(parents=True, exist_ok=True)
        CONF.write_text(
            SLURM_CONF.format(sd=STATE, cpus=os.cpu_count() or 1, partition=self.partition)
        )

    def _start_munge(self) -> None:
        if munge_works():
            return
        MUNGE_RUN.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_RUN, "munge", "munge")
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            subprocess.run(["mungekey", "--create"], check=True, capture_output=True)
            shutil.chown(key, "munge", "munge")
            key.chmod(0o400)
        MUNGE_PID.unlink(missing_ok=True)
        subprocess.run(
            ["runuser", "-u", "munge", "--", "/usr/sbin/munged", f"--pid-file={MUNGE_PID}"],
            check=True,
            capture_output=True,
        )
        _wait("munged", munge_works)

    # -- stop -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Leave the cluster; the last session using it stops the daemons (by PID)."""
        if self._users is None:
            return
        fcntl.flock(self._users, fcntl.LOCK_UN)
        try:
            fcntl.flock(self._users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another session still uses it
        with open(START_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._stop_daemons()
        self._users.close()
        self._users = None

    @staticmethod
    def _stop_daemons() -> None:
        for name, pid in _pids().items():
            if pid is None or not pid_alive(pid):
                continue
            if _comm(pid) != name:
                continue  # a stale PID file: never signal a stranger
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 10
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)

    # -- helpers for tests ------------------------------------------------------------------
    def job_state(self, job_id: str) -> str:
        out = _run("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T", check=False)
        return out.stdout.strip()
