"""Executors: where runs run. Each is configured by name in the site config.

The SSH executor (and paramiko with it, a fifth of the CLI's start-up) is imported only
when the site configures SSH hosts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import SiteConfig
from ..slurm_profile import profiles_by_executor
from .base import Executor, Launch, Liveness, Probe
from .local import LocalExecutor
from .notes import stranded
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
    "executor_settings",
    "rebuild_executors",
    "stranded_notes",
]


def executor_names(config: SiteConfig) -> list[str]:
    """Every executor name a template or request may ask for under this config."""
    return config.executor_names()


def stranded_notes(config: SiteConfig, site_root: Path) -> list[str]:
    """Jobs and processes of runs given up on, noted under a Slurm profile or SSH host
    that ``config`` no longer has (see :func:`flowbatch.executors.notes.stranded`)."""
    profiles = [profile for profile, _ in profiles_by_executor(config.slurm).values()]
    return stranded(site_root, profiles, config.ssh)


def _site_name(config: SiteConfig, site_root: Path | None) -> str:
    """The site's name in its Slurm job names: the config's, else the site folder's."""
    return config.site_name or (site_root.name if site_root else "flowbatch")


def build_executors(
    config: SiteConfig, wake: Callable[[], None], site_root: Path | None = None
) -> dict[str, Executor]:
    """One executor object per configured name (connections are opened lazily).

    ``site_root`` locates site overrides (``<site>/sbatch.sh.j2``), names the site, and
    holds the jobs and processes of runs given up on (``slurm-abandoned/``,
    ``ssh-abandoned/``); without it those are kept in memory only."""
    executors: dict[str, Executor] = {
        "local": LocalExecutor(wake=wake, limit=config.local.effective_concurrency())
    }
    site_name = _site_name(config, site_root)
    for name, (profile_name, profile) in profiles_by_executor(config.slurm).items():
        executors[name] = SlurmExecutor(
            name, profile_name, profile, site_name=site_name, site_root=site_root, config=config
        )
    if config.ssh:
        from .ssh import ssh_executors

        # one per ssh host, one shared pool
        executors.update(ssh_executors(config, site_root=site_root))
    return executors


def executor_settings(config: SiteConfig, site_root: Path | None = None) -> dict[str, str]:
    """Per executor name but ``local``, everything of the config its object is built
    from (as comparable text): a Slurm profile with the site's name and the ssh host it
    goes through (and that host's jump hosts), an ssh host with its jump hosts."""

    def chain(host: str) -> list[Any]:
        out: list[Any] = []
        seen: set[str] = set()
        name: str | None = host
        while name is not None and name in config.ssh and name not in seen:
            seen.add(name)
            out.append([name, config.ssh[name].model_dump(mode="json")])
            name = config.ssh[name].jump_host
        return out

    site_name = _site_name(config, site_root)
    out: dict[str, str] = {}
    for name, (profile_name, profile) in profiles_by_executor(config.slurm).items():
        via = chain(profile.via) if profile.via != "local" else []
        dump = [profile_name, profile.model_dump(mode="json"), site_name, via]
        out[name] = json.dumps(dump, sort_keys=True)
    for name in config.ssh:
        out[name] = json.dumps(chain(name), sort_keys=True)
    return out


def rebuild_executors(
    current: dict[str, Executor],
    old: SiteConfig,
    new: SiteConfig,
    wake: Callable[[], None],
    site_root: Path | None = None,
) -> dict[str, Executor]:
    """The executors of the reloaded config ``new``: the current object of each name
    whose settings did not change is kept (its connections, its state), and always the
    local one (it owns the reaper of its running processes), with ``new``'s concurrency;
    the others are built afresh. A dropped name is left out: the caller keeps its object
    for the runs it still serves (:meth:`flowbatch.lifecycle.Runner.reconfigure`)."""
    before = executor_settings(old, site_root)
    after = executor_settings(new, site_root)
    fresh = build_executors(new, wake, site_root=site_root)
    out: dict[str, Executor] = {}
    for name, executor in fresh.items():
        kept = current.get(name)
        if name == "local" and kept is not None:
            kept.limit = new.local.effective_concurrency()
            out[name] = kept
        elif kept is not None and before.get(name) == after.get(name):
            out[name] = kept
        else:
            out[name] = executor
    return out


def __getattr__(name: str) -> Any:
    if name == "SSHExecutor":
        from .ssh import SSHExecutor

        return SSHExecutor
    raise AttributeError(name)
