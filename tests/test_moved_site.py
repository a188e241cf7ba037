"""A site folder moved to another path (a new disk, a renamed project): the index's rows
still hold the old absolute run folders. Reads go to the tree as it stands (found by
review: `runs show/logs/files/rerun` failed with "no run.json in <old path>", or, with a
copy left at the old path, quietly showed the copy's data)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from flowbatch import api
from flowbatch.cli import main
from flowbatch.site import Site

from .conftest import EXAMPLES, drop, make_site, run_until_idle


def test_commands_read_the_moved_tree_not_the_rows_old_paths(tmp_path: Path) -> None:
    site = make_site(tmp_path / "old")
    api.install(site, EXAMPLES / "helloworld", workflow_id="helloworld")
    for name in ("a", "b"):
        drop(site, f"{name}.yaml", {"workflow": "helloworld", "name": name})
    run_until_idle(site)
    ids = {r["name"]: r["id"] for r in api.list_runs(site)}
    site.close()
    new = tmp_path / "new"
    shutil.copytree(site.root, new, symlinks=True)
    # the copy left at the old place says otherwise: it must not be what is read
    old_json = site.store.layout.run_dir("helloworld", ids["a"]) / "run.json"
    record = json.loads(old_json.read_text())
    record["name"] = "FROM-OLD-COPY"
    old_json.write_text(json.dumps(record))
    cli = CliRunner()
    shown = cli.invoke(main, ["--site", str(new), "runs", "show", ids["a"], "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["name"] == "a"
    shutil.rmtree(site.root)  # the old place gone: still read from the new one
    for args in (["runs", "show", ids["a"]], ["runs", "logs", ids["a"]]):
        out = cli.invoke(main, ["--site", str(new), *args])
        assert out.exit_code == 0, out.output
    out = cli.invoke(main, ["--site", str(new), "runs", "delete", ids["b"]])
    assert out.exit_code == 0, out.output
    moved = Site(new)
    try:
        assert [r["name"] for r in api.list_runs(moved)] == ["a"]
        assert not moved.layout.run_dir("helloworld", ids["b"]).exists()
    finally:
        moved.close()
