"""The shell lexer: the quoting context at a position ('@' marks the position)."""

from __future__ import annotations

import pytest

from flowbatch.render.shellctx import Ctx, context_at, scan

CASES = [
    ("echo @", Ctx.UNQUOTED),
    ('echo "a @ b"', Ctx.DOUBLE),
    ("echo 'a @ b'", Ctx.SINGLE),
    ("echo $'a \\' @'", Ctx.SINGLE),
    ("echo $'a' @", Ctx.UNQUOTED),
    ('echo "$\'a @"', Ctx.DOUBLE),  # $' is not special inside double quotes
    ("echo '\"' @", Ctx.UNQUOTED),
    ('echo "\'" @', Ctx.UNQUOTED),
    ('echo "\\"@"', Ctx.DOUBLE),
    ("echo \\'@", Ctx.UNQUOTED),
    ("echo \\@", Ctx.ESCAPED),
    ('echo "\\@"', Ctx.ESCAPED),
    ('echo "a $(b @)"', Ctx.UNQUOTED),
    ('echo "a $(b "@")"', Ctx.DOUBLE),
    ("echo \"a $(b '@')\"", Ctx.SINGLE),
    ('echo "$(b ")" @)"', Ctx.UNQUOTED),
    ('echo "$(b)" @', Ctx.UNQUOTED),
    ('echo "$(b) @"', Ctx.DOUBLE),
    ("echo $(a $(b @) c)", Ctx.UNQUOTED),
    ('echo $(a "$(b @)" "@x")', Ctx.UNQUOTED),
    ("echo $(a (b) @)", Ctx.UNQUOTED),
    ("echo $(echo ')' @)", Ctx.UNQUOTED),
    ("echo \"$(echo ')')@\"", Ctx.DOUBLE),
    ('echo "$(echo "$(echo \'@\')")"', Ctx.SINGLE),
    ('echo "a `b @`"', Ctx.UNQUOTED),
    ('echo "a `b` @"', Ctx.DOUBLE),
    ("echo `b '@'`", Ctx.SINGLE),
    ("echo `b` @", Ctx.UNQUOTED),
    ("echo $((1 << 2)) @", Ctx.UNQUOTED),
    ('echo "$((1 + 2)) @"', Ctx.DOUBLE),
    ("echo ${#a[*]} @", Ctx.UNQUOTED),
    ("echo a # c @", Ctx.COMMENT),
    ("# c @", Ctx.COMMENT),
    ("echo a#@", Ctx.UNQUOTED),
    ("echo a;# @", Ctx.COMMENT),
    ("echo a # ' c\necho @", Ctx.UNQUOTED),
    ('echo "# @"', Ctx.DOUBLE),
    ("echo $(a # ) @\n)", Ctx.COMMENT),
    ("cat <<EOF\n@\nEOF", Ctx.DOUBLE),
    ("cat <<EOF\n'@'\nEOF", Ctx.DOUBLE),  # quotes are text in a heredoc body
    ("cat <<'EOF'\n@\nEOF", Ctx.SINGLE),
    ('cat <<"EOF"\n@\nEOF', Ctx.SINGLE),
    ("cat <<\\EOF\n@\nEOF", Ctx.SINGLE),
    ("cat <<-EOF\n\t@\n\tEOF\n", Ctx.DOUBLE),
    ("cat <<EOF\nx\nEOF\necho @", Ctx.UNQUOTED),
    ("cat <<A; cat <<'B'\na\nA\n@\nB\n", Ctx.SINGLE),
    ("cat <<A; cat <<'B'\n@\nA\nb\nB\n", Ctx.DOUBLE),
    ("cat <<< @", Ctx.UNQUOTED),
    ("cat <<EOF | grep '@'\nx\nEOF", Ctx.SINGLE),
    ("a\\\n@", Ctx.UNQUOTED),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_context_at(text: str, expected: Ctx) -> None:
    pos = text.index("@")
    assert context_at(text, pos) is expected
    assert scan(text).problem is None


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ('echo "abc', "double quote"),
        ("echo 'abc", "single quote"),
        ("echo $'abc", "$'"),
        ("echo $(abc", "'$('"),
        ("echo $((1+2)", "'$(('"),
        ("echo `abc", "backtick"),
        ("echo abc \\", "backslash"),
        ("cat <<EOF\nbody", "not terminated"),
        ("cat <<EOF", "no body"),
    ],
)
def test_incomplete_text_is_reported(text: str, word: str) -> None:
    problem = scan(text).problem
    assert problem is not None and word in problem


def test_every_character_has_a_context() -> None:
    text = "a 'b' \"c $(d) `e`\" # f\ncat <<X\ng\nX\n"
    assert len(scan(text).contexts) == len(text)


def test_end_position() -> None:
    assert context_at('echo "a', 7) is Ctx.DOUBLE
    assert context_at("echo a", 6) is Ctx.UNQUOTED


def test_a_text_is_lexed_once_and_its_scan_cannot_be_changed() -> None:
    """Every run of a template scans the same command texts (values stand in them as
    sentinels): the scan is remembered, and shared, so nothing may change it."""
    text = 'echo "$x" > out.txt'
    first = scan(text)
    assert scan(text) is first
    assert isinstance(first.contexts, tuple)
    with pytest.raises(AttributeError):
        first.problem = "changed"  # type: ignore[misc]
