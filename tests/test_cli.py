"""The command line: every command has help; JSON shapes; one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from flowbatch.cli import main

from .conftest import EXAMPLES, daemon_modules, make_site


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in group.commands.items():
        out.append((*prefix, name))
        if isinstance(cmd, click.Group):
            out.extend(commands(cmd, (*prefix, name)))
    return out


@pytest.mark.parametrize("path", [(), *commands(main)])
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and len(result.output.splitlines()) > 3


def fb(site: Path, *args: str, ok: bool = True) -> str:
    result = CliRunner().invoke(main, ["--site", str(site), *args])
    if ok:
        assert result.exit_code == 0, result.output
    return result.output


def test_the_example_through_the_cli(tmp_path: Path) -> None:
    site = tmp_path / "site"
    assert "site ready" in fb(site, "init")
    make_site(site)  # short polling intervals for the test
    assert "installed: workflow helloworld" in fb(
        site, "install", str(EXAMPLES / "helloworld"), "--id", "helloworld"
    )
    assert "already installed: workflow helloworld" in fb(
        site, "install", str(EXAMPLES / "helloworld"), "--id", "helloworld"
    )
    # another version, then the first again: it says it is current again
    other = tmp_path / "hw2"
    shutil.copytree(EXAMPLES / "helloworld", other)
    with (other / "benchmark.yaml").open("a", encoding="utf-8") as fh:
        fh.write("\n# version 2\n")
    assert "installed: workflow helloworld" in fb(site, "install", str(other), "--id", "helloworld")
    assert "already installed, current again: workflow helloworld" in fb(
        site, "install", str(EXAMPLES / "helloworld"), "--id", "helloworld"
    )
    queued = fb(site, "submit", str(EXAMPLES / "helloworld/requests/alice.yaml")).strip()
    assert (site / "queue" / queued).exists()
    fb(site, "submit", str(EXAMPLES / "helloworld/requests/bob.yaml"))
    fb(site, "daemon", "--until-idle")
    runs = json.loads(fb(site, "runs", "list", "--json"))
    assert len(runs) == 2
    for run in runs:
        assert {
            "id",
            "workflow",
            "group",
            "name",
            "state",
            "created_at",
            "started_at",
            "finished_at",
        } <= set(run)
        assert run["state"] == "SUCCESS"
    shown = json.loads(fb(site, "runs", "show", runs[0]["id"], "--json"))
    assert {"arguments", "messages", "results", "files", "run_dir"} <= set(shown)
    board = json.loads(fb(site, "ranking", "helloworld", "--json"))
    assert board["workflow"] == "helloworld"
    assert [c["name"] for c in board["schema"]] == ["avg_count", "max_len", "max_line"]
    assert {"label", "dtype"} <= set(board["schema"][0])
    first = board["ranking"][0]
    assert first["rank"] == 1 and "id" in first["run"] and first["group"] == "bob"
    assert set(first["results"]) >= {"avg_count", "max_len"}
    text = fb(site, "ranking", "helloworld")
    assert "Avg. chars per line" in text and "alice" in text
    assert "SUCCESS" in fb(site, "runs", "list", "--state", "success")
    assert fb(site, "runs", "show", runs[0]["id"]).startswith("id:")
    # reindex from the tree alone gives the same listing and the same ranking
    (site / "index.db").unlink()
    assert "indexed 2 runs" in fb(site, "reindex")
    assert json.loads(fb(site, "runs", "list", "--json")) == runs
    assert json.loads(fb(site, "ranking", "helloworld", "--json")) == board


def test_ranking_text_keeps_result_columns_apart_from_the_fixed_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A result column labelled like a fixed column (``version``, ``rank``, ``group``,
    ``run``) or like another result shows its own values, not theirs."""
    from flowbatch import api

    site = tmp_path / "site"
    fb(site, "init")
    labels = ["version", "rank", "group", "run", "Score", "Score"]
    board = {
        "workflow": "wf",
        "schema": [
            {"name": f"c{i}", "label": label, "dtype": "string"} for i, label in enumerate(labels)
        ],
        "ranking": [
            {
                "rank": 1,
                "group": "alice",
                "run": {"id": "556a24e700bd", "name": None, "version": "v1"},
                "results": {f"c{i}": f"res{i}" for i in range(len(labels))},
            }
        ],
        "version": "v1",
        "current": "v1",
    }
    monkeypatch.setattr(api, "ranking", lambda *args, **kwargs: board)
    lines = fb(site, "ranking", "wf").splitlines()
    assert lines[0] == "version: v1 (current)"
    assert lines[1].split() == [
        *["RANK", "GROUP", "ID", "RUN", "VERSION"],
        *["VERSION", "RANK", "GROUP", "RUN", "SCORE", "SCORE"],
    ]
    assert lines[2].split() == ["1", "alice", "556a24e700bd", "v1", *[f"res{i}" for i in range(6)]]


def test_errors_are_one_line_with_nonzero_exit(tmp_path: Path) -> None:
    site = tmp_path / "site"
    fb(site, "init")
    out = fb(site, "runs", "show", "nosuchrun", ok=False)
    assert out.startswith("Error: ") and len(out.strip().splitlines()) == 1
    assert "unknown run" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("workflow:\n  steps: []\n")
    result = CliRunner().invoke(main, ["--site", str(site), "validate", str(bad)])
    assert result.exit_code != 0 and "bad.yaml" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_validate_template_and_request(tmp_path: Path) -> None:
    site = tmp_path / "site"
    fb(site, "init")
    assert "valid" in fb(site, "validate", str(EXAMPLES / "helloworld"))
    fb(site, "install", str(EXAMPLES / "helloworld"), "--id", "helloworld")
    out = fb(site, "validate", str(EXAMPLES / "helloworld/requests/alice.yaml"))
    assert "valid for workflow helloworld" in out
    req = tmp_path / "r.yaml"
    req.write_text("workflow: helloworld\narguments: {sleeptime: -1}\n")
    out = fb(site, "validate", str(req), ok=False)
    assert "arguments.sleeptime" in out
    assert list((site / "queue").glob("*.yaml")) == []  # nothing was submitted


def test_a_number_yaml_reads_otherwise_than_written_is_no_string(tmp_path: Path) -> None:
    """YAML 1.1 reads `12:30` as 750, `010` as 8, `1.10` as 1.1: a string parameter got
    the number's digits (found by review). validate, submit and the daemon refuse it with
    the hint to quote it; numbers for number parameters keep working, and a request that
    submit writes again keeps them as written."""
    site = tmp_path / "site"
    fb(site, "init")
    fb(site, "install", str(EXAMPLES / "helloworld"), "--id", "helloworld")
    for written, read in (("12:30", "750"), ("010", "8"), ("1.10", "1.1"), ("0x1F", "31")):
        req = tmp_path / "r.yaml"
        req.write_text(f"workflow: helloworld\narguments: {{greeting: {written}}}\n")
        for command in ("validate", "submit"):
            out = fb(site, command, str(req), ok=False)
            assert f"YAML reads '{written}' as the number {read}" in out, out
            assert f"quote the value in YAML to keep it as written: '{written}'" in out
        dropped = site / "queue" / f"n{read}.yaml"  # dropped by hand: the daemon says so
        dropped.write_text(req.read_text())
    req.write_text("workflow: helloworld\narguments: {greeting: '12:30', sleeptime: 0x0}\n")
    assert "valid for workflow helloworld" in fb(site, "validate", str(req))
    fb(site, "submit", str(req))
    make_site(site)  # short polling intervals for the test
    fb(site, "daemon", "--until-idle", ok=False)  # the requests dropped by hand: rejected
    runs = json.loads(fb(site, "runs", "list", "--json"))
    (run,) = [json.loads(fb(site, "runs", "show", r["id"], "--json")) for r in runs]
    assert run["arguments"]["greeting"] == "12:30" and run["arguments"]["sleeptime"] == 0
    errors = sorted((site / "queue" / "rejected").glob("*.error.yaml"))
    assert len(errors) == 4 and "as the number 750" in " ".join(e.read_text() for e in errors)


def test_second_daemon_exits_zero_with_a_message(tmp_path: Path) -> None:
    from flowbatch.daemon import SiteLock

    site = tmp_path / "site"
    fb(site, "init")
    lock = SiteLock(site / "daemon.lock")
    lock.acquire()
    try:
        out = fb(site, "daemon", "--once")
        assert "another flowbatch daemon" in out and len(out.strip().splitlines()) == 1
    finally:
        lock.release()
    fb(site, "daemon", "--once")


def test_a_cron_tick_takes_a_request_stamped_ahead_of_the_clock(tmp_path: Path) -> None:
    """A request copied with its writer's time (``cp -p`` from a host whose clock is ahead)
    looked unsettled to every ``--once`` tick, each looking once: it was never taken."""
    site = tmp_path / "site"
    fb(site, "init")
    fb(site, "install", str(EXAMPLES / "helloworld"), "--id", "helloworld")
    ahead = site / "queue" / "ahead.yaml"
    ahead.write_text((EXAMPLES / "helloworld/requests/alice.yaml").read_text())
    shutil.copy(EXAMPLES / "helloworld/requests/names.txt", site / "queue")  # its file
    soon = time.time() + 3600
    os.utime(ahead, (soon, soon))
    tick = _program(site, "daemon", "--once")
    assert tick.returncode == 0, tick.stderr
    assert "ahead.yaml is stamped 3600 s ahead of this host's clock" in tick.stderr
    assert "check the clock of the host that wrote it" in tick.stderr
    runs = json.loads(fb(site, "runs", "list", "--json"))
    assert [r["request"] for r in runs] == ["ahead.yaml"]
    assert not ahead.exists()


def test_cancel_without_a_daemon(tmp_path: Path) -> None:
    site = tmp_path / "site"
    fb(site, "init")
    make_site(site)
    fb(site, "install", str(EXAMPLES / "helloworld"), "--id", "helloworld")
    from flowbatch.queue import Intake
    from flowbatch.site import Site

    s = Site(site)
    (site / "queue" / "r.yaml").write_text("workflow: helloworld\n")
    run = Intake(s).run_once().runs[0]
    s.close()
    # a queue the daemon would refuse (others may write it, no sticky bit): a cancel
    # never touches the queue, so it is applied all the same
    (site / "queue").chmod(0o777)
    out = fb(site, "runs", "cancel", run.id, "--reason", "changed my mind")
    assert "CANCELED" in out
    (site / "queue").chmod(0o755)
    shown = json.loads(fb(site, "runs", "show", run.id, "--json"))
    assert shown["state"] == "CANCELED" and shown["messages"] == ["changed my mind"]
    out = fb(site, "runs", "cancel", run.id, ok=False)
    assert "not active" in out


def _program(site: Path, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    """The installed program's way in (``python -m flowbatch``, as the console script)."""
    return subprocess.run(
        [sys.executable, "-m", "flowbatch", "--site", str(site), *args],
        capture_output=True,
        text=True,
        timeout=120,
        **kw,  # type: ignore[arg-type]
    )


def test_a_daemon_that_ends_skips_the_teardown_and_loses_nothing(tmp_path: Path) -> None:
    """After a daemon that ended normally the process exits without the interpreter's
    teardown: its exit code, every log line and message, and a cleanly closed index
    (no write-ahead log left) are all there; a daemon that fails exits as usual."""
    import sqlite3

    from flowbatch import api

    from .conftest import drop, write_template

    site = make_site(tmp_path / "site")
    write_template(tmp_path / "t", "workflow:\n  steps:\n    - action: {commands: ['echo hi']}\n")

    api.install(site, tmp_path / "t", workflow_id="wf")
    for i in range(5):
        drop(site, f"r{i}.yaml", {"workflow": "wf"})
    site.close()
    done = _program(site.root, "daemon", "--until-idle")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("-> SUCCESS") == 5  # the last log lines were flushed
    assert not (site.root / "index.db-wal").exists()  # the index was closed, not dropped
    with sqlite3.connect(site.root / "index.db") as db:
        assert db.execute("select count(*) from run_row where state = 'SUCCESS'").fetchone() == (5,)
    # the message of a second daemon, on stdout, also survives the quick exit
    from flowbatch.daemon import SiteLock

    lock = SiteLock(site.root / "daemon.lock")
    lock.acquire()
    try:
        busy = _program(site.root, "daemon", "--once")
    finally:
        lock.release()
    assert busy.returncode == 0 and "another flowbatch daemon" in busy.stdout
    # with JSON log lines, it is one of them, and so is a failed start (they were plain
    # text in a cron log of JSON lines: found by review)
    lock.acquire()
    try:
        busy = _program(site.root, "daemon", "--once", "--log-format", "json")
    finally:
        lock.release()
    assert busy.returncode == 0 and busy.stdout == ""
    (said,) = [json.loads(line) for line in busy.stderr.splitlines()]
    assert "another flowbatch daemon" in said["message"]
    (site.root / "queue").chmod(0o777)  # no sticky bit: refused at the start
    refused = _program(site.root, "daemon", "--once", "--log-format", "json")
    (site.root / "queue").chmod(0o1755)
    assert refused.returncode == 1, refused
    (said,) = [json.loads(line) for line in refused.stderr.splitlines()]
    assert said["level"] == "error" and "sticky" in said["message"]
    # a failing start is an error as before: one line, exit code 1
    (site.root / "flowbatch.yaml").write_text("local:\n  concurrency: zero\n")
    failed = _program(site.root, "daemon", "--once")
    assert failed.returncode == 1 and "concurrency" in failed.stderr


def test_the_quick_exit_is_taken_only_after_a_daemon_ended(tmp_path: Path) -> None:
    """Other commands end through the interpreter's own exit (their atexit work runs)."""
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.stdout.write('ATEXIT\\n'))\n"
        "from flowbatch.cli import run\n"
        "sys.argv = ['flowbatch', '--site', sys.argv[1], sys.argv[2]]\n"
        "run()\n"
    )
    site = make_site(tmp_path / "site")
    site.close()
    other = subprocess.run(
        [sys.executable, "-c", code, str(site.root), "doctor"], capture_output=True, text=True
    )
    assert "ATEXIT" in other.stdout
    ended = subprocess.run(
        [sys.executable, "-c", code.replace("sys.argv[2]]", "'daemon', '--once']"), str(site.root)],
        capture_output=True,
        text=True,
    )
    assert ended.returncode == 0, ended.stderr
    assert "ATEXIT" not in ended.stdout  # the teardown was skipped


#: what `flowbatch --help` and a command that only reads the index must not load
_HEAVY = ("flowbatch.api", "flowbatch.site", "pydantic", "peewee", "jinja2", "yaml", "psutil")
_SERVING = ("flowbatch.queue", "flowbatch.executors", "flowbatch.render", "jinja2", "psutil")


def _loaded(*argv: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the program in a fresh interpreter; the modules it had loaded at its end."""
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('MODULES', *sorted(sys.modules)))\n"
        "from flowbatch.cli import run\n"
        "sys.argv = ['flowbatch', *sys.argv[1:]]\n"
        "run()\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("MODULES "))
    return done, set(line.split()[1:])


def test_help_and_reading_commands_load_only_what_they_use(tmp_path: Path) -> None:
    """`flowbatch --help` loads click alone (0.45 s -> 0.08 s here); `runs list` loads
    the site and the index, not the daemon's intake, executors or templates engine."""
    done, modules = _loaded("--help")
    assert done.returncode == 0 and "Commands:" in done.stdout
    assert not modules & set(_HEAVY), modules & set(_HEAVY)
    site = make_site(tmp_path / "site")
    site.close()
    done, modules = _loaded("--site", str(site.root), "runs", "list")
    assert done.returncode == 0, done.stderr
    assert "flowbatch.api" in modules and "peewee" in modules  # it did read the index
    assert not modules & set(_SERVING), modules & set(_SERVING)


def test_an_idle_daemon_tick_loads_no_template_engine(tmp_path: Path) -> None:
    """A cron tick with nothing to do loads what serving needs, not Jinja2 (30 ms of
    every start here): it comes with a native template's run, a Slurm batch script or a
    report page, not with the Slurm executor every site has nor with the report module."""
    site = make_site(tmp_path / "site")
    site.close()
    _, modules = daemon_modules(site.root, "--once")
    # it did serve: the intake, both executors and the report code were loaded
    assert {"flowbatch.queue", "flowbatch.executors.slurm", "flowbatch.report"} <= modules
    assert not {m for m in modules if m.split(".")[0] == "jinja2"}
    assert "flowbatch.render.native" not in modules


def test_reindex_refuses_under_a_running_daemon_and_holds_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """reindex deletes index.db: under a running daemon, which goes on writing into the
    deleted file, the runs' changes would be lost from the new one. It refuses, saying
    how to stop the daemon, and holds the daemon lock while it runs (no daemon starts)."""
    from flowbatch import api
    from flowbatch.daemon import Daemon, lock_holder, run_daemon
    from flowbatch.errors import FlowbatchError
    from flowbatch.site import Site

    root = tmp_path / "site"
    make_site(root)
    fb(root, "install", str(EXAMPLES / "helloworld"), "--id", "helloworld")
    (root / "queue" / "r.yaml").write_text("workflow: helloworld\n")
    site = Site(root)
    daemon = Daemon(site)
    daemon.start()
    try:
        daemon.tick()
        index = (root / "index.db").stat()
        out = fb(root, "reindex", ok=False)
        assert "daemon is serving" in out and "stop the daemon first" in out, out
        assert len(out.strip().splitlines()) == 1
        assert (root / "index.db").stat().st_ino == index.st_ino  # left alone
    finally:
        daemon.stop()
        site.close()
    holders = []
    rebuild = api._reindex

    def watched(site: Site, adopt: bool = False) -> int:
        holders.append(lock_holder(Site(root)))
        # a daemon started meanwhile fails (systemd starts it again, Restart=on-failure)
        # instead of exiting 0 as when another daemon serves the site
        with pytest.raises(FlowbatchError, match="reindex is rebuilding the index"):
            run_daemon(Site(root), once=True)
        return rebuild(site, adopt=adopt)

    monkeypatch.setattr(api, "_reindex", watched)
    assert "indexed 1 runs" in fb(root, "reindex")
    (holder,) = holders
    assert holder is not None and holder["pid"] == os.getpid()
    assert holder["role"] == "reindex"
    assert lock_holder(Site(root)) is None  # released


def test_validate_a_huge_time_is_a_field_error_not_a_traceback(tmp_path: Path) -> None:
    root = tmp_path / "site"
    make_site(root)
    fb(root, "install", str(EXAMPLES / "helloworld"), "--id", "helloworld")
    req = tmp_path / "r.yaml"
    req.write_text("workflow: helloworld\nresources: {time: '" + "9" * 400 + ":00'}\n")
    out = fb(root, "validate", str(req), ok=False)
    assert out.startswith("Error: ") and len(out.strip().splitlines()) == 1, out
    assert "resources" in out and "not a time" in out and "Traceback" not in out


NOTE_TEMPLATE = """
workflow:
  steps:
    - name: score
      action:
        commands:
          - >-
            printf '\\033]0;OWNED\\007\\033[2J' >&2
          - >-
            printf '{"score": %s, "note": "\\\\u001b[2Jnote"}' "${score}" > r.json
          - test "$(printf %.0f ${score})" != 0
parameters:
  - {name: score, dtype: float}
results:
  file: r.json
  schema:
    - {name: score, label: Score, dtype: float}
    - {name: note, label: Note, dtype: string}
"""


def test_a_participants_control_characters_never_reach_the_terminal(tmp_path: Path) -> None:
    """Found by review: a run's stderr (in its messages) and a string result reached an
    admin's terminal as they were, able to clear the screen, set its title or fake
    lines. The commands print them escaped; newlines stay lines. (A request's name with
    a control character is refused at intake.)"""
    from flowbatch import api

    from .conftest import drop, run_until_idle, write_template

    site = make_site(tmp_path / "site")
    api.install(site, write_template(tmp_path / "t", NOTE_TEMPLATE), workflow_id="wf")
    drop(site, "ok.yaml", {"workflow": "wf", "name": "ok", "arguments": {"score": 2}})
    drop(site, "bad.yaml", {"workflow": "wf", "name": "bad", "arguments": {"score": 0}})
    run_until_idle(site).stop()
    runs = {r["name"]: r for r in api.list_runs(site)}
    assert runs["bad"]["state"] == "ERROR", api.show_run(site, runs["bad"]["id"])["messages"]
    site.close()
    outputs = [
        CliRunner().invoke(main, ["--site", str(site.root), *args])
        for args in (
            ["runs", "show", runs["bad"]["id"]],
            ["runs", "list"],
            ["ranking", "wf"],
        )
    ]
    for result in outputs:
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output and "\x07" not in result.output, result.output
    assert "\\x1b]0;OWNED\\x07\\x1b[2J" in outputs[0].output  # the stderr, escaped
    assert "\\x1b[2Jnote" in outputs[2].output
    assert len(outputs[0].output.splitlines()) > 10  # lines stay lines


def test_a_tables_cells_stay_on_their_row(capsys: pytest.CaptureFixture[str]) -> None:
    """Found by review: a file named with a newline or a tab broke `runs files`' table."""
    from flowbatch.cli import _table

    _table([{"key": "a\nb", "title": "t\tu"}, {"key": "c", "title": "d"}], ["key", "title"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["a\\nb", "t\\tu"] and len(lines) == 3
