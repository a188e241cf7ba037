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
instead of submitting the run twice.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ExecutorError
from ..render.script import LOGS_DIR, read_markers
from ..slurm_profile import SlurmProfile
from .base import Launch, Liveness, Probe
from .commands import CommandResult, CommandRunner, LocalRunner
from .slurm_script import (
    BATCH_NAME,
    BatchJob,
    job_name,
    load_template,
    log_paths,
    render_batch_script,
    slurm_time,
)
from .slurm_states import (
    COMPLETED,
    SACCT_FIELDS,
    SQUEUE_FORMAT,
    JobStatus,
    accounting_disabled,
    alive_text,
    invalid_job_ids,
    parse_sacct,
    parse_squeue,
    probe_for,
)

log = logging.getLogger("flowbatch.slurm")

#: the poll interval grows by this factor while nothing changes (up to the ceiling)
BACKOFF = 1.5


class SlurmExecutor:
    """One Slurm profile as an executor (``slurm`` or ``slurm:<profile>``)."""

    #: Slurm enforces ``--time`` itself: the Runner must not count queue time as run time
    enforces_time_limit = True

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
    ) -> None:
        self.name = name
        self.profile_name = profile_name
        self.profile = profile
        self.limit = profile.max_jobs
        self.site_name = site_name
        self.site_root = site_root
        self._runner = runner
        self._clock = clock
        self._interval = profile.poll.floor
        self._next_poll = 0.0
        self._last: dict[str, JobStatus] = {}  # job id -> status at the last poll
        self._failures = 0
        self._accounting: bool | None = None  # False once sacct says it is disabled
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
        raise ConfigError(
            f"Slurm profile {self.profile_name!r}: via {self.profile.via!r} is not supported yet",
            field=f"slurm.{self.profile_name}.via",
            hint="use via: local on a login node (sbatch over SSH needs flowbatch.executors.ssh)",
        )

    def _run(self, command: str, *args: str) -> CommandResult:
        self.calls[command] = self.calls.get(command, 0) + 1
        line = " ".join([command, *(shlex.quote(a) for a in args)])
        return self.runner.run(line, timeout=self.profile.timeout)

    # -- launch ----------------------------------------------------------------------------
    def job_name(self, run_id: str) -> str:
        return job_name(self.site_name, run_id)

    def intent(self, job: Launch) -> dict[str, Any]:
        """The handle recorded before submission: enough to find the job by name."""
        return {
            "job_name": self.job_name(job.run_id),
            "profile": self.profile_name,
            "via": self.profile.via,
            "run_dir": str(job.run_dir),
            "submitting": True,
        }

    def launch(self, job: Launch) -> dict[str, Any]:
        """Submit the run (or adopt the job an earlier, interrupted launch submitted)."""
        handle = self.intent(job)
        handle.pop("submitting")
        previous = job.handle or {}
        if previous.get("job_name") == handle["job_name"] and "job_id" not in previous:
            found = self._find_by_name(handle["job_name"])
            if found is not None:
                log.info("run %s: adopting Slurm job %s found by name", job.run_id, found)
                return {**handle, "job_id": found, "adopted": True}
        script = self._write_batch_script(job, handle["job_name"])
        result = self._run("sbatch", "--parsable", str(script))
        if not result.ok:
            raise ExecutorError(
                f"sbatch refused run {job.run_id} (profile {self.profile_name!r}, "
                f"exit {result.returncode}): {_one_line(result.stderr or result.stdout)}",
                hint="check the resources (partition, time, mem) against the cluster's limits",
            )
        job_id = result.stdout.strip().splitlines()[-1].split(";")[0].strip()
        if not job_id.isdigit():
            raise ExecutorError(f"sbatch gave no job id for run {job.run_id}: {result.stdout!r}")
        self._soon()
        return {**handle, "job_id": job_id, "slurm_state": "SUBMITTED"}

    def _find_by_name(self, name: str) -> str | None:
        """The newest job of that name (any state: it may already have finished)."""
        result = self._run("squeue", "-h", "-t", "all", "--name", name, "-O", SQUEUE_FORMAT)
        if not result.ok:
            raise ExecutorError(
                f"cannot look for Slurm job {name} before resubmitting: {_one_line(result.stderr)}",
                hint="the run is retried at the next tick",
            )
        ids = [s.job_id for s in parse_squeue(result.stdout).values() if s.name == name]
        return max(ids, key=_job_order) if ids else None

    def _write_batch_script(self, job: Launch, name: str) -> Path:
        text, source = load_template(self.site_root)
        batch = self.batch_job(job, name)
        path = job.run_dir / BATCH_NAME
        (job.run_dir / LOGS_DIR).mkdir(exist_ok=True)  # Slurm opens --output before the script
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
        jobs = {run_id: str(h["job_id"]) for run_id, h in handles if h.get("job_id")}
        now = self._clock()
        if not jobs or now < self._next_poll:
            return {}  # not asked this tick: the Runner treats the runs as still alive
        ids = ",".join(jobs.values())
        result = self._run("squeue", "-h", "-t", "all", "-j", ids, "-O", SQUEUE_FORMAT)
        if not result.ok and not invalid_job_ids(result.stderr):
            return self._failed("squeue", result, jobs)
        self._failures = 0
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

    def _failed(self, what: str, result: CommandResult, jobs: dict[str, str]) -> dict[str, Probe]:
        """A failing scheduler command is tolerated ``failures`` times in a row."""
        self._failures += 1
        message = _one_line(result.stderr or result.stdout) or f"exit {result.returncode}"
        self._next_poll = self._clock() + self._interval
        if self._failures <= self.profile.failures:
            log.warning(
                "%s failed (%d of %d tolerated): %s",
                what,
                self._failures,
                self.profile.failures,
                message,
            )
            return {}
        why = (
            f"{what} failed {self._failures} times in a row on {self.runner.where} "
            f"(profile {self.profile_name!r}): {message}"
        )
        return {run_id: Probe(Liveness.GONE, raw=why) for run_id in jobs}

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
        if status is None:
            # gone from squeue and no accounting: the run's own markers decide
            return Probe(
                Liveness.FINISHED,
                raw=f"Slurm job {job_id} left the queue (no accounting record)",
                detail={"job_id": job_id},
            )
        probe = probe_for(status)
        if probe.liveness == Liveness.ALIVE:
            probe.detail["status"] = alive_text(status)
        elif status.state == COMPLETED and not self._script_ran(handle):
            probe.raw = (
                f"{status.describe()}, but the job script never ran (no status/started "
                f"marker); see logs/slurm-{job_id}.err and the node's slurmd log"
            )
        return probe

    @staticmethod
    def _script_ran(handle: dict[str, Any]) -> bool:
        run_dir = handle.get("run_dir")
        return isinstance(run_dir, str) and read_markers(Path(run_dir)).started is not None

    # -- cancel / collect / adopt ----------------------------------------------------------
    def cancel(self, handle: dict[str, Any], reason: str) -> None:
        """scancel the job (by name when only the intent was recorded)."""
        if handle.get("job_id"):
            result = self._run("scancel", str(handle["job_id"]))
        elif handle.get("job_name"):
            result = self._run("scancel", "--name", str(handle["job_name"]))
        else:
            return
        if not result.ok:
            log.warning("scancel %s: %s", handle.get("job_id"), _one_line(result.stderr))
        self._soon()

    def collect(self, run_id: str, handle: dict[str, Any], run_dir: Path) -> None:
        """Nothing to bring home: the run folder is on the cluster's shared file system."""

    def adopt(self, handle: dict[str, Any]) -> bool:
        """A recorded job id is ours; the next squeue says whether it still runs."""
        return bool(handle.get("job_id"))

    def close(self) -> None:
        close = getattr(self._runner, "close", None)
        if callable(close):
            close()


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


def _job_order(job_id: str) -> tuple[int, str]:
    head = job_id.split("_")[0]
    return (int(head) if head.isdigit() else -1, job_id)
