"""Review (s23): a template bug that install let through was reported as the
participant's error (the request file, with the template's field path, no workflow or
version, nothing about the organiser). Install now refuses what it can see (a record
field the record does not declare, ``|attr('__class__')``); what only a render shows is
reported as the template's, naming the workflow and version, with "tell the organiser"."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flowbatch import api
from flowbatch.errors import TemplateError
from tests.conftest import drop, make_site, run_until_idle, write_template

REC_TYPO = """
flowbatch: 1
workflow:
  steps:
    - name: train
      action:
        commands:
          - echo lr={{ opts.learning_rate }} > out.txt
parameters:
  - name: opts
    dtype: record
    fields:
      - {name: lr, dtype: float, defaultValue: 0.1}
    defaultValue: {lr: 0.1}
"""


def test_a_template_bug_is_not_reported_as_the_requests(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", {"root_requests": True})
    try:
        try:
            api.install(site, write_template(tmp_path / "t", REC_TYPO), workflow_id="rt")
        except TemplateError:
            return  # refused at install: the organiser hears of it, fine
        drop(site, "r.yaml", {"workflow": "rt", "arguments": {"opts": {"lr": 0.5}}})
        run_until_idle(site)
        info = yaml.safe_load(
            (site.layout.rejected / "r.yaml.error.yaml").read_text(encoding="utf-8")
        )
        assert not (
            info.get("file") == "r.yaml" and str(info.get("field", "")).startswith("workflow.")
        ), info
    finally:
        site.close()


def _native(command: str, params: str) -> str:
    return (
        "flowbatch: 1\nworkflow:\n  steps:\n    - name: s\n      action:\n"
        f"        commands:\n          - {command}\nparameters:\n{params}"
    )


RECORD = (
    "  - name: opts\n    dtype: record\n    fields:\n"
    "      - {name: lr, dtype: float, defaultValue: 0.1}\n"
    "      - name: inner\n        dtype: record\n        fields: [{name: k, dtype: int}]\n"
)


@pytest.mark.parametrize(
    ("command", "said"),
    [
        ("echo {{ opts.learning_rate }}", "no field 'learning_rate'"),
        ("echo {{ opts['learning_rate'] }}", "no field 'learning_rate'"),
        ("echo {{ opts.inner.kk }}", "no field 'kk'"),
        ("echo {{ opts | attr('__class__') }}", "'__class__' is outside the sandbox"),
    ],
)
def test_install_refuses_what_it_can_see(tmp_path: Path, command: str, said: str) -> None:
    site = make_site(tmp_path / "site")
    try:
        folder = write_template(tmp_path / "t", _native(command, RECORD))
        with pytest.raises(TemplateError) as info:
            api.install(site, folder, workflow_id="w")
        assert said in str(info.value)
        assert info.value.field == "workflow.steps[0].action.commands[0]"
    finally:
        site.close()


@pytest.mark.parametrize(
    "command",
    [
        "echo {{ opts.lr }} {{ opts['lr'] }} {{ opts.inner.k }}",
        "echo {% for k, v in opts.items() %}{{ k }}={{ v }} {% endfor %}",
        "echo {{ opts.get('lr') }}",
        "echo {% set opts = dict(x=1) %}{{ opts.x }}",
    ],
)
def test_declared_fields_and_dict_methods_install(tmp_path: Path, command: str) -> None:
    site = make_site(tmp_path / "site")
    try:
        api.install(site, write_template(tmp_path / "t", _native(command, RECORD)), workflow_id="w")
    finally:
        site.close()


def test_a_render_error_of_the_template_names_the_workflow_and_the_organiser(
    tmp_path: Path,
) -> None:
    site = make_site(tmp_path / "site", {"root_requests": True})
    try:
        text = _native("echo {{ name.nothere }}", "  - {name: name, dtype: string}\n")
        api.install(site, write_template(tmp_path / "t", text), workflow_id="tb")
        drop(site, "r.yaml", {"workflow": "tb", "arguments": {"name": "x"}})
        run_until_idle(site)
        info = yaml.safe_load(
            (site.layout.rejected / "r.yaml.error.yaml").read_text(encoding="utf-8")
        )
        assert info["file"].startswith("the template of workflow 'tb' version "), info
        assert info["field"] == "workflow.steps[0].action.commands[0]"
        assert "the template's error, whatever the request's values" in info["reason"]
        assert "tell the organiser of workflow 'tb' version" in info["hint"]
    finally:
        site.close()
