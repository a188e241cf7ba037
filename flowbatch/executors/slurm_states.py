"""Slurm's words, parsed and mapped: squeue/sacct output into :class:`Probe` values.

Pure functions over text, tested on recorded output; the executor only runs commands.
Native states are kept verbatim in ``Probe.raw`` and ``Probe.detail`` for diagnostics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import Liveness, Probe

#: ``squeue -O`` fields, each ending with '|' (no size: as wide as the value).
#: ``JobArrayID`` is the plain job id, or ``<array id>_<task>`` for a task of a job array
#: (``JobID`` would give the task's own, internal id); with ``squeue -r`` pending tasks are
#: listed one per line instead of collapsed as ``<array id>_[0-9]``. ``StartTime`` is when
#: a running job started (a pending one's is an estimate, or N/A): in seconds since the
#: epoch with :data:`EPOCH_TIMES` in squeue's environment, whatever its time zone.
SQUEUE_FORMAT = "JobArrayID:|,State:|,Reason:|,Name:|,exit_code:|,StartTime:|"
#: the same with the job's owner (its uid, as a number), for lookups by job name: they
#: keep only the jobs of the user who submits the run's (``squeue --user`` refuses a uid
#: the host's account database does not know: "Invalid user", and exit status 0)
LOOKUP_FORMAT = SQUEUE_FORMAT + ",UserID:|"
#: shell text before squeue: its times as seconds since the epoch (strftime's ``%s``)
EPOCH_TIMES = "export SLURM_TIME_FORMAT=%s && "
SACCT_FIELDS = "JobID,State,ExitCode,JobName"

ALIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "RESV_DEL_HOLD",
        "SIGNALING",
        # requeued and held (`scontrol requeuehold state=SpecialExit`, an epilog's
        # policy): back in the queue, run again once released
        "SPECIAL_EXIT",
        "STAGE_OUT",
        "STOPPED",
    }
)
#: the alive states of a job whose script has started on its nodes (CONFIGURING: its
#: nodes are allocated but may still be booting, the script not started; a requeued job
#: is PENDING again, REQUEUED or held)
STARTED_STATES = frozenset(
    {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "RESIZING", "STAGE_OUT"}
)
#: the alive states of a job that waits in the queue: not started yet, or put back by a
#: requeue (REQUEUED while it is taken back, then PENDING, or held: REQUEUE_HOLD,
#: SPECIAL_EXIT, a requeuehold's PENDING (job requeued in held state)). A RUNNING run
#: whose job is found so is queued again. Not CONFIGURING (its nodes are allocated: it
#: leaves the queue; a first start goes through it before RUNNING), nor a state word this
#: version does not know: neither moves a run either way.
QUEUE_STATES = frozenset(
    {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
)
#: the states in which a job has ended for good (squeue lists them for a while after)
FINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "TIMEOUT",
    }
)
#: the job's infrastructure failed, not the user's command: such a run may be retried
INFRA_STATES = frozenset({"NODE_FAIL", "PREEMPTED", "BOOT_FAIL"})
#: Slurm ended the job at a limit of the run's own: an ERROR of the run's, never retried
#: (a retry meets the same limit), even when its script wrote no end of its own (a
#: program that outlived SIGTERM for KillWait is SIGKILLed; found by review: taken for
#: a lost run, and retried)
LIMIT_STATES = {
    "TIMEOUT": "time limit exceeded",
    "DEADLINE": "deadline passed",
    "OUT_OF_MEMORY": "out of memory",
}
CANCELLED = "CANCELLED"
COMPLETED = "COMPLETED"

#: a job's request over a per-job (or per-node) maximum of its association: Slurm 22.05's
#: reason codes (the doc's ``AssocMax*``, less ``AssocMaxJobsLimit`` and
#: ``AssocMaxSubmitJobLimit``: counts of the user's jobs, which clear as they end)
_ASSOC_PER_JOB = (
    "AssocMaxBBMinutesPerJob",
    "AssocMaxBBPerJob",
    "AssocMaxBBPerNode",
    "AssocMaxBillingMinutesPerJob",
    "AssocMaxBillingPerJob",
    "AssocMaxBillingPerNode",
    "AssocMaxCpuMinutesPerJobLimit",
    "AssocMaxCpuPerNode",
    "AssocMaxEnergyMinutesPerJob",
    "AssocMaxEnergyPerJob",
    "AssocMaxEnergyPerNode",
    "AssocMaxGRESMinutesPerJob",
    "AssocMaxGRESPerJob",
    "AssocMaxGRESPerNode",
    "AssocMaxLicenseMinutesPerJob",
    "AssocMaxLicensePerJob",
    "AssocMaxMemMinutesPerJob",
    "AssocMaxMemPerJob",
    "AssocMaxMemPerNode",
    "AssocMaxNodeMinutesPerJob",
    "AssocMaxUnknownMinutesPerJob",
    "AssocMaxUnknownPerJob",
    "AssocMaxUnknownPerNode",
)
#: the same for its QOS (the doc's ``QOSMax*``, less the ``*PerUser`` ones: what the
#: user's other jobs hold, which clears as they end)
_QOS_PER_JOB = (
    "QOSMaxBBMinutesPerJob",
    "QOSMaxBBPerJob",
    "QOSMaxBBPerNode",
    "QOSMaxBillingMinutesPerJob",
    "QOSMaxBillingPerJob",
    "QOSMaxBillingPerNode",
    "QOSMaxCpuMinutesPerJobLimit",
    "QOSMaxCpuPerNode",
    "QOSMaxEnergyMinutesPerJob",
    "QOSMaxEnergyPerJob",
    "QOSMaxEnergyPerNode",
    "QOSMaxGRESMinutesPerJob",
    "QOSMaxGRESPerJob",
    "QOSMaxGRESPerNode",
    "QOSMaxLicenseMinutesPerJob",
    "QOSMaxLicensePerJob",
    "QOSMaxMemoryMinutesPerJob",
    "QOSMaxMemoryPerNode",
    "QOSMaxNodeMinutesPerJob",
    "QOSMaxUnknownMinutesPerJob",
    "QOSMaxUnknownPerJob",
    "QOSMaxUnknownPerNode",
)
#: a job's request under a per-job minimum of its QOS
_QOS_MINIMA = (
    "QOSMinBB",
    "QOSMinBilling",
    "QOSMinCpuNotSatisfied",
    "QOSMinEnergy",
    "QOSMinGRES",
    "QOSMinLicense",
    "QOSMinMemory",
    "QOSMinNode",
    "QOSMinUnknown",
)

#: why a pending job will not start while its request and the cluster's configuration
#: stay as they are (Slurm's reason codes, https://slurm.schedmd.com/job_reason_codes.html,
#: as Slurm 22.05 spells them; sbatch takes such a job under EnforcePartLimits=NO, Slurm's
#: default): reason -> what it means. Not here: reasons that clear by themselves or by an
#: admin's routine work (Resources, Priority, the aggregate ``*Grp*`` limits, the
#: ``*PerUser`` and job-count limits, PartitionDown/PartitionInactive, NodeDown,
#: ReqNodeNotAvail, a hold).
NEVER_STARTS = {
    **dict.fromkeys(_ASSOC_PER_JOB, "it asks more than its association allows one job"),
    **dict.fromkeys(_QOS_PER_JOB, "it asks more than its QOS allows one job"),
    **dict.fromkeys(_QOS_MINIMA, "it asks less than its QOS requires of one job"),
    "PartitionTimeLimit": "its time limit is over the partition's",
    # also given for nodes that are down or drained (Slurm's documentation of it): the
    # executor checks the job's node count against its partition's first
    "PartitionNodeLimit": "it asks more nodes than the partition has or allows, or fewer "
    "than it requires",
    # the fallback for a request the partition's configuration cannot satisfy: seen for
    # --cpus-per-task over a node's CPUs, or over the partition's MaxCPUsPerNode
    "PartitionConfig": "it asks more than its partition's configuration allows (e.g. more "
    "CPUs per task than a node of it has)",
    # the partition's (or cluster's) MaxMemPerNode / MaxMemPerCPU
    "MaxMemPerLimit": "it asks more memory than its partition allows per node or per CPU",
    "AccountNotAllowed": "its account may not use the partition",
    "QOSNotAllowed": "its QOS may not be used by its association or partition",
    "ReservationDeleted": "the reservation it asks for no longer exists",
    "BadConstraints": "its constraints cannot be met",
    "InvalidAccount": "its account is not valid",
    "InvalidQOS": "its QOS is not valid",
    "DependencyNeverSatisfied": "a job it depends on failed",
    "QOSMaxWallDurationPerJobLimit": "its time limit is over its QOS's",
    "AssocMaxWallDurationPerJobLimit": "its time limit is over its association's",
    "QOSMaxCpuPerJobLimit": "it asks more CPUs than its QOS allows",
    "AssocMaxCpuPerJobLimit": "it asks more CPUs than its association allows",
    "QOSMaxNodePerJobLimit": "it asks more nodes than its QOS allows",
    "AssocMaxNodePerJobLimit": "it asks more nodes than its association allows",
    # an older Slurm's spelling of the same
    "AssocMaxNodesPerJobLimit": "it asks more nodes than its association allows",
    "QOSMaxMemoryPerJob": "it asks more memory than its QOS allows",
}

#: the same said in words: where slurmctld has set a description for the job (its
#: ``state_desc``), squeue shows it instead of the reason code. A partition's
#: AllowAccounts/DenyAccounts (reason AccountNotAllowed) and AllowQos/DenyQos
#: (QOSNotAllowed) do; seen on Slurm 22.05, for a job without an account: "Job's account
#: not known, so it can't use this partition (p allows acct)". Prefix -> what it means.
_NEVER_STARTS_SAID = {
    "Job's account not known, so it can't use this partition": (
        "its account may not use the partition"
    ),
    "Job's account not permitted to use this partition": "its account may not use the partition",
    "Job's QOS not known, so it can't use this partition": "its QOS may not use the partition",
    "Job's QOS not permitted to use this partition": "its QOS may not use the partition",
}


def never_starts(reason: str) -> str | None:
    """What a pending job's ``reason`` means when it does not clear by itself
    (:data:`NEVER_STARTS`), else None."""
    known = NEVER_STARTS.get(reason)
    if known is not None:
        return known
    return next((why for said, why in _NEVER_STARTS_SAID.items() if reason.startswith(said)), None)


@dataclass(frozen=True)
class JobStatus:
    """One job as the scheduler describes it."""

    job_id: str
    state: str  # Slurm's state word, e.g. PENDING, TIMEOUT
    reason: str = ""
    name: str = ""
    exit_code: str = ""  # Slurm's "code:signal"
    #: when it started (seconds since the epoch), where squeue gave it so; a pending
    #: job's estimate changes from poll to poll: no change of the job's
    start: float | None = field(default=None, compare=False)
    #: its owner's uid, where squeue gave it (:data:`LOOKUP_FORMAT`)
    uid: int | None = field(default=None, compare=False)

    def describe(self) -> str:
        """``Slurm job 12 TIMEOUT (exit code 0:15, reason TimeLimit)``."""
        extras = []
        if self.exit_code:
            extras.append(f"exit code {self.exit_code}")
        if self.reason and self.reason != "None":
            extras.append(f"reason {self.reason}")
        tail = f" ({', '.join(extras)})" if extras else ""
        return f"Slurm job {self.job_id} {self.state}{tail}"

    def status_code(self) -> int | None:
        """The exit code as the shell reports it (128+signal when killed)."""
        code, _, sig = self.exit_code.partition(":")
        try:
            return 128 + int(sig) if sig and int(sig) else int(code)
        except ValueError:
            return None


def _wait_status(raw: str) -> str:
    """squeue's ``exit_code`` is the raw wait status: as Slurm's ``code:signal``."""
    try:
        status = int(raw)
    except ValueError:
        return ""
    return f"{status >> 8}:{status & 0x7F}"


def parse_squeue(text: str) -> dict[str, JobStatus]:
    """Parse ``squeue -h -O`` with :data:`SQUEUE_FORMAT` (or :data:`LOOKUP_FORMAT`); job
    id -> status."""
    out: dict[str, JobStatus] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 5 or not parts[0]:
            continue
        job_id, state, reason, name, exit_raw = parts[:5]
        start = _epoch(parts[5]) if len(parts) > 5 else None
        uid = int(parts[6]) if len(parts) > 6 and parts[6].isdigit() else None
        out[job_id] = JobStatus(
            job_id, state.split()[0], reason, name, _wait_status(exit_raw), start, uid
        )
    return out


def _epoch(raw: str) -> float | None:
    """squeue's time as seconds since the epoch (:data:`EPOCH_TIMES`); None for N/A,
    Unknown, or a time printed in a local form."""
    return float(raw) if raw.isdigit() and int(raw) > 0 else None


def parse_sacct(text: str) -> dict[str, JobStatus]:
    """Parse ``sacct -n -P -X -o`` :data:`SACCT_FIELDS`; job id -> status.

    sacct writes ``CANCELLED by 0`` for a cancelled job: the state is the first word and
    the rest is kept as the reason."""
    out: dict[str, JobStatus] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 4 or not parts[0]:
            continue
        job_id, state, exit_code, name = parts[:4]
        word, _, rest = state.strip().partition(" ")
        out[job_id] = JobStatus(job_id, word, rest.strip(), name, exit_code.strip())
    return out


def accounting_disabled(stderr: str) -> bool:
    """sacct without slurmdbd: "Slurm accounting storage is disabled"."""
    return "accounting storage is disabled" in stderr.lower()


def invalid_job_ids(stderr: str) -> bool:
    """squeue's answer when none of the asked ids is known any more."""
    return "invalid job id" in stderr.lower()


#: how Slurm's commands say that they could not reach the controller (slurmctld down,
#: restarting or overloaded): the job's fate is unknown, nothing was refused
_UNREACHABLE = (
    "unable to contact slurm controller",
    "slurm controller is unavailable",
    "socket timed out",
    "zero bytes were transmitted or received",
    "connection refused",
    "connect failure",
    "communication connection failure",
    "slurmctld not responding",
)


def controller_unreachable(text: str) -> bool:
    """A Slurm command's message says that slurmctld did not answer."""
    lower = text.lower()
    return any(words in lower for words in _UNREACHABLE)


#: how sbatch says that the partition takes no jobs now: an admin has set it
#: ``State=DRAIN`` or ``State=INACTIVE`` (maintenance), and will make it ``UP`` again. Slurm
#: 22.05 (ESLURM_PARTITION_NOT_AVAIL's text): ``sbatch: error: Batch job submission failed:
#: Required partition not available (inactive or drain)``. (``State=DOWN`` takes jobs:
#: they pend with the reason ``PartitionDown``.)
_PARTITION_CLOSED = ("required partition not available",)


def partition_closed(text: str) -> bool:
    """sbatch's message says that the partition does not take jobs for now (drained or
    inactive), not that the request is wrong (an unknown partition, a request over its
    limits): the submission is to be tried again later."""
    lower = text.lower()
    return any(words in lower for words in _PARTITION_CLOSED)


#: sbatch's reason words for a user's queue at its association's or QOS's MaxSubmitJobs
#: (Slurm 22.05: "sbatch: error: AssocMaxSubmitJobLimit", then "Batch job submission
#: failed: Job violates accounting/QOS policy (job submit limit, ...)"): the only refusal
#: whose own words tell a full queue, which clears, from a request over a limit
#: AssocMaxSubmitJobLimit, QOSMaxSubmitJobPerUserLimit, and the account's or group's
#: AssocGrpSubmitJobsLimit, QOSGrpSubmitJobsLimit: queues that empty as jobs end
_SUBMIT_LIMIT = "submitjob"


def submit_limit_reached(text: str) -> bool:
    """sbatch's message says the submitting user has as many jobs queued as allowed."""
    return _SUBMIT_LIMIT in text.lower()


def invalid_user(text: str) -> bool:
    """squeue's or scancel's answer to ``--user <uid>`` for a uid the host's account
    database does not know (Slurm 22.05: squeue "squeue: error: Invalid user: 54321"
    with exit status 0 and no job listed; scancel "scancel: error: Invalid user name:
    54321", exit 1)."""
    return "invalid user" in text.lower()


def refused_at_submission(status: JobStatus) -> bool:
    """A job record sbatch's refusal left behind: a request no node of the cluster can
    satisfy ("Requested node configuration is not available", e.g. more memory than any
    node has) is recorded FAILED with the reason BadConstraints (exit code 1, started and
    ended at its submission), and squeue lists it for MinJobAge; it never ran. (A job
    that ran and failed says NonZeroExitCode, JobLaunchFailure, ...; a pending job held
    for its constraints is PENDING.)"""
    return status.state == "FAILED" and status.reason == "BadConstraints"


def job_already_gone(text: str) -> bool:
    """scancel's answer for a job that has ended or that Slurm no longer knows: nothing
    is left to cancel."""
    lower = text.lower()
    return "invalid job id" in lower or "already completing or completed" in lower


def probe_for(status: JobStatus) -> Probe:
    """The backend's word for one job; the run's markers still have the last word."""
    detail = {"job_id": status.job_id, "slurm_state": status.state, "reason": status.reason}
    raw = status.describe()
    if status.state in ALIVE_STATES or status.state not in FINAL_STATES:
        # a state word this version does not know (a newer Slurm's) is no end: the job
        # is still in the queue, and once Slurm forgets it the run's markers decide
        return Probe(Liveness.ALIVE, raw=raw, detail=detail)
    probe = Probe(Liveness.FINISHED, exit_code=status.status_code(), raw=raw, detail=detail)
    if status.state == CANCELLED:
        detail["canceled"] = f"cancelled outside flowbatch: {raw}"
    elif status.state in INFRA_STATES:
        probe.infra_failure = raw
    elif status.state != COMPLETED:
        detail["message"] = raw
        if status.state in LIMIT_STATES:
            detail["limit"] = LIMIT_STATES[status.state]
    return probe


def alive_text(status: JobStatus) -> str:
    """What ``runs show`` says about a queued or running job: state and reason."""
    if status.reason and status.reason != "None":
        return f"{status.state} ({status.reason})"
    return status.state


def _fields(line: str) -> dict[str, str]:
    """``scontrol -o`` output: ``Key=value`` words (a value with spaces, such as a
    Command, is cut at its first space: not one of the keys read here)."""
    out = {}
    for word in line.split():
        key, eq, value = word.partition("=")
        if eq and key not in out:
            out[key] = value
    return out


def _count(text: str) -> int | None:
    """A node count of scontrol's (None: UNLIMITED, ``*`` or unreadable)."""
    return int(text) if text.isdigit() else None


def job_nodes(text: str) -> tuple[list[str], int, int | None] | None:
    """``scontrol -o show job <id>``: the job's partitions (a pending job may name
    several), and the fewest and most nodes it asks (``NumNodes=2`` or ``2-3``; most:
    None when unbounded). None when the output does not say."""
    for line in text.splitlines():
        fields = _fields(line)
        if "JobId" not in fields:
            continue
        low, _, high = fields.get("NumNodes", "").partition("-")
        least = _count(low)
        parts = [p for p in fields.get("Partition", "").split(",") if p]
        if least is None or not parts:
            return None
        return parts, least, _count(high) if high else least
    return None


def partition_sizes(text: str) -> dict[str, tuple[int, int | None, int]]:
    """``scontrol -a -o show partition``: partition -> (TotalNodes, MaxNodes, MinNodes)
    (MaxNodes None for UNLIMITED). A partition's TotalNodes counts its nodes whatever
    their state: drained and down nodes too."""
    out = {}
    for line in text.splitlines():
        fields = _fields(line)
        total = _count(fields.get("TotalNodes", ""))
        if "PartitionName" not in fields or total is None:
            continue
        least = _count(fields.get("MinNodes", "")) or 0
        out[fields["PartitionName"]] = (total, _count(fields.get("MaxNodes", "")), least)
    return out


def over_partition_nodes(
    job: tuple[list[str], int, int | None], sizes: dict[str, tuple[int, int | None, int]]
) -> str | None:
    """Why a job pending with the reason ``PartitionNodeLimit`` can never start in any of
    its partitions: it asks more nodes than the partition has or allows (MaxNodes), or
    fewer than it requires (MinNodes). None when it fits one of them (Slurm's reason then
    says that nodes it needs are down or drained: a maintenance, which ends) or when a
    partition's size is not known."""
    parts, least, most = job
    said = []
    for name in parts:
        size = sizes.get(name)
        if size is None:
            return None
        total, maximum, minimum = size
        if least > total:
            said.append(f"partition {name} has {total} node{'s' if total != 1 else ''}")
        elif maximum is not None and least > maximum:
            said.append(f"partition {name} allows {maximum} (MaxNodes)")
        elif most is not None and most < minimum:
            said.append(f"partition {name} requires at least {minimum} (MinNodes)")
        else:
            return None
    if most == least:
        asked = f"{least} node" + ("" if least == 1 else "s")
    else:
        asked = f"{least}-{most} nodes" if most is not None else f"at least {least} nodes"
    return f"it asks {asked}; " + ", ".join(said)
