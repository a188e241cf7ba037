"""Installing templates every supported way, and running each dialect for real."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flowbatch import api
from flowbatch.errors import TemplateError
from flowbatch.store.templates import TemplateStore

from .conftest import EXAMPLES, drop, only_run, run_until_idle

LEGACY = """
workflow:
  version: 0.3.0
  inputs:
    files: [code/helloworld.py, code/analyze.py, "${[[names]]}"]
    parameters:
      inputfile: ${[[names]]}
      outputfile: results/greetings.txt
      sleeptime: ${[[sleeptime]]}
  workflow:
    type: serial
    specification:
      steps:
        - environment: 'python:3.7'
          commands:
            - ${python} code/helloworld.py
                --inputfile "${inputfile}"
                --outputfile "${outputfile}"
                --sleeptime ${sleeptime}
            - ${python} code/analyze.py
                --inputfile "${outputfile}"
                --outputfile results/analytics.json
  outputs:
    files: [results/greetings.txt, results/analytics.json]
parameters:
  - {name: names, label: Input file, datatype: file, as: data/names.txt}
  - {name: sleeptime, datatype: int, defaultValue: 0}
results:
  file: results/analytics.json
  schema:
    - {name: avg_count, label: Avg. Chars per Line, type: decimal}
    - {name: max_len, label: Max. Output Line, type: int}
"""

NATIVE = """
flowbatch: 1
workflow:
  steps:
    - name: greet
      action:
        commands:
          - |
            {% for i in range(times) %}
            echo "{{ greeting }} #{{ i }}" >> out.txt
            {% endfor %}
          - >-
            printf '{"lines": %d}' "$(wc -l < out.txt)" > result.json
parameters:
  - {name: times, dtype: int, range: '[1,5]', defaultValue: 2}
  - {name: greeting, dtype: string, defaultValue: hi}
results:
  file: result.json
  schema: [{name: lines, label: Lines, dtype: int}]
"""


def copy_code(dest: Path) -> None:
    shutil.copytree(EXAMPLES / "helloworld/code", dest / "code")


def test_legacy_reana_style_template_runs(site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "legacy"
    folder.mkdir()
    (folder / "template.yaml").write_text(LEGACY)  # found by the fallback names
    copy_code(folder)
    inst = api.install(site, folder, workflow_id="legacy")
    assert [s.name for s in inst.template.workflow.steps] == ["step1"]
    drop(
        site,
        "r.yaml",
        {"workflow": "legacy", "arguments": {"names": "n.txt"}},
        files={"n.txt": "Ann\nBob\n"},
    )
    run_until_idle(site)
    run = only_run(site)
    assert run["state"] == "SUCCESS", run["messages"]
    assert run["results"] == {"avg_count": 10.0, "max_len": 10}
    assert (
        Path(run["run_dir"]) / "results/greetings.txt"
    ).read_text() == "Hello Ann!\nHello Bob!\n"


def test_native_jinja_template_runs_with_values_as_data(site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "native"
    folder.mkdir()
    (folder / "workflow.yml").write_text(NATIVE)
    api.install(site, folder, workflow_id="native")
    drop(
        site,
        "r.yaml",
        {"workflow": "native", "arguments": {"times": 3, "greeting": "{{ 7*7 }} $(touch PWNED)"}},
    )
    run_until_idle(site)
    run = only_run(site)
    assert run["state"] == "SUCCESS", run["messages"]
    out = (Path(run["run_dir"]) / "out.txt").read_text().splitlines()
    assert out == [f"{{{{ 7*7 }}}} $(touch PWNED) #{i}" for i in range(3)]
    assert run["results"] == {"lines": 3}
    assert not list(site.root.rglob("PWNED"))


def test_bare_template_file_and_manifest_names(site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bare = tmp_path / "solo.yaml"
    bare.write_text("workflow:\n  steps:\n    - action: {commands: ['echo hi > hi.txt']}\n")
    inst = api.install(site, bare)
    assert inst.id == "solo"
    drop(site, "r.yaml", {"workflow": "solo"})
    run_until_idle(site)
    assert only_run(site)["state"] == "SUCCESS"
    # our own manifest name is looked up first
    folder = tmp_path / "own"
    folder.mkdir()
    (folder / "spec.yml").write_text(bare.read_text())
    (folder / "flowbatch.yaml").write_text("name: Own Manifest\nspecfile: spec.yml\n")
    inst = api.install(site, folder)
    assert inst.id == "Own_Manifest" and inst.name == "Own Manifest"


def test_install_rejects_with_file_path_and_reason(site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "workflow:\n  steps:\n    - action: {commands: ['echo $[[nope]]']}\n"
        "parameters: []\ncolour: red\n"
    )
    with pytest.raises(TemplateError) as info:
        api.install(site, bad)
    assert info.value.file and info.value.file.endswith("bad.yaml")
    assert "colour" in info.value.summary()
    assert list(site.layout.templates.iterdir()) == []  # nothing half-installed


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (  # flowServ 0.9 layout
            "workflow:\n  steps:\n    - action: {commands: ['true', \"echo '$[[w]]'\"]}\n"
            "parameters: [{name: w, dtype: string}]\n",
            "workflow.steps[0].action.commands[1]",
        ),
        (  # the legacy REANA-style layout of the user guide
            "workflow:\n  workflow:\n    type: serial\n    specification:\n      steps:\n"
            "        - commands: ['true', \"echo '${[[w]]}'\"]\n"
            "parameters: [{name: w, datatype: string}]\n",
            "workflow.workflow.specification.steps[0].commands[1]",
        ),
        (  # native: a context value, under workflow.parameters in the file
            "flowbatch: 1\nworkflow:\n  parameters: {c: '{{ oops'}\n"
            "  steps:\n    - action: {commands: ['true']}\n",
            "workflow.parameters.c",
        ),
    ],
)
def test_install_errors_found_while_rendering_name_the_files_key(
    site, tmp_path: Path, text: str, field: str
) -> None:  # type: ignore[no-untyped-def]
    """The checks that render the commands at install name the key as it is in the file
    (they named workflow.steps[0].commands[1], in no file)."""
    path = tmp_path / "t" / "benchmark.yaml"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(TemplateError) as info:
        api.install(site, path.parent)
    assert info.value.field == field
    assert info.value.file is not None and info.value.file.endswith("benchmark.yaml")


def test_reinstall_makes_a_new_version_and_runs_keep_theirs(site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "workflow.yaml").write_text(
        "workflow:\n  steps:\n    - action: {commands: ['echo v1 > v.txt']}\n"
    )
    first = api.install(site, folder, workflow_id="wf")
    drop(site, "a.yaml", {"workflow": "wf"})
    run_until_idle(site)
    # another process's view (a running daemon) has read the workflow's meta already
    elsewhere = TemplateStore(site.layout, {})
    assert elsewhere.load("wf")[1] == first.version
    (folder / "workflow.yaml").write_text(
        "workflow:\n  steps:\n    - action: {commands: ['echo v2 > v.txt']}\n"
    )
    second = api.install(site, folder, workflow_id="wf")
    assert second.version != first.version and second.created
    assert elsewhere.load("wf")[1] == second.version  # it sees the new current version
    drop(site, "b.yaml", {"workflow": "wf"})
    run_until_idle(site)
    runs = {r["version"]: api.show_run(site, r["id"]) for r in api.list_runs(site)}
    assert set(runs) == {first.version, second.version}
    assert (Path(runs[first.version]["run_dir"]) / "v.txt").read_text() == "v1\n"
    assert (Path(runs[second.version]["run_dir"]) / "v.txt").read_text() == "v2\n"
    meta = json.loads((site.layout.template_dir("wf") / "workflow.json").read_text())
    assert meta["current"] == second.version and len(meta["versions"]) == 2


def test_a_script_made_executable_is_a_new_version(site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An organiser installs a script without its x bit, runs fail, they `chmod +x` and
    install again: that is a new version whose runs can run it (the hash ignored modes:
    "already installed", and the runs kept failing)."""
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "workflow.yaml").write_text(
        "workflow:\n  steps:\n    - action: {commands: ['./go.sh > v.txt']}\n"
    )
    (folder / "go.sh").write_text("#!/bin/sh\necho ran\n")
    (folder / "go.sh").chmod(0o644)
    first = api.install(site, folder, workflow_id="wf")
    assert not api.install(site, folder, workflow_id="wf").created  # same content: same
    (folder / "go.sh").chmod(0o755)
    second = api.install(site, folder, workflow_id="wf")
    assert second.created and second.version != first.version
    drop(site, "a.yaml", {"workflow": "wf"})
    run_until_idle(site)
    (run,) = [api.show_run(site, r["id"]) for r in api.list_runs(site)]
    assert run["state"] == "SUCCESS", run["messages"]
    assert (Path(run["run_dir"]) / "v.txt").read_text() == "ran\n"


def test_once_ticks_launch_then_adopt_and_finish(hello_site) -> None:  # type: ignore[no-untyped-def]
    """Cron mode: a --once tick launches and exits; a later tick adopts and finalizes."""
    import time

    from flowbatch.daemon import run_daemon

    drop(hello_site, "a.yaml", {"workflow": "helloworld", "arguments": {"sleeptime": 0.3}})
    assert run_daemon(hello_site, once=True) is None
    run = api.list_runs(hello_site)[0]
    assert run["state"] == "RUNNING"
    deadline = time.monotonic() + 30
    while api.list_runs(hello_site)[0]["state"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.3)
        run_daemon(hello_site, once=True)
    shown = api.show_run(hello_site, run["id"])
    assert shown["state"] == "SUCCESS", shown["messages"]
    assert shown["results"]["max_len"] > 0


def test_variables_per_executor_ssh_hosts_have_their_own(tmp_path: Path) -> None:
    """``${python}`` is the daemon's interpreter for local runs and ``python3`` on an SSH
    host (the daemon's path means nothing there); a host's ``variables`` come over the
    site's; a template may use a variable only some host defines, and a run where it is
    not defined is refused with its name."""
    import sys

    from flowbatch.queue import Intake

    from .conftest import make_site, write_template

    site = make_site(
        tmp_path / "site",
        {
            "variables": {"scratch": "/site/scratch", "tool": "site-tool"},
            "ssh": {
                "a": {"hostname": "127.0.0.9", "variables": {"scratch": "/host/scratch"}},
                "b": {"hostname": "127.0.0.9", "variables": {"gpu": "yes"}},
            },
        },
    )
    write_template(
        tmp_path / "t",
        "workflow:\n  steps:\n    - action: {commands: ['${python} -V; echo ${scratch} ${tool}']}\n",
    )
    api.install(site, tmp_path / "t", workflow_id="wf")
    write_template(
        tmp_path / "g", "workflow:\n  steps:\n    - action: {commands: ['echo ${gpu}']}\n"
    )
    api.install(site, tmp_path / "g", workflow_id="gpu")  # known: host b defines it
    drop(site, "on-a.yaml", {"workflow": "wf", "executor": "a"})
    drop(site, "local.yaml", {"workflow": "wf", "executor": "local"})
    drop(site, "gpu-local.yaml", {"workflow": "gpu", "executor": "local"})
    result = Intake(site).run_once()
    scripts = {run.request: (site.store.run_dir(run) / "run.sh").read_text() for run in result.runs}
    assert "python3 -V; echo /host/scratch site-tool" in scripts["on-a.yaml"]
    assert f"{sys.executable} -V; echo /site/scratch site-tool" in scripts["local.yaml"]
    assert "gpu-local.yaml" not in scripts
    error = (site.layout.queue / "rejected" / "gpu-local.yaml.error.yaml").read_text()
    assert "${gpu} is defined only for runs on b, not on local" in error
    assert "executor: b" in error  # the hint
