"""Expansion of flowServ-dialect commands (seed-inventory §1.2), with its GAPs fixed.

Layer 1, the context (``workflow.parameters``): a string value may hold ``$[[p]]`` and
``$[[p ? a : b]]`` anywhere in it (flowServ only replaced whole values). Layer 2, the
commands: ``$[[...]]`` likewise, ``${name}``/``$name`` for site variables, context
variables and parameters (in that order of precedence: flowServ let variables win over
the context), and ``$$`` for a literal ``$``. Any other ``$`` is shell text. A name that
is nothing is an error (flowServ pasted the bare name).

Values derived from users never become shell text: they are exported as ``FB_`` variables
and referenced (see :mod:`flowbatch.render.values`). Text the template author wrote
(context values without user parts, the branches of a conditional) and site variables
are pasted as they are, which keeps flowServ's meaning for them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flowbatch.errors import (
    MISSING_ARGUMENT,
    FlowbatchError,
    MissingArgument,
    RenderError,
    TemplateError,
)
from flowbatch.render.shellctx import Ctx, scan
from flowbatch.render.values import (
    Exports,
    Ref,
    RenderedStep,
    RenderedWorkflow,
    TemplateRenderError,
    check_no_nul,
    check_placement,
    command_field,
    context_field,
    flowserv_pasteable,
    format_value,
    place,
    reserve_parameters,
    sentinel,
    sentinel_contexts,
)
from flowbatch.spec.model import TOKEN_DTYPES, Parameter, Template, Workflow

_ID = r"[_A-Za-z][_A-Za-z0-9]*"
#: one pass, left to right, as string.Template scans: '$$' first, so '$$[[p]]' is literal
_TOKEN = re.compile(rf"\$\$|\$\[\[(?P<expr>.*?)\]\]|\$\{{(?P<braced>{_ID})\}}|\$(?P<named>{_ID})")
_PARAM = re.compile(r"\$\[\[(?P<expr>.*?)\]\]")


@dataclass(frozen=True)
class _Expr:
    """The inside of ``$[[...]]``: a name, or a conditional ``name ? a : b``."""

    name: str
    conditional: bool = False
    if_true: str = ""
    if_false: str = ""


def _parse_expr(expr: str) -> _Expr:
    name, question, branches = expr.partition("?")
    if not question:
        return _Expr(name.strip())
    if_true, _, if_false = branches.partition(":")
    return _Expr(name.strip(), True, if_true.strip(), if_false.strip())


@dataclass(frozen=True)
class _Item:
    """What a placeholder stands for: author/site text pasted as is, or a user value."""

    text: str = ""
    ref: Ref | None = None


class _Resolver:
    """Looks up the names of one workflow.

    With ``arguments`` it renders (errors are :class:`RenderError`); without, it serves
    the install-time checks: user values are unknown, conditionals take ``branch``, and
    errors are :class:`TemplateError`.
    """

    def __init__(
        self,
        template: Template,
        workflow: Workflow,
        variables: Mapping[str, str],
        arguments: Mapping[str, Any] | None,
        branch: bool = True,
    ) -> None:
        self.template = template
        self.workflow = workflow
        self.variables = variables
        self.arguments = arguments
        self.branch = branch
        self.error: type[FlowbatchError] = (
            TemplateRenderError if arguments is not None else TemplateError
        )
        self.is_postproc = template.postproc is not None and workflow is template.postproc.workflow
        self.exports = Exports()
        self.param_vars = reserve_parameters(self.exports, template.parameters)
        self.values: dict[str, Any] = {}
        for param in template.parameters:
            value = self._value_of(param)
            if value is not None:
                self.values[param.name] = value
                self.exports.put(self.param_vars[param.name], format_value(value))
        self._context: dict[str, _Item] = {}

    def _value_of(self, param: Parameter) -> Any:
        if self.arguments is None:
            return f"<{param.name}>"  # a stand-in; equal stand-ins mean equal values
        value = self.arguments.get(param.name)
        if value is None and param.has_default:
            value = param.default
        return value

    # -- lookups ---------------------------------------------------------------------
    def parameter(self, name: str, where: str) -> _Item:
        param = self.template.parameter(name)
        if param is None:
            if self.is_postproc and name == "runs":
                # flowServ's $[[runs]] in post-processing: the folder of run results
                return _Item(text=self.template.postproc.runs_target)  # type: ignore[union-attr]
            raise self.error(f"$[[{name}]] names no parameter", field=where)
        if name not in self.values:
            if self.arguments is not None:
                raise MissingArgument(name)
            raise self.error(
                f"{MISSING_ARGUMENT} '{name}' (no value and no default)",
                field=where,
            )
        text = format_value(self.values[name])
        pasteable = (
            param.dtype in TOKEN_DTYPES
            if self.arguments is None
            else flowserv_pasteable(param.dtype, text)
        )
        # a token is safe in arithmetic too: its text is an int, a float, True/False or
        # the organiser's select option, never a user's choice of variable name
        # the parameter's default is the organiser's text: it may begin with '-'
        organisers = pasteable or (param.has_default and text == format_value(param.default))
        label = f"parameter '{name}'"
        ref = Ref(self.param_vars[name], text, pasteable, label, pasteable, organisers, name)
        return _Item(ref=ref)

    def condition(self, expr: _Expr, where: str) -> str:
        if self.template.parameter(expr.name) is None:
            raise self.error(f"$[[{expr.name} ? ...]] names no parameter", field=where)
        if self.arguments is None:
            return expr.if_true if self.branch else expr.if_false
        if expr.name not in self.values:
            if self.arguments is not None:
                raise MissingArgument(expr.name)
            raise self.error(f"{MISSING_ARGUMENT} '{expr.name}'", field=where)
        chosen = str(self.values[expr.name]).lower() == "true"
        return expr.if_true if chosen else expr.if_false

    def named(self, name: str, where: str) -> _Item:
        if name in self.variables:
            return _Item(text=self.variables[name])
        if name in self.workflow.context:
            return self.context(name)
        if self.template.parameter(name) is not None:
            return self.parameter(name, where)
        exc = self.error(
            f"${{{name}}} names no variable, context value or parameter",
            field=where,
            hint=f"write $${{{name}}} if the shell's own variable was meant",
        )
        exc.unknown_variable = name
        raise exc

    def context(self, name: str) -> _Item:
        """Layer 1: a context value, resolved once; user-derived ones become a Ref."""
        if name not in self._context:
            self._context[name] = self._resolve_context(name)
        return self._context[name]

    def _resolve_context(self, name: str) -> _Item:
        value = self.workflow.context[name]
        if not isinstance(value, str):
            return _Item(text=format_value(value))
        where = context_field(_prefix(self.template, self.workflow), self.workflow, name)
        parts: list[str] = []
        user_refs: list[Ref] = []
        lead: Ref | None = None  # the value that begins the text, if one does
        pos = 0
        for match in _PARAM.finditer(value):
            parts.append(self._site_variables(value[pos : match.start()]))
            pos = match.end()
            expr = _parse_expr(match.group("expr"))
            if expr.conditional:
                parts.append(self.condition(expr, where))
                continue
            item = self.parameter(expr.name, where)
            if item.ref is not None:
                begins = not any(parts)
                user_refs.append(item.ref)
                parts.append(item.ref.value)
                if begins and item.ref.value:
                    lead = item.ref
            else:
                parts.append(item.text)
        parts.append(self._site_variables(value[pos:]))
        text = "".join(parts)
        if not user_refs:
            return _Item(text=text)  # pure author text: pasted like flowServ did
        pasteable = all(ref.pasteable for ref in user_refs)
        arith_safe = all(ref.arith_safe for ref in user_refs)
        # begun by the organiser's text (--input=$[[x]]) or by a value that may begin
        # with '-' (or does not)
        organisers = lead is None or lead.option_safe or not lead.value.startswith("-")
        var = self.exports.share(name, text)
        label = f"context variable '{name}'"
        return _Item(ref=Ref(var, text, pasteable, label, arith_safe, organisers))

    def _site_variables(self, text: str) -> str:
        """The author's text of a context value with its ``${name}``/``$name`` of site
        variables expanded, as in a command (``run: ${python} -c ...`` reached bash as an
        unset variable: found by review); ``$$`` and other names are left as written."""

        def one(match: re.Match[str]) -> str:
            name = match.group("braced") or match.group("named")
            if name is None or name not in self.variables:
                return match.group(0)
            return self.variables[name]

        return _SITE_VARIABLE.sub(one, text)


#: what may be a site variable in a context value's author text (``$$`` skipped whole)
_SITE_VARIABLE = re.compile(rf"\$\$|\$\{{(?P<braced>{_ID})\}}|\$(?P<named>{_ID})")


def _prefix(template: Template, workflow: Workflow) -> str:
    if template.postproc is not None and workflow is template.postproc.workflow:
        return "postproc.workflow"
    return "workflow"


def _expand(text: str, resolver: _Resolver, where: str) -> tuple[str, list[Ref]]:
    """Layer 2 on one command: author text, with a sentinel for each user value."""
    out: list[str] = []
    refs: list[Ref] = []
    pos = 0
    for match in _TOKEN.finditer(text):
        out.append(text[pos : match.start()])
        pos = match.end()
        if match.group(0) == "$$":
            out.append("$")
            continue
        if match.group("expr") is not None:
            expr = _parse_expr(match.group("expr"))
            if expr.conditional:
                out.append(resolver.condition(expr, where))
                continue
            item = resolver.parameter(expr.name, where)
        else:
            item = resolver.named(match.group("braced") or match.group("named"), where)
        if item.ref is None:
            out.append(item.text)
        else:
            out.append(sentinel(len(refs)))
            refs.append(item.ref)
    out.append(text[pos:])
    return "".join(out), refs


def _commands(template: Template, workflow: Workflow) -> list[tuple[int, str, str]]:
    """(step index, field path, text) of every command of ``workflow``."""
    prefix = _prefix(template, workflow)
    return [
        (i, command_field(prefix, i, step, j), command)
        for i, step in enumerate(workflow.steps)
        for j, command in enumerate(step.commands)
    ]


def render_flowserv(
    template: Template,
    workflow: Workflow,
    arguments: Mapping[str, Any],
    variables: Mapping[str, str],
) -> RenderedWorkflow:
    """Expand a flowServ-dialect workflow for one run's arguments."""
    check_no_nul(arguments)
    resolver = _Resolver(template, workflow, variables, arguments)
    steps = [RenderedStep(step.name, []) for step in workflow.steps]
    for index, where, command in _commands(template, workflow):
        if "\x00" in command:
            raise RenderError("the command contains a NUL character", field=where)
        text, refs = _expand(command, resolver, where)
        steps[index].commands.append(place(text, refs, where))
    return RenderedWorkflow(steps, dict(resolver.exports.env))


def check_flowserv(template: Template, variables: Mapping[str, str]) -> None:
    """Install-time checks of a flowServ-dialect template (main and post-processing
    workflows): names resolve, commands are complete shell text, no user value of a
    non-token type stands inside single quotes or in an arithmetic context, and none
    after a backslash. Each command is checked with every conditional taking its true
    branch, then its false branch."""
    workflows = [template.workflow]
    if template.postproc is not None:
        workflows.append(template.postproc.workflow)
    for workflow in workflows:
        for branch in (True, False):
            resolver = _Resolver(template, workflow, variables, None, branch)
            for name in workflow.context:
                resolver.context(name)
            for _, where, command in _commands(template, workflow):
                _check_command(command, resolver, where)


def _check_command(command: str, resolver: _Resolver, where: str) -> None:
    text, refs = _expand(command, resolver, where)
    problem = scan(text).problem
    if problem:
        raise TemplateError(f"the command is not complete shell text: {problem}", field=where)
    for index, ctx, reader in sentinel_contexts(text):
        ref = refs[index]
        token = ref.arith_safe if ctx is Ctx.ARITH else ref.pasteable
        check_placement(ref.label, ref.var, ctx, token=token, where=where, command=reader)
