"""Found by a review of the day's changes (site identity, the lock's holder, `workflows
retire`), each on real parts: real sites and SQLite files, the real CLI as a subprocess
where a user or a process of its own matters."""

from __future__ import annotations

import json
from pathlib import Path

from flowbatch import api
from flowbatch.site import Site

from .conftest import drop, run_until_idle
from .test_lifecycle_ops import cli, install


# -- workflows retire ---------------------------------------------------------------------------
def test_retire_takes_no_file_of_the_workflows_folder_for_a_version(
    site: Site, tmp_path: Path
) -> None:
    """`workflows retire wf workflow.json` removed the workflow's own record (the name of
    a file beside the versions was taken for a version a retire cut short had left): the
    workflow vanished from `workflows list`, its runs and current version left behind."""
    v1 = install(site, tmp_path, factor=1)
    drop(site, "a.yaml", {"workflow": "wf", "group": "alice", "name": "a", "arguments": {"x": 5}})
    run_until_idle(site)
    wf_dir = site.layout.template_dir("wf")
    before = (wf_dir / "workflow.json").read_bytes()

    out = cli(site, "workflows", "retire", "wf", "workflow.json", "--with-runs")
    assert out.exit_code == 1, out.output
    assert "workflow wf has no version 'workflow.json'" in out.output
    assert (wf_dir / "workflow.json").read_bytes() == before
    assert api.list_workflows(site)[0]["id"] == "wf"
    assert json.loads(before)["current"] == v1 and (wf_dir / v1).is_dir()
    assert [r["name"] for r in api.list_runs(site)] == ["a"]
