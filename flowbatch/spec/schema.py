"""JSON Schemas of the files people write: templates, requests, the site config.

The request and the site config are pydantic models already; their schemas are exported
from them. The template parser (:mod:`flowbatch.spec.template`, :mod:`.params`) is
hand-written, because its rules go beyond a schema (references must name declared
parameters, defaults must fit their own declarations, ...). The models below only
*describe* the template format so an editor can complete and check it: the flowServ 0.9
layout, the legacy REANA-style layout, the docs' spelling variants and flowbatch's
extension keys. They are never used to parse a template; a test checks that they accept
every shipped template and refuse the unknown keys the parser refuses.

``flowbatch schema template|request|site`` prints them; ``schemas/*.schema.json`` in the
repository are that output (a test fails when they are stale), and the examples point at
them with a ``# yaml-language-server: $schema=...`` first line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from ..config import SiteConfig
from .request import Request

DRAFT = "https://json-schema.org/draft/2020-12/schema"
KINDS = ("template", "request", "site")


class _Doc(BaseModel):
    """Unknown keys are refused, as the parser does."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _one_required(*names: str) -> dict[str, Any]:
    """JSON Schema: at least one of ``names`` is present (the docs' spelling variants)."""
    return {"anyOf": [{"required": [n]} for n in names]}


# -- parameters ---------------------------------------------------------------------------

DTypeName = Literal["bool", "select", "file", "int", "float", "string", "list", "record"]
Scalar = str | int | float | bool


class SelectValue(_Doc):
    """One choice of a ``select`` parameter."""

    name: str = Field(description="Shown to users.")
    value: str | int | float = Field(description="The value a run receives.")
    isDefault: bool = Field(
        default=False,
        description="The default choice when the parameter has no defaultValue (at most one).",
    )


class ElementDeclaration(_Doc):
    """A parameter declaration; as a list's ``para`` its ``name`` may be left out."""

    model_config = ConfigDict(json_schema_extra=_one_required("dtype", "type", "datatype"))

    name: str | None = Field(default=None, description="Identifier; ${name} in commands.")
    dtype: DTypeName | None = Field(default=None, description="Data type.")
    type: DTypeName | None = Field(default=None, description="flowServ docs' spelling of dtype.")
    datatype: DTypeName | None = Field(
        default=None, description="Legacy guide's spelling of dtype."
    )
    index: int | None = Field(default=None, description="Display order.")
    label: str | None = Field(default=None, description="Shown to users.")
    help: str | None = Field(default=None, description="A longer explanation.")
    description: str | None = Field(default=None, description="Docs' spelling of help.")
    defaultValue: Any = Field(default=None, description="Used when a request gives none.")
    isRequired: bool | None = Field(
        default=None, description="Default: true unless a defaultValue is given."
    )
    group: str | None = Field(default=None, description="A parameterGroups name.")
    module: str | None = Field(default=None, description="Docs' spelling of group.")
    range: str | None = Field(
        default=None, description="int/float: an interval such as '[0,10]', '(0,1]', '(,5]'."
    )
    values: list[SelectValue] | None = Field(default=None, description="select: the choices.")
    target: str | None = Field(
        default=None, description="file: where the file goes in the run folder (relative)."
    )
    as_: str | None = Field(default=None, alias="as", description="Docs' spelling of target.")
    para: ElementDeclaration | None = Field(
        default=None, description="list: the declaration of its elements."
    )
    fields: list[ElementDeclaration] | None = Field(
        default=None, description="record: the declarations of its fields."
    )


class ParameterDeclaration(ElementDeclaration):
    """A template parameter (a ``name`` is required at the top level)."""

    model_config = ConfigDict(json_schema_extra=_one_required("dtype", "type", "datatype"))

    name: str = Field(  # narrowed from the base: required here
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Identifier: ${name} / $[[name]] in the workflow.",
    )


class ParameterGroup(_Doc):
    name: str
    title: str
    index: int


# -- the workflow: flowServ 0.9 layout ------------------------------------------------------


class Files(_Doc):
    inputs: list[str] | None = Field(default=None, description="Copied into the run folder.")
    outputs: list[str] | None = Field(
        default=None, description="Produced in the run folder (relative paths)."
    )


class Action(_Doc):
    environment: str | None = Field(
        default=None, description="Container image or environment name (recorded only)."
    )
    commands: str | list[str] = Field(description="Shell commands, run in order.")


class Step(_Doc):
    name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$",
        description="Default: stepN. Becomes a file name.",
    )
    files: Files | None = None
    action: Action


ContextValue = str | int | float | bool


class SerialWorkflow(_Doc):
    """flowServ 0.9: ``{files, parameters, steps}``."""

    files: Files | None = None
    parameters: dict[str, ContextValue] | None = Field(
        default=None, description="${name} values of the commands (text or $[[param]])."
    )
    steps: list[Step] = Field(description="Run in order; the first failing command stops.")
    version: str | int | float | None = None


# -- the workflow: legacy REANA-style layout of flowServ's user guide -----------------------


class LegacyInputs(_Doc):
    files: list[str] | None = None
    parameters: dict[str, ContextValue] | None = None


class LegacyStep(_Doc):
    name: str | None = None
    environment: str | None = None
    commands: str | list[str]


class LegacySpecification(_Doc):
    steps: list[LegacyStep] | None = None


class LegacyOutputs(_Doc):
    files: list[str] | None = None


class LegacyInner(_Doc):
    type: Literal["serial"]
    specification: LegacySpecification
    outputs: LegacyOutputs | None = None


class LegacyWorkflow(_Doc):
    """The guide's layout: ``{inputs, parameters, workflow: {type: serial, specification}}``."""

    version: str | int | float | None = None
    inputs: LegacyInputs | None = None
    parameters: dict[str, ContextValue] | None = None
    workflow: LegacyInner
    outputs: LegacyOutputs | None = None


# -- outputs, results, post-processing, extensions ---------------------------------------


class OutputFile(_Doc):
    source: str = Field(description="Path in the run folder.")
    key: str | None = None
    title: str | None = None
    caption: str | None = None
    format: dict[str, Any] | None = None
    widget: dict[str, Any] | None = None


ColumnType = Literal["float", "int", "string", "decimal"]


class ResultColumn(_Doc):
    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["dtype"]}, {"required": ["type"]}]}
    )

    name: str
    label: str
    dtype: ColumnType | None = Field(default=None, description="float, int or string.")
    type: ColumnType | None = Field(default=None, description="Docs' spelling ('decimal').")
    required: bool = True
    path: str | None = Field(default=None, description="Keys separated by '/', e.g. 'a/b'.")


class SortKey(_Doc):
    name: str
    sortDesc: bool = True


class Results(_Doc):
    file: str = Field(description="The result file (JSON or YAML) in the run folder.")
    schema_: list[ResultColumn] = Field(alias="schema", min_length=1)
    orderBy: list[SortKey] | None = Field(
        default=None, description="Default: the first column, descending."
    )


class PostProcInputs(_Doc):
    files: list[str]
    runs: str | None = Field(default=None, description="Where the runs folder goes.")


class PostProc(_Doc):
    workflow: SerialWorkflow | LegacyWorkflow
    inputs: PostProcInputs | None = None
    outputs: list[OutputFile] | None = None


class Resources(_Doc):
    """Scheduler resources (a request's keys win over the template's)."""

    time: str | None = Field(default=None, description="'90s', '30m', '2h' or [D-]HH:MM[:SS].")
    cpus: int | None = Field(default=None, ge=1)
    mem: str | int | None = Field(default=None, description="'500M', '4G' or megabytes.")
    gpus: int | None = Field(default=None, ge=0)
    partition: str | None = None


class TemplateDocument(_Doc):
    """A flowbatch workflow template (flowServ 0.9, legacy, or native ``flowbatch: 1``)."""

    workflow: SerialWorkflow | LegacyWorkflow
    parameters: list[ParameterDeclaration] | None = None
    parameterGroups: list[ParameterGroup] | None = None
    outputs: list[OutputFile] | None = None
    results: Results | None = None
    postproc: PostProc | None = None
    executor: str | None = Field(default=None, description="flowbatch: executor name.")
    timeLimit: float | str | None = Field(
        default=None, description="flowbatch: seconds, or '90s', '10m', '2h', '1:30:00'."
    )
    retries: int | None = Field(
        default=None, ge=0, description="flowbatch: attempts after infrastructure failures."
    )
    resources: Resources | None = Field(default=None, description="flowbatch: scheduler needs.")
    flowbatch: Literal[1] | None = Field(
        default=None, description="flowbatch: 1 marks a native (Jinja2) template."
    )


# -- export -----------------------------------------------------------------------------------


def _finish(schema: dict[str, Any], title: str) -> dict[str, Any]:
    return {"$schema": DRAFT, "title": title, **{k: v for k, v in schema.items() if k != "title"}}


def template_schema() -> dict[str, Any]:
    return _finish(TemplateDocument.model_json_schema(by_alias=True), "flowbatch template")


def request_schema() -> dict[str, Any]:
    schema = Request.model_json_schema(by_alias=True)
    # The model keeps `resources` loose (checked by a validator); describe its keys here.
    if "resources" in schema.get("properties", {}):
        res = Resources.model_json_schema()
        schema.setdefault("$defs", {})["Resources"] = res
        schema["properties"]["resources"] = {
            "anyOf": [{"$ref": "#/$defs/Resources"}, {"type": "null"}],
            "description": schema["properties"]["resources"].get("description", ""),
        }
    return _finish(schema, "flowbatch run request")


_TEXT = {"type": "string", "description": "a duration or size as text, e.g. '10m', '4G'"}


def site_schema() -> dict[str, Any]:
    schema = SiteConfig.model_json_schema(by_alias=True)
    for model in _models(SiteConfig):
        props = (
            schema.get("properties", {})
            if model is SiteConfig
            else schema.get("$defs", {}).get(model.__name__, {}).get("properties", {})
        )
        for name in _text_accepting_numbers(model):
            if name in props:
                props[name] = _or_text(props[name])
    return _finish(schema, "flowbatch site configuration (flowbatch.yaml)")


def _models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """``model`` and every model nested in its fields (the sections of the config)."""
    found: list[type[BaseModel]] = [model]
    for info in model.model_fields.values():
        for inner in _model_types(info.annotation):
            if inner not in found:
                found.extend(m for m in _models(inner) if m not in found)
    return found


def _model_types(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _model_types(arg)]


def _text_accepting_numbers(model: type[BaseModel]) -> list[str]:
    """Numeric fields with a mode='before' validator: they also take text ('10m', '2h'),
    which the generated schema cannot know about."""
    names: list[str] = []
    for dec in model.__pydantic_decorators__.field_validators.values():
        if dec.info.mode != "before":
            continue
        for name in dec.info.fields:
            info = model.model_fields.get(name)
            if info is not None and _numeric(info.annotation):
                names.append(name)
    return names


def _numeric(annotation: Any) -> bool:
    return annotation in (int, float) or any(a in (int, float) for a in get_args(annotation))


def _or_text(prop: dict[str, Any]) -> dict[str, Any]:
    if "anyOf" in prop:
        if _TEXT not in prop["anyOf"]:
            prop["anyOf"].insert(len(prop["anyOf"]) - 1, _TEXT)  # before the trailing null
        return prop
    keep = {k: v for k, v in prop.items() if k in ("default", "description", "title")}
    kind = {k: v for k, v in prop.items() if k not in keep}
    return {"anyOf": [kind, _TEXT], **keep}


EXPORTERS: dict[str, Callable[[], dict[str, Any]]] = {
    "template": template_schema,
    "request": request_schema,
    "site": site_schema,
}


def schema_for(kind: str) -> dict[str, Any]:
    """The JSON Schema of ``template``, ``request`` or ``site``."""
    try:
        return EXPORTERS[kind]()
    except KeyError:
        raise ValueError(f"unknown schema {kind!r} (expected one of {', '.join(KINDS)})") from None


def schema_text(kind: str) -> str:
    """The schema as the shipped ``schemas/<kind>.schema.json`` holds it."""
    return json.dumps(schema_for(kind), indent=2, sort_keys=False) + "\n"
