"""Text a participant chose (file names, values), made fit for the index and the pages.

Python decodes a file name that is not valid UTF-8 with lone surrogates; such a string
cannot be written as UTF-8 (the index, run.json, a page), and a link to it reaches no
file."""

from __future__ import annotations

import os
from typing import Any


def is_text(value: Any) -> bool:
    """Whether ``value`` is a string of valid UTF-8 (no lone surrogate)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(name: str) -> str:
    """``name`` as valid UTF-8 text, for a message or the index: a file name that is not
    UTF-8 with its odd bytes written ``\\xff``, any other lone surrogate ``\\ud800``."""
    if is_text(name):
        return name
    try:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name decodes to (a \ud800 escape)
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def short_repr(value: Any, limit: int = 200) -> str:
    """``repr(value)`` for an error message, cut at ``limit`` characters: a hostile request
    or result may hold a megabyte in one value, and an error is for people. An int of more
    digits than Python writes out (4300) is described by its size."""
    try:
        text = repr(value)
    except ValueError:
        return f"an integer of {value.bit_length()} bits"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


#: control characters (C0, DEL, C1, and Unicode's line and paragraph separators) as
#: escapes, for text that came from a participant
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))} | {
    0x0A: "\\n",
    0x0D: "\\r",
    0x09: "\\t",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}
#: the same but newline and tab, which a terminal shows as lines and spaces
_CONTROL_IN_LINES = {c: e for c, e in _CONTROL.items() if c not in (0x09, 0x0A)}


def one_line(text: str) -> str:
    """``text`` with every control character escaped, newlines too: a request named
    ``x<newline>2026-... INFO flowbatch...`` cannot forge a line of the log, nor a file's
    name a row of a table (found by review)."""
    return text if text.isprintable() else text.translate(_CONTROL)


def for_terminal(text: str) -> str:
    """``text`` with its control characters but newlines and tabs escaped: a
    participant's words (a run's messages, string results, a step's stderr) cannot clear
    an admin's screen, set its title or fake a line (found by review)."""
    return text if text.isprintable() else text.translate(_CONTROL_IN_LINES)
