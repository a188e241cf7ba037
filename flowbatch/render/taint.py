"""Which shell variables of a command text may hold a participant's value, and where a
command would read such a variable as its options.

A value that begins with ``-`` is refused where a command reads options
(:func:`flowbatch.render.values.check_options`). Copied into a shell variable first, it
is the same option: ``m=$[[m]]; tar -xf a.tar "$m"``, ``a=($[[x]]); tar -xf a.tar
"${a[@]}"``, ``for m in $[[x]]; do tar -xf a.tar "$m"; done``, ``export M=$[[m]]``,
``set -- $[[x]]; tar ... "$1"``. This module follows the values through the variables
of one command text (:func:`tainted`) and finds the words that read them where a command
reads options (:func:`variable_options`).

Each command of ``run.sh`` runs in its own subshell (or, for builtins that change
nothing, a brace group that assigns no variable: :mod:`~flowbatch.render.grouping`), so
no variable crosses from one command to the next, nor from one step to the next: the
text of one command is all there is to follow.

What a variable holds of a value is told by a *level* (per value): 0, it holds the
value somewhere but never at its beginning (``v="in-$x"``); :data:`LEAD`, its value (or
an element's) may begin with the value; :data:`~flowbatch.render.shellvars.WORDS`, with
any of the value's words (an unquoted ``$v`` split into an array: ``a=($v)``, ``read``,
``mapfile``, ``printf -v``, a command substitution's output);
:data:`~flowbatch.render.shellvars.ANY`, with any of its characters (``${v#*x}``,
``${v:3}``, ``read -d``, an ``IFS`` of the template's). Flow is not followed in order: a
variable assigned anywhere in the text (a branch, a loop, a later line) is taken to hold
the value everywhere, and a reassignment to a constant does not clear it. A value that
is option-safe (a number, a select option, a default, the organiser's text) or that no
``-`` begins in any way never taints.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from flowbatch.render.shellvars import (
    ANY,
    ANY_MATCH,
    ANY_VARIABLE,
    ASSIGNMENT,
    DECLARES,
    WORDS,
    Part,
    may_be_empty,
    word_parts,
)

if TYPE_CHECKING:
    from flowbatch.render.shellctx import Scan
    from flowbatch.render.values import Ref

#: the variable's value (or an element's) may begin with the value itself
LEAD = 1
_SENTINEL = re.compile("\x00([0-9]+)\x01")  # as values.sentinel writes it
#: ``$name``, ``${name``, ``$1``, ``$@``: a variable read inside a command substitution;
#: ``${!``: an indirection (any variable)
_READS = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*|[0-9@*])|\$\{(!)")

#: per variable, the values (their index among the refs) it may hold, with the level
Taint = dict[str, dict[int, int]]


#: the values worked out from others a command text may make (see :meth:`_Reader._derive`)
MAX_DERIVED = 256
#: an operator worked out on a value: no expansion, quote, sentinel or extglob; a
#: backslash only before a character it escapes (``${f//\\//_}``: every ``/``)
_PLAIN_OP = re.compile("(?:[^$`\\\\\"'\x00\x01(){}]|\\\\[^$`\"'\x00\x01(){}])*")
#: a replacement's pattern and replacement: split at the first ``/`` not escaped
_REPLACE = re.compile(r"((?:[^\\/]|\\.)*)(?:/(.*))?", re.S)
#: ``:N``, ``:N:L``: a decimal N (bash reads ``010`` as octal 8, ``0x8`` as 8: not worked out)
_OFFSET = re.compile(r":\s*(0|[1-9][0-9]*)(?::\s*[0-9]+)?")


def _glob(pattern: str) -> re.Pattern[str] | None:
    """A pattern of ``${v#...}`` as a regular expression (None: one this does not read
    as bash does: a POSIX class, ``[^...]``)."""
    if "[:" in pattern or "[^" in pattern:
        return None
    return re.compile(fnmatch.translate(pattern))


def trimmed(value: str, op: str) -> str | None:
    """What a variable that begins with ``value`` begins with after ``${v<op>}``, as far
    as the value goes (None: not worked out; the caller then takes any character of the
    value as a possible beginning). A match that could only end past the value leaves
    the value out of the beginning; where the value may stay whole (no match within
    it), it is the value: so the result is never less than bash could leave there.

    ``#P``/``##P``: the shortest/longest beginning of the value that ``P`` matches is
    cut off; ``/P/R``, ``//P/R``, ``/#P/R``, ``/%P/R`` with a plain ``P`` (no ``*``,
    ``?``, ``[``) and an ``R`` without ``&``: replaced; ``:N`` and ``:N:L``: from the
    N-th character."""
    if _PLAIN_OP.fullmatch(op) is None:
        return None
    if op.startswith("#"):
        if "\\" in op:
            return None  # fnmatch has no escapes
        longest = op.startswith("##")
        rx = _glob(op[2:] if longest else op[1:])
        if rx is None:
            return None
        ends = [k for k in range(len(value) + 1) if rx.fullmatch(value[:k])]
        if not ends:
            return value
        return value[max(ends) if longest else min(ends) :]
    if op.startswith("/"):
        kind = op[:2] if op[:2] in ("//", "/#", "/%") else "/"
        split = _REPLACE.fullmatch(op, len(kind))
        assert split is not None  # any text fits
        pattern, replacement = split.group(1), split.group(2) or ""
        if any(c in pattern for c in "*?[") or any(c in replacement for c in "&\\"):
            return None  # bash 5.2 puts the matched text where the replacement has '&'
        pattern = re.sub(r"\\(.)", r"\1", pattern, flags=re.S)  # `\/` is a `/`
        if not pattern:
            return None
        if kind == "//":
            return value.replace(pattern, replacement)
        if kind == "/#":
            return replacement + value[len(pattern) :] if value.startswith(pattern) else value
        if kind == "/%":
            return value
        return value.replace(pattern, replacement, 1)
    offset = _OFFSET.fullmatch(op)
    if offset is not None:
        return value[int(offset.group(1)) :]
    return None


class VariableOption(NamedTuple):
    """A variable read where ``command`` reads options: the word (``start``, ``end``),
    the variable (``@``: the positional parameters), the value (its index among the
    refs), the word of that value that would be the option, and whether the value
    stands in the variable's default or alternative word (``"${v:-$[[m]]}"``) rather
    than in the variable."""

    start: int
    end: int
    command: str
    variable: str
    ref: int
    option: str
    default: bool = False


def _may_matter(ref: Ref) -> bool:
    """Whether ``ref`` can make an option in any way: not option-safe, a ``-`` in it
    (a lone ``-`` stands, by custom)."""
    return not ref.option_safe and "-" in ref.value and ref.value != "-"


def _merge(into: dict[int, int], ref: int, level: int) -> bool:
    if into.get(ref, -1) >= level:
        return False
    into[ref] = level
    return True


class _Level(NamedTuple):
    """A part of a word that may hold a value (its index among the refs) at ``level``,
    and the variable it reads, or the one whose operator word it is in."""

    part: Part
    ref: int
    level: int
    variable: str


class _Reader:
    """Reads words of one scanned text against the refs and the variables' taint."""

    def __init__(self, text: str, scanned: Scan, refs: Sequence[Ref]) -> None:
        self.text = text
        self.scanned = scanned
        self.refs = refs
        self.subs = dict(scanned.subs)
        self.params = dict(scanned.params)
        self.taint: Taint = {}
        #: what is left of a value after an expansion that trims it, worked out on the
        #: value (``${f##*/}``: its last part), numbered after the refs: (the ref it
        #: comes from, its text)
        self.derived: list[tuple[int, str]] = []
        self._derived_at: dict[tuple[int, str], int] = {}
        #: name references to a name the text computes (``local -n r=$1``)
        self.references = {f.name for f in scanned.flows if f.also == ANY_VARIABLE}

    def holds(self, name: str) -> dict[int, int]:
        """The values variable ``name`` may hold, with their levels. What an indirection
        reads (:data:`~flowbatch.render.shellvars.ANY_VARIABLE`: ``${!n}``) may be any
        variable: any the text gives a value, and any value of the command's whole (each
        is in the run's environment, as ``FB_...``). A name reference to a computed name
        reads that too, and any variable may hold what is assigned through one. An
        element of ``BASH_REMATCH`` may hold what a match not read sets."""
        if name == ANY_VARIABLE:
            found = {i: LEAD for i, ref in enumerate(self.refs) if _may_matter(ref)}
            for held in list(self.taint.values()):
                for index, level in held.items():
                    _merge(found, index, level)
            return found
        extra = [self.taint.get(r, {}) for r in self.references]
        if name in self.references:
            extra.append(self.holds(ANY_VARIABLE))
        if name.startswith("BASH_REMATCH["):
            extra.append(self.taint.get(ANY_MATCH, {}))
        held = self.taint.get(name, {})
        if not any(extra):
            return held
        found = dict(held)
        for more in extra:
            for index, level in more.items():
                _merge(found, index, level)
        return found

    def value(self, index: int) -> str:
        """The text of value ``index``: a ref's, or one worked out from it."""
        if index < len(self.refs):
            return self.refs[index].value
        return self.derived[index - len(self.refs)][1]

    def origin(self, index: int) -> int:
        """The ref value ``index`` is, or was worked out from."""
        return index if index < len(self.refs) else self.derived[index - len(self.refs)][0]

    def _derive(self, index: int, op: str) -> int | None:
        """The index of what a variable that begins with value ``index`` begins with
        after the operator ``op`` (``${v<op>}``); None when that cannot be worked out."""
        text = trimmed(self.value(index), op)
        if text is None:
            return None
        key = (self.origin(index), text)
        found = self._derived_at.get(key)
        if found is None:
            if len(self.derived) >= MAX_DERIVED:  # a loop that grows it: `v=${v/a/aa}`
                return None
            found = self._derived_at[key] = len(self.refs) + len(self.derived)
            self.derived.append(key)
        return found

    def parts(self, start: int, end: int) -> list[Part]:
        s = self.scanned
        return word_parts(
            self.text, s.quoting, s.contexts, self.subs, start, end, params=self.params
        )

    def inside(self, start: int, end: int) -> dict[int, int]:
        """The values a command substitution's text holds, directly or through the
        variables it reads (its output may be any of their characters)."""
        found: dict[int, int] = {}
        for match in _SENTINEL.finditer(self.text, start, end):
            index = int(match.group(1))
            if index < len(self.refs) and _may_matter(self.refs[index]):
                found[index] = 0
        for match in _READS.finditer(self.text, start, end):
            name = match.group(1) or match.group(2)
            name = "@" if name[0].isdigit() or name in "@*" else name
            for index in self.holds(name):
                found[index] = 0
        return found

    def levels(self, start: int, end: int, *, split: bool) -> list[_Level]:
        """What of each value the word ``text[start:end]`` may begin with, part by part.
        ``split``: unquoted expansions are split into words there (an array's elements,
        ``for``, an option word)."""
        out: list[_Level] = []
        lead = group = True  # nothing but quotes (and empty values) so far
        outer = ""
        for part in self.parts(start, end):
            if part.kind == "quote":
                continue
            if not part.nested:
                group = lead
                outer = part.name if part.kind == "var" else ""
            first = group
            if part.kind == "text":
                lead = False
                continue
            splits = split and not part.quoted
            if part.kind == "ref":
                index = int(part.name) if part.name else -1
                if 0 <= index < len(self.refs):
                    ref = self.refs[index]
                    if _may_matter(ref):
                        out.append(_Level(part, index, LEAD if first else 0, outer))
                    if not part.nested:
                        lead = first and not ref.value
                continue
            if part.kind == "var":
                for index, level in list(self.holds(part.name).items()):
                    if part.trims:
                        # the operator worked out on the value where the variable begins
                        # with it (``${f##*/}`` of `dir/my-file`: `my-file`); else any
                        # character of it may begin what is left
                        derived = self._derive(index, part.op) if level >= LEAD else None
                        if derived is not None:
                            index = derived
                            level = LEAD if first else 0
                            if splits:
                                level = max(level, WORDS)
                        else:
                            level = ANY if first or splits else 0
                    else:
                        level = level if first else 0
                        if splits:
                            level = max(level, WORDS)
                    out.append(_Level(part, index, level, outer))
            elif part.kind == "sub":
                # its output: taken to begin with one of the value's words (a command
                # that cuts a word, basename or cut, is not followed: a value with a
                # '-' inside a word would be refused wherever it went)
                for index in self.inside(part.start, part.end):
                    out.append(_Level(part, index, WORDS if first or splits else 0, outer))
            if not part.nested and not may_be_empty(self.text, part):
                lead = False  # an expansion that may be empty leaves what follows first
        return out

    def follow(self) -> Taint:
        """The taint of every variable the text assigns, to a fixed point (a variable
        copied from another is followed through any number of copies)."""
        flows = self.scanned.flows
        changed = True
        while changed:
            changed = False
            for flow in flows:
                got = self.taint.setdefault(flow.name, {})
                found: dict[int, int] = {}
                for start, end in flow.sources:
                    for _, index, level, _ in self.levels(start, end, split=flow.split):
                        _merge(found, index, max(level, flow.floor))
                if flow.also == ANY_VARIABLE and flow.floor:
                    # an eval whose text is not known: any value, at any character
                    for index in self.holds(ANY_VARIABLE):
                        _merge(found, index, flow.floor)
                elif flow.also and flow.also != ANY_VARIABLE:
                    # taken whole; what an eval's text copies, at any character
                    for index, level in self.holds(flow.also).items():
                        _merge(found, index, max(level, flow.floor))
                for index, level in found.items():
                    changed = _merge(got, index, level) or changed
        return self.taint


def _option_in(value: str, level: int, *, any_split: bool, cut: str = "") -> str | None:
    """The word of ``value`` a command would read as an option when the variable may
    begin with it at ``level`` (None: none). ``any_split``: the text changes IFS, so
    a value's words may begin after any character; ``cut``: what is left begins only
    where the value does or right after this character (``${f##*/}``)."""
    if cut and level >= ANY:
        starts = [value] + [value[k + 1 :] for k, c in enumerate(value) if c == cut]
        words = [start.split()[0] if start.split() else start for start in starts]
    elif level >= ANY or (level == WORDS and any_split):
        starts = [value[k:] for k, c in enumerate(value) if c == "-"]
        words = [start.split()[0] if start.split() else start for start in starts]
    elif level == WORDS:
        words = value.split()
    elif level == LEAD:
        words = [value]
    else:
        return None
    return next((w for w in words if w.startswith("-") and w != "-"), None)


def variable_options(
    text: str, scanned: Scan, refs: Sequence[Ref], echo_option: re.Pattern[str]
) -> list[VariableOption]:
    """Each word a command may read as an option (``scanned.options``) that a variable
    may begin with a value's word beginning with ``-`` (``"$m"``, ``${a[@]}``, an
    unquoted ``$v`` split into words, ``${v#*/}``), and each default or alternative
    word of an expansion that may begin it (``"${v:-$[[m]]}"``). ``echo_option``:
    the words ``echo`` reads as its options (it prints every other)."""
    if not (scanned.options or scanned.eval_options) or not any(_may_matter(ref) for ref in refs):
        return []  # most commands: no value there could make an option at all
    reader = _Reader(text, scanned, refs)
    if scanned.flows:
        reader.follow()
    any_split = "IFS" in reader.taint
    found: list[VariableOption] = []
    for start, end, command in scanned.options:
        if command in DECLARES and ASSIGNMENT.match(text, start, end):
            # `local a=$1`: an assignment, not split (bash reads it as one), and begun
            # by the variable's name
            continue
        for part, index, level, variable in reader.levels(start, end, split=True):
            if part.kind == "ref" and not part.nested:
                continue  # the value itself: values.check_options
            cut = part.cut if part.kind == "var" and part.trims else ""
            option = _option_in(reader.value(index), level, any_split=any_split, cut=cut)
            if option is None:
                continue
            if command == "echo" and echo_option.fullmatch(option.split()[0]) is None:
                continue
            default = part.kind == "ref"  # a value in ${v:-...}: nested, never in v
            ref = reader.origin(index)
            found.append(VariableOption(start, end, command, variable, ref, option, default))
    for start, end, command, variable, begins in scanned.eval_options:
        # a constant eval text's word: the variable begins it (its levels), or is
        # split inside it (any of its words after the first may begin one)
        for index, level in reader.holds(variable).items():
            at = level if begins else max(level, WORDS)
            option = _option_in(reader.value(index), at, any_split=any_split)
            if option is not None:
                ref = reader.origin(index)
                found.append(VariableOption(start, end, command, variable, ref, option))
    return found
