"""A slot freed by an ended run is given to a waiting run before that run's end is
recorded (markers, results, run.json, index rows, run page): the slot does not stand
empty for the bookkeeping."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowbatch import api, lifecycle
from flowbatch.daemon import Daemon
from flowbatch.runs import State
from flowbatch.site import Site
from flowbatch.store.index import StateChangeRow

from .conftest import drop, make_site, run_until_idle, write_template

SLEEPY = """
workflow:
  steps:
    - name: s
      action:
        commands:
          - sleep 0.3
          - >-
            printf '{"v": %s}' "${x}" > r.json
parameters:
  - {name: x, dtype: int, defaultValue: 1}
results:
  file: r.json
  schema: [{name: v, label: V, dtype: int}]
"""


def _one_slot(tmp_path: Path) -> Site:
    site = make_site(tmp_path / "site", {"executor": "local", "local": {"concurrency": 1}})
    api.install(site, write_template(tmp_path / "tpl", SLEEPY), workflow_id="wf")
    return site


def test_a_waiting_run_starts_before_the_end_of_the_run_it_follows_is_recorded(
    tmp_path: Path,
) -> None:
    site = _one_slot(tmp_path)
    try:
        drop(site, "a.yaml", {"workflow": "wf", "arguments": {"x": 1}})
        drop(site, "b.yaml", {"workflow": "wf", "arguments": {"x": 2}})
        run_until_idle(site)
        changes = [(c.run, c.state) for c in StateChangeRow.select().order_by(StateChangeRow.id)]
        runs = {r["id"]: r for r in api.list_runs(site)}
        assert len(runs) == 2 and {r["state"] for r in runs.values()} == {"SUCCESS"}
        first = next(run for run, state in changes if state == "RUNNING")
        second = next(run for run in runs if run != first)
        # the second run's start is recorded before the first run's end
        assert changes.index((second, "RUNNING")) < changes.index((first, "SUCCESS")), changes
        # one at a time all the same: the second started after the first's script ended
        shown = {run: api.show_run(site, run) for run in runs}
        assert shown[second]["started_at"] >= shown[first]["finished_at"]
    finally:
        site.close()


def test_an_end_that_could_not_be_recorded_is_polled_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while the ended runs' ends are recorded (past the guard that makes a
    run ERROR) leaves none of them out of the running runs for good: the next poll
    records them."""
    site = _one_slot(tmp_path)
    real = lifecycle.Runner._finalize_safely
    failures = [1]

    def failing(self: lifecycle.Runner, run, probe) -> None:  # type: ignore[no-untyped-def]
        if failures[0]:
            failures[0] -= 1
            raise RuntimeError("the index went away")
        real(self, run, probe)

    monkeypatch.setattr(lifecycle.Runner, "_finalize_safely", failing)
    daemon = Daemon(site)
    daemon.start()
    try:
        drop(site, "a.yaml", {"workflow": "wf", "arguments": {"x": 1}})
        with pytest.raises(RuntimeError, match="the index went away"):
            run_until_idle(site, timeout=30, daemon=daemon)
        assert failures == [0]
        # the same daemon: the run whose end failed is polled again, and ends
        run_until_idle(site, timeout=30, daemon=daemon)
        (run,) = api.list_runs(site)
        assert run["state"] == State.SUCCESS.value
        assert not daemon.runner.active
    finally:
        daemon.stop()
        site.close()
