"""The command line: every command has help; JSON shapes; one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from flowbatch.cli import main

from .conftest import EXAMPLES, make_site


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
    assert "already installed" in fb(
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
    out = fb(site, "runs", "cancel", run.id, "--reason", "changed my mind")
    assert "CANCELED" in out
    shown = json.loads(fb(site, "runs", "show", run.id, "--json"))
    assert shown["state"] == "CANCELED" and shown["messages"] == ["changed my mind"]
    out = fb(site, "runs", "cancel", run.id, ok=False)
    assert "not active" in out
