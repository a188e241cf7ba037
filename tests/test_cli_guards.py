"""The CLI's guards: a folder that is no site, a reader that goes away, an archive written
where it would replace the daemon's files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowbatch.cli import main
from flowbatch.site import Site

from .conftest import EXAMPLES, drop, run_until_idle


def fb(site: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--site", str(site), *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    "args",
    [
        ("runs", "list"),
        ("workflows", "list"),
        ("daemon", "--once"),
        ("submit", str(EXAMPLES / "helloworld/requests/alice.yaml")),
        ("reindex",),
    ],
)
def test_a_folder_that_is_no_site_is_refused_not_made_one(tmp_path: Path, args: tuple[str]) -> None:
    """A mistyped --site (a cron line's) made the folder a new empty site: an index, a
    queue, results, and nothing said (or the advice to reindex). Now: what is wrong,
    and the init to run."""
    for folder in (tmp_path / "empty", tmp_path / "missing"):
        if folder.name == "empty":
            folder.mkdir()
        code, out = fb(folder, *args)
        assert code == 1, out
        assert f"no flowbatch site at {folder}" in out and "flowbatch init" in out
        assert not folder.exists() or list(folder.iterdir()) == []


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    """`flowbatch config show | head -2` said `Error: BrokenPipeError` (exit 1)."""
    site = Site.init(tmp_path / "site")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowbatch", "--site", str(site.root), "config", "show"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line
    said = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and said == ""


def test_an_archive_is_never_written_into_the_results_tree(hello_site: Site) -> None:
    """`runs archive -o <run folder>/run.json` replaced the run's record with a tarball
    (the run was lost to `runs show` and `reindex`); `-o missing/` wrote a file named
    `missing`; a missing folder was a raw FileNotFoundError."""
    drop(hello_site, "a.yaml", {"workflow": "helloworld"})
    run_until_idle(hello_site)
    (run,) = json.loads(fb(hello_site.root, "runs", "list", "--json")[1])
    run_dir = Path(
        json.loads(fb(hello_site.root, "runs", "show", run["id"], "--json")[1])["run_dir"]
    )
    record = (run_dir / "run.json").read_bytes()
    code, out = fb(hello_site.root, "runs", "archive", run["id"], "-o", str(run_dir / "run.json"))
    assert code == 1 and "inside the results tree" in out, out
    assert (run_dir / "run.json").read_bytes() == record
    outside = hello_site.root.parent / "out"
    code, out = fb(hello_site.root, "runs", "archive", run["id"], "-o", f"{outside}/")
    assert code == 1 and f"no folder {outside}" in out and not outside.exists(), out
    code, out = fb(hello_site.root, "runs", "archive", run["id"], "-o", str(outside / "a.tgz"))
    assert code == 1 and f"no folder {outside}" in out, out
    outside.mkdir()
    code, out = fb(hello_site.root, "runs", "archive", run["id"], "-o", f"{outside}/")
    assert code == 0, out
    assert Path(out.strip()) == outside / f"run.{run['id']}.tar.gz"


def test_once_and_until_idle_are_one_or_the_other(hello_site: Site) -> None:
    """Both were taken and --once silently won."""
    code, out = fb(hello_site.root, "daemon", "--once", "--until-idle")
    assert code == 2 and "not both" in out


def test_a_broken_site_report_template_is_one_line_naming_it(hello_site: Site) -> None:
    """`flowbatch report` printed some 30 lines of traceback, then an error that did not
    name the file (doctor did)."""
    drop(hello_site, "a.yaml", {"workflow": "helloworld"})
    run_until_idle(hello_site)
    own = hello_site.root / "report-templates"
    own.mkdir()
    (own / "leaderboard.html.j2").write_text("<p>\n{{ oops(\n")
    result = CliRunner().invoke(main, ["--site", str(hello_site.root), "report", "helloworld"])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert f"report template {own / 'leaderboard.html.j2'}, line " in line, line
    assert "TemplateSyntaxError" in line and "Traceback" not in line


def test_specfile_errors_name_the_option(site: Site) -> None:
    """A `--specfile` path that leaves SOURCE was blamed on the manifest (`flowserv.yaml:
    specfile: ...`). (A file given as it is, from the current folder, is taken as
    flowServ takes it: the help says so now.)"""
    source = str(EXAMPLES / "helloworld")
    code, out = fb(site.root, "install", source, "--specfile", "../plots/nosuch.yaml")
    assert code == 1 and "--specfile" in out and "flowserv.yaml" not in out, out
    assert site.templates.list_ids() == []
    code, out = fb(site.root, "install", source, "--specfile", "benchmark.yaml", "--id", "c")
    assert code == 0 and "installed: workflow c" in out, out


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "workflow: helloworld\nretries: many\n",
            "retries: got text 'many' (expected a whole number",
        ),
        ("workflow: helloworld\nretry_failed: maybe\n", "(expected true or false)"),
        ("workflow: helloworld\nsweep: {sleeptime: 1}\n", "sweep.sleeptime: got a number 1"),
        ("cancel: 123\n", "cancel: got a number 123 (expected text"),
        ("workflw: helloworld\narguments: {}\n", "unknown field 'workflw' (expected one of:"),
    ],
)
def test_a_malformed_request_says_what_was_given_and_what_is_wanted(
    hello_site: Site, tmp_path: Path, text: str, says: str
) -> None:
    """pydantic's own words ("Input should be a valid integer") reached rejection files
    and validate; a request with a mistyped `workflw:` was judged as a template."""
    path = tmp_path / "r.yaml"
    path.write_text(text)
    code, out = fb(hello_site.root, "validate", str(path))
    assert code == 1 and says in out, out
    assert "Input should be" not in out and "one of the keys" not in out  # a template's
    (hello_site.layout.queue / "r.yaml").write_text(text)
    run_until_idle(hello_site)
    error = (hello_site.layout.rejected / "r.yaml.error.yaml").read_text()
    assert "Input should be" not in error


def test_a_mistyped_workflow_filter_is_an_error_not_an_empty_list(hello_site: Site) -> None:
    """`runs list -w nosuch` printed (none) and `cleanup -w nosuch` 'would remove 0 runs',
    while ranking and uninstall said the workflow is unknown."""
    for args in (
        ("runs", "list", "-w", "nosuch"),
        ("cleanup", "--before", "2999-01-01", "-w", "nosuch", "--dry-run"),
    ):
        code, out = fb(hello_site.root, *args)
        assert code == 1 and "unknown workflow 'nosuch'" in out, out
    code, out = fb(hello_site.root, "runs", "list", "-w", "helloworld")
    assert code == 0 and "(none)" in out


def test_a_reindex_killed_half_way_leaves_the_old_index(
    hello_site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """reindex removed the index first: killed half-way, it left an empty one (every
    list and leaderboard empty until a daemon caught up). It builds a new file now, and
    renames it over the old one when whole."""
    from flowbatch import api
    from flowbatch.store.store import Store

    for name in ("a", "b"):
        drop(hello_site, f"{name}.yaml", {"workflow": "helloworld", "group": name})
    run_until_idle(hello_site)
    hello_site.close()
    before = json.loads(fb(hello_site.root, "runs", "list", "--json")[1])
    assert len(before) == 2

    def killed(self: Store, runs: object) -> int:
        raise SystemExit("killed")

    monkeypatch.setattr(Store, "index_many", killed)
    with pytest.raises(SystemExit):
        api.reindex(Site(hello_site.root))
    monkeypatch.undo()
    assert json.loads(fb(hello_site.root, "runs", "list", "--json")[1]) == before
    code, out = fb(hello_site.root, "reindex")
    assert code == 0 and "indexed 2 runs" in out, out
    assert json.loads(fb(hello_site.root, "runs", "list", "--json")[1]) == before
    assert not (hello_site.layout.index_db.parent / "index.db.new").exists()


def test_a_cancel_a_running_daemon_applies_exits_0(tmp_path: Path) -> None:
    """`runs cancel` while a daemon serves the site: the cancel is queued, the daemon
    applies it, the command printed CANCELED and then failed ("not active") on a
    second check left after it."""
    import time

    from flowbatch import api

    from .conftest import make_site, serving, write_template

    site = make_site(tmp_path / "site")
    sleeping = "workflow:\n  steps:\n    - action: {commands: [sleep 60]}\n"
    api.install(site, write_template(tmp_path / "t", sleeping), workflow_id="wf")
    site.close()
    flowbatch = [sys.executable, "-m", "flowbatch", "--site", str(site.root)]
    with serving(site.root):
        drop(site, "a.yaml", {"workflow": "wf"})
        runs = site.layout.runs_dir("wf")

        def running() -> str | None:
            for record in runs.glob("*/run.json") if runs.is_dir() else []:
                if json.loads(record.read_text()).get("state") == "RUNNING":
                    return record.parent.name
            return None

        deadline = time.monotonic() + 30
        while (run_id := running()) is None:
            assert time.monotonic() < deadline, "no run started"
            time.sleep(0.1)
        done = subprocess.run(
            [*flowbatch, "runs", "cancel", run_id, "--wait", "20"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert done.stdout.strip() == f"{run_id}: CANCELED"
