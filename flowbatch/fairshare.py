"""Fair shares on a shared login node: concurrency caps per user and per group.

Besides each executor's own limit (``local.concurrency``, an SSH host's ``max_runs``),
the site config may cap how many runs one user, or one group, has launched at once
(RUNNING, or PENDING with a job in Slurm's queue), over all executors, so that one
participant cannot fill the node or the Slurm queue::

    limits:
      per_user: 4          # default cap of every user (null: none)
      per_group: 8         # default cap of every group
      users: {alice: 10}   # per-user overrides
      groups: {teamx: 2}   # per-group overrides

A queued run beyond a cap stays PENDING; :func:`hold` records why in the run's
``waiting`` note (``runs show`` prints it), writing ``run.json`` only when the reason
changes, not on every tick.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

if TYPE_CHECKING:  # runtime imports would be circular (config imports this module)
    from .runs import RunRecord
    from .store.store import Store


class LimitsConfig(BaseModel):
    """``limits:`` in ``flowbatch.yaml``: caps on launched runs (RUNNING, or with a job in
    a scheduler's queue) per user and per group."""

    model_config = ConfigDict(extra="forbid")

    per_user: int | None = Field(
        default=None, ge=1, description="Runs one user may have running at once (all executors)."
    )
    per_group: int | None = Field(
        default=None, ge=1, description="Runs one group may have running at once (all executors)."
    )
    # 0 holds that user's or group's runs (a pause, until the cap is raised and the
    # config reloaded); a negative cap is refused (it held them the same, unsaid: found
    # by review)
    users: dict[str, NonNegativeInt] = Field(
        default_factory=dict,
        description="Per-user caps that replace per_user (user: N; 0 holds their runs).",
    )
    groups: dict[str, NonNegativeInt] = Field(
        default_factory=dict,
        description="Per-group caps that replace per_group (group: N; 0 holds its runs).",
    )

    def user_cap(self, user: str) -> int | None:
        return self.users.get(user, self.per_user)

    def group_cap(self, group: str) -> int | None:
        return self.groups.get(group, self.per_group)

    @property
    def active(self) -> bool:
        return bool(self.per_user or self.per_group or self.users or self.groups)


class Shares:
    """Running runs per user and per group during one dispatch (updated as runs launch)."""

    def __init__(self, limits: LimitsConfig, running: Iterable[RunRecord]) -> None:
        self.limits = limits
        self.users: Counter[str] = Counter()
        self.groups: Counter[str] = Counter()
        for run in running:
            self.add(run)

    def add(self, run: RunRecord) -> None:
        self.users[run.owner] += 1
        self.groups[run.group] += 1

    def reason(self, run: RunRecord) -> str | None:
        """Why ``run`` may not start now, or None."""
        cap = self.limits.user_cap(run.owner)
        if cap is not None and self.users[run.owner] >= cap:
            return (
                f"user {run.owner} has {self.users[run.owner]} runs running or queued (cap {cap})"
            )
        cap = self.limits.group_cap(run.group)
        if cap is not None and self.groups[run.group] >= cap:
            return (
                f"group {run.group} has {self.groups[run.group]} runs running or queued (cap {cap})"
            )
        return None


#: how the notes :meth:`Shares.reason` gives begin (an executor's note, "waiting for
#: slurm: ...", is the dispatcher's, and stays until its run starts or waits for another
#: reason)
_SHARE_NOTES = ("user ", "group ")


def hold(store: Store, run: RunRecord, shares: Shares) -> bool:
    """True when a cap keeps ``run`` PENDING. Its ``waiting`` note is written into
    ``run.json`` only when the reason changes (a tick must not rewrite every queued run);
    a run no cap holds loses a cap's note, and keeps any other (an executor's: clearing
    it here had every run waiting for a host or a partition written twice a tick)."""
    reason = shares.reason(run)
    if reason is None and not (run.waiting or "").startswith(_SHARE_NOTES):
        return False
    if reason != run.waiting:
        run.waiting = reason
        store.write(run, index=False)  # the index holds no waiting note
    return reason is not None
