"""Values from users as data, shared by both dialects.

Every value that derives from a user's argument is exported by the run script as an
environment variable ``FB_<name>``; its placeholder becomes a reference to that variable,
chosen by the quoting context it stands in (:mod:`flowbatch.render.shellctx`). The shell
then never parses a user's value as code. Two contexts take only validated tokens: inside
single quotes the text belongs to another program, and in an arithmetic context bash
evaluates the expanded value again (an array subscript in it runs a command). While a
command is being expanded each such value is held by a *sentinel* in the text: NUL, its
index, SOH. NUL cannot occur in a value (an environment variable cannot hold it, so such
values are refused), which makes sentinels unambiguous.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flowbatch.errors import RenderError, TemplateError
from flowbatch.render.codeflow import COMMAND_NAME
from flowbatch.render.shellctx import ECHO_OPTION, Ctx, Scan, scan
from flowbatch.render.shellvars import ANY_VARIABLE, may_be_empty, word_parts
from flowbatch.render.taint import variable_options
from flowbatch.spec.model import TOKEN_DTYPES, FileArg, Parameter, Step, Workflow

_SENTINEL_RE = re.compile("\x00([0-9]+)\x01")
_NOT_NAME = re.compile(r"[^A-Za-z0-9_]")

#: the hint given when a user's value would be pasted inside single quotes
SINGLE_QUOTE_HINT = "pass the value as a separate argument, or read ${var} from the environment"
#: the hint given when a user's value would stand in an arithmetic context
ARITH_HINT = (
    "declare the parameter int, float or select, or compare its value outside arithmetic, "
    'e.g. with the test builtin [ "$x" -eq 1 ] or in a program'
)
#: the hint given when a user's value would stand in another program's program text
CODE_HINT = (
    "pass the value as an argument or in the environment and let the program read it as "
    "data: bash -c '... \"$1\"' _ $[[x]], python3 -c 'import sys; print(sys.argv[1])' "
    "$[[x]], python3 - $[[x]] <<'PY' (the program in a here-document with a quoted "
    "delimiter, nothing in it expanded), awk -v x=$[[x]] '{ print x }', xargs -I{} sh -c "
    "'... \"$1\"' _ {}, or a script file of the template's that takes the value as an "
    "argument (sed, eval, trap, source, ssh, --wrap, make VAR=, parallel's command and an "
    "unquoted here-document fed to a program have no safe place for a value inside their "
    "program text)"
)
#: the hint given when a user's value would be a command's name
COMMAND_NAME_HINT = (
    "name the program in the template and pass the value as its argument "
    "(python3 score.py $[[x]], tar -xf data.tar -- $[[x]]); for a choice among programs "
    "the organiser knows, declare the parameter select"
)
#: the hint given when a function of the template's puts its arguments in program text
FUNCTION_CODE_HINT = (
    "let the function use its argument as data: printf '%s\\n' \"$1\", tar -xf data.tar -- "
    '"$1", python3 score.py "$1" (a quoted "$1" as a command\'s argument, never '
    'inside eval, trap, alias, bash -c "...", nor as a command\'s name, nor an unquoted '
    '$* or $@ there); a function that runs a command (run() { "$@"; }) may be given the '
    "value after the program's name (run python3 score.py $[[x]]); or declare the "
    "parameter select"
)
#: a value that reads as a number (a string parameter's): no option, but declared a string
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def option_hint(ref: Ref, command: str, *, native: bool) -> str:
    """What to do about a value that would be read as an option of ``command``."""
    x = "{{ x }}" if native else "$[[x]]"
    if command == "echo":
        return f"begin the value otherwise; for the organiser: printf '%s\\n' {x} prints any value"
    if command in ("find", "gfind"):
        return (
            "begin the value otherwise; for the organiser: find reads a word beginning with "
            f"'-' as its expression even after --: write find ./{x} ..."
        )
    first = (
        "if it is a number, the organiser may declare the parameter int or float"
        if _NUMBER.fullmatch(ref.value)
        else f"if the value names a file, write it as ./{ref.value[:40]}"
    )
    return (
        f"{first}; otherwise begin it with another character. For the organiser: put -- "
        f"before the value ({command} ... -- {x}), give it in the option's own word "
        f"(--input={x}), or declare the parameter select (its options may begin with '-')"
    )


#: the hint given when a user's value would be read as a variable's name
NAME_HINT = (
    "name the variable in the template (printf -v result ..., read -r line, "
    "[[ -v name ]]) and pass the value as data; or declare the parameter select"
)
#: what the install-time checks expect of a value in an arithmetic context
ARITH_EXPECTED = (
    "string, file, list and record values outside arithmetic "
    "($((...)), ((...)), $[...], let, [[ ... -eq ... ]], array subscripts, ${x:offset})"
)


class TemplateRenderError(RenderError):
    """A render error that is the template's, whatever the request's values (a name or a
    record field that does not exist, an attribute outside the sandbox, a command that
    is no complete shell text): the request that met it is told so, with the workflow and
    version to tell the organiser about (:meth:`for_request`), not that its own file is
    wrong at a field it does not have (found by review)."""

    def for_request(self, workflow: str, version: str) -> RenderError:
        """This error, as the request that met it is told."""
        where = f"workflow {workflow!r} version {version}"
        hint = (
            f"nothing in the request can fix this: tell the organiser of {where} (quote "
            "this message)"
        )
        if self.hint:
            hint += f"; for the organiser: {self.hint}"
        out = RenderError(
            f"the template's error, whatever the request's values: {self.reason}",
            file=f"the template of {where}",
            field=self.field,
            expected=self.expected,
            hint=hint,
        )
        out.unknown_variable = self.unknown_variable
        return out


class Trusted(str):
    """Text from the site configuration or the template author: output verbatim."""

    __slots__ = ()


@dataclass
class RenderedStep:
    """One step with its commands as final bash text."""

    name: str
    commands: list[str]


@dataclass
class RenderedWorkflow:
    """A rendered workflow: its steps, and the ``FB_`` variables the run script exports."""

    steps: list[RenderedStep]
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Ref:
    """A user-derived value standing in a command: the variable that holds it, its text,
    whether it may be pasted literally inside single quotes, a label for errors, and
    whether it may stand in an arithmetic context (``arith_safe``: bash evaluates the
    value there, so it must be a validated token that cannot name a variable holding
    another user's text; never more than ``pasteable``), and whether it may begin with
    ``-`` where a command reads options (``option_safe``)."""

    var: str
    value: str
    pasteable: bool
    label: str
    arith_safe: bool = False
    #: may begin a word a command reads as an option: a number, a boolean, or the
    #: organiser's own text (a select option, a default, a constant of the template)
    option_safe: bool = False
    #: the request's argument the value is (a parameter's name), if it is one
    argument: str = ""


def sentinel(index: int) -> str:
    """The placeholder text for the ``index``-th :class:`Ref` of a command."""
    return f"\x00{index}\x01"


def resolve_sentinels(text: str, refs: list[Ref]) -> str:
    """Replace sentinels by the values they hold (for values built from other values)."""
    return _SENTINEL_RE.sub(lambda m: refs[int(m.group(1))].value, text)


def format_value(value: Any) -> str:
    """The text of a cast argument value, as its ``FB_`` variable holds it.

    ``bool`` gives ``True``/``False`` (Python's ``str``, as flowServ pasted it), a file
    its target path inside the run directory, lists and records JSON text.
    """
    if value is None:
        return ""
    if isinstance(value, FileArg):
        return value.target
    if isinstance(value, list | dict | tuple):
        return json.dumps(value, default=_json_default, ensure_ascii=False)
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, FileArg):
        return value.target
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def check_no_nul(arguments: Mapping[str, Any]) -> None:
    """Refuse argument values containing NUL: no environment variable can carry one."""
    for name, value in arguments.items():
        if "\x00" in format_value(value):
            raise RenderError(
                f"the value of '{name}' contains a NUL character",
                field=f"arguments.{name}",
                expected="text without NUL characters",
            )


def flowserv_pasteable(dtype: str | None, text: str) -> bool:
    """Token values (int, float, bool, select) may stand in single quotes, as long as
    they cannot end the quote or escape anything."""
    return dtype in TOKEN_DTYPES and not any(ch in text for ch in "'\\\n\r")


class Exports:
    """The ``FB_`` variables of one rendered workflow, with collision-free names.

    Parameters reserve ``FB_<name>`` first (declaration order, identifier names before
    others), so ``$FB_<param>`` is predictable for template authors. Later names get a
    ``_2``, ``_3``... suffix when taken, unless the taken variable already holds the very
    same value (``sleeptime: $[[sleeptime]]`` shares ``FB_sleeptime``).
    """

    def __init__(self) -> None:
        self.env: dict[str, str] = {}
        self._taken: set[str] = set()

    @staticmethod
    def base_name(name: str) -> str:
        return "FB_" + (_NOT_NAME.sub("_", name) or "_")

    def reserve(self, name: str) -> str:
        """Take a fresh variable name for ``name`` (never shared)."""
        base = self.base_name(name)
        var, n = base, 1
        while var in self._taken:
            n += 1
            var = f"{base}_{n}"
        self._taken.add(var)
        return var

    def put(self, var: str, value: str) -> None:
        if "\x00" in value:
            raise RenderError(f"the value of ${var} would contain a NUL character")
        self.env[var] = value

    def share(self, name: str, value: str) -> str:
        """A variable for ``name`` holding ``value``: an existing one with that value and
        name, else a fresh one."""
        base = self.base_name(name)
        var, n = base, 1
        while var in self._taken:
            if self.env.get(var) == value:
                return var
            n += 1
            var = f"{base}_{n}"
        self._taken.add(var)
        self.put(var, value)
        return var

    def anonymous(self, value: str) -> str:
        """A variable holding ``value``: any exported one that does, else ``FB_v``..."""
        for var, held in self.env.items():
            if held == value:
                return var
        return self.share("v", value)


def command_field(prefix: str, i: int, step: Step, j: int) -> str:
    """Where command ``j`` of step ``i`` is in the template file (recorded by the parser,
    ``workflow.steps[0].action.commands[1]``), else the path of its place."""
    if j < len(step.command_fields):
        return step.command_fields[j]
    return f"{prefix}.steps[{i}].commands[{j}]"


def context_field(prefix: str, workflow: Workflow, name: str) -> str:
    """Where context value ``name`` is in the template file (``workflow.parameters.x``)."""
    return f"{workflow.context_field or prefix + '.parameters'}.{name}"


def reserve_parameters(exports: Exports, params: list[Parameter]) -> dict[str, str]:
    """``FB_<name>`` for every declared parameter, identifier names first, whether or
    not it has a value: the names must not depend on which arguments a run has."""
    ordered = sorted(params, key=lambda p: _NOT_NAME.search(p.name) is not None)
    return {p.name: exports.reserve(p.name) for p in ordered}


def arith_reason(label: str) -> str:
    """Why a value may not stand in an arithmetic context."""
    return f"{label} stands in an arithmetic context, where bash evaluates its value as code"


def _through_function(command: str | None) -> bool:
    """Whether ``command`` (what reads a value as code) is a function's body or the
    positional parameters (:mod:`~flowbatch.render.codeflow`)."""
    return command is not None and (
        "runs its arguments" in command or "the positional parameters" in command
    )


def code_hint(command: str | None) -> str:
    """What to write instead of a value in program text read by ``command``."""
    if _through_function(command):
        return FUNCTION_CODE_HINT
    if command and command.startswith(COMMAND_NAME):
        return COMMAND_NAME_HINT
    return CODE_HINT


def code_reason(label: str, command: str | None) -> str:
    """Why a value may not stand in the program text of another program."""
    if command and command.startswith(COMMAND_NAME):
        return (
            f"{label} stands as {command}: bash runs the program it names (a shell, eval, "
            "any file), so the value would choose the code that runs"
        )
    if _through_function(command):
        return (
            f"{label} is given to {command}, which bash reads as code, whatever the shell's quotes"
        )
    return (
        f"{label} stands in the program text of {command or 'another program'}, which "
        "reads its value as code (in its own language), whatever the shell's quotes"
    )


def name_reason(label: str, command: str | None) -> str:
    """Why a value may not stand where a command reads a variable's name."""
    return (
        f"{label} stands where {command or 'a command'} reads the name of a variable, and "
        "bash evaluates a subscript in a name ('a[$(cmd)]' runs cmd)"
    )


def reference(
    ref: Ref, ctx: Ctx, where: str, quoting: Ctx = Ctx.UNQUOTED, command: str | None = None
) -> str:
    """The text that stands for ``ref`` in context ``ctx``; in an arithmetic context, a
    name or program text, ``quoting`` is the quoting it stands in (see
    :class:`~flowbatch.render.shellctx.Scan`), ``command`` the command that reads it."""
    if ctx in (Ctx.CODE, Ctx.NAME):
        # only a token: text of letters, digits and . _ + -, no quote, no subscript
        if not ref.pasteable:
            if ctx is Ctx.CODE:
                raise RenderError(
                    code_reason(ref.label, command), field=where, hint=code_hint(command)
                )
            raise RenderError(name_reason(ref.label, command), field=where, hint=NAME_HINT)
        ctx = quoting
    if ctx is Ctx.ARITH:
        # bash expands the reference, then evaluates the text again: 'a[$(cmd)]' runs cmd
        if not (ref.arith_safe and ref.pasteable):
            raise RenderError(arith_reason(ref.label), field=where, hint=ARITH_HINT)
        ctx = Ctx.UNQUOTED if quoting is Ctx.ARITH else quoting
    if ctx is Ctx.UNQUOTED:
        return f'"${{{ref.var}}}"'  # one word, never split or globbed
    if ctx in (Ctx.DOUBLE, Ctx.COMMENT):
        return f"${{{ref.var}}}"
    if ctx is Ctx.SINGLE:
        if ref.pasteable:
            return ref.value
        raise RenderError(
            f"{ref.label} stands inside single quotes, where its value would be code",
            field=where,
            hint=SINGLE_QUOTE_HINT.format(var=ref.var),
        )
    raise RenderError(
        f"{ref.label} stands right after a backslash",
        field=where,
        hint="remove the backslash; the value is passed as data anyway",
    )


def option_reason(ref: Ref, command: str) -> str:
    """Why a value may not begin a word ``command`` may read as an option."""
    shown = ref.value if len(ref.value) <= 40 else ref.value[:37] + "..."
    return (
        f"{ref.label} ({shown!r}) begins with '-' where {command} reads its arguments: "
        f"{command} would take it for an option of its own, not for data"
    )


def _leading_ref(
    text: str, scanned: Scan, start: int, end: int, refs: list[Ref]
) -> tuple[Ref, bool] | None:
    """The value that may begin the word ``text[start:end]`` (its quotes aside, and any
    expansion before it that may come to nothing: ``$x$[[m]]``), if one may; with
    whether more of the word follows it."""
    if text.find("\x00", start, end) < 0:
        return None  # no value in the word (most of them): nothing to take apart
    parts = word_parts(
        text,
        scanned.quoting,
        scanned.contexts,
        dict(scanned.subs),
        start,
        end,
        params=dict(scanned.params),
    )
    for k, part in enumerate(parts):
        if part.nested or part.kind == "quote":
            continue
        if part.kind == "ref" and part.name:
            ref = refs[int(part.name)]
            if ref.value:
                rest = any(p.kind != "quote" and not p.nested for p in parts[k + 1 :])
                return ref, rest
            continue  # an empty value: what follows begins the word
        if may_be_empty(text, part):
            continue
        return None  # the word begins with the template's own text
    return None


def check_options(
    text: str, scanned: Scan, refs: list[Ref], where: str, *, native: bool = False
) -> None:
    """No value from a request begins with ``-`` a word that its command may read as an
    option (:func:`~flowbatch.render.shellctx.option_words`): the shell's quotes make
    the value one word, but the program still parses that word (found by review:
    ``tar -xf a.tar $[[member]]`` ran ``--to-command=sh ...``; ``ssh $[[host]]`` a
    ``-oProxyCommand=``). A lone ``-`` (standard input, by custom) stands; a value that
    is a number, a boolean or the organiser's own text may begin with ``-``."""
    for start, end, command in scanned.options:
        found = _leading_ref(text, scanned, start, end, refs)
        if found is None:
            continue
        ref, more = found
        if ref.option_safe or not ref.value.startswith("-") or (ref.value == "-" and not more):
            continue
        if command == "echo" and ECHO_OPTION.fullmatch(ref.value) is None:
            continue  # echo prints every other word
        raise RenderError(
            option_reason(ref, command) + (f" (in the template's {where})" if ref.argument else ""),
            field=f"arguments.{ref.argument}" if ref.argument else where,
            expected="a value that does not begin with '-' there",
            hint=option_hint(ref, command, native=native),
        )


def _shown(value: str) -> str:
    return value if len(value) <= 40 else value[:37] + "..."


def check_variable_options(
    text: str, scanned: Scan, refs: list[Ref], where: str, *, native: bool = False
) -> None:
    """No value from a request that a shell variable may hold reaches, through that
    variable, a word its command may read as an option (:mod:`flowbatch.render.taint`:
    ``m=$[[m]]; tar -xf a.tar "$m"``, ``a=($[[x]]); tar ... "${a[@]}"``, ``for m in
    $[[x]]``, ``set -- $[[x]]; tar ... "$1"``); nor one that may stand there as an
    expansion's default (``"${v:-$[[m]]}"``). The same test as a value standing there
    itself (:func:`check_options`), on what the variable may begin with."""
    for found in variable_options(text, scanned, refs, ECHO_OPTION):
        ref = refs[found.ref]
        dollar = "$" if native else "$$"  # a flowServ template writes the shell's $ so
        if found.variable == "@":
            held = 'the positional parameters ($1, "$@": set --, for, a function\'s arguments)'
            name = f"{dollar}1"
        elif found.variable == ANY_VARIABLE:
            word = text[found.start : found.end].strip("\"'")
            held = (
                f"an indirection ({word}: the variable it names may be any one, a value's "
                "own FB_ variable too)"
            )
            name = word.replace("$", dollar)
        elif found.variable.startswith("BASH_REMATCH"):
            element = found.variable.replace("[*]", "[@]")
            held = f"${{{element}}} (what [[ ... =~ ... ]] matched of it)"
            name = f"{dollar}{{{element}}}"
        else:
            held, name = f"shell variable ${found.variable}", f"{dollar}{found.variable}"
        option = "" if found.option == ref.value else f" ({_shown(found.option)!r} in it)"
        if found.default:
            held = f"the default or alternative word of ${{{found.variable}...}}"
        reason = (
            f"{ref.label} ({_shown(ref.value)!r}) may begin{option} the value of {held}, "
            f"which {found.command} reads where it reads its arguments: {found.command} "
            "would take it for an option of its own, not for data"
        )
        raise RenderError(
            reason + (f" (in the template's {where})" if ref.argument else ""),
            field=f"arguments.{ref.argument}" if ref.argument else where,
            expected="a value that does not begin with '-' there",
            hint=(
                "begin the value otherwise. For the organiser: put -- before the "
                f'variable ({found.command} ... -- "{name}"), give it in the option\'s '
                f'own word (--input="{name}"), quote it ("{name}": an unquoted one is '
                "split into words, any of which may be an option), or declare the "
                "parameter select, int or float when its values are options or numbers"
            ),
        )


#: where a word of what xargs reads may begin: after blanks, quotes, a backslash, or a
#: delimiter a template may give it with -d (a comma, a colon, a semicolon, a bar)
_XARGS_WORD = re.compile(r"[\s\"'\\,;:|]+")


def check_option_inputs(
    text: str, scanned: Scan, refs: list[Ref], where: str, *, native: bool = False
) -> None:
    """No value from a request, in what ``xargs`` reads, has a word beginning with
    ``-``: xargs splits its input at blanks and newlines and hands the words to a
    command that reads options there (:func:`~flowbatch.render.shellctx.xargs_feeds`)."""
    for start, end, command, via in scanned.option_inputs:
        for match in _SENTINEL_RE.finditer(text, start, end):
            ref = refs[int(match.group(1))]
            if ref.option_safe:
                continue
            # xargs's own quotes and backslashes, a -d delimiter: a dash after any of them
            dashed = [w for w in _XARGS_WORD.split(ref.value) if w[:1] == "-" and w != "-"]
            if not dashed or (command == "echo" and not ECHO_OPTION.fullmatch(dashed[0])):
                continue
            reason = (
                f"{ref.label} ({ref.value[:40]!r}) may reach {via}, which hands its words "
                f"to {command}: {command} would take {dashed[0][:40]!r} for an option of "
                "its own, not for data"
            )
            raise RenderError(
                reason + (f" (in the template's {where})" if ref.argument else ""),
                field=f"arguments.{ref.argument}" if ref.argument else where,
                expected="a value none of whose words begins with '-' there",
                hint="begin each word of the value otherwise; for the organiser: end the "
                f"command xargs runs with -- ({command} ... --), so that what xargs adds "
                "comes after it",
            )


def place(text: str, refs: list[Ref], where: str, *, native: bool = False) -> str:
    """Replace the sentinels of an expanded command by context-chosen references
    (``native``: of a native template, for the hints)."""
    lexed = scan(text)
    if lexed.problem:
        raise TemplateRenderError(
            f"the command is not complete shell text: {lexed.problem}", field=where
        )
    if lexed.options:
        check_options(text, lexed, refs, where, native=native)
    if lexed.options or lexed.eval_options:
        check_variable_options(text, lexed, refs, where, native=native)
    if lexed.option_inputs:
        check_option_inputs(text, lexed, refs, where, native=native)
    contexts, quoting = lexed.contexts, lexed.quoting
    out: list[str] = []
    pos = 0
    for match in _SENTINEL_RE.finditer(text):
        at = match.start()
        out.append(text[pos:at])
        ref = refs[int(match.group(1))]
        out.append(reference(ref, contexts[at], where, quoting[at], lexed.command_at(at)))
        pos = match.end()
    out.append(text[pos:])
    result = "".join(out)
    if "\x00" in result:
        raise RenderError("the command contains a NUL character", field=where)
    return result


def sentinel_contexts(text: str) -> list[tuple[int, Ctx, str | None]]:
    """(ref index, context, the command reading it as a name or program text) for each
    sentinel in ``text`` (install-time checks)."""
    lexed = scan(text)
    return [
        (int(m.group(1)), lexed.contexts[m.start()], lexed.command_at(m.start()))
        for m in _SENTINEL_RE.finditer(text)
    ]


def check_placement(
    label: str, var: str, ctx: Ctx, *, token: bool, where: str, command: str | None = None
) -> None:
    """Install-time check of one placeholder standing in ``ctx``: a value that is not a
    validated token (``token``: int, float, bool, select) may stand neither inside single
    quotes, nor in an arithmetic context, nor in another program's program text, nor
    where a variable's name is read (``command``: the command that reads it so); and no
    value right after a backslash."""
    if ctx is Ctx.CODE and not token:
        raise TemplateError(
            code_reason(label, command),
            field=where,
            expected="string, file, list and record values as arguments or in the "
            "environment of a program, never inside its program text",
            hint=code_hint(command),
        )
    if ctx is Ctx.NAME and not token:
        raise TemplateError(
            name_reason(label, command),
            field=where,
            expected="string, file, list and record values as data, never as a name",
            hint=NAME_HINT,
        )
    if ctx is Ctx.SINGLE and not token:
        raise TemplateError(
            f"{label} stands inside single quotes, where its value would be code",
            field=where,
            expected="string, file, list and record values outside single quotes",
            hint=SINGLE_QUOTE_HINT.format(var=var),
        )
    if ctx is Ctx.ARITH and not token:
        reason = arith_reason(label)
        if command:  # RANDOM=, read OPTIND...: a variable bash evaluates values of
            reason += f" (a value assigned by `{command}` to a variable bash evaluates)"
        raise TemplateError(reason, field=where, expected=ARITH_EXPECTED, hint=ARITH_HINT)
    if ctx is Ctx.ESCAPED:
        raise TemplateError(
            f"{label} stands right after a backslash",
            field=where,
            hint="remove the backslash; the value is passed as data anyway",
        )
