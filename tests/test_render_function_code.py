"""A participant's value handed to a function of the template's (or copied into a shell
variable) whose body puts it in program text is program text too: refused at install
and at render, as where it stands there itself (tests/test_render_review_code.py).

Found by review: the code check read ``f() { eval "$@"; }; f {{ s }}`` as a call of an
ordinary program, and bash ran the value. Each attack below made ``PWNED`` when its
template was installed, rendered and run with bash (checked against the code before
this change, and again by :func:`test_the_attacks_are_real_under_bash`); each safe form
(the function uses its argument as data, or runs a command named by the template) is
installed, renders and runs.

Commands are written with the shell's ``$`` and ``$[[s]]`` (see
tests/test_render_variables.py's ``_command``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from flowbatch.errors import RenderError, TemplateError
from flowbatch.render import build_script, check_template, render_workflow
from flowbatch.render.shellctx import Ctx, scan
from flowbatch.render.values import FUNCTION_CODE_HINT, sentinel
from flowbatch.spec.model import Parameter, Step, Template, Workflow

from .test_render_options import _archive
from .test_render_variables import DIALECTS, _command

VARIABLES = {"python": "python3"}
RUN = "touch PWNED"
#: a program's path: no token (a native template's token value may stand in program
#: text at render, as a select option's; its parameter is refused at install)
TOUCH = "/usr/bin/touch"

#: (command, a value that makes PWNED under bash when the template is not refused)
ATTACKS = [
    # the forms the review found
    ('f() { eval "$@"; }; f $[[s]]', RUN),
    ('f() { bash -c "$1"; }; f $[[s]]', RUN),
    ('g() { local c=$1; eval "$c"; }; g "$[[s]]"', RUN),
    # shifted, $*, copies of copies, `function NAME`, a subshell as the body
    ('f() { shift; eval "$1"; }; f x $[[s]]', RUN),
    ("f() { eval $*; }; f $[[s]]", RUN),
    ('f() { local a=$1; local c=$a; eval "$c"; }; f $[[s]]', RUN),
    ('function f { bash -c "$1"; }; f $[[s]]', RUN),
    ('f() ( eval "$1" ); f $[[s]]', RUN),
    # a function that calls another one that evals (defined before or after it)
    ('g() { eval "$1"; }; f() { g "$@"; }; f $[[s]]', RUN),
    ('f() { g "$1"; }; g() { eval "$1"; }; f $[[s]]', RUN),
    # defined after its call in the text, before the call runs (a loop's second turn)
    ('for i in 1 2; do [ "$i" = 2 ] && f $[[s]]; f() { eval "$1"; }; done', RUN),
    # alias and trap inside a function
    ('shopt -s expand_aliases; f() { alias x="$1"; }; f $[[s]]; eval x', RUN),
    ('f() { trap "$1" EXIT; }; f $[[s]]', RUN),
    # eval and trap after builtin or command, a trap outside a function, after --
    ('x=$[[s]]; builtin eval "$x"', RUN),
    ('x=$[[s]]; command eval "$x"', RUN),
    ('f() { builtin -- eval "$1"; }; f $[[s]]', RUN),
    ('x=$[[s]]; command -- eval "$x"', RUN),
    ('x=$[[s]]; builtin source /dev/stdin <<< "$x"', RUN),
    ('x=$[[s]]; trap "$x" EXIT', RUN),
    ('x=$[[s]]; trap -- "$x" EXIT', RUN),
    # a command named by a variable the text gives eval or a shell
    ('e=eval; x=$[[s]]; $e "$x"', RUN),
    ('e=bash; x=$[[s]]; $e -c "$x"', RUN),
    ('cmd=(eval); x=$[[s]]; "${cmd[@]}" "$x"', RUN),
    ("c='bash -c'; $c $[[s]]", RUN),
    ('for e in echo eval; do x=$[[s]]; $e "$x" > out.txt; done', RUN),
    ('e=eval; f=$e; "$f" $[[s]]', RUN),
    ('e=$(echo eval); "$e" $[[s]]', RUN),
    # a pipe (or a here-string) into a command named by a variable the text gives a shell
    ('x=$[[s]]; e=bash; echo "$x" | $e', RUN),
    ('x=$[[s]]; e=bash; echo "$x" | "$e"', RUN),
    ('x=$[[s]]; e=bash; echo "$x" | ${e} -s', RUN),
    ('x=$[[s]]; e=bash; cat <<<"$x" | $e', RUN),
    ('x=$[[s]]; e=bash; $e <<< "$x"', RUN),
    # program text inside an eval's text, read when eval runs
    ('x=$[[s]]; eval eval "\\$x"', RUN),
    ('x=$[[s]]; eval "eval \\"\\$x\\""', RUN),
    ("x=$[[s]]; eval 'bash -c \"$x\"'", RUN),
    ("x=$[[s]]; eval '$x'", RUN),
    ('x=$[[s]]; c=x; eval "eval \\"\\$$c\\""', RUN),
    # a trap's constant text that reads a variable when its signal comes
    ('x=$[[s]]; trap "\\$x" EXIT', RUN),
    ("x=$[[s]]; trap 'eval $x' EXIT", RUN),
    ("x=$[[s]]; trap -- 'bash -c \"$x\"' EXIT", RUN),
    ("x=$[[s]]; builtin trap '$x' EXIT", RUN),
    ("x=$[[s]]; trap '$x' INT; kill -INT $$", RUN),
    # a constant eval (or trap) text held in a variable, or one not known here
    ("x=$[[s]]; n='eval $x'; eval \"$n\"", RUN),
    ("x=$[[s]]; n='$x'; eval \"$n\"", RUN),
    ("x=$[[s]]; n='$x'; m=$n; builtin eval \"${m}\"", RUN),
    ('x=$[[s]]; n=\'bash -c "$x"\'; trap "$n" EXIT', RUN),
    ("x=$[[s]]; n=$(echo '$x'); eval \"$n\"", RUN),
    # a constant eval (or trap) text a function's body runs: given as its argument
    ("x=$[[s]]; g() { eval \"$1\"; }; g 'eval $x'", RUN),
    ("x=$[[s]]; g() { eval \"$@\"; }; g '$x'", RUN),
    ('x=$[[s]]; g() { local c=$1; eval "$c"; }; g \'bash -c "$x"\'', RUN),
    ("x=$[[s]]; g() { trap \"$1\" EXIT; }; g 'eval $x'", RUN),
    ('x=$[[s]]; g() { eval "$1"; }; f() { g "$1"; }; f \'$x\'', RUN),
    # what a process substitution prints, sourced or run by a shell
    ('x=$[[s]]; source <(echo "$x")', RUN),
    ('x=$[[s]]; builtin . <(echo "$x")', RUN),
    ('x=$[[s]]; bash <(echo "$x")', RUN),
    # "$@" as a command's name: the value names the program, or is split into the
    # command's words, or is the program text of the command the function runs
    ('run() { "$@"; }; run $[[s]] PWNED', TOUCH),
    ("run() { $@; }; run $[[s]]", RUN),
    ('run() { local c=$1; shift; "$c" "$@"; }; run $[[s]] PWNED', TOUCH),
    ('run() { "$@"; }; run bash -c $[[s]]', RUN),
    ('run() { nohup "$@"; }; run sh -c $[[s]]', RUN),
    ('f() { "$@"; }; f builtin eval $[[s]]', RUN),
    ('f() { "$@"; }; f command eval $[[s]]', RUN),
    ('f() { "$@"; }; f command -p -- bash -c $[[s]]', RUN),
    # through a shell variable: into a function, into eval, as a command's name
    ('m=$[[s]]; f() { eval "$1"; }; f "$m"', RUN),
    ('m=$[[s]]; eval "$m"', RUN),
    ('m=$[[s]]; echo "$m" | bash', RUN),
    ('set -- $[[s]]; eval "$1"', RUN),
    ('tool=$[[s]]; "$tool" PWNED', TOUCH),
    # a value as a command's name itself
    ("$[[s]] PWNED", TOUCH),
    ("command $[[s]] PWNED", TOUCH),
    ("env $[[s]] PWNED", TOUCH),
]

#: a function (or a variable) that uses the value as data: installed, rendered and run,
#: with the value (a would-be command) printed into out.txt
SAFE = [
    "f() { printf '%s\\n' \"$1\"; }; f $[[s]] > out.txt",
    "f() { local v=$1; printf '%s\\n' \"$v\"; }; f $[[s]] > out.txt",
    'run() { echo "+ $*" >&2; "$@"; }; run printf \'%s\\n\' $[[s]] > out.txt',
    'run() { local c=$1; shift; "$c" "$@"; }; run printf \'%s\\n\' $[[s]] > out.txt',
    "run() { \"$@\"; }; run builtin printf '%s\\n' $[[s]] > out.txt",
    # another function's eval does not make this one's arguments program text
    "f() { printf '%s\\n' \"$1\"; }; g() { eval \"$1\"; }; f $[[s]] > out.txt; g 'true'",
    # a shell's inline program given the value as its data
    'f() { bash -c \'printf "%s\\n" "$1"\' _ "$1"; }; f $[[s]] > out.txt',
    # a trap whose text expands the variable when it runs (single quotes): data
    'trap \'printf "%s\\n" "$v" > out.txt\' EXIT; v=$[[s]]',
    "cmd=printf; \"$cmd\" '%s\\n' $[[s]] > out.txt",
    # a command named by a variable the template gives a program that runs no code
    'e=echo; x=$[[s]]; $e "$x" > out.txt',
    'cmd=(printf \'%s\\n\'); x=$[[s]]; "${cmd[@]}" "$x" > out.txt',
    # a pipe into a command named by a variable the template gives a program that
    # reads data
    'e=cat; x=$[[s]]; echo "$x" | $e > out.txt',
    # an eval of the template's own text, or one that passes the value as data
    "x=$[[s]]; eval 'echo hi' > /dev/null; printf '%s\\n' \"$x\" > out.txt",
    'x=$[[s]]; eval \'printf "%s\\n" "$x"\' > out.txt',
    # an eval of a variable the template gives its own text, or one using the value as data
    "n='echo hi'; eval \"$n\" > /dev/null; x=$[[s]]; printf '%s\\n' \"$x\" > out.txt",
    'x=$[[s]]; n=\'printf "%s\\n" "$x"\'; eval "$n" > out.txt',
    # a function that evals the template's own text, given as its argument
    "x=$[[s]]; g() { eval \"$1\"; }; g 'echo hi' > /dev/null; printf '%s\\n' \"$x\" > out.txt",
    # a process substitution of the template's own text, sourced
    "x=$[[s]]; source <(printf 'y=1\\n'); printf '%s\\n' \"$x\" > out.txt",
    # eval's builtins named as data, a trap of the template's own text
    'x=$[[s]]; builtin echo "$x" > out.txt',
    "trap 'rm -f tmp' EXIT; touch tmp; printf '%s\\n' $[[s]] > out.txt",
]


def _template(command: str, dialect: str, dtype: str = "string") -> Template:
    return Template(
        dialect=dialect,  # type: ignore[arg-type]
        workflow=Workflow(steps=[Step("s", [_command(command, dialect)])]),
        parameters=[Parameter("s", dtype, 0, True)],  # type: ignore[arg-type]
    )


def _outcome(tmp_path: Path, t: Template, value: str) -> tuple[bool, bool, bool]:
    """Whether ``t`` installs, whether ``value`` renders into it, and whether, rendered
    and run by bash, it made ``PWNED``."""
    installed = rendered = True
    try:
        check_template(t, VARIABLES)
    except TemplateError as exc:
        installed = False
        assert exc.field == "workflow.steps[0].commands[0]", exc
    try:
        run = render_workflow(t, t.workflow, {"s": value}, VARIABLES)
    except RenderError:
        rendered = False
    else:
        (tmp_path / "run.sh").write_text(build_script(run, run_id="r1"))
        subprocess.run(["bash", "run.sh"], cwd=tmp_path, capture_output=True, timeout=60)
    return installed, rendered, (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(("command", "value"), ATTACKS)
def test_a_value_a_function_or_a_variable_puts_in_program_text_is_refused(
    tmp_path: Path, dialect: str, command: str, value: str
) -> None:
    installed, rendered, ran = _outcome(tmp_path, _template(command, dialect), value)
    assert not ran, f"{command!r} ran the participant's {value!r}"
    assert not installed and not rendered


def test_the_attacks_are_real_under_bash(tmp_path: Path) -> None:
    """Each attack, run by bash as the old code rendered it (the value quoted in its
    variable, one word), makes PWNED."""
    for k, (command, value) in enumerate(ATTACKS):
        folder = tmp_path / str(k)
        folder.mkdir()
        subprocess.run(
            ["bash", "-c", command.replace('"$[[s]]"', "$[[s]]").replace("$[[s]]", '"$FB_s"')],
            cwd=folder,
            env={"FB_s": value, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert (folder / "PWNED").exists(), command


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("command", SAFE)
def test_a_value_a_function_uses_as_data_is_installed_and_runs(
    tmp_path: Path, dialect: str, command: str
) -> None:
    installed, rendered, ran = _outcome(tmp_path, _template(command, dialect), RUN)
    assert installed and rendered and not ran
    assert (tmp_path / "out.txt").read_text() == RUN + "\n"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_function_s_data_with_dash_dash_still_runs(tmp_path: Path, dialect: str) -> None:
    """The options check's own safe form stays: ``--`` before the function's argument."""
    _archive(tmp_path)
    t = _template('f() { tar -xf data.tar -- "$1"; }; f $[[s]]', dialect)
    installed, rendered, ran = _outcome(tmp_path, t, "member.txt")
    assert installed and rendered and not ran
    assert (tmp_path / "member.txt").read_text() == "data\n"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_select_value_may_name_the_program(tmp_path: Path, dialect: str) -> None:
    """A token (a select option, a number) may stand in program text, a command's name
    too: the organiser chose it."""
    t = _template('run() { "$@"; }; run $[[s]] out.txt', dialect, dtype="int")
    check_template(t, VARIABLES)
    render_workflow(t, t.workflow, {"s": 3}, VARIABLES)


def test_the_refusal_names_the_function_the_construct_the_line_and_what_to_write() -> None:
    t = _template('f() {\n  eval "$@"\n}\necho start; f $[[s]]', "flowserv")
    with pytest.raises(TemplateError) as info:
        check_template(t, VARIABLES)
    exc = info.value
    assert exc.field == "workflow.steps[0].commands[0]"
    assert "parameter 's' is given to function f" in exc.reason
    assert 'eval "$@"' in exc.reason and "the call on line 4 of the command" in exc.reason
    assert exc.hint == FUNCTION_CODE_HINT and "as data" in exc.hint
    with pytest.raises(RenderError) as rendered:
        render_workflow(t, t.workflow, {"s": RUN}, VARIABLES)
    assert "function f" in rendered.value.reason and rendered.value.hint == FUNCTION_CODE_HINT
    t = _template("$[[s]] PWNED", "native")
    with pytest.raises(TemplateError, match="stands as a command's name") as named:
        check_template(t, VARIABLES)
    assert "declare the parameter select" in (named.value.hint or "")
    t = _template('m=$[[s]]; eval "$m"', "native")
    with pytest.raises(TemplateError, match=r"program text of eval, through shell variable \$m"):
        check_template(t, VARIABLES)


def test_calls_read_as_a_command_line() -> None:
    """A function that runs ``"$@"`` reads its calls as command lines: the first word
    is the command's name, a shell's ``-c`` its program text, the rest its data; after
    a ``shift``, the next word may be the name too."""
    x = sentinel(0)
    contexts = scan(f'run() {{ "$@"; }}; run python3 score.py {x}').contexts
    assert contexts[-3] is Ctx.UNQUOTED
    assert scan(f'run() {{ "$@"; }}; run sh -c {x}').contexts[-3] is Ctx.CODE
    shifted = f'run() {{ shift; "$@"; }}; run -v {x} a'
    assert scan(shifted).contexts[shifted.index(x)] is Ctx.CODE
    twice = f'run() {{ "$@"; }}; run python3 {x} a'
    assert scan(twice).contexts[twice.index(x)] is Ctx.UNQUOTED
