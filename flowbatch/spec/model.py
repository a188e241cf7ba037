"""The normalized, validated form of a workflow template.

Whatever dialect a template was written in (flowServ 0.9, the legacy REANA-style format
of flowServ's user guide, or flowbatch's native Jinja2 format), parsing produces these
objects. Everything downstream (rendering, running, ranking, reports) reads only these.
They are plain data; parsing and validation live in :mod:`flowbatch.spec.template` and
:mod:`flowbatch.spec.params`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

DType = Literal["bool", "select", "file", "int", "float", "string", "list", "record"]
ResultDType = Literal["float", "int", "string"]
Dialect = Literal["flowserv", "native"]

#: parameter types whose values are validated tokens (safe to paste inside single quotes)
TOKEN_DTYPES: frozenset[str] = frozenset({"int", "float", "bool", "select"})


@dataclass(frozen=True)
class Range:
    """A numeric interval such as ``[0,1)``; ``None`` bounds are unbounded."""

    low: float | None
    high: float | None
    low_closed: bool = True
    high_closed: bool = True
    text: str = ""

    def contains(self, value: float) -> bool:
        if self.low is not None and (
            value < self.low or (value == self.low and not self.low_closed)
        ):
            return False
        return not (
            self.high is not None
            and (value > self.high or (value == self.high and not self.high_closed))
        )


@dataclass(frozen=True)
class SelectValue:
    name: str
    value: Any
    is_default: bool = False


@dataclass
class Parameter:
    """A template parameter declaration (seed-inventory §2)."""

    name: str
    dtype: DType
    index: int
    required: bool
    label: str | None = None
    help: str | None = None
    default: Any = None
    has_default: bool = False  # defaults of 0, False and '' count (flowServ GAP)
    group: str | None = None
    range: Range | None = None  # int, float
    values: list[SelectValue] = field(default_factory=list)  # select
    target: str | None = None  # file
    para: Parameter | None = None  # list: the element declaration
    fields: list[Parameter] = field(default_factory=list)  # record

    def display_name(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class ParameterGroup:
    name: str
    title: str
    index: int


@dataclass(frozen=True)
class FileArg:
    """A cast ``file`` argument: ``source`` is the user's path (relative to the request
    file's folder, checked by the queue), ``target`` the path inside the run directory."""

    source: str
    target: str


@dataclass
class Step:
    """One step of a serial workflow: shell commands run in order in the run directory."""

    name: str
    commands: list[str]
    environment: str | None = None
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    #: each command's key in the template file (``workflow.steps[0].action.commands[1]``),
    #: for errors found after parsing; empty for a step not parsed from a file
    command_fields: list[str] = field(default_factory=list, compare=False)


@dataclass
class OutputFile:
    source: str
    key: str
    title: str | None = None
    caption: str | None = None
    format: dict[str, Any] | None = None
    widget: dict[str, Any] | None = None


@dataclass
class ResultColumn:
    name: str
    label: str
    dtype: ResultDType
    required: bool = True
    path: str | None = None  # '/'-separated path into the result document


@dataclass
class SortKey:
    name: str
    sort_desc: bool = True


@dataclass
class ResultSchema:
    file: str
    columns: list[ResultColumn]
    order_by: list[SortKey]  # never empty: defaults to the first column, descending

    def column(self, name: str) -> ResultColumn:
        return next(c for c in self.columns if c.name == name)


@dataclass
class Workflow:
    """The serial workflow: its steps and the context map (``workflow.parameters``)."""

    steps: list[Step]
    context: dict[str, Any] = field(default_factory=dict)
    input_files: list[str] = field(default_factory=list)
    output_files: list[str] = field(default_factory=list)
    #: the context map's key in the template file (``workflow.parameters``), for errors
    context_field: str = field(default="", compare=False)
    #: the input file list's key in the template file (``workflow.files.inputs``)
    inputs_field: str = field(default="inputs", compare=False)


@dataclass
class PostProc:
    workflow: Workflow
    input_files: list[str] = field(default_factory=list)
    runs_target: str = "runs"
    outputs: list[OutputFile] | None = None


@dataclass(frozen=True)
class Resources:
    """What a run asks of a scheduler (``resources:``; see :mod:`flowbatch.spec.resources`).

    ``time`` in seconds; ``mem`` in Slurm's form (``500M``); ``None``: not set here."""

    time: float | None = None
    cpus: int | None = None
    mem: str | None = None
    gpus: int | None = None
    partition: str | None = None


@dataclass
class Template:
    """A parsed, validated template. ``source`` names the file for error messages."""

    dialect: Dialect
    workflow: Workflow
    parameters: list[Parameter] = field(default_factory=list)
    parameter_groups: list[ParameterGroup] = field(default_factory=list)
    outputs: list[OutputFile] | None = None  # None: keep every file the run wrote
    results: ResultSchema | None = None
    postproc: PostProc | None = None
    # flowbatch extensions (documented; allowed top-level keys in both dialects)
    #: one of the site's executor names: checked by `install` and `validate` with a site
    #: (:func:`flowbatch.api.check_template_executor`), and by intake at each request
    executor: str | None = None
    time_limit: float | None = None  # seconds
    retries: int = 0
    resources: Resources | None = None  # scheduler resources (Slurm)
    source: str = ""

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)
