"""Parse and validate workflow templates (seed-inventory §1, §3.1, §4.1).

Three ways of writing a template lead to one :class:`~flowbatch.spec.model.Template`:

* flowServ 0.9 (``workflow: {files, parameters, steps: [{name, files, action}]}``);
* the legacy REANA-style layout of flowServ's user guide
  (``workflow: {inputs, workflow: {type: serial, specification: {steps}}, outputs}``),
  which flowServ 0.9 silently parsed as zero steps (GAP): here it is translated;
* flowbatch's native templates, marked by the top-level key ``flowbatch: 1``, whose
  commands are Jinja2 source (rendered elsewhere, so no ``$[[...]]``/``${...}`` checks).

Validation is strict: every key is known, and an error names its path
(``workflow.steps[0].action.commands[1]``). For flowServ templates, every ``$[[x]]``
must name a declared parameter and every ``${x}`` in a command a known variable:
flowServ quietly turned an unknown ``${x}`` into ``x``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .. import durations
from ..errors import TemplateError
from ..text import short_repr
from ..yamlio import load_file
from .model import (
    Dialect,
    OutputFile,
    Parameter,
    ParameterGroup,
    PostProc,
    Resources,
    ResultColumn,
    ResultDType,
    ResultSchema,
    SortKey,
    Step,
    Template,
    Workflow,
)
from .params import check_keys, parse_parameters, relative_path
from .resources import ResourceError, parse_resources

__all__ = [
    "BUILTIN_VARIABLES",
    "Placeholder",
    "load_template",
    "parse_template",
    "placeholders",
]

TOP_KEYS = (
    "workflow",
    "parameters",
    "parameterGroups",
    "outputs",
    "results",
    "postproc",
    # flowbatch extensions
    "executor",
    "timeLimit",
    "retries",
    "resources",
    "flowbatch",
)
NATIVE_VERSIONS = (1,)

#: ``${...}`` names every command may use besides the context and the parameters
BUILTIN_VARIABLES: frozenset[str] = frozenset({"python"})
#: the only parameter a post-processing workflow sees (flowServ: the runs folder)
POSTPROC_RUNS = "runs"

# Step names become file names (per-step markers and logs in the run folder).
_STEP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")
# Context keys are ${name} placeholders and shell variables.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# a reference stands on one line, as the renderer substitutes it (flowbatch.render.flowserv)
_REFERENCE = re.compile(r"\$\[\[(.*?)\]\]")
_LEGACY_REFERENCE = re.compile(r"\$\{\[\[(.*?)\]\]\}")
# Python's string.Template pattern: $$ escape, $name, ${name}; anything else after a
# '$' (such as '$(', '$1', '$?', '${#a[@]}') is not a placeholder and stays shell text.
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<named>[_a-z][_a-z0-9]*)|\{(?P<braced>[_a-z][_a-z0-9]*)\})",
    re.IGNORECASE | re.ASCII,
)


@dataclass(frozen=True)
class Placeholder:
    """A ``${name}`` / ``$name`` placeholder found in a command."""

    name: str
    braced: bool
    start: int
    end: int


def placeholders(text: str) -> list[Placeholder]:
    """The ``${name}``/``$name`` placeholders of a command, in order; ``$$`` is skipped."""
    out: list[Placeholder] = []
    for m in _VARIABLE.finditer(text):
        if m.group("escaped") is None:
            braced = m.group("braced") is not None
            name = m.group("braced") if braced else m.group("named")
            out.append(Placeholder(name=name, braced=braced, start=m.start(), end=m.end()))
    return out


def load_template(path: str | os.PathLike[str], *, known_variables: Iterable[str] = ()) -> Template:
    """Read a template file (YAML, or JSON by its suffix) and parse it."""
    doc = load_file(path, as_written=True)
    return parse_template(doc, file=str(path), known_variables=known_variables)


@dataclass(frozen=True)
class _Rules:
    """What a workflow spec may refer to, and how strictly it is checked."""

    file: str
    dialect: Dialect
    references: frozenset[str]  # names allowed in $[[...]]
    variables: frozenset[str]  # names allowed in ${...} besides the workflow's context
    what: str  # 'declared parameter' or 'post-processing parameter', for messages


def parse_template(doc: Any, *, file: str, known_variables: Iterable[str] = ()) -> Template:
    """Validate a parsed template document and return the normalized :class:`Template`.

    ``known_variables`` are the site's extra ``${name}`` variables (flowServ's worker
    variables, e.g. ``java``); ``python`` is always known. Raises :class:`TemplateError`
    naming the file and the path inside it.
    """
    top = check_keys(
        doc, field="", file=file, allowed=TOP_KEYS, required=("workflow",), what="a mapping"
    )
    dialect = _dialect(top, file=file)
    params = parse_parameters(top.get("parameters"), file=file)
    groups = _parse_groups(top.get("parameterGroups"), file=file)
    _check_groups(params, groups, file=file)
    names = frozenset(p.name for p in params)
    site = frozenset(known_variables) | BUILTIN_VARIABLES
    rules = _Rules(file, dialect, names, site | names, "declared parameter")
    workflow = _parse_workflow(top["workflow"], field="workflow", rules=rules)
    post_rules = _Rules(
        file,
        dialect,
        frozenset({POSTPROC_RUNS}),
        site | {POSTPROC_RUNS},
        "post-processing parameter",
    )
    return Template(
        dialect=dialect,
        workflow=workflow,
        parameters=params,
        parameter_groups=groups,
        outputs=_parse_outputs(top.get("outputs"), field="outputs", file=file),
        results=_parse_results(top.get("results"), file=file),
        postproc=_parse_postproc(top.get("postproc"), rules=post_rules),
        executor=_parse_executor(top.get("executor"), file=file),
        time_limit=_parse_time_limit(top.get("timeLimit"), file=file),
        retries=_parse_retries(top.get("retries", 0), file=file),
        resources=_parse_resources(top.get("resources"), file=file),
        source=file,
    )


# -- top level ---------------------------------------------------------------------------


def _dialect(top: dict[str, Any], *, file: str) -> Dialect:
    if "flowbatch" not in top:
        return "flowserv"
    version = top["flowbatch"]
    if isinstance(version, bool) or version not in NATIVE_VERSIONS:
        raise TemplateError(
            f"unsupported flowbatch template version {version!r}",
            file=file,
            field="flowbatch",
            expected=f"one of: {', '.join(map(str, NATIVE_VERSIONS))}",
        )
    return "native"


def _parse_groups(doc: Any, *, file: str) -> list[ParameterGroup]:
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise TemplateError("must be a list", file=file, field="parameterGroups")
    groups: list[ParameterGroup] = []
    for i, item in enumerate(doc):
        path = f"parameterGroups[{i}]"
        check_keys(
            item,
            field=path,
            file=file,
            allowed=("name", "title", "index"),
            required=("name", "title", "index"),
        )
        name, title, index = item["name"], item["title"], item["index"]
        if not isinstance(name, str) or not name:
            raise TemplateError("must be a non-empty string", file=file, field=f"{path}.name")
        if not isinstance(title, str):
            raise TemplateError("must be a string", file=file, field=f"{path}.title")
        if isinstance(index, bool) or not isinstance(index, int):
            raise TemplateError("must be an integer", file=file, field=f"{path}.index")
        if any(g.name == name for g in groups):
            raise TemplateError(f"duplicate group name {name!r}", file=file, field=f"{path}.name")
        groups.append(ParameterGroup(name=name, title=title, index=index))
    return groups


def _check_groups(params: list[Parameter], groups: list[ParameterGroup], *, file: str) -> None:
    """Every parameter's group must be declared: a dangling reference is a typo."""
    known = [g.name for g in groups]
    for i, param in enumerate(params):
        if param.group is not None and param.group not in known:
            raise TemplateError(
                f"unknown parameter group {param.group!r}",
                file=file,
                field=f"parameters[{i}].group",
                expected=f"one of: {', '.join(known)}" if known else None,
                hint=None if known else "declare it under parameterGroups: {name, title, index}",
            )


def _parse_executor(value: Any, *, file: str) -> str | None:
    if value is None or (isinstance(value, str) and value.strip()):
        return value
    raise TemplateError("must be the name of an executor", file=file, field="executor")


def _parse_time_limit(value: Any, *, file: str) -> float | None:
    """Seconds, from a number or a text such as ``'90s'``, ``'10m'``, ``'2h'``,
    ``'1:30:00'`` (h:mm:ss), ``'30:00'`` (m:ss) or ``'1-12:00:00'`` (Slurm's d-h:mm:ss):
    :mod:`flowbatch.durations`."""
    if value is None:
        return None
    try:
        return durations.seconds(value)
    except durations.DurationError:
        raise TemplateError(
            f"invalid time limit {short_repr(value, 40)}",
            file=file,
            field="timeLimit",
            expected=f"a positive number of seconds, or {durations.FORMS}",
        ) from None


def _parse_resources(value: Any, *, file: str) -> Resources | None:
    try:
        return parse_resources(value)
    except ResourceError as exc:
        raise TemplateError(exc.message, file=file, field=exc.field) from None


def _parse_retries(value: Any, *, file: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise TemplateError(
        f"invalid retries {value!r}", file=file, field="retries", expected="an integer ≥ 0"
    )


# -- workflow ----------------------------------------------------------------------------


def _parse_workflow(doc: Any, *, field: str, rules: _Rules) -> Workflow:
    """Parse a serial workflow in either layout; check its references; refuse 0 steps."""
    if not isinstance(doc, dict):
        raise TemplateError("must be a mapping (a serial workflow)", file=rules.file, field=field)
    legacy = _is_legacy(doc)
    if legacy and rules.dialect == "flowserv":
        # The guide's ${[[name]]} is its REANA-era spelling of $[[name]].
        doc = _rewrite_legacy(doc)
    if rules.dialect == "flowserv":
        _check_references(doc, field=field, rules=rules, legacy=legacy)
    if legacy:
        workflow, commands = _parse_legacy(doc, field=field, file=rules.file)
    else:
        workflow, commands = _parse_serial(doc, field=field, file=rules.file)
    if not workflow.steps:
        raise TemplateError(
            "the workflow has no steps",
            file=rules.file,
            field=field,
            hint="a workflow needs at least one step with commands (flowServ ran zero "
            "steps and reported success)",
        )
    if rules.dialect == "flowserv":
        known = rules.variables | set(workflow.context)
        for path, command in commands:
            _check_variables(command, known, field=path, file=rules.file)
    return workflow


def _is_legacy(doc: dict[str, Any]) -> bool:
    """The REANA-style layout nests the steps under ``workflow.specification``."""
    modern = "steps" in doc or "files" in doc
    return not modern and any(k in doc for k in ("workflow", "inputs", "outputs"))


def _parse_serial(doc: dict[str, Any], *, field: str, file: str) -> tuple[Workflow, _Commands]:
    """flowServ 0.9: ``{files: {inputs, outputs}, parameters, steps, version}``."""
    check_keys(doc, field=field, file=file, allowed=("files", "parameters", "steps", "version"))
    inputs, outputs = _parse_files(doc.get("files"), field=f"{field}.files", file=file)
    context = _parse_context(doc.get("parameters"), field=f"{field}.parameters", file=file)
    steps_doc = _list(doc.get("steps"), field=f"{field}.steps", file=file)
    steps: list[Step] = []
    commands: _Commands = []
    for i, item in enumerate(steps_doc):
        step, cmds = _parse_step(item, i, field=f"{field}.steps[{i}]", file=file)
        steps.append(step)
        commands.extend(cmds)
    _check_step_names(steps, field=f"{field}.steps", file=file)
    wf = Workflow(
        steps=steps,
        context=context,
        input_files=inputs,
        output_files=outputs,
        context_field=f"{field}.parameters",
        inputs_field=f"{field}.files.inputs",
    )
    return wf, commands


_Commands = list[tuple[str, str]]  # (field path, command text)


def _parse_step(item: Any, i: int, *, field: str, file: str) -> tuple[Step, _Commands]:
    check_keys(
        item, field=field, file=file, allowed=("name", "files", "action"), required=("action",)
    )
    name = _step_name(item, i, field=field, file=file)
    inputs, outputs = _parse_files(item.get("files"), field=f"{field}.files", file=file)
    action = item["action"]
    path = f"{field}.action"
    if isinstance(action, str):
        raise TemplateError(
            "a step given as a parameter reference (an actor) is not supported by flowbatch "
            "(runs shell steps only)",
            file=file,
            field=path,
            expected="{environment, commands}",
        )
    if isinstance(action, dict) and ("func" in action or "notebook" in action):
        kind = "function" if "func" in action else "notebook"
        raise TemplateError(
            f"{kind} steps are not supported: flowbatch runs shell command steps",
            file=file,
            field=path,
            expected="{environment, commands}",
            hint="call the code from a command, e.g. ${python} -m package.module",
        )
    check_keys(
        action, field=path, file=file, allowed=("environment", "commands"), required=("commands",)
    )
    commands = _parse_commands(action["commands"], field=f"{path}.commands", file=file)
    step = Step(
        name=name,
        commands=[c for _, c in commands],
        environment=_environment(action, field=path, file=file),
        inputs=inputs,
        outputs=outputs,
        command_fields=[f for f, _ in commands],
    )
    return step, commands


def _parse_legacy(doc: dict[str, Any], *, field: str, file: str) -> tuple[Workflow, _Commands]:
    """The user guide's REANA-style layout, translated to the 0.9 one."""
    check_keys(
        doc,
        field=field,
        file=file,
        required=("workflow",),
        allowed=("version", "inputs", "parameters", "workflow", "outputs"),
    )
    inputs = check_keys(
        doc.get("inputs", {}), field=f"{field}.inputs", file=file, allowed=("files", "parameters")
    )
    if "parameters" in inputs and "parameters" in doc:
        raise TemplateError(
            "the context is given twice",
            file=file,
            field=f"{field}.parameters",
            hint=f"keep either {field}.parameters or {field}.inputs.parameters",
        )
    ctx_field = f"{field}.inputs.parameters" if "parameters" in inputs else f"{field}.parameters"
    context = _parse_context(
        inputs.get("parameters", doc.get("parameters")), field=ctx_field, file=file
    )
    inner_field = f"{field}.workflow"
    inner = check_keys(
        doc["workflow"],
        field=inner_field,
        file=file,
        allowed=("type", "specification", "outputs"),
        required=("type", "specification"),
    )
    if inner["type"] != "serial":
        raise TemplateError(
            f"unsupported workflow type {inner['type']!r}",
            file=file,
            field=f"{inner_field}.type",
            expected="serial",
        )
    spec_field = f"{inner_field}.specification"
    spec = check_keys(inner["specification"], field=spec_field, file=file, allowed=("steps",))
    steps_doc = _list(spec.get("steps"), field=f"{spec_field}.steps", file=file)
    steps: list[Step] = []
    commands: _Commands = []
    for i, item in enumerate(steps_doc):
        path = f"{spec_field}.steps[{i}]"
        check_keys(
            item,
            field=path,
            file=file,
            allowed=("name", "environment", "commands"),
            required=("commands",),
        )
        cmds = _parse_commands(item["commands"], field=f"{path}.commands", file=file)
        name = _step_name(item, i, field=path, file=file)
        env = _environment(item, field=path, file=file)
        steps.append(
            Step(
                name=name,
                commands=[c for _, c in cmds],
                environment=env,
                command_fields=[f for f, _ in cmds],
            )
        )
        commands.extend(cmds)
    _check_step_names(steps, field=f"{spec_field}.steps", file=file)
    output_files = _legacy_outputs(doc, inner, field=field, file=file)
    input_files = _str_list(inputs.get("files"), field=f"{field}.inputs.files", file=file)
    wf = Workflow(
        steps=steps,
        context=context,
        input_files=input_files,
        output_files=output_files,
        context_field=ctx_field,
        inputs_field=f"{field}.inputs.files",
    )
    return wf, commands


def _legacy_outputs(
    doc: dict[str, Any], inner: dict[str, Any], *, field: str, file: str
) -> list[str]:
    """``outputs: {files}`` sits beside ``workflow`` or (in one guide example) inside it."""
    if "outputs" in doc and "outputs" in inner:
        raise TemplateError(
            "outputs are given twice",
            file=file,
            field=f"{field}.workflow.outputs",
            hint=f"keep only {field}.outputs",
        )
    path = f"{field}.outputs" if "outputs" in doc else f"{field}.workflow.outputs"
    outputs = check_keys(
        doc.get("outputs", inner.get("outputs", {})), field=path, file=file, allowed=("files",)
    )
    return _path_list(outputs.get("files"), field=f"{path}.files", file=file)


def _step_name(item: dict[str, Any], i: int, *, field: str, file: str) -> str:
    name = item.get("name", f"step{i + 1}")
    if not isinstance(name, str) or _STEP_NAME.match(name) is None:
        raise TemplateError(
            f"invalid step name {name!r}",
            file=file,
            field=f"{field}.name",
            expected="up to 64 letters, digits, '_', '-' or '.', not starting with '.' or '-'",
            hint="step names become file names in the run folder",
        )
    return name


def _check_step_names(steps: list[Step], *, field: str, file: str) -> None:
    seen: set[str] = set()
    for i, step in enumerate(steps):
        if step.name in seen:
            raise TemplateError(
                f"duplicate step name {step.name!r}", file=file, field=f"{field}[{i}].name"
            )
        seen.add(step.name)


def _environment(doc: dict[str, Any], *, field: str, file: str) -> str | None:
    env = doc.get("environment")
    if env is None or isinstance(env, str):
        return env
    raise TemplateError(
        "must be a string (a container image or environment name)",
        file=file,
        field=f"{field}.environment",
    )


def _parse_commands(value: Any, *, field: str, file: str) -> _Commands:
    """A non-empty list of command strings (one string is one command)."""
    if isinstance(value, str):
        value, paths = [value], [field]
    elif isinstance(value, list):
        paths = [f"{field}[{i}]" for i in range(len(value))]
    else:
        raise TemplateError("must be a list of commands", file=file, field=field)
    if not value:
        raise TemplateError("a step needs at least one command", file=file, field=field)
    for path, command in zip(paths, value, strict=True):
        if isinstance(command, dict):
            raise TemplateError(
                "this command was read as a YAML mapping, because it contains ': '",
                file=file,
                field=path,
                expected="a string",
                hint="quote the whole command, or write it as a block scalar (- >-)",
            )
        if not isinstance(command, str) or not command.strip():
            raise TemplateError("a command must be a non-empty string", file=file, field=path)
    return list(zip(paths, value, strict=True))


def _parse_files(doc: Any, *, field: str, file: str) -> tuple[list[str], list[str]]:
    if doc is None:
        return [], []
    check_keys(doc, field=field, file=file, allowed=("inputs", "outputs"))
    inputs = _str_list(doc.get("inputs"), field=f"{field}.inputs", file=file)
    outputs = _path_list(doc.get("outputs"), field=f"{field}.outputs", file=file)
    return inputs, outputs


def _parse_context(doc: Any, *, field: str, file: str) -> dict[str, Any]:
    """``workflow.parameters``: the map of ``${name}`` values (scalars or ``$[[p]]``)."""
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise TemplateError("must be a mapping of name → value", file=file, field=field)
    for key, value in doc.items():
        if not isinstance(key, str) or _IDENTIFIER.match(key) is None:
            raise TemplateError(
                f"invalid variable name {key!r}",
                file=file,
                field=f"{field}.{key}",
                expected="letters, digits and '_', not starting with a digit",
                hint="the name is used as ${name} in commands",
            )
        if not isinstance(value, str | int | float | bool):
            raise TemplateError(
                f"must be a string, number or boolean, not {type(value).__name__}",
                file=file,
                field=f"{field}.{key}",
            )
    return dict(doc)


def _list(value: Any, *, field: str, file: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise TemplateError("must be a list", file=file, field=field)
    return value


def _str_list(value: Any, *, field: str, file: str) -> list[str]:
    items = _list(value, field=field, file=file)
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item:
            raise TemplateError("must be a non-empty string", file=file, field=f"{field}[{i}]")
    return list(items)


def _path_list(value: Any, *, field: str, file: str) -> list[str]:
    """Relative paths inside the run folder (outputs are fetched from there)."""
    items = _str_list(value, field=field, file=file)
    for i, item in enumerate(items):
        if not _REFERENCE.fullmatch(item):
            relative_path(item, field=f"{field}[{i}]", file=file)
    return items


# -- reference and variable checks (flowServ dialect) ------------------------------------


def _rewrite_legacy(value: Any) -> Any:
    if isinstance(value, str):
        return _LEGACY_REFERENCE.sub(r"$[[\1]]", value)
    if isinstance(value, dict):
        return {k: _rewrite_legacy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite_legacy(v) for v in value]
    return value


def _strings(value: Any, path: str, *, file: str) -> Iterator[tuple[str, str]]:
    """Every string in a spec with its path; nested lists are refused (flowServ rule)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}", file=file)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, list):
                raise TemplateError("nested lists are not allowed", file=file, field=f"{path}[{i}]")
            yield from _strings(item, f"{path}[{i}]", file=file)


def _check_references(doc: Any, *, field: str, rules: _Rules, legacy: bool) -> None:
    """Every ``$[[name]]`` / ``$[[name ? a : b]]`` must name an allowed parameter."""
    allowed = sorted(rules.references)
    for path, text in _strings(doc, field, file=rules.file):
        if not legacy and _LEGACY_REFERENCE.search(text):
            raise TemplateError(
                "the ${[[name]]} spelling belongs to the legacy REANA-style layout",
                file=rules.file,
                field=path,
                hint="write $[[name]]",
            )
        for m in _REFERENCE.finditer(text):
            name = m.group(1).split("?", 1)[0].strip()
            if name not in rules.references:
                raise TemplateError(
                    f"unknown parameter reference $[[{name}]]",
                    file=rules.file,
                    field=path,
                    expected=f"a {rules.what}: {', '.join(allowed)}"
                    if allowed
                    else "no reference (no parameters are declared)",
                )
        if "$[[" in _REFERENCE.sub("", text):
            raise TemplateError(
                "unterminated parameter reference '$[['",
                file=rules.file,
                field=path,
                expected="$[[name]] or $[[name ? a : b]], on one line",
            )


def _check_variables(command: str, known: Iterable[str], *, field: str, file: str) -> None:
    """Every ``${x}``/``$x`` placeholder must be known: flowServ turned unknown ones into
    the bare name. The shell's own variables are written ``$${x}`` (``$$`` is ``$``)."""
    known = set(known)
    # $[[...]] is replaced before ${...} expansion, and $[ is not a placeholder anyway
    for ph in placeholders(command):
        if ph.name not in known:
            shown = f"${{{ph.name}}}" if ph.braced else f"${ph.name}"
            raise TemplateError(
                f"unknown variable {shown}",
                file=file,
                field=field,
                expected=f"one of: {', '.join(sorted(known))}",
                hint=f"write ${shown} if you meant the shell's own variable",
            )


# -- outputs, results, post-processing ---------------------------------------------------


def _parse_outputs(doc: Any, *, field: str, file: str) -> list[OutputFile] | None:
    if doc is None:
        return None
    items = _list(doc, field=field, file=file)
    outputs: list[OutputFile] = []
    for i, item in enumerate(items):
        path = f"{field}[{i}]"
        check_keys(
            item,
            field=path,
            file=file,
            required=("source",),
            allowed=("source", "key", "title", "caption", "format", "widget"),
        )
        source = relative_path(item["source"], field=f"{path}.source", file=file)
        key = item.get("key", item["source"])
        for name in ("key", "title", "caption"):
            if name in item and not isinstance(item[name], str):
                raise TemplateError("must be a string", file=file, field=f"{path}.{name}")
        for name in ("format", "widget"):
            if name in item and not isinstance(item[name], dict):
                raise TemplateError("must be a mapping", file=file, field=f"{path}.{name}")
        if any(o.key == key for o in outputs):
            raise TemplateError(f"duplicate output key {key!r}", file=file, field=path)
        outputs.append(
            OutputFile(
                source=source,
                key=key,
                title=item.get("title"),
                caption=item.get("caption"),
                format=item.get("format"),
                widget=item.get("widget"),
            )
        )
    return outputs


# flowServ's code says dtype: float|int|string; its docs say type: decimal|int|string.
_RESULT_DTYPES: dict[str, ResultDType] = {
    "float": "float",
    "decimal": "float",
    "int": "int",
    "string": "string",
}


def _parse_results(doc: Any, *, file: str) -> ResultSchema | None:
    if doc is None:
        return None
    check_keys(
        doc,
        field="results",
        file=file,
        allowed=("file", "schema", "orderBy"),
        required=("file", "schema"),
    )
    result_file = relative_path(doc["file"], field="results.file", file=file)
    items = _list(doc["schema"], field="results.schema", file=file)
    if not items:
        raise TemplateError(
            "the schema needs at least one column", file=file, field="results.schema"
        )
    columns: list[ResultColumn] = []
    for i, item in enumerate(items):
        column = _parse_column(item, field=f"results.schema[{i}]", file=file)
        for other in columns:
            for attr in ("name", "label"):
                if getattr(other, attr) == getattr(column, attr):
                    raise TemplateError(
                        f"duplicate column {attr} {getattr(column, attr)!r}",
                        file=file,
                        field=f"results.schema[{i}].{attr}",
                    )
        columns.append(column)
    order_by = _parse_order_by(doc.get("orderBy"), columns, file=file)
    return ResultSchema(file=result_file, columns=columns, order_by=order_by)


def _parse_column(item: Any, *, field: str, file: str) -> ResultColumn:
    check_keys(
        item,
        field=field,
        file=file,
        required=("name", "label"),
        allowed=("name", "label", "dtype", "type", "required", "path"),
    )
    if ("dtype" in item) == ("type" in item):
        raise TemplateError(
            "give the column's data type once, as 'dtype' (or the docs' 'type')",
            file=file,
            field=field,
            expected="dtype: float, int or string",
        )
    key = "dtype" if "dtype" in item else "type"
    dtype = item[key]
    if dtype not in _RESULT_DTYPES:
        raise TemplateError(
            f"unknown column type {dtype!r}",
            file=file,
            field=f"{field}.{key}",
            expected="one of: float, int, string ('decimal' is read as float)",
        )
    for name in ("name", "label"):
        if not isinstance(item[name], str) or not item[name]:
            raise TemplateError("must be a non-empty string", file=file, field=f"{field}.{name}")
    required = item.get("required", True)
    if not isinstance(required, bool):
        raise TemplateError("must be true or false", file=file, field=f"{field}.required")
    path = item.get("path")
    if path is not None and (not isinstance(path, str) or "" in path.strip("/").split("/")):
        raise TemplateError(
            f"invalid path {path!r}",
            file=file,
            field=f"{field}.path",
            expected="keys separated by '/', e.g. 'metrics/f1'",
        )
    return ResultColumn(
        name=item["name"],
        label=item["label"],
        dtype=_RESULT_DTYPES[dtype],
        required=required,
        path=path.strip("/") if path is not None else None,
    )


def _parse_order_by(doc: Any, columns: list[ResultColumn], *, file: str) -> list[SortKey]:
    """``orderBy``; when absent (or empty): the first column, descending (flowServ)."""
    items = _list(doc, field="results.orderBy", file=file)
    names = [c.name for c in columns]
    keys: list[SortKey] = []
    for i, item in enumerate(items):
        path = f"results.orderBy[{i}]"
        check_keys(item, field=path, file=file, allowed=("name", "sortDesc"), required=("name",))
        name, desc = item["name"], item.get("sortDesc", True)
        if name not in names:
            raise TemplateError(
                f"unknown column {name!r}",
                file=file,
                field=f"{path}.name",
                expected=f"one of: {', '.join(names)}",
            )
        if any(k.name == name for k in keys):
            raise TemplateError(f"column {name!r} is sorted twice", file=file, field=f"{path}.name")
        if not isinstance(desc, bool):
            raise TemplateError("must be true or false", file=file, field=f"{path}.sortDesc")
        keys.append(SortKey(name=name, sort_desc=desc))
    return keys or [SortKey(name=columns[0].name, sort_desc=True)]


def _parse_postproc(doc: Any, *, rules: _Rules) -> PostProc | None:
    """``postproc: {workflow, inputs: {files, runs}, outputs}``; only ``$[[runs]]``."""
    if doc is None:
        return None
    file = rules.file
    check_keys(
        doc,
        field="postproc",
        file=file,
        allowed=("workflow", "inputs", "outputs"),
        required=("workflow",),
    )
    workflow = _parse_workflow(doc["workflow"], field="postproc.workflow", rules=rules)
    input_files: list[str] = []
    runs = POSTPROC_RUNS
    if "inputs" in doc:
        inputs = check_keys(
            doc["inputs"],
            field="postproc.inputs",
            file=file,
            allowed=("files", "runs"),
            required=("files",),
        )
        input_files = _path_list(inputs["files"], field="postproc.inputs.files", file=file)
        if "runs" in inputs:
            runs = relative_path(inputs["runs"], field="postproc.inputs.runs", file=file)
    outputs = _parse_outputs(doc.get("outputs"), field="postproc.outputs", file=file)
    return PostProc(workflow=workflow, input_files=input_files, runs_target=runs, outputs=outputs)
