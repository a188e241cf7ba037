"""A small bash lexer: the quoting context of every character of a command text.

Rendering needs one fact about each placeholder: how the shell will read the text that
replaces it. Unquoted text is split into words and globbed, text inside ``"..."`` is
expanded but not split, text inside ``'...'`` (or ``$'...'``, or a here-document with a
quoted delimiter) is not expanded at all, a comment is not read, and a character right
after a backslash is escaped. This module answers that question without running bash.

It follows bash's rules for quotes, backslashes, ``$(...)``, ``$((...))``, backticks
(a new unquoted context, even inside double quotes, nested to any depth), ``#`` comments
at the start of a word and here-documents. Known simplifications: a ``case`` pattern's
bare ``)`` inside ``$(...)`` ends the substitution early, ``$(...)`` inside an expanding
here-document body is reported as that body's (double-quote-like) context, and ``<<`` in
an arithmetic command ``(( ... ))`` (not ``$((...))``) is taken for a here-document.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum


class Ctx(StrEnum):
    """How the shell reads a character."""

    UNQUOTED = "unquoted"
    DOUBLE = "double"  # inside "...", or the body of an expanding here-document
    SINGLE = "single"  # inside '...' or $'...', or a literal here-document body
    ESCAPED = "escaped"  # right after a backslash that escapes it
    COMMENT = "comment"


#: characters after which a ``#`` starts a comment (bash metacharacters and newline)
_WORD_BREAK = frozenset(" \t\n;&|()<>")
#: characters that end a here-document delimiter word
_DELIM_END = frozenset(" \t\n;&|()<>")


@dataclass
class _Frame:
    """One level of nesting: ``top``, ``cmdsub`` ($(...)), ``arith`` ($((...))),
    ``backtick``, ``double``, ``single`` or ``ansi`` ($'...')."""

    kind: str
    depth: int = 0  # open parentheses inside a cmdsub/arith frame


@dataclass
class _Heredoc:
    delimiter: str
    strip_tabs: bool  # <<-
    literal: bool  # the delimiter was quoted: no expansion in the body


@dataclass(frozen=True)
class Scan:
    """The result of :func:`scan`: one context per character, and whether the text
    ends back at the top level (``problem`` says why not). Shared by every caller that
    scans the same text (:func:`scan` remembers it): never changed."""

    contexts: tuple[Ctx, ...]
    problem: str | None = None


_UNQUOTED_KINDS = frozenset({"top", "cmdsub", "arith", "backtick"})
_OPEN_NAMES = {
    "cmdsub": "a '$(' without its ')'",
    "arith": "a '$((' without its '))'",
    "backtick": "a backtick without its closing backtick",
    "double": "a double quote without its closing quote",
    "single": "a single quote without its closing quote",
    "ansi": "a $'...' quote without its closing quote",
}


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.ctx = [Ctx.UNQUOTED] * len(text)
        self.stack = [_Frame("top")]
        self.pending: list[_Heredoc] = []
        self.problem: str | None = None
        self.i = 0

    # -- helpers -------------------------------------------------------------------
    def peek(self, offset: int = 1) -> str:
        j = self.i + offset
        return self.text[j] if j < len(self.text) else ""

    def mark(self, start: int, end: int, ctx: Ctx) -> None:
        for k in range(start, min(end, len(self.text))):
            self.ctx[k] = ctx

    def escape(self, ctx: Ctx) -> None:
        """A backslash: it is read in ``ctx``; the next character is escaped."""
        self.ctx[self.i] = ctx
        if self.i + 1 >= len(self.text):
            self.problem = "the command ends with a backslash"
        else:
            self.ctx[self.i + 1] = Ctx.ESCAPED
        self.i += 2

    # -- main loop -----------------------------------------------------------------
    def run(self) -> Scan:
        while self.i < len(self.text):
            kind = self.stack[-1].kind
            if kind in _UNQUOTED_KINDS:
                self.step_unquoted(self.stack[-1])
            elif kind == "double":
                self.step_double()
            else:
                self.step_single(ansi=kind == "ansi")
        if self.problem is None and len(self.stack) > 1:
            self.problem = f"unterminated: {_OPEN_NAMES[self.stack[-1].kind]}"
        if self.problem is None and self.pending:
            self.problem = f"here-document '{self.pending[0].delimiter}' has no body"
        return Scan(tuple(self.ctx), self.problem)

    def step_unquoted(self, frame: _Frame) -> None:
        text, i, c = self.text, self.i, self.text[self.i]
        self.ctx[i] = Ctx.UNQUOTED
        if c == "\\":
            self.escape(Ctx.UNQUOTED)
            return
        self.i += 1
        if c == "#" and (i == 0 or text[i - 1] in _WORD_BREAK) and frame.kind != "arith":
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            self.mark(i, end, Ctx.COMMENT)
            self.i = end  # the newline itself is read normally (it may start heredocs)
        elif c == "'":
            self.stack.append(_Frame("single"))
        elif c == '"':
            self.stack.append(_Frame("double"))
        elif c == "`":
            self.backtick(frame)
        elif c == "$":
            self.dollar()
        elif c == "(" and frame.kind in ("cmdsub", "arith"):
            frame.depth += 1
        elif c == ")" and frame.kind in ("cmdsub", "arith"):
            self.close_paren(frame)
        elif c == "<" and text.startswith("<", self.i) and frame.kind != "arith":
            self.heredoc_operator()
        elif c == "\n" and self.pending:
            self.heredoc_bodies()

    def backtick(self, frame: _Frame) -> None:
        if frame.kind == "backtick":
            self.stack.pop()
        else:
            self.stack.append(_Frame("backtick"))

    def dollar(self) -> None:
        """After a ``$`` outside single quotes: ``$'``, ``$((`` or ``$(`` open a frame."""
        nxt = self.peek(0)
        if nxt == "'" and self.stack[-1].kind != "double":
            self.ctx[self.i] = self.ctx[self.i - 1]
            self.i += 1
            self.stack.append(_Frame("ansi"))
        elif nxt == "(":
            self.ctx[self.i] = self.ctx[self.i - 1]
            if self.peek(1) == "(":
                self.ctx[self.i + 1] = Ctx.UNQUOTED
                self.i += 2
                self.stack.append(_Frame("arith"))
            else:
                self.i += 1
                self.stack.append(_Frame("cmdsub"))

    def close_paren(self, frame: _Frame) -> None:
        if frame.depth:
            frame.depth -= 1
        elif frame.kind == "cmdsub":
            self.stack.pop()
        elif self.peek(0) == ")":  # arith ends with '))'
            self.ctx[self.i] = Ctx.UNQUOTED
            self.i += 1
            self.stack.pop()

    def step_double(self) -> None:
        c = self.text[self.i]
        self.ctx[self.i] = Ctx.DOUBLE
        if c == "\\":
            self.escape(Ctx.DOUBLE)
            return
        self.i += 1
        if c == '"':
            self.stack.pop()
        elif c == "`":
            self.stack.append(_Frame("backtick"))
        elif c == "$":
            self.dollar()

    def step_single(self, *, ansi: bool) -> None:
        c = self.text[self.i]
        self.ctx[self.i] = Ctx.SINGLE
        if ansi and c == "\\":
            self.escape(Ctx.SINGLE)
            return
        self.i += 1
        if c == "'":
            self.stack.pop()

    # -- here-documents --------------------------------------------------------------
    def heredoc_operator(self) -> None:
        """At ``<<`` (self.i is on the second ``<``): read the delimiter word."""
        text = self.text
        self.ctx[self.i] = Ctx.UNQUOTED
        self.i += 1
        if text.startswith("<", self.i):  # '<<<' is a here-string, not a heredoc
            self.ctx[self.i] = Ctx.UNQUOTED
            self.i += 1
            return
        strip_tabs = text.startswith("-", self.i)
        if strip_tabs:
            self.i += 1
        while self.i < len(text) and text[self.i] in " \t":
            self.i += 1
        word, literal = [], False
        while self.i < len(text) and text[self.i] not in _DELIM_END:
            ch = text[self.i]
            if ch in "'\"":
                literal = True
                end = text.find(ch, self.i + 1)
                end = len(text) if end < 0 else end
                word.append(text[self.i + 1 : end])
                self.i = end + 1
            elif ch == "\\":
                literal = True
                word.append(text[self.i + 1 : self.i + 2])
                self.i += 2
            else:
                word.append(ch)
                self.i += 1
        if word:
            self.pending.append(_Heredoc("".join(word), strip_tabs, literal))

    def heredoc_bodies(self) -> None:
        """After the newline that ends a line with ``<<`` operators: skip their bodies."""
        text = self.text
        for doc in self.pending:
            while True:
                if self.i >= len(text):
                    self.problem = f"here-document '{doc.delimiter}' is not terminated"
                    self.pending = []
                    return
                end = text.find("\n", self.i)
                end = len(text) if end < 0 else end
                line = text[self.i : end]
                if (line.lstrip("\t") if doc.strip_tabs else line) == doc.delimiter:
                    self.i = end + 1
                    break
                self.body_line(self.i, end, doc.literal)
                self.i = end + 1
        self.pending = []

    def body_line(self, start: int, end: int, literal: bool) -> None:
        if literal:
            self.mark(start, end + 1, Ctx.SINGLE)
            return
        k = start
        while k < end:
            self.ctx[k] = Ctx.DOUBLE
            if self.text[k] == "\\" and k + 1 < end:
                self.ctx[k + 1] = Ctx.ESCAPED
                k += 1
            k += 1
        if end < len(self.text):
            self.ctx[end] = Ctx.DOUBLE


@functools.lru_cache(maxsize=256)
def scan(text: str) -> Scan:
    """Lex ``text`` as bash and return the context each character is read in.

    Remembered for the last texts scanned: each run of a template scans the same
    commands (values stand in them as sentinels, not as text), two or more a run.

    A quote character is read in the context outside it (the opening ``"`` of
    ``"a"`` is unquoted, ``a`` is double). ``problem`` is set when the text does not
    end at the top level (an open quote or substitution, a trailing backslash, a
    here-document without its delimiter line): pasted into a script, such a text would
    swallow what follows it.
    """
    return _Lexer(text).run()


def context_at(text: str, pos: int) -> Ctx:
    """The context of the character at ``pos`` (``pos == len(text)``: the end state)."""
    if pos < len(text):
        return scan(text).contexts[pos]
    probe = scan(text + "x")
    return probe.contexts[pos]
