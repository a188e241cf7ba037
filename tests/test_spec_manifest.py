"""Template folders and manifests: lookup order, fallback names, path escapes (§1.6)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flowbatch.errors import TemplateError
from flowbatch.spec import find_source, load_template
from flowbatch.spec.manifest import SPEC_NAMES

DATA = Path(__file__).parent / "data" / "templates"
SPEC = "workflow:\n  steps:\n    - action: {commands: [echo hi]}\n"


def write(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    base = tmp_path / "bench"
    write(base / "spec.yaml", SPEC)
    write(base / "code" / "run.py", "print(1)\n")
    write(base / "data" / "names.txt", "Alice\n")
    return base


def test_hello_world_fixture_folder() -> None:
    src = find_source(DATA / "helloworld")
    base = (DATA / "helloworld").resolve()
    assert src.name == "Hello World Demo"
    assert src.description == "Hello World Demo for ROB"
    assert src.spec_path == base / "benchmark.yaml"
    assert src.base_dir == base
    assert src.files == [(base / "code", "code"), (base / "data" / "names.txt", "data/names.txt")]
    # the {{ data/usage.md }} include is expanded
    assert src.instructions is not None
    assert "Upload a file" in src.instructions and "flowbatch submit" in src.instructions
    assert "{{" not in src.instructions
    load_template(src.spec_path)


def test_manifest_lookup_order(folder: Path) -> None:
    write(folder / "a.yaml", SPEC)
    write(folder / "b.yaml", SPEC)
    write(folder / "c.yaml", SPEC)
    write(folder / "flowserv.yml", "name: yml\nspecfile: c.yaml\n")
    assert find_source(folder).name == "yml"
    write(folder / "flowserv.yaml", "name: yaml\nspecfile: c.yaml\n")
    assert find_source(folder).name == "yaml"
    write(folder / "flowserv.json", '{"name": "json", "specfile": "b.yaml"}')
    assert find_source(folder).name == "json"
    write(folder / "flowbatch.yaml", "name: flowbatch\nspecfile: a.yaml\n")
    src = find_source(folder)
    assert src.name == "flowbatch" and src.spec_path == (folder / "a.yaml").resolve()


def test_fallback_spec_names_in_order(tmp_path: Path) -> None:
    base = tmp_path / "t"
    base.mkdir()
    for fname in reversed(SPEC_NAMES):
        write(base / fname, SPEC)
        assert find_source(base).spec_path.name == fname
    assert SPEC_NAMES[:3] == ("benchmark.yaml", "benchmark.yml", "benchmark.json")
    assert SPEC_NAMES[-1] == "template.json"


def test_manifest_without_specfile_uses_fallback(folder: Path) -> None:
    write(folder / "flowserv.yaml", "name: x\n")
    write(folder / "workflow.yml", SPEC)
    assert find_source(folder).spec_path.name == "workflow.yml"


def test_no_spec_found_lists_what_was_looked_for(folder: Path) -> None:
    with pytest.raises(TemplateError) as info:
        find_source(folder)
    err = info.value
    assert err.expected is not None and "benchmark.yaml" in err.expected
    assert "template.json" in err.expected
    assert err.hint is not None and "flowserv.json" in err.hint and "flowbatch.yaml" in err.hint


def test_no_manifest_copies_whole_folder_but_vcs(folder: Path) -> None:
    write(folder / ".git" / "HEAD", "ref\n")
    write(folder / "template.yaml", SPEC)
    src = find_source(folder)
    base = folder.resolve()
    assert src.name == "bench"
    assert src.description is None and src.instructions is None
    assert [t for _, t in src.files] == ["code", "data", "spec.yaml", "template.yaml"]
    assert all(p == base / t for p, t in src.files)


def test_manifest_without_files_excludes_itself(folder: Path) -> None:
    write(folder / "flowserv.yaml", "specfile: spec.yaml\n")
    targets = [t for _, t in find_source(folder).files]
    assert "flowserv.yaml" not in targets and "spec.yaml" in targets


def test_target_defaults_to_source(folder: Path) -> None:
    write(
        folder / "flowserv.yaml",
        "specfile: spec.yaml\nfiles:\n  - {source: code}\n"
        "  - {source: data/names.txt, target: in/n.txt}\n"
        "  - {source: data, target: ''}\n",
    )
    base = folder.resolve()
    assert find_source(folder).files == [
        (base / "code", "code"),
        (base / "data" / "names.txt", "in/n.txt"),
        (base / "data", ""),
    ]


def test_name_argument_overrides(folder: Path) -> None:
    write(folder / "flowserv.yaml", "name: manifest\nspecfile: spec.yaml\n")
    assert find_source(folder, name="given").name == "given"


def test_specfile_argument(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(folder / "flowserv.yaml", "specfile: nope.yaml\n")
    write(folder / "alt.yaml", SPEC)
    assert find_source(folder, specfile="alt.yaml").spec_path == (folder / "alt.yaml").resolve()
    outside = write(tmp_path / "elsewhere.yaml", SPEC)
    monkeypatch.chdir(tmp_path)
    # a user's argument is tried as given first (cwd-relative), as flowServ does
    assert find_source(folder, specfile="elsewhere.yaml").spec_path == outside.resolve()


def test_manifest_specfile_missing(folder: Path) -> None:
    write(folder / "flowserv.yaml", "specfile: nope.yaml\n")
    with pytest.raises(TemplateError, match="does not exist") as info:
        find_source(folder)
    assert info.value.field == "specfile"


def test_bare_file(tmp_path: Path) -> None:
    path = write(tmp_path / "hello.yaml", SPEC)
    write(tmp_path / "other.txt", "x")
    src = find_source(path)
    assert src.name == "hello" and src.files == [] and src.spec_path == path.resolve()
    assert src.base_dir == tmp_path.resolve()
    assert find_source(path, name="Hi").name == "Hi"


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="no such"):
        find_source(tmp_path / "nope")


@pytest.mark.parametrize(
    ("manifest", "field"),
    [
        ("workflowSpec: spec.yaml\n", "workflowSpec"),
        ("specfile: spec.yaml\nfiles: [{source: code, dest: x}]\n", "files[0].dest"),
        ("specfile: spec.yaml\nfiles: [{target: x}]\n", "files[0]"),
        ("specfile: spec.yaml\nfiles: code\n", "files"),
        ("specfile: spec.yaml\nname: 3\n", "name"),
        ("specfile: spec.yaml\nname: ''\n", "name"),
        ("specfile: ../spec.yaml\n", "specfile"),
        ("specfile: /etc/passwd\n", "specfile"),
        ("specfile: spec.yaml\nfiles: [{source: ../x}]\n", "files[0].source"),
        ("specfile: spec.yaml\nfiles: [{source: /etc}]\n", "files[0].source"),
        ("specfile: spec.yaml\nfiles: [{source: code, target: ../code}]\n", "files[0].target"),
        ("specfile: spec.yaml\nfiles: [{source: code, target: /code}]\n", "files[0].target"),
        ("specfile: spec.yaml\nfiles: [{source: missing}]\n", "files[0].source"),
        ("specfile: spec.yaml\nfiles: [{source: data/names.txt, target: ''}]\n", "files[0].target"),
        ("specfile: spec.yaml\ninstructions: ../README.md\n", "instructions"),
    ],
)
def test_manifest_strict_and_paths_stay_inside(folder: Path, manifest: str, field: str) -> None:
    write(folder / "flowserv.yaml", manifest)
    with pytest.raises(TemplateError) as info:
        find_source(folder)
    assert info.value.field == field
    assert info.value.file is not None and info.value.file.endswith("flowserv.yaml")


def test_symlink_escape_in_manifest_path(folder: Path, tmp_path: Path) -> None:
    secret = write(tmp_path / "secret" / "key.txt", "s")
    os.symlink(secret.parent, folder / "link")
    write(folder / "flowserv.yaml", "specfile: spec.yaml\nfiles: [{source: link/key.txt}]\n")
    with pytest.raises(TemplateError, match="leads out"):
        find_source(folder)


def test_symlink_escape_inside_copied_tree(folder: Path, tmp_path: Path) -> None:
    secret = write(tmp_path / "secret.txt", "s")
    os.symlink(secret, folder / "code" / "secret.txt")
    write(folder / "flowserv.yaml", "specfile: spec.yaml\nfiles: [{source: code}]\n")
    with pytest.raises(TemplateError, match=r"symlink code/secret\.txt leads out"):
        find_source(folder)
    (folder / "flowserv.yaml").unlink()
    write(folder / "workflow.yaml", SPEC)
    with pytest.raises(TemplateError, match="leads out"):
        find_source(folder)  # the whole-folder copy is checked too


def test_symlink_inside_the_folder_is_fine(folder: Path) -> None:
    os.symlink("run.py", folder / "code" / "main.py")
    write(folder / "workflow.yaml", SPEC)
    find_source(folder)


def test_instructions_includes(folder: Path) -> None:
    write(folder / "docs" / "a.md", "A {{docs/b.md}}")
    write(folder / "docs" / "b.md", "B")
    write(folder / "README.md", "Intro\n{{ docs/a.md }}\nKeep {{ not_a_file }} as text\n")
    write(folder / "flowserv.yaml", "specfile: spec.yaml\ninstructions: README.md\n")
    assert find_source(folder).instructions == "Intro\nA B\nKeep {{ not_a_file }} as text"


def test_instructions_include_cycle_is_bounded(folder: Path) -> None:
    write(folder / "README.md", "loop {{README.md}}")
    write(folder / "flowserv.yaml", "specfile: spec.yaml\ninstructions: README.md\n")
    with pytest.raises(TemplateError, match="deeper than"):
        find_source(folder)


def test_instructions_include_escape(folder: Path) -> None:
    write(folder / "README.md", "{{../../etc/passwd}}")
    write(folder / "flowserv.yaml", "specfile: spec.yaml\ninstructions: README.md\n")
    with pytest.raises(TemplateError, match="leaves its folder"):
        find_source(folder)


def test_instructions_file_missing(folder: Path) -> None:
    write(folder / "flowserv.yaml", "specfile: spec.yaml\ninstructions: nope.md\n")
    with pytest.raises(TemplateError, match="cannot read instructions"):
        find_source(folder)


def test_empty_manifest_means_defaults(folder: Path) -> None:
    write(folder / "flowserv.yaml", "")
    write(folder / "benchmark.json", '{"workflow": {"steps": [{"action": {"commands": ["a"]}}]}}')
    src = find_source(folder)
    assert src.spec_path.name == "benchmark.json" and src.name == "bench"
