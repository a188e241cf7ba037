"""Waiting for runs from the command line: ``submit --wait``, ``runs rerun --wait``,
``runs wait`` (a real daemon process serving the site), and ``runs list --request/--last``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowbatch import api, waiting
from flowbatch.cli import main
from flowbatch.site import Site

from .conftest import drop, make_site, run_until_idle, serving

TEMPLATE = """\
workflow:
  files:
    outputs:
      - results.json
  parameters:
    n: $[[n]]
  steps:
    - name: main
      action:
        environment: bash
        commands:
          - test ${n} -ge 0 || { echo "negative n" >&2; exit 3; }
          - if [ ${n} -ge 100 ]; then sleep 30; fi
          - printf '{"score":%d}\\n' ${n} > results.json
parameters:
  - name: n
    label: N
    dtype: int
    defaultValue: 0
results:
  file: results.json
  schema:
    - name: score
      label: Score
      dtype: int
  orderBy:
    - name: score
      sortDesc: true
"""


@pytest.fixture
def wsite(tmp_path: Path) -> Iterator[Site]:
    site = make_site(tmp_path / "site")
    template = tmp_path / "template"
    template.mkdir()
    (template / "benchmark.yaml").write_text(TEMPLATE, encoding="utf-8")
    api.install(site, template, workflow_id="w")
    yield site
    site.close()


def request(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(f"workflow: w\n{body}", encoding="utf-8")
    return path


def program(site: Site, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowbatch", "--site", str(site.root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def daemon(wsite: Site) -> Iterator[subprocess.Popen[bytes]]:
    """A real daemon process serving the site; stopped by its own PID."""
    with serving(wsite.root) as proc:
        yield proc


def test_submit_wait_prints_the_runs_and_exits_0_when_they_succeeded(
    wsite: Site, tmp_path: Path, daemon: subprocess.Popen[bytes]
) -> None:
    req = request(tmp_path, "good.yaml", "sweep:\n  n: [1, 2, 3]\n")
    done = program(wsite, "submit", "--wait", str(req))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    name = lines[0]
    assert name.startswith("good-") and name.endswith(".yaml")
    runs = json.loads(program(wsite, "runs", "list", "--request", name, "--json").stdout)
    assert len(runs) == 3 and {r["state"] for r in runs} == {"SUCCESS"}
    # the table: every run, with its result; the progress on stderr
    for run in runs:
        row = next(line for line in lines if line.startswith(run["id"]))
        assert "SUCCESS" in row and "score=" in row
        assert f"run {run['id']}: SUCCESS" in done.stderr
    assert {f"score={n}" for n in (1, 2, 3)} <= set(done.stdout.split())


def test_submit_wait_exits_1_and_says_why_a_run_failed(
    wsite: Site, tmp_path: Path, daemon: subprocess.Popen[bytes]
) -> None:
    req = request(tmp_path, "mixed.yaml", "sweep:\n  n: [-1, 5]\n")
    done = program(wsite, "submit", "--wait", str(req))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "ERROR" in done.stdout and "SUCCESS" in done.stdout
    failed = next(line for line in done.stderr.splitlines() if "ERROR" in line)
    assert "(" in failed  # the run's first message, beside its state
    # submitted again: both points skipped, one of them because it failed: no success
    # (it exited 0, "made no run": found by review)
    again = program(wsite, "submit", "--wait", str(req))
    assert again.returncode == 1, (again.stdout, again.stderr)
    assert "made no run" in again.stdout
    assert "1 point(s) skipped because their runs had failed" in again.stderr


def test_a_rejected_request_ends_the_wait_with_its_error(
    wsite: Site, tmp_path: Path, daemon: subprocess.Popen[bytes]
) -> None:
    """The daemon's own checks refuse what `submit` cannot see: here the workflow was
    removed after the request was queued (the daemon is stopped meanwhile)."""
    daemon.send_signal(signal.SIGSTOP)
    try:
        name = program(wsite, "submit", str(request(tmp_path, "late.yaml", "arguments:\n  n: 1\n")))
        assert name.returncode == 0, name.stderr
        queued = name.stdout.strip()
        # the request names a workflow the site no longer has
        path = wsite.layout.queue / queued
        path.write_text(path.read_text().replace("workflow: w", "workflow: gone"))
    finally:
        daemon.send_signal(signal.SIGCONT)
    result = CliRunner().invoke(
        main, ["--site", str(wsite.root), "runs", "wait", "--request", queued, "--timeout", "60"]
    )
    assert result.exit_code == 1, result.output
    assert "rejected" in result.output and "gone" in result.output
    assert (wsite.layout.rejected / queued).exists()  # the request stays, beside its error


def test_the_wait_gives_up_after_its_timeout_and_the_run_goes_on(
    wsite: Site, tmp_path: Path, daemon: subprocess.Popen[bytes]
) -> None:
    req = request(tmp_path, "slow.yaml", "arguments:\n  n: 100\n")
    started = time.monotonic()
    done = program(wsite, "submit", "--wait", "--timeout", "3", str(req))
    assert done.returncode == 124, (done.stdout, done.stderr)
    assert time.monotonic() - started < 30
    runs = json.loads(
        program(wsite, "runs", "list", "--request", done.stdout.splitlines()[0], "--json").stdout
    )
    assert len(runs) == 1 and runs[0]["state"] in ("PENDING", "RUNNING")
    assert f"still active: {runs[0]['id']}" in done.stderr
    # runs wait on the run itself: a timeout too, then its end once cancelled
    assert program(wsite, "runs", "wait", runs[0]["id"], "--timeout", "0.5").returncode == 124
    assert program(wsite, "runs", "cancel", runs[0]["id"], "--wait", "30").returncode == 0
    ended = program(wsite, "runs", "wait", runs[0]["id"], "--timeout", "30")
    assert ended.returncode == 1 and "CANCELED" in ended.stdout


def test_rerun_wait(wsite: Site, tmp_path: Path, daemon: subprocess.Popen[bytes]) -> None:
    first = program(
        wsite, "submit", "--wait", str(request(tmp_path, "a.yaml", "arguments:\n  n: 7\n"))
    )
    assert first.returncode == 0, first.stderr
    run_id = first.stdout.splitlines()[-1].split()[0]
    again = program(wsite, "runs", "rerun", run_id, "--wait")
    assert again.returncode == 0, again.stderr
    assert "score=7" in again.stdout and run_id not in again.stdout.split()


def test_a_request_no_daemon_claims_is_pointed_out(
    wsite: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(waiting, "UNCLAIMED_NOTE", 0.3)
    req = request(tmp_path, "idle.yaml", "arguments:\n  n: 1\n")
    result = CliRunner().invoke(
        main, ["--site", str(wsite.root), "submit", "--wait", "--timeout", "1", str(req)]
    )
    assert result.exit_code == 124, result.output
    assert "still in the queue" in result.output and "flowbatch doctor" in result.output
    assert "no run made yet" in result.output
    # found by review: it said "made no run (every point had run already)" as well
    assert "made no run" not in result.output


def test_unknown_run_ids_are_refused_before_waiting(wsite: Site) -> None:
    result = CliRunner().invoke(main, ["--site", str(wsite.root), "runs", "wait", "nosuchrun"])
    assert result.exit_code == 1 and "unknown run" in result.output


def test_request_stage_follows_the_claim_on_a_shared_site(wsite: Site) -> None:
    layout = wsite.layout
    assert waiting.request_stage(layout, "x-abc123.yaml") == waiting.DONE
    (layout.queue / "x-abc123.yaml").write_text("workflow: w\n")
    assert waiting.request_stage(layout, "x-abc123.yaml") == waiting.QUEUED
    host = layout.claimed / "node07"
    host.mkdir()
    os.rename(layout.queue / "x-abc123.yaml", host / "0123456789ab--x-abc123.yaml")
    assert waiting.request_stage(layout, "x-abc123.yaml") == waiting.CLAIMED
    # a request whose name ends the same is another one
    assert waiting.request_stage(layout, "abc123.yaml") == waiting.DONE
    # a host folder named like an IDN (`xn--...`)
    idn = layout.claimed / "xn--node-9ja"
    idn.mkdir()
    os.rename(host / "0123456789ab--x-abc123.yaml", idn / "0123456789ab--x-abc123.yaml")
    assert waiting.request_stage(layout, "x-abc123.yaml") == waiting.CLAIMED


def test_runs_list_by_request_and_the_newest(wsite: Site) -> None:
    for i in range(4):
        drop(wsite, f"r{i}.yaml", {"workflow": "w", "arguments": {"n": i}})
        run_until_idle(wsite).stop()
    every = api.list_runs(wsite)
    assert len(every) == 4
    assert [r["id"] for r in api.list_runs(wsite, last=2)] == [r["id"] for r in every[-2:]]
    one = api.list_runs(wsite, request="r2.yaml")
    assert len(one) == 1 and one[0]["id"] == every[2]["id"]
    out = CliRunner().invoke(main, ["--site", str(wsite.root), "runs", "list", "-n", "1"])
    assert out.exit_code == 0 and every[3]["id"] in out.output and every[0]["id"] not in out.output


def test_a_host_folder_named_like_a_run_id_is_looked_in(wsite: Site) -> None:
    """A shared site's daemon on a host whose name is twelve hex digits (a container's):
    its claims were not found, and a wait ended at once (found by review)."""
    layout = wsite.layout
    host = layout.claimed / "3f2a9b8c7d6e"
    host.mkdir()
    (host / "0123456789ab--x-abc123.yaml").write_text("workflow: w\n")
    assert waiting.claim_of(layout, "x-abc123.yaml") == (waiting.CLAIMED, "0123456789ab")


def test_the_runs_come_from_the_tree_when_the_index_lags(
    wsite: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim can be settled before the index commit that holds the runs' rows: the
    wait said "made no run" and exited 0 for a run that failed (found by review)."""
    from flowbatch.store.index import RunRow

    drop(wsite, "f.yaml", {"workflow": "w", "arguments": {"n": -1}})
    run_until_idle(wsite).stop()
    (run,) = api.list_runs(wsite)
    assert run["state"] == "ERROR"
    RunRow.delete().execute()  # the index as it was before its commit
    looks = iter([(waiting.CLAIMED, run["id"])])
    monkeypatch.setattr(waiting, "claim_of", lambda layout, name: next(looks, (waiting.DONE, None)))
    outcome = waiting.wait_request(wsite, "f.yaml", timeout=30, sleep=lambda s: None)
    assert [(r["id"], r["state"]) for r in outcome.runs] == [(run["id"], "ERROR")]
    assert outcome.exit_code == 1


def test_an_older_request_of_the_same_name_is_not_this_one(wsite: Site) -> None:
    """A request dropped by hand under a name used before: the earlier one's rejection
    and runs were taken for its own (found by review)."""
    drop(wsite, "r.yaml", {"workflow": "w", "arguments": {"n": -1}})  # an ERROR run
    run_until_idle(wsite).stop()
    drop(wsite, "r.yaml", {"workflow": "nowhere"})  # a rejection
    run_until_idle(wsite).stop()
    assert (wsite.layout.rejected / "r.yaml.error.yaml").exists()
    assert [r["state"] for r in api.list_runs(wsite, request="r.yaml")] == ["ERROR"]
    time.sleep(waiting.CLOCK_SLACK + 0.1)
    since = time.time()
    drop(wsite, "r.yaml", {"workflow": "w", "arguments": {"n": 3}})
    run_until_idle(wsite).stop()
    outcome = waiting.wait_request(wsite, "r.yaml", timeout=30, since=since)
    assert outcome.rejected is None and [r["state"] for r in outcome.runs] == ["SUCCESS"]
    assert outcome.exit_code == 0


def test_a_request_name_never_seen_is_an_error(
    wsite: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mistyped name exited 0, "made no run (every point had run already)" (found by
    review): a name with no trace in the queue, the claims, the rejections and the index
    is an error. A request that existed and made no run still exits 0."""
    monkeypatch.setattr(waiting, "NO_RUN_GRACE", 0.2)
    result = CliRunner().invoke(
        main, ["--site", str(wsite.root), "runs", "wait", "--request", "no-such-request.yaml"]
    )
    assert result.exit_code == 1, result.output
    assert "no request named 'no-such-request.yaml'" in result.output
    # one that ran: known by its runs in the index, long after its claim went
    drop(wsite, "ran.yaml", {"workflow": "w"})
    run_until_idle(wsite)
    result = CliRunner().invoke(
        main, ["--site", str(wsite.root), "runs", "wait", "--request", "ran.yaml"]
    )
    assert result.exit_code == 0 and "SUCCESS" in result.output, result.output
    # where the error's hint sends the user (it named a column `runs list` lacks)
    assert "`flowbatch runs list --json`, key `request`" in "".join(
        CliRunner()
        .invoke(main, ["--site", str(wsite.root), "runs", "wait", "--request", "x.yaml"])
        .output.split("\n")
    )
    listed = CliRunner().invoke(main, ["--site", str(wsite.root), "runs", "list", "--json"])
    assert [r["request"] for r in json.loads(listed.output)] == ["ran.yaml"]


@pytest.mark.skipif(os.geteuid() != 0, reason="a run.json of another user's")
def test_a_run_whose_record_cannot_be_read_is_said_not_taken_for_no_run(
    wsite: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request made a run whose run.json this reader refuses (here: no longer the
    daemon's): the wait says why, where it said the request "made no run" and exited 0
    (found by review, on a root daemon's service-user site)."""
    from flowbatch.errors import FlowbatchError

    monkeypatch.setattr(waiting, "NO_RUN_GRACE", 0.2)
    since = time.time()
    drop(wsite, "r.yaml", {"workflow": "w", "arguments": {"n": 3}})
    run_until_idle(wsite).stop()
    (run,) = api.list_runs(wsite)
    record = wsite.store.run_dir(wsite.store.load(run["id"])) / "run.json"
    os.chown(record, 65534, 65534)
    with pytest.raises(FlowbatchError, match=r"not trusted|replaced"):
        waiting.wait_request(wsite, "r.yaml", timeout=10, since=since)
