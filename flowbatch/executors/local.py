"""The local executor: the run script as a detached process group on this host.

The daemon learns of its own children's exits at once (one reaper thread, a pidfd per
child, wakes the daemon loop); processes adopted after a daemon restart are looked at with
psutil, by PID *and* process start time, so a reused PID is never taken for the run.

When a run's script ends, what it left running in its process group (``server &``,
``nohup x &``) is ended with it (SIGKILL), as Slurm ends a batch job's processes with its
script: a child's group is killed before the script's process is reaped (:func:`_reap`:
until then its PID, the group's id, cannot be reused), an adopted run's leftovers are
ended one by one once they are proven the run's (:meth:`LocalExecutor._end_leftovers`).
A process that left the group (``setsid``) is not reached.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import runenv
from ..accounts import identity
from ..errors import ExecutorError
from ..render.script import LOGS_DIR
from .base import Launch, Liveness, Probe

if TYPE_CHECKING:
    import psutil

log = logging.getLogger(__name__)

#: seconds between SIGTERM and SIGKILL when a run is cancelled
CANCEL_GRACE = 3.0
#: tolerance when matching a process's start time against the recorded one
START_TOLERANCE = 1.0
#: how long before its ``started`` marker (``status/markers``) a run's process may have
#: started
MARKER_SLACK = 60.0


class LocalExecutor:
    name = "local"

    #: seconds a cancelled run has between SIGTERM and SIGKILL
    cancel_grace = CANCEL_GRACE
    #: a run's exit status here is the kernel's (waitpid), not text the run could write:
    #: the Runner holds its markers to it (an adopted run's is not known)
    exit_status_known = True

    def __init__(self, wake: Callable[[], None] | None = None, limit: int = 1) -> None:
        self._wake = wake or (lambda: None)
        self.limit = limit
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._exits: dict[int, int] = {}
        #: the run each child is (a PID reused by the next run: see :meth:`forget`)
        self._runs: dict[int, str] = {}
        self._lock = threading.Lock()
        self.host = socket.gethostname()

    # -- launch ---------------------------------------------------------------------------
    def launch(self, job: Launch) -> dict[str, Any]:
        change = run_as(job.uid)
        # another user's run: the daemon's harmless variables and the user's own; the
        # daemon's own: its environment without flowbatch's settings and PostgreSQL's
        # (flowbatch.runenv; computed once, not per launch)
        env = {**runenv.for_run(change.pop("env", {}) if change else None), **job.env}
        script = str(job.run_dir / job.script)
        # The script opens its own log, as the run's user: the daemon (often root) never
        # creates or opens anything inside a folder its user controls, where a symlink
        # could send a root-opened file elsewhere. (One bash: a wrapper that opened the
        # log and exec'd the script cost a second bash start per run.)
        env["FLOWBATCH_SCRIPT_LOG"] = f"{LOGS_DIR}/script.log"
        uid = job.uid if change and job.uid is not None else os.geteuid()
        argv, change = _as_user([_bash(), script], change)
        try:
            proc = subprocess.Popen(
                argv,
                cwd=job.run_dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # its own session and process group
                close_fds=True,
                env=env,
                **change,
            )
        except OSError as exc:
            _BASH.clear()  # looked up again at the next launch (bash moved, PATH fixed)
            raise ExecutorError(f"cannot start bash for run {job.run_id}: {exc}") from exc
        started = process_start(proc.pid)  # 0.0: already gone; its exit is reported
        with self._lock:
            self._children[proc.pid] = proc
            self._runs[proc.pid] = job.run_id
            # an ended run's exit not collected yet (slots first: its end is recorded
            # after this launch) whose PID this child reuses: not this child's
            self._exits.pop(proc.pid, None)
        if not _reaper().watch(proc, self._exited):
            threading.Thread(
                target=self._wait, args=(proc,), daemon=True, name=f"wait-{job.run_id}"
            ).start()
        return {
            "pid": proc.pid,
            "pgid": proc.pid,
            "start": started,
            "host": self.host,
            "uid": uid,
            "script": script,
        }

    def _wait(self, proc: subprocess.Popen[bytes]) -> None:
        code = _reap(proc, block=True)
        if code is not None:
            self._exited(proc, code)

    def _exited(self, proc: subprocess.Popen[bytes], code: int) -> None:
        with self._lock:
            if self._children.get(proc.pid) is not proc:
                return  # forgotten (its run ended, cancelled): its PID may be another's now
            self._exits[proc.pid] = code
        self._wake()

    # -- poll -----------------------------------------------------------------------------
    def ended_by_restart(self, handle: dict[str, Any] | None) -> bool:
        """Whether the run's process started before this host's current boot (its
        handle's ``start``, by the boot clock): then a SIGTERM or SIGKILL ending was the
        shutdown's, not the run's own (the Runner retries it as a lost run; found by
        review)."""
        if not handle or not handle.get("start"):
            return False
        try:
            return float(handle["start"]) < boot_time() - 1
        except (OSError, ValueError, TypeError):
            return False

    def has_exits(self) -> bool:
        """Some child has exited and its run is not polled yet (no lock: a cheap hint)."""
        return bool(self._exits)

    def poll(self, handles: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Probe]:
        out: dict[str, Probe] = {}
        ended: list[dict[str, Any]] = []  # adopted runs whose script is gone
        for run_id, handle in handles:
            pid = int(handle.get("pid", 0))
            with self._lock:
                child = self._children.get(pid)
                code = self._exits.get(pid)
            if child is not None and code is None:
                # the reaper's word is the fast path; asking the child itself (one
                # non-blocking waitid) means a lost wake-up never leaves a run RUNNING; an
                # exit found here ends the group first, as the reaper does
                code = _reap(child)
            if child is not None:
                if code is None:
                    out[run_id] = Probe(Liveness.ALIVE, raw=f"pid {pid} running")
                else:
                    out[run_id] = Probe(
                        Liveness.FINISHED,
                        exit_code=_as_status(code),
                        raw=f"pid {pid} exited with {code}",
                    )
            elif self.adopt(handle):
                out[run_id] = Probe(Liveness.ALIVE, raw=f"pid {pid} running (adopted)")
            else:
                out[run_id] = Probe(Liveness.FINISHED, raw=f"pid {pid} no longer running")
                ended.append(handle)
        if ended:
            try:
                self._end_leftovers(ended)
            except Exception:  # best effort: never in the way of recording the ends
                log.exception("ending what adopted runs left running")
        return out

    def forget(self, handle: dict[str, Any], run_id: str | None = None) -> None:
        """Drop bookkeeping of a finished child. A child that runs under that PID now
        as another run (launched after ``run_id``'s end and before that end was recorded,
        slots first, with the PID reused) is kept."""
        pid = int(handle.get("pid", 0))
        with self._lock:
            if run_id is not None and self._runs.get(pid, run_id) != run_id:
                return
            self._children.pop(pid, None)
            self._exits.pop(pid, None)
            self._runs.pop(pid, None)

    def adopt(self, handle: dict[str, Any]) -> bool:
        """True when the handle's PID still runs the process that was started then: same
        start time, and (when the handle says) the run's user running the run's script.

        The second check matters because a handle rebuilt from the run's own ``started``
        marker (``status/markers``) is text the run's user could have written: the daemon
        must never take (and later signal) another user's process for it.
        """
        if handle.get("host") not in (None, self.host):
            return False
        import psutil  # only to adopt or cancel: not in a daemon's start-up

        try:
            proc = psutil.Process(int(handle["pid"]))
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            if "uid" in handle and proc.uids().real != int(handle["uid"]):
                return False
            if "script" in handle and handle["script"] not in _cmdline(proc):
                return False
            return _same_start(handle, proc.create_time())
        except (psutil.Error, KeyError, ValueError, TypeError):
            return False

    def _end_leftovers(self, handles: list[dict[str, Any]]) -> None:
        """SIGKILL what adopted runs whose script is gone left running in their process
        group (a child's group is ended by :func:`_reap`). This daemon never had the
        script as its child, so its group's id may have been reused: nothing is done
        for a run when a process (or thread) has the group's id as its PID, unless it is
        the run's own script not reaped yet (a zombie of the run's user and start time,
        which holds the id); and only processes of the run's user, in that group,
        started after the script are ended, each checked through a pidfd it is then
        signalled by (it, or no one). One pass over /proc for all of them (adoption
        happens after a restart only, never on a launched run's path), again while
        some were found (one may have forked meanwhile)."""
        targets: dict[int, tuple[int, float]] = {}  # group -> (uid, started after)
        for handle in handles:
            if handle.get("host") not in (None, self.host):
                continue
            try:
                pgid = int(handle.get("pgid", handle["pid"]))
                uid = int(handle["uid"])
                start = float(handle["start"])
            except (KeyError, TypeError, ValueError):
                continue
            if pgid > 1 and _group_is_the_runs(handle, pgid, uid):
                targets[pgid] = (uid, start - START_TOLERANCE)
        signalled: set[int] = set()
        for _ in range(3):
            if not targets or not _kill_members(targets, signalled):
                return

    def find_started(self, scripts: dict[str, int]) -> dict[str, dict[str, Any]]:
        """The processes of this host already running one of ``scripts`` (a script's path
        -> the uid it runs as), as their handles: a daemon killed between a launch and the
        script's first marker left the run PENDING with no marker, and a launch by the
        next daemon would run it twice in one folder. One pass over the process table,
        made at a daemon's start when some PENDING run has no marker. Only a process
        that a launch could have made is taken: ``bash <script>`` (or the ``setpriv``
        that is about to become it) as the run's user, leading its own process group
        (each launch starts a session), so that someone reading the script (``less
        run.sh``) or a shell of theirs is never mistaken for the run."""
        if not scripts:
            return {}
        import psutil

        found: dict[str, dict[str, Any]] = {}
        for proc in psutil.process_iter(["cmdline", "uids", "create_time", "status"]):
            info = proc.info
            cmd = info.get("cmdline") or []
            script = next(
                (
                    arg
                    for shell, arg in itertools.pairwise(cmd)
                    if arg in scripts and os.path.basename(shell) == "bash"
                ),
                None,
            )
            if script is None or info.get("status") == psutil.STATUS_ZOMBIE:
                continue
            uids = info.get("uids")
            try:
                leads = os.getpgid(proc.pid) == proc.pid
            except OSError:
                continue
            if not leads or uids is None or uids.real != scripts[script]:
                continue
            start = float(info.get("create_time") or 0.0)
            if script in found and found[script]["start"] <= start:
                continue  # two of them (a user's own start too): the first
            found[script] = {
                "pid": proc.pid,
                "pgid": proc.pid,
                "start": start,
                "host": self.host,
                "uid": scripts[script],
                "script": script,
            }
        return found

    # -- cancel / collect -----------------------------------------------------------------
    def cancel(self, handle: dict[str, Any], reason: str) -> None:
        """SIGTERM the process group and every descendant, SIGKILL what outlives the grace
        (:data:`CANCEL_GRACE`), waiting for it here: for a process that cannot wait (a
        command's own cancel). The serving daemon does not wait: :meth:`terminate` now,
        :meth:`kill` once the grace is over, the run's end recorded once it is gone."""
        ending = self.terminate(handle)
        if ending is None:
            return
        deadline = time.monotonic() + CANCEL_GRACE
        while self.left(ending) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.kill(handle, ending)

    def terminate(self, handle: dict[str, Any]) -> tuple[Any, list[Any]] | None:
        """SIGTERM the run's process group and every descendant (those that left the group
        too); None when the run is no longer running. Returns what :meth:`kill` ends."""
        pid = int(handle.get("pid", 0))
        with self._lock:
            if pid in self._exits:
                return None  # already ended and reaped: its PID may belong to another
            child = self._children.get(pid)
        if child is None and not self.adopt(handle):
            return None
        import psutil

        pgid = int(handle.get("pgid", handle["pid"]))
        try:
            root = psutil.Process(int(handle["pid"]))
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            procs = []
        if child is not None:
            _signal_child_group(child, signal.SIGTERM)
        else:
            _kill_group(pgid, signal.SIGTERM)
        for proc in procs:  # descendants that left the group (setsid) too
            try:
                proc.terminate()
            except psutil.Error:
                pass
        return child, procs

    def left(self, ending: tuple[Any, list[Any]]) -> bool:
        """Whether anything :meth:`terminate` signalled (its result, ``ending``) still
        runs: the script, or a descendant, also one that left the group (``setsid``),
        which the script's end does not take with it (found by review: it outlived the
        run's recorded end)."""
        import psutil

        child, procs = ending
        if child is not None and not _child_ended(child):
            return True
        for proc in procs:
            if child is not None and proc.pid == child.pid:
                continue
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    return True
            except psutil.Error:
                pass
        return False

    def kill(self, handle: dict[str, Any], ending: tuple[Any, list[Any]]) -> None:
        """SIGKILL what is left of a run :meth:`terminate` was sent to (``ending``, its
        result), its grace over: the script while not reaped, its group, and every
        process signalled then."""
        import psutil

        child, procs = ending
        pid = int(handle["pid"])
        if child is not None:
            with _REAP_LOCK:  # not reaped while held: the PID is still the script's
                if child.returncode is None:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
        for proc in procs:
            if child is not None and proc.pid == pid:
                continue
            try:
                if proc.is_running():
                    proc.kill()
            except psutil.Error:
                pass
        if child is not None:
            _signal_child_group(child, signal.SIGKILL)
        else:
            _kill_group(int(handle.get("pgid", pid)), signal.SIGKILL)

    def why_not_started(self, handle: dict[str, Any]) -> str | None:
        """For a run of another user whose script never started: that it was to run as
        that user, and why it could not, in the words of the tool that failed. The start
        sends errors nowhere (the script opens its own log, as the user, once it runs), so
        what it needs is done again as the user: the change of user, entering the run's
        folder (one on the way the user cannot enter is the usual cause), the script
        readable there. Only on this failure path: a second process, no user code run,
        nothing opened (a FIFO put there would block it). None for the daemon's own
        user's runs."""
        uid, script = handle.get("uid"), handle.get("script")
        if uid is None or not script or os.geteuid() != 0 or uid == os.geteuid():
            return None
        found = _start_again_as(int(uid), str(script))
        why = found or "the change to that user may have failed (`flowbatch doctor` checks it)"
        return f"it was to run as uid {uid}: {why}"

    def collect(self, run_id: str, handle: dict[str, Any], run_dir: Path) -> None:
        self.forget(handle, run_id)

    def close(self) -> None:
        pass


def _same_start(handle: dict[str, Any], created: float) -> bool:
    """Whether a process that began at ``created`` is the one the handle recorded."""
    started = float(handle.get("start", 0))
    if handle.get("from_marker"):
        # the marker is written by the script a moment after the process began
        return started - MARKER_SLACK <= created <= started + START_TOLERANCE
    return abs(created - started) <= START_TOLERANCE


def _group_is_the_runs(handle: dict[str, Any], pgid: int, uid: int) -> bool:
    """Whether process group ``pgid`` can still only be the run's own: no process has
    its id as PID (the id free, so held since the script by the group's members, if
    any), or the one that has is the run's script, ended but not reaped yet by its new
    parent (a zombie holds its PID: never reused while it is there)."""
    try:
        state, started = _state_and_start(pgid)
    except FileNotFoundError:
        return True
    except (OSError, ValueError, IndexError):
        return False
    return state == b"Z" and _real_uid(pgid) == uid and _same_start(handle, started)


def _kill_members(targets: dict[int, tuple[int, float]], signalled: set[int]) -> int:
    """SIGKILL each live process of the groups of ``targets`` (group -> the run's uid,
    the earliest start time) of that uid started then or later, the group leader and
    the PIDs of ``signalled`` aside (to which those signalled now are added); returns
    how many were signalled."""
    killed = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            pgid = os.getpgid(pid)
        except OSError:
            continue
        if pgid == pid or pgid not in targets or pid in signalled:
            continue
        uid, after = targets[pgid]
        if _kill_checked(pid, pgid, uid, after):
            signalled.add(pid)
            killed += 1
    return killed


def _kill_checked(pid: int, pgid: int, uid: int, after: float) -> bool:
    """SIGKILL ``pid`` if it is in group ``pgid``, runs as ``uid`` and started at
    ``after`` or later. The checks are made with the process held by a pidfd and the
    signal goes through it: if the PID was reused before the checks, the signal finds
    the old process gone and no one else gets it."""
    try:
        fd = os.pidfd_open(pid)
    except OSError as exc:
        if exc.errno != errno.ENOSYS:
            return False  # gone
        fd = -1  # a kernel without pidfds (before 5.3): checked, then signalled by PID
    try:
        state, started = _state_and_start(pid)
        if state == b"Z" or started < after or os.getpgid(pid) != pgid or _real_uid(pid) != uid:
            return False
        if fd >= 0:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError, IndexError):
        return False
    finally:
        if fd >= 0:
            os.close(fd)
    log.info("ended pid %s left running in process group %s by its run", pid, pgid)
    return True


def _state_and_start(pid: int) -> tuple[bytes, float]:
    """The state letter of process ``pid`` (``Z``: a zombie) and its start time, as
    :func:`process_start` gives it."""
    global _BOOT_TIME
    stat_line = _read_proc(pid, "stat")
    # the command name (field 2) may hold spaces and parentheses: fields after the last
    # ')' are plain numbers; the state is field 3 overall, the start time field 22
    fields = stat_line[stat_line.rindex(b")") + 2 :].split()
    if _BOOT_TIME is None:
        _BOOT_TIME = boot_time()
    return fields[0], _BOOT_TIME + int(fields[19]) / _CLOCK_TICKS


def _read_proc(pid: int, name: str) -> bytes:
    """One open and one read (a stat line is a few hundred bytes): Python's buffered file,
    with its fstat and second read, took 1.7x as long, at every launch."""
    fd = os.open(f"/proc/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def _real_uid(pid: int) -> int | None:
    """The real user ID of process ``pid`` (its ``Uid:`` line in /proc); None if gone."""
    try:
        status = _read_proc(pid, "status")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith(b"Uid:"):
            try:
                return int(line.split()[1])
            except (ValueError, IndexError):
                return None
    return None


_BOOT_TIME: float | None = None
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_start(pid: int) -> float:
    """The start time of process ``pid`` (epoch seconds), as ``psutil``'s ``create_time``
    gives it (boot time + the start tick in ``/proc/<pid>/stat``), from one small read:
    psutil read ``/proc/stat`` too on every call, a tenth of a launch's cost. 0.0 when
    the process is gone (or this is not Linux's ``/proc``)."""
    try:
        return _state_and_start(pid)[1]
    except (OSError, ValueError, IndexError):
        return 0.0


def boot_time() -> float:
    """The boot time as psutil's ``boot_time`` reads it (the ``btime`` line of
    ``/proc/stat``), without importing psutil into every daemon's start-up."""
    with open("/proc/stat", "rb") as fh:
        for line in fh:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise ValueError("no btime line in /proc/stat")


def _cmdline(proc: psutil.Process) -> list[str]:
    """The process's command line; /proc answers empty for a moment while it execs."""
    for _ in range(5):
        cmd = proc.cmdline()
        if cmd:
            return cmd
        time.sleep(0.01)
    return []


class _Reaper:
    """One thread that learns of every child's exit, through the child's pidfd (Linux
    5.3+) in an epoll set: a thread started per run cost the daemon's loop more than the
    run's own fork. A launch adds its pidfd to the set itself (epoll takes that from any
    thread), so the reaper wakes once a run, at its exit, and takes the interpreter lock
    only then. Where pidfds or epoll are missing, :meth:`watch` says so and the caller
    waits in a thread of its own."""

    def __init__(self) -> None:
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        self._lock = threading.Lock()
        self._watched: dict[int, Watched] = {}
        self._thread: threading.Thread | None = None

    def watch(self, proc: subprocess.Popen[bytes], done: Callable[[Any, int], None]) -> bool:
        if self._epoll is None:
            return False
        try:
            fd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            return False
        with self._lock:
            self._watched[fd] = (proc, done)  # before the fd is in the set: found at its exit
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="reaper")
                self._thread.start()
        try:
            self._epoll.register(fd, select.EPOLLIN)
        except OSError:  # the caller waits in a thread of its own instead
            with self._lock:
                self._watched.pop(fd, None)
            os.close(fd)
            return False
        return True

    def _run(self) -> None:
        assert self._epoll is not None
        while True:
            for fd, _ in self._epoll.poll():
                with self._lock:
                    watched = self._watched.pop(fd, None)
                self._epoll.unregister(fd)
                if watched is None:
                    continue  # never added here: not ours to close
                os.close(fd)
                proc, done = watched
                try:
                    # readable pidfd: it exited (a zombie until reaped here, or reaped
                    # already by a poll); None only if it has not, which cannot be
                    code = _reap(proc)
                    if code is not None:
                        done(proc, code)
                except Exception:  # a callback's failure must not end the reaper (and
                    # LocalExecutor.poll asks each child itself as well)
                    log.exception("reaping pid %s", proc.pid)


#: a child and what to call with its exit status
Watched = tuple[subprocess.Popen[bytes], Callable[[Any, int], None]]

#: held by every reap of a launched script (:func:`_reap`) and every signal the daemon
#: sends to a child's group: while it is held and the child's ``returncode`` is None, the
#: child is not reaped, so its PID (its group's id) is still the run's
_REAP_LOCK = threading.Lock()


def _reap(proc: subprocess.Popen[bytes], *, block: bool = False) -> int | None:
    """The exit status of a launched script (None while it runs, unless ``block``),
    its process group ended first: SIGKILL to what the script left behind (``x &``,
    ``nohup``), as Slurm ends a job's processes with its script. The exit is seen
    without reaping (``waitid`` with ``WNOWAIT``): the script, a zombie until reaped,
    keeps its PID, the group's id, from being reused, so the signal reaches the run's
    own processes and no one else's. One ``killpg`` a run (ESRCH: nothing left; EPERM:
    none of them ours to end). Every reap of a child goes through here (the reaper
    thread, a poll, the fallback waiter), under :data:`_REAP_LOCK`."""
    if proc.returncode is not None:
        return proc.returncode
    if block:
        try:  # the wait itself outside the lock; the exit is taken below
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass
    with _REAP_LOCK:
        if proc.returncode is not None:
            return proc.returncode
        try:
            exited = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        except ChildProcessError:  # reaped behind subprocess's back: no group to end
            return proc.wait()
        if exited is None:
            return None
        _kill_group(proc.pid, signal.SIGKILL)
        return proc.wait()


def _kill_group(pgid: int, sig: int) -> None:
    """``sig`` to process group ``pgid``; ESRCH (no one left) and EPERM (none of them
    the daemon's to signal) are normal."""
    try:
        os.killpg(pgid, sig)
    except OSError:
        pass


def _signal_child_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """``sig`` to a child's process group, if the child is not reaped yet (reaped, its
    group was ended then, and its id may be another's now)."""
    with _REAP_LOCK:
        if proc.returncode is None:
            _kill_group(proc.pid, sig)


def _child_ended(proc: subprocess.Popen[bytes]) -> bool:
    """Whether a child has exited, without reaping it (that is :func:`_reap`'s)."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None
    except ChildProcessError:
        return True


_REAPER: list[_Reaper] = []
_REAPER_LOCK = threading.Lock()


def _reaper() -> _Reaper:
    with _REAPER_LOCK:
        if not _REAPER:
            _REAPER.append(_Reaper())
        return _REAPER[0]


def run_as(uid: int | None) -> dict[str, Any]:
    """Popen arguments that run a command as ``uid`` (only when the daemon is root).

    Participants' code must never run with the daemon's privileges by accident: a root
    daemon drops to the request owner's user, primary group and supplementary groups
    (looked up at most every :data:`~flowbatch.accounts.ACCOUNT_TTL` seconds per user).
    ``env`` holds what a login sets from the user's account (``HOME``, ``USER``,
    ``LOGNAME``, ``SHELL``): :func:`flowbatch.runenv.for_run` adds it to the few
    variables passed from the daemon.
    """
    if uid is None or os.geteuid() != 0 or uid == 0:
        return {}
    who = identity(uid)
    if who.name is None:
        return {"user": uid, "group": uid, "extra_groups": [], "env": {}}
    return {
        "user": uid,
        "group": who.gid,
        "extra_groups": list(who.groups),
        "env": {
            "HOME": who.home,
            "USER": who.name,
            "LOGNAME": who.name,
            "SHELL": who.shell or "/bin/sh",
        },
    }


#: where setpriv (util-linux) may be: system folders only, never the daemon's PATH
SETPRIV_PLACES = ("/usr/bin/setpriv", "/bin/setpriv")
_SETPRIV: list[str | None] = []


#: the path of ``bash`` found on the daemon's PATH (looked up once, not per launch)
_BASH: list[str] = []


def _bash() -> str:
    """``bash`` as the daemon's PATH finds it, looked up once: given a bare name, each
    launch's child searched PATH itself, one failed ``execve`` per folder before bash's
    while the daemon waited on the ``vfork``."""
    if not _BASH:
        _BASH.append(shutil.which("bash") or "bash")
    return _BASH[0]


def _as_user(argv: list[str], change: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """``argv`` and subprocess's arguments that run it as the user of ``change`` (from
    :func:`run_as`; its ``env`` is the caller's to apply). The user is changed by setpriv,
    exec'd from subprocess's vfork, when a working one is here: asked to change it
    itself, subprocess forks the whole daemon (3-4 ms of the daemon's CPU a launch
    against 0.2 ms, see bench/launch.py)."""
    kwargs = {key: value for key, value in change.items() if key != "env"}
    tool = setpriv() if kwargs else None
    if tool is None:
        return argv, kwargs
    return setpriv_argv(tool, kwargs) + argv, {}


def as_user_command(argv: list[str], uid: int | None) -> tuple[list[str], dict[str, Any]]:
    """``argv`` and subprocess's arguments (``env`` included) that run it as ``uid`` when
    the daemon is root (as a run is started: :func:`run_as`), with the environment a run
    of that user gets (:func:`flowbatch.runenv.for_run`): ``sbatch`` hands it to the job
    (its default ``--export=ALL``). The daemon's own commands get its own run
    environment too."""
    change = run_as(uid)
    if not change:
        return argv, {"env": dict(runenv.for_run(None))}
    env = dict(runenv.for_run(change.pop("env", {})))
    argv, kwargs = _as_user(argv, change)
    return argv, {**kwargs, "env": env}


#: what a start needs of the run's user, done again (``$1`` is the script's path)
_START_CHECK = (
    'cd -- "${1%/*}" || exit; [ -r "${1##*/}" ] || { echo "$1: not readable" >&2; exit 1; }'
)


def _start_again_as(uid: int, script: str) -> str | None:
    """The last line a start of ``script`` as ``uid`` fails with (:data:`_START_CHECK`,
    bash's own prefix left out); None when it works now."""
    argv, as_user = _as_user(
        [_bash(), "--noprofile", "--norc", "-c", _START_CHECK, "flowbatch", script],
        run_as(uid),
    )
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
            timeout=5,
            **as_user,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if proc.returncode == 0:
        return None
    said = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    if not said:
        return f"its start failed again (exit code {proc.returncode})"
    return said[-1].removeprefix("flowbatch: line 1: ")[:300]


def setpriv() -> str | None:
    """The path of a working ``setpriv`` (util-linux), checked once per process: owned by
    root, writable by no one else, and able to drop root to another user here (a
    container may forbid it). None: the runs of other users fall back to subprocess's own
    user change, which forks the daemon."""
    if not _SETPRIV:
        _SETPRIV.append(_find_setpriv())
    return _SETPRIV[0]


def _find_setpriv() -> str | None:
    if os.geteuid() != 0:
        return None  # not needed: a daemon that is not root runs everything as itself
    for path in SETPRIV_PLACES:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if st.st_uid != 0 or st.st_mode & 0o022 or not os.access(path, os.X_OK):
            log.warning("not using %s: it must belong to root and be writable by no one else", path)
            continue
        probe = [
            path,
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
            "/bin/sh",
            "-c",
            ":",
        ]
        try:
            ok = subprocess.run(probe, stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("not using %s: %s", path, exc)
            continue
        if ok.returncode == 0:
            return path
        log.warning(
            "not using %s to start runs as their users (%s): each such start forks the daemon",
            path,
            ok.stderr.decode("utf-8", "replace").strip() or f"exit code {ok.returncode}",
        )
    return None


def setpriv_argv(path: str, change: dict[str, Any]) -> list[str]:
    """The ``setpriv`` command (at ``path``) that becomes the user of ``change`` (from
    :func:`run_as`): real, effective and saved user and group IDs, and exactly its
    supplementary groups (the capabilities of root go with the user ID, as with
    subprocess's own change)."""
    groups = ",".join(str(g) for g in change.get("extra_groups") or [])
    return [
        path,
        "--reuid",
        str(change["user"]),
        "--regid",
        str(change["group"]),
        *(["--groups", groups] if groups else ["--clear-groups"]),
        "--",
    ]


def _as_status(code: int) -> int:
    """Popen's negative signal numbers as the shell's 128+N."""
    return 128 - code if code < 0 else code
