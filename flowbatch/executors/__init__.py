"""Executors: where runs run. Each is configured by name in the site config.

The SSH executor (and paramiko with it, a fifth of the CLI's start-up) is imported only
when the site configures SSH hosts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import SiteConfig
from ..slurm_profile import profiles_by_executor
from .base import Executor, Launch, Liveness, Probe
from .local import LocalExecutor
from .slurm import SlurmExecutor

if TYPE_CHECKING:
    from .ssh import SSHExecutor

__all__ = [
    "Executor",
    "Launch",
    "Liveness",
    "LocalExecutor",
    "Probe",
    "SSHExecutor",
    "SlurmExecutor",
    "build_executors",
    "executor_names",
]


def executor_names(config: SiteConfig) -> list[str]:
    """Every executor name a template or request may ask for under this config."""
    return ["local", *profiles_by_executor(config.slurm), *config.ssh]


def build_executors(
    config: SiteConfig, wake: Callable[[], None], site_root: Path | None = None
) -> dict[str, Executor]:
    """One executor object per configured name (connections are opened lazily).

    ``site_root`` locates site overrides (``<site>/sbatch.sh.j2``) and names the site."""
    executors: dict[str, Executor] = {
        "local": LocalExecutor(wake=wake, limit=config.local.effective_concurrency())
    }
    site_name = config.site_name or (site_root.name if site_root else "flowbatch")
    for name, (profile_name, profile) in profiles_by_executor(config.slurm).items():
        executors[name] = SlurmExecutor(
            name, profile_name, profile, site_name=site_name, site_root=site_root, config=config
        )
    if config.ssh:
        from .ssh import ssh_executors

        executors.update(ssh_executors(config))  # one per ssh host, one shared pool
    return executors


def __getattr__(name: str) -> Any:
    if name == "SSHExecutor":
        from .ssh import SSHExecutor

        return SSHExecutor
    raise AttributeError(name)
