"""docs/: the CLI reference is generated from the commands and must be current."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from flowbatch import docgen

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
GUIDES = ("organisers.md", "participants.md", "admins.md", "cli.md")


def test_cli_reference_is_current() -> None:
    assert docgen.DOC == DOCS / "cli.md"
    assert DOCS.joinpath("cli.md").read_text() == docgen.render(), (
        "docs/cli.md is stale: run `python -m flowbatch.docgen` and commit the result"
    )


def test_cli_reference_covers_every_command() -> None:
    from flowbatch.cli import main

    text = docgen.render()
    for name in main.commands:
        assert f"## `flowbatch {name}`" in text


def test_docgen_check_mode(tmp_path: Path) -> None:
    stale = tmp_path / "cli.md"
    stale.write_text("old\n")
    assert docgen.main(["--check", "--output", str(stale)]) == 1
    assert docgen.main(["--output", str(stale)]) == 0
    assert docgen.main(["--check", "--output", str(stale)]) == 0


@pytest.mark.parametrize("name", GUIDES)
def test_guides_exist_and_are_linked_from_the_readme(name: str) -> None:
    assert (DOCS / name).is_file()
    assert f"(docs/{name})" in (REPO / "README.md").read_text()


@pytest.mark.parametrize("name", GUIDES)
def test_relative_links_resolve(name: str) -> None:
    text = (DOCS / name).read_text()
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (DOCS / target).exists(), f"{name} links to missing {target}"


def test_docgen_of_an_installed_flowbatch_asks_where_to_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside the source tree its default was site-packages/docs/cli.md (found by
    review): it asks for --output instead."""
    monkeypatch.setattr(docgen, "DOC", tmp_path / "site-packages" / "docs" / "cli.md")
    with pytest.raises(SystemExit) as ended:
        docgen.main([])
    assert ended.value.code == 2
    assert not (tmp_path / "site-packages" / "docs").exists()
    assert docgen.main(["--output", str(tmp_path / "cli.md")]) == 0


def test_the_native_example_of_the_organisers_guide_runs(tmp_path: Path) -> None:
    """Found by review: the native dialect had one sentence, and a first try with
    `${python}` installed and failed every run. The guide's native Hello World (its
    workflow, with the example's parameters, outputs and results) installs and runs."""
    import shutil

    import yaml

    from flowbatch import api

    from .conftest import EXAMPLES, drop, make_site, run_until_idle

    guide = (DOCS / "organisers.md").read_text(encoding="utf-8")
    block = guide[guide.index("```yaml\nflowbatch: 1\n") + len("```yaml\n") :]
    native = yaml.safe_load(block[: block.index("```")])
    folder = tmp_path / "native"
    shutil.copytree(EXAMPLES / "helloworld", folder)
    spec = yaml.safe_load((folder / "benchmark.yaml").read_text(encoding="utf-8"))
    (folder / "benchmark.yaml").write_text(yaml.safe_dump({**spec, **native}), encoding="utf-8")
    site = make_site(tmp_path / "site")
    assert api.install(site, folder, workflow_id="native").created
    drop(site, "r.yaml", {"workflow": "native", "arguments": {"greeting": "Hi 'there'"}})
    run_until_idle(site).stop()
    (run,) = api.list_runs(site)
    shown = api.show_run(site, run["id"])
    assert run["state"] == "SUCCESS", shown["messages"]
    out = Path(shown["run_dir"])
    assert "Hi 'there' Alice" in (out / "results" / "greetings.txt").read_text()
    assert (out / "results" / "lines.txt").read_text().split() == [
        "line",
        "0",
        "line",
        "1",
        "line",
        "2",
    ]
    site.close()


def test_every_file_a_site_keeps_at_its_root_is_named_in_the_admins_guide(
    tmp_path: Path,
) -> None:
    """An admin reading docs/admins.md meets every name flowbatch keeps in the site
    folder (found by review: `claims-boot` and `reindex.lock` were named nowhere): a
    site that ran a request, was reindexed and ran again, with a shared site's and the
    abandoned runs' names besides."""
    from flowbatch import api
    from flowbatch.executors.notes import SLURM_ABANDONED, SSH_ABANDONED

    from .conftest import EXAMPLES, drop, make_site, run_until_idle

    site = make_site(tmp_path / "site")
    api.install(site, EXAMPLES / "helloworld", workflow_id="helloworld")
    drop(site, "a.yaml", {"workflow": "helloworld", "name": "a"})
    run_until_idle(site).stop()
    api.reindex(site)
    drop(site, "b.yaml", {"workflow": "helloworld", "name": "b"})
    daemon = run_until_idle(site)
    names = set(os.listdir(site.root))
    daemon.stop()
    names |= {"index.db.new", SSH_ABANDONED, SLURM_ABANDONED, site.handover_path.name}
    guide = (DOCS / "admins.md").read_text()
    intro = guide[: guide.index("\n## ")]
    missing = sorted(n for n in names if f"`{n}" not in intro)
    assert missing == [], f"not named at the top of docs/admins.md: {missing}"
    assert "`daemon.<host>.lock`" in intro and "`claims-boot.<host>`" in intro
