"""Executors: where runs run. Each is configured by name in the site config."""

from __future__ import annotations

from collections.abc import Callable

from ..config import SiteConfig
from .base import Executor, Launch, Liveness, Probe
from .local import LocalExecutor

__all__ = [
    "Executor",
    "Launch",
    "Liveness",
    "LocalExecutor",
    "Probe",
    "build_executors",
    "executor_names",
]


def executor_names(config: SiteConfig) -> list[str]:
    """Every executor name a template or request may ask for under this config."""
    return ["local"]


def build_executors(config: SiteConfig, wake: Callable[[], None]) -> dict[str, Executor]:
    """One executor object per configured name (connections are opened lazily)."""
    return {"local": LocalExecutor(wake=wake, limit=config.local.effective_concurrency())}
