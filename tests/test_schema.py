"""JSON Schemas: generated from the models, shipped in schemas/, accepted by the examples."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from flowbatch.cli import main
from flowbatch.errors import TemplateError
from flowbatch.spec.request import parse_request
from flowbatch.spec.schema import KINDS, schema_for, schema_text
from flowbatch.spec.template import TOP_KEYS, parse_template

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "schemas"
MANIFESTS = ("flowserv.yaml", "flowserv.yml", "flowserv.json", "flowbatch.yaml")


def _is_request(path: Path) -> bool:
    return path.parent.name == "requests"


def _example_files() -> list[Path]:
    return sorted(p for p in (REPO / "examples").rglob("*.yaml") if p.name not in MANIFESTS)


def _fixture_templates() -> list[Path]:
    data = REPO / "tests" / "data" / "templates"
    return sorted(
        p
        for p in data.rglob("*")
        if p.suffix in (".yaml", ".yml", ".json") and p.name not in MANIFESTS
    )


def _validator(kind: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema_for(kind))


@pytest.mark.parametrize("kind", KINDS)
def test_schemas_are_valid_json_schema(kind: str) -> None:
    jsonschema.Draft202012Validator.check_schema(schema_for(kind))


@pytest.mark.parametrize("kind", KINDS)
def test_shipped_schema_is_current(kind: str) -> None:
    shipped = SCHEMAS / f"{kind}.schema.json"
    assert shipped.read_text() == schema_text(kind), (
        f"{shipped} is stale: run `flowbatch schema {kind} -o schemas/{kind}.schema.json`"
    )


def test_schema_command_prints_the_schema() -> None:
    result = CliRunner().invoke(main, ["schema", "request"])
    assert result.exit_code == 0
    assert json.loads(result.output)["title"] == "flowbatch run request"


@pytest.mark.parametrize("path", _example_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_examples_carry_a_schema_line_and_validate(path: Path) -> None:
    kind = "request" if _is_request(path) else "template"
    first = path.read_text().splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema="), first
    target = (path.parent / first.split("$schema=", 1)[1]).resolve()
    assert target == SCHEMAS / f"{kind}.schema.json"
    doc = yaml.safe_load(path.read_text())
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in _validator(kind).iter_errors(doc)]
    assert not errors


@pytest.mark.parametrize("path", _fixture_templates(), ids=lambda p: p.name)
def test_fixture_templates_validate(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    parse_template(doc, file=str(path))  # a real template: the parser takes it
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in _validator("template").iter_errors(doc)
    ]
    assert not errors


def test_native_and_legacy_spellings_validate() -> None:
    doc = {
        "flowbatch": 1,
        "timeLimit": "10m",
        "retries": 2,
        "executor": "local",
        "resources": {"cpus": 2, "mem": "4G", "time": "1h"},
        "parameters": [
            {"name": "n", "type": "int", "range": "[0,10]", "defaultValue": 1},
            {"name": "f", "datatype": "file", "as": "data/in.txt", "module": "g"},
            {"name": "xs", "dtype": "list", "para": {"dtype": "float"}},
            {"name": "r", "dtype": "record", "fields": [{"name": "a", "dtype": "string"}]},
            {
                "name": "s",
                "dtype": "select",
                "values": [{"name": "A", "value": "a", "isDefault": True}],
            },
        ],
        "parameterGroups": [{"name": "g", "title": "G", "index": 0}],
        "workflow": {"steps": [{"name": "x", "action": {"commands": "echo {{ n }}"}}]},
        "results": {
            "file": "r.json",
            "schema": [{"name": "a", "label": "A", "type": "decimal"}],
            "orderBy": [{"name": "a", "sortDesc": False}],
        },
    }
    parse_template(copy.deepcopy(doc), file="t.yaml")
    assert not list(_validator("template").iter_errors(doc))


def _base_template() -> dict[str, Any]:
    path = REPO / "examples" / "helloworld" / "benchmark.yaml"
    return yaml.safe_load(path.read_text())


def _put(doc: dict[str, Any], path: list[Any], key: str) -> None:
    node: Any = doc
    for part in path:
        node = node[part]
    node[key] = "surprise"


@pytest.mark.parametrize(
    "path",
    [
        [],  # top level
        ["workflow"],
        ["workflow", "steps", 0],
        ["workflow", "steps", 0, "action"],
        ["parameters", 0],
        ["outputs", 0],
        ["results"],
        ["results", "schema", 0],
        ["results", "orderBy", 0],
    ],
    ids=lambda p: ".".join(map(str, p)) or "top",
)
def test_unknown_keys_refused_by_parser_and_schema(path: list[Any]) -> None:
    doc = _base_template()
    _put(doc, path, "colour")
    with pytest.raises(TemplateError, match="unknown key 'colour'"):
        parse_template(copy.deepcopy(doc), file="t.yaml")
    assert list(_validator("template").iter_errors(doc)), "the schema accepted it"


def test_template_schema_knows_every_top_level_key() -> None:
    """The parser's keys and the schema's must not drift apart."""
    assert set(schema_for("template")["properties"]) == set(TOP_KEYS)


def test_request_schema_matches_the_model() -> None:
    good = {"workflow": "hello", "group": "a", "arguments": {"x": 1}, "resources": {"cpus": 2}}
    parse_request(good, file="r.yaml")
    assert not list(_validator("request").iter_errors(good))
    bad = {"workflow": "hello", "argumentz": {}}
    assert list(_validator("request").iter_errors(bad))
    assert list(_validator("request").iter_errors({"workflow": "x", "resources": {"cpu": 2}}))


def test_site_schema_takes_durations_as_text() -> None:
    v = _validator("site")
    assert not list(v.iter_errors({"time_limit": "2h", "polling": {"interval": 1}}))
    assert list(v.iter_errors({"polling": {"intervall": 1}}))
