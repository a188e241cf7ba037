"""Review (s23): a symlinked folder nested in a template folder was dropped at install
without a word (os.walk does not descend into links; one at the top is followed). It is
followed now, and a link to a folder holding it (a loop) is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowbatch import api
from flowbatch.errors import TemplateError
from tests.conftest import make_site, write_template

TEMPLATE = (
    "workflow:\n  steps:\n    - name: a\n      action:\n        commands:\n"
    "          - ${python} code/lib/helper.py\n"
)


def test_a_symlinked_folder_inside_a_template_folder_is_installed(tmp_path: Path) -> None:
    folder = write_template(
        tmp_path / "t",
        TEMPLATE,
        {"shared/lib/helper.py": "print('hi')\n", "code/main.py": "print(1)\n"},
    )
    (folder / "code" / "lib").symlink_to("../shared/lib")
    site = make_site(tmp_path / "site")
    try:
        done = api.install(site, folder, workflow_id="tl")
        files = site.templates.files_dir("tl", done.version)
        assert (files / "code" / "lib" / "helper.py").is_file()
        assert not (files / "code" / "lib").is_symlink()
    finally:
        site.close()


def test_a_symlink_loop_is_refused(tmp_path: Path) -> None:
    folder = write_template(tmp_path / "t", TEMPLATE, {"code/lib/helper.py": "print('hi')\n"})
    (folder / "code" / "lib" / "again").symlink_to("..")
    site = make_site(tmp_path / "site")
    try:
        with pytest.raises(TemplateError, match="a loop"):
            api.install(site, folder, workflow_id="tl")
    finally:
        site.close()


def test_links_that_branch_are_refused_past_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """d{n}/{x,y} -> d{n-1}: no loop, but 2^n trees to copy (found by review)."""
    from flowbatch.store import templates

    monkeypatch.setattr(templates, "MAX_TEMPLATE_ENTRIES", 500)  # the real bound: 20,000
    folder = write_template(tmp_path / "t", TEMPLATE, {"code/lib/helper.py": "print('hi')\n"})
    (folder / "d0").mkdir()
    (folder / "d0" / "f.txt").write_text("x\n")
    for n in range(1, 12):
        (folder / f"d{n}").mkdir()
        for leg in ("x", "y"):
            (folder / f"d{n}" / leg).symlink_to(f"../d{n - 1}")
    site = make_site(tmp_path / "site")
    try:
        with pytest.raises(TemplateError, match="more than 500 folders and files"):
            api.install(site, folder, workflow_id="tl")
    finally:
        site.close()


def test_the_bound_counts_the_whole_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each top-level entry counted from zero: 20 links to one tree of 250 entries copied
    20 times the bound's worth (found by review)."""
    from flowbatch.store import templates

    monkeypatch.setattr(templates, "MAX_TEMPLATE_ENTRIES", 500)
    folder = write_template(tmp_path / "t", TEMPLATE, {"code/lib/helper.py": "print('hi')\n"})
    tree = folder / "data"
    for i in range(120):
        (tree / f"d{i}").mkdir(parents=True)
        (tree / f"d{i}" / "f.txt").write_text("x\n")
    for n in range(20):
        (folder / f"link{n}").symlink_to("data")
    site = make_site(tmp_path / "site")
    try:
        with pytest.raises(TemplateError, match="more than 500 folders and files"):
            api.install(site, folder, workflow_id="tl")
    finally:
        site.close()
