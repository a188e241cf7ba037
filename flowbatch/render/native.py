"""The native dialect: commands are sandboxed Jinja2 (StrictUndefined).

Names in a command: each parameter (its cast value; a file gives its target path), each
context variable, each site variable (unless a parameter or context variable has its
name), and ``variables`` (the site variables as a mapping). Control flow
(``{% if %}``, ``{% for %}``) produces author text, which is code. Values are data: the
environment's ``finalize`` hook replaces every ``{{ expr }}`` output by a sentinel and
records the value; after rendering, each sentinel becomes a reference to an exported
``FB_`` variable chosen by its quoting context (:mod:`flowbatch.render.values`). Only
:class:`Trusted` text (site variables, context values the author wrote without user
values) is output verbatim. A user's value is never template source, so ``{{ }}`` inside
it is just text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import StrictUndefined
from jinja2 import TemplateError as JinjaTemplateError
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from flowbatch.errors import RenderError, TemplateError
from flowbatch.render.values import (
    Exports,
    Ref,
    RenderedStep,
    RenderedWorkflow,
    Trusted,
    check_no_nul,
    format_value,
    place,
    reserve_parameters,
    resolve_sentinels,
    sentinel,
)
from flowbatch.spec.model import FileArg, Template, Workflow

#: strings of these characters only may be pasted inside single quotes
_TOKEN_TEXT = re.compile(r"[A-Za-z0-9_.+-]*")


def make_environment(finalize: Callable[[Any], Any] | None = None) -> SandboxedEnvironment:
    """The sandboxed environment native templates are compiled in."""
    return SandboxedEnvironment(
        undefined=StrictUndefined,
        finalize=finalize,
        autoescape=False,
        keep_trailing_newline=True,
    )


def _pasteable(value: Any, text: str) -> bool:
    if isinstance(value, int | float):  # includes bool
        return True
    return isinstance(value, str) and _TOKEN_TEXT.fullmatch(text) is not None


class _Outputs:
    """The ``finalize`` hook: each output value becomes a sentinel and a :class:`Ref`.

    One table serves a whole workflow, so a sentinel Jinja folded into a compiled
    constant stays valid."""

    def __init__(self, exports: Exports) -> None:
        self.exports = exports
        self.refs: list[Ref] = []

    def finalize(self, value: Any) -> Any:
        if isinstance(value, Trusted):
            return value
        # str() of an Undefined raises here: StrictUndefined and the sandbox's
        # SecurityError both surface through it
        text = resolve_sentinels(format_value(value), self.refs)
        ref = Ref(self.exports.anonymous(text), text, _pasteable(value, text), "a '{{ }}' value")
        self.refs.append(ref)
        return sentinel(len(self.refs) - 1)


def _render_source(
    env: SandboxedEnvironment, source: str, names: dict[str, Any], where: str
) -> str:
    """Render one Jinja2 source text, turning every failure into a RenderError."""
    if "\x00" in source:
        raise RenderError("the template text contains a NUL character", field=where)
    try:
        return env.from_string(source).render(names)
    except SecurityError as exc:
        raise RenderError(
            f"the template tried to reach outside the sandbox: {exc}", field=where
        ) from None
    except TemplateSyntaxError as exc:
        raise RenderError(f"Jinja2 syntax error on line {exc.lineno}: {exc.message}", field=where)
    except UndefinedError as exc:
        raise RenderError(f"undefined name: {exc.message}", field=where) from None
    except JinjaTemplateError as exc:
        raise RenderError(f"cannot render: {exc}", field=where) from None
    except (ArithmeticError, LookupError, TypeError, ValueError) as exc:
        raise RenderError(f"cannot render: {type(exc).__name__}: {exc}", field=where) from None


def _names(
    template: Template, arguments: Mapping[str, Any], variables: Mapping[str, str], exports: Exports
) -> dict[str, Any]:
    """Site variables, then parameters (shadowing them); every valued parameter is
    exported as ``FB_<name>`` so programs can read it from the environment."""
    names: dict[str, Any] = {name: Trusted(text) for name, text in variables.items()}
    names["variables"] = {name: Trusted(text) for name, text in variables.items()}
    param_vars = reserve_parameters(exports, template.parameters)
    for param in template.parameters:
        value = arguments.get(param.name)
        if value is None and param.has_default:
            value = param.default
        if value is None:
            names[param.name] = StrictUndefined(
                hint=f"missing argument for parameter '{param.name}' (no value and no default)"
            )
            continue
        exports.put(param_vars[param.name], format_value(value))
        names[param.name] = value.target if isinstance(value, FileArg) else value
    return names


def _add_context(
    workflow: Workflow,
    names: dict[str, Any],
    env: SandboxedEnvironment,
    outputs: _Outputs,
    prefix: str,
) -> None:
    """Context values: strings are rendered; a result holding user values is data
    (exported as ``FB_<ctx>``), one without is author text."""
    for name, value in workflow.context.items():
        if not isinstance(value, str):
            names[name] = value
            continue
        first = len(outputs.refs)
        text = _render_source(env, value, names, f"{prefix}.context.{name}")
        if len(outputs.refs) == first:
            names[name] = Trusted(text)
        else:
            resolved = resolve_sentinels(text, outputs.refs)
            outputs.exports.share(name, resolved)
            names[name] = resolved


def _prefix(template: Template, workflow: Workflow) -> str:
    if template.postproc is not None and workflow is template.postproc.workflow:
        return "postproc.workflow"
    return "workflow"


def render_native(
    template: Template,
    workflow: Workflow,
    arguments: Mapping[str, Any],
    variables: Mapping[str, str],
) -> RenderedWorkflow:
    """Render a native workflow for one run's arguments."""
    check_no_nul(arguments)
    exports = Exports()
    outputs = _Outputs(exports)
    env = make_environment(outputs.finalize)
    prefix = _prefix(template, workflow)
    names = _names(template, arguments, variables, exports)
    postproc = template.postproc
    if postproc is not None and workflow is postproc.workflow and "runs" not in names:
        # flowServ's $[[runs]] of post-processing: the folder of the ranked runs' files
        names["runs"] = Trusted(postproc.runs_target)
    _add_context(workflow, names, env, outputs, prefix)
    steps = []
    for i, step in enumerate(workflow.steps):
        commands = []
        for j, source in enumerate(step.commands):
            where = f"{prefix}.steps[{i}].commands[{j}]"
            text = _render_source(env, source, names, where)
            commands.append(place(text, outputs.refs, where))
        steps.append(RenderedStep(step.name, commands))
    return RenderedWorkflow(steps, dict(exports.env))


def check_native(template: Template) -> None:
    """Install-time check: every command and string context value compiles."""
    env = make_environment()
    workflows = [template.workflow]
    if template.postproc is not None:
        workflows.append(template.postproc.workflow)
    for workflow in workflows:
        prefix = _prefix(template, workflow)
        sources = [(f"{prefix}.context.{k}", v) for k, v in workflow.context.items()]
        sources += [
            (f"{prefix}.steps[{i}].commands[{j}]", command)
            for i, step in enumerate(workflow.steps)
            for j, command in enumerate(step.commands)
        ]
        for where, source in sources:
            if isinstance(source, str):
                _compile(env, source, where)


def _compile(env: SandboxedEnvironment, source: str, where: str) -> None:
    try:
        env.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(
            f"Jinja2 syntax error on line {exc.lineno}: {exc.message}",
            field=where,
            expected="a valid Jinja2 template",
        ) from None
