"""Fixes of a review: run times from the script's markers, a select's isDefault choice,
the organisers' guide's examples, and `validate` on a request that is no mapping."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowbatch import api
from flowbatch.daemon import Daemon, cancel_run
from flowbatch.errors import RequestError, TemplateError
from flowbatch.executors.slurm import SlurmExecutor
from flowbatch.lifecycle import MARKER_CLOCK_SLACK, Runner, marker_times
from flowbatch.render.script import Markers, read_markers
from flowbatch.runs import RunRecord, State
from flowbatch.site import Site
from flowbatch.spec.params import parse_parameters, resolve_arguments

from .conftest import drop, make_site, only_run, run_until_idle, write_template
from .test_slurm_unit import Clock, Scripted, ok, slurm_daemon

REPO = Path(__file__).resolve().parent.parent

#: one step: sleep as long as asked, then write the score given
TIMED = """
workflow:
  steps:
    - name: s
      action:
        commands:
          - sleep ${pause}
          - >-
            printf '{"score": %s}' "${score}" > r.json
parameters:
  - {name: score, dtype: float, defaultValue: 1}
  - {name: pause, dtype: float, defaultValue: 0}
results:
  file: r.json
  schema: [{name: score, label: Score, dtype: float}]
"""

SLOW_TICK = 1.5  # seconds a slowed tick spends between a run's end and the poll that sees it


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")


def _slow_tick(monkeypatch: pytest.MonkeyPatch, after: Any = None) -> None:
    """Every tick takes SLOW_TICK seconds before its poll of the running runs (as an
    sbatch that is slow to answer holds it up): runs that end meanwhile are seen only
    by that poll. ``after`` is called once the wait is over, before the poll. (The poll
    of local exits between requests of an intake is left alone.)"""
    original = Runner.poll

    def slow(self: Runner, only: Any = None) -> int:
        if only is None and self.launched():
            time.sleep(SLOW_TICK)
            if after is not None:
                after(self)
        return original(self, only)

    monkeypatch.setattr(Runner, "poll", slow)


def _site_with(tmp_path: Path, text: str = TIMED, **config: Any) -> Site:
    site = make_site(tmp_path / "site", config or None)
    api.install(site, write_template(tmp_path / "tpl", text), workflow_id="wf")
    return site


def _markers(run: dict[str, Any]) -> Markers:
    return read_markers(Path(run["run_dir"]))


def _board(site: Site) -> dict[str, Any]:
    path = site.layout.workflow_results("wf") / "leaderboard.json"
    return dict(json.loads(path.read_text()))


# -- 1. a run's times are its markers', not the moments the daemon noticed ------------------


def _timed_by_markers(run: dict[str, Any]) -> Markers:
    """A successful run whose start and finish are its markers'; the markers."""
    assert run["state"] == "SUCCESS", run["messages"]
    marks = _markers(run)
    assert marks.started is not None and marks.exit is not None
    assert _epoch(run["started_at"]) == pytest.approx(marks.started[1], abs=1e-6)
    assert _epoch(run["finished_at"]) == pytest.approx(marks.exit[1], abs=1e-6)
    return marks


def test_a_slow_tick_moves_neither_a_runs_times_nor_its_leaderboard_run_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _site_with(tmp_path)
    _slow_tick(monkeypatch)
    drop(site, "r.yaml", {"workflow": "wf", "arguments": {"pause": 0.2}})
    run_until_idle(site)
    run = only_run(site)
    marks = _timed_by_markers(run)
    ran = marks.exit[1] - marks.started[1]
    assert 0.2 <= ran < SLOW_TICK
    # the history keeps what the daemon saw, when it saw it: the end a slow tick later
    seen = _epoch(run["history"][-1]["at"])
    assert run["history"][-1]["state"] == "SUCCESS"
    assert seen - marks.exit[1] >= SLOW_TICK / 2
    (entry,) = _board(site)["ranking"]
    assert entry["run_seconds"] == pytest.approx(ran, abs=1e-5)
    assert api.ranking(site, "wf")["ranking"][0]["run"]["finished_at"] == run["finished_at"]


def test_the_marked_finish_decides_no_tie_the_submission_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs with the same score end during one slow tick; the one launched first
    ends last, and its finish is the one its markers give (not when the daemon saw it).
    The tie goes to the run submitted first, whatever the finishes: a run's own marks
    could be set back to win it."""
    site = _site_with(tmp_path, local={"concurrency": 4})
    _slow_tick(monkeypatch)
    drop(site, "a.yaml", {"workflow": "wf", "group": "slow", "arguments": {"pause": 0.6}})
    drop(site, "b.yaml", {"workflow": "wf", "group": "fast"})
    run_until_idle(site)
    runs = {r["group"]: api.show_run(site, r["id"]) for r in api.list_runs(site)}
    assert {r["state"] for r in runs.values()} == {"SUCCESS"}
    # both were seen ended by one poll, the slow one first
    assert runs["slow"]["history"][-1]["at"] <= runs["fast"]["history"][-1]["at"]
    assert runs["fast"]["finished_at"] < runs["slow"]["finished_at"]
    assert runs["slow"]["created_at"] < runs["fast"]["created_at"]
    assert [e["group"] for e in _board(site)["ranking"]] == ["slow", "fast"]
    assert [e["group"] for e in api.ranking(site, "wf")["ranking"]] == ["slow", "fast"]


def _shift(run_dir: Path, kind: str, to: float) -> None:
    """Rewrite the time of the marker line ``kind`` (started or exit) to ``to``."""
    path = run_dir / "status" / "markers"
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        parts = line.split(" ")
        if parts[0] == kind:
            parts[2] = f"{to:.6f}"  # started PID TIME HOST, exit RC TIME STEP
            lines[i] = " ".join(parts)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "which", ["exit in the far future", "exit a little ahead", "started before creation"]
)
def test_marker_times_in_the_future_or_before_the_runs_creation_are_not_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    """A clock that is far off (another host's) or a marker line the run wrote itself:
    neither of the run's times comes from such markers, the daemon's own stay; a clock
    a little ahead (within the slack) is taken, as is the markers of a run beside it."""
    site = _site_with(tmp_path, local={"concurrency": 4})

    def skew(runner: Runner) -> None:  # the runs have ended; the daemon has not looked yet
        (run,) = [r for r in runner.launched() if r.name == "skewed"]
        run_dir = site.store.run_dir(run)
        if which == "exit in the far future":
            _shift(run_dir, "exit", time.time() + 3600)
        elif which == "exit a little ahead":
            _shift(run_dir, "exit", time.time() + MARKER_CLOCK_SLACK / 4)
        else:
            _shift(run_dir, "started", _epoch(run.created_at) - 3600)

    _slow_tick(monkeypatch, skew)
    # long enough not to end before the intake's own poll after the next request (that
    # poll sees an end before the skew; 0 s failed about one time in five)
    drop(site, "a.yaml", {"workflow": "wf", "name": "skewed", "arguments": {"pause": 0.3}})
    drop(site, "b.yaml", {"workflow": "wf", "name": "control"})
    run_until_idle(site)
    runs = {r["name"]: api.show_run(site, r["id"]) for r in api.list_runs(site)}
    for run in runs.values():
        assert run["state"] == "SUCCESS", run["messages"]
    control, skewed = runs["control"], runs["skewed"]
    marks = _markers(control)
    assert marks.started is not None and marks.exit is not None
    assert _epoch(control["started_at"]) == pytest.approx(marks.started[1], abs=1e-6)
    assert _epoch(control["finished_at"]) == pytest.approx(marks.exit[1], abs=1e-6)
    marks = _markers(skewed)
    assert marks.started is not None and marks.exit is not None
    if which == "exit a little ahead":
        assert _epoch(skewed["started_at"]) == pytest.approx(marks.started[1], abs=1e-6)
        assert _epoch(skewed["finished_at"]) == pytest.approx(marks.exit[1], abs=1e-6)
        return
    running, ended = skewed["history"][-2:]
    assert (running["state"], ended["state"]) == ("RUNNING", "SUCCESS")
    # the daemon's own: the launch it recorded, and the moment it saw the end
    assert skewed["started_at"] == running["at"]
    assert skewed["finished_at"] == ended["at"]
    assert _epoch(skewed["finished_at"]) - _epoch(skewed["started_at"]) >= SLOW_TICK / 2


def _record(history: list[tuple[str, float]]) -> RunRecord:
    created = history[0][1]
    return RunRecord(
        id="r1",
        workflow="wf",
        version="v1",
        group="g",
        name=None,
        owner_uid=0,
        owner="root",
        request="r.yaml",
        created_at=_iso(created),
        history=[{"state": s, "at": _iso(t), "message": None} for s, t in history],
    )


def _marks(started: float | None, end: float | None) -> Markers:
    return Markers(
        started=None if started is None else (1, started, "h"),
        exit=None if end is None else (0, end, 0),
    )


def test_which_marker_times_are_plausible() -> None:
    now = 10_000.0
    run = _record([("PENDING", 1000.0), ("RUNNING", 1001.0)])

    def times(started: float | None, end: float | None, **kw: Any) -> dict[str, str]:
        return marker_times(run, _marks(started, end), now=now, **kw)

    good = times(1000.5, 1002.0)
    assert {k: _epoch(v) for k, v in good.items()} == {
        "started_at": pytest.approx(1000.5),
        "finished_at": pytest.approx(1002.0),
    }
    # a host's clock a little ahead of the daemon's: within the slack, taken
    assert times(now - 1, now + MARKER_CLOCK_SLACK / 2)
    # not trusted: both times stay the daemon's
    assert times(1000.5, now + MARKER_CLOCK_SLACK + 1) == {}  # the end in the future
    assert times(1000.5, 1e12) == {}  # far in the future
    assert times(999.0, 1002.0) == {}  # started before the run was made
    assert times(1000.5, 1000.2) == {}  # ended before it started
    assert times(math.nan, 1002.0) == {}
    assert times(1000.5, math.inf) == {}
    assert times(None, 1002.0) == {}  # no start marker: one clock for both, or none
    # no exit marker (a lost run): the start alone, the finish is the daemon's
    assert set(times(1000.5, None)) == {"started_at"}
    assert times(now + 1, None) == {}  # a start after now would precede its own finish
    assert set(times(1000.5, 1002.0, ended=False)) == {"started_at"}
    # a retry's attempt: its markers are no older than the retry that queued it
    retried = _record([("PENDING", 1000.0), ("RUNNING", 1001.0), ("PENDING", 2000.0)])
    assert marker_times(retried, _marks(1500.0, 2500.0), now=now) == {}
    assert marker_times(retried, _marks(2100.0, 2500.0), now=now)


def test_a_slurm_run_is_timed_by_its_markers_not_by_its_submission_or_the_poll(
    tmp_path: Path,
) -> None:
    """A job waits in Slurm's queue, runs on a node, and is seen ended a poll later: the
    run's start is the job's start and its end the script's (the node's clock)."""
    daemon = slurm_daemon(tmp_path, {"slurm": {"default": {"poll": {"floor": 0, "ceiling": 0.01}}}})
    slurm = daemon.executors["slurm"]
    assert isinstance(slurm, SlurmExecutor)
    runner = Scripted({"sbatch": [ok("41\n")], "squeue": [ok("41|PENDING|Priority|x|0|\n")]})
    slurm._runner = runner
    slurm._clock = Clock()
    try:
        drop(daemon.site, "a.yaml", {"workflow": "wf"})
        daemon.tick()
        (run,) = daemon.runner.launched()
        assert run.state == State.PENDING and run.queued and run.started_at is None
        submitted = time.time()
        time.sleep(0.5)  # queued
        run_dir = daemon.site.store.run_dir(run)
        subprocess.run(["bash", str(run_dir / "run.sh")], cwd=run_dir, check=True)
        time.sleep(1.0)  # ended, not seen yet
        runner.answers["squeue"] = [ok("41|COMPLETED|None|x|0|\n")]
        slurm._clock.now += 100
        daemon.runner.poll()
        assert run.state == State.SUCCESS, run.messages
        marks = read_markers(run_dir)
        assert marks.started is not None and marks.exit is not None
        assert _epoch(run.started_at or "") == pytest.approx(marks.started[1], abs=1e-6)
        assert _epoch(run.finished_at or "") == pytest.approx(marks.exit[1], abs=1e-6)
        assert marks.started[1] - submitted >= 0.45
        assert _epoch(run.history[-1]["at"]) - marks.exit[1] >= 0.9
        # never seen running: from PENDING (queued) to its end, timed by its markers
        assert [change["state"] for change in run.history] == ["PENDING", "SUCCESS"]
        stored = api.show_run(daemon.site, run.id)
        assert (stored["started_at"], stored["finished_at"]) == (run.started_at, run.finished_at)
    finally:
        daemon.stop()
        daemon.site.close()


RETRIED = """
retries: 1
workflow:
  steps:
    - name: s
      action:
        commands:
          - if [ ! -d attempts/1 ] || [ -n "${again}" ]; then kill -9 $$$$; fi
          - >-
            printf '{"score": 1}' > r.json
parameters:
  - {name: again, dtype: string, defaultValue: ''}
results:
  file: r.json
  schema: [{name: score, label: Score, dtype: float}]
"""


@pytest.mark.parametrize("again", ["", "yes"])
def test_a_retried_or_lost_run_is_timed_by_its_last_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, again: str
) -> None:
    """The first attempt's script is killed (no exit marker): a retry. The second one
    succeeds (its own markers give both times) or is killed too (lost: its start from
    its marker, its end the daemon's, as no marker says it)."""
    site = _site_with(tmp_path, RETRIED)
    _slow_tick(monkeypatch)
    drop(site, "r.yaml", {"workflow": "wf", "arguments": {"again": again}})
    run_until_idle(site)
    run = only_run(site)
    assert json.loads((Path(run["run_dir"]) / "run.json").read_text())["attempt"] == 2
    marks = _markers(run)
    first = read_markers(Path(run["run_dir"]) / "attempts" / "1")
    assert marks.started is not None and first.started is not None
    assert first.exit is None
    assert _epoch(run["started_at"]) == pytest.approx(marks.started[1], abs=1e-6)
    assert marks.started[1] > first.started[1]
    if not again:
        assert run["state"] == "SUCCESS", run["messages"]
        assert marks.exit is not None
        assert _epoch(run["finished_at"]) == pytest.approx(marks.exit[1], abs=1e-6)
    else:
        assert run["state"] == "ERROR" and run["messages"][-1].startswith("lost:")
        assert marks.exit is None
        assert run["finished_at"] == run["history"][-1]["at"]  # the daemon's
        assert _epoch(run["finished_at"]) - marks.started[1] >= SLOW_TICK / 2


def test_a_run_over_its_time_limit_and_a_cancelled_one_end_at_their_exit_marker(
    tmp_path: Path,
) -> None:
    """Ended by the daemon (TERM): the script's trap writes its exit marker, which gives
    the end; the start is the script's own too."""
    text = TIMED.replace("workflow:", "timeLimit: 1\nworkflow:", 1)
    site = _site_with(tmp_path, text, local={"concurrency": 4})
    drop(site, "a.yaml", {"workflow": "wf", "name": "limit", "arguments": {"pause": 30}})
    drop(site, "b.yaml", {"workflow": "wf", "name": "cancel", "arguments": {"pause": 0.5}})
    d = Daemon(site)
    d.start()
    try:
        d.tick()
        (cancelled,) = [r for r in d.runner.launched() if r.name == "cancel"]
        time.sleep(0.2)
        cancel_run(site, d.runner, cancelled.id, os.geteuid(), "not needed")
        run_until_idle(site, daemon=d, timeout=30)
    finally:
        d.stop()
    runs = {r["name"]: api.show_run(site, r["id"]) for r in api.list_runs(site)}
    assert runs["limit"]["state"] == "ERROR" and runs["limit"]["messages"] == [
        "time limit exceeded"
    ]
    assert runs["cancel"]["state"] == "CANCELED"
    for run in runs.values():
        marks = _markers(run)
        assert marks.started is not None and marks.exit is not None, run["name"]
        assert marks.exit[0] == 128 + signal.SIGTERM
        assert _epoch(run["started_at"]) == pytest.approx(marks.started[1], abs=1e-6)
        assert _epoch(run["finished_at"]) == pytest.approx(marks.exit[1], abs=1e-6)


def test_a_run_adopted_after_a_daemon_was_killed_is_timed_by_its_markers(
    tmp_path: Path,
) -> None:
    """The daemon was killed between a launch and its record: the next one adopts the
    run from its started marker (as RUNNING since then, not since its own start)."""
    site = _site_with(tmp_path)
    drop(site, "r.yaml", {"workflow": "wf", "arguments": {"pause": 0.3}})
    killed = subprocess.run(
        [sys.executable, "-m", "flowbatch", "--site", str(site.root), "daemon", "--until-idle"],
        env={**os.environ, "FLOWBATCH_CRASH_AT": "launched:1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (folder,) = [p for p in site.layout.runs_dir("wf").iterdir() if not p.name.startswith(".")]
    deadline = time.monotonic() + 30
    while read_markers(folder).exit is None:  # the script goes on without its daemon
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)
    site.close()
    site = Site(site.root)
    run_until_idle(site)
    run = only_run(site)
    marks = _timed_by_markers(run)
    assert _epoch(run["history"][-2]["at"]) - marks.exit[1] >= 0.9  # RUNNING: when seen
    site.close()


# -- 2. a select's isDefault value ------------------------------------------------------------

SELECT = [
    {
        "name": "model",
        "dtype": "select",
        "values": [
            {"name": "Small", "value": "s", "isDefault": True},
            {"name": "Large", "value": "l"},
        ],
    }
]


def test_a_select_defaults_to_its_isDefault_value() -> None:
    (param,) = parse_parameters(SELECT, file="t.yaml")
    assert param.has_default and param.default == "s" and not param.required
    assert resolve_arguments([param], {}) == {"model": "s"}
    assert resolve_arguments([param], {"model": "l"}) == {"model": "l"}
    # defaultValue wins over isDefault
    both = [{**SELECT[0], "defaultValue": "l"}]
    (param,) = parse_parameters(both, file="t.yaml")
    assert param.default == "l" and resolve_arguments([param], None) == {"model": "l"}
    # an explicit isRequired stays, but the value left out takes the default all the
    # same (as with a defaultValue)
    (param,) = parse_parameters([{**SELECT[0], "isRequired": True}], file="t.yaml")
    assert param.required and resolve_arguments([param], {}) == {"model": "s"}
    # no isDefault, no defaultValue: required, as before
    plain = [{**SELECT[0], "values": [{"name": "Small", "value": "s"}]}]
    (param,) = parse_parameters(plain, file="t.yaml")
    assert param.required and not param.has_default
    # a list's elements and a record's fields follow the same rule
    (param,) = parse_parameters([{"name": "r", "dtype": "record", "fields": SELECT}], file="t.yaml")
    assert resolve_arguments([param], {"r": {}}) == {"r": {"model": "s"}}


def test_two_isDefault_values_are_an_install_time_error_naming_the_second() -> None:
    two = [
        {
            **SELECT[0],
            "values": [
                {"name": "Small", "value": "s", "isDefault": True},
                {"name": "Mid", "value": "m", "isDefault": False},
                {"name": "Large", "value": "l", "isDefault": True},
            ],
        }
    ]
    from flowbatch.spec.params import check_select_marks

    # parsed (a template installed before the check was made must still load): the
    # first marked value is the default
    (param,) = parse_parameters(two, file="t.yaml")
    assert param.default == "s"
    for params in (two, [{**two[0], "defaultValue": "m"}]):  # with a defaultValue too
        with pytest.raises(TemplateError) as err:  # refused at install and validate
            check_select_marks(
                parse_parameters(params, file="t.yaml"), file=None, field="parameters"
            )
        assert err.value.field == "parameters[0].values[2].isDefault"
        assert "values[0]" in err.value.reason


def test_a_template_installed_with_two_isDefault_values_still_runs(
    site: Site, tmp_path: Path
) -> None:
    """The check at install came after templates with two marked values were installed:
    the daemon re-reads the stored template for every request, and must not reject them
    all for it."""
    text = """
workflow:
  parameters:
    model: $[[model]]
  steps:
    - action: {commands: ['echo ${model} > m.txt']}
parameters:
  - name: model
    dtype: select
    defaultValue: l
    values:
      - {name: Small, value: s, isDefault: true}
      - {name: Large, value: l, isDefault: true}
"""
    write_template(tmp_path / "t", text)
    with pytest.raises(TemplateError, match="isDefault"):
        api.install(site, tmp_path / "t", workflow_id="wf")
    with pytest.MonkeyPatch.context() as patch:  # as an earlier version installed it
        patch.setattr(
            "flowbatch.spec.params.check_select_marks", lambda *a, **k: None, raising=False
        )
        api.install(site, tmp_path / "t", workflow_id="wf")
    drop(site, "r.yaml", {"workflow": "wf"})
    run_until_idle(site)
    (run,) = [api.show_run(site, r["id"]) for r in api.list_runs(site)]
    assert run["state"] == "SUCCESS", run["messages"]


def test_a_request_leaving_out_a_select_with_isDefault_runs_with_it(
    site: Site, tmp_path: Path
) -> None:
    text = """
workflow:
  parameters:
    model: $[[model]]
  steps:
    - name: s
      action:
        commands:
          - >-
            printf '{"m": "%s"}' "${model}" > r.json
parameters:
  - name: model
    dtype: select
    values:
      - {name: Small, value: s, isDefault: true}
      - {name: Large, value: l}
results:
  file: r.json
  schema: [{name: m, label: M, dtype: string}]
"""
    api.install(site, write_template(tmp_path / "tpl", text), workflow_id="m")
    request = tmp_path / "req.yaml"
    request.write_text("workflow: m\n")
    assert "valid for workflow m" in api.validate(request, site)
    drop(site, "r.yaml", {"workflow": "m"})
    run_until_idle(site)
    run = only_run(site)
    assert run["state"] == "SUCCESS", run["messages"]
    assert run["arguments"]["model"] == "s" and run["results"] == {"m": "s"}
    bad = tmp_path / "bad"
    write_template(bad, text.replace("value: l}", "value: l, isDefault: true}"))
    with pytest.raises(TemplateError) as err:
        api.install(site, bad, workflow_id="bad")
    assert err.value.field == "parameters[0].values[1].isDefault"


# -- 3. the organisers' guide: its examples, put together, run ------------------------------

HELLO = """\
import argparse, json, os
p = argparse.ArgumentParser()
p.add_argument("--inputfile")
p.add_argument("--sleeptime", type=float)
a = p.parse_args()
os.makedirs("results", exist_ok=True)
lines = [f"Hello {n.strip()}!" for n in open(a.inputfile) if n.strip()]
open("results/greetings.txt", "w").write("\\n".join(lines) + "\\n")
json.dump({"avg_count": sum(map(len, lines)) / len(lines), "max_len": max(map(len, lines)),
           "max_line": max(lines, key=len), "metrics": {"f1": 0.5}},
          open("results/analytics.json", "w"))
"""
PLOT = """\
import argparse, json, os
p = argparse.ArgumentParser()
p.add_argument("--runs")
p.add_argument("--out")
a = p.parse_args()
runs = json.load(open(os.path.join(a.runs, "runs.json")))
avg = [json.load(open(os.path.join(a.runs, r["id"], "results", "analytics.json")))["avg_count"]
       for r in runs]
os.makedirs(os.path.dirname(a.out), exist_ok=True)
open(a.out, "w").write(json.dumps({r["name"]: v for r, v in zip(runs, avg)}))
"""


def test_the_organisers_guide_examples_make_a_template_that_runs(
    public_site: Site, tmp_path: Path
) -> None:
    """Every YAML block of docs/organisers.md is a part of one template: together, with
    the code they name, they validate, install and run, post-processing included."""
    site = public_site  # post-processing runs as another user (conftest)
    guide = (REPO / "docs" / "organisers.md").read_text()
    template: dict[str, Any] = {}
    for block in re.findall(r"```yaml\n(.*?)```", guide, re.S):
        doc = yaml.safe_load(block)  # each block must be valid YAML on its own
        if isinstance(doc, dict) and "flowbatch" not in doc:  # the native one: test_docs
            template.update(doc)
    assert {"parameters", "workflow", "results", "postproc"} <= set(template)
    folder = tmp_path / "mybench"
    write_template(
        folder,
        yaml.safe_dump(template, sort_keys=False),
        {"code/helloworld.py": HELLO, "code/plot.py": PLOT, "data/names.txt": "Al\nBea\n"},
    )
    assert "valid" in api.validate(folder, site)
    api.install(site, folder, workflow_id="mybench")
    drop(site, "a.yaml", {"workflow": "mybench", "group": "a"})  # every default
    drop(
        site,
        "b.yaml",
        {"workflow": "mybench", "group": "b", "arguments": {"names": "n.txt", "model": "l"}},
        files={"n.txt": "Christopher\n"},
    )
    run_until_idle(site)
    runs = {r["group"]: api.show_run(site, r["id"]) for r in api.list_runs(site)}
    assert {g: r["state"] for g, r in runs.items()} == {"a": "SUCCESS", "b": "SUCCESS"}, runs
    assert runs["a"]["arguments"]["model"] == "s"  # the isDefault choice
    assert runs["b"]["results"]["f1"] == 0.5  # the nested result
    board = api.ranking(site, "mybench")
    assert [e["group"] for e in board["ranking"]] == ["b", "a"]  # avg_count, descending
    latest = json.loads((site.layout.workflow_results("mybench") / "leaderboard.json").read_text())[
        "postproc"
    ]["latest"]
    assert latest["state"] == "SUCCESS", latest
    assert latest["runs"] == 2
    (output,) = latest["outputs"]
    plotted = site.layout.workflow_results("mybench") / "postproc" / latest["id"] / output["source"]
    assert json.loads(plotted.read_text()) == {"b": 18.0, "a": 9.5}


# -- 4. validate on a request that is no mapping ------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("", "the request file is empty"),
        ("null\n", "a request must be a YAML mapping, not an empty document (null)"),
        ("3\n", "a request must be a YAML mapping, not a number 3"),
        ("- workflow: t\n", "a request must be a YAML mapping, not a list"),
    ],
)
def test_validate_tells_a_request_that_is_no_mapping_what_a_request_needs(
    site: Site, tmp_path: Path, text: str, kind: str
) -> None:
    path = tmp_path / "req.yaml"
    path.write_text(text)
    for where in (site, None):
        with pytest.raises(RequestError) as err:
            api.validate(path, where)
        message = err.value.summary()
        assert kind in message, message
        assert "workflow" in (err.value.expected or "")
        assert "parameterGroups" not in message
    # the daemon's intake says the same of it
    drop(site, "req.yaml", text)
    run_until_idle(site)
    error = yaml.safe_load((site.layout.queue / "rejected" / "req.yaml.error.yaml").read_text())
    assert kind.startswith(error["reason"]), error
    assert error["expected"] == err.value.expected
    # under a template's file name it is checked as a template
    named = tmp_path / "t" / "benchmark.yaml"
    named.parent.mkdir()
    named.write_text(text)
    with pytest.raises(TemplateError) as terr:
        api.validate(named, site)
    assert "parameterGroups" in terr.value.summary()


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("workflow: 5\narguments: {sleeptime: 1}\n", "workflow must be an installed workflow id"),
        ("Workflow: helloworld\n", "unknown field 'Workflow'"),
        ("workflow: [helloworld]\n", "workflow must be an installed workflow id"),
        ("wrkflow: helloworld\nsweep: {a: [1]}\n", "unknown field 'wrkflow'"),
    ],
)
def test_validate_tells_a_mistyped_request_what_a_request_needs(
    site: Site, tmp_path: Path, text: str, said: str
) -> None:
    """Such files were checked as templates ("unknown key 'arguments' (expected one of
    the keys workflow, parameters, parameterGroups...)"), while submit and the daemon
    gave the request's error (found by review)."""
    path = tmp_path / "req.yaml"
    path.write_text(text)
    with pytest.raises(RequestError) as err:
        api.validate(path, site)
    assert said in err.value.summary() and "parameterGroups" not in err.value.summary()
    # a template stays a template, under any name: its `workflow:` is a mapping, or it
    # has a key only templates have
    for body in ("workflow: {steps: [{name: s}]}\n", "parameters: []\n"):
        path.write_text(body)
        with pytest.raises(TemplateError):
            api.validate(path, site)


def test_a_template_that_lists_a_file_it_does_not_ship_is_refused_at_install(
    site: Site, tmp_path: Path
) -> None:
    """validate and install passed it, then every run failed ("can't open file
    .../code/helloworld.py"; found by review)."""
    from flowbatch.errors import TemplateError as TError

    from .conftest import EXAMPLES

    # the example with a manifest that ships nothing
    folder = tmp_path / "nofiles"
    shutil.copytree(EXAMPLES / "helloworld", folder)
    manifest = folder / "flowserv.yaml"
    doc = yaml.safe_load(manifest.read_text())
    manifest.write_text(yaml.safe_dump({**doc, "files": []}))
    for check in (lambda: api.validate(folder, site), lambda: api.install(site, folder)):
        with pytest.raises(TError) as err:
            check()
        assert "'code/helloworld.py' it lists is not among its files" in err.value.summary()
        assert err.value.field == "workflow.files.inputs[0]"  # as in the file
    # a file parameter's default it does not ship
    (folder / "flowserv.yaml").unlink()
    shutil.rmtree(folder / "data")
    with pytest.raises(TError) as err:
        api.install(site, folder)
    assert err.value.field == "parameters[0].defaultValue"  # as other checks say it
    assert "'data/names.txt'" in err.value.summary()
    # as shipped, the example installs
    assert api.install(site, EXAMPLES / "helloworld").created


def test_a_reinstall_keeps_the_display_name_and_an_empty_id_is_refused(tmp_path: Path) -> None:
    """Installing the same template again without --name reset its display name to the
    folder's; `--id ''` was taken as no id (found by review)."""
    from click.testing import CliRunner

    from flowbatch.cli import main

    from .conftest import EXAMPLES

    site = make_site(tmp_path / "site")
    folder = tmp_path / "tpl"
    folder.mkdir()
    shutil.copy(EXAMPLES / "helloworld" / "benchmark.yaml", folder / "benchmark.yaml")
    for sub in ("code", "data"):
        shutil.copytree(EXAMPLES / "helloworld" / sub, folder / sub)
    runner = CliRunner()
    base = ["--site", str(site.root), "install", str(folder), "--id", "hw"]
    assert "(Foo Bar)" in runner.invoke(main, [*base, "--name", "Foo Bar"]).output
    again = runner.invoke(main, base)
    assert again.exit_code == 0 and "already installed: workflow hw (Foo Bar)" in again.output
    assert site.templates.meta("hw")["name"] == "Foo Bar"
    renamed = runner.invoke(main, [*base, "--name", "Other"])
    assert "(Other)" in renamed.output
    empty = runner.invoke(main, ["--site", str(site.root), "install", str(folder), "--id", ""])
    assert empty.exit_code == 2 and "--id" in empty.output
    site.close()


def test_an_input_a_file_parameter_brings_is_no_missing_file(site: Site, tmp_path: Path) -> None:
    """flowServ templates list their file parameters' targets among their inputs: such a
    template was refused by the check of the files it ships (found by review)."""
    folder = tmp_path / "t"
    (folder / "code").mkdir(parents=True)
    (folder / "code" / "run.py").write_text("print('hi')\n")
    (folder / "benchmark.yaml").write_text(
        "workflow:\n  files:\n    inputs: [code/run.py, data/names.txt]\n"
        "  parameters:\n    names: $[[names]]\n  steps:\n    - name: s\n      action:\n"
        "        commands: ['${python} code/run.py data/names.txt']\n"
        "parameters:\n  - {name: names, dtype: file, target: data/names.txt}\n"
    )
    assert api.install(site, folder, workflow_id="tt").created


def test_a_missing_value_the_template_needs_is_the_requests_field(
    site: Site, tmp_path: Path
) -> None:
    """An optional parameter with no default that the workflow uses: a request without it
    was refused with the template's field ("workflow.parameters.f: missing argument"), no
    file named and no hint (found by review). It is the request's field now."""
    from flowbatch.errors import FlowbatchError

    template = tmp_path / "opt"
    template.mkdir()
    (template / "benchmark.yaml").write_text(
        "workflow:\n  parameters:\n    f: $[[f]]\n  steps:\n    - name: s\n"
        "      action: {environment: bash, commands: ['echo ${f}']}\n"
        "parameters:\n  - {name: f, dtype: string, isRequired: false}\n",
        encoding="utf-8",
    )
    api.install(site, template, workflow_id="opt")
    request = tmp_path / "a.yaml"
    request.write_text("workflow: opt\narguments: {}\n", encoding="utf-8")
    with pytest.raises(FlowbatchError) as refused:
        api.validate(request, site)
    assert refused.value.file == str(request) and refused.value.field == "arguments.f"
    assert "give `f:` a value" in refused.value.summary()


def test_a_missing_request_field_says_what_it_is_for() -> None:
    """ "missing field 'workflow'" came with no hint (found by review)."""
    from flowbatch.spec.request import parse_request

    with pytest.raises(RequestError) as missing:
        parse_request({"arguments": {"n": 1}}, file="r.yaml")
    assert missing.value.field == "workflow"
    assert "flowbatch workflows list" in (missing.value.hint or "")
