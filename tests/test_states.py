"""The run state machine (flowServ §5.2) and the one place that changes a state."""

from __future__ import annotations

from datetime import datetime

import peewee as pw
import pytest

from flowbatch.errors import StateError
from flowbatch.runs import ALLOWED, RunRecord, State, apply, now_iso
from flowbatch.store import store as store_module
from flowbatch.store.index import ResultRow, RunRow, StateChangeRow


def record(state: State = State.PENDING) -> RunRecord:
    return RunRecord(
        id="r1",
        workflow="wf",
        version="v1",
        group="g",
        name=None,
        owner_uid=0,
        owner="root",
        request="r.yaml",
        created_at=now_iso(),
        state=state,
    )


@pytest.mark.parametrize("source", list(State))
@pytest.mark.parametrize("target", list(State))
def test_transition_table(source: State, target: State) -> None:
    run = record(source)
    if source == target:
        assert apply(run, target) is False  # same state: a no-op
        assert run.history == []
    elif source in ALLOWED[target]:
        assert apply(run, target) is True
        assert run.state == target
    else:
        with pytest.raises(StateError, match=f"{source.value} to {target.value}"):
            apply(run, target)
        assert run.state == source


def test_terminal_states_stay_terminal() -> None:
    for terminal in (State.SUCCESS, State.ERROR, State.CANCELED):
        for target in (State.PENDING, State.RUNNING):
            with pytest.raises(StateError):
                apply(record(terminal), target)


def test_timestamps_are_utc_iso_with_offset() -> None:
    run = record()
    apply(run, State.RUNNING)
    apply(run, State.ERROR, messages=["boom"])
    for stamp in (run.created_at, run.started_at, run.finished_at):
        assert stamp is not None
        parsed = datetime.fromisoformat(stamp)
        assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0
        assert stamp.endswith("+00:00")
    assert run.started_at <= run.finished_at
    assert run.messages == ["boom"]
    assert [h["state"] for h in run.history] == ["RUNNING", "ERROR"]


def test_cancel_from_pending_sets_both_times() -> None:
    run = record()
    apply(run, State.CANCELED, messages=["no longer needed"])
    assert run.started_at == run.finished_at is not None


def test_store_transition_writes_tree_and_index(site) -> None:  # type: ignore[no-untyped-def]
    run = record()
    run_dir = site.store.run_dir(run)
    run_dir.mkdir(parents=True)
    site.store.write(run)
    seen = []
    site.store.listeners.append(lambda r, prev: seen.append((r.id, prev, r.state)))
    assert site.store.transition(run, State.RUNNING, handle={"pid": 1})
    assert site.store.transition(run, State.SUCCESS, results={"score": 1.5})
    assert not site.store.transition(run, State.SUCCESS)  # no-op, not recorded twice
    on_disk = site.store.load_dir(run_dir)
    assert on_disk.state == State.SUCCESS and on_disk.results == {"score": 1.5}
    assert on_disk.handle == {"pid": 1}
    row = RunRow.get_by_id("r1")
    assert row.state == "SUCCESS" and row.results == {"score": 1.5}
    changes = [
        c.state
        for c in StateChangeRow.select()
        .where(StateChangeRow.run == "r1")
        .order_by(StateChangeRow.id)
    ]
    assert changes == ["RUNNING", "SUCCESS"]
    assert seen == [("r1", State.PENDING, State.RUNNING), ("r1", State.RUNNING, State.SUCCESS)]
    with pytest.raises(StateError):
        site.store.transition(run, State.RUNNING)


def _count_elsewhere(site, state: str) -> int:  # type: ignore[no-untyped-def]
    """Runs in ``state`` as another process's connection to the index sees them."""
    import sqlite3

    other = sqlite3.connect(site.layout.index_db)
    try:
        sql = "SELECT COUNT(*) FROM run_row WHERE state=?"
        return int(other.execute(sql, (state,)).fetchone()[0])
    finally:
        other.close()


def _written_runs(site, prefix: str, count: int) -> list[RunRecord]:  # type: ignore[no-untyped-def]
    """``count`` PENDING runs with a folder, written to the tree and the index."""
    runs = []
    for i in range(count):
        run = record()
        run.id = f"{prefix}{i}"
        site.store.run_dir(run).mkdir(parents=True)
        site.store.write(run)
        runs.append(run)
    return runs


def test_a_ticks_batch_commits_once_and_keeps_what_happened_when_it_fails(site) -> None:  # type: ignore[no-untyped-def]
    """The daemon's tick writes its state changes in one transaction: another reader sees
    none of them before the end, all of them after; a failure half-way keeps the
    changes that were made (the tree already has them) and a block in a savepoint of
    its own is rolled back alone."""

    def count(state: str) -> int:
        return _count_elsewhere(site, state)

    runs = _written_runs(site, "b", 3)
    with site.store.batch():
        site.store.transition(runs[0], State.RUNNING)
        site.store.transition(runs[1], State.RUNNING)
        assert count("RUNNING") == 0  # not committed yet: one commit per tick
    assert count("RUNNING") == 2
    with pytest.raises(RuntimeError), site.store.batch():
        site.store.transition(runs[0], State.SUCCESS)
        with pytest.raises(pw.IntegrityError), site.store.db.atomic():  # one write fails
            RunRow.update(state="RUNNING").where(RunRow.id == "b2").execute()
            site.store.db.execute_sql("INSERT INTO run_row (id) VALUES ('b0')")  # a duplicate
        raise RuntimeError("a bug later in the tick")
    assert count("SUCCESS") == 1 and count("RUNNING") == 1
    assert RunRow.get_by_id("b2").state == "PENDING"
    assert not site.store.db.in_transaction()


def test_a_batch_committed_half_way_shows_its_rows_and_goes_on(site) -> None:  # type: ignore[no-untyped-def]
    """commit_batch (a long intake): what the batch wrote so far is seen by other
    readers at once; what follows waits for the next commit; outside a batch, nothing."""

    def count(state: str) -> int:
        return _count_elsewhere(site, state)

    runs = _written_runs(site, "c", 2)
    site.store.commit_batch()  # no batch open: a no-op
    with site.store.batch():
        site.store.transition(runs[0], State.RUNNING)
        assert count("RUNNING") == 0
        site.store.commit_batch()
        assert count("RUNNING") == 1 and site.store.db.in_transaction()
        site.store.transition(runs[1], State.RUNNING)
        assert count("RUNNING") == 1
    assert count("RUNNING") == 2
    assert not site.store.db.in_transaction()


def test_index_is_sqlite_wal_by_default_and_a_url_selects_another(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    from flowbatch import api
    from flowbatch.site import Site

    from .conftest import EXAMPLES, make_site

    site = make_site(tmp_path / "a")
    api.install(site, EXAMPLES / "helloworld", workflow_id="helloworld")
    site.close()
    mode = sqlite3.connect(tmp_path / "a" / "index.db").execute("PRAGMA journal_mode").fetchone()
    assert mode[0] == "wal"
    elsewhere = tmp_path / "elsewhere.db"
    site = make_site(tmp_path / "b", {"database": f"sqlite:///{elsewhere}"})
    api.install(site, EXAMPLES / "helloworld", workflow_id="helloworld")
    site.close()
    assert elsewhere.exists() and not (tmp_path / "b" / "index.db").exists()
    rows = sqlite3.connect(elsewhere).execute("SELECT id FROM workflow_row").fetchall()
    assert rows == [("helloworld",)]
    Site(tmp_path / "b").close()


def test_a_write_failing_half_way_in_a_batch_is_written_again_whole(site, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Inside a tick's batch an index write has no savepoint: when its result rows fail
    after its run row was written, the run is listed as unindexed and the next flush
    writes all its rows again from the record."""
    run = record()
    site.store.run_dir(run).mkdir(parents=True)
    site.store.write(run)
    site.store.transition(run, State.RUNNING)
    real = store_module._insert_rows

    def failing(model, *args, **kwargs):  # type: ignore[no-untyped-def]
        if model is ResultRow:
            raise pw.OperationalError("disk I/O error")
        return real(model, *args, **kwargs)

    monkeypatch.setattr(store_module, "_insert_rows", failing)
    with site.store.batch():
        site.store.transition(run, State.SUCCESS, results={"score": 7})
    assert run.id in site.store.unindexed
    assert RunRow.get_by_id(run.id).state == "SUCCESS"  # the half that was written
    assert ResultRow.select().where(ResultRow.run == run.id).count() == 0
    monkeypatch.setattr(store_module, "_insert_rows", real)
    site.store.flush_unindexed()
    assert not site.store.unindexed
    rows = {(r.name, r.value_num) for r in ResultRow.select().where(ResultRow.run == run.id)}
    assert rows == {("score", 7.0)}
    states = [c.state for c in StateChangeRow.select().where(StateChangeRow.run == run.id)]
    assert states == [h["state"] for h in run.history] and states[-1] == "SUCCESS"


def test_no_run_ends_before_it_started(site) -> None:  # type: ignore[no-untyped-def]
    """The wall clock stepped back while a run ran (found by review: -7182 s of run time
    on the leaderboard): its end is recorded at its start, not before it."""
    run = record()
    site.store.run_dir(run).mkdir(parents=True)
    site.store.write(run)
    started = "2026-11-25T10:17:00.500000+00:00"
    assert site.store.transition(run, State.RUNNING, started_at=started)
    assert site.store.transition(run, State.SUCCESS, finished_at="2026-11-25T08:18:00+00:00")
    assert run.finished_at == started
    assert str(RunRow.get_by_id("r1").finished_at).startswith("2026-11-25")


def test_a_launch_clock_of_an_unknown_boot_is_not_used(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A boot id that could not be read ("") matches no other boot's (found by the
    re-review): the run's time is then taken from its start by the wall clock."""
    import time

    from flowbatch import lifecycle

    clock = lifecycle.RunClock()
    started = now_iso()
    monkeypatch.setattr(lifecycle, "_this_boot", lambda: None)
    assert lifecycle.launch_clock() is None
    now = time.clock_gettime(time.CLOCK_BOOTTIME)
    # a launch "an hour ago" by a boot clock of an unknown boot: not believed
    assert clock.ran("r", started, {"launch_clock": ["", now - 3600]}) < 60
    monkeypatch.setattr(lifecycle, "_this_boot", lambda: "b1")
    assert clock.ran("s", started, {"launch_clock": ["b1", now - 3600]}) >= 3600
