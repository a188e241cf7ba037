"""Slurm's words, parsed and mapped: squeue/sacct output into :class:`Probe` values.

Pure functions over text, tested on recorded output; the executor only runs commands.
Native states are kept verbatim in ``Probe.raw`` and ``Probe.detail`` for diagnostics.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Liveness, Probe

#: ``squeue -O`` fields, each ending with '|' (no size: as wide as the value).
#: ``JobArrayID`` is the plain job id, or ``<array id>_<task>`` for a task of a job array
#: (``JobID`` would give the task's own, internal id); with ``squeue -r`` pending tasks are
#: listed one per line instead of collapsed as ``<array id>_[0-9]``.
SQUEUE_FORMAT = "JobArrayID:|,State:|,Reason:|,Name:|,exit_code:|"
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
CANCELLED = "CANCELLED"
COMPLETED = "COMPLETED"

#: why a pending job will not start while its request and the cluster's limits stay as
#: they are (Slurm's reason codes; sbatch takes such a job under EnforcePartLimits=NO,
#: Slurm's default): reason -> what it means
NEVER_STARTS = {
    "PartitionTimeLimit": "its time limit is over the partition's",
    "PartitionNodeLimit": "it asks more nodes than the partition allows",
    "BadConstraints": "its constraints cannot be met",
    "InvalidAccount": "its account is not valid",
    "InvalidQOS": "its QOS is not valid",
    "DependencyNeverSatisfied": "a job it depends on failed",
    "QOSMaxWallDurationPerJobLimit": "its time limit is over its QOS's",
    "AssocMaxWallDurationPerJobLimit": "its time limit is over its association's",
    "QOSMaxCpuPerJobLimit": "it asks more CPUs than its QOS allows",
    "AssocMaxCpuPerJobLimit": "it asks more CPUs than its association allows",
    "QOSMaxNodePerJobLimit": "it asks more nodes than its QOS allows",
    "AssocMaxNodesPerJobLimit": "it asks more nodes than its association allows",
    "QOSMaxMemoryPerJob": "it asks more memory than its QOS allows",
}


@dataclass(frozen=True)
class JobStatus:
    """One job as the scheduler describes it."""

    job_id: str
    state: str  # Slurm's state word, e.g. PENDING, TIMEOUT
    reason: str = ""
    name: str = ""
    exit_code: str = ""  # Slurm's "code:signal"

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
    """Parse ``squeue -h -O`` with :data:`SQUEUE_FORMAT`; job id -> status."""
    out: dict[str, JobStatus] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 5 or not parts[0]:
            continue
        job_id, state, reason, name, exit_raw = parts[:5]
        out[job_id] = JobStatus(job_id, state.split()[0], reason, name, _wait_status(exit_raw))
    return out


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
    return probe


def alive_text(status: JobStatus) -> str:
    """What ``runs show`` says about a queued or running job: state and reason."""
    if status.reason and status.reason != "None":
        return f"{status.state} ({status.reason})"
    return status.state
