"""Where the capture groups of a bash regular expression may begin.

``[[ $v =~ RE ]]`` puts the part of ``$v`` that ``RE`` matched in ``BASH_REMATCH[0]``
and the part each group matched in ``BASH_REMATCH[1]``... A participant's value tested
so is copied there: the options check follows it (:mod:`~flowbatch.render.taint`). To
refuse no more than it must, this module reads the expression (POSIX extended, as
bash's ``regcomp`` does) for two facts about each group, which hold whatever the value
and whichever match the regex engine picks (POSIX's leftmost-longest or another):

- whether what the group matched may begin with ``-``: its first character is one the
  group's first element can match (``([0-9]+)`` never begins with ``-``, ``(.*)`` may);
- whether it begins where the value does: the group opens the expression after ``^``
  (``^(.+)\\.csv$``), and neither it nor a group around it repeats (``^(a-)+``
  captures its last round).

An expression this does not read (a back-reference, ``\\w``, a bracket's collating
element) is read as one whose groups may begin with ``-`` anywhere: never less.
"""

from __future__ import annotations

from typing import NamedTuple


class Capture(NamedTuple):
    """A capture group (0: the whole match): whether what it matched may begin with
    ``-``, and whether it begins where the tested text does."""

    dash: bool
    anchored: bool


class _Unknown(Exception):
    """An expression (or a part of it) not read here."""


#: character classes with no ``-`` in them, and those with one
_NO_DASH = frozenset({"alpha", "digit", "alnum", "upper", "lower", "space", "blank", "cntrl"})
_NO_DASH |= {"xdigit"}
_DASH = frozenset({"punct", "graph", "print"})
_SPECIAL = frozenset("|)*+?{")

# the state before an element: no element read yet and no '^' (the match may begin
# anywhere), right after '^' at the expression's start, or anywhere else
_BEGIN, _ANCHORED, _LOOSE = "begin", "anchored", "loose"


class _Parser:
    def __init__(self, regex: str) -> None:
        self.regex = regex
        self.i = 0
        #: per group: may begin with '-', begins where the text does
        self.groups: list[list[bool]] = []

    def peek(self) -> str:
        return self.regex[self.i] if self.i < len(self.regex) else ""

    def alternation(self, state: str) -> tuple[bool, bool]:
        """Alternatives up to a ``)`` or the end: (may begin with '-', may be empty)."""
        dash, empty = self.sequence(state)
        while self.peek() == "|":
            self.i += 1
            more_dash, more_empty = self.sequence(state)
            dash, empty = dash or more_dash, empty or more_empty
        return dash, empty

    def sequence(self, state: str) -> tuple[bool, bool]:
        dash, empty = False, True  # what the elements read so far may begin with
        while self.i < len(self.regex) and self.peek() not in "|)":
            first_group = len(self.groups)
            element_dash, element_empty, after = self.element(state)
            optional, repeats = self.quantifier()
            if repeats:  # a group repeated captures its last round: anywhere
                for group in self.groups[first_group:]:
                    group[1] = False
            if empty:
                dash = dash or element_dash
            empty = empty and (element_empty or optional)
            state = after if not optional else _LOOSE
        return dash, empty

    def quantifier(self) -> tuple[bool, bool]:
        """The quantifiers after an element: (it may be absent, it may repeat)."""
        optional = repeats = False
        while self.peek() in ("*", "+", "?", "{"):
            c = self.peek()
            self.i += 1
            if c == "{":
                close = self.regex.find("}", self.i)
                low, _, high = self.regex[self.i : close].partition(",")
                if close < 0 or not low.isdigit() or not (high.isdigit() or high == ""):
                    raise _Unknown
                bounded = "," not in self.regex[self.i : close]
                optional = optional or int(low) == 0
                top = int(low) if bounded else (int(high) if high else None)
                repeats = repeats or top is None or top > 1
                self.i = close + 1
            else:
                optional = optional or c in "*?"
                repeats = repeats or c in "*+"
        return optional, repeats

    def element(self, state: str) -> tuple[bool, bool, str]:
        """One element: (may begin with '-', may be empty, the state after it)."""
        c = self.peek()
        self.i += 1
        if c == "(":
            index = len(self.groups)
            self.groups.append([True, state == _ANCHORED])
            dash, empty = self.alternation(_ANCHORED if state == _ANCHORED else _LOOSE)
            if self.peek() != ")":
                raise _Unknown
            self.i += 1
            self.groups[index][0] = dash
            return dash, empty, _LOOSE
        if c == "^":
            return False, True, _ANCHORED if state in (_BEGIN, _ANCHORED) else state
        if c == "$":
            return False, True, _LOOSE
        if c == ".":
            return True, False, _LOOSE
        if c == "[":
            return self.bracket(), False, _LOOSE
        if c == "\\":
            escaped = self.peek()
            self.i += 1
            if not escaped or escaped.isalnum():
                raise _Unknown  # \w, \b, a back-reference: not read here
            return escaped == "-", False, _LOOSE
        if c in _SPECIAL:
            raise _Unknown  # a quantifier with nothing before it
        return c == "-", False, _LOOSE

    def bracket(self) -> bool:
        """A bracket expression after its ``[``: whether it may match ``-``."""
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        has: bool | None = False  # whether '-' is in the set (None: not known)
        first = True
        while True:
            if self.i >= len(self.regex):
                raise _Unknown
            c = self.regex[self.i]
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            if c == "[" and self.regex[self.i + 1 : self.i + 2] in (":", "=", "."):
                kind = self.regex[self.i + 1]
                close = self.regex.find(kind + "]", self.i + 2)
                if close < 0:
                    raise _Unknown
                name = self.regex[self.i + 2 : close]
                self.i = close + 2
                if kind == ":" and name in _NO_DASH:
                    continue
                has = True if kind == ":" and name in _DASH else (has or None)
                continue
            end = self.regex[self.i + 2 : self.i + 3]
            if self.regex[self.i + 1 : self.i + 2] == "-" and end not in ("", "]"):
                self.i += 3  # a range
                if c.isalnum() and end.isalnum():
                    continue  # a range of letters or digits: no '-' in any locale
                # outside the code points, another locale's order may put '-' inside
                has = True if ord(c) <= ord("-") <= ord(end) else has or None
                continue
            self.i += 1
            if c == "-":
                has = True
        return has is not False if not negated else has is not True


def captures(regex: str) -> list[Capture] | None:
    """The whole match and each capture group of ``regex``, in order (see
    :class:`Capture`); None for an expression not read here."""
    parser = _Parser(regex)
    try:
        dash, _ = parser.alternation(_BEGIN)
    except _Unknown:
        return None
    if parser.i != len(regex):
        return None  # a ')' with no '(': not a valid expression
    whole = Capture(dash, regex.startswith("^") and _single(regex))
    return [whole] + [Capture(group[0], group[1]) for group in parser.groups]


def _single(regex: str) -> bool:
    """Whether ``regex`` has no ``|`` outside groups and brackets: its match then
    begins where its first alternative does."""
    depth, k = 0, 0
    while k < len(regex):
        c = regex[k]
        if c == "\\":
            k += 2
            continue
        if c == "[":
            k = _bracket_end(regex, k + 1)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            return False
        k += 1
    return True


def _bracket_end(regex: str, k: int) -> int:
    """Where the bracket expression opened before ``k`` ends (past its ``]``)."""
    if regex[k : k + 1] == "^":
        k += 1
    if regex[k : k + 1] == "]":
        k += 1
    while k < len(regex):
        if regex[k] == "[" and regex[k + 1 : k + 2] in (":", "=", "."):
            close = regex.find(regex[k + 1] + "]", k + 2)
            k = len(regex) if close < 0 else close + 2
            continue
        if regex[k] == "]":
            return k + 1
        k += 1
    return k
