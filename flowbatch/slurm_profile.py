"""Slurm profiles of the site config (``slurm:`` in ``flowbatch.yaml``).

A profile says where and how runs are submitted: partition, account, qos, default
resources, extra ``#SBATCH`` lines, modules, the host the Slurm commands run on, and how
gently the controller is polled. ``executor: slurm`` uses the profile named ``default``
(built-in defaults when the site declares none); ``executor: slurm:<name>`` a named one.

It lives outside :mod:`flowbatch.executors` because :mod:`flowbatch.config` needs it and
the executors package imports the config.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .spec.resources import check_mem, check_partition, parse_seconds

#: ``executor: slurm`` means this profile
DEFAULT_PROFILE = "default"
EXECUTOR_PREFIX = "slurm"

_PROFILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")
_HOST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")
_MODULE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+/-]{0,127}\Z")
_NO_NEWLINE = re.compile(r"[\x00-\x1f\x7f]")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SlurmPolling(_Strict):
    """How often the controller is asked: the interval starts at ``floor`` after a change
    and grows (x1.5) up to ``ceiling`` while nothing changes (what cluster admins ask for)."""

    floor: float = Field(default=2.0, ge=0, description="Shortest seconds between squeue calls.")
    ceiling: float = Field(default=60.0, gt=0, description="Longest seconds between calls.")

    @model_validator(mode="after")
    def _ordered(self) -> SlurmPolling:
        if self.ceiling < self.floor:
            raise ValueError("poll.ceiling must be at least poll.floor")
        return self


class SlurmProfile(_Strict):
    """One way of submitting to Slurm (``slurm: {<name>: {...}}``)."""

    partition: str | None = Field(default=None, description="--partition (default: Slurm's).")
    account: str | None = Field(default=None, description="--account")
    qos: str | None = Field(default=None, description="--qos")
    time: float | None = Field(
        default=None,
        description="Default --time when neither the template nor the request sets one "
        "(seconds, '90s', '10m', '2h', '1:30:00', '1-12:00:00').",
    )
    cpus: int | None = Field(default=None, ge=1, description="Default --cpus-per-task.")
    mem: str | None = Field(default=None, description="Default --mem, e.g. 500M, 4G.")
    gpus: int | None = Field(default=None, ge=0, description="Default GPUs (--gres=gpu:N).")
    extra: list[str] = Field(
        default_factory=list,
        description="Extra #SBATCH options, e.g. ['--exclusive', '--constraint=haswell'].",
    )
    modules: list[str] = Field(default_factory=list, description="`module load` before the run.")
    via: str = Field(
        default="local",
        description="Where sbatch/squeue/sacct/scancel run: 'local', or the name of an ssh "
        "host of the site (its pooled connection). The site folder must have the same path "
        "on that host and on the compute nodes (a shared file system), and be writable by "
        "the ssh user, as whom the jobs run.",
    )
    poll: SlurmPolling = Field(default_factory=SlurmPolling)
    failures: int = Field(
        default=5,
        ge=0,
        description="Failed squeue calls in a row tolerated (the runs' state is unknown "
        "meanwhile) before unreachable_grace may end them.",
    )
    unreachable_grace: float = Field(
        default=300.0,
        description="How long squeue may keep failing (slurmctld down or restarting, the "
        "submit host unreachable) before the profile's running runs are given up: ERROR "
        "(or retried, with retries) and their jobs cancelled once Slurm answers again. "
        "Seconds, or '90s', '10m'.",
    )
    max_jobs: int = Field(default=1000, ge=1, description="Jobs in the queue at once.")
    max_array_size: int = Field(default=1000, ge=1, description="Slurm's MaxArraySize.")
    array_throttle: int | None = Field(
        default=None, ge=1, description="Array tasks running at once (sbatch --array=...%N)."
    )
    timeout: float = Field(default=60.0, gt=0, description="Seconds a Slurm command may take.")

    @field_validator("unreachable_grace", mode="before")
    @classmethod
    def _grace(cls, value: Any) -> float | None:
        from .config import parse_duration  # late: config imports this module

        return parse_duration(value)

    @field_validator("time", mode="before")
    @classmethod
    def _time(cls, value: Any) -> float | None:
        return None if value is None else parse_seconds(value)

    @field_validator("mem")
    @classmethod
    def _mem(cls, value: str | None) -> str | None:
        return None if value is None else check_mem(value)

    @field_validator("partition", "account", "qos")
    @classmethod
    def _word(cls, value: str | None) -> str | None:
        return None if value is None else check_partition(value)

    @field_validator("extra")
    @classmethod
    def _extra(cls, value: list[str]) -> list[str]:
        for line in value:
            if not line.startswith("-") or _NO_NEWLINE.search(line):
                raise ValueError(f"an extra #SBATCH option must be one '--option' line: {line!r}")
        return value

    @field_validator("modules")
    @classmethod
    def _modules(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _MODULE.match(name):
                raise ValueError(f"not a module name: {name!r}")
        return value

    @field_validator("via")
    @classmethod
    def _via(cls, value: str) -> str:
        if not _HOST_NAME.match(value):
            raise ValueError(f"via must be 'local' or an ssh host name, not {value!r}")
        return value


def check_profiles(profiles: dict[str, SlurmProfile]) -> dict[str, SlurmProfile]:
    """Profile names become executor names (``slurm:<name>``): keep them simple."""
    for name in profiles:
        if not _PROFILE_NAME.match(name):
            raise ValueError(f"not a Slurm profile name: {name!r} (letters, digits, _ . -)")
    return profiles


def executor_name(profile: str) -> str:
    """``slurm`` for the default profile, ``slurm:<name>`` for the others."""
    return EXECUTOR_PREFIX if profile == DEFAULT_PROFILE else f"{EXECUTOR_PREFIX}:{profile}"


def profiles_by_executor(profiles: dict[str, SlurmProfile]) -> dict[str, tuple[str, SlurmProfile]]:
    """Executor name -> (profile name, profile); ``slurm`` always exists."""
    out = {executor_name(DEFAULT_PROFILE): (DEFAULT_PROFILE, SlurmProfile())}
    for name, profile in profiles.items():
        out[executor_name(name)] = (name, profile)
    return out
