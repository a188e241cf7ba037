"""End to end on the local executor: real daemon ticks, real bash, real processes."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from flowbatch import api
from flowbatch.daemon import Daemon
from flowbatch.site import Site

from .conftest import daemon_modules, drop, make_site, only_run, run_until_idle, write_template

STEPS_TEMPLATE = """
workflow:
  steps:
    - name: first
      action:
        commands:
          - echo "one out"; echo "one err" >&2
          - echo "$$FLOWBATCH_TEST_VAR" > inherited.txt
          - command -v bash > path.txt
          - env > env.txt
    - name: second
      action:
        commands:
          - echo "two says $[[word]]"
          - echo "bad things" >&2; exit $[[code]]
          - touch never.txt
parameters:
  - {name: word, dtype: string, defaultValue: hi}
  - {name: code, dtype: int, defaultValue: 0}
"""

SLOW_TEMPLATE = """
workflow:
  steps:
    - name: main
      action:
        commands:
          - sleep 1
"""


def launched_then_stopped(site: Site) -> Any:
    """The one queued request's run, launched by a daemon that then stops (its run goes
    on, as when a daemon is killed or a cron tick ends)."""
    d = Daemon(site)
    d.start()
    run = first_launched(d)
    d.stop()
    return run


def first_launched(d: Daemon, timeout: float = 30) -> Any:
    """Tick ``d`` until it has launched its one run; that run."""
    deadline = time.monotonic() + timeout
    while not d.runner.launched():
        assert time.monotonic() < deadline
        d.tick()
    [run] = d.runner.launched()
    return run


def wait_marker(site: Site, run: Any, word: bytes, timeout: float = 30) -> None:
    """Until the run's script has written the marker ``word`` (``started``, ``exit``)."""
    markers = site.store.run_dir(run) / "status" / "markers"
    deadline = time.monotonic() + timeout
    while not markers.exists() or word not in markers.read_bytes():
        assert time.monotonic() < deadline, f"no {word!r} marker"
        time.sleep(0.05)


def install(site, folder: Path, text: str, wf: str = "wf", files=None):  # type: ignore[no-untyped-def]
    write_template(folder, text, files)
    return api.install(site, folder, workflow_id=wf)


def test_helloworld_end_to_end(hello_site) -> None:  # type: ignore[no-untyped-def]
    drop(
        hello_site,
        "a.yaml",
        {"workflow": "helloworld", "group": "alice", "arguments": {"names": "n.txt"}},
        files={"n.txt": "Al\nBea\n"},
    )
    drop(
        hello_site,
        "b.yaml",
        {"workflow": "helloworld", "group": "bob", "arguments": {"greeting": "Good morning"}},
    )
    run_until_idle(hello_site)
    runs = {r["group"]: api.show_run(hello_site, r["id"]) for r in api.list_runs(hello_site)}
    assert {r["state"] for r in runs.values()} == {"SUCCESS"}
    alice = runs["alice"]
    greetings = Path(alice["run_dir"], "results/greetings.txt").read_text()
    assert greetings == "Hello Al!\nHello Bea!\n"
    assert alice["results"] == {"avg_count": 9.5, "max_len": 10, "max_line": "Hello Bea!"}
    assert [f["key"] for f in alice["files"]] == ["greetings", "analytics"]
    board = api.ranking(hello_site, "helloworld")
    assert [e["group"] for e in board["ranking"]] == ["bob", "alice"]
    leaderboard = json.loads(
        (hello_site.layout.workflow_results("helloworld") / "leaderboard.json").read_text()
    )
    assert [e["group"] for e in leaderboard["ranking"]] == ["bob", "alice"]
    assert (hello_site.layout.workflow_results("helloworld") / "leaderboard.html").exists()


def test_steps_logs_markers_and_first_failure(site, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FLOWBATCH_TEST_VAR", "from-the-daemon-env")
    install(site, tmp_path / "t", STEPS_TEMPLATE)
    drop(site, "ok.yaml", {"workflow": "wf", "name": "ok"})
    drop(site, "bad.yaml", {"workflow": "wf", "name": "bad", "arguments": {"code": 3}})
    run_until_idle(site)
    runs = {r["name"]: api.show_run(site, r["id"]) for r in api.list_runs(site)}
    ok, bad = runs["ok"], runs["bad"]
    assert ok["state"] == "SUCCESS"
    ok_dir = Path(ok["run_dir"])
    # logs are kept for successful runs too (flowServ GAP)
    assert (ok_dir / ok["steps"][0]["stdout"]).read_text() == "one out\n"
    assert (ok_dir / ok["steps"][0]["stderr"]).read_text() == "one err\n"
    assert (ok_dir / "inherited.txt").read_text() == "from-the-daemon-env\n"  # env inherited
    assert (ok_dir / "path.txt").read_text().strip().endswith("bash")  # PATH inherited
    assert [s["exit_code"] for s in ok["steps"]] == [0, 0]
    # the script keeps its own output in logs/script.log; the variable that asks it to
    # do so is not passed on to the commands
    assert (ok_dir / "logs" / "script.log").is_file()
    assert "FLOWBATCH_SCRIPT_LOG" not in (ok_dir / "env.txt").read_text()
    assert "FLOWBATCH_RUN_ID=" in (ok_dir / "env.txt").read_text()
    assert all(s["duration"] is not None and s["duration"] >= 0 for s in ok["steps"])
    assert bad["state"] == "ERROR"
    assert [s["exit_code"] for s in bad["steps"]] == [0, 3]
    assert not (Path(bad["run_dir"]) / "never.txt").exists()  # the first failure stops the run
    assert "step 2 (second) failed with exit code 3" in bad["messages"][0]
    assert "bad things" in bad["messages"][1]


def test_concurrency_limit(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", {"local": {"concurrency": 2}})
    install(
        site,
        tmp_path / "t",
        """
workflow:
  steps:
    - name: s
      action:
        commands:
          - date +%s.%N > begin; sleep 0.4; date +%s.%N > end
""",
    )
    for i in range(5):
        drop(site, f"r{i}.yaml", {"workflow": "wf"})
    d = Daemon(site)
    d.start()
    peak = 0
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            d.wakeup.clear()
            d.tick()
            peak = max(peak, len(d.runner.launched("local")))
            if d.idle():
                break
            d.wakeup.wait(0.05)
    finally:
        d.stop()
    assert peak == 2
    spans = []
    for r in api.list_runs(site):
        run_dir = Path(api.show_run(site, r["id"])["run_dir"])
        spans.append((float((run_dir / "begin").read_text()), float((run_dir / "end").read_text())))
        assert r["state"] == "SUCCESS"
    for t, _ in spans:  # never more than two at once, from the runs' own clocks
        assert sum(1 for b, e in spans if b <= t < e) <= 2


def _descendants_of(run_dir: Path) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter(["cwd"]):
        try:
            if proc.info["cwd"] == str(run_dir):
                out.append(proc)
        except psutil.Error:
            pass
    return out


def test_cancel_ends_the_whole_process_tree(site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    install(
        site,
        tmp_path / "t",
        """
workflow:
  steps:
    - name: s
      action:
        commands:
          - sleep 300 & echo $$! > child.pid; setsid sleep 301 & echo $$! > detached.pid; sleep 302
""",
    )
    drop(site, "r.yaml", {"workflow": "wf"})
    d = Daemon(site)
    d.start()
    try:
        d.tick()
        run = next(iter(d.runner.active.values()))
        run_dir = site.store.run_dir(run)
        deadline = time.monotonic() + 10
        written = run_dir / "detached.pid"  # made by the redirection, then its line
        while not (written.exists() and written.read_text().endswith("\n")):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pids = [int((run_dir / n).read_text()) for n in ("child.pid", "detached.pid")]
        assert all(psutil.pid_exists(p) for p in pids)
        from flowbatch.daemon import cancel_run

        cancel_run(site, d.runner, run.id, os.getuid(), "enough")
    finally:
        d.stop()
    shown = api.show_run(site, run.id)
    assert shown["state"] == "CANCELED" and shown["messages"] == ["enough"]
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


TIME_LIMITED = """
timeLimit: 1
workflow:
  steps:
    - name: s
      action:
        commands: [sleep 60]
"""


def test_time_limit(site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    install(
        site,
        tmp_path / "t",
        TIME_LIMITED,
    )
    drop(site, "r.yaml", {"workflow": "wf"})
    started = time.monotonic()
    run_until_idle(site, timeout=30)
    run = only_run(site)
    assert run["state"] == "ERROR" and run["messages"] == ["time limit exceeded"]
    assert time.monotonic() - started < 20


#: a step of the wall clock, the run's time limit and command, and the state it must end in
STEPS = pytest.mark.parametrize(
    ("step", "limit", "command", "state"),
    [(3600, 30, "sleep 1.5", "SUCCESS"), (-3600, 1, "sleep 60", "ERROR")],
    ids=["forward-keeps-a-young-run", "back-still-ends-an-old-one"],
)


def time_limited(site: Site, tmp_path: Path, limit: int, command: str) -> None:
    """``wf``: one step running ``command`` within ``limit`` seconds; one run of it queued."""
    install(
        site,
        tmp_path / "t",
        f"timeLimit: {limit}\nworkflow:\n  steps:\n    - name: s\n      action:\n"
        f"        commands: [{command}]\n",
    )
    drop(site, "r.yaml", {"workflow": "wf"})


def stepped(step: int) -> Any:
    """lifecycle's ``datetime``, its clock stepped by ``step`` seconds."""
    from flowbatch import lifecycle

    real = lifecycle.datetime

    class Stepped(real):  # type: ignore[misc, valid-type]
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return real.now(tz) + timedelta(seconds=step)

    return Stepped


@STEPS
def test_a_step_of_the_wall_clock_moves_no_time_limit(
    site: Site,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    step: int,
    limit: int,
    command: str,
    state: str,
) -> None:
    """An NTP step (or an admin's `date`) while a run runs: a step forward killed a young
    run at once, a step back left an old one unlimited for the step's length (found by
    review). Time limits count by the monotonic clock once the daemon has seen the run."""
    from flowbatch import lifecycle

    time_limited(site, tmp_path, limit, command)
    Stepped = stepped(step)
    ticks = []

    def step_once_seen(daemon: Daemon) -> None:
        ticks.append(1)
        if len(ticks) == 3:  # launched in the first tick, seen running in the next
            monkeypatch.setattr(lifecycle, "datetime", Stepped)

    started = time.monotonic()
    run_until_idle(site, timeout=20, each_tick=step_once_seen)
    run = only_run(site)
    assert run["state"] == state, run["messages"]
    if state == "ERROR":
        assert run["messages"] == ["time limit exceeded"]
        assert time.monotonic() - started < 15


@STEPS
def test_a_step_of_the_wall_clock_between_cron_ticks_moves_no_time_limit(
    site: Site,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    step: int,
    limit: int,
    command: str,
    state: str,
) -> None:
    """The same step between two ``--once`` ticks (or across a restart): each tick is a
    new process that had not seen the run, and measured it from its ``started_at`` by
    the wall clock (found by review: a forward step killed a 3 s old run, a step back let
    one run past its limit and be ranked). The boot clock at its launch, in its handle,
    measures it in any process since the host's boot."""
    from flowbatch import lifecycle

    time_limited(site, tmp_path, limit, command)
    first = Daemon(site)
    first.start()
    try:
        first_launched(first)  # the first tick launches it
    finally:
        first.stop()
    Stepped = stepped(step)
    monkeypatch.setattr(lifecycle, "datetime", Stepped)
    started = time.monotonic()
    while only_run(site)["state"] == "RUNNING":  # cron ticks: a daemon each
        assert time.monotonic() - started < 20, "never ended"
        tick = Daemon(site)
        tick.start()
        try:
            tick.tick()
        finally:
            tick.stop()
        time.sleep(0.3)
    run = only_run(site)
    assert run["state"] == state, run["messages"]
    if state == "ERROR":
        assert run["messages"] == ["time limit exceeded"]
    assert run["finished_at"] >= run["started_at"]


def test_a_failing_look_at_an_executors_runs_is_logged_once_and_stops_no_tick(
    site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug met while looking at one executor's runs (found by review: a remote file
    name that was not UTF-8, for SSH) failed every tick: the rest of the tick (requests
    taken in, other executors' runs ended, reports) never came. The fault is injected:
    the SSH tests stage the real one."""
    install(site, tmp_path / "t", SLOW_TEMPLATE)
    drop(site, "a.yaml", {"workflow": "wf"})
    d = Daemon(site)
    d.start()
    executor = d.runner.executors["local"]
    real = executor.poll
    failures = []

    def poll(runs: Any) -> Any:
        if len(failures) < 5:
            failures.append(1)
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
        return real(runs)

    executor.poll = poll  # type: ignore[method-assign]
    caplog.set_level(logging.ERROR, logger="flowbatch.runner")
    try:
        d.tick()  # launched
        drop(site, "b.yaml", {"workflow": "wf"})
        run_until_idle(site, daemon=d, timeout=30)
    finally:
        d.stop()
    assert len(failures) == 5
    assert sorted(r["state"] for r in api.list_runs(site)) == ["SUCCESS", "SUCCESS"]
    said = [r for r in caplog.records if "looking at the runs of executor local" in r.message]
    assert len(said) == 1 and said[0].exc_info is not None  # once, with its traceback


STUBBORN = """
workflow:
  steps:
    - name: s
      action:
        commands: ["trap '' TERM; echo $$$$ > stubborn.pid; sleep 60"]
"""


@pytest.mark.parametrize("how", ["cancel", "time limit"])
def test_a_run_that_ignores_sigterm_holds_up_no_other_run(
    site: Site, tmp_path: Path, how: str
) -> None:
    """A serving daemon ends a run (a cancel, its time limit) without waiting out the
    grace between SIGTERM and SIGKILL on its own thread: it waited 3 s a run, the whole
    daemon with it (found by review: 8 cancels, 24 s without a run started). A run
    dropped while the stubborn one is being ended runs and ends first; the stubborn one
    is recorded once SIGKILL has ended it, its cancel's claim settled only then."""
    install(site, tmp_path / "t", ("timeLimit: 1\n" if how == "time limit" else "") + STUBBORN)
    install(site, tmp_path / "q", SLOW_TEMPLATE.replace("sleep 1", "echo quick"), wf="quick")
    drop(site, "s.yaml", {"workflow": "wf"})
    d = Daemon(site)
    d.start()
    d.runner.defer_kills = True  # as serve() has it
    dropped: list[str] = []
    try:
        run = first_launched(d)
        deadline = time.monotonic() + 30
        wait_file = site.store.run_dir(run) / "stubborn.pid"
        deadline = time.monotonic() + 10
        while not (wait_file.exists() and wait_file.read_text().endswith("\n")):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        pid = int(wait_file.read_text())
        if how == "cancel":
            api.request_cancel(site, run.id, "enough")

        def drop_while_ending(daemon: Daemon) -> None:
            if run.id in daemon.runner.ending and not dropped:
                dropped.append("t")
                drop(site, "t.yaml", {"workflow": "quick"})

        run_until_idle(site, daemon=d, timeout=30, each_tick=drop_while_ending)
    finally:
        d.stop()
    assert dropped, "the stubborn run was never being ended while the daemon went on"
    stubborn = api.show_run(site, run.id)
    want = ("CANCELED", ["enough"]) if how == "cancel" else ("ERROR", ["time limit exceeded"])
    assert (stubborn["state"], stubborn["messages"]) == want
    (quick,) = [r for r in api.list_runs(site) if r["workflow"] == "quick"]
    assert quick["state"] == "SUCCESS" and quick["finished_at"] < stubborn["finished_at"]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert list(site.layout.claimed.iterdir()) == []  # the cancel's claim, once it ended


DETACHED = """
workflow:
  steps:
    - name: s
      action:
        commands:
          - setsid sh -c 'trap "" TERM; echo $$$$ > detached.pid; exec sleep 120' & sleep 120
"""


def test_a_descendant_that_left_the_group_is_ended_before_the_run_is_recorded(
    site: Site, tmp_path: Path
) -> None:
    """A serving daemon's cancel: the script ended on SIGTERM, so the run was recorded
    at once, while a descendant that left its group (setsid) and ignores SIGTERM lived
    on (found by review). Recorded once what SIGTERM was sent to is gone: SIGKILLed at
    the end of the grace."""
    install(site, tmp_path / "t", DETACHED)
    drop(site, "r.yaml", {"workflow": "wf"})
    d = Daemon(site)
    d.start()
    d.runner.defer_kills = True
    pid = 0
    try:
        run = first_launched(d)
        deadline = time.monotonic() + 30
        written = site.store.run_dir(run) / "detached.pid"
        while not (written.exists() and written.read_text().endswith("\n")):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        pid = int(written.read_text())
        time.sleep(0.2)  # its trap is set
        api.request_cancel(site, run.id, "enough")
        run_until_idle(site, daemon=d, timeout=30)
        gone = not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    finally:
        d.stop()
        with contextlib.suppress(OSError):
            os.kill(pid, 9)
    assert gone, "the detached descendant outlived the run's recorded end"
    assert api.show_run(site, run.id)["state"] == "CANCELED"


def test_a_run_whose_process_outlives_its_sigkill_is_recorded_all_the_same(
    site: Site, tmp_path: Path
) -> None:
    """Never active for ever: a process SIGKILL cannot end (uninterruptible sleep on a
    hung file system) leaves the run recorded one grace after its SIGKILL. That process
    cannot be staged here: the executor's word that something is left is injected."""
    install(site, tmp_path / "t", STUBBORN)
    drop(site, "r.yaml", {"workflow": "wf"})
    d = Daemon(site)
    d.start()
    d.runner.defer_kills = True
    executor = d.runner.executors["local"]
    executor.left = lambda token: True  # type: ignore[attr-defined]
    try:
        run = first_launched(d)
        wait_marker(site, run, b"started")
        api.request_cancel(site, run.id, "enough")
        run_until_idle(site, daemon=d, timeout=30)
    finally:
        d.stop()
    assert api.show_run(site, run.id)["state"] == "CANCELED"


def test_a_stopping_daemon_starts_no_run(tmp_path: Path) -> None:
    """The stop records the runs being ended; it looked at every run for it, and started
    a waiting run in the slot of one that had ended meanwhile (found by review)."""
    site = make_site(tmp_path / "site", {"local": {"concurrency": 2}})
    install(site, tmp_path / "t", STUBBORN)
    install(site, tmp_path / "q", SLOW_TEMPLATE.replace("sleep 1", "sleep 0.3"), wf="quick")
    drop(site, "a.yaml", {"workflow": "wf"})
    d = Daemon(site)
    d.start()
    d.runner.defer_kills = True
    try:
        stubborn = first_launched(d)
        deadline = time.monotonic() + 30
        wait_marker(site, stubborn, b"started")
        drop(site, "b.yaml", {"workflow": "quick"})
        drop(site, "c.yaml", {"workflow": "quick"})
        while len(d.runner.active) < 3 or len(d.runner.launched()) < 2:
            assert time.monotonic() < deadline
            d.tick()
        time.sleep(0.2)
        api.request_cancel(site, stubborn.id, "enough")
        while stubborn.id not in d.runner.ending:
            assert time.monotonic() < deadline
            d.tick()
        time.sleep(1.0)  # the quick run ends; no tick sees it
    finally:
        d.stop()
    states = sorted(r["state"] for r in api.list_runs(site) if r["workflow"] == "quick")
    assert states[0] == "PENDING", states  # the waiting run still waits
    assert api.show_run(site, stubborn.id)["state"] == "CANCELED"


def test_a_daemon_stopping_while_it_ends_a_run_records_that_end(site: Site, tmp_path: Path) -> None:
    """A stop in the grace of a cancel: what is left of the run is SIGKILLed and the run
    recorded CANCELED by this daemon, its cancel's claim settled; not left to the next
    daemon, which would take the SIGKILL for the run's own end."""
    install(site, tmp_path / "t", STUBBORN)
    drop(site, "s.yaml", {"workflow": "wf"})
    d = Daemon(site)
    d.start()
    d.runner.defer_kills = True
    try:
        run = first_launched(d)
        deadline = time.monotonic() + 30
        wait_marker(site, run, b"started")
        api.request_cancel(site, run.id, "enough")
        while run.id not in d.runner.ending:
            assert time.monotonic() < deadline
            d.tick()
    finally:
        d.stop()
    shown = api.show_run(site, run.id)
    assert (shown["state"], shown["messages"]) == ("CANCELED", ["enough"])
    assert list(site.layout.claimed.iterdir()) == []


def _long_run_and_a_burst(site: Site, tmp_path: Path, d: Daemon) -> str:
    """A long run RUNNING under ``d``, and 20 quick requests in the queue."""
    install(site, tmp_path / "long", SLOW_TEMPLATE.replace("sleep 1", "sleep 60"), wf="long")
    install(site, tmp_path / "q", SLOW_TEMPLATE.replace("sleep 1", "echo quick"))
    drop(site, "long.yaml", {"workflow": "long"})
    run = first_launched(d)
    for i in range(20):
        drop(site, f"b{i:02d}.yaml", {"workflow": "wf"})
    return str(run.id)


@pytest.mark.parametrize(
    "when", ["queued with the burst", "dropped during the burst", "dropped during a cron tick"]
)
def test_a_cancel_waits_for_no_burst(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """A cancel queued with a burst was read first but applied after the whole burst was
    made (every slot idle meanwhile); one dropped during a burst waited for its end (found
    by review: 6.4 s and 20 s). Each request of the intake is slowed to stand in for a
    big burst."""
    from flowbatch import daemon as daemon_mod
    from flowbatch import queue

    d = Daemon(site)
    d.start()
    try:
        long_id = _long_run_and_a_burst(site, tmp_path, d)
        if when == "queued with the burst":
            api.request_cancel(site, long_id, "user cancel")
        else:  # a serving daemon's (a --once tick has no next tick: it takes all in)
            monkeypatch.setattr(daemon_mod, "BATCH_COMMIT_EVERY", 0.01)
            d.runner.defer_kills = when == "dropped during the burst"
            (site.layout.queue / "cancel-notes.txt").write_text("no request\n")
            assert not d.intake.cancel_waiting()  # only a request's name counts
        real = queue.Intake.process
        seen: list[tuple[str, str]] = []

        def slow(self: Any, claimed: Any, result: Any) -> None:
            if claimed.name == "b00.yaml" and when.startswith("dropped"):
                api.request_cancel(site, long_id, "user cancel")
            time.sleep(0.05)
            real(self, claimed, result)
            seen.append((claimed.name, site.store.load(long_id).state.value))

        monkeypatch.setattr(queue.Intake, "process", slow)
        d.tick()
        burst = [state for name, state in seen if name.startswith("b")]
        if when == "queued with the burst":
            assert burst[0] == "CANCELED"  # applied before the first run of the burst
        elif when == "dropped during a cron tick":
            assert len(burst) == 20  # no next tick to take the rest: all taken in
        else:
            assert len(burst) < 20  # the intake stopped for the cancel
            deadline = time.monotonic() + 10
            while site.store.load(long_id).state.value != "CANCELED":
                assert time.monotonic() < deadline
                d.tick()
        run_until_idle(site, daemon=d, timeout=60)
    finally:
        d.stop()
    states = [r["state"] for r in api.list_runs(site) if r["workflow"] == "wf"]
    assert states == ["SUCCESS"] * 20  # the whole burst, once each


def test_a_reload_waits_for_no_burst(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGHUP during a burst was applied after the whole burst was taken in (found by
    review: 38 s with the old concurrency): the intake stops for it, the rest stays
    claimed for the next tick, which comes after the reload."""
    from flowbatch import queue

    d = Daemon(site)
    d.start()
    try:
        _long_run_and_a_burst(site, tmp_path, d)
        real = queue.Intake.process
        taken: list[str] = []

        def hup_at_first(self: Any, claimed: Any, result: Any) -> None:
            if claimed.name == "b00.yaml":
                d.reload_requested = True  # what the SIGHUP handler sets
            real(self, claimed, result)
            taken.append(claimed.name)

        monkeypatch.setattr(queue.Intake, "process", hup_at_first)
        d.tick()
        assert taken == ["b00.yaml"]
    finally:
        d.stop()


@pytest.mark.parametrize("defer", [False, True], ids=["waiting", "serving"])
def test_a_time_limit_holds_while_looking_at_the_runs_keeps_failing(
    site: Site, tmp_path: Path, defer: bool
) -> None:
    """An executor whose look at its runs keeps failing (a bug) still has its runs ended
    at their time limits (found by review: never, while the look failed; then, in a
    serving daemon, sent SIGTERM and never recorded). The fault is injected."""
    install(site, tmp_path / "t", TIME_LIMITED)
    drop(site, "r.yaml", {"workflow": "wf"})
    d = Daemon(site)
    d.start()
    d.runner.defer_kills = defer
    executor = d.runner.executors["local"]

    def broken(runs: Any) -> Any:
        raise RuntimeError("a bug in the look")

    executor.poll = broken  # type: ignore[method-assign]
    try:
        run_until_idle(site, daemon=d, timeout=30)
    finally:
        d.stop()
    shown = only_run(site)
    assert shown["state"] == "ERROR" and shown["messages"] == ["time limit exceeded"]


def test_a_time_limit_kill_the_daemon_died_in_still_says_so(site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The daemon sent the time limit's SIGTERM and was killed in the grace that follows;
    the run ended on it with no daemon there. The next daemon's end of it says why, not
    a bare SIGTERM (found by review)."""
    install(
        site,
        tmp_path / "t",
        TIME_LIMITED,
    )
    drop(site, "r.yaml", {"workflow": "wf"})
    # its runs go on (a daemon killed: nothing recorded of the kill to come)
    run = launched_then_stopped(site)
    time.sleep(1.3)
    os.killpg(int(run.handle["pid"]), 15)  # what the killed daemon's kill did, past the limit
    wait_marker(site, run, b"exit", timeout=10)
    run_until_idle(site, timeout=30)
    shown = only_run(site)
    assert shown["state"] == "ERROR" and shown["messages"] == ["time limit exceeded"], shown


def test_a_signal_reads_as_one(site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    install(
        site,
        tmp_path / "t",
        """
workflow:
  steps:
    - name: s
      action:
        commands: ["sh -c 'kill -TERM $$$$'"]
""",
    )
    drop(site, "r.yaml", {"workflow": "wf"})
    run_until_idle(site, timeout=30)
    shown = only_run(site)
    assert shown["messages"][0] == "step 1 (s) failed with exit code 143: killed by SIGTERM"


def test_result_problems_make_an_error_not_a_silent_success(site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    install(
        site,
        tmp_path / "t",
        """
workflow:
  steps:
    - name: s
      action:
        commands: ["printf '$[[content]]' > r.json"]
parameters:
  - {name: content, dtype: select, values: [{name: bad, value: bad}, {name: good, value: good}]}
results:
  file: r.json
  schema:
    - {name: score, label: Score, dtype: float}
""",
    )
    drop(site, "r.yaml", {"workflow": "wf", "arguments": {"content": "bad"}})
    run_until_idle(site)
    run = only_run(site)
    assert run["state"] == "ERROR"
    assert "r.json" in run["messages"][0]


def test_missing_result_file_is_an_error(site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    install(
        site,
        tmp_path / "t",
        """
workflow:
  steps:
    - name: s
      action: {commands: ["true"]}
results:
  file: results/r.json
  schema: [{name: score, label: Score, dtype: float}]
""",
    )
    drop(site, "r.yaml", {"workflow": "wf"})
    run_until_idle(site)
    run = only_run(site)
    assert run["state"] == "ERROR" and "results/r.json" in run["messages"][0]
    assert api.ranking(site, "wf")["ranking"] == []


@pytest.mark.parametrize(
    "value",
    [
        "$(touch PWNED)",
        "`touch PWNED`",
        "; touch PWNED",
        "a\"b'c",
        "{{ ''.__class__ }}",
        "x && touch PWNED",
        "*",
        "$HOME",
        "line1\nline2",
    ],
)
def test_hostile_string_values_reach_the_program_literally(
    site, tmp_path: Path, value: str
) -> None:  # type: ignore[no-untyped-def]
    install(
        site,
        tmp_path / "t",
        """
workflow:
  parameters:
    ctx: "prefix-$[[s]]"
  steps:
    - name: s
      action:
        commands:
          - ${python} -c "import json,sys; json.dump(sys.argv[1:], open('args.json','w'))" $[[s]] "${s}" "${ctx}" ${ctx}
parameters:
  - {name: s, dtype: string}
""",
    )
    drop(site, "r.yaml", {"workflow": "wf", "arguments": {"s": value}})
    run_until_idle(site)
    run = only_run(site)
    assert run["state"] == "SUCCESS", run["messages"]
    run_dir = Path(run["run_dir"])
    args = json.loads((run_dir / "args.json").read_text())
    assert args == [value, value, f"prefix-{value}", f"prefix-{value}"]
    assert not list(run_dir.rglob("PWNED")) and not list(site.root.rglob("PWNED"))


def test_the_watcher_starts_before_the_first_sleep_and_misses_nothing(hello_site) -> None:  # type: ignore[no-untyped-def]
    """serve() starts inotify when it would first sleep, not at its start (a busy daemon
    lists the queue at every tick). A request dropped just before the watch began is
    taken in at once, not after the rescan interval: the loop ticks again first."""
    d = Daemon(hello_site)
    hello_site.config.polling.interval = 30.0  # the fallback rescan: far away
    hello_site.config.polling.settle = 0.0
    watched_at: list[int] = []
    real_watch = d.watch

    def watch() -> None:
        watched_at.append(d.ticks)
        drop(hello_site, "late.yaml", {"workflow": "helloworld"})  # no event for it
        real_watch()

    d.watch = watch  # type: ignore[method-assign]
    d.start()
    t = threading.Thread(target=d.serve, daemon=True)
    t.start()
    began = time.monotonic()
    try:
        while time.monotonic() - began < 10:
            runs = api.list_runs(hello_site)
            if runs and runs[0]["state"] == "SUCCESS":
                break
            time.sleep(0.05)
        # nothing else wakes the loop (no run was active): only the tick after the watch
        assert [r["state"] for r in api.list_runs(hello_site)] == ["SUCCESS"]
        assert time.monotonic() - began < 10  # not the 30 s rescan
        assert watched_at and watched_at[0] >= 1  # after the first tick, once
        assert len(watched_at) == 1 and d._observer is not None
    finally:
        d.stopping = True
        d.wakeup.set()
        t.join(10)
        d.stop()


def _serve_in_thread(d: Daemon) -> threading.Thread:
    d.start()
    t = threading.Thread(target=d.serve, daemon=True)
    t.start()
    return t


def _end_serving(d: Daemon, t: threading.Thread) -> None:
    d.stopping = True
    d.wakeup.set()
    t.join(10)
    d.stop()


def _wait_until(condition: Any, limit: float = 10.0) -> None:
    began = time.monotonic()
    while not condition() and time.monotonic() - began < limit:
        time.sleep(0.02)
    assert condition()


def _wait_for_success(site: Any, count: int, limit: float) -> float:
    began = time.monotonic()
    while time.monotonic() - began < limit:
        runs = api.list_runs(site)
        if len(runs) == count and all(r["state"] == "SUCCESS" for r in runs):
            break
        time.sleep(0.05)
    assert [r["state"] for r in api.list_runs(site)] == ["SUCCESS"] * count
    return time.monotonic() - began


def test_a_burst_is_taken_in_unwatched_and_the_watch_resumes_before_sleeping(
    hello_site: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watching daemon that takes in a burst stops the watcher after UNWATCH_AFTER
    requests (its own claims would be the watcher's events) and starts it again before it
    sleeps: a request dropped later wakes it at once."""
    import flowbatch.daemon as daemon_module

    monkeypatch.setattr(daemon_module, "UNWATCH_AFTER", 2)
    d = Daemon(hello_site)
    hello_site.config.polling.interval = 30.0
    calls: list[tuple[str, int]] = []
    real_watch, real_unwatch = d.watch, d.unwatch

    def watch() -> None:
        calls.append(("watch", d._taken))
        real_watch()

    def unwatch() -> None:
        calls.append(("unwatch", d._taken))
        real_unwatch()

    d.watch = watch  # type: ignore[method-assign]
    d.unwatch = unwatch  # type: ignore[method-assign]
    t = _serve_in_thread(d)
    try:
        _wait_until(lambda: d._observer is not None)  # asleep, watching
        assert calls == [("watch", 0)]
        for i in range(4):
            drop(hello_site, f"b{i}.yaml", {"workflow": "helloworld"})
        _wait_for_success(hello_site, 4, 20)
        _wait_until(lambda: d._observer is not None)
        assert ("unwatch", 2) in calls  # after the second request of the burst
        assert calls[-1][0] == "watch" and d._observer is not None  # watching again
        began = time.monotonic()
        drop(hello_site, "after.yaml", {"workflow": "helloworld"})
        _wait_for_success(hello_site, 5, 20)
        assert time.monotonic() - began < 10  # woken by inotify, not the 30 s rescan
    finally:
        _end_serving(d, t)


def test_a_daemon_run_until_idle_never_watches_and_still_takes_in_a_late_request(
    hello_site: Any, tmp_path: Path
) -> None:
    """``--until-idle`` starts no queue watcher (it exits once the queue is empty; every
    tick lists the queue): a request dropped while it waits for a run is taken in when
    that run's end wakes it, not at the far rescan interval, and it exits after both."""
    install(hello_site, tmp_path / "slow", SLOW_TEMPLATE, wf="slow")
    d = Daemon(hello_site)
    hello_site.config.polling.interval = 30.0
    watched: list[int] = []
    real_watch = d.watch

    def watch() -> None:
        watched.append(d.ticks)
        real_watch()

    d.watch = watch  # type: ignore[method-assign]
    drop(hello_site, "a.yaml", {"workflow": "slow"})
    d.start()
    t = threading.Thread(target=d.serve, kwargs={"until_idle": True}, daemon=True)
    began = time.monotonic()
    t.start()
    try:
        _wait_until(lambda: [r["state"] for r in api.list_runs(hello_site)] == ["RUNNING"])
        drop(hello_site, "b.yaml", {"workflow": "slow"})  # the daemon waits for a's end
        t.join(20)
        assert not t.is_alive()  # idle: returned
        assert [r["state"] for r in api.list_runs(hello_site)] == ["SUCCESS"] * 2
        assert time.monotonic() - began < 20  # not the 30 s rescan
        assert watched == [] and d._observer is None
    finally:
        _end_serving(d, t)


def test_a_request_still_being_written_is_looked_at_again_once_settled(
    hello_site: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without inotify (a shared file system), a request found changed within
    ``polling.settle`` is looked at again after ``settle``, not a whole rescan interval
    later."""
    d = Daemon(hello_site)
    hello_site.config.polling.interval = 30.0
    hello_site.config.polling.settle = 0.5

    def no_inotify() -> None:
        d._no_inotify = True

    d.watch = no_inotify  # type: ignore[method-assign]
    drop(hello_site, "fresh.yaml", {"workflow": "helloworld"})  # written just now
    t = _serve_in_thread(d)
    try:
        assert _wait_for_success(hello_site, 1, 20) < 10
    finally:
        _end_serving(d, t)


def test_daemon_serves_in_a_thread_and_wakes_on_inotify(hello_site) -> None:  # type: ignore[no-untyped-def]
    d = Daemon(hello_site)
    d.start()
    d.watch()
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            d.wakeup.clear()
            d.tick()
            d.wakeup.wait(5.0)  # long: only an inotify event or a child exit wakes it soon

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        time.sleep(0.2)
        began = time.monotonic()
        drop(hello_site, "a.yaml", {"workflow": "helloworld"})
        while time.monotonic() - began < 4:
            runs = api.list_runs(hello_site)
            if runs and runs[0]["state"] == "SUCCESS":
                break
            time.sleep(0.02)
        assert runs and runs[0]["state"] == "SUCCESS"
        assert time.monotonic() - began < 4  # well under the 5 s fallback tick
    finally:
        stop.set()
        d.wakeup.set()
        t.join(10)
        d.stop()


@pytest.mark.parametrize("pidfd", [True, False])
def test_every_exit_is_seen_with_or_without_pidfds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pidfd: bool
) -> None:
    """One reaper thread watches every child through its pidfd; where pidfd_open is
    missing (an old kernel), each child gets a waiter thread as before. Either way every
    exit wakes the daemon and is seen with its status."""
    from flowbatch.executors import local

    if not pidfd:

        def no_pidfd(pid: int, flags: int = 0) -> int:
            raise OSError(38, "Function not implemented")

        monkeypatch.setattr(local.os, "pidfd_open", no_pidfd)
    site = make_site(tmp_path / "site", {"local": {"concurrency": 3}})
    install(
        site,
        tmp_path / "t",
        """
workflow:
  parameters:
    rc: $[[rc]]
  steps:
    - name: s
      action: {commands: ["sleep 0.2; exit ${rc}"]}
parameters:
  - {name: rc, dtype: int}
""",
    )
    for i, rc in enumerate((0, 3, 0, 7, 0, 0)):
        drop(site, f"r{i}.yaml", {"workflow": "wf", "arguments": {"rc": rc}})
    before = {t.name for t in threading.enumerate()}
    waiters: set[str] = set()

    def note_waiters(d: Daemon) -> None:
        waiters.update(t.name for t in threading.enumerate() if t.name.startswith("wait-"))

    # woken by each exit, not by the 1 s wait
    run_until_idle(site, timeout=30, each_tick=note_waiters, wait=1.0)
    states = sorted(
        (r["arguments"]["rc"], r["state"])
        for r in (api.show_run(site, x["id"]) for x in api.list_runs(site))
    )
    assert states == [(0, "SUCCESS")] * 4 + [(3, "ERROR"), (7, "ERROR")]
    # the fallback is the only one to start a thread per run
    assert bool(waiters - before) is not pidfd


def test_the_reaper_reports_each_exit_once_and_keeps_no_descriptor() -> None:
    """Children added from other threads while the reaper waits are each reported once,
    with their exit status, and their pidfds are closed (a daemon of a million runs
    would otherwise run out of descriptors)."""
    import subprocess
    import sys

    from flowbatch.executors import local

    reaper = local._Reaper()
    reported: list[tuple[int, int]] = []
    done = threading.Event()

    def exited(proc: Any, code: int) -> None:
        reported.append((proc.pid, code))
        if len(reported) == 6:
            done.set()

    descriptors = len(os.listdir("/proc/self/fd"))  # the reaper's epoll set included
    procs = []
    for code in range(6):  # some end before they are added, some after
        proc = subprocess.Popen([sys.executable, "-c", f"import sys; sys.exit({code})"])
        if code % 2:  # ended, not reaped yet
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        assert reaper.watch(proc, exited)
        procs.append(proc)
    assert done.wait(20), reported
    time.sleep(0.1)  # nothing reported twice
    assert sorted(reported) == sorted((p.pid, code) for code, p in enumerate(procs))
    assert reaper._watched == {}
    assert len(os.listdir("/proc/self/fd")) == descriptors  # every pidfd closed


def test_an_exit_the_reaper_never_reports_is_still_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lost wake-up (the reaper told of a child it then never reports) must not leave
    the run RUNNING forever: each poll also asks the child itself."""
    from flowbatch.executors import local

    monkeypatch.setattr(local._Reaper, "watch", lambda self, proc, done: True)
    site = make_site(tmp_path / "site")
    install(site, tmp_path / "t", 'workflow:\n  steps:\n    - action: {commands: ["exit 4"]}\n')
    drop(site, "r.yaml", {"workflow": "wf"})
    run_until_idle(site, timeout=30)
    (run,) = api.list_runs(site)
    assert run["state"] == "ERROR"
    assert "4" in api.show_run(site, run["id"])["messages"][0]


def _burst_site(tmp_path: Path, count: int) -> Any:
    site = make_site(tmp_path / "site", {"local": {"concurrency": 2}})
    write_template(
        tmp_path / "wf",
        """
workflow:
  steps:
    - name: s
      action:
        commands:
          - date +%s.%N > begin; sleep 0.02; date +%s.%N > end
""",
    )
    api.install(site, tmp_path / "wf", workflow_id="wf")
    for i in range(count):
        drop(site, f"r{i:02d}.yaml", {"workflow": "wf"})
    return site


def _spans(site: Any) -> list[tuple[float, float]]:
    spans = []
    for r in api.list_runs(site):
        run_dir = Path(api.show_run(site, r["id"])["run_dir"])
        spans.append((float((run_dir / "begin").read_text()), float((run_dir / "end").read_text())))
    return spans


def test_runs_start_while_a_burst_is_still_taken_in(tmp_path: Path) -> None:
    """One tick over a burst of requests: runs start in the free slots (and runs that
    ended make room for more) while the rest of the burst becomes runs, not only once
    every request has been read; never more than the concurrency at once."""
    site = _burst_site(tmp_path, 24)
    d = Daemon(site)
    d.start()
    try:
        d.tick()  # the whole burst is taken in by this one tick
        records = [api.show_run(site, r["id"]) for r in api.list_runs(site)]
        assert len(records) == 24
        last_made = max(r["created_at"] for r in records)
        started = [r["started_at"] for r in records if r["started_at"]]
        assert started and min(started) < last_made  # a run started before intake ended
        run_until_idle(site, daemon=d)
    finally:
        d.stop()
    assert {r["state"] for r in api.list_runs(site)} == {"SUCCESS"}
    spans = _spans(site)
    for t, _ in spans:  # never more than two at once, from the runs' own clocks
        assert sum(1 for b, e in spans if b <= t < e) <= 2


def test_a_failure_starting_runs_during_intake_loses_no_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Starting runs between two requests fails once: the intake goes on, the tick's own
    dispatch starts the runs, every request becomes a run that ends SUCCESS."""
    site = _burst_site(tmp_path, 6)
    d = Daemon(site)
    real = d.runner.dispatch
    calls = []

    def dispatch_failing_once() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real()

    d.runner.dispatch = dispatch_failing_once  # type: ignore[method-assign]
    d.start()
    try:
        run_until_idle(site, daemon=d)
    finally:
        d.stop()
    assert "starting runs during intake failed" in caplog.text
    runs = api.list_runs(site)
    assert len(runs) == 6 and {r["state"] for r in runs} == {"SUCCESS"}
    assert not list(site.layout.claimed.iterdir())


def test_a_long_intake_commits_the_index_as_it_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs that start during a burst's intake are in the index for other readers
    before the intake ends (the batch is committed every BATCH_COMMIT_EVERY s)."""
    import sqlite3

    from flowbatch import daemon as daemon_module

    monkeypatch.setattr(daemon_module, "BATCH_COMMIT_EVERY", 0.0)
    site = _burst_site(tmp_path, 12)
    d = Daemon(site)
    seen: list[int] = []
    real = d._start_between

    def looking(taken: Any) -> bool:
        going_on = real(taken)
        other = sqlite3.connect(site.layout.index_db)
        try:
            seen.append(int(other.execute("SELECT COUNT(*) FROM run_row").fetchone()[0]))
        finally:
            other.close()
        return going_on

    d._start_between = looking  # type: ignore[method-assign]
    d.start()
    try:
        d.tick()
        run_until_idle(site, daemon=d)
    finally:
        d.stop()
    assert len(seen) == 12 and seen[0] > 0 and seen[-1] >= 11  # visible during the intake


def test_leaderboards_are_written_during_a_long_intake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst's intake can last minutes now that runs start and end inside it: the
    report thread is asked for the leaderboards from there too, not only between ticks."""
    from flowbatch import daemon as daemon_module

    monkeypatch.setattr(daemon_module, "BATCH_COMMIT_EVERY", 0.0)
    monkeypatch.setattr(daemon_module, "REPORT_EVERY", 0.0)  # due whenever asked
    # long enough that runs end inside it on a loaded machine too (60 was not, once)
    site = _burst_site(tmp_path, 200)
    d = Daemon(site)
    taken = [0]  # runs the intake has made so far
    asked_at: list[int] = []  # ... when reports were asked for
    real_between, real_reports = d._start_between, d.write_reports

    def counting(made: list[Any]) -> bool:
        taken[0] += len(made)
        return real_between(made)

    def writing() -> None:
        asked_at.append(taken[0])
        real_reports()

    d._start_between = counting  # type: ignore[method-assign]
    d.write_reports = writing  # type: ignore[method-assign]
    d.start()
    try:
        d.serve(until_idle=True)
    finally:
        d.stop()
    assert any(0 < taken < 200 for taken in asked_at), asked_at
    assert (site.layout.results / "index.html").is_file()  # the front page
    assert {r["state"] for r in api.list_runs(site)} == {"SUCCESS"}


def test_a_daemon_stopping_during_a_long_intake_leaves_the_rest_claimed(tmp_path: Path) -> None:
    """SIGTERM (``stopping``) in the middle of a burst's intake: the intake ends after the
    request at hand, the rest stays in the claimed folder, and the next daemon turns
    every one of them into a run: none lost, none twice."""
    site = _burst_site(tmp_path, 20)
    d = Daemon(site)
    real = d._start_between
    calls: list[int] = []

    def stopping_at_third(taken: Any) -> bool:
        calls.append(1)
        if len(calls) == 3:
            d.stopping = True  # what the SIGTERM handler does
        return real(taken)

    d._start_between = stopping_at_third  # type: ignore[method-assign]
    d.start()
    try:
        d.tick()
    finally:
        d.stop()
    assert len(calls) == 3 and len(api.list_runs(site)) == 3
    assert len([p for p in site.layout.claimed.iterdir() if p.suffix == ".yaml"]) == 17
    run_until_idle(site)  # a new daemon
    runs = api.list_runs(site)
    assert len(runs) == 20 and {r["state"] for r in runs} == {"SUCCESS"}
    requests = sorted(api.show_run(site, r["id"])["request"] for r in runs)
    assert requests == [f"r{i:02d}.yaml" for i in range(20)]
    assert not [p for p in site.layout.claimed.iterdir() if p.suffix == ".yaml"]


def test_process_start_is_psutils_create_time_without_psutil() -> None:
    """The start time a launch records (read from /proc, boot time from /proc/stat's
    btime) is the one adoption later compares with psutil's ``create_time``."""
    import subprocess

    from flowbatch.executors.local import boot_time, process_start

    assert boot_time() == psutil.boot_time()
    proc = subprocess.Popen(["sleep", "5"])
    try:
        assert abs(process_start(proc.pid) - psutil.Process(proc.pid).create_time()) < 0.01
    finally:
        proc.kill()
        proc.wait()
    assert process_start(proc.pid) == 0.0  # gone: no start time


def test_a_local_daemon_loads_neither_psutil_nor_ssh(tmp_path: Path) -> None:
    """A daemon that takes in a request and runs it locally loads psutil only to adopt or
    cancel a run, the SSH executor (paramiko) only when SSH hosts are configured, and
    playhouse's URL parser (every backend's module) only for a database URL."""
    site = make_site(tmp_path / "site")
    install(site, tmp_path / "tpl", STEPS_TEMPLATE)
    drop(site, "r.yaml", {"workflow": "wf"})
    site.close()
    done, modules = daemon_modules(site.root, "--until-idle")
    assert "-> SUCCESS" in done.stderr
    assert "flowbatch.executors.local" in modules
    loaded = modules & {"psutil", "flowbatch.executors.ssh", "paramiko", "playhouse.db_url"}
    assert not loaded, loaded


def test_bash_is_started_by_the_path_the_daemons_path_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bash is looked up on the daemon's PATH once, and started by that path: given the
    bare name, each launch's child searched PATH (a failed execve per folder) while the
    daemon waited. A bash that is gone is looked up again at the next launch."""
    from flowbatch.errors import ExecutorError
    from flowbatch.executors import local
    from flowbatch.executors.base import Launch

    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        (folder / "bash").symlink_to("/bin/bash")
    monkeypatch.setenv("PATH", f"{first}:{os.environ['PATH']}")
    monkeypatch.setattr(local, "_BASH", [])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.sh").write_text("sleep 5\n")
    ex = local.LocalExecutor()
    handle = ex.launch(Launch("r1", run_dir, "run.sh"))
    try:
        # (/proc answers an empty command line for a moment while the process execs)
        cmdline = local._cmdline(psutil.Process(handle["pid"]))
        assert cmdline[:1] == [str(first / "bash")]  # the path, not the name
    finally:
        os.killpg(handle["pgid"], 9)
    # the found bash goes away: that launch fails with the reason, the next one looks again
    (first / "bash").unlink()
    monkeypatch.setenv("PATH", f"{second}:{os.environ['PATH']}")
    with pytest.raises(ExecutorError, match="cannot start bash"):
        ex.launch(Launch("r2", run_dir, "run.sh"))
    handle = ex.launch(Launch("r3", run_dir, "run.sh"))
    try:
        assert local._cmdline(psutil.Process(handle["pid"]))[:1] == [str(second / "bash")]
    finally:
        os.killpg(handle["pgid"], 9)


def test_a_busy_daemons_reports_take_at_most_a_twentieth_of_its_time(
    hello_site: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While runs are active, leaderboards are rewritten at most every second and no
    sooner than 20 times the last write's duration after it (a 500-run leaderboard costs
    0.13-0.2 s: at 5x a 3 s burst rewrote it three times); with no run active, at once."""
    d = Daemon(hello_site)
    d.report_every = 1.0
    now = time.monotonic()
    monkeypatch.setattr(d.runner, "active", {"r1": object()})  # a run is active
    d._report_cost = 0.2
    d._reported_at = now - 3.0  # 15x the cost ago
    assert not d._reports_due()
    d._reported_at = now - 4.1  # 20x the cost ago
    assert d._reports_due()
    d._report_cost, d._reported_at = 0.01, now - 0.5  # a cheap write: the second rules
    assert not d._reports_due()
    monkeypatch.setattr(d.runner, "active", {})  # idle: at once
    d._report_cost, d._reported_at = 0.2, now
    assert d._reports_due()


def test_a_script_that_never_started_says_so(
    site: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that ends before the script wrote its first marker (here bash's own
    start-up, BASH_ENV, ends it; for another user's run, a failed change of user) is
    reported as a script that never started, not as a run that lost its exit marker."""
    install(
        site, tmp_path / "t", 'workflow:\n  steps:\n    - {name: s, action: {commands: ["true"]}}\n'
    )
    startup = tmp_path / "bash_env"
    startup.write_text("exit 3\n")
    monkeypatch.setenv("BASH_ENV", str(startup))
    drop(site, "r.yaml", {"workflow": "wf"})
    run_until_idle(site)
    run = only_run(site)
    assert run["state"] == "ERROR"
    assert run["messages"][0].startswith("lost: the run's script never started"), run["messages"]
    assert "exit code 3" in run["messages"][0]
    # a script that started, then was killed, keeps the other wording
    monkeypatch.delenv("BASH_ENV")
    install(
        site,
        tmp_path / "k",
        'workflow:\n  steps:\n    - {name: s, action: {commands: ["kill -9 $$$$"]}}\n',
        wf="killed",
    )
    drop(site, "k.yaml", {"workflow": "killed"})
    run_until_idle(site)
    killed = api.show_run(site, api.list_runs(site, workflow="killed")[0]["id"])
    assert killed["state"] == "ERROR"
    assert killed["messages"][0].startswith(
        "lost: the run's process ended without writing its exit marker"
    ), killed["messages"]
    assert "SIGKILL" in killed["messages"][0]


MANY_FILES = """
workflow:
  steps:
    - action:
        commands:
          - mkdir out && cd out && seq 1500 | xargs touch
          - >-
            echo '{"v": 1}' > r.json
results:
  file: r.json
  schema: [{name: v, label: V, dtype: int}]
"""


def test_a_run_leaving_many_files_lists_a_bounded_number(site: Site, tmp_path: Path) -> None:
    """With no outputs declared every file of the run folder is an output: a run that
    leaves 100,000 made run.json, the run page and both leaderboard files megabytes and
    its end a 5 s stall. The run records its first 1,000 (sorted), its leaderboard row
    20 and how many there are."""
    from flowbatch.lifecycle import MAX_RUN_FILES
    from flowbatch.report import FILES_SHOWN

    write_template(tmp_path / "t", MANY_FILES)
    api.install(site, tmp_path / "t", workflow_id="wf")
    drop(site, "r.yaml", {"workflow": "wf"})
    run_until_idle(site)
    run = only_run(site)
    assert run["state"] == "SUCCESS", run["messages"]
    sources = [f["source"] for f in run["files"]]
    assert len(sources) == MAX_RUN_FILES and sources == sorted(sources)
    assert "r.json" in sources  # a folder's own files are taken before its sub-folders
    board = json.loads((site.layout.results / "wf" / "leaderboard.json").read_text())
    (row,) = board["ranking"]
    assert len(row["files"]) == FILES_SHOWN and row["files_total"] == MAX_RUN_FILES
    html = (site.layout.results / "wf" / "leaderboard.html").read_text()
    assert f"{MAX_RUN_FILES - FILES_SHOWN} more" in html


def test_find_started_takes_only_a_launch_of_the_script(tmp_path: Path) -> None:
    """What a restarted daemon adopts for a run without a marker: ``bash <script>``
    leading its own process group as the run's user; not a reader of the script, not a
    bash inside someone's process group, not another user's."""
    import subprocess

    from flowbatch.executors.local import LocalExecutor

    script = tmp_path / "run.sh"
    script.write_text("sleep 30\n")
    other = tmp_path / "other.sh"
    other.write_text("sleep 30\n")
    procs = [
        # a reader of the script, in a session of its own
        subprocess.Popen(["tail", "-f", str(script)], start_new_session=True),
        # bash running the script inside this test's process group (a user's shell)
        subprocess.Popen(["bash", str(script)]),
    ]
    executor = LocalExecutor()
    try:
        time.sleep(0.2)
        uid = os.geteuid()
        assert executor.find_started({str(script): uid}) == {}
        launched = subprocess.Popen(["bash", str(script)], start_new_session=True)
        procs.append(launched)
        time.sleep(0.2)
        found = executor.find_started({str(script): uid, str(other): uid})
        assert list(found) == [str(script)]
        handle = found[str(script)]
        assert handle["pid"] == handle["pgid"] == launched.pid and handle["uid"] == uid
        assert executor.adopt(handle)  # the handle is one the executor can follow
        assert executor.find_started({str(script): uid + 1}) == {}  # not that user's
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_a_run_past_its_limit_that_ended_unwatched_is_over_time(site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Found by review: a run that went past its time limit while no daemon watched it
    (one stopped, or between two cron ticks) and then ended well was recorded SUCCESS,
    and ranked; one a daemon watched is ended at the limit."""
    install(site, tmp_path / "t", TIME_LIMITED.replace("sleep 60", "sleep 3"))
    drop(site, "r.yaml", {"workflow": "wf"})
    run = launched_then_stopped(site)  # no daemon while it goes past its limit and ends
    wait_marker(site, run, b"exit")
    run_until_idle(site, timeout=30)
    shown = only_run(site)
    assert shown["state"] == "ERROR", shown
    assert shown["messages"][0].startswith("time limit exceeded: it ran 3 s, past its limit of 1 s")


GATED = """
workflow:
  steps:
    - name: s
      action:
        commands: ['while [ ! -e {gate} ]; do sleep 0.05; done']
"""


def test_a_cancel_of_a_pending_run_is_applied_before_a_free_slot_starts_it(
    tmp_path: Path,
) -> None:
    """Found by review (a cron site): a slot freed between two ticks, and a cancel of a
    PENDING run queued meanwhile; the next tick started the run in that slot during its
    intake, then cancelled it: the user's script ran. The cancel comes first."""
    gate = tmp_path / "gate"
    site = make_site(tmp_path / "site", {"local": {"concurrency": 1}})
    install(site, tmp_path / "t", GATED.format(gate=gate))
    drop(site, "a.yaml", {"workflow": "wf", "name": "a"})
    drop(site, "b.yaml", {"workflow": "wf", "name": "b"})
    d = Daemon(site)
    d.start()
    deadline = time.monotonic() + 30
    while len(d.runner.launched()) != 1 or len(d.runner.active) != 2:
        assert time.monotonic() < deadline
        d.tick()
    (waiting,) = [r for r in d.runner.active.values() if not r.launched]
    d.stop()  # the tick ends; its run goes on
    site.close()
    # a slot free at the next tick: the admin raised the concurrency meanwhile
    conf = yaml.safe_load((site.root / "flowbatch.yaml").read_text())
    conf["local"]["concurrency"] = 2
    (site.root / "flowbatch.yaml").write_text(yaml.safe_dump(conf))
    site = Site(site.root)
    api.request_cancel(site, waiting.id, "not needed")
    drop(site, "c.yaml", {"workflow": "wf", "name": "c"})  # a request beside the cancel
    again = Daemon(site)
    again.start()
    try:
        again.tick()
    finally:
        again.stop()
        gate.touch()
    shown = api.show_run(site, waiting.id)
    assert shown["state"] == "CANCELED", shown
    markers = site.store.run_dir(site.store.load(waiting.id)) / "status" / "markers"
    assert not markers.exists() or b"started" not in markers.read_bytes()
    site.close()


def test_a_run_the_hosts_shutdown_ended_is_retried_as_a_lost_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by review: a shutdown's SIGTERM (the TERM trap writes exit 143) read as the
    user's own failure, "killed by SIGTERM", and `retries` was not used. A run whose
    process started before this boot is lost to the restart. (The reboot is the one
    fault here that cannot be staged: the boot time is moved past the run's start.)"""
    from flowbatch.executors import local

    flag = tmp_path / "second-attempt"
    site = make_site(tmp_path / "site")
    install(
        site,
        tmp_path / "t",
        f"retries: 1\nworkflow:\n  steps:\n    - action: {{commands: ['test -e {flag} || sleep 60']}}\n",
    )
    drop(site, "r.yaml", {"workflow": "wf"})
    run = launched_then_stopped(site)
    wait_marker(site, run, b"started")
    os.killpg(int(run.handle["pid"]), 15)  # the shutdown's signal
    wait_marker(site, run, b"exit")
    flag.touch()
    rebooted = time.time() + 5  # a boot after the run started, by the boot clock
    monkeypatch.setattr(local, "boot_time", lambda: rebooted)
    run_until_idle(site, timeout=30)
    shown = only_run(site)
    assert shown["state"] == "SUCCESS", shown["messages"]
    assert any("the host restarted while the run ran" in m for m in shown["messages"]), shown
    assert site.store.load(run.id).attempt == 2
    site.close()
