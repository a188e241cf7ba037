"""A participant's value copied into a shell variable is still the participant's value:
where a later command of the same text reads that variable as one of its options
(``m=$[[m]]; tar -xf data.tar "$m"`` with ``--to-command=...``), the value is refused at
render as if it stood there itself. Followed: plain assignments (``local``, ``export``,
``declare``...), arrays, ``for``, ``set --`` and ``shift``, ``read`` from a here-string,
``printf -v``, ``mapfile``, copies of copies, ``${v:-...}`` and ``${f##*/}``. A
variable only used where no option is read (after ``--``, in an option's own word, a
redirection, ``[ ]``, ``echo``'s words) still renders, and the same templates with a
harmless value run with bash and do their work.

Commands are written here with the shell's ``$`` and ``$[[s]]``: the flowServ dialect
gets ``$$`` for the shell's own ``$`` (its rule), the native one ``{{ s }}``."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from flowbatch.errors import RenderError
from flowbatch.render import build_script, render_workflow
from flowbatch.render.shellctx import scan
from flowbatch.render.shellvars import word_parts
from flowbatch.spec.model import Parameter, SelectValue, Step, Template, Workflow

from .test_render_options import _archive, _ran

VARIABLES = {"python": "python3"}
#: runs ``touch PWNED`` for each member tar extracts (tar hands it to sh -c); no blank in
#: it, so that a variable split into words keeps it one word
EVIL = "--to-command=touch${IFS}PWNED"
DIALECTS = ["flowserv", "native"]


def _command(command: str, dialect: str) -> str:
    """``command`` in ``dialect``: flowServ writes the shell's ``$`` as ``$$``."""
    if dialect == "native":
        return command.replace("$[[s]]", "{{ s }}")
    return re.sub(r"\$(?!\[\[)", "$$", command)


def _template(
    command: str, dialect: str = "flowserv", params: list[Parameter] | None = None
) -> Template:
    return Template(
        dialect=dialect,  # type: ignore[arg-type]
        workflow=Workflow(steps=[Step("s", [_command(command, dialect)])]),
        parameters=params or [Parameter("s", "string", 0, True)],
    )


def _render(t: Template, args: dict[str, Any]) -> str:
    """The one command of ``t`` rendered for ``args`` (raises RenderError)."""
    return render_workflow(t, t.workflow, args, VARIABLES).steps[0].commands[0]


def _run(folder: Path, t: Template, args: dict[str, Any]) -> int:
    """Render ``t`` for ``args`` and run its script with bash in ``folder``: its exit
    status."""
    rendered = render_workflow(t, t.workflow, args, VARIABLES)
    (folder / "run.sh").write_text(build_script(rendered, run_id="r1"))
    done = subprocess.run(["bash", "run.sh"], cwd=folder, capture_output=True, timeout=60)
    return done.returncode


#: (command, a hostile value, a harmless value with which the command does its work:
#: extracts member.txt)
ATTACKS = [
    ('m=$[[s]]; tar -xf data.tar "$m"', EVIL, "member.txt"),
    ('m=$[[s]]; tar -xf data.tar "${m}"', EVIL, "member.txt"),
    ('a=($[[s]]); tar -xf data.tar "${a[@]}"', EVIL, "member.txt"),
    ('a=(); a+=(x $[[s]]); tar -xf data.tar "${a[1]}"', EVIL, "member.txt"),
    ('a=(); a[3]=$[[s]]; tar -xf data.tar "${a[3]}"', EVIL, "member.txt"),
    ('for m in $[[s]]; do tar -xf data.tar "$m"; done', EVIL, "member.txt"),
    ('export M=$[[s]]; tar -xf data.tar "$M"', EVIL, "member.txt"),
    ('f() { local m=$[[s]]; tar -xf data.tar "$m"; }; f', EVIL, "member.txt"),
    ('declare -r m=$[[s]]; tar -xf data.tar "$m"', EVIL, "member.txt"),
    ('readonly m=$[[s]]; tar -xf data.tar "$m"', EVIL, "member.txt"),
    ('set -- $[[s]]; tar -xf data.tar "$1"', EVIL, "member.txt"),
    ('set -- x $[[s]]; shift; tar -xf data.tar "$@"', EVIL, "member.txt"),
    ('set -- $[[s]]; for m; do tar -xf data.tar "$m"; done', EVIL, "member.txt"),
    ('read -r m <<< $[[s]]; tar -xf data.tar "$m"', EVIL, "member.txt"),
    ('read -ra a <<< $[[s]]; tar -xf data.tar "${a[0]}"', EVIL, "member.txt"),
    ("printf -v m '%s' $[[s]]; tar -xf data.tar \"$m\"", EVIL, "member.txt"),
    ('mapfile -t a <<< $[[s]]; tar -xf data.tar "${a[@]}"', EVIL, "member.txt"),
    ("read -r m < <(printf '%s\\n' $[[s]]); tar -xf data.tar \"$m\"", EVIL, "member.txt"),
    ('IFS=, read -ra a <<< $[[s]]; tar -xf data.tar "${a[1]}"', f"x,{EVIL}", "x,member.txt"),
    ('m=$[[s]]; n="$m"; o=$n; tar -xf data.tar "$o"', EVIL, "member.txt"),
    ('declare -n r=m; m=$[[s]]; tar -xf data.tar "$r"', EVIL, "member.txt"),
    # assigned in a branch, used after it; assigned after the use, in a loop
    ('if [ -n $[[s]] ]; then m=$[[s]]; fi; tar -xf data.tar "$m"', EVIL, "member.txt"),
    (
        'm=member.txt; for i in 1 2; do tar -xf data.tar "$m"; m=$[[s]]; done',
        EVIL,
        "member.txt",
    ),
    # unquoted, the variable is split: any of the value's words is an argument
    ("m=$[[s]]; tar -xf data.tar $m", f"member.txt {EVIL}", "member.txt"),
    ('m=$[[s]]; b=($m); tar -xf data.tar "${b[@]}"', f"member.txt {EVIL}", "member.txt"),
    # what is left of a value may begin with its dash
    ('f=$[[s]]; tar -xf data.tar "${f##*/}"', f"sub/{EVIL}", "sub/member.txt"),
    # the default word of an expansion stands where the expansion does
    ('tar -xf data.tar "${unset_here:-$[[s]]}"', EVIL, "member.txt"),
    # an unquoted ${...} is one piece of its word, blanks and ';' in its operator too
    ('f=$[[s]]; n=${f// /_}; tar -xf data.tar "$n"', EVIL, "member.txt"),
    ('f=$[[s]]; n=${f/;/_}; tar -xf data.tar "$n"', EVIL, "member.txt"),
    ("n=${unset_here:-$[[s]]}; tar -xf data.tar ${n// /_}", EVIL, "member.txt"),
    # a shell's inline program reads the variable where tar reads options
    ('m=$[[s]]; bash -c \'tar -xf data.tar "$1"\' _ "$m"', EVIL, "member.txt"),
]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(("command", "evil", "fine"), ATTACKS)
def test_a_value_copied_into_a_variable_read_as_an_option_is_refused(
    tmp_path: Path, dialect: str, command: str, evil: str, fine: str
) -> None:
    t = _template(command, dialect)
    with pytest.raises(RenderError, match="tar would take it for an option"):
        _render(t, {"s": evil})
    # the same template with a harmless value: rendered, and it does its work
    _archive(tmp_path)
    assert _run(tmp_path, t, {"s": fine}) == 0
    assert (tmp_path / "member.txt").read_text() == "data\n"
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_attack_is_real_and_the_refusal_names_the_argument_variable_command_and_safe_forms(
    tmp_path: Path, dialect: str
) -> None:
    """Written safely (``--`` before the variable), the same value is a member's name and
    runs nothing; the refusal of the unsafe form says what to write instead."""
    t = _template('m=$[[s]]; tar -xf data.tar "$m"', dialect)
    with pytest.raises(RenderError) as info:
        _render(t, {"s": EVIL})
    exc = info.value
    assert exc.field == "arguments.s"
    assert "shell variable $m" in exc.reason and "tar would take it" in exc.reason
    assert "workflow.steps[0].commands[0]" in exc.reason
    dollar = "$" if dialect == "native" else "$$"
    assert exc.hint is not None
    assert f'tar ... -- "{dollar}m"' in exc.hint and f'--input="{dollar}m"' in exc.hint
    _archive(tmp_path)
    safe = _template('m=$[[s]]; tar -xf data.tar -- "$m"', dialect)
    assert _run(tmp_path, safe, {"s": EVIL}) != 0  # no such member
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_value_copied_by_an_unquoted_expansion_with_a_blank_is_followed(
    tmp_path: Path, dialect: str
) -> None:
    """``n=${f// /_}`` is one assignment of ``n``: bash splits the result of an unquoted
    ``${...}``, not its text (found by review: the lexer ended the word at the blank, saw
    no assignment, and tar ran the value's command). Refused at render; a harmless value
    renders and runs."""
    t = _template('f=$[[s]]; n=${f// /_}; tar -xf data.tar "$n"', dialect)
    _archive(tmp_path)
    assert not _ran(tmp_path, t, {"s": EVIL}), "rendered, and tar ran the value's command"
    with pytest.raises(RenderError, match=r"shell variable \$n, which tar reads"):
        _render(t, {"s": EVIL})
    assert not (tmp_path / "PWNED").exists()
    assert _run(tmp_path, t, {"s": "member.txt"}) == 0
    assert (tmp_path / "member.txt").read_text() == "data\n"


def test_the_positional_parameters_and_a_default_word_are_named_as_such() -> None:
    with pytest.raises(RenderError, match=r"positional parameters \(\$1"):
        _render(_template('set -- $[[s]]; tar -xf data.tar "$1"'), {"s": EVIL})
    with pytest.raises(RenderError, match=r"default or alternative word of \$\{v\.\.\.\}"):
        _render(_template('tar -xf data.tar "${v:-$[[s]]}"'), {"s": EVIL})


#: a variable holding the value where no command reads options
SAFE_USES = [
    'm=$[[s]]; tar -xf data.tar -- "$m" || true',  # after --
    'm=$[[s]]; tar -xf data.tar --file="$m" || true',  # in an option's own word
    'm=$[[s]]; tar -xf data.tar "./$m" || true',  # begun by the template's text
    'm="in-$[[s]]"; tar -xf data.tar "$m" || true',
    'm=$[[s]]; echo "$m" > out.txt',  # echo reads -n, -e, -E only; a redirection
    "m=$[[s]]; printf '%s\\n' \"$m\" > out.txt",  # printf's operand
    'm=$[[s]]; [ "$m" = x ] || [[ $m == -* ]] && echo dash > out.txt',
    'm=$[[s]]; case "$m" in -*) echo dash > out.txt ;; esac',
    'for m in $[[s]]; do echo "$m"; done > out.txt',
    'a=($[[s]]); echo "${a[@]}" > out.txt',
    'm=$[[s]]; : "$m"; echo "x${m}" > out.txt',
    "m=$[[s]]; cat <<EOF > out.txt\n$m\nEOF",  # a here-document's body is data
    'm=$[[s]] true; tar -xf data.tar "$m" || true',  # m is true's environment only
    'f=$[[s]]; tar -xf data.tar "${f%.txt}" || true',  # the beginning is kept: the value's
    'f=$[[s]]; n=${f// /_}; tar -xf data.tar -- "$n" || true',
    "tar -xf data.tar -- ${v/;/x} $[[s]] || true",  # no command ends at the ';'
]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("command", SAFE_USES)
def test_a_variable_used_where_no_option_is_read_renders_and_runs(
    tmp_path: Path, dialect: str, command: str
) -> None:
    _archive(tmp_path)
    value = "--to-command=touch${IFS}PWNED" if "%.txt" not in command else "member.txt"
    assert _run(tmp_path, _template(command, dialect), {"s": value}) == 0
    assert not (tmp_path / "PWNED").exists()


def test_what_is_left_of_a_value_is_read_for_where_it_may_begin() -> None:
    """``${f##*/}`` keeps what follows the last ``/``: a dash inside a name stands, one
    after a ``/`` does not; ``${f#x}`` cuts at most an ``x``. A command's output, ``printf
    -v`` and ``mapfile`` may begin with any word of the value, not inside one."""
    t = _template('f=$[[s]]; tar -xf data.tar "${f##*/}"')
    _render(t, {"s": "data/my-file.txt"})
    with pytest.raises(RenderError, match="'-rf' in it"):
        _render(t, {"s": "data/-rf"})
    _render(_template('f=$[[s]]; tar -xf data.tar "${f#x}"'), {"s": "data/-rf"})
    # a command's output, printf -v, mapfile: any word of the value may begin them
    for copy in ("m=$(echo $[[s]])", "printf -v m '%s' $[[s]]", "mapfile -t m <<< $[[s]]"):
        t = _template(copy + '; tar -xf data.tar "$m"')
        _render(t, {"s": "data/my-file.txt"})
        with pytest.raises(RenderError, match="'-rf' in it"):
            _render(t, {"s": "data -rf"})
    # an offset is worked out on the value: what bash leaves there
    offset = _template('f=$[[s]]; tar -xf data.tar "${f:3}"')
    _render(offset, {"s": "my-file.txt"})
    with pytest.raises(RenderError, match="'-rf' in it"):
        _render(offset, {"s": "my--rf"})
    with pytest.raises(RenderError):  # an offset from the end: any dash may begin it
        _render(_template('f=$[[s]]; tar -xf data.tar "${f: -3}"'), {"s": "my-file.txt"})


def test_values_that_may_begin_with_a_dash_never_taint_a_variable() -> None:
    """A number, a select option, a default and the organiser's own text."""
    ints = [Parameter("s", "int", 0, True)]
    _render(_template('n=$[[s]]; prog "$n"', params=ints), {"s": -5})
    opts = [SelectValue("-O2", "-O2"), SelectValue("-O3", "-O3")]
    select = [Parameter("s", "select", 0, True, values=opts)]
    default = [Parameter("s", "string", 0, False, default="--fast", has_default=True)]
    for dialect in DIALECTS:
        _render(_template('o=$[[s]]; cc "$o" main.c', dialect, select), {"s": "-O3"})
        _render(_template('o=$[[s]]; prog "$o"', dialect, default), {})
        with pytest.raises(RenderError):
            _render(_template('o=$[[s]]; prog "$o"', dialect, default), {"s": "--slow"})
    flag = [Parameter("g", "bool", 0, True)]
    t = _template("o={{ '--gpu' if g else 'cpu' }}; prog \"$o\"", "native", flag)
    _render(t, {"g": True})
    # a lone dash (standard input, by custom), and a value with no dash at all
    _render(_template('m=$[[s]]; cat "$m" < /dev/null'), {"s": "-"})
    _render(_template("m=$[[s]]; prog $m"), {"s": "a b c"})


def test_a_native_jinja_loop_building_an_array_is_followed(tmp_path: Path) -> None:
    """``{% for %}`` writes one assignment per element; the array is read as options."""
    params = [Parameter("xs", "list", 0, True, para=Parameter("x", "string", 0, True))]
    command = '{% for x in xs %}a+=({{ x }}); {% endfor %}tar -xf data.tar "${a[@]}"'
    t = Template(
        dialect="native",
        workflow=Workflow(steps=[Step("s", [command])]),
        parameters=params,
    )
    with pytest.raises(RenderError, match="argument 'xs'"):
        _render(t, {"xs": ["member.txt", EVIL]})
    _archive(tmp_path)
    assert _run(tmp_path, t, {"xs": ["member.txt"]}) == 0
    assert (tmp_path / "member.txt").exists()


def test_variables_do_not_cross_commands_each_runs_in_its_own_subshell(tmp_path: Path) -> None:
    """The check follows one command's text: ``run.sh`` runs each command in a subshell,
    so a variable assigned by one is unset in the next (shown by running it)."""
    t = Template(
        dialect="native",
        workflow=Workflow(steps=[Step("s", ["m={{ s }}", 'echo "[$m]" > out.txt'])]),
        parameters=[Parameter("s", "string", 0, True)],
    )
    assert _run(tmp_path, t, {"s": EVIL}) == 0
    assert (tmp_path / "out.txt").read_text() == "[]\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("m=X; a=(X y) b+=(z)", [("m", ["X"]), ("a", ["X", "y"]), ("b", ["z"])]),
        ("export M=X N; local -r l=X", [("M", ["X"]), ("l", ["X"])]),
        ("for m in X y; do :; done", [("m", ["X", "y"])]),
        ("set -o errexit -- X", [("@", ["X"])]),
        ("set -e", []),
        ("read -r a b <<< X", [("a", ["X"]), ("b", ["X"])]),
        ("read -r a b < file", []),  # a file: not followed
        ("printf -v out '%s' X", [("out", ["'%s'", "X"])]),
        ("m=X cmd", []),  # the command's environment only
        ("cat <<EOF\n$(m=X)\nEOF", [("m", ["X"])]),
        # an unquoted ${...} is one piece of its word, whatever its operator holds
        ("n=${f// /X}; m=${v:-a X}", [("n", ["${f// /X}"]), ("m", ["${v:-a X}"])]),
        ('n=${v#"X y"} m=${a:-${b:-c X}}', [("n", ['${v#"X y"}']), ("m", ["${a:-${b:-c X}}"])]),
        ("echo ${v/;m=X/y}", []),  # a pattern, not an assignment after a ';'
        ("cat <<EOF\n$(n=${f// /X})\nEOF", [("n", ["${f// /X}"])]),
    ],
)
def test_which_variables_a_text_gives_values_to(
    text: str, expected: list[tuple[str, list[str]]]
) -> None:
    flows = [
        (flow.name, [text[s:e] for s, e in flow.sources])
        for flow in scan(text).flows
        if flow.sources and any(e > s for s, e in flow.sources)
    ]
    assert flows == expected


def test_a_word_s_expansion_ends_at_the_brace_the_lexer_matched() -> None:
    """A ``}`` inside quotes in an unquoted ``${...}`` does not end it (bash: ``${v:-"}"}``
    is ``}`` when ``v`` is unset): the parts of a word take the lexer's matching ``}``, so
    what follows the quoted one is still the expansion's default word."""
    text = 'tar -xf data.tar ${v:-"}"$m}x'
    lexed = scan(text)
    start = text.index("${")
    parts = word_parts(
        text,
        lexed.quoting,
        lexed.contexts,
        dict(lexed.subs),
        start,
        len(text),
        params=dict(lexed.params),
    )
    found = [(p.kind, text[p.start : p.end], p.nested) for p in parts]
    assert found == [("var", '${v:-"}"$m}', False), ("var", "$m", True), ("text", "x", False)]
    said = subprocess.run(["bash", "-c", 'm=M; echo ${v:-"}"$m}x'], capture_output=True)
    assert said.stdout == b"}Mx\n"


OPS = [
    "#*/", "##*/", "#?", "##?", "#a", "##a*", "#*[0-9]", "##*[!a-z]", "#*", "##*",
    "/a/", "//a/", "//-/_", "/#a/", "/#ab/x", "//_/", "/%a/", "/b/-", ":2", ":0", ":3:2", ":9",
]  # fmt: skip
VALUES = ["dir/--to=x", "a--x", "ab-cd", "__-r", "a1-b2", "a/b/-c", "", "-", "x", "aaa-", "a b -c"]


def test_an_operator_worked_out_on_the_value_is_what_bash_leaves() -> None:
    """``trimmed`` works a trimming expansion out on the value as bash does (its result
    compared with bash's own for every operator and value here); where it does not
    follow bash exactly (``/%``, ``:N:L``: the value's end is kept), bash's result begins
    as it does."""
    from flowbatch.render.taint import trimmed

    lines = []
    for op in OPS:
        for value in VALUES:
            quoted = "'" + value.replace("'", "'\\''") + "'"
            lines.append(f"v={quoted}; printf '%s\\0' \"${{v{op}}}\"")
    out = subprocess.run(
        ["bash", "-c", "\n".join(lines)], capture_output=True, check=True
    ).stdout.decode()
    said = out.split("\0")[:-1]
    assert len(said) == len(OPS) * len(VALUES)
    k = 0
    for op in OPS:
        for value in VALUES:
            ours, theirs = trimmed(value, op), said[k]
            k += 1
            assert ours is not None, op
            if op.startswith("/%") or op.count(":") == 2:  # the end kept: a beginning
                assert theirs.startswith(ours[: len(theirs)]), (op, value, ours, theirs)
                assert theirs[:1] != "-" or ours[:1] == "-", (op, value, ours, theirs)
            else:
                assert ours == theirs, (op, value, ours, theirs)
    for op in ("#$x", "#*[[:alpha:]]", "/a*/", "#@(a)", ":-3", ": -3", "^^"):
        assert trimmed("a-b", op) is None, op


@pytest.mark.parametrize(
    ("command", "good", "bad"),
    [
        ('f=$[[s]]; b=${f##*/}; gzip -k "$b"', "dir/my-file.txt", "dir/--to-command=x"),
        ('f=$[[s]]; n="${f// /_}"; touch "$n"', "my file-1", "--x y"),
        ('f=$[[s]]; n=${f// /_}; touch "$n"', "my file-1", "--x y"),
        ('f=$[[s]]; n=${f:4}; touch "$n"', "run-a-b", "run---x"),
        # every dash replaced: no value makes an option there
        ('f=$[[s]]; n=${f//-/_}; touch "$n"', "a-b", None),
    ],
)
def test_a_value_trimmed_into_a_variable_is_judged_by_what_is_left(
    command: str, good: str, bad: str | None
) -> None:
    """A variable made by trimming a value (a base name, a replacement, an offset) is
    judged by what bash leaves of the value, not refused because any dash inside might
    begin it (found by review: `b=${f##*/}` refused every `dir/my-file`)."""
    t = _template(command)
    _render(t, {"s": good})
    if bad is None:
        _render(t, {"s": "--to-command=x"})
    else:
        with pytest.raises(RenderError, match="may begin"):
            _render(t, {"s": bad})


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    "command",
    [
        "tar -xf data.tar ${empty}$[[s]]",
        'tar -xf data.tar "$prefix$[[s]]"',
        'tar -xf data.tar "$(true)$[[s]]"',
        'm=$[[s]]; tar -xf data.tar ${empty}"$m"',
        'm=$[[s]]; tar -xf data.tar "${none:+x}$m"',
    ],
)
def test_an_expansion_that_may_be_empty_leaves_the_value_first(command: str, dialect: str) -> None:
    """An expansion before a value may come to nothing (an unset variable, a command
    that prints nothing): the value then begins the word, and is an option there (found
    by review: `tar -xf data.tar ${empty}"$m"` ran `--to-command=...`)."""
    with pytest.raises(RenderError, match="'-'"):
        _render(_template(command, dialect), {"s": EVIL})
    _render(_template(command, dialect), {"s": "member.txt"})


@pytest.mark.parametrize(
    "command",
    [
        'tar -xf data.tar "${prefix:-in/}$[[s]]"',  # a default of the template's own text
        'tar -xf data.tar "$((1))$[[s]]"',  # arithmetic: a number, never empty
        'tar -xf data.tar "$prefix/$[[s]]"',
    ],
)
def test_an_expansion_that_is_never_empty_keeps_the_value_off_the_start(command: str) -> None:
    _render(_template(command), {"s": EVIL})


def _refused_and_fine(tmp_path: Path, command: str, dialect: str, evil: str, fine: str) -> None:
    """``command`` with ``evil`` is refused at render (were it rendered, it is run with
    bash to show what it does), and with ``fine`` it renders, runs and extracts the
    archive's member."""
    t = _template(command, dialect)
    _archive(tmp_path)
    try:
        _render(t, {"s": evil})
    except RenderError as exc:
        assert "would take it for an option" in exc.reason
    else:
        _run(tmp_path, t, {"s": evil})
        ran = (tmp_path / "PWNED").exists()
        pytest.fail(f"rendered; run with bash, tar {'ran' if ran else 'did not run'} its command")
    assert _run(tmp_path, t, {"s": fine}) == 0
    assert (tmp_path / "member.txt").read_text() == "data\n"
    assert not (tmp_path / "PWNED").exists()
