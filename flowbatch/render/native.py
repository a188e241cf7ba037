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
it is just text. Inside single quotes only token values may stand (numbers, booleans,
strings of ``[A-Za-z0-9_.+-]``), in an arithmetic context only numbers and booleans (a
token string could name another ``FB_`` variable, whose text bash would evaluate).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Environment, StrictUndefined, nodes
from jinja2 import TemplateError as JinjaTemplateError
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from flowbatch.errors import MISSING_ARGUMENT, MissingArgument, RenderError, TemplateError
from flowbatch.render.shellctx import Ctx, scan
from flowbatch.render.values import (
    Exports,
    Ref,
    RenderedStep,
    RenderedWorkflow,
    TemplateRenderError,
    Trusted,
    check_no_nul,
    check_placement,
    command_field,
    context_field,
    format_value,
    place,
    reserve_parameters,
    resolve_sentinels,
    sentinel,
    sentinel_contexts,
)
from flowbatch.spec.model import TOKEN_DTYPES, FileArg, Parameter, Template, Workflow
from flowbatch.spec.params import MAX_VALUE_BYTES

#: one sentinel (see :func:`~flowbatch.render.values.sentinel`)
_SENTINEL = re.compile("\x00([0-9]+)\x01")
#: strings of these characters only may be pasted inside single quotes
_TOKEN_TEXT = re.compile(r"[A-Za-z0-9_.+-]*")
#: parses sources for their string constants (only parses: the same syntax as the sandbox)
_PARSER = Environment()
#: strings that may stand in an arithmetic context: decimal numbers (never a name)
_NUMBER_TEXT = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")


#: the most characters (or items) a value built while rendering may have, and the most
#: a command may render to: a 40-byte request with `width: 300000000` made the daemon
#: build a 300 MB string for `{{ "=" * width }}` (found by review)
MAX_BUILT = 1 << 20


class TooLarge(Exception):
    """Rendering would build a value or a command over :data:`MAX_BUILT`."""

    def __init__(self, what: str, size: int) -> None:
        super().__init__(f"{what} would have about {size} characters")
        self.what = what
        self.size = size


def _size_of(value: Any) -> int | None:
    return len(value) if isinstance(value, str | list | tuple) else None


def _check_ints(what: str, values: Any) -> None:
    """An int argument sizing a result (a width, a count) over the bound."""
    for value in values:
        if isinstance(value, int) and abs(value) > MAX_BUILT:
            raise TooLarge(what, abs(value))


def _check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            size = _size_of(seq)
            if size is not None and isinstance(n, int) and size * n > MAX_BUILT:
                raise TooLarge(f"{type(seq).__name__} * {n}", size * n)
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
            bits = right * abs(left).bit_length()
            if bits > MAX_BUILT * 8:
                raise TooLarge("a power", bits // 3)  # ~ its decimal digits
    elif operator == "%" and isinstance(left, str) and "*" in left:  # '%*s': a width
        args = right.values() if isinstance(right, dict) else right
        _check_ints("'...' % (...)", args if isinstance(args, tuple | list) else (args,))


#: str methods whose first argument is the width of their result
_PADDING = frozenset({"center", "ljust", "rjust", "zfill"})
#: a replacement field with a nested one: ``{:>{width}}`` takes a width from an argument
_NESTED_FIELD = re.compile(r"\{[^{}]*\{")


class _BoundedEnvironment(SandboxedEnvironment):
    """The sandbox, with a bound on what a template can build from a value: ``*``,
    ``**`` and ``%`` (``str * n``, ``2 ** n``, ``'%*s' % (n, '')``), the padding
    methods of ``str`` and ``replace``, the ``center``, ``indent`` and ``format``
    filters (Jinja2 bounds ``range`` alone)."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return _bounded(super().call_binop(context, operator, left, right), operator)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        method = getattr(__obj, "__wrapped__", __obj)
        owner = getattr(method, "__self__", None)
        name = getattr(method, "__name__", "")
        if isinstance(owner, str):
            if name in _PADDING:
                _check_ints(f"str.{name}", (*args[:1], *kwargs.values()))
            elif name == "expandtabs":
                _check_ints(f"str.{name}", [n * owner.count("\t") for n in (*args, 8)[:1]])
            elif name in ("format", "format_map") and _NESTED_FIELD.search(owner):
                _check_ints(f"str.{name}", (*args, *kwargs.values()))
            elif name == "replace" and len(args) >= 2:
                _check_replace(owner, args[0], args[1])
        return _bounded(super().call(__context, __obj, *args, **kwargs), name or "a call")


def _bounded(result: Any, what: str) -> Any:
    size = _size_of(result)
    if size is not None and size > MAX_BUILT:
        raise TooLarge(what, size)
    return result


def _check_replace(text: Any, old: Any, new: Any) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        count = len(text) + 1 if not old else text.count(old)
        size = len(text) + count * (len(new) - len(old))
        if size > MAX_BUILT:
            raise TooLarge("replace", size)


def _bounded_filters(env: SandboxedEnvironment) -> None:
    """Filters whose arguments size their result, checked first."""
    filters = env.filters
    center, indent, fmt, replace = (
        filters["center"],
        filters["indent"],
        filters["format"],
        filters["replace"],
    )

    def center_(value: Any, width: Any = 80) -> Any:
        _check_ints("center", (width,))
        return center(value, width)

    def indent_(value: Any, width: Any = 4, *args: Any, **kwargs: Any) -> Any:
        lines = str(value).count("\n") + 1
        size = (width if isinstance(width, int) else len(str(width))) * lines
        if size > MAX_BUILT:
            raise TooLarge("indent", size)
        return indent(value, width, *args, **kwargs)

    def format_(value: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(value, str) and "*" in value:  # '%*s': a width from an argument
            _check_ints("format", (*args, *kwargs.values()))
        return _bounded(fmt(value, *args, **kwargs), "format")

    def replace_(context: Any, value: Any, old: Any, new: Any, count: Any = None) -> Any:
        _check_replace(value, old, new)
        return replace(context, value, old, new, count)

    replace_.jinja_pass_arg = replace.jinja_pass_arg  # type: ignore[attr-defined]
    filters.update(center=center_, indent=indent_, format=format_, replace=replace_)


def make_environment(finalize: Callable[[Any], Any] | None = None) -> SandboxedEnvironment:
    """The sandboxed environment native templates are compiled in (with the bounds of
    :class:`_BoundedEnvironment`)."""
    env = _BoundedEnvironment(
        undefined=StrictUndefined,
        finalize=finalize,
        autoescape=False,
        keep_trailing_newline=True,
    )
    _bounded_filters(env)
    return env


def _pasteable(value: Any, text: str) -> bool:
    if isinstance(value, int | float):  # includes bool
        return True
    return isinstance(value, str) and _TOKEN_TEXT.fullmatch(text) is not None


def _arith_safe(value: Any, text: str) -> bool:
    """Numbers and booleans; a string only when it is a decimal number. A token string
    such as ``FB_s`` would be safe in single quotes but not here: bash would evaluate
    the text of the variable it names."""
    if isinstance(value, int | float):  # includes bool
        return True
    return isinstance(value, str) and _NUMBER_TEXT.fullmatch(text) is not None


class _Outputs:
    """The ``finalize`` hook: each output value becomes a sentinel and a :class:`Ref`.

    One table serves a whole workflow, so a sentinel Jinja folded into a compiled
    constant stays valid."""

    def __init__(self, exports: Exports, origins: _Origins | None = None) -> None:
        self.exports = exports
        self.refs: list[Ref] = []
        #: whose texts the values may be (see :class:`_Origins`)
        self.origins = origins if origins is not None else _Origins()

    def finalize(self, value: Any) -> Any:
        if isinstance(value, Trusted):
            return value
        # str() of an Undefined raises here: StrictUndefined and the sandbox's
        # SecurityError both surface through it
        text = resolve_sentinels(format_value(value), self.refs)
        if len(text) > MAX_VALUE_BYTES:  # no environment variable could carry it
            raise TooLarge("a '{{ }}' value", len(text))
        argument = self.origins.users.get(text, "")
        ref = Ref(
            self.exports.anonymous(text),
            text,
            _pasteable(value, text),
            f"argument '{argument}'" if argument else "a '{{ }}' value",
            _arith_safe(value, text),
            isinstance(value, int | float) or (not argument and self.origins.organisers(text)),
            argument,
        )
        self.refs.append(ref)
        return sentinel(len(self.refs) - 1)


def _render_source(
    env: SandboxedEnvironment, source: str, names: dict[str, Any], where: str
) -> str:
    """Render one Jinja2 source text, turning every failure into a RenderError."""
    if "\x00" in source:
        raise RenderError("the template text contains a NUL character", field=where)
    try:
        ast = env.parse(source)
        _refuse_raw_blocks(ast, where, RenderError)
        out: list[str] = []
        size = 0
        for chunk in env.from_string(ast).generate(names):
            size += len(chunk)
            if size > MAX_BUILT:
                raise TooLarge("the rendered text", size)
            out.append(chunk)
        return "".join(out)
    except TooLarge as exc:
        raise RenderError(
            f"rendering would build too large a value: {exc}",
            field=where,
            expected=f"values of at most {MAX_VALUE_BYTES} characters, and at most "
            f"{MAX_BUILT} for anything built while rendering",
            hint="a smaller value for the parameter the template multiplies, pads or "
            "repeats by (e.g. a width or a count)",
        ) from None
    except MemoryError:
        raise RenderError(
            "rendering ran out of memory building a value",
            field=where,
            hint="a smaller value for the parameter the template multiplies, pads or "
            "repeats by; if that does not help, the template's (tell the organiser)",
        ) from None
    except SecurityError as exc:
        raise TemplateRenderError(
            f"the template tried to reach outside the sandbox: {exc}", field=where
        ) from None
    except TemplateSyntaxError as exc:
        raise TemplateRenderError(
            f"Jinja2 syntax error on line {exc.lineno}: {exc.message}", field=where
        ) from None
    except UndefinedError as exc:
        message = exc.message or ""
        if message.startswith(MISSING_ARGUMENT):  # our hint: a parameter with no value
            raise MissingArgument(message[len(MISSING_ARGUMENT) :].split("'")[1]) from None
        raise TemplateRenderError(f"undefined name: {message}", field=where) from None
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
                hint=f"{MISSING_ARGUMENT} '{param.name}' (no value and no default)"
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
        where = context_field(prefix, workflow, name)
        text = _render_source(env, value, names, where)
        if len(outputs.refs) == first:
            names[name] = Trusted(text)
        else:
            resolved = resolve_sentinels(text, outputs.refs)
            outputs.exports.share(name, resolved)
            names[name] = resolved


@dataclass
class _Origins:
    """Whose text a native template's output value is, for the options check (its
    source is not known: Jinja computes it). ``users``: each text of the request's
    own arguments (a string, a list's or a record's, a file's chosen target), with the
    argument it is in; not the organiser's select options or a parameter's default. A
    value equal to one is the participant's (found by review: a value equal to a
    constant of the template's passed as one), and so is one whose organiser's text a
    participant's text holds (a filter may have made it). ``texts``: the organiser's (select
    options, defaults, declared targets, the template's string constants);
    ``prefixes``: the option names the template's constants write (``'--lr=' ~ lr``
    gives ``--lr=``). A value that is no participant's text may begin with '-' when it
    is one of ``texts`` or begins with one of ``prefixes``."""

    users: dict[str, str] = field(default_factory=dict)
    texts: set[str] = field(default_factory=set)
    prefixes: tuple[str, ...] = ()
    #: ``users``, case-folded
    folded: tuple[str, ...] = ()

    def organisers(self, text: str) -> bool:
        """Whether ``text`` is the organiser's: one of its texts, or begun by one of its
        option names, which no text of the participant's holds (found by review: a
        filter made the participant's `` --x=...`` other than the request's text, and
        the organiser's ``--x=`` vouched for it)."""
        if text in self.texts:
            mine = text
        else:
            mine = next((p for p in self.prefixes if text.startswith(p)), "")
            if not mine:
                return False
        mine = mine.casefold()
        return not any(mine in user for user in self.folded)


def _leaves(value: Any) -> list[str]:
    """The texts in ``value``: its strings, a file's target, those of its items."""
    if isinstance(value, FileArg):
        return [value.target]
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [text for item in value.values() for text in _leaves(item)]
    if isinstance(value, list | tuple):
        return [text for item in value for text in _leaves(item)]
    return []


def _origins(template: Template, workflow: Workflow, arguments: Mapping[str, Any]) -> _Origins:
    """The :class:`_Origins` of a render of ``workflow`` for ``arguments``."""
    origins = _Origins()
    params = list(template.parameters)
    while params:
        param = params.pop()
        origins.texts.update(format_value(option.value) for option in param.values)
        if param.has_default:
            origins.texts.update(_leaves(param.default))
        if param.target:
            origins.texts.add(param.target)
        params.extend(param.fields)
        if param.para is not None:
            params.append(param.para)
    sources = [v for v in workflow.context.values() if isinstance(v, str)]
    sources += [command for step in workflow.steps for command in step.commands]
    for source in sources:
        origins.texts.update(_string_constants(source))
    origins.prefixes = tuple(
        sorted({text[: text.index("=") + 1] for text in origins.texts if _OPTION_NAME.match(text)})
    )
    for param in template.parameters:
        value = arguments.get(param.name)
        if value is None or (param.has_default and value == param.default):
            continue
        for text in _users_leaves(param, value):
            if text not in origins.users and text not in ("", "-"):
                origins.users[text] = param.name
    origins.folded = tuple(text.casefold() for text in origins.users)
    return origins


def _users_leaves(param: Parameter, value: Any) -> list[str]:
    """The texts of a request's ``value`` for ``param`` that are the participant's own:
    not a select's (validated: one of the organiser's options), in a list's elements and
    a record's fields too (found by review: a list of select options was refused)."""
    if param.dtype == "select":
        return []
    if param.dtype == "list" and param.para is not None and isinstance(value, list):
        return [text for item in value for text in _users_leaves(param.para, item)]
    if param.dtype == "record" and isinstance(value, Mapping):
        fields = {f.name: f for f in param.fields}
        return [
            text
            for name, item in value.items()
            for text in (_users_leaves(fields[name], item) if name in fields else _leaves(item))
        ]
    return _leaves(value)


#: an option with a value, as a template's constant writes it: ``--lr=``, ``-o=``
_OPTION_NAME = re.compile(r"--?[A-Za-z0-9][A-Za-z0-9_.-]*=")


@functools.lru_cache(maxsize=512)
def _string_constants(source: str) -> frozenset[str]:
    """The string constants of one Jinja2 source text (none when it does not parse:
    its render says why)."""
    try:
        ast = _PARSER.parse(source)
    except JinjaTemplateError:
        return frozenset()
    return frozenset(
        node.value for node in ast.find_all(nodes.Const) if isinstance(node.value, str)
    )


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
    outputs = _Outputs(exports, _origins(template, workflow, arguments))
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
            where = command_field(prefix, i, step, j)
            text = _render_source(env, source, names, where)
            commands.append(place(text, outputs.refs, where, native=True))
        steps.append(RenderedStep(step.name, commands))
    return RenderedWorkflow(steps, dict(exports.env))


def check_native(template: Template, variables: Mapping[str, str] | None = None) -> None:
    """Install-time checks: every command and string context value compiles and names
    only what a run gives it (:func:`_check_names`), and no ``{{ p }}`` of a string,
    file, list or record parameter ``p`` stands in an arithmetic context (where only
    numbers may stand, which such a parameter does not promise) or inside single quotes.
    Other expressions are checked by value at render."""
    env = make_environment()
    workflows = [template.workflow]
    if template.postproc is not None:
        workflows.append(template.postproc.workflow)
    for workflow in workflows:
        prefix = _prefix(template, workflow)
        sources = [(context_field(prefix, workflow, k), v) for k, v in workflow.context.items()]
        sources += [
            (command_field(prefix, i, step, j), command)
            for i, step in enumerate(workflow.steps)
            for j, command in enumerate(step.commands)
        ]
        known = _known_names(template, workflow, variables, env)
        for where, source in sources:
            if isinstance(source, str):
                _compile(env, source, where)
                if "\x00" not in source:
                    if variables is not None:
                        records = {
                            p.name: p
                            for p in template.parameters
                            if p.dtype == "record" and p.name not in workflow.context
                        }
                        _check_names(env, source, where, known, records)
                    # without the site's variables (`validate` with no site): `python`,
                    # which every site has
                    given = known | ({"python"} if variables is None else set())
                    _check_dialect(source, where, given - set(env.globals) - {"variables"})
        for i, step in enumerate(workflow.steps):
            for j, command in enumerate(step.commands):
                _check_placements(
                    env,
                    template,
                    workflow,
                    command,
                    command_field(prefix, i, step, j),
                    {"python": "python3"} if variables is None else variables,
                )


def _known_names(
    template: Template,
    workflow: Workflow,
    variables: Mapping[str, str] | None,
    env: SandboxedEnvironment,
) -> frozenset[str]:
    """Every name a run's render gives a text of ``workflow`` (see :func:`_names`)."""
    names = {p.name for p in template.parameters} | set(variables or {}) | {"variables"}
    names |= set(workflow.context) | set(env.globals)
    if template.postproc is not None and workflow is template.postproc.workflow:
        names.add("runs")
    return frozenset(names)


def _check_names(
    env: SandboxedEnvironment,
    source: str,
    where: str,
    known: frozenset[str],
    records: dict[str, Parameter] | None = None,
) -> None:
    """A name no run gives, or an attribute of the sandbox's refusing (``x.__class__``),
    is the template's error, said at install: else every request was rejected for it, as
    if the request were wrong (found by review)."""
    from jinja2 import meta

    ast = env.parse(source)
    # names the text sets itself ({% set %}, loops, macros): not the parameter
    shadowed = {n.name for n in ast.find_all(nodes.Name) if n.ctx != "load"}
    # a name only tested (`x is defined`) or given a default (`x | default(...)`) may be
    # missing on purpose: an optional site variable (found by review)
    optional = {
        node.node.name
        for node in ast.find_all((nodes.Test, nodes.Filter))
        if node.name in ("defined", "undefined", "default", "d")
        and isinstance(node.node, nodes.Name)
    }
    unknown = sorted(meta.find_undeclared_variables(ast) - known - optional)
    if unknown:
        raise TemplateError(
            f"{{{{ {unknown[0]} }}}} names nothing a run has",
            field=where,
            expected="a parameter, a context key or a site variable: "
            + ", ".join(sorted(n for n in known if n not in env.globals)),
            hint="declare it under parameters, or define the site variable in flowbatch.yaml",
        )
    for node in ast.find_all(nodes.Getattr):
        # `__class__` and the like (a dict's key `_a` is fine: `d._a` reads it)
        if node.attr.startswith("__"):
            raise TemplateError(
                f"the attribute {node.attr!r} is outside the sandbox templates render in",
                field=where,
                hint="use the values themselves, their items, or Jinja2's filters",
            )
    for flt in ast.find_all(nodes.Filter):
        # `x | attr('__class__')` is `x.__class__` (found by review)
        arg = flt.args[0] if flt.name == "attr" and flt.args else None
        if isinstance(arg, nodes.Const) and str(arg.value).startswith("__"):
            raise TemplateError(
                f"the attribute {arg.value!r} is outside the sandbox templates render in",
                field=where,
                hint="use the values themselves, their items, or Jinja2's filters",
            )
    if records:
        _check_record_fields(ast, where, records, shadowed)


#: what a record's value (a dict) has besides its fields: `opts.items()`, `opts.get(...)`
_DICT_ATTRS = frozenset(a for a in dir(dict) if not a.startswith("_"))


def _record_fields(param: Parameter) -> dict[str, Parameter]:
    return {f.name: f for f in param.fields}


def _check_record_fields(
    ast: nodes.Template, where: str, records: dict[str, Parameter], shadowed: set[str]
) -> None:
    """``{{ opts.learning_rate }}`` of a record parameter whose fields are ``lr``, ...:
    every request would be rejected for the template's typo (found by review)."""

    def declared(node: nodes.Node) -> Parameter | None:
        """The record declaration ``node`` reads (a parameter or one of its fields)."""
        if isinstance(node, nodes.Name):
            return records.get(node.name) if node.name not in shadowed else None
        if isinstance(node, nodes.Getattr):
            key: Any = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            key = node.arg.value
        else:
            return None
        outer = declared(node.node)
        if outer is None or not isinstance(key, str):
            return None
        inner = _record_fields(outer).get(key)
        if inner is None:
            if isinstance(node, nodes.Getattr) and key in _DICT_ATTRS:
                return None
            names = ", ".join(sorted(_record_fields(outer))) or "none"
            raise TemplateError(
                f"the record parameter {outer.name!r} has no field {key!r}",
                field=where,
                expected=f"one of its fields: {names}",
                hint="use a field the record declares, or declare the field under the "
                "parameter's `fields:`",
            )
        return inner if inner.dtype == "record" else None

    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        declared(node)


#: the flowServ dialect's placeholders, and a shell reference that may mean one
_FLOWSERV_PLACEHOLDER = re.compile(r"\$\[\[\s*([A-Za-z_][A-Za-z0-9_]*)\s*\]\]")
_SHELL_REFERENCE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NOT_RENDERED = re.compile(r"\{%-?\s*raw\s*-?%\}.*?\{%-?\s*endraw\s*-?%\}|\{#.*?#\}", re.S)


def _set_by_the_shell(text: str, name: str) -> bool:
    """Whether the command gives the shell variable ``name`` a value itself (``x=...``,
    ``export x=``, ``for x in``, ``read ... x``): then ``${x}`` is that variable (found by
    the re-review: ``score={{ score }}; printf "${score}"`` was refused)."""
    word = re.escape(name)
    return bool(
        re.search(rf"(?:^|[\s;&|(]){word}=", text)
        or re.search(rf"\bfor\s+{word}\b", text)
        or re.search(rf"\bread\b[^;\n]*\s{word}\b", text)
    )


def _check_dialect(source: str, where: str, known: frozenset[str]) -> None:
    """A native command written with the flowServ dialect's ``$[[p]]``, or with a
    ``${name}`` of a parameter, context key or site variable, is refused: Jinja2 leaves
    both to bash, where ``${python}`` is an unset variable (found by review: such a
    template installed, and every run failed, "code/score.py: Permission denied")."""
    # what Jinja2 does not render (raw blocks, comments) is the author's on purpose
    text = _NOT_RENDERED.sub("", source)
    found = _FLOWSERV_PLACEHOLDER.search(text)
    if found:
        raise TemplateError(
            f"{found.group(0)} is the flowServ dialect's placeholder, which a native "
            "(`flowbatch: 1`) template leaves to the shell",
            field=where,
            hint=f"write {{{{ {found.group(1)} }}}}, or drop `flowbatch: 1` (flowServ's dialect)",
        )
    for found in _SHELL_REFERENCE.finditer(text):
        name = found.group(1)
        if name in known and not _set_by_the_shell(text, name):
            raise TemplateError(
                f"{found.group(0)} names the template's {found.group(1)!r}, but a native "
                "(`flowbatch: 1`) template leaves ${...} to the shell, where it is not set",
                field=where,
                hint=f"write {{{{ {found.group(1)} }}}}; for a shell variable of your own, "
                "choose a name the template does not have",
            )


#: the contexts where only a token may stand (checked at install)
_CHECKED = frozenset({Ctx.ARITH, Ctx.SINGLE, Ctx.CODE, Ctx.NAME})


def _check_placements(
    env: SandboxedEnvironment,
    template: Template,
    workflow: Workflow,
    source: str,
    where: str,
    variables: Mapping[str, str],
) -> None:
    """Refuse a ``{{ p }}`` of a non-token parameter in an arithmetic context or inside
    single quotes (as the flowServ dialect is checked: the value of such a parameter
    there failed each request whose value was no token, with a hint for the template's
    author, where the README promises a refusal at install: found by review).

    The command is read as the text it renders to, with a sentinel for each output:
    once with every ``{% if %}`` taking its first branch, once with each taking its
    second (or its last, if it has fewer), and so on; each loop body once. A text that
    is then not complete shell text is left to the render, which sees the real one.
    A ``{{ v }}`` of a site variable ``v`` is read as its text (``{{ python }} -c``:
    the command is Python's)."""
    if "\x00" in source:
        return  # refused at render
    ast = env.parse(source)
    # names that a template sets itself ({% set %}, loop and macro variables) are not
    # the parameter; neither is a context value's name (it wins) or any other expression
    local = {n.name for n in ast.find_all(nodes.Name) if n.ctx != "load"}
    local.update(workflow.context)
    params = {p.name: p for p in template.parameters if p.name not in local}
    branches = max((len(node.elif_) + 2 for node in ast.find_all(nodes.If)), default=1)
    for choice in range(branches):
        parts: list[str] = []
        names: list[str | None] = []
        _read_text(ast.body, choice, parts, names)
        for k, part in enumerate(parts):
            found = _SENTINEL.fullmatch(part)
            name = names[int(found.group(1))] if found else None
            shadowed = (
                name in params or name in local or name in {p.name for p in template.parameters}
            )
            if name is not None and name in variables and not shadowed:
                parts[k] = variables[name]
        text = "".join(parts)
        if scan(text).problem:
            continue
        for index, ctx, command in sentinel_contexts(text):
            param = params.get(names[index] or "")
            if ctx in _CHECKED and param is not None:
                check_placement(
                    f"parameter '{param.name}'",
                    Exports.base_name(param.name),
                    ctx,
                    token=param.dtype in TOKEN_DTYPES,
                    where=where,
                    command=command,
                )


def _read_text(
    body: list[nodes.Node], choice: int, parts: list[str], names: list[str | None]
) -> None:
    """The text ``body`` outputs, each ``{% if %}`` taking branch ``choice`` (or its
    last): author text as it is, a sentinel for each expression, whose name (for a bare
    ``{{ name }}``, else None) goes to ``names``. Macro, call, filter and ``{% set %}``
    blocks are skipped: what they produce is output as a value, which is data."""
    for node in body:
        if isinstance(node, nodes.Output):
            for child in node.nodes:
                if isinstance(child, nodes.TemplateData):
                    parts.append(child.data)
                else:
                    parts.append(sentinel(len(names)))
                    names.append(child.name if isinstance(child, nodes.Name) else None)
        elif isinstance(node, nodes.If):
            options = [node.body, *(branch.body for branch in node.elif_), node.else_]
            _read_text(options[min(choice, len(options) - 1)], choice, parts, names)
        elif isinstance(node, nodes.For | nodes.With | nodes.Scope):
            _read_text(node.body, choice, parts, names)


#: blocks whose output Jinja writes as it is, without the ``finalize`` hook that turns a
#: value into a reference: a user's value could reach the command as shell text
_RAW_BLOCKS = {nodes.FilterBlock: "{% filter %}", nodes.CallBlock: "{% call %}"}


def _refuse_raw_blocks(
    ast: nodes.Template, where: str, error: type[RenderError] | type[TemplateError]
) -> None:
    for kind, name in _RAW_BLOCKS.items():
        if next(ast.find_all(kind), None) is not None:
            raise error(
                f"a {name} block writes its output without the placeholder rules: a "
                "value in it would reach the shell as code",
                field=where,
                hint="apply the filter to the value in an expression, "
                "e.g. {{ x | replace('a', 'b') }}, or call the macro as {{ m(x) }}",
            )


def _compile(env: SandboxedEnvironment, source: str, where: str) -> None:
    try:
        _refuse_raw_blocks(env.parse(source), where, TemplateError)
        env.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(
            f"Jinja2 syntax error on line {exc.lineno}: {exc.message}",
            field=where,
            expected="a valid Jinja2 template",
        ) from None
