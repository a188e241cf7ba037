"""The SSH executor: a whole run on a named remote host, its files brought home by SFTP.

Each host of the site config's ``ssh:`` section (:mod:`flowbatch.ssh_hosts`) is an
executor of that name. A run goes like this:

1. **launch**: the run folder's inputs (everything but ``status/``, ``logs/`` and
   flowbatch's own ``run.json``, ``request.yaml``, ``attempts/``) go up by SFTP to
   ``<remote_root>/<workflow>/<run_id>/``; ``run.sh`` starts there under a small bash
   wrapper, detached (``setsid nohup``, stdin from /dev/null) so it survives a dropped
   connection. The wrapper waits for the script and writes its exit status (signals as
   128+N) to ``status/script.rc`` (a temporary file renamed into place): the one thing
   the script cannot record when it is SIGKILLed. Then it SIGKILLs its process group,
   itself included: what the script left running there (``server &``, ``nohup x &``)
   ends with it, as a local run's leftovers do, and before any poll sees the run ended
   (it takes the run as ended once the wrapper is gone and its process group empty),
   with or without a daemon watching. A process that made a session of its own
   (``setsid``) escapes. The handle records the wrapper's PID (the process group id
   too) with its start time and the host's boot id, so a reused PID is never taken for
   the run, nor another process group for the run's.
2. **poll**: one remote command per host per tick for all of that host's runs.
   A wrapper killed from outside (the OOM killer, ``kill -9``) does not end its run:
   while the script (the PID of its ``started`` marker) still runs in the run's process
   group and no exit status was recorded, the run is ALIVE (``runs show`` says why);
   once the script is gone, the poll KILLs what is left of the group, as the wrapper
   would have, and the script's own exit marker decides the end (none: lost). The
   group is looked at only for runs whose wrapper is gone with no exit status written
   (one that wrote it KILLed its group itself), by a walk of ``/proc`` (only then). It is
   taken for the run's only once proven so (the script alive in it, or a process with
   the run's token, ``FLOWBATCH_SSH_TOKEN``, a random word the launch exports to the
   wrapper and so to everything the run starts, recorded in the handle), and then so is
   every process of it started before that moment (see the shell functions below): a
   session of the SSH user's that took the wrapper's PID as its group id after the run
   ended is never taken for the run's, nor killed.
   A run whose wrapper ended has its files fetched at once; a host that does not answer
   (unreachable, or its poll failed or timed out) gives UNKNOWN, and GONE (with the
   reason, an infrastructure failure) once it has not answered for longer than its
   ``unreachable_grace``; so does a run whose files could not be fetched that long, and
   one whose look failed for another reason (a bug: logged with its traceback once)
   that long: one run's failure never holds the host's other runs.
   Every wait for the host is bounded (see :mod:`ssh_pool`): a hung host holds a tick
   for ``io_timeout`` (or ``connect_timeout`` when reconnecting) at most, and the other
   hosts and executors are served in the same tick after it.
3. **collect**: the files not fetched yet come home (markers, logs, outputs: every file
   that is new or changed), then the remote folder is removed unless ``keep_remote``.
   A remote file that cannot be read is left out and named in the run's notes
   (:meth:`SSHExecutor.take_messages`); a fetch left incomplete for another reason (the
   connection lost, a full local disk) keeps the remote folder, and the notes say where.
   A remote folder the run swapped for a link (or that resolves elsewhere) has nothing
   fetched from it, and is kept too (see :func:`ssh_staging.download_tree`).
4. **cancel**: TERM to the remote process group, KILL after a grace (a group whose
   wrapper was killed from outside too, with the same guards); on a host that does
   not answer, once it does (the run is ended at once all the same). Such process groups
   are noted in files under ``<site>/ssh-abandoned/<host>/`` until they are ended: a
   restarted daemon (or the next ``--once`` run) ends them as well. :meth:`cancel`
   waits the grace out on the host; the serving daemon does not wait (a program that
   ignores TERM held its whole tick for it): :meth:`SSHExecutor.terminate` sends the
   TERM, a later tick :meth:`SSHExecutor.kill` the KILL, one remote command each.

Connections come from :mod:`flowbatch.executors.ssh_pool`: one per host, shared with the
Slurm executor. For "sbatch over SSH", call :func:`ssh_runner`::

    runner = ssh_runner(site_config, "login1")   # a CommandRunner on the pooled connection
    result = runner.run("sbatch --parsable job.sh", timeout=30)

It raises :class:`~flowbatch.errors.ConfigError` for an unknown host name; ``run`` raises
:class:`~flowbatch.executors.ssh_pool.HostUnreachable` or
:class:`~flowbatch.executors.ssh_pool.HostKeyError` (both ``ExecutorError``) when it
cannot reach the host, ``ConfigError`` when its key or known_hosts file is missing, and
returns the command's result otherwise (exit 124 on timeout). Commands run in bash in the
remote user's home folder.

The remote host must be Linux (``/proc``) with bash; the login shell may be any POSIX shell.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paramiko

from .. import text
from ..errors import ExecutorError, FlowbatchError
from ..render.script import LOGS_DIR, read_markers
from ..ssh_hosts import SSHHost
from ..text import one_line
from .base import Launch, Liveness, Probe
from .notes import SSH_ABANDONED, Notes
from .ssh_pool import (
    HostUnreachable,
    SSHConnection,
    SSHPool,
    SSHRunner,
    connection_lost,
    shared_pool,
)
from .ssh_staging import (
    FetchBudget,
    LocalWriteError,
    RemoteFolderMissing,
    RemoteFolderReplaced,
    download_tree,
    upload_tree,
)

if TYPE_CHECKING:
    from ..config import SiteConfig

log = logging.getLogger("flowbatch.ssh")

#: seconds between TERM and KILL of a cancelled run's process group
CANCEL_GRACE = 3.0
#: the wrapper's record of the script's exit status (next to the script's own markers)
RC_MARKER = "status/script.rc"
#: where the wrapper writes it first (then renamed to :data:`RC_MARKER`)
RC_TEMP = "status/.script.rc.tmp"
#: the process groups of runs given up on, to be ended once their host answers (one file
#: each, in a folder per host), under the site folder
ABANDONED_DIR = SSH_ABANDONED
#: the most names of files left out of a fetch that a run's note lists one by one
NOTED_FILES = 10
#: the most runs whose notes are kept for :meth:`SSHExecutor.take_messages`
MAX_NOTED_RUNS = 1000
#: clock ticks (100 a second on Linux) between two writes of a run's last proof into its
#: handle while its wrapper is killed and its script goes on (see _proven_to_keep)
PROVEN_KEEP_EVERY = 6000
#: the word on a run whose wrapper was killed from outside while its script goes on
#: (kept in its handle, for ``runs show``)
ORPHAN_STATUS = "its wrapper was killed from outside; the script goes on"

_SAFE_PART = re.compile(r"^[A-Za-z0-9_.@+-]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# The shell functions of the remote side: a run's wrapper and process group, safe
# against PID reuse. A run's process group has its wrapper's PID as its id (the wrapper
# is the leader of its session). The kernel gives out no PID that is still in use as a
# process group id, so a group id that still has a process of the run's in it is the
# run's group, and every process in it then is the run's; a group id taken again after
# the run's group ended is a session of the SSH user's that is not the run's. The group
# is proven the run's by (fb_ours): its wrapper alive (PID and start time); else the
# script alive in it (the PID of its "started" marker, started no earlier than the
# wrapper); else a process in it with the run's token in its environment (fb_token).
# Once proven at some moment, a process of the group started before that moment is the
# run's as long as it lives, token or not (a leftover started under `env -i`): the group
# never ended in between (fb_before).

# $1 = PID, $2 = start time (clock ticks after boot); exit 0 when that process still runs.
# /proc/PID/stat's second field may hold spaces and ')': cut up to the last ") ".
_SAME_PROCESS = r"""fb_same() {
  local s f
  { read -r s < "/proc/$1/stat"; } 2>/dev/null || return 1
  s=${s##*) }
  f=($s)
  [ "${f[0]}" != Z ] && [ "${f[19]}" = "$2" ]
}
# $1 = PID, $2 = start time: exit 0 when that PID is another process's (a later start):
# the PID was free, so the process group of that id (the wrapper's) had ended. The
# wrapper itself as a zombie (killed, not reaped yet: some containers' init never reaps)
# is not another process.
fb_other() {
  local s f
  { read -r s < "/proc/$1/stat"; } 2>/dev/null || return 1
  s=${s##*) }
  f=($s)
  [ "${f[19]}" != "$2" ]
}
# $1 = PID, $2 = a run's token: exit 0 when that process's environment (as it was
# started) holds FLOWBATCH_SSH_TOKEN=$2, which the run's wrapper exports to everything
# it starts (see _LAUNCH).
fb_token() {
  local e
  case $2 in ''|*[!0-9a-f]*) return 1;; esac
  { while IFS= read -r -d '' e; do
      [ "$e" = "FLOWBATCH_SSH_TOKEN=$2" ] && return 0
    done < "/proc/$1/environ"; } 2>/dev/null
  return 1
}
# $1 run folder, $2 group id, $3 the wrapper's start time, $4 the run's token: exit 0
# while the run's script runs: the PID of its "started" marker live in the group and
# session, started no earlier than the wrapper, and the run's (its environment has the
# token; for a run without one, an older flowbatch's: its folder is the run's); 1 when
# it does not; 2 when it has not written that marker yet (or its markers are not a
# regular file: the run's user writes them)
fb_script() {
  local m="$1/status/markers" w pid s f
  if [ ! -e "$m" ] && [ ! -L "$m" ] && [ -f "$1/status/started" ]; then
    # a run an older flowbatch started: a file a marker, "started" holds "<pid> ..."
    m="$1/status/started"
    [ ! -L "$m" ] || return 2
    { read -r -t 0.2 -n 64 pid s <> "$m"; } 2>/dev/null
    w=started
  else
    [ -f "$m" ] && [ ! -L "$m" ] || return 2
    # opened read-write and read with a time limit: a FIFO swapped in blocks neither
    { read -r -t 0.2 -n 64 w pid s <> "$m"; } 2>/dev/null
  fi
  [ -n "$w" ] || return 2
  [ "$w" = started ] || return 1
  case $pid in ''|*[!0-9]*) return 1;; esac
  { read -r s < "/proc/$pid/stat"; } 2>/dev/null || return 1
  s=${s##*) }
  f=($s)
  [ "${f[0]}" != Z ] && [ "${f[2]}" = "$2" ] && [ "${f[3]}" = "$2" ] \
    && [ "${f[19]}" -ge "$3" ] || return 1
  if [ -n "${4:-}" ]; then
    fb_token "$pid" "$4" || return 1
  else
    [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$(cd -- "$1" 2>/dev/null && pwd -P)" ] \
      || return 1
  fi
}
# $1 group id, $2 the wrapper's start time, $3 a clock tick at which the group was proven
# the run's (none: no such moment known), $4 the run's token: exit 0 while a process of
# the group (and session) started no earlier than the wrapper lives that started before
# that tick or has the token (one walk of /proc)
fb_before() {
  local p s f
  case $1$2 in ''|*[!0-9]*) return 1;; esac
  for p in /proc/[0-9]*/stat; do
    { read -r s < "$p"; } 2>/dev/null || continue
    s=${s##*) }
    f=($s)
    [ "${f[2]}" = "$1" ] && [ "${f[3]}" = "$1" ] && [ "${f[0]}" != Z ] \
      && [ "${f[19]}" -ge "$2" ] || continue
    [ -n "${3:-}" ] && [ "${f[19]}" -le "$3" ] && return 0
    p=${p#/proc/}
    fb_token "${p%/stat}" "${4:-}" && return 0
  done
  return 1
}
"""

# $1 group id, $2 the wrapper's start time, $3 the run's token, $4 its remote folder:
# exit 0 when the group is proven the run's (see above). Zombies do not count (detached
# processes are reaped by init, and some containers' init never does).
_GROUP_ALIVE = r"""fb_ours() {
  case $2 in ''|*[!0-9]*) return 1;; esac
  fb_same "$1" "$2" && return 0
  fb_other "$1" "$2" && return 1  # its PID is another process's: the run's group ended
  if [ -n "${4:-}" ] && [ -d "$4" ]; then fb_script "$4" "$1" "$2" "${3:-}" && return 0; fi
  [ -n "${3:-}" ] && fb_before "$1" "$2" "" "$3"
}
# $1 pid (its group's id), $2 its start time, $3 the boot id it was recorded in (none:
# not checked), $4 the run's token, $5 its remote folder, $6 a clock tick at which the
# daemon last saw the group proven the run's (none: not known): TERM the run's group once
# proven the run's (fb_ours, now; or a process of it started before $6 still there), and
# set fb_now to a tick at which it was the run's (what of it started before then is the
# run's, token or not: fb_before); exit 1, nothing sent, when it is not (or no longer)
fb_term() {
  local b s f
  fb_now=
  if [ -n "${3:-}" ]; then
    read -r b < /proc/sys/kernel/random/boot_id
    [ "$b" = "$3" ] || return 1
  fi
  if fb_ours "$1" "$2" "${4:-}" "${5:-}"; then
    read -r s < "/proc/$BASHPID/stat"
    s=${s##*) }
    f=($s)
    fb_now=${f[19]}  # this shell started before the proof
  else
    case ${6:-} in ''|*[!0-9]*) return 1;; esac
    fb_other "$1" "$2" && return 1
    fb_before "$1" "$2" "$6" "${4:-}" || return 1
    fb_now=$6
  fi
  kill -TERM -- "-$1" 2>/dev/null
}
# $1 pid (its group's id), $2 its start time, $3 the boot id it was recorded in (none: not
# checked), $4 the tick fb_term set, $5 the run's token: exit 0 while something fb_term
# sent TERM to is left in the group (started before $4, token or not, or with the token)
fb_left() {
  local b
  if [ -n "${3:-}" ]; then
    read -r b < /proc/sys/kernel/random/boot_id
    [ "$b" = "$3" ] || return 1
  fi
  fb_before "$1" "$2" "$4" "${5:-}"
}
# $1 pid (its group's id), $2 its start time, $3 ticks of 0.1 s, $4 the boot id, $5 the
# run's token, $6 its remote folder, $7 the tick of the last proof (as for fb_term): TERM
# the run's group (fb_term), KILL what is left of it after the ticks (a cancel, a
# relaunch): the processes started before it was proven, token or not, and those with
# the token
fb_end() {
  local i
  fb_term "$1" "$2" "${4:-}" "${5:-}" "${6:-}" "${7:-}" || return 0
  for ((i = 0; i < $3; i++)); do
    fb_before "$1" "$2" "$fb_now" "${5:-}" || return 0
    sleep 0.1
  done
  kill -KILL -- "-$1" 2>/dev/null || true
}
"""

# The wrapper (a session and process group of its own, setsid): a cancel's TERM goes to
# the script, the wrapper outlives it; once the script ended, the wrapper ignores TERM,
# INT and HUP (so does its mv), writes the exit status to a temporary file (opened
# read-write: a FIFO the run put there never blocks it) renamed into place (a poll, which
# reads it only once the wrapper is gone, finds the whole line or none), then SIGKILLs
# the group, itself included: whatever the run left in it ends before the poll can see
# the run ended.
_LAUNCH = r"""set -e
cd -- {dir}
mkdir -p logs status
{exports}
export FLOWBATCH_SSH_TOKEN={token}
setsid nohup bash -c 'trap : TERM INT HUP; bash run.sh; fb_rc=$?; trap "" TERM INT HUP
rm -f -- {tmp}; printf "%s\n" "$fb_rc" 1<> {tmp} && mv -f -- {tmp} {rc}; kill -KILL 0' \
  </dev/null >>logs/script.log 2>&1 &
fb_pid=$!
read -r fb_s < "/proc/$fb_pid/stat"
fb_s=${{fb_s##*) }}
fb_f=($fb_s)
read -r fb_boot < /proc/sys/kernel/random/boot_id
printf '%s %s %s %s\n' "$fb_pid" "${{fb_f[19]}}" "$fb_boot" {token} > {wrapper}
printf '%s %s %s\n' "$fb_pid" "${{fb_f[19]}}" "$fb_boot"
"""

# Before a run's remote folder is emptied for a launch: the wrapper an earlier start of
# this run left there (a daemon killed between the start and its record, or a lost
# attempt) is ended if it still runs, as a cancel would; then the fresh folder.
_PREPARE = r"""set -e
fb_old() {{
  local pid start boot token now
  {{ read -r pid start boot token < {dir}/{wrapper}; }} 2>/dev/null || return 0
  read -r now < /proc/sys/kernel/random/boot_id
  case $pid in ''|*[!0-9]*) return 0;; esac
  [ "$boot" = "$now" ] || return 0
  fb_end "$pid" "$start" {ticks} "" "$token" {dir}
}}
fb_old
if [ -e {dir} ] || [ -L {dir} ]; then rm -rf -- {dir}; fi
mkdir -p -- {dir}; cd -- {dir}; pwd -P
"""
#: the wrapper's "pid start boot-id token", in the run's remote folder (see _PREPARE)
WRAPPER_RECORD = "status/wrapper"

# one line per run: "<run id> <state> <wrapper's exit status or -> [killed]", the state
# 1 (the wrapper runs), 0 (it ended), nodir (the remote folder is gone) or orphan (the
# wrapper was killed from outside, the script goes on in the run's process group).
# The exit status is read only once the wrapper ended, only from a regular file (the run
# may leave a FIFO there: opening it would hold the poll of every run of the host), and
# no more than its first line (16 characters).
# A wrapper gone with no exit status written (killed from outside; one that wrote it
# killed its group itself): while the script runs in the run's group (fb_script; before
# its first marker: while a process of the group has the run's token) the run goes on
# ("orphan"); else the poll does what the dead wrapper can no longer do and KILLs what is
# left of the group ("killed"): when a process with the token is left, or one started
# before the last poll that found the group the run's (the daemon keeps that poll's
# clock tick, $8: the group was the run's then, and a process of it still there is).
# Processes are looked at (a walk of /proc) only for such runs.
_POLL_HEAD = (
    _SAME_PROCESS
    + r"""read -r fb_boot < /proc/sys/kernel/random/boot_id
read -r fb_tick < "/proc/$BASHPID/stat"
fb_tick=${fb_tick##*) }
fb_tick=($fb_tick)
# the clock tick this poll began at: a group it finds the run's was the run's then
printf 'boot %s %s\n' "$fb_boot" "${fb_tick[19]}"
# $1 run id, $2 the wrapper's pid, $3 its start time, $4 the run folder, $5 its boot id,
# $6 the run's process group id (the wrapper's pid), $7 the run's token, $8 the tick of
# the last poll that found the group the run's
fb_p() {
  local alive=0 rc=- f="$4/status/script.rc" g=${6:-$2} left= st=2 until=
  if [ "$5" = "$fb_boot" ] && fb_same "$2" "$3"; then alive=1; fi
  if [ "$alive" = 0 ] && [ "$5" = "$fb_boot" ] && [ ! -e "$f" ] && [ ! -L "$f" ] \
    && ! fb_other "$g" "$3"; then
    if [ -d "$4" ]; then fb_script "$4" "$g" "$3" "${7:-}"; st=$?; fi
    if [ "$st" = 0 ] || { [ "$st" = 2 ] && fb_before "$g" "$3" "" "${7:-}"; }; then
      printf '%s orphan -\n' "$1"
      return
    fi
    case ${8:-} in ''|*[!0-9]*) ;; *) until=$8;; esac
    if fb_before "$g" "$3" "$until" "${7:-}"; then
      kill -KILL -- "-$g" 2>/dev/null && left=" killed"
    fi
  fi
  if [ "$alive" = 0 ] && [ ! -d "$4" ]; then printf '%s nodir -%s\n' "$1" "$left"; return; fi
  if [ "$alive" = 0 ] && [ -f "$f" ] && [ ! -L "$f" ]; then
    # opened read-write and read with a time limit: a FIFO swapped in after the test
    # (a leftover process of the run) neither blocks the open nor the read
    { read -r -t 0.2 -n 16 rc <> "$f"; } 2>/dev/null
  fi
  case $rc in ''|*[!0-9]*) rc=-;; esac
  printf '%s %s %s%s\n' "$1" "$alive" "$rc" "$left"
}
"""
)

# run after _SAME_PROCESS and _GROUP_ALIVE, which stay out of this format string
# (their braces are bash's)
_CANCEL = r"""fb_end {pid} {start} {ticks} {boot} {token} {dir} {proven}
exit 0
"""
# A serving daemon's end of a run, in commands a grace apart (SSHExecutor.terminate, then
# kill; left between): TERM now, with the tick of the proof ("term <tick>"; "none": no
# group of the run's there, nothing sent); at the end of the grace, KILL the group while
# something TERM was sent to is left in it; whether something is left ("left", "gone").
_TERMINATE = r"""if fb_term {pid} {start} {boot} {token} {dir} {proven}; then
  printf 'term %s\n' "$fb_now"
else
  echo none
fi
"""
_KILL = r"""if fb_left {pid} {start} {boot} {tick} {token}; then
  kill -KILL -- -{pid} 2>/dev/null
fi
exit 0
"""
_LEFT = r"""if fb_left {pid} {start} {boot} {tick} {token}; then echo left; else echo gone; fi
"""


def ssh_runner(config: SiteConfig, host_name: str) -> SSHRunner:
    """A CommandRunner on the pooled connection to ``host_name`` of the site config."""
    return shared_pool(config.ssh).runner(host_name)


def ssh_executors(config: SiteConfig, site_root: Path | None = None) -> dict[str, SSHExecutor]:
    """One executor per host of the site config's ``ssh:`` section, sharing one pool.
    With ``site_root``, abandoned process groups are kept in files under it."""
    pool = shared_pool(config.ssh)
    return {
        name: SSHExecutor(name, host, pool, site_root=site_root)
        for name, host in config.ssh.items()
    }


@dataclass
class Terminated:
    """What :meth:`SSHExecutor.terminate` sent TERM to, for its :meth:`~SSHExecutor.kill`
    and :meth:`~SSHExecutor.left`: the run's handle, and a clock tick of its host at which
    its process group was proven the run's (what of the group started before it is the
    run's, token or not; "": only the token tells)."""

    handle: dict[str, Any]
    tick: str
    #: its SIGKILL could not be sent (the host did not answer): the group is abandoned
    #: (:meth:`SSHExecutor.abandon`), ended once the host answers, no longer waited for
    away: bool = False


class SSHExecutor:
    """Runs whole runs on one SSH host (see the module docstring)."""

    #: seconds a cancelled run has between TERM and KILL (the Runner's deferred kill)
    cancel_grace = CANCEL_GRACE

    def __init__(
        self, name: str, host: SSHHost, pool: SSHPool, *, site_root: Path | None = None
    ) -> None:
        self.name = name
        self.host = host
        self.pool = pool
        self.limit = host.max_runs
        self._fetched: set[str] = set()  # runs whose files came home during a poll
        #: monotonic time of the first poll in a row that got no answer (unreachable,
        #: failed, timed out): only a poll that answers resets it, a reconnection does not
        self._failing_since: float | None = None
        #: runs that ended but whose files could not be fetched: since when, and why
        self._fetch_failing: dict[str, float] = {}
        #: runs whose probe failed unexpectedly (see _probe_safely): since when
        self._probe_failing: dict[str, float] = {}
        #: runs whose fetch is incomplete (their remote folder is kept): why
        self._incomplete: dict[str, str] = {}
        #: runs whose remote folder collect keeps (their notes say why)
        self._kept: set[str] = set()
        #: what the run's messages should say about the fetch of its files
        self._said: dict[str, list[str]] = {}
        #: runs seen going on after their wrapper was killed from outside (see poll)
        self._orphaned: set[str] = set()
        #: a run's group (pgid:start) -> the clock tick of the last poll that found it
        #: the run's: its processes started before then are the run's (fb_p, fb_end)
        self._proven: dict[str, str] = {}
        #: the groups (pgid:start) of runs :meth:`terminate` sent TERM to, until collected:
        #: their end is the cancel's or the time limit's, not the script's (see _probe)
        self._terminated: set[str] = set()
        #: handles of runs given up on while this host was away (see :meth:`abandon`),
        #: those an earlier daemon (or ``runs cancel``) could not end first
        self._notes = Notes(
            site_root / ABANDONED_DIR / name if site_root else None, f"ssh {name}: abandoned"
        )
        self._abandoned: list[dict[str, Any]] = self._load_abandoned()

    @property
    def connection(self) -> SSHConnection:
        return self.pool.connection(self.name)

    def check(self) -> str:
        """For ``flowbatch doctor``: the host key verifies, the remote root is writable,
        and how long a round trip takes on the pooled connection."""
        conn = self.connection
        begin = time.monotonic()
        root = probe_remote_root(conn, self.name, self.host.remote_root)
        took = (time.monotonic() - begin) * 1000
        return f"{self.host.login()}: host key verified, {root} writable, {took:.1f} ms"

    # -- launch ---------------------------------------------------------------------------
    def launch(self, job: Launch) -> dict[str, Any]:
        conn = self.connection
        where = self._remote_path(job)
        # a run lost while the host was away may be this one's last attempt, still going:
        # ended first (HostUnreachable, the run waits, while the host cannot be asked)
        self._end_abandoned(force=True)
        # a fresh folder: a retried run must not find the markers of its last attempt, and
        # an earlier start of this run that still runs there (its record lost with a
        # daemon killed right after the start) is ended first: never two at once
        prep = conn.run(
            _SAME_PROCESS
            + _GROUP_ALIVE
            + _PREPARE.format(dir=_q(where), wrapper=WRAPPER_RECORD, ticks=int(CANCEL_GRACE * 10)),
            force=True,
        )
        if not prep.ok:
            raise self._error(f"cannot create the remote run folder {where}", prep.stderr)
        remote_dir = prep.stdout.strip().splitlines()[-1]
        try:
            upload_tree(conn.sftp(force=True), job.run_dir, remote_dir)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if connection_lost(exc) or not conn.alive():
                raise conn.broken(exc) from None
            raise self._error(f"cannot upload the run folder to {remote_dir}", str(exc)) from None
        bad = [k for k in job.env if not _ENV_NAME.match(k)]
        if bad:
            raise self._error(f"not environment variable names: {bad}", "")
        exports = "\n".join(f"export {k}={_q(v)}" for k, v in job.env.items())
        token = secrets.token_hex(8)  # marks what the run starts (see fb_token)
        started = conn.run(
            _LAUNCH.format(
                dir=_q(remote_dir),
                exports=exports,
                rc=RC_MARKER,
                tmp=RC_TEMP,
                wrapper=WRAPPER_RECORD,
                token=token,
            ),
            force=True,
        )
        fields = started.stdout.split()
        if not started.ok or len(fields) != 3 or not fields[0].isdigit():
            raise self._error("cannot start run.sh", started.stderr or started.stdout)
        pid, start, boot = fields
        self._failing_since = None  # it answered
        log.info("run %s started on %s as pid %s in %s", job.run_id, self.name, pid, remote_dir)
        return {
            "host": self.name,
            "hostname": self.host.hostname,
            "pid": int(pid),
            "pgid": int(pid),
            "start": start,
            "boot_id": boot,
            "token": token,  # in the environment of what the run starts (see fb_token)
            "remote_dir": remote_dir,
            "run_dir": str(job.run_dir),  # where a poll brings a finished run's files
        }

    def _remote_path(self, job: Launch) -> str:
        parts = [job.workflow or "runs", job.run_id]
        for part in parts:  # they name a folder that launch empties: no surprises allowed
            if not _SAFE_PART.match(part) or part in (".", ".."):
                raise self._error(f"unsafe remote folder name {part!r}", "")
        return "/".join([self.host.remote_root, *parts])

    def _error(self, what: str, detail: str) -> ExecutorError:
        detail = " ".join(detail.split())[-500:]
        return ExecutorError(
            f"ssh host {self.name}: {what}" + (f": {detail}" if detail else ""),
            hint=f"`flowbatch hosts check {self.name}` tests the connection and remote root",
        )

    # -- poll -----------------------------------------------------------------------------
    def poll(self, handles: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Probe]:
        """All of this host's runs in one remote command; finished runs' files come home.

        A poll that gets no answer (the host unreachable, the poll failing or timing out:
        it is ended there, see :mod:`ssh_pool`) gives UNKNOWN, then GONE once no poll
        has answered for longer than ``unreachable_grace``."""
        if not handles:
            return {}
        conn = self.connection
        lines = [_POLL_HEAD]
        for run_id, h in handles:
            pid = str(h.get("pid", 0))
            args = [run_id, pid, str(h.get("start", "")), h.get("remote_dir", "")]
            args += [str(h.get("boot_id", "")), str(h.get("pgid", pid)), _token(h)]
            args.append(_proven_of(self._proven, h))
            lines.append("fb_p " + " ".join(_q(a) for a in args))
        try:
            result = conn.run("\n".join(lines) + "\n")
        except FlowbatchError as exc:
            return self._unreachable(handles, conn, exc.reason, conn.last_error)
        if not result.ok:
            log.warning("ssh %s: poll failed: %s", self.name, result.stderr.strip()[-300:])
            detail = " ".join(result.stderr.split())[-200:] or f"exit status {result.returncode}"
            return self._unreachable(handles, conn, f"poll failed on ssh:{self.name}: {detail}")
        self._failing_since = None
        states = _parse_poll(result.stdout)
        tick = _poll_tick(result.stdout)
        out: dict[str, Probe] = {}
        for run_id, handle in handles:
            state = states.get(run_id)
            if tick and state is not None and state[0] in ("1", "orphan"):
                self._proven[_group_key(handle)] = tick  # the group was the run's then
            out[run_id] = self._probe_safely(run_id, handle, state)
        return out

    def _probe_safely(
        self, run_id: str, handle: dict[str, Any], state: tuple[str, str, bool] | None
    ) -> Probe:
        """:meth:`_probe`, one run's failure its own: an unexpected error (a bug met by
        this run's fetch, found by review: a remote file name that was not UTF-8) is
        logged with its traceback once, and the run is UNKNOWN, looked at again at the
        next tick, while the host's other runs go on; past ``unreachable_grace`` it ends
        as an infrastructure failure, its remote folder kept: never wedged."""
        try:
            probe = self._probe(run_id, handle, state)
        except Exception as exc:
            return self._probe_failed(run_id, handle, exc)
        if self._probe_failing.pop(run_id, None) is not None:
            log.info("ssh %s: run %s is looked at again", self.name, run_id)
        return probe

    def _probe_failed(self, run_id: str, handle: dict[str, Any], exc: Exception) -> Probe:
        now = time.monotonic()
        since = self._probe_failing.get(run_id)
        what = one_line(text.shown(f"{type(exc).__name__}: {exc}"))[:300]
        if since is None:
            since = self._probe_failing[run_id] = now
            log.exception(
                "ssh %s: looking at run %s failed; it is looked at again at the next tick",
                self.name,
                run_id,
            )
        else:
            log.warning("ssh %s: looking at run %s failed again: %s", self.name, run_id, what)
        waited = now - since
        if waited <= self.host.unreachable_grace:
            return Probe(
                Liveness.UNKNOWN,
                raw=f"looking at it on ssh:{self.name} failed ({what}); again at the next tick",
            )
        self._probe_failing.pop(run_id, None)
        why = (
            f"looking at the run on ssh host {self.name} failed for {waited:.0f} s "
            f"(unreachable_grace {self.host.unreachable_grace:g} s): {what}; "
            f"its remote folder is kept: {self._where(handle)}"
        )
        self._incomplete[run_id] = why  # collect neither fetches again nor removes it
        self._fetched.add(run_id)
        return Probe(Liveness.GONE, raw=why, infra_failure=why)

    def _probe(
        self, run_id: str, handle: dict[str, Any], state: tuple[str, str, bool] | None
    ) -> Probe:
        pid = handle.get("pid")
        if state is None:
            return Probe(Liveness.UNKNOWN, raw=f"no answer for pid {pid} on ssh:{self.name}")
        alive, rc, killed = state
        group = handle.get("pgid", pid)
        if alive == "1":
            return Probe(Liveness.ALIVE, raw=f"pid {pid} running on ssh:{self.name}")
        if alive == "orphan":  # its wrapper was killed from outside: the script goes on
            self._orphaned.add(run_id)
            return Probe(
                Liveness.ALIVE,
                raw=(
                    f"pid {pid} (the run's wrapper) on ssh:{self.name} was killed from "
                    f"outside; its script still runs in process group {group}"
                ),
                # kept in the run's handle: a cancel or a daemon started later knows the
                # group was the run's at that tick (see fb_end)
                detail={"status": ORPHAN_STATUS, "keep": self._proven_to_keep(handle)},
            )
        orphaned = run_id in self._orphaned or handle.get("status") == ORPHAN_STATUS
        left = f"; what was left of its process group {group} there was killed" if killed else ""
        if alive == "nodir":
            return Probe(
                Liveness.FINISHED,
                raw=f"the remote run folder {handle.get('remote_dir')} is gone on "
                f"ssh:{self.name}{left}",
            )
        code = int(rc) if rc.isdigit() else None
        raw = f"pid {pid} on ssh:{self.name} " + (
            f"ended with status {code}" if code is not None else "is gone, no exit status recorded"
        )
        raw += left
        try:
            self._fetch(run_id, handle)
        except HostUnreachable as exc:  # it ended, but its files are not home: next tick
            since = self._fetch_failing.setdefault(run_id, time.monotonic())
            waited = time.monotonic() - since
            if waited <= self.host.unreachable_grace:
                return Probe(Liveness.UNKNOWN, raw=f"{raw}; fetching its files: {exc.reason}")
            why = (
                f"the files of the ended run could not be fetched from ssh host {self.name} "
                f"for {waited:.0f} s (unreachable_grace {self.host.unreachable_grace:g} s): "
                f"{exc.reason}; its remote folder is kept: {self._where(handle)}"
            )
            self._fetch_failing.pop(run_id, None)
            self._incomplete[run_id] = why
            self._fetched.add(run_id)  # collect leaves it (and its folder) alone
            return Probe(Liveness.GONE, raw=f"{raw}; {why}", infra_failure=why)
        self._fetch_failing.pop(run_id, None)
        if _group_key(handle) in self._terminated:
            # being ended by the daemon (terminate): recorded as the cancel or the time
            # limit has it, not as the script ended; notes on a failed end (its wrapper
            # "killed from outside", its logs come home empty) would be wrong there, and
            # the df for the latter one more round trip
            return Probe(Liveness.FINISHED, exit_code=code, raw=raw)
        if code is None:  # its wrapper killed from outside: the script's marker, if any
            code = self._marker_end(run_id, handle, orphaned=orphaned, killed=killed)
        if code != 0:
            space = self._space_note(handle)
            if space:
                self._note(run_id, space)
        said = "; ".join(self._said.get(run_id, []))
        incomplete = self._incomplete.get(run_id)
        if incomplete:  # collect tries once more; a lost run's message says it
            raw += f"; {incomplete}"
        if said:  # in a failed or lost run's messages (a successful one's: take_messages)
            return Probe(
                Liveness.FINISHED, exit_code=code, raw=f"{raw}; {said}", detail={"message": said}
            )
        return Probe(Liveness.FINISHED, exit_code=code, raw=raw)

    def _proven_to_keep(self, handle: dict[str, Any]) -> dict[str, Any]:
        """For the handle of a run whose wrapper was killed: the tick of the last poll
        that found its group the run's, when the handle has none or one older by
        :data:`PROVEN_KEEP_EVERY` ticks (``run.json`` is not written at every poll)."""
        tick = self._proven.get(_group_key(handle))
        kept = str(handle.get("proven") or "")
        if not tick:
            return {}
        if kept.isdecimal() and int(tick) - int(kept) < PROVEN_KEEP_EVERY:
            return {}
        return {"proven": tick}

    def _marker_end(
        self, run_id: str, handle: dict[str, Any], *, orphaned: bool, killed: bool
    ) -> int | None:
        """A run whose wrapper is gone without the script's exit status (killed from
        outside): the script's exit code by its own exit marker (come home with its
        files), noted in the run's messages; None when it wrote none (lost)."""
        ended = read_markers(Path(str(handle.get("run_dir", "")))).exit
        if ended is None:
            return None
        when = "while its script ran" if orphaned else "before it recorded the script's end"
        self._note(
            run_id,
            f"its wrapper on ssh host {self.name} (pid {handle.get('pid')}) was killed from "
            f"outside {when}; the run ended as the script's own exit marker says"
            + ("; what was left of its process group there was killed" if killed else ""),
        )
        return ended[0]

    def _space_note(self, handle: dict[str, Any]) -> str | None:
        """For a run that failed and whose logs came home empty (a full remote disk
        leaves no word of itself): the remote file system of its folder, as ``df -P``
        gives it (one line). None otherwise, or when the host does not say."""
        logs = Path(str(handle.get("run_dir", ""))) / LOGS_DIR
        try:
            with os.scandir(logs) as entries:
                if any(
                    e.is_file(follow_symlinks=False) and e.stat(follow_symlinks=False).st_size
                    for e in entries
                ):
                    return None
        except OSError:
            pass
        remote = str(handle.get("remote_dir") or "")
        if not remote:
            return None
        try:
            result = self.connection.run(f"df -P -- {_q(remote)} | tail -n 1", timeout=10)
        except FlowbatchError:
            return None
        line = " ".join(result.stdout.split())
        if not result.ok or not line:
            return None
        fields = line.split(" ")  # file system, blocks, used, available, capacity, mount
        full = len(fields) >= 5 and (fields[3] == "0" or fields[4] == "100%")
        return (
            "its logs came home empty; "
            + ("no space left on the file system of its remote folder" if full else "")
            + (" " if full else "the file system of its remote folder ")
            + f"(df -P): {line}"
        )

    def _unreachable(
        self,
        handles: Sequence[tuple[str, dict[str, Any]]],
        conn: SSHConnection,
        reason: str,
        cause: str | None = None,
    ) -> dict[str, Probe]:
        """Probes for a poll that got no answer (``reason``; ``cause``, the short form for
        the end): UNKNOWN, GONE once no poll has answered for ``unreachable_grace``."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        down = max(conn.unreachable_for(), now - self._failing_since)
        if down <= self.host.unreachable_grace:
            return {run_id: Probe(Liveness.UNKNOWN, raw=reason) for run_id, _ in handles}
        why = (
            f"ssh host {self.name} unreachable for {down:.0f} s "
            f"(unreachable_grace {self.host.unreachable_grace:g} s): {cause or reason}"
        )
        self._failing_since = None  # these runs end; the next ones get their own grace
        return {run_id: Probe(Liveness.GONE, raw=why, infra_failure=why) for run_id, _ in handles}

    def _fetch(self, run_id: str, handle: dict[str, Any]) -> None:
        """Bring the remote run folder's new and changed files home (once).

        A remote file that cannot be read is left out, and noted; a lost connection
        raises :class:`HostUnreachable` (the next poll tries again); a fetch that fails
        for another reason (writing here) is noted as incomplete (its remote folder is
        kept) and tried again once by :meth:`collect`."""
        if run_id in self._fetched or not handle.get("remote_dir") or "run_dir" not in handle:
            return
        conn = self.connection
        remote = str(handle["remote_dir"])
        skipped: list[str] = []
        budget = FetchBudget(self.host.max_fetch_bytes)
        try:
            download_tree(conn.sftp(), remote, Path(handle["run_dir"]), skipped, budget=budget)
        except RemoteFolderMissing:
            pass  # the remote folder itself is gone: the local markers will say "lost"
        except RemoteFolderReplaced as exc:
            log.warning("ssh %s: run %s: its remote folder %s", self.name, run_id, exc)
            fetched = (
                "what came home from it may not be the run's"
                if exc.during
                else "nothing was fetched from it"
            )
            self._note(
                run_id,
                f"on ssh host {self.name}, its remote folder {exc}: {fetched} (a run's "
                f"files come from its own folder only); it is kept for the site's admin to "
                f"look at: {self._where(handle)}",
            )
            self._kept.add(run_id)
            self._incomplete.pop(run_id, None)
            self._fetched.add(run_id)
            return
        except (OSError, EOFError, paramiko.SSHException, LocalWriteError) as exc:
            if not isinstance(exc, LocalWriteError) and (connection_lost(exc) or not conn.alive()):
                raise conn.broken(exc) from None
            log.warning("ssh %s: fetching %s: %s", self.name, remote, exc)
            self._incomplete[run_id] = (
                f"its files did not all come home from ssh host {self.name} ({exc}); "
                f"its remote folder is kept: {self._where(handle)}"
            )
            return
        self._incomplete.pop(run_id, None)
        if skipped:
            shown = ", ".join(skipped[:NOTED_FILES])
            more = f" and {len(skipped) - NOTED_FILES} more" if len(skipped) > NOTED_FILES else ""
            self._note(
                run_id,
                f"{len(skipped)} file(s) of the run folder on ssh host {self.name} could not "
                f"be fetched and are left out: {shown}{more}",
            )
        if budget.left_out:
            self._note_over_budget(run_id, handle, budget)
        self._fetched.add(run_id)

    def _note_over_budget(self, run_id: str, handle: dict[str, Any], budget: FetchBudget) -> None:
        """Files left on the host for the host's ``max_fetch_bytes``: named in the run's
        messages, and its remote folder kept (nothing is lost)."""
        from ..report import format_size

        files = budget.left_out
        shown = ", ".join(f"{path} ({format_size(size)})" for path, size in files[:NOTED_FILES])
        more = f" and {len(files) - NOTED_FILES} more" if len(files) > NOTED_FILES else ""
        total = format_size(sum(size for _, size in files))
        self._kept.add(run_id)
        self._note(
            run_id,
            f"{len(files)} file(s) of the run folder on ssh host {self.name} ({total}) were "
            f"not fetched: more than the host's max_fetch_bytes "
            f"({format_size(budget.limit)}) of a run's files come back: {shown}{more}; they "
            f"are left there, and its remote folder is kept: {self._where(handle)} (copy "
            f"them from there, or raise max_fetch_bytes in flowbatch.yaml)",
        )

    def _where(self, handle: dict[str, Any]) -> str:
        return f"{self.host.login()}:{handle.get('remote_dir')}"

    def take_messages(self, run_id: str) -> list[str]:
        """What the run's messages should say about the fetch of its files (files left
        out, a remote folder kept and why), once: for the run's end."""
        return self._said.pop(run_id, [])

    # -- collect / cancel / adopt -----------------------------------------------------------
    def collect(self, run_id: str, handle: dict[str, Any], run_dir: Path) -> None:
        """Files home (if a poll did not already), then the remote folder away.

        Best effort and never raising: a host that is down keeps its folder (the run's
        message says why it ended), and the markers that came home decide the state."""
        conn = self.connection
        try:
            if conn.down_since is not None and not conn.alive():
                log.warning("ssh %s: down, run %s's remote folder is left", self.name, run_id)
                self._keep(run_id, handle, f"ssh host {self.name} is away ({conn.last_error})")
                return
            try:
                self._fetch(run_id, {**handle, "run_dir": str(run_dir)})
            except FlowbatchError as exc:
                log.warning("ssh %s: collecting run %s: %s", self.name, run_id, exc.reason)
                self._keep(run_id, handle, f"fetching its files: {exc.reason}")
                return
            except Exception as exc:  # a bug met by this run's fetch: not the runner's end
                log.exception("ssh %s: collecting run %s", self.name, run_id)
                what = one_line(text.shown(f"{type(exc).__name__}: {exc}"))[:300]
                self._keep(run_id, handle, f"fetching its files failed: {what}")
                return
            incomplete = self._incomplete.pop(run_id, None)
            if incomplete:  # never removed with files not home
                self._note(run_id, incomplete)
            elif (
                not self.host.keep_remote and handle.get("remote_dir") and run_id not in self._kept
            ):
                # detached: a large folder's removal neither holds the tick nor is cut
                # short half-way by the command's timeout
                remote = _q(str(handle["remote_dir"]))
                conn.run(f"setsid rm -rf -- {remote} </dev/null >/dev/null 2>&1 &")
        except FlowbatchError as exc:
            log.warning("ssh %s: collecting run %s: %s", self.name, run_id, exc.reason)
        finally:
            self._fetched.discard(run_id)
            self._kept.discard(run_id)
            self._orphaned.discard(run_id)
            self._proven.pop(_group_key(handle), None)
            self._terminated.discard(_group_key(handle))
            self._fetch_failing.pop(run_id, None)
            self._probe_failing.pop(run_id, None)
            self._incomplete.pop(run_id, None)

    def _keep(self, run_id: str, handle: dict[str, Any], why: str) -> None:
        if handle.get("remote_dir"):
            self._note(run_id, f"its remote folder is kept: {self._where(handle)} ({why})")

    def _note(self, run_id: str, text: str) -> None:
        said = self._said.setdefault(run_id, [])
        if text not in said:
            said.append(text)
        while len(self._said) > MAX_NOTED_RUNS:  # those nobody took (see take_messages)
            self._said.pop(next(iter(self._said)))

    def cancel(self, handle: dict[str, Any], reason: str) -> None:
        """TERM the remote process group (the wrapper is its session leader), KILL it after
        :data:`CANCEL_GRACE`; only when the recorded PID still is our process.

        A host that cannot be asked now (down, or in its reconnect backoff) gets the run
        as abandoned (:meth:`abandon`): the run ends here all the same (canceled, or over
        its time limit), and its processes are ended there once the host answers again."""
        try:
            self._end_group(handle)
        except FlowbatchError as exc:
            log.warning("ssh %s: cannot cancel pid %s: %s", self.name, handle.get("pid"), exc)
            self.abandon(handle, f"{reason}; the host did not answer: {exc.reason}")

    def abandon(self, handle: dict[str, Any], reason: str) -> None:
        """The run of ``handle`` was given up on while this host was away (unreachable
        past its grace): its processes may still run there, the daemon having lost sight
        of them only. They are ended once the host answers again (:meth:`tend`, at every
        poll of the runner) and before anything is launched there, so a retry never runs
        beside its lost attempt. Noted in a file under ``<site>/ssh-abandoned/<host>/``
        until then: a restarted daemon (or the next ``--once`` tick) ends them too."""
        if handle.get("host") == self.name and handle.get("pid"):
            if any(_same_run(handle, h) for h in self._abandoned):
                return  # already to be ended (cancelled, then declared lost)
            log.warning(
                "ssh %s: pid %s to be ended when the host answers (%s)",
                self.name,
                handle.get("pid"),
                reason,
            )
            # with when its group was last found the run's (collect forgets it): what of
            # the group started before then is ended with it, token or not
            proven = _proven_of(self._proven, handle)
            handle = {**handle, "proven": proven} if proven else dict(handle)
            self._abandoned.append(handle)
            self._note_abandoned(handle, reason)

    def has_abandoned(self) -> bool:
        """Whether process groups of runs given up on are still to be ended here."""
        return bool(self._abandoned)

    def tend(self) -> None:
        """At each poll of the runner: end the abandoned runs' processes if the host
        answers now (its connection's backoff is kept). Each group's end runs detached
        on the host (:meth:`_end_group` with ``detach``), so the tick does not wait out
        the grace between TERM and KILL: a group that ignored TERM held the daemon's
        whole tick 3 s, group after group, when the host came back (found by review)."""
        if self._abandoned:
            try:
                self._end_abandoned(detach=True)
            except FlowbatchError:
                pass  # still away: the next tick asks again
            except Exception:  # best effort: never the end of the runner's poll
                log.exception("ssh %s: ending the processes of lost runs", self.name)

    def _end_abandoned(self, *, force: bool = False, detach: bool = False) -> None:
        """End the process groups of the abandoned runs; raises (the rest kept) when the
        host cannot be asked. ``detach``: see :meth:`_end_group`."""
        while self._abandoned:
            self._end_group(self._abandoned[0], force=force, detach=detach)
            self._forget_abandoned(self._abandoned.pop(0))

    # the notes of the abandoned process groups (``<site>/ssh-abandoned/<host>/``)
    def _note_abandoned(self, handle: dict[str, Any], reason: str) -> None:
        self._notes.note(_abandoned_key(handle), {"handle": dict(handle), "reason": reason})

    def _forget_abandoned(self, handle: dict[str, Any]) -> None:
        self._notes.forget(_abandoned_key(handle))

    def _load_abandoned(self) -> list[dict[str, Any]]:
        """The process groups an earlier daemon (or ``runs cancel``) could not end yet."""
        out: list[dict[str, Any]] = []
        for entry in self._notes.load():
            handle = entry.get("handle")
            if (
                isinstance(handle, dict)
                and handle.get("host") == self.name
                and handle.get("pid")
                and not any(_same_run(handle, h) for h in out)
            ):
                out.append(handle)
        return out

    def _end_group(
        self, handle: dict[str, Any], *, force: bool = False, detach: bool = False
    ) -> None:
        """TERM the run's group, KILL what is left of it after :data:`CANCEL_GRACE`, on
        the host (``fb_end``). Waits for that on the host, unless ``detach``: then it
        runs there in a session of its own, fed and heard by nothing, and this returns
        once it is started (the group's proof is checked there, before each signal, as
        when waited for). A relaunch waits (it must not run beside its lost attempt)."""
        script = (
            _SAME_PROCESS
            + _GROUP_ALIVE
            + _CANCEL.format(ticks=int(CANCEL_GRACE * 10), **self._group_args(handle))
        )
        if detach:
            script = f"setsid bash -c {_q(script)} </dev/null >/dev/null 2>&1 &"
        result = self.connection.run(script, timeout=CANCEL_GRACE + 30, force=force)
        if not result.ok:
            log.warning(
                "ssh %s: ending pid %s: %s",
                self.name,
                handle.get("pid"),
                result.stderr.strip()[-300:],
            )

    def _group_args(self, handle: dict[str, Any]) -> dict[str, Any]:
        """The run's process group as fb_term and fb_end take it, quoted for the shell."""
        return {
            "pid": int(handle.get("pgid", handle.get("pid", 0))),
            "start": _q(str(handle.get("start", ""))),
            "boot": _q(str(handle.get("boot_id", ""))),
            "token": _q(_token(handle)),
            "dir": _q(str(handle.get("remote_dir", ""))),
            "proven": _q(_proven_of(self._proven, handle)),
        }

    # -- the serving daemon's cancel: terminate now, kill at the end of the grace -----------
    def terminate(self, handle: dict[str, Any]) -> Terminated | None:
        """TERM the run's remote process group, on the same proof as :meth:`cancel`, and
        return at once: the serving daemon's end of a run (``Runner._kill``), which has
        :meth:`kill` end what is left at the end of :attr:`cancel_grace`, from a later
        tick, and records the run once nothing is left (:meth:`left`). :meth:`cancel`
        waits the grace out on the host, and the daemon's whole tick waited with it: 3 s
        a run whose program ignores TERM, run after run (found by review, as for the
        local executor: 8 cancels, 24 s without a run started).

        None when no group of the run's runs there (nothing sent: the run is recorded
        now), and when the host cannot be asked (down, in its reconnect backoff): the run
        is then abandoned as by :meth:`cancel`, its group ended once the host answers.
        Never raises: it is called from the daemon's tick."""
        try:
            script = _SAME_PROCESS + _GROUP_ALIVE + _TERMINATE.format(**self._group_args(handle))
            result = self.connection.run(script)
        except FlowbatchError as exc:
            log.warning("ssh %s: cannot end pid %s: %s", self.name, handle.get("pid"), exc)
            self.abandon(handle, f"ended by the daemon; the host did not answer: {exc.reason}")
            return None
        except Exception:  # a bug: logged, never the end of the daemon's tick
            log.exception("ssh %s: ending pid %s", self.name, handle.get("pid"))
            return None
        fields = result.stdout.split()
        if result.ok and fields[:1] == ["term"]:
            tick = fields[1] if len(fields) > 1 and fields[1].isdecimal() else ""
            self._terminated.add(_group_key(handle))
            return Terminated(dict(handle), tick)
        if not result.ok:  # as cancel has it: said, and the run is recorded
            log.warning(
                "ssh %s: ending pid %s: %s",
                self.name,
                handle.get("pid"),
                result.stderr.strip()[-300:] or f"exit status {result.returncode}",
            )
        return None

    def left(self, ending: Terminated) -> bool:
        """Whether something of the run's group that :meth:`terminate` sent TERM to is
        still there (a process of it started before the proof, or with the run's token):
        one remote look, which the Runner asks for once its poll no longer finds the run
        going (or could not look). True when the host cannot tell: the Runner records the
        run one grace after its SIGKILL all the same. False once that SIGKILL was given
        over to the abandoned groups (:attr:`Terminated.away`)."""
        if ending.away:
            return False
        try:
            result = self.connection.run(
                _SAME_PROCESS + _GROUP_ALIVE + _LEFT.format(**self._ending_args(ending))
            )
        except FlowbatchError:
            return True  # cannot tell; the kill at the deadline abandons it if still away
        except Exception:  # a bug: logged, never the end of the daemon's tick
            log.exception("ssh %s: looking at pid %s", self.name, ending.handle.get("pid"))
            return True
        return not (result.ok and result.stdout.split() == ["gone"])

    def kill(self, handle: dict[str, Any], ending: Terminated) -> None:
        """KILL what is left of the run's group :meth:`terminate` sent TERM to (its
        result, ``ending``), its grace over: only while something TERM was sent to is
        still there, a process of the group started before the proof (token or not) or
        with the run's token (the group then is the run's). A host that cannot be asked
        gets the group abandoned, as :meth:`cancel` does: ended once it answers. Never
        raises: it is called from the daemon's tick."""
        try:
            script = _SAME_PROCESS + _GROUP_ALIVE + _KILL.format(**self._ending_args(ending))
            result = self.connection.run(script)
        except FlowbatchError as exc:
            log.warning("ssh %s: cannot kill pid %s: %s", self.name, handle.get("pid"), exc)
            ending.away = True
            # with the tick of its proof: what of the group started before is ended too
            proven = self._tick_of(ending)
            self.abandon(
                {**handle, "proven": proven} if proven else handle,
                f"ended by the daemon (its KILL); the host did not answer: {exc.reason}",
            )
            return
        except Exception:  # a bug: logged, never the end of the daemon's tick
            log.exception("ssh %s: killing pid %s", self.name, handle.get("pid"))
            return
        if not result.ok:
            log.warning(
                "ssh %s: killing pid %s: %s",
                self.name,
                handle.get("pid"),
                result.stderr.strip()[-300:] or f"exit status {result.returncode}",
            )

    def _tick_of(self, ending: Terminated) -> str:
        """The latest clock tick at which the group of a run being ended was proven the
        run's: :meth:`terminate`'s, or a poll's since ("": none)."""
        known = [t for t in (ending.tick, _proven_of(self._proven, ending.handle)) if t]
        return max(known, key=int, default="")

    def _ending_args(self, ending: Terminated) -> dict[str, Any]:
        """fb_left's arguments for a run being ended, quoted for the shell."""
        handle = ending.handle
        return {
            "pid": int(handle.get("pgid", handle.get("pid", 0))),
            "start": _q(str(handle.get("start", ""))),
            "boot": _q(str(handle.get("boot_id", ""))),
            "tick": _q(self._tick_of(ending)),
            "token": _q(_token(handle)),
        }

    def adopt(self, handle: dict[str, Any]) -> bool:
        """The recorded PID still runs with the recorded start time, since the same boot;
        or, its wrapper killed from outside, the run's process group is still there."""
        if handle.get("host") != self.name or not handle.get("pid"):
            return False
        pid, start = int(handle["pid"]), _q(str(handle.get("start", "")))
        script = (
            _SAME_PROCESS
            + _GROUP_ALIVE
            + "read -r b < /proc/sys/kernel/random/boot_id\n"
            + f'[ "$b" = {_q(str(handle.get("boot_id", "")))} ] && '
            + f"fb_ours {int(handle.get('pgid', pid))} {start} {_q(_token(handle))} "
            + _q(str(handle.get("remote_dir", "")))
        )
        try:
            return self.connection.run(script).ok
        except FlowbatchError as exc:
            log.warning("ssh %s: cannot look at pid %s: %s", self.name, handle.get("pid"), exc)
            return False

    def close(self) -> None:
        self.connection.close()


def _group_key(handle: dict[str, Any]) -> str:
    """A run's process group as :attr:`SSHExecutor._proven` keys it (its boot too: a
    tick means nothing in another boot)."""
    return f"{handle.get('pgid', handle.get('pid'))}:{handle.get('start')}:{handle.get('boot_id')}"


def _proven_of(proven: dict[str, str], handle: dict[str, Any]) -> str:
    """The latest clock tick at which the run's group was found the run's: by a poll of
    this daemon, else as its handle keeps it (the first poll that found its wrapper
    killed from outside, recorded in ``run.json``)."""
    known = [t for t in (proven.get(_group_key(handle)), handle.get("proven")) if t]
    return max((str(t) for t in known if str(t).isdecimal()), key=int, default="")


def _poll_tick(stdout: str) -> str:
    """The clock tick the poll began at, from its ``boot <id> <tick>`` line ("": none)."""
    for line in stdout.splitlines():
        parts = line.split(" ")
        if parts[0] == "boot":
            return parts[2] if len(parts) == 3 and parts[2].isdigit() else ""
    return ""


def _token(handle: dict[str, Any]) -> str:
    """The run's token (hex digits; none for a run an older flowbatch started: then only
    its wrapper counts as the run's, see fb_ours)."""
    token = str(handle.get("token") or "")
    return token if re.fullmatch(r"[0-9a-f]{16,64}", token) else ""


def _parse_poll(stdout: str) -> dict[str, tuple[str, str, bool]]:
    """run id -> (state, the wrapper's exit status or "-", whether the poll KILLed what
    was left of the run's process group)."""
    states: dict[str, tuple[str, str, bool]] = {}
    for line in stdout.splitlines():
        parts = line.split(" ")
        if parts[0] == "boot":
            continue
        if len(parts) == 3 or (len(parts) == 4 and parts[3] == "killed"):
            states[parts[0]] = (parts[1], parts[2], len(parts) == 4)
    return states


def _same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two handles are of the same remote process (PID, start time, boot)."""
    return all(a.get(k) == b.get(k) for k in ("pid", "start", "boot_id"))


def _abandoned_key(handle: dict[str, Any]) -> str:
    """The note's name of an abandoned handle: its PID, start time and boot id."""
    return "-".join(str(handle.get(k) or "") for k in ("pid", "start", "boot_id"))


def _q(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


# -- `flowbatch hosts check` ----------------------------------------------------------------


def check_host(config: SiteConfig, name: str, *, samples: int = 5) -> dict[str, Any]:
    """Connect afresh, verify the host key, check the remote root is writable, and time a
    round trip. Raises :class:`~flowbatch.errors.FlowbatchError` with the reason."""
    pool = SSHPool(config.ssh)  # not the shared pool: this is a real, new connection
    conn = pool.connection(name)
    host = conn.host
    try:
        begin = time.monotonic()
        client = conn.client(force=True)
        connect = time.monotonic() - begin
        transport = client.get_transport()
        assert transport is not None
        from .ssh_pool import fingerprint

        key = transport.get_remote_server_key()
        remote_root = probe_remote_root(conn, name, host.remote_root)
        times = []
        for _ in range(samples):
            t0 = time.monotonic()
            conn.run("true")
            times.append(time.monotonic() - t0)
        times.sort()
        return {
            "host": name,
            "login": host.login(),
            "via": host.jump_host,
            "host_key": f"{key.get_name()} {fingerprint(key)}",
            "remote_root": remote_root,
            "connect_ms": round(connect * 1000, 1),
            "round_trip_ms": round(times[len(times) // 2] * 1000, 1),
        }
    finally:
        pool.close()


def probe_remote_root(conn: SSHConnection, name: str, root: str) -> str:
    """Create the remote root if needed and prove it writable; return its real path."""
    probe = conn.run(
        f"set -e; mkdir -p -- {_q(root)}; cd -- {_q(root)}; "
        't=$(mktemp .flowbatch-check.XXXXXX); rm -f -- "$t"; pwd -P'
    )
    if not probe.ok:
        raise ExecutorError(
            f"ssh host {name}: remote root {root} is not writable: "
            + " ".join(probe.stderr.split())[-300:],
            field=f"ssh.{name}.remote_root",
            hint="choose a folder the remote user may write",
        )
    return probe.stdout.strip().splitlines()[-1]


def check_hosts(config: SiteConfig, name: str | None = None) -> dict[str, dict[str, Any]]:
    """:func:`check_host` for ``name`` (or every host): host -> result with ``ok``, and
    ``error`` (the reason) for a failed one."""
    from ..errors import ConfigError

    if name is not None and name not in config.ssh:
        raise ConfigError(
            f"unknown ssh host {name!r}",
            field="ssh",
            hint="hosts: " + (", ".join(config.ssh) or "none; declare them under ssh:"),
        )
    if not config.ssh:
        raise ConfigError("no ssh hosts are configured", hint="declare them under ssh:")
    report: dict[str, dict[str, Any]] = {}
    for host in [name] if name else list(config.ssh):
        try:
            report[host] = {"ok": True, **check_host(config, host)}
        except FlowbatchError as exc:
            report[host] = {"ok": False, "host": host, "error": exc.summary()}
    return report
