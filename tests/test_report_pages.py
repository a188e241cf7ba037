"""Report pages through a real daemon: run pages (written once, at the end), the site's
front page, leaderboard files of changed workflows only, ``flowbatch report``, and
escaping of hostile user values everywhere."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowbatch import api
from flowbatch.cli import main
from flowbatch.runs import RunRecord
from flowbatch.site import Site

from .conftest import EXAMPLES, drop, run_until_idle, write_template

HOSTILE = "<script>alert(1)</script>"
NAMES = "Alice\nBob\n"


def request(group: str, name: str, greeting: str = "Hello") -> dict[str, object]:
    return {
        "workflow": "helloworld",
        "group": group,
        "name": name,
        "arguments": {"names": "names.txt", "greeting": greeting},
    }


def run_dirs(site: Site, workflow: str = "helloworld") -> dict[str, Path]:
    return {r["id"]: Path(api.show_run(site, r["id"])["run_dir"]) for r in api.list_runs(site)}


def test_pages_after_runs(hello_site: Site) -> None:
    site = hello_site
    drop(site, "a.yaml", request("alice", "first try"), {"names.txt": NAMES})
    drop(site, "h.yaml", request(HOSTILE, '"><img src=x onerror=alert(2)>', greeting=HOSTILE))
    (site.layout.queue / "names.txt").write_text(NAMES)
    run_until_idle(site)
    wf_dir = site.layout.workflow_results("helloworld")
    runs = api.list_runs(site)
    assert {r["state"] for r in runs} == {"SUCCESS"}, runs

    # the leaderboard: all three files, the hostile group as text only
    html = (wf_dir / "leaderboard.html").read_text()
    assert HOSTILE not in html and html.count("<script") == 1 and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'href="runs/' in html and "/results/greetings.txt" in html  # output file links
    assert ">Greeting</th>" in html  # parameter columns by label
    data = json.loads((wf_dir / "leaderboard.json").read_text())
    assert {e["group"] for e in data["ranking"]} == {"alice", HOSTILE}
    table = list(csv.reader(io.StringIO((wf_dir / "leaderboard.csv").read_text())))
    assert len(table) == 3 and table[0][:4] == ["rank", "group", "run_id", "run_name"]

    # a page per run, written when it ended
    for run_id, run_dir in run_dirs(site).items():
        page = (run_dir / "index.html").read_text()
        assert HOSTILE not in page and "<script" not in page and "<img" not in page
        assert '<span class="badge SUCCESS">SUCCESS</span>' in page
        assert "say_hello" in page and "analyze" in page  # the steps table
        assert "Greetings</a>" in page and "One greeting per name." in page  # outputs' titles
        assert 'href="results/greetings.txt"' in page
        assert 'href="logs/step-01-say_hello.out">stdout</a>' in page
        assert run_id in page

    # the site's front page
    front = (site.layout.results / "index.html").read_text()
    assert 'href="helloworld/leaderboard.html"' in front
    assert '<span class="badge SUCCESS">SUCCESS 2</span>' in front
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in front and HOSTILE not in front


def test_failed_run_page_shows_why(site: Site, tmp_path: Path) -> None:
    src = write_template(
        tmp_path / "wf",
        """
workflow:
  steps:
    - name: prepare
      action: {environment: x, commands: ["echo preparing"]}
    - name: boom
      action: {environment: x, commands: ["echo first line >&2; echo the reason >&2; exit 3"]}
""",
    )
    api.install(site, src, workflow_id="boom")
    drop(site, "r.yaml", {"workflow": "boom", "group": "g"})
    run_until_idle(site)
    (run,) = api.list_runs(site)
    assert run["state"] == "ERROR"
    page = (Path(api.show_run(site, run["id"])["run_dir"]) / "index.html").read_text()
    assert '<span class="badge ERROR">ERROR</span>' in page
    assert "step 2 (boom) failed with exit code 3" in page  # the run's message
    assert '<span class="badge ERROR">3</span>' in page  # the step's exit code
    assert "<details open>" in page and "the reason" in page  # the failing step's stderr
    assert "preparing" in page  # the other step's stdout tail
    # no result schema: no leaderboard, the front page says so
    assert not (site.layout.workflow_results("boom") / "leaderboard.html").exists()
    assert "No result schema" in (site.layout.results / "index.html").read_text()
    # and the run page names its workflow without a link to that missing page (it
    # linked to it: found by review)
    assert "leaderboard.html" not in page
    assert '<nav class="crumbs"><a href="../../../index.html">All workflows</a> / boom / ' in page


def test_only_changed_workflows_are_rewritten(hello_site: Site, tmp_path: Path) -> None:
    site = hello_site
    api.install(site, EXAMPLES / "plots", workflow_id="plots")
    drop(site, "a.yaml", request("alice", "one"), {"names.txt": NAMES})
    run_until_idle(site)
    hello_board = site.layout.workflow_results("helloworld") / "leaderboard.html"
    plots_board = site.layout.workflow_results("plots") / "leaderboard.html"
    assert hello_board.is_file() and not plots_board.exists()
    stamp = hello_board.stat().st_mtime_ns
    os.utime(hello_board, ns=(stamp - 10**9, stamp - 10**9))
    drop(site, "p.yaml", {"workflow": "plots", "group": "g", "arguments": {"samples": 100}})
    run_until_idle(site)
    assert plots_board.is_file()
    assert hello_board.stat().st_mtime_ns == stamp - 10**9  # not rewritten


def test_report_command_regenerates(hello_site: Site) -> None:
    site = hello_site
    drop(site, "a.yaml", request("alice", "one"), {"names.txt": NAMES})
    run_until_idle(site)
    wf_dir = site.layout.workflow_results("helloworld")
    (run_dir,) = run_dirs(site).values()
    for path in (
        wf_dir / "leaderboard.html",
        run_dir / "index.html",
        site.layout.results / "index.html",
    ):
        path.unlink()
    result = CliRunner().invoke(main, ["--site", str(site.root), "report"])
    assert result.exit_code == 0, result.output
    assert "reports of 1 workflow written" in result.output
    assert "writing reports" not in result.output  # no progress line off a terminal
    assert (wf_dir / "leaderboard.html").is_file() and (run_dir / "index.html").is_file()
    assert (site.layout.results / "index.html").is_file()
    result = CliRunner().invoke(main, ["--site", str(site.root), "report", "nope"])
    assert result.exit_code == 1 and "unknown workflow 'nope'" in result.output


def test_a_site_overrides_report_templates_and_assets(
    hello_site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``<site>/report-templates/`` holds the site's own copies (same names as the
    package's): used for the pages they replace, the package's for the others; still
    autoescaped; `doctor` checks that they parse."""
    from flowbatch import report
    from flowbatch.doctor import diagnose

    monkeypatch.setattr(report, "_FOLDER", [None])  # restored afterwards for other tests
    site = hello_site
    own = site.root / report.SITE_TEMPLATES
    own.mkdir()
    (own / "leaderboard.html.j2").write_text(
        '{% extends "base.html.j2" %}{% block body %}<p id="site-own">Our board: '
        "{% for row in rows %}{{ row.group }};{% endfor %}</p>{% endblock %}"
    )
    (own / "style.css").write_text("body { --site-own-style: 1; }")
    drop(site, "h.yaml", request(HOSTILE, "hostile"), {"names.txt": NAMES})
    run_until_idle(site)
    wf_dir = site.layout.workflow_results("helloworld")
    html = (wf_dir / "leaderboard.html").read_text()
    assert '<p id="site-own">Our board: ' in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;;" in html and HOSTILE not in html
    assert "--site-own-style: 1" in html  # the site's stylesheet, inlined
    run_id = api.list_runs(site)[0]["id"]
    page = (wf_dir / "runs" / run_id / "index.html").read_text()
    assert "--site-own-style: 1" in page and "site-own" not in page.split("<style")[0]
    checks = {c.name: c for c in diagnose(site.root)}
    assert checks["report templates"].status == "ok"
    (own / "run.html.j2").write_text("{% if %}broken")
    checks = {c.name: c for c in diagnose(site.root)}
    assert checks["report templates"].status == "fail"
    assert "run.html.j2 line 1" in checks["report templates"].detail


def test_the_site_sets_how_many_runs_the_all_runs_view_shows(tmp_path: Path) -> None:
    from .conftest import make_site
    from .test_robust import SCORE_TEMPLATE

    site = make_site(tmp_path / "site", {"reports": {"all_runs_shown": 3}})
    write_template(tmp_path / "t", SCORE_TEMPLATE)  # higher is better
    api.install(site, tmp_path / "t", workflow_id="wf")
    for i in range(5):
        drop(site, f"r{i}.yaml", {"workflow": "wf", "group": "me", "arguments": {"score": i}})
    run_until_idle(site)
    board = site.layout.workflow_results("wf")
    data = json.loads((board / "leaderboard.json").read_text())
    assert [row["results"]["score"] for row in data["all"]] == [4, 3, 2]
    assert data["all_total"] == 5
    assert "the 3 best of 5 runs" in (board / "leaderboard.html").read_text()
    out = CliRunner().invoke(main, ["--site", str(site.root), "ranking", "wf", "--all", "--json"])
    assert out.exit_code == 0, out.output
    assert len(json.loads(out.output)["ranking"]) == 5  # every run, whatever the page shows


def test_a_bad_all_runs_shown_is_refused_with_the_field(tmp_path: Path) -> None:
    from .conftest import make_site

    with pytest.raises(Exception, match="all_runs_shown"):
        make_site(tmp_path / "site", {"reports": {"all_runs_shown": 0}})


def test_run_pages_are_the_run_templates_bytes(
    hello_site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finished run's page is written by Python (the path of every run), not by
    Jinja2: byte for byte what the package's ``run.html.j2`` gives, for runs of every
    shape: hostile values, results and captioned files, a failed step's logs and the
    run's messages, a missing log, a run with no step, one with no arguments."""
    from datetime import UTC, datetime

    from flowbatch import report, report_pages

    site = hello_site
    src = write_template(
        tmp_path / "wf",
        """
workflow:
  steps:
    - name: prepare
      action: {environment: x, commands: ["echo '<b>preparing</b> & more'"]}
    - name: boom
      action: {environment: x, commands: ["echo first >&2; echo 'the <reason>' >&2; exit 3"]}
""",
    )
    api.install(site, src, workflow_id="boom")
    drop(site, "h.yaml", request(HOSTILE, '"><img src=x onerror=alert(2)>', greeting=HOSTILE))
    (site.layout.queue / "names.txt").write_text(NAMES)
    drop(site, "a.yaml", request("alice", "first try"), {"names.txt": NAMES})
    drop(site, "b.yaml", {"workflow": "boom", "group": "g'\"<&>"})
    run_until_idle(site)
    runs = {r["id"]: r for r in api.list_runs(site)}
    assert sorted(r["state"] for r in runs.values()) == ["ERROR", "SUCCESS", "SUCCESS"]

    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    frame = report_pages.page_frame
    monkeypatch.setattr(
        report_pages, "page_frame", lambda *a, **k: frame(*a, generated_at=moment, **k)
    )
    report.use_site_templates(site.root)

    def both(run_dir: Path, run: RunRecord) -> tuple[str, str]:
        template = report_pages._template(site, run)
        fast = report_pages.render_run_page(run_dir, run, template)
        with monkeypatch.context() as m:
            m.setattr(report_pages, "own_templates", lambda *names: True)
            slow = report_pages.render_run_page(run_dir, run, template)
        return fast, slow

    shapes = []
    for run_id in runs:
        run_dir = Path(api.show_run(site, run_id)["run_dir"])
        run = site.store.load_dir(run_dir)
        shapes.append((run_dir, run))
        fast, slow = both(run_dir, run)
        assert fast == slow
        # and what the daemon wrote is that page (but for the time it was written)
        written = (run_dir / "index.html").read_text()
        assert written.split("<footer>")[0] == fast.split("<footer>")[0]
    failed = next(run for _, run in shapes if run.state.value == "ERROR")
    assert (
        failed.messages and "<details open>" in both(*next(s for s in shapes if s[1] is failed))[0]
    )
    assert "None</td>" not in fast  # a change without a message shows no "None"
    # the other shapes, from these runs' records
    run_dir, run = shapes[0]
    (run_dir / run.steps[0]["stdout"]).unlink()  # a missing log: no link, no tail
    no_steps = dataclasses.replace(run, steps=[], arguments={}, files=[], results=None)
    odd = dataclasses.replace(
        run,
        name=None,
        messages=["<m1>", "m2 & 'q'"],
        steps=[{**run.steps[0], "exit_code": None}, {"index": 2, "name": "<x>"}],
        files=[{"key": "k<", "source": "a b/<c>.txt", "caption": "<cap>", "size": 3 * 2**20}],
        history=[*run.history, {"state": "ERROR", "at": "not a time", "message": "<why>"}],
    )
    for shape in (run, no_steps, odd):
        fast, slow = both(run_dir, shape)
        assert fast == slow
    assert "<img" not in fast and "&lt;why&gt;" in fast and "&lt;cap&gt;" in fast


@pytest.mark.parametrize("name", ["run.html.j2", "base.html.j2"])
def test_a_sites_own_run_template_writes_its_run_pages(
    hello_site: Site, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Run pages are written by Python only while the site keeps the package's run
    templates: its own ``run.html.j2`` or ``base.html.j2`` is rendered by Jinja2."""
    from flowbatch import report

    monkeypatch.setattr(report, "_FOLDER", [None])
    site = hello_site
    own = site.root / report.SITE_TEMPLATES
    own.mkdir()
    if name == "run.html.j2":
        text = '{% extends "base.html.j2" %}{% block body %}<p id="own">{{ run.group }}</p>{% endblock %}'
    else:
        text = '<p id="own">{{ page.title }}</p>{% block meta %}{% endblock %}{% block body %}{% endblock %}'
    (own / name).write_text(text)
    drop(site, "h.yaml", request(HOSTILE, "hostile"), {"names.txt": NAMES})
    run_until_idle(site)
    run_id = api.list_runs(site)[0]["id"]
    run_dir = Path(api.show_run(site, run_id)["run_dir"])
    page = (run_dir / "index.html").read_text()
    assert '<p id="own">' in page and "&lt;script&gt;" in page and HOSTILE not in page


def _score_site(tmp_path: Path, extra: str = "") -> Site:
    """A site with the score template installed as ``aa`` and as ``zz`` (``extra``: a
    command ``aa``'s runs add), and one finished run of each."""
    from .conftest import make_site
    from .test_robust import SCORE_TEMPLATE

    site = make_site(tmp_path / "site")
    write_template(tmp_path / "t", SCORE_TEMPLATE)
    own = SCORE_TEMPLATE.replace("> r.json\n", f"> r.json\n          - {extra}\n")
    write_template(tmp_path / "t-aa", own if extra else SCORE_TEMPLATE)
    api.install(site, tmp_path / "t-aa", workflow_id="aa")
    api.install(site, tmp_path / "t", workflow_id="zz")
    drop(site, "a.yaml", {"workflow": "aa", "group": "mallory", "arguments": {"score": 1}})
    drop(site, "z.yaml", {"workflow": "zz", "group": "carol", "arguments": {"score": 2}})
    run_until_idle(site)
    assert [r["state"] for r in api.list_runs(site)] == ["SUCCESS", "SUCCESS"]
    return site


def test_one_workflows_failed_report_does_not_stop_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A leaderboard that fails to write (here: the OverflowError a 401-digit integer
    caused) is logged with its workflow; the workflows after it and the front page are
    still written, and the failure is raised at the end: still owed, the daemon keeps
    its note of it, and `flowbatch report` ends with one line and exit code 1."""
    from flowbatch import publish
    from flowbatch.daemon import Daemon
    from flowbatch.errors import FlowbatchError

    site = _score_site(tmp_path)
    zz_board = site.layout.workflow_results("zz") / "leaderboard.html"
    front = site.layout.results / "index.html"
    real = publish.write_workflow_report

    def failing(site_: Site, workflow: str) -> bool:
        if workflow == "aa":
            raise OverflowError("int too large to convert to float")
        return real(site_, workflow)

    monkeypatch.setattr(publish, "write_workflow_report", failing)
    for path in (zz_board, front):
        path.unlink()
    with pytest.raises(FlowbatchError) as info:
        api.update_reports(site, ["aa", "zz"])
    assert "leaderboard of aa not written" in str(info.value)
    assert "OverflowError" in str(info.value) and "zz" not in str(info.value)
    assert zz_board.is_file() and front.is_file()
    assert "leaderboard of aa not written" in caplog.text

    # the daemon's notes of owed reports stay until a report is written
    daemon = Daemon(site)
    try:
        daemon.pending_reports.mark("aa")
        with pytest.raises(FlowbatchError):
            daemon._write_report_files({"aa", "zz"}, daemon.pending_reports.handed_over())
        assert (site.reports_pending_dir / "aa").is_file()
    finally:
        daemon.stop()

    result = CliRunner().invoke(main, ["--site", str(site.root), "report"])
    assert result.exit_code == 1 and "leaderboard of aa not written" in result.output
    assert "Traceback" not in result.output
    assert zz_board.is_file() and front.is_file()


def test_a_folder_in_place_of_a_run_page_does_not_stop_the_report(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run's own code may make ``index.html`` a folder in its run folder: `flowbatch
    report` logs that run's page as not written and writes everything else."""
    site = _score_site(tmp_path, extra="mkdir index.html")
    pages = {
        r["workflow"]: Path(api.show_run(site, r["id"])["run_dir"]) / "index.html"
        for r in api.list_runs(site)
    }
    assert pages["aa"].is_dir()
    pages["zz"].unlink()
    front = site.layout.results / "index.html"
    front.unlink()
    caplog.clear()  # the daemon logged it once already, as the run ended
    result = CliRunner().invoke(main, ["--site", str(site.root), "report"])
    assert result.exit_code == 0, result.output
    assert pages["zz"].is_file() and front.is_file()
    assert "run page of" in caplog.text and "not written" in caplog.text
