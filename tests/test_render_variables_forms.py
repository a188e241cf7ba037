"""Four more ways a participant's value reaches a command through the shell, followed
by the options check like the others (tests/test_render_variables.py): a function's
arguments (``f() { tar -xf data.tar "$1"; }; f $[[s]]``, ``"$@"``, ``shift``, ``local
a=$1``, ``local -n r=$1``), a pipe or a here-document into ``read`` (``printf '%s\\n'
"$m" | while read -r x; do ...``), an indirection (``${!n}``, ``${!#}``) and what
``[[ $x =~ RE ]]`` puts in ``BASH_REMATCH``. Each attack is a form that, before, rendered
and made tar run the value's ``--to-command`` under bash; each safe form (``--``
before the value, a group that cannot begin with ``-``) renders and does its work, and
so do a few templates written as organisers write them, with values that hold a dash.

Commands are written with the shell's ``$`` and ``$[[s]]`` (see _command)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from flowbatch.render.shellctx import scan
from flowbatch.render.shellvars import word_parts

from .test_render_variables import (
    DIALECTS,
    EVIL,
    _archive,
    _refused_and_fine,
    _run,
    _template,
)


def _safe(tmp_path: Path, command: str, dialect: str, value: str) -> int:
    """``command`` renders with ``value`` and runs with bash without running the value
    as tar's option: its exit status."""
    t = _template(command, dialect)
    _archive(tmp_path)
    status = _run(tmp_path, t, {"s": value})
    assert not (tmp_path / "PWNED").exists()
    return status


# -- a function's arguments ------------------------------------------------------------

FUNCTIONS = [
    # `function NAME {`: its body's commands were read as one command, never checked
    ("function f { tar -xf data.tar $[[s]]; }; f", EVIL, "member.txt"),
    ("function f() { tar -xf data.tar $[[s]]; }; f", EVIL, "member.txt"),
    # `--` at the call ends no option of the body's tar
    ('f() { tar -xf data.tar "$2"; }; f -- $[[s]]', EVIL, "member.txt"),
    ('f() { [ "$1" = -- ] && shift; tar -xf data.tar "$1"; }; f -- $[[s]]', EVIL, "member.txt"),
    ('f() { local a=$2; tar -xf data.tar "$a"; }; f -- $[[s]]', EVIL, "member.txt"),
    ('f() { shift; tar -xf data.tar "$@"; }; f -- $[[s]]', EVIL, "member.txt"),
    ('function f { shift; tar -xf data.tar "$1"; }; f -- $[[s]]', EVIL, "member.txt"),
    # through another function's "$@", one defined before the function it calls
    ('g() { f "$@"; }; f() { tar -xf data.tar "$2"; }; g -- $[[s]]', EVIL, "member.txt"),
    # an array passed by its name (a name reference to a computed name: any variable)
    ('m=$[[s]]; f() { local -n r=$1; tar -xf data.tar "$r"; }; f m', EVIL, "member.txt"),
    ('a=($[[s]]); f() { local -n r=$1; tar -xf data.tar "${r[@]}"; }; f a', EVIL, "member.txt"),
]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(("command", "evil", "fine"), FUNCTIONS)
def test_a_function_s_arguments_are_followed_into_its_body(
    tmp_path: Path, dialect: str, command: str, evil: str, fine: str
) -> None:
    _refused_and_fine(tmp_path, command, dialect, evil, fine)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    "command",
    [
        'f() { tar -xf data.tar -- "$1"; }; f $[[s]]',
        'f() { local a=$1; tar -xf data.tar -- "$a"; }; f $[[s]]',
        'f() { local archive=$1; shift; tar -xf data.tar -- "$@"; }; f data.tar $[[s]]',
        'function f { local -n r=$1; tar -xf data.tar -- "$r"; }; m=$[[s]]; f m',
    ],
)
def test_a_call_of_a_function_is_no_program_reading_options(
    tmp_path: Path, command: str, dialect: str
) -> None:
    """A function defined before its call reads its arguments where its body does:
    with ``--`` there, a value beginning with ``-`` is a member's name (it was refused
    at the call, as if the function were a program)."""
    _safe(tmp_path, command, dialect, EVIL)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    "command",
    [
        'run() { echo "+ $*" >&2; "$@"; }; run tar -xf data.tar $[[s]]',
        'run() { local c=$1; shift; "$c" "$@"; }; run tar -xf data.tar $[[s]]',
        'tar() { command tar "$@"; }; tar -xf data.tar $[[s]]',
    ],
)
def test_a_function_that_runs_its_arguments_as_a_command_is_checked_at_its_call(
    tmp_path: Path, command: str, dialect: str
) -> None:
    """``"$@"`` (or a variable given ``$1``) as a command's name: the call's arguments
    are a program's, checked where the call stands."""
    _refused_and_fine(tmp_path, command, dialect, EVIL, "member.txt")


# -- a pipe or a here-document into read -------------------------------------------------

READS = [
    'm=$[[s]]; printf \'%s\\n\' "$m" | while read -r x; do tar -xf data.tar "$x"; done',
    'echo $[[s]] | while IFS= read -r x; do tar -xf data.tar "$x"; done',
    "printf '%s\\n' $[[s]] | { read -r x; tar -xf data.tar \"$x\"; }",
    "printf '%s\\n' $[[s]] | ( read -r x; tar -xf data.tar \"$x\" )",
    "printf '%s\\n' $[[s]] | { mapfile -t a; tar -xf data.tar \"${a[@]}\"; }",
    '{ echo $[[s]]; } | while read -r x; do tar -xf data.tar "$x"; done',
    'while read -r x; do tar -xf data.tar "$x"; done <<EOF\n$[[s]]\nEOF',
    'read -r x <<EOF\n$[[s]]\nEOF\ntar -xf data.tar "$x"',
    'cat <<EOF | while read -r x; do tar -xf data.tar "$x"; done\n$[[s]]\nEOF',
]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("command", READS)
def test_read_from_a_pipe_or_a_here_document_is_followed(
    tmp_path: Path, command: str, dialect: str
) -> None:
    _refused_and_fine(tmp_path, command, dialect, EVIL, "member.txt")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_read_from_a_pipe_takes_any_line_of_the_value(tmp_path: Path, dialect: str) -> None:
    """The loop reads each line: the value's second line is a member's name too."""
    command = 'printf \'%s\\n\' "$[[s]]" | while read -r x; do tar -xf data.tar "$x"; done'
    _refused_and_fine(tmp_path, command, dialect, f"member.txt\n{EVIL}", "member.txt")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_read_from_a_pipe_after_dash_dash_stands(tmp_path: Path, dialect: str) -> None:
    command = "printf '%s\\n' $[[s]] | while read -r x; do tar -xf data.tar -- \"$x\" || true; done"
    assert _safe(tmp_path, command, dialect, EVIL) == 0


# -- an indirection -------------------------------------------------------------------------

INDIRECT = [
    'm=$[[s]]; n=m; tar -xf data.tar "${!n}"',
    'm=$[[s]]; n=m; o="${!n}"; tar -xf data.tar "$o"',
    'set -- x $[[s]]; tar -xf data.tar "${!#}"',
    # the value's own variable in the run's environment, named by the template
    'n=FB_s; : $[[s]]; tar -xf data.tar "${!n}"',
    'm=$[[s]]; n=m; tar -xf data.tar "$(echo "${!n}")"',
]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("command", INDIRECT)
def test_an_indirection_may_be_any_variable(tmp_path: Path, command: str, dialect: str) -> None:
    """``${!n}`` reads the variable ``n`` names: taken to be any of them (what the text
    assigns, and every value of the command, each in its ``FB_`` variable)."""
    _refused_and_fine(tmp_path, command, dialect, EVIL, "member.txt")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_indirection_after_dash_dash_stands_and_names_and_keys_are_no_values(
    tmp_path: Path, dialect: str
) -> None:
    """``${!a[@]}`` (an array's keys) and ``${!prefix*}`` (variables' names) hold no
    value: a value can be neither (it is refused as a subscript or a name at install)."""
    assert _safe(tmp_path, 'm=$[[s]]; n=m; tar -xf data.tar -- "${!n}" || :', dialect, EVIL) == 0
    keys = 'a=($[[s]]); for i in "${!a[@]}"; do touch "k$i"; done; touch "${!a[@]}"'
    assert _safe(tmp_path, keys, dialect, EVIL) == 0
    assert (tmp_path / "k0").exists() and (tmp_path / "0").exists()
    names = 'fb_m=$[[s]]; for v in "${!fb_@}"; do touch "$v"; done'
    assert _safe(tmp_path, names, dialect, EVIL) == 0
    assert (tmp_path / "fb_m").exists()


def test_the_parts_of_an_indirection() -> None:
    """``${!n}`` reads any variable (``!``), ``${!#}`` the positional parameters, and
    the keys and names forms no variable."""
    for word, names in [
        ('"${!n}"', ["!"]),
        ("${!n:-x}", ["!"]),
        ('"${!#}"', ["@"]),
        ('"${!a[@]}"', []),
        ("${!a[*]}", []),
        ('"${!pre*}"', []),
        ('"${!pre@}"', []),
        ('"${!a[0]}"', ["!"]),
        ('"${BASH_REMATCH[2]}"', ["BASH_REMATCH[2]"]),
        ('"${BASH_REMATCH[@]}"', ["BASH_REMATCH"]),
        ("$BASH_REMATCH", ["BASH_REMATCH[0]"]),
    ]:
        s = scan(word)
        parts = word_parts(word, s.quoting, s.contexts, dict(s.subs), 0, len(word))
        assert [p.name for p in parts if p.kind == "var"] == names, word


# -- BASH_REMATCH -------------------------------------------------------------------------

MATCHES = [
    ('[[ $[[s]] =~ ^(.*)$ ]] && tar -xf data.tar "${BASH_REMATCH[1]}"', EVIL, "member.txt"),
    ('[[ $[[s]] =~ (.+) ]] && tar -xf data.tar "$BASH_REMATCH"', EVIL, "member.txt"),
    (
        'm=$[[s]]; [[ $m =~ ^(.*)$ ]]; a=("${BASH_REMATCH[@]}"); tar -xf data.tar "${a[1]}"',
        EVIL,
        "member.txt",
    ),
    # a group that begins inside the value: at any of its characters
    ('[[ $[[s]] =~ ^x(.*)$ ]] && tar -xf data.tar "${BASH_REMATCH[1]}"', f"x{EVIL}", "xmember.txt"),
    # an expression in a variable: not read, any group anywhere
    (
        "re='^(.*)$'; [[ $[[s]] =~ $re ]] && tar -xf data.tar \"${BASH_REMATCH[1]}\"",
        EVIL,
        "member.txt",
    ),
    ('[[ $[[s]] =~ ^("")(.*)$ ]] && tar -xf data.tar "${BASH_REMATCH[2]}"', EVIL, "member.txt"),
    # an expression that opens with a group: its '(' was read as [[ ( ... ) ]]'s, and
    # the groups of `(.*)` were lost (found by review)
    ('[[ $[[s]] =~ (.*) ]] && tar -xf data.tar "${BASH_REMATCH[1]}"', EVIL, "member.txt"),
    ('[[ $[[s]] =~ (.*)$ ]] && tar -xf data.tar "${BASH_REMATCH[1]}"', EVIL, "member.txt"),
    ('[[ $[[s]] =~ ((.+)) ]] && tar -xf data.tar "${BASH_REMATCH[2]}"', EVIL, "member.txt"),
    ('[[ ( $[[s]] =~ (a|(.*)) ) ]] && tar -xf data.tar "${BASH_REMATCH[2]}"', EVIL, "member.txt"),
]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(("command", "evil", "fine"), MATCHES)
def test_what_a_match_captures_is_followed(
    tmp_path: Path, command: str, dialect: str, evil: str, fine: str
) -> None:
    _refused_and_fine(tmp_path, command, dialect, evil, fine)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_group_that_cannot_begin_with_a_dash_stands(tmp_path: Path, dialect: str) -> None:
    """``([0-9]+)`` never begins with ``-``, whatever the value: its capture stands where
    a command reads options; so does one after ``--``."""
    command = (
        "[[ $[[s]] =~ ^v?([0-9]+)\\.([0-9]+)(-(.*))?$ ]] && "
        'mkdir -p "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" && '
        'mkdir -p -- "x${BASH_REMATCH[0]}" "${BASH_REMATCH[4]}"'
    )
    assert _safe(tmp_path, command, dialect, "v2.10--rc1") == 0
    assert (tmp_path / "2").is_dir() and (tmp_path / "10").is_dir()
    assert (tmp_path / "-rc1").is_dir()
    # the same with the expression opening with its group (its '(' is the expression's)
    command = '[[ $[[s]] =~ ([0-9]+)\\.([0-9]+) ]] && mkdir -p "${BASH_REMATCH[1]}.d"'
    assert _safe(tmp_path, command, dialect, "v3.4") == 0
    assert (tmp_path / "3.d").is_dir()


# -- an expansion that assigns, $_ and BASH_ARGV ------------------------------------------

OTHER_WAYS = [
    # ${m:=word} and ${m=word} give m the word where m is unset, as m=word does
    (': "${m:=$[[s]]}"; tar -xf data.tar "$m"', EVIL, "member.txt"),
    (': ${m=$[[s]]}; tar -xf data.tar "$m"', EVIL, "member.txt"),
    ('x=$[[s]]; echo "${m:=$x}" >/dev/null; tar -xf data.tar "$m"', EVIL, "member.txt"),
    # $_: the last word of the command before
    ('echo $[[s]]; tar -xf data.tar "$_"', EVIL, "member.txt"),
    ('x=$[[s]]; : "$x"; tar -xf data.tar "${_}"', EVIL, "member.txt"),
    # BASH_ARGV: a function's arguments, reversed, under extdebug
    (
        'shopt -s extdebug; f() { tar -xf data.tar "${BASH_ARGV[0]}"; }; f $[[s]]',
        EVIL,
        "member.txt",
    ),
]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(("command", "evil", "fine"), OTHER_WAYS)
def test_other_ways_a_variable_takes_a_value_are_followed(
    tmp_path: Path, command: str, dialect: str, evil: str, fine: str
) -> None:
    """Found by review: each rendered, and tar ran the value's command."""
    _refused_and_fine(tmp_path, command, dialect, evil, fine)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_assigning_expansion_after_a_double_dash_stands(tmp_path: Path, dialect: str) -> None:
    command = ': "${m:=$[[s]]}"; tar -xf data.tar -- "$m"'
    assert _safe(tmp_path, command, dialect, "-member.txt") != 0  # no such member
    assert _safe(tmp_path, command, dialect, "member.txt") == 0


# -- a descriptor that exec opens, read later -----------------------------------------------

EXEC_INPUTS = [
    ('exec 3<<<$[[s]]; read -r -u 3 y; tar -xf data.tar "$y"', EVIL, "member.txt"),
    ('exec 3< <(echo $[[s]]); read -r y <&3; tar -xf data.tar "$y"', EVIL, "member.txt"),
    ('exec 3<<EOF\n$[[s]]\nEOF\nread -r -u 3 y; tar -xf data.tar "$y"', EVIL, "member.txt"),
]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(("command", "evil", "fine"), EXEC_INPUTS)
def test_what_exec_gives_a_descriptor_is_followed_into_read(
    tmp_path: Path, command: str, dialect: str, evil: str, fine: str
) -> None:
    """Found by review: ``exec`` keeps its redirections for the rest of the command, and
    a ``read`` from that descriptor took the value unseen (tar ran its command)."""
    _refused_and_fine(tmp_path, command, dialect, evil, fine)


# -- a coprocess's output, an eval's text that copies a variable ---------------------------

COPROCS_AND_EVALS = [
    (
        'coproc { echo $[[s]]; }; read -r x <&"${COPROC[0]}"; tar -xf data.tar "$x"',
        EVIL,
        "member.txt",
    ),
    ('coproc echo $[[s]]; read -r x <&"${COPROC[0]}"; tar -xf data.tar "$x"', EVIL, "member.txt"),
    (
        'coproc P { echo $[[s]]; }; read -r -u "${P[0]}" x; tar -xf data.tar "$x"',
        EVIL,
        "member.txt",
    ),
    ('coproc P ( echo $[[s]] ); read -r x <&"${P[0]}"; tar -xf data.tar "$x"', EVIL, "member.txt"),
    ('x=$[[s]]; eval "y=\\$x"; tar -xf data.tar "$y"', EVIL, "member.txt"),
    ("x=$[[s]]; eval 'read -r y <<< $x'; tar -xf data.tar \"$y\"", EVIL, "member.txt"),
    # a text eval is given after an expansion: any variable may hold the value
    ('x=$[[s]]; n=x; eval "y=\\$$n"; tar -xf data.tar "$y"', EVIL, "member.txt"),
    # a command inside a constant eval text reads the variable as its option
    ("x=$[[s]]; eval 'tar -xf data.tar \"$x\"'", EVIL, "member.txt"),
    ('x=$[[s]]; eval "tar -xf data.tar \\"\\$x\\""', EVIL, "member.txt"),
]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(("command", "evil", "fine"), COPROCS_AND_EVALS)
def test_a_coprocess_s_output_and_an_eval_s_copies_are_followed(
    tmp_path: Path, command: str, dialect: str, evil: str, fine: str
) -> None:
    """Found by review: the value reached the variable unseen, through what a coprocess
    printed or what eval's constant text copied, and tar ran its command."""
    _refused_and_fine(tmp_path, command, dialect, evil, fine)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_coprocess_of_constants_and_an_eval_of_no_value_stand(
    tmp_path: Path, dialect: str
) -> None:
    """A coprocess that prints the template's own text, an eval that copies nothing of
    a value, and the value passed after ``--`` are installed and run."""
    evil = "--to-command=touch${IFS}PWNED"
    for command in (
        'coproc { echo member.txt; }; read -r x <&"${COPROC[0]}"; tar -xf data.tar "$x"; '
        "echo $[[s]] > v.txt",
        'coproc P { echo member.txt; }; read -r x <&"${P[0]}"; tar -xf data.tar "$x"; '
        "echo $[[s]] > v.txt",
        'x=$[[s]]; eval "y=member.txt"; tar -xf data.tar "$y"; echo "$x" > v.txt',
    ):
        assert _safe(tmp_path, command, dialect, evil) == 0, command
        assert (tmp_path / "member.txt").read_text() == "data\n"
        assert (tmp_path / "v.txt").read_text() == evil + "\n"
        (tmp_path / "member.txt").unlink()
    for command in (
        'x=$[[s]]; eval "y=\\$x"; tar -xf data.tar -- "$y"',
        "x=$[[s]]; eval 'tar -xf data.tar -- \"$x\"'",
    ):
        assert _safe(tmp_path, command, dialect, "member.txt") == 0
        assert _safe(tmp_path, command, dialect, evil) != 0  # no such member


# -- templates written as organisers write them, values with a dash -------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_common_idioms_with_values_that_hold_a_dash_still_run(tmp_path: Path, dialect: str) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "my-data.csv").write_text("a,1\nb,2\n")
    (tmp_path / "in" / "run-2.csv").write_text("c,3\n")
    loop = (
        "mkdir -p out; printf '%s\\n' $[[s]] | tr ' ' '\\n' | while IFS= read -r f; do "
        'cut -d, -f1 "in/$f" > "out/${f%.csv}.txt"; wc -l < "in/$f" >> out/lines; done'
    )
    assert _safe(tmp_path, loop, dialect, "my-data.csv run-2.csv") == 0
    assert (tmp_path / "out" / "my-data.txt").read_text() == "a\nb\n"
    assert (tmp_path / "out" / "run-2.txt").read_text() == "c\n"
    wrap = (
        'count() { local f=$1 out=${2:-counts.txt}; grep -c , -- "$f" >> "$out"; }; '
        'run() { "$@" || { echo "failed: $*" >&2; return 1; }; }; '
        "count in/$[[s]]; run count in/run-2.csv"
    )
    assert _safe(tmp_path, wrap, dialect, "my-data.csv") == 0
    assert (tmp_path / "counts.txt").read_text() == "2\n1\n"
    version = (
        "if [[ $[[s]] =~ ^v?([0-9]+)\\.([0-9]+)(-([a-z0-9]+))?$ ]]; then "
        "major=${BASH_REMATCH[1]}; minor=${BASH_REMATCH[2]}; "
        'printf \'%s %s %s\\n\' "$major" "$minor" "${BASH_REMATCH[4]:-final}" > v.txt; '
        'mkdir -p "build-$major" && touch "build-$major/$minor"; '
        "else echo 'not a version' >&2; exit 2; fi"
    )
    assert _safe(tmp_path, version, dialect, "v1.12-rc3") == 0
    assert (tmp_path / "v.txt").read_text() == "1 12 rc3\n"
    assert (tmp_path / "build-1" / "12").exists()


def test_the_attacks_are_real_under_bash(tmp_path: Path) -> None:
    """The refused forms do what the test says when run as they are: bash is given one
    (rendered as a plain script, the value in its variable) and tar runs the value's
    command."""
    script = 'f() { tar -xf data.tar "$2"; }; f -- "$FB_s"'
    _archive(tmp_path)
    subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env={"FB_s": EVIL, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (tmp_path / "PWNED").exists()
