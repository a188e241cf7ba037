"""Where a command text copies text into a shell variable, and what a word is made of.

The options check (:func:`flowbatch.render.values.check_options`) sees a participant's
value where it stands in a command. A template may also copy the value into a shell
variable first and use the variable later in the same command text: ``m=$x; tar -xf
a.tar "$m"``, ``a=($x); tar -xf a.tar "${a[@]}"``, ``for m in $x; do ...; done``,
``set -- $x; tar ... "$1"``. This module gives the lexer (:mod:`~flowbatch.render.shellctx`)
the two facts that follow such a value, without knowing any value:

- :func:`command_flows`: which variables a simple command gives a value to, and the text
  (word ranges) that value comes from: plain assignments (``v=``, ``v+=``, ``a[1]=``),
  arrays (``a=(...)``, ``a+=(...)``), ``declare``/``typeset``/``local``/``export``/
  ``readonly``, ``declare -n`` (a name for another variable), ``for``/``select NAME
  in``, ``read`` and ``mapfile`` from a here-string (or ``< <(...)``), ``printf -v``,
  and ``set`` (the positional parameters, named ``@`` here: ``$1``, ``"$@"``...); the
  lexer adds what it sees across commands: a call's arguments to a function the text
  defines (``@`` too), what ``read`` gets from a pipe or a here-document
  (:func:`with_group_inputs`), and what ``[[ $x =~ RE ]]`` captures
  (:func:`match_flows`);
- :func:`word_parts`: what a word is made of: the values' sentinels, expansions of
  variables (plain, or an operator that may cut the value's beginning off: ``${v#*/}``;
  an indirection ``${!n}`` reads :data:`ANY_VARIABLE`, an element of ``BASH_REMATCH``
  its own name), command substitutions, quotes and other text.

Both read the text as the lexer did (its ``quoting`` of each character), and both err on
the side of following more: a variable assigned anywhere in the text (in a branch, a loop,
a function, a subshell) is taken to hold the value everywhere in it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from flowbatch.render.ere import Capture

#: ``name=``, ``name+=``, ``name[sub]=``: the name, whether it appends
ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[[^\]]*\])?(\+?)=")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: an array element's own subscript ``[k]=`` (its value follows)
_ELEMENT_KEY = re.compile(r"\[[^\]]*\]\+?=")
DECLARES = frozenset({"declare", "typeset", "local", "export", "readonly"})
#: the options of ``read`` and ``mapfile`` that take an argument
_READ_TAKES = "adinNptu"
_MAPFILE_TAKES = "dnOsucC"

#: a variable an indirection may read, any one (``${!n}``); a flow's ``also``: the
#: flow's variable is a name reference to such a one (``declare -n r=$1``)
ANY_VARIABLE = "!"
#: the elements of ``BASH_REMATCH`` a ``[[ ... =~ ... ]]`` whose regular expression is
#: not read sets: read with ``${BASH_REMATCH[N]}`` (a name :func:`word_parts` gives)
ANY_MATCH = "BASH_REMATCH[*]"

#: a flow's floor (see :class:`Flow`): nothing beyond what the words' shape says
PLAIN = 0
#: any word of the value may begin an element (``read`` splits its input)
WORDS = 2
#: any character of the value may begin one (``read -d``, ``IFS=,``, ``${v#...}``)
ANY = 3


class Flow(NamedTuple):
    """A variable (``@``: the positional parameters) given a value by a command: the
    word ranges of the text it takes its value from; ``split``: the words become
    elements, an unquoted expansion in them split into more (an array, ``for``,
    ``set``); ``floor``: what of the words' values may begin an element whatever their
    shape (:data:`PLAIN`, :data:`WORDS`, :data:`ANY`); ``also``: a variable whose value
    it takes whole (``declare -n r=v``, ``for m; do``: ``@``); ``stdin``: it reads its
    standard input (``read``, ``mapfile``), which may be given to a loop or group around
    it (:func:`with_group_inputs`)."""

    name: str
    sources: tuple[tuple[int, int], ...]
    split: bool = False
    floor: int = PLAIN
    also: str = ""
    stdin: bool = False

    def moved(self, offset: int) -> Flow:
        """This flow in a text that begins ``offset`` characters earlier (a
        here-document's body, lexed alone)."""
        sources = tuple((start + offset, end + offset) for start, end in self.sources)
        return self._replace(sources=sources)


class Part(NamedTuple):
    """One piece of a word (see :func:`word_parts`).

    ``kind``: ``quote`` (a quote character, which adds nothing to the word's text),
    ``text`` (the template's own characters), ``ref`` (a value's sentinel: ``name`` is
    its index), ``var`` (an expansion of variable ``name``), ``sub`` (a command
    substitution from ``start`` to ``end``: its output). ``quoted``: inside double
    quotes (not split). ``trims``: the expansion may drop the value's beginning
    (``${v#x}``, ``${v/x/y}``, ``${v:1}``); ``cut``: for ``${v#...}`` and ``${v##...}``
    whose pattern ends with a plain character, that character: what is left begins
    right after one (``${f##*/}``: after a ``/``) or where the value does. ``nested``:
    inside the operator word of the expansion before it (``${v:-$x}``): it may begin the
    word where that one does. ``op``: for an expansion that ``trims``, its operator as
    written (``##*/``, ``//-/_``, ``:3``), which :mod:`~flowbatch.render.taint`
    works out on the value itself where it can."""

    kind: str
    start: int
    end: int
    name: str = ""
    quoted: bool = False
    trims: bool = False
    nested: bool = False
    cut: str = ""
    op: str = ""


def _options_then(words: list[str], takes: str) -> tuple[dict[str, str], int]:
    """A builtin's options at the start of ``words`` (its name aside), with the
    argument of those that take one, and where its operands begin."""
    found: dict[str, str] = {}
    i = 1
    while i < len(words):
        word = words[i]
        if word == "--":
            return found, i + 1
        if len(word) < 2 or word[0] != "-":
            break
        for k, letter in enumerate(word[1:], start=2):
            if letter in takes:
                if k < len(word):
                    found[letter] = word[k:]
                else:
                    i += 1
                    found[letter] = words[i] if i < len(words) else ""
                break
            found[letter] = ""
        i += 1
    return found, i


def command_flows(
    text: str,
    cmd: Sequence[tuple[int, int]],
    assigns: Sequence[tuple[int, int]],
    arrays: Sequence[tuple[int, list[tuple[int, int]]]],
    inputs: Sequence[tuple[int, int]],
    words: list[str],
) -> list[Flow]:
    """The variables one simple command gives values to. ``cmd``: its words' ranges
    from its name on (``words``: their text without quotes); ``assigns``: the
    assignments before it; ``arrays``: where each array assignment ``a=(`` begins and
    its elements' ranges; ``inputs``: what it reads as standard input (here-strings,
    ``< <(...)``). Assignments before a command's name are its environment only: they
    are no flow (``v=$x cmd "$v"`` expands the ``v`` of before)."""
    flows: list[Flow] = []
    for at, elements in arrays:
        array = ASSIGNMENT.match(text, at)
        if array is not None:
            values = tuple(_element_value(text, s, e) for s, e in elements)
            flows.append(Flow(array.group(1), values, split=True))
    if not cmd:
        flows.extend(_assignment(text, s, e) for s, e in assigns if ASSIGNMENT.match(text, s, e))
        return flows
    name = words[0]
    reads = tuple(_input_text(text, s, e) for s, e in inputs)
    if name in DECLARES:
        options, _ = _options_then(words, "")
        for (s, e), word in zip(cmd[1:], words[1:], strict=True):
            if not ASSIGNMENT.match(text, s, e):
                continue
            if "n" in options and name != "export":  # a name reference (export -n: not)
                alias, _, other = word.partition("=")
                named = _NAME.match(other)
                if named is None or any(c in other for c in "$`"):
                    # a name the text computes (`local -n r=$1`: an array passed by its
                    # name): any variable, read or assigned (taint._Reader.holds)
                    flows.append(Flow(alias, (), also=ANY_VARIABLE))
                    continue
                flows.append(Flow(alias, (), also=named.group(0)))
                # and what is assigned to the reference is the named variable's value
                # (found by review: `declare -n r=m; r=$x` then "$m")
                flows.append(Flow(named.group(0), (), also=alias))
            else:
                flows.append(_assignment(text, s, e))
    elif name in ("for", "select") and len(words) >= 2 and _NAME.fullmatch(words[1]):
        if len(words) >= 3 and words[2] == "in":
            flows.append(Flow(words[1], tuple(cmd[3:]), split=True))
        elif len(words) == 2:  # for m; do ...: the positional parameters
            flows.append(Flow(words[1], (), split=True, also="@"))
    elif name == "set":
        operands = _set_operands(words)
        if operands is not None and operands < len(cmd):
            flows.append(Flow("@", tuple(cmd[operands:]), split=True))
    elif name == "read":  # its input: its own, or a loop's or group's around it
        options, at = _options_then(words, _READ_TAKES)
        # IFS=, read -a a <<< ...: the words begin after any character
        ifs = any(text.startswith("IFS=", s) for s, _ in assigns)
        floor = ANY if ifs or "d" in options else WORDS
        names = [w for w in words[at:] if _NAME.fullmatch(w)]
        if "a" in options:
            names.append(options["a"])
        for target in names or ["REPLY"]:
            flows.append(Flow(target, reads, floor=floor, stdin=True))
    elif name in ("mapfile", "readarray"):
        # a line begins after a newline, where a word does too (-d: after any character)
        options, at = _options_then(words, _MAPFILE_TAKES)
        target = words[at] if at < len(words) and _NAME.fullmatch(words[at]) else "MAPFILE"
        flows.append(Flow(target, reads, floor=ANY if "d" in options else WORDS, stdin=True))
    elif name == "printf":
        options, at = _options_then(words, "v")
        named = ASSIGNMENT.match(options.get("v", "") + "=")
        if "v" in options and named is not None:
            # the format puts its arguments' words anywhere: each may begin the value
            flows.append(Flow(named.group(1), tuple(cmd[at:]), floor=WORDS))
    return flows


def match_flows(left: tuple[int, int], groups: Sequence[Capture] | None) -> list[Flow]:
    """What ``[[ LEFT =~ RE ]]`` gives ``BASH_REMATCH``: the part of the word ``left``
    each group of ``RE`` matched (``groups``: :func:`~flowbatch.render.ere.captures`,
    None for an expression not read). A group that begins where the text does holds
    what the word may begin with; one that begins elsewhere, what any of its characters
    may; one that never begins with ``-``, nothing that matters here. Each is also in
    ``BASH_REMATCH`` itself (``"${BASH_REMATCH[@]}"``, ``${BASH_REMATCH[$i]}``)."""
    if groups is None:
        return [Flow("BASH_REMATCH", (left,), floor=ANY), Flow(ANY_MATCH, (left,), floor=ANY)]
    flows: list[Flow] = []
    for index, group in enumerate(groups):
        if group.dash:
            floor = PLAIN if group.anchored else ANY
            flows.append(Flow(f"BASH_REMATCH[{index}]", (left,), floor=floor))
            flows.append(Flow("BASH_REMATCH", (left,), floor=floor))
    return flows


def with_group_inputs(
    text: str, flows: Sequence[Flow], inputs: Sequence[tuple[int, int]]
) -> list[Flow]:
    """``flows`` where each ``read`` and ``mapfile`` also reads ``inputs``: the
    here-strings and ``< <(...)`` given to a loop or group (``while read -r m; do ...;
    done <<< $x``, ``{ read m; ...; } < <(...)``), the usual way to read from one (found
    by review: the ``read`` inside had no input of its own, and was not followed). As
    everywhere here, any such input counts for any ``read`` of the text, in a loop or
    not."""
    if not inputs:
        return list(flows)
    extra = tuple(_input_text(text, s, e) for s, e in inputs)
    return [f._replace(sources=f.sources + extra) if f.stdin else f for f in flows]


def _input_text(text: str, start: int, end: int) -> tuple[int, int]:
    """What a command reads from an input word: a here-string's word, or the commands
    of ``< <(...)`` (their output: any of the values they hold)."""
    if text.startswith("<(", start) and text.endswith(")", start, end):
        return start + 2, end - 1
    return start, end


def _assignment(text: str, start: int, end: int) -> Flow:
    """The flow of one word ``name=value`` (``name+=``, ``name[k]=``)."""
    target = ASSIGNMENT.match(text, start, end)
    assert target is not None
    return Flow(target.group(1), ((target.end(), end),))


#: ``${name:=`` and ``${name=`` after the ``${``: an expansion that assigns its word
_ASSIGNING = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[[^\]]*\])?:?=")


def expansion_flow(text: str, start: int, end: int) -> Flow | None:
    """The flow of the parameter expansion whose text (after its ``${``) runs from
    ``start`` to its ``}`` at ``end``, when it assigns: ``${v:=word}`` and ``${v=word}``
    give ``v`` the word's value where ``v`` is unset (or empty), as ``v=word`` does
    (found by review: ``: "${m:=$[[x]]}"; tar -xf a.tar "$m"`` passed a value's
    option)."""
    target = _ASSIGNING.match(text, start, end)
    if target is None:
        return None
    return Flow(target.group(1), ((target.end(), end),))


def _element_value(text: str, start: int, end: int) -> tuple[int, int]:
    """An array element's value: its word without a subscript ``[k]=`` before it."""
    key = _ELEMENT_KEY.match(text, start, end)
    return (key.end(), end) if key else (start, end)


def _set_operands(words: list[str]) -> int | None:
    """Where the operands of ``set`` begin (they become ``$1``...), if it has any."""
    i = 1
    while i < len(words):
        word = words[i]
        if word == "--":
            return i + 1
        if word in ("-o", "+o"):
            i += 2
            continue
        if word[:1] not in ("-", "+") or word in ("-", "+"):
            return i
        i += 1
    return None


# -- what a word is made of ---------------------------------------------------------------
_SENTINEL = re.compile("\x00([0-9]+)\x01")  # as values.sentinel writes it
#: ``$name``, ``$1``, ``$@``, ``$*`` (``$#``, ``$?``, ``$$``... are numbers or the shell's)
_SIMPLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*|[0-9@*])")
#: ``${name``, ``${1``, ``${@``: a parameter expansion's name, after a ``!`` for an
#: indirection (``${!n}``, ``${!#}``: the variable ``n`` names, the last positional
#: parameter); ``${#...}`` is a length
_BRACED = re.compile(r"\$\{(!?)([A-Za-z_][A-Za-z0-9_]*|[0-9]+|[@*])|\$\{!(#)")
#: after the name (and a subscript): operators that keep the value's beginning
_KEEPS = ("}", ":-", ":=", ":?", ":+", "-", "=", "?", "+", "%", "^", ",", "@")


def _variable(name: str) -> str:
    """The variable an expansion reads: ``@`` for every positional parameter (and
    ``BASH_ARGV``, which holds them, reversed, under ``shopt -s extdebug``); any one
    for ``$_``, which bash sets to the last word of each command (found by review:
    ``echo $[[x]]; tar -xf a.tar "$_"`` and ``${BASH_ARGV[0]}`` in a function passed a
    value's option)."""
    if name[0].isdigit() or name in ("@", "*", "BASH_ARGV"):
        return "@"
    return ANY_VARIABLE if name == "_" else name


def _closing(text: str, quoting: Sequence[str], start: int, end: int, open_: str) -> int:
    """Where the ``}`` or ``]`` closing the one opened before ``start`` is (``end`` if
    none): brackets counted, but not those quoted by single quotes or a backslash. The
    lexer's own matching of an unquoted ``${...}`` goes first (``params`` of
    :func:`word_parts`): it knows a ``}`` inside double quotes there (``${v#"}"}``)."""
    close = "}" if open_ == "{" else "]"
    depth = 0
    for k in range(start, end):
        if quoting[k] in ("single", "escaped"):
            continue
        if text[k] == open_:
            depth += 1
        elif text[k] == close:
            if not depth:
                return k
            depth -= 1
    return end


_DEFAULTED = re.compile(
    r"\$\{(?:[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[@*])(?:\[[^]]*\])?:[-=](.*)\}", re.S
)
#: a default word of the template's own plain text (``${v:-out}``)
_PLAIN_WORD = re.compile(r"[\"']*[A-Za-z0-9_./,:=+@%^ ~-]+[\"']*")


def may_be_empty(text: str, part: Part) -> bool:
    """Whether the expansion ``part`` of ``text`` may come to nothing, so that what
    follows it may begin its word (``$x$[[m]]`` with an empty ``x`` is ``$[[m]]``: found
    by review). A command's output and any variable may; not ``${v:-W}`` or ``${v:=W}``
    whose word ``W`` is plain text of the template's own (anything else in it, an
    expansion, a quote inside, may be empty too)."""
    if part.kind == "sub":
        return True
    if part.kind != "var":
        return False
    defaulted = _DEFAULTED.fullmatch(text, part.start, part.end)
    return defaulted is None or _PLAIN_WORD.fullmatch(defaulted.group(1)) is None


def word_parts(
    text: str,
    quoting: Sequence[str],
    contexts: Sequence[str],
    subs: dict[int, int],
    start: int,
    end: int,
    *,
    nested: bool = False,
    params: Mapping[int, int] | None = None,
) -> list[Part]:
    """The parts of the word ``text[start:end]`` (see :class:`Part`). ``quoting`` and
    ``contexts``: the lexer's for each character; ``subs``: where each command
    substitution's text begins and ends; ``params``: where the text of each unquoted
    ``${...}`` begins and where its ``}`` is (the lexer's ``Scan.params``)."""
    parts: list[Part] = []
    k = start
    while k < end:
        c, q = text[k], quoting[k]
        expands = q in ("unquoted", "double")
        quoted = q == "double"
        if c == "\x00":
            sentinel = _SENTINEL.match(text, k, end)
            stop = sentinel.end() if sentinel else k + 1
            name = sentinel.group(1) if sentinel else ""
            parts.append(Part("ref", k, stop, name, quoted, nested=nested))
            k = stop
            continue
        if c in "\"'" and q in ("unquoted", "double", "single"):
            parts.append(Part("quote", k, k + 1))
            k += 1
            continue
        if expands and c == "$" and text[k + 1 : k + 2] in ("'", '"') and q == "unquoted":
            parts.append(Part("quote", k, k + 1))  # $'...' and $"..."
            k += 1
            continue
        if expands and c == "$" and text.startswith("$(", k) and not text.startswith("$((", k):
            stop = subs.get(k + 2, end)
            parts.append(Part("sub", k + 2, stop, quoted=quoted, nested=nested))
            k = stop + 1
            continue
        if expands and c == "`" and k + 1 in subs:
            stop = subs[k + 1]
            parts.append(Part("sub", k + 1, stop, quoted=quoted, nested=nested))
            k = stop + 1
            continue
        if q == "unquoted" and c in "<>" and k + 2 in subs and text.startswith("(", k + 1):
            stop = subs[k + 2]  # <(...): a file's name, /dev/fd/N
            parts.append(Part("text", k, stop + 1))
            k = stop + 1
            continue
        if expands and c == "$" and text.startswith(("$((", "$["), k):
            # arithmetic: a number, whatever it reads
            k += 3 if text.startswith("$((", k) else 2
            while k < end and contexts[k] == "arithmetic":
                k += 1
            parts.append(Part("text", k, k))
            continue
        braced = _BRACED.match(text, k, end) if expands else None
        if braced is not None:
            close = params.get(k + 2, end) if params else end
            if not k < close < end:  # quoted, or not framed by the lexer
                close = _closing(text, quoting, k + 2, end, "{")
            after = braced.end()
            indirect = bool(braced.group(1) or braced.group(3))
            base = braced.group(2) or "@"  # ${!#}: the last positional parameter
            every = base in ("@", "*")  # ${@...}, ${a[@]...}: each element
            subscript = ""
            if text.startswith("[", after):
                start_ = after
                after = _closing(text, quoting, after + 1, end, "[") + 1
                subscript = text[start_:after]
                every = subscript in ("[@]", "[*]")
            keys = subscript in ("[@]", "[*]") and after == close
            if braced.group(1) and (
                keys or (text[after : after + 1] in ("*", "@") and after + 1 == close)
            ):
                # ${!a[@]}: an array's keys, ${!prefix*}: variables' names. Neither is a
                # value: a value is refused as a name or a subscript at install
                parts.append(Part("text", k, close + 1))
                k = close + 1
                continue
            # ${a[@]:2}, ${@:3}: a slice of the elements, each whole, not an offset into
            # one (found by review: `${@:3}` was read as the value from its third character)
            keeps = text.startswith(_KEEPS, after) or (every and text.startswith(":", after))
            name = _variable(base)
            if indirect and braced.group(3) is None:
                name = ANY_VARIABLE  # ${!n}: the variable n names, any one
            elif name == "BASH_REMATCH":
                # one capture group (no subscript: the first element, the whole match)
                number = re.fullmatch(r"\[([0-9]+)\]", subscript or "[0]")
                if number is not None:
                    name = f"BASH_REMATCH[{int(number.group(1))}]"
            cut = ""
            pattern = text[after:close]
            if pattern[:1] == "#" and len(pattern) > 1 and not any(c in pattern for c in "$`\x00"):
                last = text[close - 1]
                if last not in "*?]\\\"'}" and quoting[close - 1] in ("unquoted", "double"):
                    cut = last
            op = "" if keeps else pattern
            parts.append(Part("var", k, close + 1, name, quoted, not keeps, nested, cut, op))
            if after < close:  # ${v:-word}, ${v/x/word}: the words' own expansions
                inner = word_parts(
                    text, quoting, contexts, subs, after, close, nested=True, params=params
                )
                parts.extend(p for p in inner if p.kind in ("ref", "var", "sub"))
            k = close + 1
            continue
        simple = _SIMPLE.match(text, k, end) if expands else None
        if simple is not None:
            name = _variable(simple.group(1))
            if name == "BASH_REMATCH":
                name = "BASH_REMATCH[0]"  # an array's name alone: its first element
            parts.append(Part("var", k, simple.end(), name, quoted, nested=nested))
            k = simple.end()
            continue
        if c == "\\" and q in ("unquoted", "double") and quoting[k + 1 : k + 2] == ("escaped",):
            parts.append(Part("text", k, k + 2))
            k += 2
            continue
        parts.append(Part("text", k, k + 1))
        k += 1
    return parts
