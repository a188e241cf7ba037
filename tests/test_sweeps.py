"""Sweeps: one request, one run per point; crash-safe; resubmitted sweeps resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowbatch import api
from flowbatch.errors import FlowbatchError
from flowbatch.queue import Intake
from flowbatch.resume import plan_request
from flowbatch.site import Site

from .conftest import drop, run_until_idle, write_template

TEMPLATE = """
workflow:
  steps:
    - name: s
      action:
        commands:
          - test "${fail}" != True
          - >-
            printf '{"v": %s}' "${x}" > r.json
parameters:
  - {name: x, dtype: int}
  - {name: y, dtype: string, defaultValue: a}
  - {name: fail, dtype: bool, defaultValue: false}
results:
  file: r.json
  schema: [{name: v, label: V, dtype: int}]
"""


def setup(site: Site, tmp_path: Path) -> None:
    write_template(tmp_path / "t", TEMPLATE)
    api.install(site, tmp_path / "t", workflow_id="wf")


def points(site: Site) -> list[tuple[int, str]]:
    return sorted(
        (r["arguments"]["x"], r["arguments"]["y"])
        for r in (api.show_run(site, x["id"]) for x in api.list_runs(site))
    )


def test_a_sweep_makes_one_run_per_distinct_point(site: Site, tmp_path: Path) -> None:
    setup(site, tmp_path)
    # "1" and 1 cast to the same int: that combination runs once
    drop(
        site, "s.yaml", {"workflow": "wf", "arguments": {"y": "b"}, "sweep": {"x": [1, 2, "1", 3]}}
    )
    run_until_idle(site)
    assert points(site) == [(1, "b"), (2, "b"), (3, "b")]
    runs = [api.show_run(site, r["id"]) for r in api.list_runs(site)]
    assert all(r["state"] == "SUCCESS" for r in runs)
    sweep_ids = {r["id"].split("-")[0] for r in runs}
    assert len(sweep_ids) == 1


def test_two_axes_and_errors(site: Site, tmp_path: Path) -> None:
    setup(site, tmp_path)
    drop(site, "s.yaml", {"workflow": "wf", "sweep": {"x": [1, 2], "y": ["a", "b"]}})
    drop(site, "bad.yaml", {"workflow": "wf", "sweep": {"x": [1, "two"]}})
    drop(site, "both.yaml", {"workflow": "wf", "arguments": {"x": 1}, "sweep": {"x": [2]}})
    run_until_idle(site)
    assert points(site) == [(1, "a"), (1, "b"), (2, "a"), (2, "b")]
    rejected = sorted(p.name for p in site.layout.rejected.glob("*.error.yaml"))
    assert rejected == ["bad.yaml.error.yaml", "both.yaml.error.yaml"]  # nothing half-made


def test_resubmitted_sweep_skips_done_points_and_retries_failed_on_request(
    site: Site, tmp_path: Path
) -> None:
    setup(site, tmp_path)
    drop(site, "s1.yaml", {"workflow": "wf", "arguments": {"fail": True}, "sweep": {"x": [1]}})
    drop(site, "s2.yaml", {"workflow": "wf", "sweep": {"x": [2, 3]}})
    run_until_idle(site)
    assert len(api.list_runs(site)) == 3
    d = Intake(site)
    drop(site, "again.yaml", {"workflow": "wf", "sweep": {"x": [2, 3, 4]}})
    result = d.run_once()
    assert [r.arguments["x"] for r in result.runs] == [4]  # 2 and 3 succeeded before
    assert set(result.skipped["again.yaml"].values()) == {"succeeded"}
    drop(site, "retry.yaml", {"workflow": "wf", "arguments": {"fail": True}, "sweep": {"x": [1]}})
    assert Intake(site).run_once().runs == []  # failed before: not without retry_failed
    drop(
        site,
        "retry2.yaml",
        {"workflow": "wf", "arguments": {"fail": True}, "sweep": {"x": [1]}, "retry_failed": True},
    )
    assert len(Intake(site).run_once().runs) == 1


def test_a_crash_in_the_middle_of_a_sweep_creates_the_rest_once(site: Site, tmp_path: Path) -> None:
    setup(site, tmp_path)
    drop(site, "s.yaml", {"workflow": "wf", "sweep": {"x": list(range(6))}})
    site.close()
    proc = subprocess.run(
        [sys.executable, "-m", "flowbatch", "--site", str(site.root), "daemon", "--once"],
        env={**os.environ, "FLOWBATCH_CRASH_AT": "created:3"},
    )
    assert proc.returncode == -signal.SIGKILL
    site = Site(site.root)
    assert len(list(site.layout.runs_dir("wf").iterdir())) == 3
    run_until_idle(site)
    assert [x for x, _ in points(site)] == list(range(6))
    assert list(site.layout.claimed.iterdir()) == []
    site.close()


def test_a_resubmitted_sweep_skips_only_its_own_groups_points(site: Site, tmp_path: Path) -> None:
    """Another group's runs of the same points are theirs: a sweep resumes its own group's
    work (the group the runs count for), never takes over someone else's results."""
    setup(site, tmp_path)
    drop(site, "a.yaml", {"workflow": "wf", "group": "team-a", "sweep": {"x": [1, 2]}})
    run_until_idle(site)
    drop(site, "b.yaml", {"workflow": "wf", "group": "team-b", "sweep": {"x": [1, 2, 3]}})
    result = Intake(site).run_once()
    assert sorted(r.arguments["x"] for r in result.runs) == [1, 2, 3]
    assert {r.group for r in result.runs} == {"team-b"}
    run_until_idle(site)
    drop(site, "b2.yaml", {"workflow": "wf", "group": "team-b", "sweep": {"x": [1, 2, 3, 4]}})
    result = Intake(site).run_once()
    assert [r.arguments["x"] for r in result.runs] == [4]
    assert set(result.skipped["b2.yaml"].values()) == {"succeeded"}
    # what `flowbatch submit` tells the user first: the same, by group
    request = tmp_path / "again.yaml"
    request.write_text("workflow: wf\ngroup: team-a\nsweep: {x: [1, 2, 3, 4]}\n")
    plan = plan_request(site, request)
    assert plan is not None
    assert {p.arguments["x"]: p.status for p in plan.points} == {
        1: "succeeded",
        2: "succeeded",
        3: "missing",
        4: "missing",
    }


FILES_TEMPLATE = """
workflow:
  steps:
    - name: s
      action:
        commands:
          - cp data/in.txt out.txt
parameters:
  - {name: x, dtype: int}
  - {name: data, dtype: file, target: data/in.txt}
"""


def setup_files(site: Site, tmp_path: Path) -> None:
    write_template(tmp_path / "tf", FILES_TEMPLATE)
    api.install(site, tmp_path / "tf", workflow_id="wf")


def errors(site: Site) -> dict[str, dict[str, Any]]:
    return {
        p.name.removesuffix(".error.yaml"): yaml.safe_load(p.read_text())
        for p in site.layout.rejected.glob("*.error.yaml")
    }


def test_a_sweep_with_a_bad_file_in_a_later_point_makes_no_run(site: Site, tmp_path: Path) -> None:
    """Every point's files and targets are checked before the first run is made: a
    rejected sweep leaves no run behind (its point 0 used to be made, and ran)."""
    setup_files(site, tmp_path)
    drop(
        site,
        "s.yaml",
        {
            "workflow": "wf",
            "arguments": {"x": 1},
            "sweep": {"data": ["a.txt", "gone.txt", "b.txt"]},
        },
        files={"a.txt": "A\n", "b.txt": "B\n"},
    )
    result = Intake(site).run_once()
    assert result.runs == [] and result.rejected == ["s.yaml"]
    error = errors(site)["s.yaml"]
    assert error["field"] == "sweep.data[1]" and "'gone.txt' does not exist" in error["reason"]
    assert api.list_runs(site) == []
    assert (
        not site.layout.runs_dir("wf").exists() or list(site.layout.runs_dir("wf").iterdir()) == []
    )


def test_errors_in_swept_values_name_the_value_in_the_sweep(site: Site, tmp_path: Path) -> None:
    setup(site, tmp_path)
    drop(site, "cast.yaml", {"workflow": "wf", "sweep": {"x": [1, 2, "two"]}})
    drop(site, "name.yaml", {"workflow": "wf", "arguments": {"x": 1}, "sweep": {"xx": [1]}})
    drop(site, "bool.yaml", {"workflow": "wf", "arguments": {"x": 1}, "sweep": {"fail": [True, 7]}})
    result = Intake(site).run_once()
    assert result.runs == [] and sorted(result.rejected) == ["bool.yaml", "cast.yaml", "name.yaml"]
    found = errors(site)
    assert found["cast.yaml"]["field"] == "sweep.x[2]" and "'two'" in found["cast.yaml"]["reason"]
    assert found["name.yaml"]["field"] == "sweep.xx"
    assert "unknown parameter 'xx'" in found["name.yaml"]["reason"]
    assert found["name.yaml"]["hint"].startswith("did you mean 'x'? remove it")
    assert found["bool.yaml"]["field"] == "sweep.fail[1]" and "7" in found["bool.yaml"]["reason"]


def test_submit_and_validate_check_and_bring_every_point(site: Site, tmp_path: Path) -> None:
    """`flowbatch submit` and `validate` expand the sweep as intake does: a swept
    required parameter is fine, a swept file is checked, and submit brings each distinct
    file once and points the sweep's values at the copies (a stale queue/a.txt is not
    used)."""
    setup_files(site, tmp_path)
    (site.layout.queue / "a.txt").write_text("stale\n")
    user = tmp_path / "user"
    (user / "sub").mkdir(parents=True)
    (user / "a.txt").write_text("A\n")
    (user / "sub" / "a.txt").write_text("sub A\n")  # the same name, another file
    request = user / "s.yaml"
    doc = {
        "workflow": "wf",
        "sweep": {"x": [1, 2], "data": ["a.txt", "sub/a.txt", {"source": "a.txt"}]},
    }
    request.write_text(yaml.safe_dump(doc))
    assert "valid for workflow wf" in api.validate(request, site)
    queued = api.submit(site, request)
    sent = yaml.safe_load((site.layout.queue / queued).read_text())
    bundle = queued.removesuffix(".yaml") + ".files"
    assert sent["sweep"]["data"] == [
        f"{bundle}/data/a.txt",
        f"{bundle}/data/2/a.txt",
        {"source": f"{bundle}/data/a.txt"},
    ]
    copies = sorted(
        str(p.relative_to(site.layout.queue / bundle))
        for p in (site.layout.queue / bundle).rglob("*")
        if p.is_file()
    )
    assert copies == ["data/2/a.txt", "data/a.txt"]  # each distinct file once
    run_until_idle(site)
    runs = [api.show_run(site, r["id"]) for r in api.list_runs(site)]
    assert all(r["state"] == "SUCCESS" for r in runs), [r["messages"] for r in runs]
    got = sorted(
        (r["arguments"]["x"], Path(r["run_dir"], "out.txt").read_text().strip()) for r in runs
    )
    assert got == [(1, "A"), (1, "sub A"), (2, "A"), (2, "sub A")]
    # a swept file that is missing: both say where, and nothing is queued
    (user / "sub" / "a.txt").unlink()
    for check in (lambda: api.validate(request, site), lambda: api.submit(site, request)):
        with pytest.raises(FlowbatchError) as info:
            check()
        assert info.value.field == "sweep.data[1]" and "'sub/a.txt'" in info.value.reason
    assert sorted(p.name for p in site.layout.queue.glob("*.yaml")) == []


def test_submits_preview_names_a_bad_swept_value_as_intake_does(site: Site, tmp_path: Path) -> None:
    """`flowbatch submit` asks what a resubmission would skip before queueing: a bad value
    is named by its place in the sweep there too, as the daemon would name it."""
    from flowbatch.errors import ArgumentError

    setup(site, tmp_path)
    request = tmp_path / "bad.yaml"
    request.write_text("workflow: wf\nsweep: {x: [1, two]}\n")
    with pytest.raises(ArgumentError) as err:
        plan_request(site, request)
    assert err.value.field == "sweep.x[1]"


NATIVE_QUOTED = """
flowbatch: 1
workflow:
  steps:
    - name: s
      action:
        commands:
          - "printf '%s\\\\n' '{{ label | lower }}' > out.txt"
parameters:
  - {name: label, dtype: string, defaultValue: a}
"""


def test_a_sweep_whose_later_point_cannot_render_makes_no_run(site: Site, tmp_path: Path) -> None:
    """A value can be refused by where it stands (a native template checks an expression
    in single quotes by value; a bare parameter there is refused at install): the sweep is rendered whole before its first run, so a bad
    third point rejects it with no run made, and the error names the point."""
    write_template(tmp_path / "t", NATIVE_QUOTED)
    api.install(site, tmp_path / "t", workflow_id="wf")
    drop(site, "s.yaml", {"workflow": "wf", "sweep": {"label": ["alpha", "beta", "not a token"]}})
    result = Intake(site).run_once()
    assert result.runs == [] and api.list_runs(site) == []
    error = yaml.safe_load((site.layout.rejected / "s.yaml.error.yaml").read_text())
    assert "single quotes" in error["reason"]
    assert "point 2 (label='not a token')" in error["hint"]
    drop(site, "ok.yaml", {"workflow": "wf", "sweep": {"label": ["alpha", "beta"]}})
    assert len(Intake(site).run_once().runs) == 2


def test_a_resubmitted_sweep_renders_only_the_points_it_makes(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The intake rendered every point of a resubmitted sweep, the ones already run too
    (five times the tick of a 300-point resubmission): only the points it makes now."""
    from flowbatch import queue

    setup(site, tmp_path)
    drop(site, "s.yaml", {"workflow": "wf", "sweep": {"x": [1, 2, 3]}})
    run_until_idle(site)
    rendered: list[Any] = []
    real = queue.render_point

    def counted(*args: Any) -> Any:
        rendered.append(args[2])
        return real(*args)

    monkeypatch.setattr(queue, "render_point", counted)
    drop(site, "again.yaml", {"workflow": "wf", "sweep": {"x": [1, 2, 3, 4]}})
    result = Intake(site).run_once()
    assert [r.arguments["x"] for r in result.runs] == [4]
    assert [args["x"] for args in rendered] == [4]


def test_the_resubmit_preview_shows_a_default_file_by_its_path(tmp_path: Path) -> None:
    """It printed the stored record (`names={'source': '', 'target': 'data/names.txt'}`;
    found by review)."""
    from click.testing import CliRunner

    from flowbatch.cli import main

    from .conftest import EXAMPLES, make_site, run_until_idle

    site = make_site(tmp_path / "site")
    api.install(site, EXAMPLES / "helloworld", workflow_id="helloworld")
    request = tmp_path / "sweep.yaml"
    request.write_text("workflow: helloworld\nsweep: {sleeptime: [0, 1]}\n")
    runner = CliRunner()
    assert runner.invoke(main, ["--site", str(site.root), "submit", str(request)]).exit_code == 0
    run_until_idle(site).stop()
    again = runner.invoke(main, ["--site", str(site.root), "submit", str(request)])
    assert again.exit_code == 0, again.output
    skips = [line for line in again.output.splitlines() if line.strip().startswith("skip ")]
    assert len(skips) == 2 and "names=data/names.txt (the template's)" in skips[0], skips
    assert "'source'" not in again.output
    site.close()


def test_a_points_skip_names_the_runs_that_made_it(site: Site, tmp_path: Path) -> None:
    """A resubmitted sweep's point that failed once, then succeeded: it is skipped as
    succeeded, named by its successful run only (the failed one was listed too: found by
    review); a point whose runs all failed or were cancelled says so."""
    from flowbatch.resume import classify_points

    flag = tmp_path / "second-try"
    write_template(
        tmp_path / "once",
        "workflow:\n  steps:\n    - name: s\n      action:\n        commands:\n"
        f"          - test ${{x}} = 1 -a -e {flag} || {{ touch {flag}; exit 1; }}\n"
        "parameters:\n  - {name: x, dtype: int}\n",
    )
    api.install(site, tmp_path / "once", workflow_id="once")
    drop(site, "a.yaml", {"workflow": "once", "sweep": {"x": [1, 2]}})
    run_until_idle(site)  # both fail (the first try of x=1, and x=2 always)
    first = {api.show_run(site, r["id"])["arguments"]["x"]: r["id"] for r in api.list_runs(site)}
    drop(site, "b.yaml", {"workflow": "once", "sweep": {"x": [1]}, "retry_failed": True})
    run_until_idle(site)
    good = next(r["id"] for r in api.list_runs(site) if r["state"] == "SUCCESS")
    version = site.templates.meta("once")["current"]
    plan = classify_points(site, "once", version, [{"x": 1}, {"x": 2}])
    one, two = plan.points
    assert one.status == "succeeded" and one.because == [good] and first[1] in one.runs
    assert two.status == "failed" and two.because == [first[2]]
    assert "failed or cancelled" in plan.skipped()[1]


def test_a_sweep_dropped_again_by_hand_with_a_new_file_runs_again(
    site: Site, tmp_path: Path
) -> None:
    """Found by review: a sweep dropped into the queue by hand a second time, its file
    of the same name holding new data, had every point skipped as already run (only
    `submit` renames the files). A point with a file of the participant's is never taken
    for one that ran."""
    setup_files(site, tmp_path)
    for data in ("first\n", "second\n"):
        doc = {"workflow": "wf", "arguments": {"data": "d.txt"}, "sweep": {"x": [1, 2]}}
        drop(site, "s.yaml", doc, {"d.txt": data})
        run_until_idle(site)
    outs = sorted(
        (Path(api.show_run(site, r["id"])["run_dir"]) / "out.txt").read_text()
        for r in api.list_runs(site)
    )
    assert outs == ["first\n", "first\n", "second\n", "second\n"]
