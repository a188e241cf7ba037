"""The shell lexer: the quoting context at a position ('@' marks the position)."""

from __future__ import annotations

import subprocess

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
    # `@` begins a command there: a command's name is program text (codeflow)
    ("echo $(a (b) @)", Ctx.CODE),
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
    ("a\\\n@", Ctx.CODE),  # one word, `a@`: a command's name
    # an unquoted ${...} is one piece of its word: quotes and substitutions inside it
    ("echo ${v:-a @}", Ctx.UNQUOTED),
    ('echo ${v#"a @"}', Ctx.DOUBLE),
    ("echo ${v:-'a }@'}", Ctx.SINGLE),
    ("echo ${v:-$(b @)} x", Ctx.UNQUOTED),
    ('echo ${v/;python3 -c "@"/x}', Ctx.DOUBLE),  # a pattern, not a command after ';'
    ("cat <<E ${x:-a\n@}\nbody\nE", Ctx.UNQUOTED),  # the body begins after its line
    ("cat <<E ${x:-a\nb}\n@\nE", Ctx.DOUBLE),
    ('echo ${x:-<(python3 -c "@")}', Ctx.CODE),  # bash runs a process substitution there
    # bash ends a backtick substitution at its next backtick, even inside ${...}
    ('echo `a ${x:-` "@"', Ctx.DOUBLE),
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
        ("echo ${v:-a b", "'${' without its '}'"),
        ("echo ${a:-${b:-c} d", "'${' without its '}'"),
    ],
)
def test_incomplete_text_is_reported(text: str, word: str) -> None:
    problem = scan(text).problem
    assert problem is not None and word in problem


#: (text, the words bash reads after ``set --``): each unquoted ``${...}`` is one piece
#: of its word, whatever its operator holds
PARAMETER_WORDS = [
    ("${x:- -v} y", ["${x:- -v}", "y"]),
    ("${v/;/x} y", ["${v/;/x}", "y"]),
    ('${v:-a b} ${v#"x y"} ${a:-${b:-c d}}', ["${v:-a b}", '${v#"x y"}', "${a:-${b:-c d}}"]),
    ("${v/|/x}${v/&/x} ${v/</x}${v/>/x} ${v/(/x}${v/)/x}", None),
    ("${v/;;/x} ${v/&&/x} ${v/<<x/y} ${v/|&/x} ${v/#(/x}", None),
    ("${v:-a\nb} ${v:-{a b}} ${v:-\"}\" a} ${v:-'}' a} ${v:-\\} a}", None),
    ("${x:-$(( 1 + 2 ))} ${x:-$[ 1 + 2 ]} ${x:-$(echo a; echo b)} ${x:-`echo a b`}", None),
    ("${a[ 1 ]:- x} ${v: 1 : 2} ${x:-<(echo a b)} ${x:-$'a b'}", None),
    ("p${v:-a b}q ${x:-${y:-$(echo })}} ${x:-#a b}", None),
]


@pytest.mark.parametrize(("words", "expected"), PARAMETER_WORDS)
def test_an_unquoted_parameter_expansion_is_one_piece_of_its_word(
    words: str, expected: list[str] | None
) -> None:
    """bash splits the *result* of an unquoted ``${...}`` into words, not its text: a
    blank, ``;``, ``|``, ``&``, ``<``, ``>`` or a parenthesis inside it ends no word
    and is no operator (found by review: ``n=${f// /_}`` was not seen as an
    assignment). The words are the positional parameters ``set --`` gives values to,
    counted by bash itself where every expansion gives one word."""
    text = f"set -- {words}"
    lexed = scan(text)
    assert lexed.problem is None
    assert [flow.name for flow in lexed.flows] == ["@"]
    found = [text[start:end] for start, end in lexed.flows[0].sources]
    if expected is not None:
        assert found == expected
    assert " ".join(found) == words
    # with every variable set to one letter, each ${...} gives one word: bash counts them
    script = f"x=X v=VVVV a=A b=B y=Y; {text}; echo $#"
    counted = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert int(counted.stdout) == len(found), counted.stderr


def test_an_unquoted_assignment_holding_blanks_in_its_expansion_is_one() -> None:
    """``n=${f// /_}`` assigns ``n`` (and, in bash, ends no command at a ``;`` inside)."""
    text = 'n=${f// /_}; m=${v/;/x} touch "$n"; echo ${v/;o=x/y}'
    flows = [(f.name, [text[s:e] for s, e in f.sources]) for f in scan(text).flows]
    assert flows == [("n", ["${f// /_}"])]
    assert [text[s:e] for s, e in scan(text).params] == ["f// /_", "v/;/x", "v/;o=x/y"]


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


#: Ctx.ARITH's value (the tests compare by value, so each fails on its own without it)
ARITH = "arithmetic"
U, D, S = Ctx.UNQUOTED, Ctx.DOUBLE, Ctx.SINGLE

# (text, context, quoting): '@' marks the position; quoting is its context regardless of
# arithmetic, which chooses the reference of a token value there
ARITH_CASES = [
    # $(( ... )) at any depth, quotes and substitutions inside it included
    ("echo $(( @ + 1 ))", ARITH, U),
    ('echo $(( "@" + 1 ))', ARITH, D),
    ('echo "total: $(( "@" * 2 ))"', ARITH, D),
    ('echo "$(( @ ))"', ARITH, U),
    ("echo $(( $(echo @) ))", ARITH, U),
    ('echo $(( $(echo "@") + 1 ))', ARITH, D),
    ("echo $(( `echo @` ))", ARITH, U),
    ("echo $(( '@' ))", ARITH, S),  # bash expands inside: still arithmetic
    ("echo $(( 1 + $(( @ )) ))", ARITH, U),
    ("x=$((@))", ARITH, U),
    ("echo $((16#@))", ARITH, U),  # '#' is a base here, not a comment
    # $[ ... ]
    ("echo $[ @ + 1 ]", ARITH, U),
    ('echo "$[ @ ]"', ARITH, U),
    ("echo $[ a[1] + @ ]", ARITH, U),
    # (( ... )) as a command, for (( ; ; ))
    ("(( @ > 1 ))", ARITH, U),
    ('(( "@" > 1 ))', ARITH, D),
    ("true; (( @ ))", ARITH, U),
    ("true && (( @ ))", ARITH, U),
    ("if (( @ )); then :; fi", ARITH, U),
    ("while ! (( @ )); do :; done", ARITH, U),
    ("echo $( (( @ )) )", ARITH, U),
    ("for (( i = @; i < 3; i++ )); do :; done", ARITH, U),
    ("(( x = 1 << @ ))", ARITH, U),  # '<<' here is a shift, not a here-document
    # the operands of -eq -ne -lt -le -gt -ge in [[ ... ]]
    ("[[ @ -eq 0 ]]", ARITH, U),
    ('[[ 1 -ne "@" ]]', ARITH, D),
    ("[[ -f x && @ -gt 1 ]]", ARITH, U),
    ("[[ ( @ -lt 2 ) ]]", ARITH, U),
    ("if [[ $x -le @ ]]; then :; fi", ARITH, U),
    ("[[ $(echo @) -ge 1 ]]", ARITH, U),
    ("echo $( [[ @ -eq 1 ]] )", ARITH, U),
    ("echo `[[ @ -eq 1 ]]`", ARITH, U),
    ("[[\n@ -eq 1 ]]", ARITH, U),
    # the arguments of let (also quoted, and after a redirection)
    ("let x=@+1", ARITH, U),
    ('let "x = @"', ARITH, D),
    ("let x=1 y=@", ARITH, U),
    ('"let" x=@', ARITH, U),
    ("time let x=@", ARITH, U),
    ("f() { let x=@; }", ARITH, U),
    ("case a in a) let x=@;; esac", ARITH, U),
    ("let x=1 2>&1 y=@", ARITH, U),
    ("echo `let x=@`", ARITH, U),
    ("let x=1 \\\n  y=@", ARITH, U),
    # declare -i / local -i assignments
    ("declare -i n=@", ARITH, U),
    ("local -ai n=(1 @)", ARITH, U),
    # array subscripts
    ("arr[@]=1", ARITH, U),
    ('arr["@"]=1', ARITH, D),
    ("arr[ @ ]+=1", ARITH, U),
    ("x=1 arr[@]=1", ARITH, U),
    ("echo ${arr[@]}", ARITH, U),
    ('echo "${arr[@]}"', ARITH, U),
    ('echo "${#arr[@]}"', ARITH, U),
    ("echo ${arr[$(echo @)]}", ARITH, U),
    ("read arr[@] <<< 1", ARITH, U),
    ("arr=([@]=1)", ARITH, U),
    ("declare -a arr=([0]=a [@]=b)", ARITH, U),
    # ${name:offset:length}
    ("echo ${v:@}", ARITH, U),
    ('echo "${v:1:@}"', ARITH, U),
    ("echo ${v: -@}", ARITH, U),
    ("echo ${arr[1]:@}", ARITH, U),
    ("echo ${*:@}", ARITH, U),
    # inside an unquoted ${...} holding blanks (one piece of its word)
    ("echo ${x:- $(( @ + 1 ))} y", ARITH, U),
    ("echo ${x:- $[ @ ]} y", ARITH, U),
    ('echo ${x:- "$(( @ ))"} y', ARITH, U),
    ("echo ${a[ @ ]:- x} y", ARITH, U),
    ("echo ${v: 1 : @ } y", ARITH, U),
    ("echo ${x:- $(( 1 )) @} y", U, U),
    # nearby text that is not arithmetic
    ("echo $(( 1 )) @", U, U),
    ('echo "$(( 1 )) @"', D, D),
    ("(( 1 )) && echo @", U, U),
    ("[[ 1 -eq 1 ]] && echo @", U, U),
    ("[[ @ == 1 ]]", U, U),
    ('[[ -f "@" && $n -gt 1 ]]', D, D),
    ('[[ "@" < 1 ]]', D, D),
    ("[ @ -eq 1 ]", U, U),  # the test builtin wants an integer: it evaluates nothing
    ("test @ -eq 1", U, U),
    ("let x=1; echo @", U, U),
    ("let x=1\necho @", U, U),
    ("let x=1 > @", U, U),  # a redirection's target
    ("echo let @", U, U),
    ("echo x # (( @", Ctx.COMMENT, Ctx.COMMENT),
    ("declare n=@", U, U),
    ("declare -i n; m=@", U, U),
    ("echo ${v:-@}", U, U),
    ('echo "${v:=@}"', D, D),
    ("echo ${v:+@} ${v:?@}", U, U),
    ("echo ${v}[@]", U, U),
    ("a=(1 2); echo ${#a[*]} @", U, U),
    ("cat <<EOF\n$(( 1 ))@\nEOF", D, D),
    # an expanding here-document's body is read as inside double quotes: bash evaluates
    # arithmetic there too (a value of a[$(cmd)] ran cmd)
    ("cat <<EOF\nv: $(( @ + 1 ))\nEOF", ARITH, U),
    ("cat <<EOF\n$[ @ ]\nEOF", ARITH, U),
    ("a=(x y); cat <<EOF\n${a[@]}\nEOF", ARITH, U),
    ("cat <<EOF\n${s:@}\nEOF", ARITH, U),
    ("cat <<-EOF\n\t$((\n\t@ ))\n\tEOF", ARITH, U),  # across the body's lines
    ('cat <<EOF\n"$(( @ ))"\nEOF', ARITH, U),  # a quote is a character there
    ("cat <<'EOF'\n$(( @ ))\nEOF", Ctx.SINGLE, Ctx.SINGLE),  # a quoted delimiter: literal
    ('cat <<EOF\n" @\nEOF\necho @', D, D),
    ("echo $[[x]] @", U, U),  # native text: '$[[x]]' stays shell text
]


@pytest.mark.parametrize(("text", "context", "quoting"), ARITH_CASES)
def test_arithmetic_context(text: str, context: str, quoting: Ctx) -> None:
    pos = text.index("@")
    lexed = scan(text)
    assert lexed.problem is None
    assert (lexed.contexts[pos], lexed.quoting[pos]) == (context, quoting)


def test_arithmetic_never_in_quoting() -> None:
    text = 'a=$(( "$x" )); (( y )); let z; [[ 1 -eq $w ]]; b[$i]=1; echo "${v:1}"'
    lexed = scan(text)
    assert ARITH in lexed.contexts and ARITH not in lexed.quoting
    assert len(lexed.quoting) == len(lexed.contexts) == len(text)


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("(( 1 + 2 )", "'(('"),
        ("echo $[ 1 + 2", "'$['"),
        ("[[ $x -eq 1", "'[['"),
        ("echo ${v:1", "'${name:'"),
    ],
)
def test_incomplete_arithmetic_is_reported(text: str, word: str) -> None:
    problem = scan(text).problem
    assert problem is not None and word in problem
