"""A slot freed by an ended run is given to a waiting run before that run's end is
recorded (markers, results, run.json, index rows, run page): the slot does not stand
empty for the bookkeeping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowbatch import api, lifecycle
from flowbatch.daemon import Daemon
from flowbatch.executors.base import Launch
from flowbatch.executors.local import LocalExecutor
from flowbatch.runs import State
from flowbatch.site import Site
from flowbatch.store.index import StateChangeRow

from .conftest import drop, make_site, run_until_idle, write_template
from .test_robust import needs_root

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


KILLED = """
workflow:
  steps:
    - name: s
      action: {commands: ['if [ ${x} = 2 ]; then sleep 0.3; kill -9 $$$$; fi; true']}
parameters:
  - {name: x, dtype: int, defaultValue: 1}
"""


@needs_root  # ns_last_pid: the next PID the kernel gives
def test_a_run_started_under_the_pid_of_the_run_it_follows_keeps_its_books(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slots first: the run started in an ended run's slot may get that run's PID (it
    was reaped, the PID space wraps); the ended run's end, recorded after that launch,
    must not forget the new child: its exit (a SIGKILL here) is still the daemon's to
    see, with its status."""
    real_launch = LocalExecutor.launch
    seen: dict[str, int] = {}

    def launch(self: LocalExecutor, job: Launch) -> dict[str, Any]:
        with self._lock:
            ended = list(self._exits)  # an ended child whose end is not recorded yet
        if ended:
            seen["ended"] = ended[0]
            Path("/proc/sys/kernel/ns_last_pid").write_text(str(ended[0] - 1))
        handle = real_launch(self, job)
        if ended:
            seen["new"] = int(handle["pid"])
        return handle

    monkeypatch.setattr(LocalExecutor, "launch", launch)
    for attempt in range(5):  # another process may take that PID first: try again
        seen.clear()
        site = make_site(
            tmp_path / f"site{attempt}", {"executor": "local", "local": {"concurrency": 1}}
        )
        try:
            api.install(site, write_template(tmp_path / "tpl", KILLED), workflow_id="wf")
            drop(site, "a.yaml", {"workflow": "wf", "arguments": {"x": 1}})
            drop(site, "b.yaml", {"workflow": "wf", "arguments": {"x": 2}})
            run_until_idle(site, timeout=60)
            shown = [api.show_run(site, r["id"]) for r in api.list_runs(site)]
            runs = {int(r["arguments"]["x"]): r for r in shown}
        finally:
            site.close()
        if seen.get("new") == seen.get("ended"):
            break
    assert seen.get("new") == seen.get("ended"), "the PID was never reused"
    assert runs[1]["state"] == "SUCCESS"
    (said,) = runs[2]["messages"]
    assert "exited with -9" in said, said  # the daemon's child to the end, its status known
