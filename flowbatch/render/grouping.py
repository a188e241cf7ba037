"""Whether a command of ``run.sh`` needs its own subshell, or may run in a brace group.

``run.sh`` runs each command of a step in a subshell, ``( ... )``: whatever the command
does to the shell (``cd``, ``exit``, a variable, ``set``, a trap, an open descriptor)
ends with it, as with flowServ's shell per command. That subshell is a fork of bash. A
command that starts a program pays nothing for it (bash execs the subshell's last
command in the forked process, and a brace group would fork for the program anyway);
a command made only of shell builtins (``echo ... > file``, ``printf ...``, ``test``)
pays the fork alone, about a millisecond of CPU, more than the command itself.

:func:`needs_subshell` says ``False`` only for text it can prove is made of builtins
that leave the shell as they found it; everything else keeps the subshell. The proof is
a small whitelist grammar:

- a list of simple commands joined by ``;``, ``&&``, ``||``, ``|``, ``|&`` or newlines,
  with ``#`` comments and backslash-newline continuations;
- words made of plain characters, ``'...'`` and ``"..."`` quotes and backslash escapes;
  the only expansions are reads of a variable (``$NAME``, ``${NAME}``, ``$?``, ``$1``
  ...): no ``${x:=...}`` (it assigns), no ``$(...)``, ``$((...))`` or backticks, no
  ``$'...'``;
- redirections of a single command (``>``, ``>>``, ``<``, ``2>&1``, ``&>``, ...), which
  bash undoes after it: no here-document, no ``{fd}>`` (it keeps the descriptor open);
- each command's name is a literal word, one of the builtins that change nothing:
  ``echo``, ``printf`` (with a literal format first, so never ``-v``), ``test``, ``[``,
  ``true``, ``false``, ``:``, ``pwd`` (no assignment ``x=1``, no program, no other
  builtin or keyword, not the script's own ``fb_`` functions);
- no ``(``, ``)``, ``{``, ``}`` and no lone ``&`` (a background job).

Anything the grammar does not know (a keyword, an unknown quote, an unterminated one)
keeps the subshell: a wrong "needs one" costs a fork, a wrong "needs none" would change
the script, so every doubt goes one way. One thing is known only where the script runs:
an inherited function (``export -f``) named like one of those builtins. ``run.sh``
checks for one at its start and then runs every command in its subshell
(:data:`GROUP_GUARD`).
"""

from __future__ import annotations

import functools
import re

#: builtins that read the shell's state at most: safe in the script's own shell
_HARMLESS = frozenset({"echo", "printf", "test", "[", "true", "false", ":", "pwd"})

#: ``run.sh`` text that sets ``fb_group`` to 1 unless one of those builtins is shadowed
#: by a function the script inherited (then every command keeps its subshell)
GROUP_GUARD = (
    "fb_group=1\n"
    f"for fb_name in {' '.join(repr(n) for n in sorted(_HARMLESS))}; do\n"
    '  declare -F -- "$fb_name" >/dev/null && fb_group=0\n'
    "done\n"
)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPECIAL_PARAMS = frozenset("?#$!@*-0123456789")
#: characters that end an unquoted word
_BREAK = frozenset(" \t\n;&|<>()")
#: operators that end a simple command
_CONTROL = frozenset({";", "\n", "&&", "||", "|", "|&"})


class _Unsafe(Exception):
    """The text is outside the grammar: keep the subshell."""


@functools.lru_cache(maxsize=1024)
def needs_subshell(command: str) -> bool:
    """``True`` unless ``command`` is provably free of effects on the running shell."""
    try:
        return not _Parser(command).parse()
    except _Unsafe:
        return True


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0

    def parse(self) -> bool:
        """Walk the text; ``True`` if it held at least one command (an empty group is a
        syntax error in bash, as an empty subshell is: leave those as they are)."""
        commands = 0
        words: list[tuple[str, bool]] = []  # (value, literal) of the current command
        redirected = False  # the current command has a redirection
        target = False  # the next word is a redirection's target
        pending = False  # after '&&', '||' or a pipe: a command must follow
        text = self.text
        if text.endswith("\\\n"):  # would join the group's closing '}' to its last line
            raise _Unsafe("a line continuation at the end")
        while True:
            self._blank()
            if self.i >= len(text):
                break
            if text[self.i] == "#":  # a comment: to the end of the line
                end = text.find("\n", self.i)
                self.i = len(text) if end < 0 else end
                continue
            operator = self._operator()
            if operator is None:
                value, literal = self._word()
                if target:
                    target = False
                else:
                    words.append((value, literal))
            elif target:
                raise _Unsafe("a redirection without its target")
            elif operator in _CONTROL:
                if words or redirected:
                    self._command(words)
                    commands += 1
                    words, redirected = [], False
                    pending = operator not in {";", "\n"}
                elif operator != "\n":  # a blank line, or a line break after '&&'
                    raise _Unsafe(f"{operator!r} without a command before it")
            else:
                target = redirected = True
        if words or redirected:
            self._command(words)
            commands += 1
            pending = False
        if target or pending:
            raise _Unsafe("the text ends in the middle of a command")
        return commands > 0

    # -- pieces --------------------------------------------------------------------
    def _blank(self) -> None:
        text = self.text
        while self.i < len(text):
            if text[self.i] in " \t":
                self.i += 1
            elif text.startswith("\\\n", self.i):
                self.i += 2
            else:
                return

    def _operator(self) -> str | None:
        """A control or redirection operator at the cursor (consumed), else ``None``."""
        text, i = self.text, self.i
        c = text[i]
        if c in "\n;":
            if text.startswith(";;", i):
                raise _Unsafe("';;'")
            self.i += 1
            return c
        if c in "()":
            raise _Unsafe("a subshell or a function")
        if c == "&":
            for op in ("&&", "&>>", "&>"):
                if text.startswith(op, i):
                    self.i += len(op)
                    return op
            raise _Unsafe("a background job")
        if c == "|":
            op = "||" if text.startswith("||", i) else "|&" if text.startswith("|&", i) else "|"
            self.i += len(op)
            return op
        j = i
        while j < len(text) and text[j].isdigit():
            j += 1
        if j < len(text) and text[j] in "<>":
            if text.startswith("<<", j):
                raise _Unsafe("a here-document or here-string")
            for op in (">>", ">&", ">|", "<>", "<&", ">", "<"):
                if text.startswith(op, j):
                    self.i = j + len(op)
                    return op
        return None  # digits that start a word

    def _word(self) -> tuple[str, bool]:
        """One word: its value with quotes removed, and whether it is literal (no
        expansion in it)."""
        text = self.text
        out: list[str] = []
        literal = True
        while self.i < len(text):
            c = text[self.i]
            if c in _BREAK:
                break
            if c in "{}`":
                raise _Unsafe(f"'{c}'")
            if c == "\\":
                if self.i + 1 >= len(text):
                    raise _Unsafe("a trailing backslash")
                if text[self.i + 1] != "\n":
                    out.append(text[self.i + 1])
                self.i += 2
            elif c == "'":
                end = text.find("'", self.i + 1)
                if end < 0:
                    raise _Unsafe("an open single quote")
                out.append(text[self.i + 1 : end])
                self.i = end + 1
            elif c == '"':
                literal = self._double(out) and literal
            elif c == "$":
                literal = self._dollar(out)
            else:
                out.append(c)
                self.i += 1
        return "".join(out), literal

    def _double(self, out: list[str]) -> bool:
        """A ``"..."`` quote; ``True`` if nothing in it is expanded."""
        text = self.text
        self.i += 1
        literal = True
        while self.i < len(text):
            c = text[self.i]
            if c == '"':
                self.i += 1
                return literal
            if c == "`":
                raise _Unsafe("a backtick")
            if c == "\\" and self.i + 1 < len(text):
                nxt = text[self.i + 1]
                if nxt in '$`"\\\n':
                    if nxt != "\n":
                        out.append(nxt)
                else:
                    out.append("\\" + nxt)
                self.i += 2
            elif c == "$":
                literal = self._dollar(out)
            else:
                out.append(c)
                self.i += 1
        raise _Unsafe("an open double quote")

    def _dollar(self, out: list[str]) -> bool:
        """A ``$`` at the cursor: only a plain read of a variable passes (its value
        stands as ``$`` in ``out``). ``False``: the word is no longer literal."""
        text = self.text
        nxt = text[self.i + 1] if self.i + 1 < len(text) else ""
        if nxt == "{":
            end = text.find("}", self.i + 2)
            if end < 0 or not _NAME.fullmatch(text[self.i + 2 : end]):
                raise _Unsafe("a '${...}' that is more than a variable's name")
            self.i = end + 1
        elif nxt in _SPECIAL_PARAMS:
            self.i += 2
        else:
            match = _NAME.match(text, self.i + 1)
            if match is None:
                raise _Unsafe("a '$' that is not a variable")
            self.i = match.end()
        out.append("$")
        return False

    def _command(self, words: list[tuple[str, bool]]) -> None:
        """Check one simple command's words (none: only redirections, ``> file``)."""
        if not words:
            return
        name, literal = words[0]
        if not literal or not name:
            raise _Unsafe("a command name that is not a literal word")
        if name not in _HARMLESS:
            # a program (forked either way), an assignment, any other builtin or keyword
            raise _Unsafe(f"{name!r} is not a builtin known to change nothing")
        # printf with a literal format first: never an option such as -v (it assigns)
        if name == "printf" and (len(words) < 2 or not words[1][1] or words[1][0].startswith("-")):
            raise _Unsafe("printf without a literal format first")
