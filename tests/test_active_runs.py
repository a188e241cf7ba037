"""flowbatch.lifecycle.ActiveRuns: the daemon's active runs, filed by state."""

from __future__ import annotations

from flowbatch.lifecycle import ActiveRuns
from flowbatch.runs import RunRecord, State, apply


def _run(run_id: str, created: str) -> RunRecord:
    return RunRecord(run_id, "wf", "v1", "g", None, 0, "root", "r.yaml", created)


def _two() -> tuple[ActiveRuns, RunRecord, RunRecord]:
    active = ActiveRuns()
    first, second = _run("a", "2026-01-01T00:00:01+00:00"), _run("b", "2026-01-01T00:00:02+00:00")
    active["a"], active["b"] = first, second
    return active, first, second


def _move(active: ActiveRuns, run: RunRecord, state: State) -> None:
    apply(run, state)
    active.refile(run)


def test_pending_runs_come_oldest_first_and_leave_when_they_start() -> None:
    active = ActiveRuns()
    runs = {i: _run(f"r{i}", f"2026-01-01T00:00:0{i}+00:00") for i in range(5)}
    for i in (0, 1, 3, 2, 4):  # one arrives out of order
        active[runs[i].id] = runs[i]
    assert [r.id for r in active.pending()] == ["r0", "r1", "r2", "r3", "r4"]
    _move(active, runs[1], State.RUNNING)
    assert [r.id for r in active.pending()] == ["r0", "r2", "r3", "r4"]
    assert active.launched() == [runs[1]]
    assert len(active) == 5 and "r1" in active


def test_a_retried_run_takes_its_old_place_among_the_pending() -> None:
    active, first, _ = _two()
    _move(active, first, State.RUNNING)
    assert [r.id for r in active.pending()] == ["b"]
    _move(active, first, State.PENDING)  # a retry: back to PENDING, older than "b"
    assert [r.id for r in active.pending()] == ["a", "b"]
    assert active.launched() == []


def test_a_run_removed_or_ended_is_in_no_list() -> None:
    active, _, other = _two()
    _move(active, other, State.RUNNING)
    del active["a"]
    assert active.pending() == [] and "a" not in active
    assert active.pop("b") is other
    assert active.launched() == [] and not active and active == {}
    active.refile(other)  # a run not held here is not filed by refile
    assert active.launched() == []
    assert active.setdefault("b", other) is other and active.launched() == [other]


def test_waiting_counts_the_pending_runs_of_each_executor() -> None:
    active = ActiveRuns()
    runs = [_run(f"r{i}", f"2026-01-01T00:00:0{i}+00:00") for i in range(4)]
    runs[3].executor = "slurm"
    for run in runs:
        active[run.id] = run
    assert active.waiting() == {"local": 3, "slurm": 1}
    _move(active, runs[0], State.RUNNING)
    del active["r3"]
    assert active.waiting() == {"local": 2}
    waiting = active.waiting()
    waiting["local"] -= 2  # a copy: dispatch counts it down
    assert active.waiting() == {"local": 2}
