"""The Slurm executor: each run is one batch job; the cluster's scheduler does the rest.

It submits with ``sbatch --parsable``, looks at every active job of its profile with ONE
``squeue`` call per poll (plus one ``sacct`` call for jobs that left the queue, where
accounting answers), and backs off while nothing changes: the controller is shared by
everyone on the cluster. Slurm's word is never final on its own: a job Slurm calls
COMPLETED whose script never ran (a broken cgroup setup does that) is an ERROR, because
the run script's markers decide how a run ended (:meth:`flowbatch.lifecycle.Runner.finalize`).

Crash safety: :meth:`intent` gives the handle the Runner writes into ``run.json`` *before*
:meth:`launch` submits; the job name (``fb-<site>-<run_id>``) is in it. A launch that
finds such an earlier intent first asks squeue for a job of that name, and adopts it
instead of submitting the run twice. Every lookup by name (and ``scancel --name``) is
restricted to the user who submits the run's jobs (:meth:`_mine`): squeue lists every
user's jobs, and a job name is no secret (run ids are on the leaderboards), so another
user's job of that name is never taken, nor cancelled, for the run's. An intent recorded
before flowbatch noted that user is a root daemon's run owner's (from the run's record);
a uid the account database does not know (which ``squeue --user`` answers with "Invalid
user" and no job) is looked up by name alone and kept by uid. A job record a refused
sbatch left behind (FAILED BadConstraints, listed for a while) is never adopted: the run
is submitted again and ends with sbatch's refusal, as it would have without the crash.

A partition an admin has drained or made inactive (maintenance) makes sbatch refuse every
job for it, for a while: its runs wait PENDING with Slurm's words (:class:`LaunchDeferred`:
the profile's other partitions go on), and are submitted once it takes jobs again. Until
then one submission into it is tried at a time, less and less often (:meth:`_closed_wait`).

A job pending for a reason that never clears by itself (:data:`NEVER_START`) is cancelled
and its run ended with Slurm's reason; ``PartitionNodeLimit``, which also means that nodes
the job needs are down or drained, only when the job's node count is over its partition's
(:meth:`SlurmExecutor._over_partition`): a node maintenance is waited out. A job of a user
the account database does not know is never started by Slurm (requeued for ever): its
run is ended as soon as Slurm has requeued it.

A job Slurm requeues after it started (``scontrol requeue``, a node failure or preemption
with requeue) is found back in the queue (:data:`QUEUE_STATES`) by a poll: its probe says
``requeued``, and the Runner makes the run PENDING and queued again, the same job. The
killed execution's markers (its TERM trap's ``exit 143``) are not the run's end while the
job waits: the handle keeps which execution that was (``superseded``).

A controller that does not answer (slurmctld down or restarting, the submit host away)
is "unknown, ask again", never "the job is gone": polls give UNKNOWN, a submission waits.
Only after squeue has failed for longer than the profile's ``unreachable_grace`` are the
runs given up (an infrastructure failure: ERROR, or retried), and their jobs, which may
well be running still, are abandoned (:meth:`abandon`): cancelled as soon as Slurm answers
(:meth:`tend`), and always before the same run is submitted again, so that a retry never
runs beside its earlier job. The abandoned jobs are kept in files under
``<site>/slurm-abandoned/<profile>/``: a restarted daemon cancels them too.

Sweeps: :meth:`launch_many` submits the PENDING runs of one sweep as job arrays, one
``sbatch`` per chunk of at most ``max_array_size`` runs (``--array=0-N[%throttle]``).
:meth:`intents` plans the chunks first: each run's recorded intent names its array
(``fb-<site>-<first run id>-array``), its task and the array's size, so a launch
interrupted after sbatch finds the array by name and adopts ``<array id>_<task>`` for each
run. An array goes to Slurm under its name only with every run planned into it: runs of a
plan that never reached Slurm that go without the others (room for fewer at a later try)
are planned again under a new name (``...-array.<n>``, :meth:`_plan`), so that a run
never adopts a task that was not submitted for it. From then on an
array task is a job like any other (its ``job_id`` is ``<array id>_<task>``): one squeue
per poll, scancel of one task, markers.

Where the Slurm commands run: ``via: local``, or ``via: <ssh host>`` through the pooled
SSH connection's command runner. Either way the run folders must be the same path on the
submit host and the compute nodes as here (a shared file system; in the tests the
loopback sshd is this machine).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..accounts import identity
from ..errors import ConfigError, ExecutorError, ExecutorUnavailable, FlowbatchError
from ..render.script import LOGS_DIR, read_markers
from ..runs import QUEUED, superseded
from ..slurm_profile import SlurmProfile
from ..sweep import array_ranges
from .base import Launch, LaunchDeferred, Liveness, Probe
from .commands import CommandResult, CommandRunner, LocalRunner
from .notes import SLURM_ABANDONED, Notes
from .slurm_script import (
    ARRAY_TEMPLATE_NAME,
    BATCH_NAME,
    ArrayTask,
    BatchArray,
    BatchJob,
    array_log_paths,
    job_name,
    load_template,
    log_paths,
    render_batch_script,
    slurm_time,
)
from .slurm_states import (
    COMPLETED,
    EPOCH_TIMES,
    FINAL_STATES,
    LOOKUP_FORMAT,
    QUEUE_STATES,
    SACCT_FIELDS,
    SQUEUE_FORMAT,
    STARTED_STATES,
    JobStatus,
    accounting_disabled,
    alive_text,
    controller_unreachable,
    invalid_job_ids,
    invalid_user,
    job_already_gone,
    job_nodes,
    never_starts,
    over_partition_nodes,
    parse_sacct,
    parse_squeue,
    partition_closed,
    partition_sizes,
    probe_for,
    refused_at_submission,
    submit_limit_reached,
)

#: seconds a job stays pending for a reason that never clears by itself (slurm_states'
#: NEVER_STARTS) before its run is ended (an admin who raises the partition's limit
#: meanwhile lets it start)
NEVER_START = 300.0
#: the pending reason that also says that nodes a job needs are down or drained (Slurm's
#: documentation of it): the job's node count is checked against its partition's
#: before it is ended (:meth:`SlurmExecutor._over_partition`)
NODE_LIMIT = "PartitionNodeLimit"
#: the pending reason of a job Slurm requeued after it failed to launch it (with a begin
#: time two minutes on); flowbatch submits no job with a begin time of its own
REQUEUED = "BeginTime"

if TYPE_CHECKING:
    from ..config import SiteConfig

log = logging.getLogger("flowbatch.slurm")

#: the poll interval grows by this factor while nothing changes (up to the ceiling)
BACKOFF = 1.5
#: what a run waiting for a drained or inactive partition is told
_CLOSED_HINT = "the run is submitted once the partition takes jobs again"
#: what a run waiting for room in its user's Slurm queue is told
_FULL_HINT = "the run is submitted once some of the user's jobs have left Slurm's queue"
#: job arrays' scripts and task links live here, under the site folder
ARRAYS_DIR = "slurm-arrays"
#: the jobs of runs given up on, to be cancelled once Slurm answers (one file each, in a
#: folder per profile), under the site folder
ABANDONED_DIR = SLURM_ABANDONED


@dataclass
class _Closed:
    """A partition that refused a submission because it takes no jobs now, or a user
    whose queue is full (see :meth:`SlurmExecutor._refused_for_now`)."""

    said: str  # why its runs wait, with Slurm's words
    interval: float  # seconds until the next try (grows while it stays closed)
    next_try: float  # monotonic
    hint: str = ""


@dataclass
class _Array:
    """One planned job array: its name and (task, run) members."""

    name: str
    members: list[tuple[int, Launch]]
    previous: bool  # planned by an earlier launch that may have been interrupted
    #: its tasks when planned (0 .. size-1): ``members`` may be fewer, for an array found
    #: by name; None for a plan recorded before flowbatch noted it
    size: int | None
    plan: int = 0  # 0: its runs' first plan; n: planned again n times (see :meth:`_plan`)
    #: the job id a lookup by name found while planning (None: not found, or not asked)
    found: str | None = None


class SlurmExecutor:
    """One Slurm profile as an executor (``slurm`` or ``slurm:<profile>``)."""

    #: Slurm enforces ``--time`` itself: the Runner must not count queue time as run time
    enforces_time_limit = True
    #: Slurm may run a job's script again after it ended (``scontrol requeue`` takes
    #: finished jobs too): the Runner marks an ended run closed, and its script then
    #: refuses to run (:data:`flowbatch.render.script.CLOSED_MARK`)
    reruns_scripts = True
    #: a submitted job waits in Slurm's queue: its run is PENDING until the job starts
    #: (a probe's ``started``)
    queues_jobs = True
    #: a job's exit status is Slurm's record of its batch script's, not text the run
    #: could write: the Runner holds the run's markers to it (found by the re-review: a
    #: run that wrote its own end markers and SIGKILLed its script was ranked)
    exit_status_known = True

    def __init__(
        self,
        name: str,
        profile_name: str,
        profile: SlurmProfile,
        *,
        site_name: str,
        site_root: Path | None = None,
        runner: CommandRunner | None = None,
        clock: Callable[[], float] = time.monotonic,
        config: SiteConfig | None = None,
    ) -> None:
        self.name = name
        self.profile_name = profile_name
        self.profile = profile
        self.limit = profile.max_jobs
        self.site_name = site_name
        self.site_root = site_root
        self._runner = runner
        self.config = config  # for via: <ssh host>
        self._clock = clock
        self._interval = profile.poll.floor
        self._next_poll = 0.0
        self._last: dict[str, JobStatus] = {}  # job id -> status at the last poll
        #: job id -> when it was first seen pending for a reason that never clears by itself
        self._stuck: dict[str, float] = {}
        self._failures = 0  # failed squeue calls since the last one that answered
        self._down_since: float | None = None  # when the first of them failed
        self._down_said = ""  # that time as `runs show` gives it (the wall clock's)
        #: jobs submitted since then: each gets the whole grace, from its submission
        self._submitted_since: dict[str, float] = {}
        #: jobs of runs given up on, to be cancelled once Slurm answers (:meth:`abandon`),
        #: noted in the site folder until cancelled
        self._notes = Notes(
            site_root / ABANDONED_DIR / profile_name if site_root else None,
            "abandoned Slurm job",
        )
        self._abandoned: list[dict[str, Any]] = self._load_abandoned()
        #: job id -> why, for the jobs of runs declared lost (:meth:`abandon`), even once
        #: cancelled: a run still RUNNING on such a job was lost by a daemon that stopped
        #: before it recorded so, and :meth:`poll` says so again (see there)
        self._lost: dict[str, str] = {
            str(e["job_id"]): str(e.get("reason", "")) for e in self._abandoned if e.get("lost")
        }
        self._next_tend = 0.0  # when to try them again
        self._left: str | None = None  # why some were left at the last try
        self._accounting: bool | None = None  # False once sacct says it is disabled
        #: partitions drained or inactive at their last submission (partition -> what
        #: Slurm said, when to try again); "" is the cluster's default partition
        self._closed: dict[str, _Closed] = {}
        #: job names whose last sbatch this executor saw refused for a closed partition:
        #: no job of theirs exists, so their next try needs no lookup by name (one squeue
        #: a waiting run and tick during a maintenance, else)
        self._refused: set[str] = set()
        #: earlier plans' arrays looked up by name while planning (:meth:`_looked_up`)
        self._looked: dict[str, str | None] = {}
        #: counts of the scheduler commands run (for logs and tests)
        self.calls: dict[str, int] = {}

    # -- the command seam ------------------------------------------------------------------
    @property
    def runner(self) -> CommandRunner:
        if self._runner is None:
            self._runner = self._make_runner()
        return self._runner

    def _make_runner(self) -> CommandRunner:
        if self.profile.via == "local":
            return LocalRunner()
        if self.config is None or self.profile.via not in self.config.ssh:
            known = ", ".join(self.config.ssh) if self.config is not None else ""
            raise ConfigError(
                f"Slurm profile {self.profile_name!r}: via {self.profile.via!r} is not an ssh "
                "host of the site",
                field=f"slurm.{self.profile_name}.via",
                hint=f"ssh hosts: {known or 'none; declare them under ssh:'} (or via: local)",
            )
        from .ssh import ssh_runner  # the pooled connection, shared with the SSH executor

        return ssh_runner(self.config, self.profile.via)

    def _where(self) -> str:
        return str(getattr(self._runner, "where", None) or f"ssh:{self.profile.via}")

    def _run(
        self,
        command: str,
        *args: str,
        launching: bool = False,
        before: str = "",
        input: str | None = None,
        uid: int | None = None,
    ) -> CommandResult:
        """Run one Slurm command (after the shell text ``before``, fed ``input``; as the
        local user ``uid``, see :meth:`_submitter`). A submit host that cannot be reached
        (``via: <ssh host>``) is a failed command, except while launching: then the run
        waits."""
        self.calls[command] = self.calls.get(command, 0) + 1
        line = before + " ".join([command, *(shlex.quote(a) for a in args)])
        try:
            return self.runner.run(line, input=input, timeout=self.profile.timeout, uid=uid)
        except ExecutorUnavailable as exc:  # HostUnreachable (Slurm over SSH) is one
            if launching:
                raise ExecutorUnavailable(
                    f"{command} on {self._where()}: {exc.reason}",
                    hint="the run is submitted when the host answers again",
                ) from None
            return CommandResult(255, "", exc.summary())
        except FlowbatchError as exc:  # e.g. via names no ssh host, a missing key file
            return CommandResult(255, "", exc.summary())

    # -- launch ----------------------------------------------------------------------------
    def job_name(self, run_id: str, attempt: int = 1) -> str:
        """``fb-<site>-<run_id>``; a retry's ``fb-<site>-<run_id>.<attempt>``: a launch
        that looks for its interrupted submission by name must never find (and adopt)
        the job of an earlier attempt, which stays listed for a while after it ended."""
        name = job_name(self.site_name, run_id)
        return name if attempt <= 1 else f"{name}.{attempt}"

    def intent(self, job: Launch) -> dict[str, Any]:
        """The handle recorded before submission: enough to find the job by name, among
        the jobs of the user who submits it (``uid``, for ``via: local``; see
        :meth:`_mine`)."""
        handle: dict[str, Any] = {
            "job_name": self.job_name(job.run_id, job.attempt),
            "profile": self.profile_name,
            "via": self.profile.via,
            "run_dir": str(job.run_dir),
            "submitting": True,
        }
        if self.profile.via == "local":
            handle["uid"] = _local_uid(job.uid)
        return handle

    def launch(self, job: Launch) -> dict[str, Any]:
        """Submit the run (or adopt the job an earlier, interrupted launch submitted).

        A job of an earlier attempt of this run that was given up on (:meth:`abandon`) is
        cancelled first; while Slurm cannot be asked to, the run waits."""
        self._end_abandoned_of([job])
        handle = self.intent(job)
        handle.pop("submitting")
        previous = job.handle or {}
        if (
            previous.get("job_name") == handle["job_name"]
            and "job_id" not in previous
            and handle["job_name"] not in self._refused
        ):
            # looked for first, even while its partition is closed: a job that went out
            # before the drain runs, and would be submitted twice once it has left squeue
            found = self._find_by_name(handle["job_name"], job.uid)
            if found is not None:
                log.info("run %s: adopting Slurm job %s found by name", job.run_id, found)
                return {**handle, "job_id": found, "adopted": True}
        partition = self._partition(job)
        submitter = self._submitter([job])
        self._closed_wait(partition, submitter)
        # The job's own user writes the script into the run folder, makes its logs/ (Slurm
        # opens the output there before the script runs) and submits it: the daemon
        # (often root) never writes inside a folder its run's user controls
        text, source = load_template(self.site_root)
        batch = render_batch_script(self.batch_job(job, handle["job_name"]), text, source=source)
        folder = shlex.quote(str(job.run_dir))
        result = self._run(
            "sbatch",
            "--parsable",
            BATCH_NAME,
            launching=True,
            before=f"cd -- {folder} && cat > {BATCH_NAME} && mkdir -p -- {LOGS_DIR} && ",
            input=batch,
            uid=submitter,
        )
        if not result.ok:
            self._unanswered("sbatch", result)
            self._refused_for_now(partition, submitter, result, handle["job_name"])
            raise ExecutorError(
                f"sbatch refused run {job.run_id} (profile {self.profile_name!r}, "
                f"exit {result.returncode}): {_one_line(result.stderr or result.stdout)}",
                hint="check the resources (partition, time, mem) against the cluster's limits",
            )
        self._opened(partition, submitter)
        self._refused.discard(handle["job_name"])
        job_id = result.stdout.strip().splitlines()[-1].split(";")[0].strip()
        if not job_id.isdigit():
            raise ExecutorError(f"sbatch gave no job id for run {job.run_id}: {result.stdout!r}")
        self._submitted([job_id])
        self._soon()
        return {**handle, "job_id": job_id, "slurm_state": "SUBMITTED"}

    def _find_by_name(self, name: str, uid: int | None, *, launching: bool = True) -> str | None:
        """The newest job of that name (any state: it may already have finished) among
        the jobs of the user who submits the run's jobs (``uid``: see :meth:`_mine`)."""
        ids = [s.job_id for s in self._named(name, uid, launching=launching)]
        return max(ids, key=_job_order) if ids else None

    def find_submitted(
        self, handles: Sequence[tuple[str, dict[str, Any]]]
    ) -> dict[str, dict[str, Any]]:
        """After a restart: the runs whose submission may have gone out before the daemon
        died (an intent recorded, no job id) whose job Slurm lists, run id -> the handle
        of that job (adopted; an array's task for a run planned into an array). One
        squeue per submitting user, for all their names. The Runner files them as
        launched at once: polled and counted against ``max_jobs`` and the fair shares,
        never held back by them (and submitted a second time later) while their jobs run
        unseen. A lookup Slurm does not answer leaves them to their launch, which looks
        again; one that finds nothing, too (a refused or never sent sbatch)."""
        wanted: dict[int | None, list[tuple[str, dict[str, Any]]]] = {}
        for run_id, handle in handles:
            name = handle.get("job_name")
            if handle.get("submitting") and not handle.get("job_id") and isinstance(name, str):
                wanted.setdefault(self._uid_of(handle), []).append((run_id, handle))
        out: dict[str, dict[str, Any]] = {}
        for uid, items in wanted.items():
            names = sorted({str(h["job_name"]) for _, h in items})
            statuses: list[JobStatus] = []
            try:
                for chunk in _name_chunks(names):  # one argument of squeue's each
                    statuses += self._named_all(chunk, uid, launching=False)
            except ExecutorUnavailable as exc:
                # Slurm away (a maintenance): asked once, not once a user; their launches
                # look again
                log.warning("Slurm profile %s: %s", self.profile_name, exc.summary())
                return out
            newest: dict[str, str] = {}
            for status in statuses:
                known = newest.get(status.name)
                if known is None or _job_order(status.job_id) > _job_order(known):
                    newest[status.name] = status.job_id
            for run_id, handle in items:
                found = newest.get(str(handle["job_name"]))
                if found is None:
                    continue
                adopted = {k: v for k, v in handle.items() if k != "submitting"}
                task = handle.get("array_task")
                if isinstance(task, int) and not isinstance(task, bool):
                    # every run planned into an array has its task there (_plan)
                    array_id = found.split("_")[0]
                    adopted.update(array_job=array_id, job_id=f"{array_id}_{task}")
                else:
                    adopted["job_id"] = found
                adopted["adopted"] = True
                log.info("run %s: adopting Slurm job %s found by name", run_id, adopted["job_id"])
                out[run_id] = adopted
        return out

    def _named(self, name: str, uid: int | None, *, launching: bool = True) -> list[JobStatus]:
        """The jobs of that name: :meth:`_named_all`."""
        return self._named_all([name], uid, launching=launching)

    def _named_all(
        self, names: Sequence[str], uid: int | None, *, launching: bool = True
    ) -> list[JobStatus]:
        """The jobs of those names (array tasks one by one, any state) of the user who
        submits the run's jobs (``uid``: :meth:`_mine`), less those a refused sbatch left
        behind (:func:`~.slurm_states.refused_at_submission`: FAILED BadConstraints; no
        job of the run ever ran, and its run ends with sbatch's refusal, not as a job
        that never started). Locally the owner is also checked here, by uid:
        ``squeue --user`` answers a uid the host's account database does not know with
        "Invalid user", exit status 0 and no job (which would read as "no such job", and
        the run would be submitted a second time); that user's jobs are then looked for
        by name alone, and kept by their uid."""
        base = ["-h", "-r", "-t", "all", "--name", ",".join(names)]
        mine = self._mine(uid)
        result = self._run("squeue", *base, *mine, "-O", LOOKUP_FORMAT, launching=launching)
        want = _local_uid(uid) if self.profile.via == "local" else None
        if result.ok and want is not None and invalid_user(result.stderr):
            mine = []
            result = self._run("squeue", *base, "-O", LOOKUP_FORMAT, launching=launching)
        if not result.ok or invalid_user(result.stderr):
            said = _one_line(result.stderr or result.stdout) or f"exit {result.returncode}"
            raise ExecutorUnavailable(
                f"cannot look for Slurm job {', '.join(names)} by its name: {said}",
                hint="the run waits, and is looked for again at a later tick",
            )
        return [
            s
            for s in parse_squeue(result.stdout).values()
            if s.name in names
            # by uid where squeue gave it; else squeue's --user did
            and (want is None or s.uid == want or (s.uid is None and bool(mine)))
            and not refused_at_submission(s)
        ]

    def _submitter(self, jobs: Sequence[Launch]) -> int | None:
        """The local user who submits ``jobs`` (their runs' owner, one request's): a root
        daemon submits a user's job as that user, as it starts a local run, so the job
        runs as the user and never as root. The submission gets the environment a local
        run of that user gets (:mod:`flowbatch.runenv`, through
        :func:`~flowbatch.executors.local.as_user_command`), and sbatch's default
        ``--export=ALL`` gives the job that, never the daemon's own environment. Over SSH
        (``via``) the host's configured user submits, in its own login environment."""
        owners = {job.uid for job in jobs}
        if len(owners) > 1:
            users = ", ".join(sorted(map(str, owners)))
            raise ExecutorError(f"one submission for runs of several users: {users}")
        return owners.pop() if self.profile.via == "local" else None

    def _mine(self, uid: int | None) -> list[str]:
        """The squeue/scancel options that restrict a lookup by name to the jobs of the
        user who submits the run's jobs: squeue and ``scancel --name`` reach every user's
        jobs, and a job name is no secret (``fb-<site>-<run id>``; run ids are on the
        leaderboards): another user's job of that name must never be adopted, nor
        cancelled, as the run's. Locally that user is the run's owner ``uid`` for a root
        daemon (:meth:`_submitter`), else the daemon's own user, given by number (squeue
        and scancel take uids); over SSH (``via``) the host's configured user."""
        if self.profile.via == "local":
            return ["--user", str(_local_uid(uid))]
        host = self.config.ssh.get(self.profile.via) if self.config is not None else None
        return ["--user", host.remote_user()] if host is not None else ["--me"]

    # -- launch: sweeps as job arrays -----------------------------------------------------
    def array_name(self, first: Launch, plan: int = 0) -> str:
        """``fb-<site>-<first run id>-array``; planned again (:meth:`_plan`): ``...-array.<n>``."""
        name = f"{self.job_name(first.run_id, first.attempt)}-array"
        return name if plan <= 0 else f"{name}.{plan}"

    def _plan(self, jobs: Sequence[Launch]) -> tuple[list[_Array], list[Launch]]:
        """(arrays, single jobs). Runs whose earlier intent planned them into an array keep
        it (it may have been submitted); the others are chunked afresh, at most
        ``max_array_size`` runs of equal resources per array. A run whose earlier intent
        was a single job stays one (that job may exist).

        An array is only ever submitted under its name with every run planned into it
        (each intent records the array's ``array_size``), so that the name alone says
        which run each of its tasks is: a run that finds the array by name (its launch
        was interrupted after sbatch) adopts its task, which exists. Some runs of an
        earlier plan without the others (room for fewer runs at this try, a run
        cancelled meanwhile) are looked up by the plan's name first (one squeue, asked
        while :meth:`intents` plans, before anything is recorded): found, they adopt
        their tasks; else that array never reached Slurm (or has long left it) and they
        are planned afresh, into an array of a name no earlier intent has (``.<n>``: the
        n-th plan of its first run, recorded before its sbatch as every plan is), never
        submitted under the old name: the other runs of the old plan would find that
        array and take tasks of it that were never submitted for them."""
        arrays: dict[str, _Array] = {}
        singles: list[Launch] = []
        earlier: dict[str, list[tuple[int, Launch]]] = {}
        fresh: dict[str, int] = {}  # run id -> its plan's number
        for job in jobs:
            prev = job.handle or {}
            pending = prev.get("submitting") and not prev.get("job_id") and prev.get("job_name")
            if pending and isinstance(prev.get("array_task"), int):
                earlier.setdefault(str(prev["job_name"]), []).append((int(prev["array_task"]), job))
            elif pending and prev["job_name"] == self.job_name(job.run_id, job.attempt):
                singles.append(job)
            else:
                fresh[job.run_id] = 0
        for name, members in earlier.items():
            size = _planned_size(members)
            plan = _planned(members[0][1].handle, "array_plan") or 0
            whole = size is not None and sorted(t for t, _ in members) == list(range(size))
            found = None if whole else self._looked_up(name, [job for _, job in members])
            if whole or found is not None:
                arrays[name] = _Array(
                    name, members, previous=True, size=size, plan=plan, found=found
                )
                continue
            log.info(
                "job array %s is not in Slurm's queue and only some of its runs are to go "
                "now (%s): they are planned again, under a new name",
                name,
                ", ".join(job.run_id for _, job in members),
            )
            fresh.update({job.run_id: plan + 1 for _, job in members})
        groups: dict[str, list[Launch]] = {}
        for job in jobs:  # in the runs' order
            if job.run_id in fresh:
                key = json.dumps([job.resources, job.time_limit], sort_keys=True, default=str)
                groups.setdefault(key, []).append(job)
        most = self.profile.max_array_size
        for group in groups.values():
            for start in range(0, len(group), most):
                chunk = group[start : start + most]
                plan = max(fresh[job.run_id] for job in chunk)
                while self.array_name(chunk[0], plan) in arrays:  # never two plans of a name
                    plan += 1
                name = self.array_name(chunk[0], plan)
                arrays[name] = _Array(
                    name, list(enumerate(chunk)), previous=False, size=len(chunk), plan=plan
                )
        return list(arrays.values()), singles

    def _looked_up(self, name: str, jobs: Sequence[Launch]) -> str | None:
        """The job of the array ``name`` that a lookup by name finds, asked once while the
        runs are planned (:meth:`intents`) and kept until :meth:`launch_many` plans them
        again: both must plan alike."""
        if name in self._refused:
            return None  # its sbatch was refused: it never reached Slurm
        if name not in self._looked:
            self._looked[name] = self._find_by_name(name, self._submitter(jobs))
        return self._looked[name]

    def _member(self, array: _Array, task: int, job: Launch) -> dict[str, Any]:
        """A run's intent as a task of ``array``."""
        handle = {**self.intent(job), "job_name": array.name, "array_task": task}
        if array.size is not None:
            handle["array_size"] = array.size
        if array.plan:
            handle["array_plan"] = array.plan
        return handle

    def intents(self, jobs: Sequence[Launch]) -> list[dict[str, Any]]:
        """The handles the Runner records before :meth:`launch_many`: each run's array
        (job name, task, the array's size and plan) or its single job. ``jobs`` carry
        their earlier handles. Runs of an earlier plan without all the others are looked
        for by its name here (see :meth:`_plan`)."""
        self._looked.clear()
        arrays, singles = self._plan(jobs)
        out = {job.run_id: self.intent(job) for job in singles}
        for array in arrays:
            for task, job in array.members:
                out[job.run_id] = self._member(array, task, job)
        return [out[job.run_id] for job in jobs]

    def launch_many(self, jobs: Sequence[Launch]) -> list[dict[str, Any] | FlowbatchError]:
        """Submit runs of one sweep: one ``sbatch --array`` per planned array (see
        :meth:`intents`); per run, its handle or the error that kept it from starting."""
        try:
            arrays, singles = self._plan(jobs)
        finally:
            self._looked.clear()
        out: dict[str, dict[str, Any] | FlowbatchError] = {}
        for job in singles:
            try:
                out[job.run_id] = self.launch(job)
            except FlowbatchError as exc:
                out[job.run_id] = exc
        for array in arrays:
            try:
                out.update(self._launch_array(array))
            except FlowbatchError as exc:
                out.update({job.run_id: exc for _, job in array.members})
        self._soon()
        return [out[job.run_id] for job in jobs]

    def _launch_array(self, array: _Array) -> dict[str, dict[str, Any]]:
        def handles(array_id: str, **extra: Any) -> dict[str, dict[str, Any]]:
            out = {}
            for task, job in array.members:
                handle = self._member(array, task, job)
                handle.pop("submitting")
                handle.update(array_job=array_id, job_id=f"{array_id}_{task}", **extra)
                out[job.run_id] = handle
            return out

        self._end_abandoned_of([job for _, job in array.members])
        if array.previous and array.name not in self._refused:  # first, even while its
            # partition is closed (unless its last sbatch was refused: no such array)
            found = array.found or self._find_by_name(
                array.name, self._submitter([job for _, job in array.members])
            )
            if found is not None:
                array_id = found.split("_")[0]
                log.info("job array %s found by name: adopting %s", array.name, array_id)
                return handles(array_id, adopted=True)
        partition = self._partition(array.members[0][1])  # a chunk's resources are one
        submitter = self._submitter([job for _, job in array.members])
        self._closed_wait(partition, submitter)
        script = self._write_array_script(array)
        # each run's logs/ made by the job's user, as for a single job; the folders come
        # on stdin (up to max_array_size of them: one command line of 1,000 paths could
        # pass the 128 KiB a single argument may have)
        logs = "".join(f"{job.run_dir / LOGS_DIR}\0" for _, job in array.members)
        result = self._run(
            "sbatch",
            "--parsable",
            str(script),
            launching=True,
            before="xargs -0 -r mkdir -p -- && ",
            input=logs,
            uid=self._submitter([job for _, job in array.members]),
        )
        runs = ", ".join(job.run_id for _, job in array.members)
        if not result.ok:
            self._unanswered("sbatch", result)
            self._refused_for_now(partition, submitter, result, array.name)
            raise ExecutorError(
                f"sbatch refused job array {array.name} (profile {self.profile_name!r}, "
                f"exit {result.returncode}): {_one_line(result.stderr or result.stdout)}",
                hint="check the resources (partition, time, mem) and the array size against "
                "the cluster's limits (MaxArraySize: the profile's max_array_size)",
            )
        self._opened(partition, submitter)
        self._refused.discard(array.name)
        array_id = result.stdout.strip().splitlines()[-1].split(";")[0].strip()
        if not array_id.isdigit():
            raise ExecutorError(f"sbatch gave no job id for the array of runs {runs}: {result}")
        log.info("runs %s submitted as job array %s", runs, array_id)
        self._submitted([f"{array_id}_{task}" for task, _ in array.members])
        return handles(array_id, slurm_state="SUBMITTED")

    def array_spec(self, tasks: Sequence[int]) -> str:
        """``--array``: ``0-N`` (flowbatch.sweep.array_ranges; an array is only submitted
        with all its tasks, see :meth:`_plan`), else the listed tasks; with the profile's
        ``%throttle``."""
        ordered = sorted(tasks)
        throttle = self.profile.array_throttle
        if ordered == list(range(len(ordered))):
            return array_ranges(len(ordered), len(ordered), throttle)[0]
        return ",".join(map(str, ordered)) + (f"%{throttle}" if throttle else "")

    def _write_array_script(self, array: _Array) -> Path:
        """``<site>/slurm-arrays/<name>/``: the script, and a symlink per task to its run
        folder, through which Slurm writes each task's output into the run's ``logs/``."""
        first = array.members[0][1]
        root = self.site_root or first.run_dir.parent.parent
        folder = root / ARRAYS_DIR / array.name
        folder.mkdir(parents=True, exist_ok=True)
        tasks = []
        for task, job in array.members:
            link = folder / str(task)
            link.unlink(missing_ok=True)
            link.symlink_to(job.run_dir, target_is_directory=True)
            tasks.append(ArrayTask(task, job.run_id, str(job.run_dir)))
        base = self.batch_job(first, array.name)
        output, error = array_log_paths(str(folder))
        batch = BatchArray(
            **{
                **vars(base),
                "run_id": _sweep_label(first),
                "run_dir": str(folder),
                "output": output,
                "error": error,
            },
            array=self.array_spec([task for task, _ in array.members]),
            tasks=tasks,
        )
        text, source = load_template(self.site_root, ARRAY_TEMPLATE_NAME)
        path = folder / BATCH_NAME
        path.write_text(render_batch_script(batch, text, source=source), encoding="utf-8")
        return path

    def batch_job(self, job: Launch, name: str) -> BatchJob:
        """The template's values: the run's resources over the profile's defaults."""
        res = job.resources
        prof = self.profile
        seconds = res.get("time") or job.time_limit or prof.time
        output, error = log_paths(str(job.run_dir))
        return BatchJob(
            job_name=name,
            site=self.site_name,
            run_id=job.run_id,
            run_dir=str(job.run_dir),
            output=output,
            error=error,
            script=job.script,
            partition=res.get("partition") or prof.partition,
            account=prof.account,
            qos=prof.qos,
            time=slurm_time(seconds) if seconds else None,
            cpus=res.get("cpus") or prof.cpus,
            mem=res.get("mem") or prof.mem,
            gpus=res.get("gpus") if res.get("gpus") is not None else prof.gpus,
            extra=list(prof.extra),
            modules=list(prof.modules),
        )

    # -- poll ------------------------------------------------------------------------------
    def _soon(self) -> None:
        """Something changed (a submission): look again after the floor interval."""
        self._interval = self.profile.poll.floor
        self._next_poll = min(self._next_poll, self._clock() + self._interval)

    def poll(self, handles: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Probe]:
        """One squeue call for every job (when the adaptive interval has passed)."""
        lost = self._still_lost(handles)
        jobs = {
            run_id: str(h["job_id"])
            for run_id, h in handles
            if h.get("job_id") and run_id not in lost
        }
        return {**lost, **self._poll_jobs(jobs, handles)}

    def _poll_jobs(
        self, jobs: dict[str, str], handles: Sequence[tuple[str, dict[str, Any]]]
    ) -> dict[str, Probe]:
        now = self._clock()
        if not jobs or now < self._next_poll:
            return {}  # not asked this tick: the Runner treats the runs as still alive
        ids = ",".join(jobs.values())
        # -r: one line per array task (pending tasks are shown collapsed otherwise)
        result = self._run(
            "squeue", "-h", "-t", "all", "-j", ids, "-r", "-O", SQUEUE_FORMAT, before=EPOCH_TIMES
        )
        if not result.ok and not invalid_job_ids(result.stderr):
            return self._failed("squeue", result, jobs, now)
        self._failures = 0  # Slurm answered: only that ends a streak of failures
        self._down_since = None
        self._submitted_since.clear()
        statuses = parse_squeue(result.stdout) if result.ok else {}
        missing = [j for j in jobs.values() if j not in statuses]
        if missing:
            statuses.update(self._from_accounting(missing))
        self._adapt(statuses, now)
        handle_of = dict(handles)
        return {
            run_id: self._probe(statuses.get(job_id), job_id, handle_of[run_id])
            for run_id, job_id in jobs.items()
        }

    def _still_lost(self, handles: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Probe]:
        """Runs still RUNNING on the job of a run declared lost: the daemon that declared
        it stopped between noting the job (:meth:`abandon`) and recording the run's
        retry or ERROR. They are lost again, for the same reason (their job, cancelled
        meanwhile, would otherwise make them CANCELED instead of retried)."""
        out = {}
        for run_id, handle in handles:
            noted = self._lost.get(str(handle.get("job_id") or ""))
            if noted is not None:
                why = f"its Slurm job was given up on before the daemon restarted ({noted})"
                out[run_id] = Probe(
                    Liveness.GONE,
                    raw=why,
                    infra_failure=why,
                    detail={"unanswered": True},  # ended by its markers if it wrote them
                )
        return out

    def _failed(
        self, what: str, result: CommandResult, jobs: dict[str, str], now: float
    ) -> dict[str, Probe]:
        """Slurm could not be asked: every job's fate is unknown (UNKNOWN; asked again,
        less and less often). Once more than ``failures`` calls in a row have failed, for
        longer than ``unreachable_grace``, the runs are given up: an infrastructure
        failure (the Runner makes them ERROR, or retries them, and hands their jobs to
        :meth:`abandon`, which cancels them once Slurm answers)."""
        self._failures += 1
        if self._down_since is None:
            self._down_since = now
            self._down_said = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        down = now - self._down_since
        message = _one_line(result.stderr or result.stdout) or f"exit {result.returncode}"
        # `runs show` says the scheduler's last word is unknown now, not that word (found
        # by review: RUNNING, or PENDING (Resources), through a whole outage)
        status = {"status": f"unknown since {self._down_said}: {what} failed: {message}"}
        poll = self.profile.poll
        self._interval = min(poll.ceiling, max(self._interval, poll.floor) * BACKOFF)
        self._next_poll = now + self._interval
        grace = self.profile.unreachable_grace
        since = self._submitted_since
        # a job submitted during the streak is unknown only since its submission
        given_up = {
            run_id: job_id
            for run_id, job_id in jobs.items()
            if now - max(self._down_since, since.get(job_id, self._down_since)) > grace
        }
        if self._failures <= self.profile.failures or not given_up:
            log.warning(
                "%s failed on %s (%d in a row, for %.0f s; runs given up after %g s): %s",
                what,
                self._where(),
                self._failures,
                down,
                grace,
                message,
            )
            raw = f"{what} failed on {self._where()}, asked again: {message}"
            return {run_id: Probe(Liveness.UNKNOWN, raw=raw, detail=status) for run_id in jobs}
        why = (
            f"Slurm did not answer for {down:.0f} s ({what} failed {self._failures} times in "
            f"a row on {self._where()}, profile {self.profile_name!r}, unreachable_grace "
            f"{grace:g} s): {message}"
        )
        unknown = f"{what} failed on {self._where()}, asked again: {message}"
        return {
            run_id: Probe(
                Liveness.GONE,
                raw=why,
                infra_failure=f"{why}; its job {job_id} is cancelled once Slurm answers",
                # Slurm said nothing about the job: a run whose script has written its
                # exit marker (on the shared file system) ended, and ends by its markers
                detail={"unanswered": True},
            )
            if run_id in given_up
            else Probe(Liveness.UNKNOWN, raw=unknown, detail=status)
            for run_id, job_id in jobs.items()
        }

    def _submitted(self, job_ids: Sequence[str]) -> None:
        """Jobs submitted while squeue keeps failing: their grace starts now."""
        if self._down_since is not None:
            now = self._clock()
            self._submitted_since.update(dict.fromkeys(job_ids, now))

    def _unanswered(self, what: str, result: CommandResult) -> None:
        """A submission that failed because Slurm did not answer (or took longer than the
        profile's ``timeout``) refused nothing: the run waits (its recorded intent finds
        the job by name, should it have been submitted after all)."""
        text = result.stderr + "\n" + result.stdout
        if result.returncode == 124 or controller_unreachable(text):
            raise ExecutorUnavailable(
                f"{what} on {self._where()}: Slurm does not answer: {_one_line(text)}",
                hint="the run is submitted when Slurm answers again",
            )

    def _partition(self, job: Launch) -> str:
        """The partition ``job`` is submitted into ("": the cluster's default)."""
        return str(job.resources.get("partition") or self.profile.partition or "")

    def _closed_wait(self, partition: str, submitter: int | None) -> None:
        """Before a submission into ``partition`` by ``submitter``: while the partition is
        known to take no jobs, or the user's queue to be full (a submission was refused
        so a moment ago), the runs wait without asking sbatch; one of them tries again
        once the interval has passed."""
        for key in (partition, _user_key(submitter)):
            closed = self._closed.get(key)
            if closed is not None and self._clock() < closed.next_try:
                raise LaunchDeferred(closed.said, hint=closed.hint)

    def _opened(self, partition: str, submitter: int | None) -> None:
        """A submission went through: neither the partition nor the user waits now."""
        self._closed.pop(partition, None)
        self._closed.pop(_user_key(submitter), None)

    def _refused_for_now(
        self, partition: str, submitter: int | None, result: CommandResult, name: str
    ) -> None:
        """A submission refused for a reason that clears by itself refused nothing for
        good: the run waits PENDING with Slurm's words, and is submitted once it has
        cleared (tried again less and less often, from the profile's poll floor to its
        ceiling). Two such reasons: its partition takes no jobs now (an admin drained it
        or made it inactive, for maintenance), or the submitting user has as many jobs
        in Slurm's queue as their association or QOS allows (MaxSubmitJobs: it clears as
        their other jobs end, submitted by flowbatch or not; found by review: the run, or
        a whole sweep, ended ERROR). A partition that does not exist, or a request over
        its limits, stays an error."""
        said = _one_line(result.stderr + "\n" + result.stdout)
        if partition_closed(said):
            where = f"partition {partition!r}" if partition else "the cluster's default partition"
            key, hint = partition, _CLOSED_HINT
            why = f"{where} takes no jobs now (drained or inactive); Slurm said: {said}"
        elif submit_limit_reached(said):
            key, hint = _user_key(submitter), _FULL_HINT
            who = "the submitting user" if submitter is None else f"user {submitter}"
            why = (
                f"{who} has as many jobs in Slurm's queue as their association or QOS "
                f"allows (MaxSubmitJobs); Slurm said: {said}"
            )
        else:
            return
        poll = self.profile.poll
        before = self._closed.get(key)
        first = max(poll.floor, 0.1)
        interval = (
            first if before is None else min(max(poll.ceiling, first), before.interval * BACKOFF)
        )
        if before is None:
            log.warning("Slurm profile %s: %s", self.profile_name, why)
        self._closed[key] = _Closed(why, interval, self._clock() + interval, hint)
        self._refused.add(name)  # its sbatch was answered: no job of that name went out
        raise LaunchDeferred(why, hint=hint)

    def _from_accounting(self, job_ids: list[str]) -> dict[str, JobStatus]:
        """Jobs that left squeue: one sacct call, where accounting answers."""
        if self._accounting is False:
            return {}
        result = self._run("sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o", SACCT_FIELDS)
        if accounting_disabled(result.stderr + result.stdout):
            self._accounting = False  # no slurmdbd: markers decide; do not ask again
            return {}
        if not result.ok:
            log.warning("sacct failed: %s", _one_line(result.stderr))
            return {}
        self._accounting = True
        return parse_sacct(result.stdout)

    def _adapt(self, statuses: dict[str, JobStatus], now: float) -> None:
        """Back off while nothing changes; look again soon after a change."""
        changed = any(self._last.get(j) != s for j, s in statuses.items())
        self._last = statuses
        poll = self.profile.poll
        self._interval = poll.floor if changed else min(poll.ceiling, self._interval * BACKOFF)
        self._next_poll = now + self._interval

    def _probe(self, status: JobStatus | None, job_id: str, handle: dict[str, Any]) -> Probe:
        if status is None and "_" in job_id and not self._script_ran(handle):
            # an array task cancelled while pending leaves squeue at once, with no record
            # (a plain job stays CANCELLED); one that ran stays listed for MinJobAge
            why = (
                f"cancelled outside flowbatch: Slurm array task {job_id} left the queue "
                "before it started (scancel of a pending task)"
            )
            return Probe(Liveness.FINISHED, raw=why, detail={"job_id": job_id, "canceled": why})
        if status is None:
            # gone from squeue and no accounting: the run's own markers decide; a failed
            # one says why no more is known (found by review: a scancel and a TIMEOUT
            # while the daemon was down read as a bare SIGTERM)
            said = (
                f"Slurm job {job_id} left the queue unseen (no daemon watched it, and "
                "without accounting Slurm keeps no record of how it ended): a SIGTERM "
                "there is most often a scancel or the job's time limit"
            )
            return Probe(
                Liveness.FINISHED,
                raw=f"Slurm job {job_id} left the queue (no accounting record)",
                detail={"job_id": job_id, "message": said},
            )
        probe = probe_for(status)
        if probe.liveness == Liveness.ALIVE:
            probe.detail["status"] = alive_text(status)
            if status.state in STARTED_STATES:
                # the job has started (its run becomes RUNNING), when its job did, not
                # when it was submitted nor when this poll saw it (the Runner sets its
                # started_at: Runner._note_status); None where squeue gave no time
                probe.detail["started"] = status.start
            elif status.state in QUEUE_STATES and not handle.get(QUEUED):
                # the job of a run that is RUNNING (its handle is not queued) is back in
                # the queue: Slurm requeued it (the Runner makes the run PENDING again)
                probe.detail["requeued"] = self._requeued(job_id, status, handle)
            never = never_starts(status.reason) if status.state == "PENDING" else None
            if status.state == "PENDING" and status.reason == REQUEUED:
                unknown = self._unknown_owner(handle)
                if unknown is not None:  # requeued because its user is not known
                    return self._refuse(handle, job_id, status, unknown, waited=False)
            if never is None:
                self._stuck.pop(job_id, None)
            elif self._clock() - self._stuck.setdefault(job_id, self._clock()) >= NEVER_START:
                if status.reason == NODE_LIMIT:
                    over = self._over_partition(job_id)
                    if over is None:  # nodes down or drained (or not known): it waits
                        self._stuck[job_id] = self._clock()  # looked at again later
                        return probe
                    never = f"{never} ({over})"
                return self._refuse(handle, job_id, status, never)
        elif status.state == COMPLETED and not self._script_ran(handle):
            probe.raw = (
                f"{status.describe()}, but the job script never ran (no started line in "
                f"status/markers); see logs/slurm-{job_id}.err and the node's slurmd log"
            )
        return probe

    def _over_partition(self, job_id: str) -> str | None:
        """For a job pending with the reason PartitionNodeLimit: why it can never start
        (it asks more nodes than its partition has or allows, or fewer than it requires),
        from ``scontrol show job`` and ``scontrol show partition``; None when its node
        count fits its partition. Slurm gives that reason for both (its documentation:
        "Can also indicate that required nodes are DOWN or DRAINED"), and nodes that are
        down or drained are an admin's maintenance, which ends: the job waits, as it does
        when Slurm 22.05 says so in words ("Nodes required for job are DOWN, DRAINED or
        reserved for jobs in higher priority partitions"). None too when scontrol does
        not tell: it is asked again after another NEVER_START."""
        job = self._run("scontrol", "-o", "show", "job", job_id)
        nodes = job_nodes(job.stdout) if job.ok else None
        if nodes is None:
            log.warning("scontrol show job %s: %s", job_id, _one_line(job.stderr or job.stdout))
            return None
        parts = self._run("scontrol", "-a", "-o", "show", "partition")
        if not parts.ok:
            log.warning("scontrol show partition: %s", _one_line(parts.stderr or parts.stdout))
            return None
        over = over_partition_nodes(nodes, partition_sizes(parts.stdout))
        if over is None:
            log.info(
                "Slurm job %s pends with the reason %s, but its node count fits its "
                "partition (or that partition is not listed): nodes of it are down or "
                "drained, it waits",
                job_id,
                NODE_LIMIT,
            )
        return over

    def _unknown_owner(self, handle: dict[str, Any]) -> str | None:
        """Why Slurm never starts the job of ``handle`` when its user has no entry in the
        account database (a root daemon submits a run's job as the run's owner, whatever
        its uid): sbatch takes it, but slurmctld cannot make its credential ("getpwuid
        failed for uid=...") and requeues it, PENDING (BeginTime), again every two
        minutes, for ever. None for a user the database knows (or the daemon's own)."""
        if self.profile.via != "local" or os.geteuid() != 0:
            return None
        uid = self._uid_of(handle)
        if uid is None or uid == 0 or identity(uid).name is not None:
            return None
        return (
            f"its user, uid {uid} (the run's owner), has no entry in the account database "
            "(passwd): Slurm does not start a job of a user it cannot look up (slurmctld "
            "cannot make its credential, and requeues it for ever)"
        )

    def _refuse(
        self,
        handle: dict[str, Any],
        job_id: str,
        status: JobStatus,
        why: str,
        *,
        waited: bool = True,
    ) -> Probe:
        """A job Slurm keeps pending for a reason that does not clear by itself (a time
        limit over its partition's: sbatch takes it, and it would pend for ever with its
        run RUNNING): cancelled, and its run ends in ERROR with Slurm's reason (no retry:
        it would pend the same). ``waited``: it has been pending so for NEVER_START (else
        it is known at once)."""
        self._stuck.pop(job_id, None)
        cancelled = self._scancel(handle)
        pending = (
            f"it has been {alive_text(status)} for {NEVER_START:.0f} s"
            if waited
            else f"it is {alive_text(status)}"
        )
        said = f"Slurm will not start job {job_id}: {pending}, {why}; " + (
            "flowbatch cancelled it" if cancelled else "flowbatch could not cancel it yet"
        )
        if not cancelled:
            self._hand_over(handle, said)
        return Probe(Liveness.FINISHED, raw=said, detail={"job_id": job_id, "refused": said})

    @staticmethod
    def _script_ran(handle: dict[str, Any]) -> bool:
        """Whether the job's script has started (since the requeue that ended an earlier
        execution of it, if any)."""
        run_dir = handle.get("run_dir")
        if not isinstance(run_dir, str):
            return False
        return read_markers(Path(run_dir), superseded=superseded(handle)).started is not None

    def _requeued(self, job_id: str, status: JobStatus, handle: dict[str, Any]) -> str:
        """What the history of a RUNNING run says when its job is found back in the queue:
        requeued once its script has run (a handle without :data:`QUEUED` whose job
        waits, before any marker, is also one of an earlier version's, RUNNING from its
        submission)."""
        if self._script_ran(handle):
            return (
                f"Slurm requeued job {job_id} ({alive_text(status)}): the run waits in the "
                "queue to run again"
            )
        return (
            f"Slurm job {job_id} waits in the queue ({alive_text(status)}): the run waits with it"
        )

    # -- cancel / collect / adopt ----------------------------------------------------------
    def cancel(self, handle: dict[str, Any], reason: str) -> None:
        """scancel the job (by name when only the intent was recorded; an array task's
        array is looked up by name first: the other tasks are other runs). A cancel Slurm
        does not take now (it does not answer) is kept: :meth:`abandon`."""
        if not self._scancel(handle):
            self._hand_over(handle, f"{reason}; Slurm did not take the cancel")
        self._soon()

    def _scancel(self, handle: dict[str, Any]) -> bool:
        """scancel the job of ``handle``: True when Slurm took it or has nothing (left)
        to cancel, False when it could not be asked."""
        uid = None if handle.get("job_id") else self._uid_of(handle)
        if handle.get("job_id"):
            target = [str(handle["job_id"])]
        elif handle.get("job_name") and isinstance(handle.get("array_task"), int):
            try:
                found = self._find_by_name(str(handle["job_name"]), uid, launching=False)
            except ExecutorError as exc:
                log.warning("cannot cancel %s: %s", handle["job_name"], exc.reason)
                return False
            if found is None:
                return True  # the array never reached Slurm, or has long ended
            target = [f"{found.split('_')[0]}_{handle['array_task']}"]
        elif handle.get("job_name"):
            # root's scancel --name would end every user's job of that name
            target = ["--name", str(handle["job_name"]), *self._mine(uid)]
        else:
            return True
        result = self._run("scancel", *target)
        if result.ok or job_already_gone(result.stderr + result.stdout):
            return True
        if target[0] == "--name" and invalid_user(result.stderr + result.stdout):
            return self._scancel_named(str(handle["job_name"]), uid)
        log.warning("scancel %s: %s", " ".join(target), _one_line(result.stderr or result.stdout))
        return False

    def _scancel_named(self, name: str, uid: int | None) -> bool:
        """``scancel --name`` for a user scancel does not know (a uid without an entry in
        the account database: "Invalid user name", every time): the user's jobs of that
        name are looked up (:meth:`_named`, by uid) and cancelled by id."""
        try:
            ids = [s.job_id for s in self._named(name, uid, launching=False)]
        except ExecutorError as exc:
            log.warning("cannot cancel %s: %s", name, exc.reason)
            return False
        if not ids:
            return True
        result = self._run("scancel", *ids)
        if result.ok or job_already_gone(result.stderr + result.stdout):
            return True
        log.warning("scancel %s: %s", " ".join(ids), _one_line(result.stderr or result.stdout))
        return False

    def _uid_of(self, handle: dict[str, Any]) -> int | None:
        """The user who submitted the job of ``handle`` (an intent, an abandoned job's
        note), for :meth:`_mine`: the uid it recorded; for one recorded before flowbatch
        noted it, a root daemon's is the run's owner, from the run's record
        (``run.json`` in its ``run_dir``, read as the Runner reads it: a record its
        user replaced is refused), else the daemon's own user, as then."""
        uid = _handle_uid(handle)
        if uid is not None or self.profile.via != "local" or os.geteuid() != 0:
            return uid
        run_dir = handle.get("run_dir")
        if not isinstance(run_dir, str) or not run_dir:
            return None
        from ..store.store import Store  # the run's record, as the Runner reads it

        try:
            owner = Store.load_dir(Path(run_dir), acts=True).owner_uid
        except (FlowbatchError, OSError) as exc:
            log.warning(
                "Slurm job %s: its owner is not known (%s): only root's jobs of that name "
                "are looked at",
                handle.get("job_name"),
                exc,
            )
            return None
        return owner if isinstance(owner, int) and not isinstance(owner, bool) else None

    # -- jobs of runs given up on ----------------------------------------------------------
    def abandon(self, handle: dict[str, Any], reason: str) -> None:
        """The run of ``handle`` was given up on (Slurm did not answer for longer than
        the grace, a node failure or preemption is retried, a cancel Slurm did not take):
        its job may still be queued or running, and may even be requeued by Slurm
        itself. It is cancelled as soon as Slurm answers (:meth:`tend`, at every poll of
        the runner), and that run is submitted again only once the job is known to have
        ended (:meth:`launch`), so that a retry never runs beside it. Noted in a file
        under the site folder until then: a restarted daemon cancels it too."""
        self._hand_over(handle, reason, lost=True)
        if handle.get("job_id"):
            self._lost[str(handle["job_id"])] = reason

    def _hand_over(self, handle: dict[str, Any], reason: str, *, lost: bool = False) -> None:
        """Note the job of ``handle`` to be cancelled once Slurm answers: a run declared
        lost (``lost``), or a cancel Slurm did not take."""
        entry = {
            key: handle[key]
            for key in ("job_id", "job_name", "array_task", "run_dir", "uid")
            if handle.get(key) is not None
        }
        if not entry.get("job_id") and not entry.get("job_name"):
            return
        if not entry.get("job_id") and "uid" not in entry:  # an older intent's
            uid = self._uid_of(entry)
            if uid is not None:
                entry["uid"] = uid
        key = _abandoned_key(entry)
        if any(_abandoned_key(e) == key for e in self._abandoned):
            return
        log.warning("Slurm job %s: to be cancelled once Slurm answers (%s)", key, reason)
        entry["reason"] = reason
        if lost:
            entry["lost"] = True
        self._abandoned.append(entry)
        self._next_tend = 0.0
        self._note_abandoned(entry)

    def has_abandoned(self) -> bool:
        """Whether jobs of runs given up on are still to be cancelled."""
        return bool(self._abandoned)

    def tend(self) -> None:
        """At each poll of the runner: cancel the abandoned jobs if Slurm answers now
        (at most once per poll interval while it does not)."""
        if not self._abandoned or self._clock() < self._next_tend:
            return
        try:
            self._end_abandoned()
        except Exception:  # best effort: never the end of the runner's poll
            log.exception("Slurm profile %s: cancelling the jobs of runs given up on", self.name)

    def _end_abandoned(self, run_dirs: set[str] | None = None) -> str | None:
        """Cancel the abandoned jobs (those of ``run_dirs``, or all) and forget those
        known to have ended: one scancel for the jobs not cancelled yet, one squeue for
        all of them, whatever their number (an outage can give up a profile's every
        run). None when none is left; else why some are: "unanswered" (Slurm could not
        be asked) or "ending" (cancelled, not ended yet)."""
        todo = [e for e in self._abandoned if run_dirs is None or e.get("run_dir") in run_dirs]
        left: str | None = None
        fresh = [e for e in todo if not e.get("cancelled")]
        if fresh and not self._scancel_all(fresh):
            left = "unanswered"  # Slurm does not answer: they all wait
        else:
            for entry in fresh:
                log.info("Slurm job %s of a run given up on: cancelled", _abandoned_key(entry))
                entry["cancelled"] = True
                self._note_abandoned(entry)
            ended = self._ended(todo)
            if ended is None:
                left = "unanswered"
            else:
                for entry in todo:
                    if not ended[_abandoned_key(entry)]:
                        left = "ending"
                        continue
                    self._abandoned.remove(entry)
                    self._notes.forget(_abandoned_key(entry))
        if left is not None:
            wait = self.profile.poll.floor if left == "ending" else self._interval
            self._next_tend = self._clock() + max(wait, self.profile.poll.floor, 0.1)
        self._left = left
        return left

    def _scancel_all(self, entries: list[dict[str, Any]]) -> bool:
        """scancel the jobs of ``entries`` in one call: those with an id, and the tasks of
        arrays known by name only (an intent; one squeue per array finds its id, not one
        per task); a single job known by name only goes by ``scancel --name``. False when
        Slurm could not be asked."""
        ids = [str(e["job_id"]) for e in entries if e.get("job_id")]
        tasks: dict[tuple[str, int | None], list[int]] = {}
        named = []
        for e in entries:
            if e.get("job_id") or not e.get("job_name"):
                continue
            if isinstance(e.get("array_task"), int):
                key = (str(e["job_name"]), self._uid_of(e))
                tasks.setdefault(key, []).append(int(e["array_task"]))
            else:
                named.append(e)
        for (name, uid), numbers in tasks.items():
            try:
                found = self._find_by_name(name, uid, launching=False)
            except ExecutorError as exc:
                log.warning("cannot cancel %s: %s", name, exc.reason)
                return False
            if found is not None:  # else the array never reached Slurm, or has long ended
                ids += [f"{found.split('_')[0]}_{task}" for task in numbers]
        if ids:
            result = self._run("scancel", *ids)
            if not (result.ok or job_already_gone(result.stderr + result.stdout)):
                log.warning("scancel %s: %s", " ".join(ids), _one_line(result.stderr))
                return False
        return all(self._scancel(e) for e in named)

    def _ended(self, entries: list[dict[str, Any]]) -> dict[str, bool] | None:
        """Whether each cancelled job of ``entries`` has ended, by key (None: Slurm did
        not answer), from one squeue call. A job known only by name counts as ended
        once it is cancelled."""
        ids = {_abandoned_key(e): str(e["job_id"]) for e in entries if e.get("job_id")}
        out = {_abandoned_key(e): True for e in entries}
        if not ids:
            return out
        joined = ",".join(ids.values())
        result = self._run("squeue", "-h", "-t", "all", "-j", joined, "-r", "-O", SQUEUE_FORMAT)
        if not result.ok:
            return out if invalid_job_ids(result.stderr) else None
        statuses = parse_squeue(result.stdout)
        for key, job_id in ids.items():
            status = statuses.get(job_id)
            out[key] = status is None or status.state in FINAL_STATES
        return out

    def _end_abandoned_of(self, jobs: Sequence[Launch]) -> None:
        """Before ``jobs`` are submitted: the abandoned jobs of their runs (an earlier
        attempt's) are cancelled and must have ended; until then the runs wait."""
        if not self._abandoned:
            return
        mine = {str(job.run_dir) for job in jobs}
        keys = [_abandoned_key(e) for e in self._abandoned if e.get("run_dir") in mine]
        if not keys:
            return
        # tried a moment ago: not again before the interval has passed (each tick would)
        left = self._left if self._clock() < self._next_tend else self._end_abandoned(mine)
        if left == "unanswered":
            raise ExecutorUnavailable(
                f"the Slurm job {', '.join(keys)} of an earlier attempt must be cancelled "
                f"first, and Slurm on {self._where()} does not answer",
                hint="the run is submitted once that job has ended",
            )
        if left == "ending":
            raise LaunchDeferred(
                f"the Slurm job {', '.join(keys)} of an earlier attempt is cancelled and "
                "has not ended yet",
                hint="the run is submitted once that job has ended",
            )

    def _note_abandoned(self, entry: dict[str, Any]) -> None:
        self._notes.note(_abandoned_key(entry), entry)

    def _load_abandoned(self) -> list[dict[str, Any]]:
        """The abandoned jobs a daemon before this one could not cancel yet."""
        return [e for e in self._notes.load() if e.get("job_id") or e.get("job_name")]

    def collect(self, run_id: str, handle: dict[str, Any], run_dir: Path) -> None:
        """Nothing to bring home: the run folder is on the cluster's shared file system."""

    def adopt(self, handle: dict[str, Any]) -> bool:
        """A recorded job id is ours; the next squeue says whether it still runs."""
        return bool(handle.get("job_id"))

    def check(self) -> str:
        """For ``flowbatch doctor``: the controller answers and the partition exists."""
        args = ["-h", "-o", "%P %a %D"]
        if self.profile.partition:
            args += ["-p", self.profile.partition]
        result = self._run("sinfo", *args)
        if not result.ok:
            raise ExecutorError(
                f"slurm profile {self.name}: sinfo failed on {self.runner.where}: "
                + " ".join(result.stderr.split())[-300:],
                hint="is slurmctld running and the client configured on that host?",
            )
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        if not lines:
            raise ExecutorError(
                f"slurm profile {self.name}: no partition {self.profile.partition!r}",
                hint="fix `partition` in the profile",
            )
        return f"{self.runner.where}: partitions " + ", ".join(line.split()[0] for line in lines)

    def close(self) -> None:
        close = getattr(self._runner, "close", None)
        if callable(close):
            close()


def _sweep_label(job: Launch) -> str:
    """The sweep's id (its first point's run id) for the array script's comment."""
    return job.run_id.split("-")[0]


def _abandoned_key(entry: dict[str, Any]) -> str:
    """A name for an abandoned job: its id, or its (array's) job name and task."""
    if entry.get("job_id"):
        return str(entry["job_id"])
    task = entry.get("array_task")
    return str(entry["job_name"]) + (f"_{task}" if isinstance(task, int) else "")


def _local_uid(uid: int | None) -> int:
    """The local user who submits a job of the run owned by ``uid``: that user for a
    root daemon (:func:`flowbatch.executors.local.run_as`), else the daemon's own."""
    own = os.geteuid()
    return uid if own == 0 and uid is not None else own


def _handle_uid(handle: dict[str, Any]) -> int | None:
    """The submitting user a handle (an intent, an abandoned job's note) recorded; None
    for one recorded before flowbatch noted it (see :meth:`SlurmExecutor._uid_of`)."""
    uid = handle.get("uid")
    return uid if isinstance(uid, int) and not isinstance(uid, bool) else None


def _planned(handle: dict[str, Any] | None, key: str) -> int | None:
    """An array's size or plan number as an intent recorded it (None: not recorded)."""
    value = (handle or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _planned_size(members: list[tuple[int, Launch]]) -> int | None:
    """The size of the array its runs' intents recorded, where they all agree."""
    sizes = {_planned(job.handle, "array_size") for _, job in members}
    return sizes.pop() if len(sizes) == 1 else None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


#: the most characters of job names one ``squeue --name`` is given (one argument of a
#: command line may have 128 KiB on Linux; over SSH the remote shell's line counts too)
NAMES_PER_CALL = 32_768


def _name_chunks(names: Sequence[str]) -> list[list[str]]:
    """``names`` in runs whose comma-joined text stays under :data:`NAMES_PER_CALL`."""
    chunks: list[list[str]] = [[]]
    size = 0
    for name in names:
        if chunks[-1] and size + len(name) + 1 > NAMES_PER_CALL:
            chunks.append([])
            size = 0
        chunks[-1].append(name)
        size += len(name) + 1
    return chunks if chunks[0] else []


def _job_order(job_id: str) -> tuple[int, str]:
    head = job_id.split("_")[0]
    return (int(head) if head.isdigit() else -1, job_id)


def _user_key(submitter: int | None) -> str:
    """The key of a user's full queue in ``SlurmExecutor._closed`` (beside partitions' names,
    which cannot hold a NUL)."""
    return f"\0user:{'' if submitter is None else submitter}"
