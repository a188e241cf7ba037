"""Sweeps: one request, one run per point; crash-safe; resubmitted sweeps resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from flowbatch import api
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
