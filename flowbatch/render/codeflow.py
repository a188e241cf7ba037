"""Where a value reaches program text through the shell's variables and a function's
arguments.

The code check refuses a value that stands in program text (the arguments of ``eval``
and ``trap``, ``bash -c``, a command's name...: :mod:`~flowbatch.render.shellctx`), at
install (:func:`flowbatch.render.values.check_placement`) and at render
(:func:`flowbatch.render.values.reference`). It reads where the value itself stands. A
template may first copy the value into a variable, or hand it to a function of its own
whose body puts its arguments in program text: ``f() { eval "$@"; }; f {{ s }}``, ``g()
{ local c=$1; eval "$c"; }``, ``m={{ s }}; eval "$m"``, ``run() { $*; }; run {{ s }}``
each ran the value under bash (found by review). This module follows program text back
to the words it comes from (:func:`program_sources`), as the options check follows a
value forward (:mod:`~flowbatch.render.taint`), with the same flows
(:func:`~flowbatch.render.shellvars.command_flows`): a word the text copies into a
variable read in program text is program text too, and so is an argument of a call (or
an operand of ``set``) whose function's body reads its positional parameters there.

The positional parameters are each function's own: a body's ``$1`` is its calls'
first argument, and ``$1`` outside any function body the operands of ``set`` there. A
function whose body runs ``"$@"`` (or ``"$1"``, or a variable given one) as a command's
name (``run() { echo "+ $*"; "$@"; }``) is read as a wrapper: each of its calls is a
command line (``run python3 train.py {{ s }}`` runs python3, the value its data; ``run
{{ s }}`` names the program, and ``run bash -c {{ s }}`` is program text), from its
first argument, or from any of the next ones a ``shift`` in its body may reach. Any
other use of the positional parameters in program text (``eval "$@"``, ``bash -c
"$1"``, ``trap "$1" EXIT``, ``alias x="$1"``, an unquoted ``$*`` as a command, whose
value is split into the command's words) makes every argument of every call program
text.

As everywhere in the lexer's flows, order is not followed: a variable assigned anywhere
is taken to hold its words everywhere (a local of one function is any function's
variable of that name), and a call anywhere in the text calls every function of its
name the text defines, before or after it (``g() { f "$1"; }; f() { eval "$1"; }; g
{{ s }}``: f is defined after g's text but before g runs). Both only refuse more.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from flowbatch.render.shellvars import ANY_MATCH, ANY_VARIABLE, Flow, word_parts

if TYPE_CHECKING:
    from flowbatch.render.shellctx import Ctx

#: what a place of program text that is a command's name reads (``Scan.command_at``)
COMMAND_NAME = "a command's name"
#: the scope of the positional parameters outside every function's body
TOP = ""
#: a positional parameter: ``$1``, ``${12``, ``$@``, ``${@``, ``$*``
_POSITIONAL = re.compile(r"\$\{?([0-9]+|[@*])")
#: ``shift`` and its count, as a word of a command (its own quoting checked apart)
_SHIFT = re.compile(r"(?<![^\s;&|(){}])shift(?:[ \t]+([^\s;&|)}]+))?(?![^\s;&|)}])")
#: a loop's keyword: a ``shift`` inside one may shift any number of times
_LOOP = re.compile(r"(?<![^\s;&|(){}])(?:while|until|for|select)(?![^\s;&|)}])")
#: what makes a place's words an eval's (or a trap's) text: its command, or a text one
#: of them runs (``Scan.places``, ``eval_reads``); the kind is group 1
_EVAL_TEXT = re.compile(r"(?:the program text of )?(eval|trap)\b")
#: the construct a message shows, at most this long
_SHOWN = 60


class _Read(NamedTuple):
    """A variable a piece of text expands (``@``: a positional parameter), where, and
    whether it is the whole word (``"$1"``, ``"$@"``, ``"$c"``: quoted, nothing cut
    off), with the first argument it stands for (``first``: a positional parameter's)."""

    name: str
    pos: int
    whole: bool
    first: int


class _Call(NamedTuple):
    """Words handed to a function's positional parameters: a call's arguments, or the
    operands of ``set`` (``function``: the scope they are set in)."""

    function: str
    arguments: tuple[tuple[int, int], ...]
    label: str


def _shown(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _SHOWN else flat[: _SHOWN - 3] + "..."


class _Follower:
    def __init__(
        self,
        text: str,
        quoting: Sequence[Ctx],
        subs: dict[int, int],
        params: dict[int, int],
        flows: Sequence[Flow],
        calls: Sequence[_Call],
        bodies: Sequence[tuple[str, int, int]],
    ) -> None:
        self.text = text
        self.quoting = quoting
        self.subs = subs
        self.params = params
        self.flows: dict[str, list[Flow]] = {}
        for flow in flows:
            if flow.name != "@":  # the positional parameters: by scope, from the calls
                self.flows.setdefault(flow.name, []).append(flow)
        self.calls = calls
        self.bodies = bodies
        self.scopes = {TOP} | {call.function for call in calls}
        #: the places found: (start, end, what), a command's name or not
        self.found: dict[tuple[int, int, bool], str] = {}
        self.queue: list[tuple[int, int, bool, bool, str, str]] = []
        self.followed: set[tuple[str, bool]] = set()
        #: per scope: its positional parameters are program text (the construct that
        #: makes them so), or the first words of a command line it may run
        self.code: dict[str, str] = {}
        self.starts: set[tuple[int, tuple[tuple[int, int], ...]]] = set()
        #: places of another kind found on a command line a function runs
        self.extra: list[tuple[int, int, Ctx, str]] = []
        #: the constructs that use a scope's positional parameters as an eval's (or a
        #: trap's) text, each with its kind (``eval`` or ``trap``)
        self.eval_texts: dict[str, str] = {}
        #: the arguments such a construct runs as a text, each with the scope it is
        #: run in, its kind and the function's label (``program_sources`` scans them)
        self.texts: list[tuple[int, int, str, str, str]] = []

    # -- what a piece of text reads ----------------------------------------------------
    def reads(self, start: int, end: int, *, split: bool, nested: bool = False) -> list[_Read]:
        """The variables ``text[start:end]`` expands, in its command substitutions too
        (their output). ``split``: an unquoted expansion there is split into words (a
        command's word; an assignment's is not)."""
        parts = word_parts(
            self.text, self.quoting, self.quoting, self.subs, start, end, params=self.params
        )
        solid = [p for p in parts if p.kind != "quote"]
        out: list[_Read] = []
        for part in parts:
            if part.kind == "sub":
                out.extend(self.reads(part.start, part.end, split=True, nested=True))
            elif part.kind == "var":
                positional = _POSITIONAL.match(self.text, part.start, part.end)
                which = positional.group(1) if positional else ""
                whole = (
                    not nested
                    and len(solid) == 1
                    and (part.quoted or not split)
                    and not part.trims
                    and which != "*"  # "$*": all of them, joined into one word
                )
                index = int(which) if which.isdigit() else 1
                out.append(_Read(part.name, part.start, whole, index))
        return out

    def scope_at(self, pos: int) -> str:
        """The function whose body holds ``pos`` (the innermost), else :data:`TOP`."""
        inside = [(start, name) for name, start, end in self.bodies if start <= pos < end]
        return max(inside)[1] if inside else TOP

    def shifts(self, scope: str) -> int | None:
        """How far the positional parameters of ``scope`` may be shifted (None: any)."""
        ranges = [(s, e) for name, s, e in self.bodies if name == scope] or [(0, len(self.text))]
        total = 0
        for start, end in ranges:
            body = self.text[start:end]
            found = [
                m for m in _SHIFT.finditer(body) if self.quoting[start + m.start()] == "unquoted"
            ]
            if not found:
                continue
            if _LOOP.search(body):
                return None
            for match in found:
                count = match.group(1) or "1"
                if not count.isdigit():
                    return None
                total += int(count)
        return total

    def calls_of(self, scope: str) -> list[_Call]:
        """The words given to the positional parameters of ``scope``: its calls, or the
        ``set`` operands in its body (outside any body: those there, and the calls of
        the functions whose body was not found)."""
        bodied = {name for name, _, _ in self.bodies}
        return [
            call
            for call in self.calls
            if call.function == scope or (scope == TOP and call.function not in bodied)
        ]

    # -- following ---------------------------------------------------------------------
    def demand(
        self, start: int, end: int, command: bool, what: str, construct: str, *, split: bool = True
    ) -> None:
        """``text[start:end]`` is program text (``command``: a command's name, one
        word; ``split``: a word bash splits, not an assignment's): so is what it
        reads."""
        key = (start, end, command)
        if key in self.found:
            return
        self.found[key] = what
        self.queue.append((start, end, command, split, what, construct))

    def run(self) -> None:
        while self.queue:
            start, end, command, split, what, construct = self.queue.pop()
            for read in self.reads(start, end, split=split):
                self.follow(read, command and read.whole, what, construct)

    def follow(self, read: _Read, command: bool, what: str, construct: str) -> None:
        name = read.name
        if name == "@":
            self.positional(self.scope_at(read.pos), command, read.first, construct)
            return
        if (name, command) in self.followed:
            return
        self.followed.add((name, command))
        if name == ANY_VARIABLE:  # ${!n}: any variable, the positional parameters too
            for other in list(self.flows):
                self.follow(read._replace(name=other), False, what, construct)
            for scope in sorted(self.scopes):
                self.positional(scope, False, 1, construct)
            return
        via = (
            what if "through shell variable" in what else f"{what}, through shell variable ${name}"
        )
        flows = self.flows.get(name, [])
        if name.startswith("BASH_REMATCH["):
            flows = flows + self.flows.get(ANY_MATCH, [])
        for flow in flows:
            for start, end in flow.sources:
                self.demand(start, end, command, via, construct, split=flow.split)
            if flow.also == "@":  # for m; do: any scope's
                for scope in sorted(self.scopes):
                    self.positional(scope, False, 1, construct)
            elif flow.also:
                self.follow(read._replace(name=flow.also), command, what, construct)

    def positional(self, scope: str, command: bool, index: int, construct: str) -> None:
        """The positional parameters of ``scope`` are program text (``command``: the
        ``index``-th is a command's name)."""
        if scope in self.code:
            return
        if not command:
            self.code[scope] = construct
            for call in self.calls_of(scope):
                line = self.text.count("\n", 0, call.arguments[0][0]) + 1
                if call.label.startswith("set"):
                    what = (
                        f"the positional parameters {call.label} on line {line} of the "
                        f"command, read as program text: {construct}"
                    )
                else:
                    what = (
                        f"{call.label} (its body runs its arguments as program text: "
                        f"{construct}; the call on line {line} of the command)"
                    )
                # what the arguments read is program text of the scope they stand in
                outer = f"a call of {call.label} ({construct})"
                kind = self.eval_texts.get(construct)
                if kind is not None:  # g() { eval "$1"; }; f() { g "$1"; }: f's too
                    self.eval_texts[outer] = kind
                for start, end in call.arguments:
                    self.demand(start, end, False, what, outer)
                    if kind is not None:
                        self.texts.append((start, end, scope, kind, call.label))
            return
        shifts = self.shifts(scope)
        for call in self.calls_of(scope):
            last = len(call.arguments) if shifts is None else index + shifts
            for first in range(index, min(last, len(call.arguments)) + 1):
                if (first, call.arguments) not in self.starts:
                    self.starts.add((first, call.arguments))
                    self.command_line(call, first, construct)

    def command_line(self, call: _Call, first: int, construct: str) -> None:
        """The arguments of ``call`` from the ``first``-th on, run as a command."""
        # shellctx imports this module: its names are taken once it is loaded
        from flowbatch.render.shellctx import Ctx, command_places

        ranges = call.arguments[first - 1 :]
        raw = [self.text[start:end] for start, end in ranges]
        words = [w.replace("'", "").replace('"', "").replace("\\", "") for w in raw]
        # `builtin` and `command` (and their options) run the command after them, as
        # the lexer reads them in a command of the text (found by review: `run builtin
        # eval {{ s }}` ran the value)
        skip = 0
        while skip < len(words) - 1 and words[skip] in ("builtin", "command"):
            skip += 1
            while skip < len(words) - 1 and words[skip].startswith("-"):
                skip += 1
        ranges, raw, words = ranges[skip:], raw[skip:], words[skip:]
        found, _, _ = command_places(words, raw)
        line = self.text.count("\n", 0, ranges[0][0]) + 1
        how = (
            f"{call.label} runs its arguments as a command: {construct}; on line {line} of "
            "the command"
        )
        for k, ctx, what in found:
            start, end = ranges[k]
            if ctx is Ctx.CODE:
                self.demand(start, end, what == COMMAND_NAME, f"{what} ({how})", construct)
            else:
                self.extra.append((start, end, ctx, f"{what} ({how})"))


def program_sources(
    text: str,
    quoting: Sequence[Ctx],
    places: Sequence[tuple[int, int, Ctx, str]],
    flows: Sequence[Flow],
    calls: Sequence[tuple[str, tuple[tuple[int, int], ...]]],
    sets: Sequence[tuple[tuple[int, int], ...]],
    bodies: Sequence[tuple[str, int, int]],
    subs: Sequence[tuple[int, int]],
    params: Sequence[tuple[int, int]],
    eval_reads: Sequence[tuple[str, int, str]] = (),
    text_reads: Callable[[str, int, str], list[tuple[str, int, str]]] | None = None,
) -> list[tuple[int, int, Ctx, str]]:
    """The words of ``text`` that are program text because program text reads them:
    through a variable they are copied into, or as a function's arguments (``calls``:
    of the functions the text defines, with their arguments' ranges; ``bodies``: where
    each function's body is) or ``set``'s operands (``sets``), each with what reads it.
    ``places`` are the lexer's (the program text it found by command), ``quoting`` its
    quoting of each character; ``eval_reads`` the variables an eval's text reads as
    program text when it runs (each with where the eval is and what reads it).

    A function whose body uses its arguments as an eval's (or a trap's) text runs a
    constant argument's own program text (``g() { eval "$1"; }; g 'eval $x'`` ran the
    value, found by review): each such argument no expansion builds is given to
    ``text_reads`` (its text, where it runs, the command that runs it), which answers
    the variables it reads as program text, followed as ``eval_reads`` are. An
    argument an expansion builds is followed as a value already."""
    from flowbatch.render.shellctx import Ctx  # (shellctx imports this module)

    code = [(s, e, what) for s, e, ctx, what in places if ctx is Ctx.CODE]
    if not code or not (flows or calls):
        return []
    scoped = [_Call(name, arguments, f"function {name}") for name, arguments in calls]
    follower = _Follower(text, quoting, dict(subs), dict(params), flows, scoped, bodies)
    for operands in sets:  # set -- ...: in the scope it stands in
        scope = follower.scope_at(operands[0][0])
        label = f"set, in function {scope}," if scope else "set"
        follower.calls = [*follower.calls, _Call(scope, operands, label)]
    for start, end, what in code:
        command = what == COMMAND_NAME
        shown = _shown(text[start:end])
        construct = f"{shown} as {COMMAND_NAME}" if command else _shown(f"{what} {shown}")
        kind = _EVAL_TEXT.match(what)
        if kind is not None and not command:
            follower.eval_texts[construct] = kind.group(1)
        # the lexer's own places are not repeated: only what is found through them
        follower.found[(start, end, command)] = what
        follower.queue.append((start, end, command, True, what, construct))
    own = set(follower.found)
    follower.run()
    reads = list(eval_reads)
    scanned: set[tuple[int, int]] = set()
    while True:  # a text scanned may reach another function's arguments: to the end
        for name, pos, what in reads:  # after the lexer's own: their messages first
            construct = _shown(what)
            kind = _EVAL_TEXT.match(what)
            if kind is not None:
                follower.eval_texts[construct] = kind.group(1)
            follower.follow(_Read(name, pos, False, 1), False, what, construct)
            follower.run()
        reads = []
        for start, end, scope, runs, label in follower.texts:
            if (start, end) in scanned or text_reads is None:
                continue
            scanned.add((start, end))
            if any(
                text[k] in "$`\x00" and quoting[k] in ("unquoted", "double")
                for k in range(start, end)
            ):
                continue  # built by an expansion: followed as a value
            # the text runs where the function's body is (its positional parameters)
            at = min((s for name, s, _ in bodies if name == scope), default=start)
            inner = "".join(c for c in text[start:end] if c not in "'\"\\")
            reads.extend(text_reads(inner, at, f"{runs} in {label}"))
        if not reads:
            break
    out = [
        (s, e, Ctx.CODE, what) for (s, e, _), what in follower.found.items() if (s, e, _) not in own
    ]
    return out + follower.extra
