"""Post-processing workflows end to end through a real daemon (seed-inventory §4): the
trigger (the set of best runs per group changed), the staged runs folder, the outputs on
the leaderboard, and failures that are shown but leave the ranking alone."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from flowbatch import api
from flowbatch.postproc import load_record, postproc_root, read_state
from flowbatch.site import Site

from .conftest import EXAMPLES, drop, make_site, python_for_others, run_until_idle, write_template


@pytest.fixture
def tmp_path(public_tmp: Path) -> Path:
    """The sites here (and the ``site`` fixture's) in a folder other users can pass
    through: a root daemon post-processes as another user (flowbatch.postproc_user),
    who must reach the site, and pytest's own folders are 0700 (and shared by every
    session of the machine's root, so opening them up would not last)."""
    return public_tmp


def pi_request(group: str, samples: int, seed: int = 1) -> dict[str, object]:
    return {"workflow": "plots", "group": group, "arguments": {"samples": samples, "seed": seed}}


def postproc_ids(site: Site, workflow: str) -> list[str]:
    root = postproc_root(site, workflow)
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def test_plots_example(tmp_path: Path) -> None:
    # ${python} is the daemon's interpreter: one the post-processing's user can run
    site = make_site(tmp_path / "site", {"variables": {"python": python_for_others()}})
    api.install(site, EXAMPLES / "plots", workflow_id="plots")
    for group, samples in (("alice", 1000), ("bob", 20000), ("carol", 200000)):
        drop(site, f"{group}.yaml", pi_request(group, samples))
    run_until_idle(site)
    board = json.loads((site.layout.workflow_results("plots") / "leaderboard.json").read_text())
    ranked = [e["run"]["id"] for e in board["ranking"]]
    assert len(ranked) == 3

    # the last post-processing run saw the current best runs, in rank order
    state = read_state(site, "plots")
    assert state["ranking"] == sorted(ranked)
    record = load_record(site, "plots", state["latest"])
    assert record is not None and record.state == "SUCCESS", record
    assert state["last_success"] == record.id and record.ranked == ranked
    folder = postproc_root(site, "plots") / record.id
    listing = json.loads((folder / "runs" / "runs.json").read_text())
    assert listing == [
        {"id": e["run"]["id"], "name": e["group"], "files": ["results/score.json"]}
        for e in board["ranking"]
    ]
    for run_id in ranked:  # each run's listed file, staged at runs/<run id>/<file>
        staged = folder / "runs" / run_id / "results" / "score.json"
        original = Path(api.show_run(site, run_id)["run_dir"]) / "results" / "score.json"
        assert staged.read_bytes() == original.read_bytes()
    assert (folder / "results" / "errors.svg").read_text().startswith("<svg")

    # its outputs are on the leaderboard: the plot inline, the table as a table
    html = (site.layout.workflow_results("plots") / "leaderboard.html").read_text()
    assert '<img src="data:image/svg+xml;base64,' in html
    assert "Error of the best run per group</h3>" in html
    assert "<th>estimate</th>" in html and f"<td>{ranked[0]}</td>" in html
    assert board["postproc"]["shown"] == record.id
    # each output's link keeps its path's "/" (encoded, it led nowhere from file://)
    assert f'href="postproc/{record.id}/results/errors.svg"' in html
    assert "%2F" not in html

    # a worse run of a group changes no best run: no new post-processing
    before = postproc_ids(site, "plots")
    drop(site, "worse.yaml", pi_request("alice", 1, seed=5))  # error >= 0.85
    run_until_idle(site)
    assert len(api.list_runs(site, state="SUCCESS")) == 4
    assert postproc_ids(site, "plots") == before

    # a new group changes the set: it runs again
    drop(site, "dave.yaml", pi_request("dave", 5000, seed=7))
    run_until_idle(site)
    after = postproc_ids(site, "plots")
    assert len(after) == len(before) + 1
    assert len(read_state(site, "plots")["ranking"]) == 4


FAILING = """
workflow:
  steps:
    - name: score
      action:
        environment: x
        commands: ["mkdir -p results && echo '{{\\"s\\": $[[s]]}}' > results/r.json"]
parameters:
  - {{name: s, dtype: int}}
results:
  file: results/r.json
  schema: [{{name: s, label: S, dtype: int}}]
postproc:
  workflow:
    steps:
      - name: plot
        action:
          environment: x
          commands: ["test -f $[[runs]]/runs.json", "echo plotting went wrong >&2; exit 4"]
  inputs: {{files: [{inputs}]}}
"""


def test_failing_postproc_is_shown_and_ranking_kept(site: Site, tmp_path: Path) -> None:
    api.install(
        site,
        write_template(tmp_path / "f", FAILING.format(inputs="results/r.json")),
        workflow_id="f",
    )
    drop(site, "a.yaml", {"workflow": "f", "group": "a", "arguments": {"s": 3}})
    drop(site, "b.yaml", {"workflow": "f", "group": "b", "arguments": {"s": 7}})
    run_until_idle(site)
    state = read_state(site, "f")
    record = load_record(site, "f", state["latest"])
    assert record is not None and record.state == "ERROR"
    assert record.messages[0] == "step 1 (plot) failed with exit code 4"
    assert "plotting went wrong" in record.messages[1]
    assert state["last_success"] is None
    board = json.loads((site.layout.workflow_results("f") / "leaderboard.json").read_text())
    assert [e["group"] for e in board["ranking"]] == ["b", "a"]  # the ranking is untouched
    assert board["postproc"]["latest"]["state"] == "ERROR"
    html = (site.layout.workflow_results("f") / "leaderboard.html").read_text()
    assert '<div class="card error">' in html and "plotting went wrong" in html
    # not retried while the set of best runs stays the same
    count = len(postproc_ids(site, "f"))
    drop(site, "c.yaml", {"workflow": "f", "group": "a", "arguments": {"s": 1}})
    run_until_idle(site)
    assert len(postproc_ids(site, "f")) == count


def test_staging_failure_is_an_error_at_once(site: Site, tmp_path: Path) -> None:
    src = write_template(tmp_path / "g", FAILING.format(inputs="results/missing.json"))
    api.install(site, src, workflow_id="g")
    drop(site, "a.yaml", {"workflow": "g", "group": "a", "arguments": {"s": 3}})
    run_until_idle(site)
    record = load_record(site, "g", read_state(site, "g")["latest"])
    assert record is not None and record.state == "ERROR" and record.handle is None
    assert "has no file 'results/missing.json' to post-process" in record.messages[0]
    html = (site.layout.workflow_results("g") / "leaderboard.html").read_text()
    assert "has no file &#39;results/missing.json&#39; to post-process" in html


SLOW_PLOT = FAILING.replace(
    '["test -f $[[runs]]/runs.json", "echo plotting went wrong >&2; exit 4"]',
    '["test -f $[[runs]]/runs.json", "sleep 1"]',
)


def test_post_processing_takes_a_local_slot(tmp_path: Path) -> None:
    """With `local.concurrency: 1` a post-processing run is one of the processes on the
    cores: it never runs at the same time as a run (it waits for a free slot, and runs
    wait while it runs), and it still runs for the final ranking."""
    from datetime import datetime

    site = make_site(tmp_path / "site", {"local": {"concurrency": 1}})
    api.install(
        site,
        write_template(tmp_path / "p", SLOW_PLOT.format(inputs="results/r.json")),
        workflow_id="p",
    )
    for name, score in (("a", 3), ("b", 7), ("c", 5)):
        drop(
            site,
            f"{name}.yaml",
            {"workflow": "p", "group": name, "name": name, "arguments": {"s": score}},
        )
    run_until_idle(site)
    runs = [api.show_run(site, r["id"]) for r in api.list_runs(site)]
    assert {r["state"] for r in runs} == {"SUCCESS"}
    records = [load_record(site, "p", i) for i in postproc_ids(site, "p")]
    assert records and all(r is not None and r.state == "SUCCESS" for r in records)

    def span(start: str | None, end: str | None) -> tuple[datetime, datetime]:
        assert start and end
        return datetime.fromisoformat(start), datetime.fromisoformat(end)

    plots = [span(r.started_at, r.finished_at) for r in records if r is not None]
    for run in runs:
        begin, end = span(run["started_at"], run["finished_at"])
        for p_begin, p_end in plots:
            assert end <= p_begin or p_end <= begin, (run["name"], plots)
    latest = max(records, key=lambda r: r.started_at or "")  # type: ignore[union-attr]
    assert latest is not None and sorted(latest.ranking) == sorted(r["id"] for r in runs)


QUICK_PLOT = FAILING.replace(
    '["test -f $[[runs]]/runs.json", "echo plotting went wrong >&2; exit 4"]',
    '["test -f $[[runs]]/runs.json"]',
)


def test_cleanup_removes_old_post_processing_but_the_one_shown(site: Site, tmp_path: Path) -> None:
    from flowbatch.lifecycle_ops import cleanup

    api.install(
        site,
        write_template(tmp_path / "q", QUICK_PLOT.format(inputs="results/r.json")),
        workflow_id="q",
    )
    for group, score in (("a", 1), ("b", 2), ("c", 3)):  # each changes the best runs
        drop(site, f"{group}.yaml", {"workflow": "q", "group": group, "arguments": {"s": score}})
        run_until_idle(site)
    ids = postproc_ids(site, "q")
    assert len(ids) == 3
    state = read_state(site, "q")
    assert state["latest"] == state["last_success"]
    older = sorted(set(ids) - {state["latest"]})
    dry = cleanup(site, "2999-01-01", workflow="q", dry_run=True)
    assert sorted(e["id"] for e in dry.postproc_removed) == older
    assert postproc_ids(site, "q") == ids  # a dry run removes nothing
    assert cleanup(site, "2999-01-01", workflow="q", state="SUCCESS").postproc_removed == []
    report = cleanup(site, "2999-01-01", workflow="q")
    assert sorted(e["id"] for e in report.postproc_removed) == older
    assert postproc_ids(site, "q") == [state["latest"]]
    assert report.removed == [] and len(report.spared) == 3  # the runs feed the one shown
    board = json.loads((site.layout.workflow_results("q") / "leaderboard.json").read_text())
    assert board["postproc"]["latest"]["id"] == state["latest"]


NATIVE_PLOT = """
flowbatch: 1
workflow:
  steps:
    - name: score
      action:
        commands:
          - mkdir -p results
          - >-
            printf '{"s": %d}' {{ s }} > results/r.json
parameters:
  - {name: s, dtype: int}
results:
  file: results/r.json
  schema: [{name: s, label: S, dtype: int}]
postproc:
  workflow:
    steps:
      - name: plot
        action:
          commands: ["ls {{ runs }} > listing.txt", "test -f {{ runs }}/runs.json"]
  inputs: {files: [results/r.json]}
"""


def test_native_post_processing_names_the_runs_folder(site: Site, tmp_path: Path) -> None:
    """`{{ runs }}` in a native (Jinja) template's post-processing is the folder of the
    ranked runs' files, as `$[[runs]]` is in flowServ's dialect."""
    api.install(site, write_template(tmp_path / "n", NATIVE_PLOT), workflow_id="n")
    drop(site, "a.yaml", {"workflow": "n", "group": "a", "arguments": {"s": 4}})
    run_until_idle(site)
    state = read_state(site, "n")
    record = load_record(site, "n", state["latest"])
    assert record is not None and record.state == "SUCCESS", record
    listing = (postproc_root(site, "n") / record.id / "listing.txt").read_text().split()
    assert "runs.json" in listing


def test_post_processing_left_waiting_by_a_stopped_daemon_starts_after_a_restart(
    tmp_path: Path,
) -> None:
    """A workflow whose post-processing waited for a local slot when the daemon stopped
    is asked again by the next daemon (its set of best runs changed since the last one)."""
    from flowbatch.daemon import Daemon
    from flowbatch.site import Site as SiteClass

    site = make_site(tmp_path / "site")
    api.install(
        site,
        write_template(tmp_path / "q", QUICK_PLOT.format(inputs="results/r.json")),
        workflow_id="q",
    )
    drop(site, "a.yaml", {"workflow": "q", "group": "a", "arguments": {"s": 1}})
    first = Daemon(site)
    first.postproc.room = lambda: False  # every slot taken when it would have started
    first.start()
    try:
        for _ in range(50):
            first.tick()
            if api.list_runs(site) and api.list_runs(site)[0]["state"] == "SUCCESS":
                first.tick()
                break
            time.sleep(0.05)
        assert first.postproc.deferred == {"q"} and postproc_ids(site, "q") == []
    finally:
        first.stop()  # stopped with it still waiting
    site.close()
    again = SiteClass(site.root)
    run_until_idle(again)
    ids = postproc_ids(again, "q")
    assert len(ids) == 1
    record = load_record(again, "q", ids[0])
    assert record is not None and record.state == "SUCCESS"


def test_post_processing_is_timed_by_its_scripts_markers(site: Site, tmp_path: Path) -> None:
    """A post-processing's start and end are the ones its script marked (as a run's), not
    when the daemon saw them: a slow tick does not stretch its time."""
    from flowbatch.lifecycle import iso
    from flowbatch.render import read_markers

    api.install(
        site,
        write_template(tmp_path / "f", FAILING.format(inputs="results/r.json")),
        workflow_id="f",
    )
    drop(site, "a.yaml", {"workflow": "f", "group": "a", "arguments": {"s": 3}})
    run_until_idle(site)
    state = read_state(site, "f")
    record = load_record(site, "f", state["latest"])
    assert record is not None and record.state == "ERROR"
    markers = read_markers(postproc_root(site, "f") / record.id)
    assert markers.started is not None and markers.exit is not None
    assert (record.started_at, record.finished_at) == (
        iso(markers.started[1]),
        iso(markers.exit[1]),
    )


def test_a_deleted_best_run_is_post_processed_again(site: Site, tmp_path: Path) -> None:
    """`runs delete` of a group's best run changes the best runs per group: the daemon
    starts the post-processing again (it went on showing one over the deleted run, with
    a daemon serving: found by review). A version switch by `install` rewrites the
    leaderboard files at once (they kept the old version's runs until a run ended)."""
    import subprocess
    import sys

    from flowbatch.daemon import Daemon

    api.install(
        site,
        write_template(tmp_path / "q", QUICK_PLOT.format(inputs="results/r.json")),
        workflow_id="q",
    )
    for name, score in (("low", 1), ("high", 5)):
        drop(
            site,
            f"{name}.yaml",
            {"workflow": "q", "group": "a", "name": name, "arguments": {"s": score}},
        )
        run_until_idle(site)
    [best] = read_state(site, "q")["ranking"]
    other = next(r["id"] for r in api.list_runs(site) if r["id"] != best)
    d = Daemon(site)  # serving before the delete (a start looks at every workflow)
    d.start()
    d.tick()
    deleted = subprocess.run(
        [sys.executable, "-m", "flowbatch", "--site", str(site.root), "runs", "delete", best],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert deleted.returncode == 0, deleted.stderr
    try:
        deadline = time.monotonic() + 30
        while read_state(site, "q")["ranking"] != [other]:
            assert time.monotonic() < deadline, read_state(site, "q")
            d._others_at = 0.0  # the daemon's idle look at others' notes, now
            d.tick()
            time.sleep(0.05)
    finally:
        d.stop()
    # another version current: its leaderboard files at once, with no run of it yet
    api.install(
        site,
        write_template(tmp_path / "q2", QUICK_PLOT.format(inputs="results/r.json") + "\n# v2\n"),
        workflow_id="q",
    )
    board = json.loads((site.layout.workflow_results("q") / "leaderboard.json").read_text())
    assert board["ranking"] == [] and board["all"] == []  # the old version's run not shown


def test_post_processing_past_its_limit_that_ended_unwatched_is_an_error(
    site: Site, tmp_path: Path
) -> None:
    """As a run's (found by the re-review): one that went past its time limit while no
    daemon watched it, then ended well, is an ERROR saying so."""
    from flowbatch.daemon import Daemon

    slow = "timeLimit: 1\n" + FAILING.format(inputs="results/r.json").replace(
        '"echo plotting went wrong >&2; exit 4"', '"sleep 3"'
    )
    api.install(site, write_template(tmp_path / "s", slow), workflow_id="s")
    drop(site, "a.yaml", {"workflow": "s", "arguments": {"s": 1}})
    d = Daemon(site)
    d.start()
    deadline = time.monotonic() + 30
    while "s" not in d.postproc.active:
        assert time.monotonic() < deadline, "no post-processing started"
        d.tick()
        time.sleep(0.05)
    record = d.postproc.active["s"]
    d.stop()  # no daemon while it goes past its limit
    markers = postproc_root(site, "s") / record.id / "status" / "markers"
    while not markers.exists() or b"exit" not in markers.read_bytes():
        assert time.monotonic() < deadline + 30, "it never ended"
        time.sleep(0.05)
    run_until_idle(site)
    ended = load_record(site, "s", record.id)
    assert ended is not None and ended.state == "ERROR", ended
    assert ended.messages[0].startswith("time limit exceeded: it ran 3 s, past its limit of 1 s")


def test_the_leaderboard_shows_only_post_processing_of_its_version_and_runs(
    site: Site, tmp_path: Path
) -> None:
    """Found by review: after its only run was deleted, or a new template version was
    installed, the leaderboard went on showing the post-processing over the runs gone or
    of the old version (its chart naming them), beside "No successful runs yet"."""
    from flowbatch.lifecycle_ops import delete_run

    def board() -> str:
        return (site.layout.workflow_results("q") / "leaderboard.html").read_text()

    folder = write_template(tmp_path / "q", QUICK_PLOT.format(inputs="results/r.json"))
    api.install(site, folder, workflow_id="q")
    drop(site, "a.yaml", {"workflow": "q", "group": "a", "arguments": {"s": 1}})
    drop(site, "b.yaml", {"workflow": "q", "group": "b", "arguments": {"s": 2}})
    run_until_idle(site)
    assert "<h2>Post-processing</h2>" in board() and "earlier set" not in board()
    # one best run deleted: the outputs over the earlier set say so until the new ones
    first = next(r["id"] for r in api.list_runs(site) if r["group"] == "a")
    delete_run(site, first)
    assert "over an earlier set of best runs" in board()
    run_until_idle(site)
    assert "earlier set" not in board()
    # every run deleted: no outputs over runs that are gone
    for run in api.list_runs(site):
        delete_run(site, run["id"])
    run_until_idle(site)
    assert "<h2>Post-processing</h2>" not in board()
    # a new version: nothing of the old one's
    drop(site, "c.yaml", {"workflow": "q", "group": "c", "arguments": {"s": 3}})
    run_until_idle(site)
    assert "<h2>Post-processing</h2>" in board()
    (folder / "workflow.yaml").write_text((folder / "workflow.yaml").read_text() + "\n# v2\n")
    assert api.install(site, folder, workflow_id="q").created
    assert "<h2>Post-processing</h2>" not in board()
    # the site's front page counts the runs of the version the leaderboard shows
    front = (site.layout.results / "index.html").read_text()
    assert '<span class="badge SUCCESS">SUCCESS 0</span>' in front


def test_a_post_processing_left_running_holds_its_slot_from_the_first_tick(
    tmp_path: Path,
) -> None:
    """Found by review (a cron site): a tick took a post-processing run an earlier tick
    left running for its own only at its first look at them, after its first launches:
    it started a whole slot count of runs beside it."""
    from flowbatch.daemon import Daemon

    gate = tmp_path / "gate"
    site = make_site(tmp_path / "site", {"local": {"concurrency": 1}})
    slow = FAILING.format(inputs="results/r.json").replace(
        '"echo plotting went wrong >&2; exit 4"', f'"while [ ! -e {gate} ]; do sleep 0.05; done"'
    )
    api.install(site, write_template(tmp_path / "s", slow), workflow_id="s")
    drop(site, "a.yaml", {"workflow": "s", "group": "a", "arguments": {"s": 1}})
    d = Daemon(site)
    d.start()
    try:
        deadline = time.monotonic() + 30
        while "s" not in d.postproc.active:
            assert time.monotonic() < deadline, "no post-processing started"
            d.tick()
            time.sleep(0.05)
        d.stop()  # the tick ends; its post-processing goes on
        drop(site, "b.yaml", {"workflow": "s", "group": "b", "arguments": {"s": 2}})
        again = Daemon(site)
        again.start()
        again.tick()
        assert not again.runner.launched()  # the one slot is the post-processing's
        again.stop()
    finally:
        gate.touch()
    run_until_idle(site)
    assert sorted(r["state"] for r in api.list_runs(site)) == ["SUCCESS", "SUCCESS"]
    site.close()


STUBBORN_POSTPROC = "timeLimit: 1\n" + FAILING.format(inputs="results/r.json").replace(
    '"echo plotting went wrong >&2; exit 4"',
    "\"trap '' TERM; echo $$$$ > stubborn.pid; for i in $(seq 300); do sleep 0.1; done\"",
)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_post_processing_that_ignores_sigterm_holds_up_no_run(site: Site, tmp_path: Path) -> None:
    """A serving daemon ends a post-processing run over its time limit without waiting
    out the grace between SIGTERM and SIGKILL on its own thread (it waited 3 s, the whole
    daemon with it, as it did for runs before): a run dropped meanwhile ends first; the
    post-processing is an ERROR once SIGKILL has ended it."""
    from flowbatch.daemon import Daemon

    api.install(site, write_template(tmp_path / "s", STUBBORN_POSTPROC), workflow_id="s")
    drop(site, "a.yaml", {"workflow": "s", "group": "a", "arguments": {"s": 1}})
    d = Daemon(site)
    d.start()
    d.runner.defer_kills = d.postproc.defer_kills = True  # as serve() has them
    dropped: list[float] = []

    def drop_while_ending(daemon: Daemon) -> None:
        if getattr(daemon.postproc, "ending", None) and not dropped:
            dropped.append(time.monotonic())
            drop(site, "b.yaml", {"workflow": "s", "group": "a", "arguments": {"s": 0}})

    try:
        run_until_idle(site, daemon=d, timeout=60, each_tick=drop_while_ending)
    finally:
        d.stop()
    assert dropped, "the post-processing was never being ended while the daemon went on"
    records = [load_record(site, "s", rid) for rid in postproc_ids(site, "s")]
    stubborn = [r for r in records if r is not None and r.messages[:1] == ["time limit exceeded"]]
    assert len(stubborn) == 1, [r.messages for r in records if r is not None]
    b = [r for r in api.list_runs(site) if r["request"] == "b.yaml"]
    assert len(b) == 1 and b[0]["state"] == "SUCCESS"
    assert api.show_run(site, b[0]["id"])["finished_at"] < stubborn[0].finished_at
    pid = int((postproc_root(site, "s") / stubborn[0].id / "stubborn.pid").read_text())
    assert _gone(pid)


def test_a_daemon_stopping_while_it_ends_post_processing_concludes_it(
    site: Site, tmp_path: Path
) -> None:
    """The stop SIGKILLs what is left and records the time limit: a next daemon would
    have taken the SIGKILL for the script's own end."""
    from flowbatch.daemon import Daemon

    api.install(site, write_template(tmp_path / "s", STUBBORN_POSTPROC), workflow_id="s")
    drop(site, "a.yaml", {"workflow": "s", "group": "a", "arguments": {"s": 1}})
    d = Daemon(site)
    d.start()
    d.runner.defer_kills = d.postproc.defer_kills = True
    try:
        deadline = time.monotonic() + 30
        while not d.postproc.ending:
            assert time.monotonic() < deadline, "never being ended"
            d.wakeup.clear()
            d.tick()
            d.wakeup.wait(0.05)
        (record,) = d.postproc.active.values()
    finally:
        d.stop()
    ended = load_record(site, "s", record.id)
    assert ended is not None and ended.state == "ERROR", ended
    assert ended.messages[:1] == ["time limit exceeded"]
    pid = int((postproc_root(site, "s") / record.id / "stubborn.pid").read_text())
    assert _gone(pid)


def test_a_table_the_csv_module_cannot_read_is_shown_as_its_link(tmp_path: Path) -> None:
    """Found by review: a participant's string result with a carriage return, written
    by the organiser's post-processing into an unquoted CSV cell, raised in the
    leaderboard's writer, every time: no leaderboard of the workflow was written again.
    It is a table now; one the csv module refuses (a cell past its field limit) is shown
    as its link."""
    import csv

    from flowbatch.postproc import MAX_INLINE_TEXT, _output_view

    (tmp_path / "t.csv").write_text("group,note\nalice,x\ry\n")
    view = _output_view(tmp_path, "pp-1", {"source": "t.csv", "title": "T"})
    assert view.kind == "table" and view.table == [["group", "note"], ["alice", "x"], ["y"]]
    (tmp_path / "big.csv").write_text('a,"' + "x" * 1000 + '"\n')
    limit = csv.field_size_limit(100)  # a cell past the limit: its 128 KiB, made small
    try:
        view = _output_view(tmp_path, "pp-1", {"source": "big.csv", "title": "B"})
    finally:
        csv.field_size_limit(limit)
    assert view.kind != "table" and view.href.endswith("big.csv")
    assert MAX_INLINE_TEXT > 1000
