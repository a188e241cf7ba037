"""`flowbatch workflows retire WF VERSION`: an installed template version that is not the
current one goes, with its runs only when asked (`--with-runs`), never while one of them
is active or a daemon serves the site; a retire cut short is finished by running it
again. Real daemon ticks, real bash, a real SQLite index."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from flowbatch import api, lifecycle_ops
from flowbatch.daemon import Daemon
from flowbatch.errors import NotFoundError, StateError
from flowbatch.lifecycle_ops import retire_version
from flowbatch.site import Site

from .conftest import drop, lock_held, run_until_idle
from .test_lifecycle_ops import cli, install


def two_versions(site: Site, tmp_path: Path) -> tuple[str, str]:
    """``wf`` with two runs on its first version and one on its second, now current."""
    v1 = install(site, tmp_path, factor=1)
    drop(site, "a.yaml", {"workflow": "wf", "group": "alice", "name": "a", "arguments": {"x": 5}})
    drop(site, "b.yaml", {"workflow": "wf", "group": "bob", "name": "b", "arguments": {"x": 7}})
    run_until_idle(site)
    v2 = install(site, tmp_path, factor=10)
    drop(site, "c.yaml", {"workflow": "wf", "group": "carol", "name": "c", "arguments": {"x": 2}})
    run_until_idle(site)
    return v1, v2


def versions(site: Site) -> dict[str, Any]:
    return {v["version"]: v for v in api.show_workflow(site, "wf")["versions"]}


def test_a_version_goes_with_its_runs_only_when_asked(site: Site, tmp_path: Path) -> None:
    v1, v2 = two_versions(site, tmp_path)
    v1_dir = site.layout.template_dir("wf") / v1
    assert v1_dir.is_dir()
    with pytest.raises(StateError) as refused:
        retire_version(site, "wf", v1)
    assert "2 runs of wf ran on version" in str(refused.value)
    assert "--with-runs" in (refused.value.hint or "")
    assert v1_dir.is_dir() and len(api.list_runs(site)) == 3  # nothing changed

    info = retire_version(site, "wf", v1, with_runs=True)
    assert (info["version"], info["runs"], info["resumed"]) == (v1, 2, False)
    assert info["freed"] > 0
    assert not v1_dir.exists()
    assert [
        e.name for e in site.layout.template_dir("wf").iterdir() if e.name.startswith(".")
    ] == []
    assert set(versions(site)) == {v2}  # neither listed nor shown by its runs
    assert [r["name"] for r in api.list_runs(site)] == ["c"]
    meta = json.loads((site.layout.template_dir("wf") / "workflow.json").read_text())
    assert meta["current"] == v2 and [e["version"] for e in meta["versions"]] == [v2]
    # the current version still takes requests
    drop(site, "d.yaml", {"workflow": "wf", "group": "dave", "name": "d", "arguments": {"x": 3}})
    run_until_idle(site)
    assert {r["name"]: r["state"] for r in api.list_runs(site)} == {
        "c": "SUCCESS",
        "d": "SUCCESS",
    }
    # a request that asks for the retired version is rejected, saying so
    drop(site, "e.yaml", {"workflow": "wf", "name": "e", "version": v1})
    run_until_idle(site)
    errors = list(site.layout.rejected.glob("e*.error*"))
    assert errors, list(site.layout.rejected.iterdir())
    said = errors[0].read_text()
    assert v1 in said and "flowbatch workflows show wf" in said


def test_the_current_version_an_unknown_one_and_a_prefix(site: Site, tmp_path: Path) -> None:
    v1, v2 = two_versions(site, tmp_path)
    with pytest.raises(StateError) as current:
        retire_version(site, "wf", v2)
    assert "is the current version of wf" in str(current.value)
    with pytest.raises(NotFoundError) as unknown:
        retire_version(site, "wf", "ffffffffffff")
    assert "workflow wf has no version 'ffffffffffff'" in str(unknown.value)
    assert "flowbatch workflows show wf" in (unknown.value.hint or "")
    with pytest.raises(NotFoundError):
        retire_version(site, "wf", v1[:3])  # too short to name one
    # the command line, with a unique prefix
    out = cli(site, "workflows", "retire", "wf", v1[:6], "--with-runs")
    assert out.exit_code == 0, out.output
    assert f"retired version {v1} of wf: 2 runs" in out.output
    assert set(versions(site)) == {v2}


def test_a_version_with_an_active_run_stays(site: Site, tmp_path: Path) -> None:
    v1 = install(site, tmp_path, factor=1)
    d = Daemon(site)
    d.start()
    try:
        drop(site, "a.yaml", {"workflow": "wf", "name": "a"})
        d.tick()  # taken in: PENDING or RUNNING, active either way
        (run,) = api.list_runs(site)
        assert run["state"] in ("PENDING", "RUNNING")
        install(site, tmp_path, factor=10)
        with pytest.raises(StateError) as refused:
            retire_version(site, "wf", v1, with_runs=True)
        assert f"has 1 active runs ({run['id']})" in str(refused.value)
        assert (site.layout.template_dir("wf") / v1).is_dir()
    finally:
        d.stop()


def test_refused_while_a_daemon_serves_the_site(site: Site, tmp_path: Path) -> None:
    v1, _ = two_versions(site, tmp_path)
    with lock_held(site.lock_path):
        out = cli(site, "workflows", "retire", "wf", v1, "--with-runs")
    assert out.exit_code != 0
    assert "needs it stopped" in out.output
    assert (site.layout.template_dir("wf") / v1).is_dir() and len(api.list_runs(site)) == 3


def test_a_retire_cut_short_is_finished_by_running_it_again(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after its runs and the version's entry were gone, before its folder was:
    the same command finishes it (the version is no longer listed, its folder is)."""
    v1, v2 = two_versions(site, tmp_path)
    real = os.rename

    def crash(src: Any, dst: Any) -> None:
        if str(dst).endswith(".retiring"):
            raise KeyboardInterrupt  # the process killed there
        real(src, dst)

    monkeypatch.setattr(lifecycle_ops.os, "rename", crash)
    with pytest.raises(KeyboardInterrupt):
        retire_version(site, "wf", v1, with_runs=True)
    monkeypatch.setattr(lifecycle_ops.os, "rename", real)
    assert (site.layout.template_dir("wf") / v1).is_dir()
    assert set(versions(site)) == {v2}
    info = retire_version(site, "wf", v1, with_runs=True)
    assert (info["resumed"], info["runs"]) == (True, 0)
    assert not (site.layout.template_dir("wf") / v1).exists()
