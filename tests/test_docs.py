"""docs/: the CLI reference is generated from the commands and must be current."""

from __future__ import annotations

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
