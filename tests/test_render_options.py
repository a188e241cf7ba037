"""A participant's value that begins with ``-`` where a program reads its options is an
option, not data: the shell's quotes keep it one word, but the program still parses that
word (``tar -xf a.tar $[[m]]`` with ``--to-command=...`` runs a command, ``ssh $[[h]]``
with ``-oProxyCommand=...`` too, ``find $[[d]] -name '*.log'`` with ``-delete`` deletes
everything). Such a value is refused at render (intake, ``validate``, ``submit``), naming
the request's argument, the command and the safe forms; after ``--``, inside an option's
own word (``--in=$[[x]]``), as a number, a select option or the organiser's own text it
stands, and the shell's own syntax (``for``, ``case``, ``[``) reads no options."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowbatch import api
from flowbatch.errors import RenderError
from flowbatch.render import build_script, render_workflow
from flowbatch.render.shellctx import option_words, scan
from flowbatch.spec.model import Parameter, SelectValue, Step, Template, Workflow
from tests.conftest import drop, make_site, run_until_idle, write_template

VARIABLES = {"python": "python3"}


def _template(
    command: str,
    dialect: str = "flowserv",
    params: list[Parameter] | None = None,
    context: dict[str, Any] | None = None,
) -> Template:
    if dialect == "native":
        command = command.replace("$[[s]]", "{{ s }}")
    return Template(
        dialect=dialect,  # type: ignore[arg-type]
        workflow=Workflow(steps=[Step("s", [command])], context=context or {}),
        parameters=params or [Parameter("s", "string", 0, True)],
    )


def _render(t: Template, args: dict[str, Any]) -> str:
    """The one command of ``t`` rendered for ``args`` (raises RenderError)."""
    return render_workflow(t, t.workflow, args, VARIABLES).steps[0].commands[0]


def _ran(tmp_path: Path, t: Template, args: dict[str, Any]) -> bool:
    """Render ``t`` for ``args`` (False when refused) and run it with bash in
    ``tmp_path``: whether it made ``PWNED`` (the value did what an option does)."""
    try:
        rendered = render_workflow(t, t.workflow, args, VARIABLES)
    except RenderError:
        return False
    (tmp_path / "run.sh").write_text(build_script(rendered, run_id="r1"))
    subprocess.run(["bash", "run.sh"], cwd=tmp_path, capture_output=True, timeout=60)
    return (tmp_path / "PWNED").exists()


def _archive(folder: Path) -> None:
    (folder / "member.txt").write_text("data\n")
    with tarfile.open(folder / "data.tar", "w") as tar:
        tar.add(folder / "member.txt", arcname="member.txt")
    (folder / "member.txt").unlink()


ATTACKS = [
    # tar runs the command for each member extracted
    ("tar -xf data.tar $[[s]]", "--to-command=touch PWNED"),
    # ssh runs its ProxyCommand with the user's shell before connecting
    ("ssh -o BatchMode=yes -F /dev/null $[[s]] true", "-oProxyCommand=touch PWNED"),
    # the value in a wrapper's command, and in a command substitution
    ("timeout 30 tar -xf data.tar $[[s]]", "--to-command=touch PWNED"),
    ("echo $(tar -xf data.tar $[[s]])", "--to-command=touch PWNED"),
]


@pytest.mark.parametrize("dialect", ["flowserv", "native"])
@pytest.mark.parametrize(("command", "value"), ATTACKS)
def test_a_value_read_as_an_option_is_refused_and_runs_nothing(
    tmp_path: Path, dialect: str, command: str, value: str
) -> None:
    _archive(tmp_path)
    t = _template(command, dialect)
    with pytest.raises(RenderError, match="begins with '-'"):
        _render(t, {"s": value})
    assert not _ran(tmp_path, t, {"s": value})
    # the same value after `--` is data: the program takes it for a name
    safe = command.replace("$[[s]]", "-- $[[s]]")
    assert not _ran(tmp_path, _template(safe, dialect), {"s": value})


def test_a_value_read_as_find_s_expression_deletes_nothing(tmp_path: Path) -> None:
    """``find $[[d]] -name '*.log'`` with ``-delete``: every file of the folder gone."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "keep.txt").write_text("precious\n")
    t = _template("cd data && find $[[s]] -name '*.log' -print")
    with pytest.raises(RenderError, match="find would take it for an option"):
        _render(t, {"s": "-delete"})
    _ran(tmp_path, t, {"s": "-delete"})
    assert (data / "keep.txt").read_text() == "precious\n"
    assert _render(t, {"s": "."}) == "cd data && find \"${FB_s}\" -name '*.log' -print"


def test_the_refusal_names_the_argument_the_command_and_the_safe_forms() -> None:
    t = _template("tar -xf data.tar $[[s]]")
    with pytest.raises(RenderError) as info:
        _render(t, {"s": "--to-command=sh"})
    exc = info.value
    assert exc.field == "arguments.s"
    assert "parameter 's'" in exc.reason and "tar would take it for an option" in exc.reason
    assert "workflow.steps[0].commands[0]" in exc.reason
    assert exc.hint is not None
    assert "-- $[[x]]" in exc.hint and "--input=$[[x]]" in exc.hint and "select" in exc.hint


@pytest.mark.parametrize(
    ("command", "value"),
    [
        ("tar -xf data.tar -- $[[s]]", "--to-command=sh"),  # after --
        ("prog --in=$[[s]]", "-x"),  # the option's own word
        ('prog "in-$[[s]]"', "-x"),  # begun by the template's text
        ("prog $[[s]]", "-"),  # a lone dash: standard input, by custom
        ("cat $[[s]] < /dev/null", "-"),
        ("prog $[[s]]", "x-y"),
        ("echo $[[s]]", "-5 apples"),  # echo prints any word but -n, -e, -E
        ("printf '%s\\n' $[[s]]", "-v"),  # a builtin's options end at its first operand
        ("source lib.sh $[[s]]", "-x"),
        ("python3 -c 'import sys; print(sys.argv[1])' $[[s]]", "-x"),  # the code's data
        ("bash -c 'echo \"$1\"' _ $[[s]]", "-x"),
        ("x=$[[s]]; prog", "-x"),  # an assignment
        ("prog > $[[s]]", "-x"),  # a redirection's file
        ("for f in $[[s]]; do prog; done", "-x"),  # the shell's own syntax
        ("case $[[s]] in -*) prog ;; esac", "-x"),
        ("[ $[[s]] = -x ] && prog", "-x"),
        ("[[ $[[s]] == -* ]] && prog", "-x"),
        ("prog <<EOF\n$[[s]]\nEOF", "-x"),  # a here-document's body is data
        (": $[[s]]", "-x"),
    ],
)
def test_a_value_where_no_option_is_read_stands(command: str, value: str) -> None:
    _render(_template(command), {"s": value})


@pytest.mark.parametrize(
    ("command", "value"),
    [
        ("echo $[[s]]", "-n"),
        ("echo $[[s]] x", "-eE"),
        ("printf $[[s]] x", "-vPATH"),  # printf -v assigns PATH
        ("printf -v out $[[s]] x", "-vPATH"),
        ("prog $[[s]]rf", "-"),  # a lone dash the template's text makes an option
        ('prog "$[[s]]"', "-x"),  # quotes make one word, still an option
        ("prog a b $[[s]]", "-x"),  # GNU getopt permutes: options anywhere
        ("srun -n 2 prog $[[s]]", "-x"),
        ("srun $[[s]] prog", "--export=ALL"),  # a wrapper's own options
        ("prog $[[s]] -- x", "-x"),  # the -- comes after it
        ("set $[[s]]", "-x"),
    ],
)
def test_a_value_where_an_option_is_read_is_refused(command: str, value: str) -> None:
    with pytest.raises(RenderError, match="begins with '-'"):
        _render(_template(command), {"s": value})


def test_numbers_select_options_defaults_and_the_organisers_constants_may_begin_with_a_dash() -> (
    None
):
    ints = [Parameter("s", "int", 0, True)]
    assert _render(_template("prog $[[s]]", params=ints), {"s": -5}) == 'prog "${FB_s}"'
    opts = [SelectValue("-O2", "-O2"), SelectValue("-O3", "-O3")]
    select = [Parameter("s", "select", 0, True, values=opts)]
    for dialect in ("flowserv", "native"):
        t = _template("cc $[[s]] main.c", dialect, select)
        assert _render(t, {"s": "-O3"}).startswith("cc ")
    default = [Parameter("s", "string", 0, False, default="--fast", has_default=True)]
    for dialect in ("flowserv", "native"):
        t = _template("prog $[[s]]", dialect, default)
        _render(t, {})  # the organiser's default
        with pytest.raises(RenderError):
            _render(t, {"s": "--slow"})  # the participant's
    flag = [Parameter("g", "bool", 0, True)]
    t = _template("prog {{ '--gpu' if g else 'cpu' }}", "native", flag)
    assert _render(t, {"g": True}) == 'prog "${FB_v}"'
    t = _template("prog {{ '-' ~ s }}", "native")
    with pytest.raises(RenderError):
        _render(t, {"s": "x"})  # '-x' is no constant of the template's


def test_a_context_value_begun_by_the_organisers_text_stands() -> None:
    """flowServ's ``workflow.parameters``: ``--in=$[[s]]`` begins with the organiser's
    dash; ``$[[s]]`` alone is the participant's."""
    t = _template("prog ${opt}", context={"opt": "--in=$[[s]]"})
    assert _render(t, {"s": "-x"}) == 'prog "${FB_opt}"'
    t = _template("prog ${opt}", context={"opt": "$[[s]].txt"})
    with pytest.raises(RenderError, match="context variable 'opt'"):
        _render(t, {"s": "-x"})


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["tar", "-xf", "a", "X"], [1, 2, 3]),
        (["tar", "-xf", "a", "--", "X"], [1, 2]),
        (["printf", "%s", "X"], [1]),
        (["printf", "-v", "v", "X", "Y"], [1, 2, 3]),  # after -v's argument, the format
        (["echo", "-n", "-e", "X", "-n"], [1, 2, 3]),
        (["echo", "--", "X"], [1]),  # echo prints --, and any word after
        (["for", "x", "in", "X"], []),
        (["test", "X", "=", "y"], []),
        (["timeout", "10", "prog", "X", "--", "Y"], [1, 2, 3]),  # prog: timeout's word
        (["env", "A=1", "timeout", "5", "prog", "X"], [1, 2, 3, 4, 5]),
        (["cd", "-P", "X", "Y", "Z"], [1, 2, 3]),  # X may be -P's argument: Y too
        # an inline program's data: sys.argv, $0 and $1..., not the interpreter's options
        (["python3", "-c", "CODE", "X"], [1, 2]),
        (["python3", "-Wall", "-cCODE", "X"], [1, 2]),
        (["${python}", "-", "X"], [1]),
        (["python3", "-m", "mod", "X"], [1, 2, 3]),  # a module reads options as a script
        (["python3", "score.py", "X"], [1, 2]),  # a script may read options (argparse)
        (["bash", "-c", "CODE", "_", "X"], [1, 2]),
        (["bash", "-s", "X"], [1, 2]),  # bash -s -c CODE runs CODE
        (["bash", "-s", "--", "X"], [1]),
        (["bash", "run.sh", "X"], [1, 2]),
    ],
)
def test_which_words_a_command_reads_as_options(words: list[str], expected: list[int]) -> None:
    assert [k for k, _ in option_words(words)] == expected


def test_the_places_are_found_in_nested_commands_and_here_documents() -> None:
    text = "cat <<EOF\n$(rm \x000\x01)\nEOF\n"
    (start, end, command), *_ = scan(text).options
    assert text[start:end] == "\x000\x01" and command == "rm"


TEMPLATE = """
workflow:
  steps:
    - name: s
      action:
        commands:
          - tar -xf data.tar $[[member]] && echo ok > results/ok.txt
parameters:
  - {name: member, dtype: string}
"""


def test_a_request_with_such_a_value_is_rejected_beside_its_error(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", {"root_requests": True})
    try:
        api.install(site, write_template(tmp_path / "t", TEMPLATE), workflow_id="wf")
        evil = "--to-command=touch PWNED"
        drop(site, "r.yaml", {"workflow": "wf", "arguments": {"member": evil}})
        run_until_idle(site)
        assert (site.layout.rejected / "r.yaml").exists()  # kept beside its error
        info = yaml.safe_load((site.layout.rejected / "r.yaml.error.yaml").read_text())
        assert info["file"] == "r.yaml" and info["field"] == "arguments.member", info
        assert "tar would take it for an option" in info["reason"]
        assert api.list_runs(site) == []
    finally:
        site.close()


# -- found by review of the first version ------------------------------------------------------

BYPASSES = [
    # find reads a starting point beginning with '-' as its expression, even after --
    ("find -- $[[s]] -name '*.log' -print", "-delete"),
    # /usr/bin/time is a program (a wrapper), not the time keyword
    ("/usr/bin/time -o t.txt tar -xf data.tar $[[s]]", "--to-command=touch PWNED"),
    # a wrapper's -- begins its command, which reads options again
    ("prlimit --nofile=256 -- tar -xf data.tar $[[s]]", "--to-command=touch PWNED"),
    # a shell's inline program puts its data where a command reads options
    ("bash -c 'tar -xf data.tar \"$1\"' _ $[[s]]", "--to-command=touch PWNED"),
    ("sh -c 'tar -xf data.tar \"$@\"' sh $[[s]]", "--to-command=touch PWNED"),
]


@pytest.mark.parametrize("dialect", ["flowserv", "native"])
@pytest.mark.parametrize(("command", "value"), BYPASSES)
def test_the_reviews_bypasses_are_refused_and_run_nothing(
    tmp_path: Path, dialect: str, command: str, value: str
) -> None:
    _archive(tmp_path)
    (tmp_path / "keep.txt").write_text("precious\n")
    t = _template(command, dialect)
    with pytest.raises(RenderError, match="begins with '-'"):
        _render(t, {"s": value})
    assert not _ran(tmp_path, t, {"s": value})
    assert (tmp_path / "keep.txt").exists()


def test_bash_s_reads_options_after_its_first_operand(tmp_path: Path) -> None:
    """``bash -s A B`` with A = ``-c``: bash runs B (its options go on after -s)."""
    params = [Parameter("a", "string", 0, True), Parameter("b", "string", 1, True)]
    t = _template("bash -s $[[a]] $[[b]] <<'SH'\necho hi\nSH", params=params)
    args = {"a": "-c", "b": "touch PWNED"}
    with pytest.raises(RenderError, match="parameter 'a'"):
        _render(t, args)
    assert not _ran(tmp_path, t, args)
    safe = _template("bash -s -- $[[a]] $[[b]] <<'SH'\necho \"$1\"\nSH", params=params)
    assert not _ran(tmp_path, safe, args)


def test_a_native_value_equal_to_the_templates_constant_is_still_the_participants(
    tmp_path: Path,
) -> None:
    """The organiser's text may begin with '-', the same text from the request may not
    (it was let through when it equalled any constant, select option or default of the
    template's, in any step: the order of the steps decided)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("precious\n")
    params = [Parameter("s", "string", 0, True), Parameter("clean", "bool", 1, True)]
    t = _template(
        "cd data && find {{ s }} -name '*.log' {{ '-delete' if clean else '-print' }}",
        "native",
        params,
    )
    args = {"s": "-delete", "clean": False}
    with pytest.raises(RenderError, match="argument 's'"):
        _render(t, args)
    _ran(tmp_path, t, args)
    assert (tmp_path / "data" / "keep.txt").exists()
    assert "-print" in _ran_text(t, {"s": ".", "clean": False})
    for steps in (["prog {{ s }}", "prog {{ '--fast' }}"], ["prog {{ '--fast' }}", "prog {{ s }}"]):
        two = Template(
            dialect="native",
            workflow=Workflow(steps=[Step("a", [steps[0]]), Step("b", [steps[1]])]),
            parameters=[Parameter("s", "string", 0, True)],
        )
        with pytest.raises(RenderError):
            render_workflow(two, two.workflow, {"s": "--fast"}, VARIABLES)


def _ran_text(t: Template, args: dict[str, Any]) -> str:
    """The rendered commands of ``t`` and their variables, as one text."""
    rendered = render_workflow(t, t.workflow, args, VARIABLES)
    return "\n".join(c for s in rendered.steps for c in s.commands) + str(rendered.env)


def test_options_the_organiser_builds_in_jinja_stand() -> None:
    """``{{ '--lr=' ~ lr }}``: the option's name is the template's; a list default's
    flags are the organiser's; the same flags from the request are not."""
    lr = [Parameter("lr", "float", 0, False, default=0.1, has_default=True)]
    for command in ("python3 train.py {{ '--lr=' ~ lr }}", "python3 train.py {{ '--lr=%s' % lr }}"):
        assert "--lr=0.2" in _ran_text(_template(command, "native", lr), {"lr": 0.2})
    element = Parameter("o", "string", 0, True)
    flags = [
        Parameter("l", "list", 0, False, default=["-O2", "-g"], has_default=True, para=element)
    ]
    t = _template("cc {% for o in l %}{{ o }} {% endfor %}main.c", "native", flags)
    assert "-O2" in _ran_text(t, {})
    with pytest.raises(RenderError, match="argument 'l'"):
        _render(t, {"l": ["-O3", "-fplugin=evil.so"]})
    # the option's name from the request: refused
    t = _template("prog {{ '-' ~ s }}", "native")
    with pytest.raises(RenderError):
        _render(t, {"s": "-to-command=sh"})


def test_the_native_refusal_names_the_argument_in_its_dialect() -> None:
    t = _template("tar -xf data.tar {{ s }}", "native")
    with pytest.raises(RenderError) as info:
        _render(t, {"s": "--to-command=sh"})
    assert info.value.field == "arguments.s"
    assert info.value.hint is not None and "-- {{ x }}" in info.value.hint
    assert "$[[" not in info.value.hint


def test_a_scripts_option_is_said_to_be_the_scripts_and_a_number_gets_its_hint() -> None:
    for dialect in ("flowserv", "native"):
        t = _template("python3 -u score.py --threshold $[[s]]", dialect)
        with pytest.raises(RenderError) as info:
            _render(t, {"s": "-0.5"})  # a string parameter: as text, an option
        assert "python3 score.py would take it for an option" in info.value.reason
        assert info.value.hint is not None and "int or float" in info.value.hint
    floats = [Parameter("s", "float", 0, True)]
    for dialect in ("flowserv", "native"):
        _render(_template("python3 score.py --threshold $[[s]]", dialect, floats), {"s": -0.5})


XARGS = [
    # xargs splits its input at blanks: a value need not even begin with '-'
    ("echo $[[s]] | xargs tar -xf data.tar", "member.txt --to-command=touch${IFS}PWNED"),
    ("printf '%s\\n' $[[s]] | xargs -I{} tar -xf data.tar {}", "--to-command=touch PWNED"),
    ("xargs tar -xf data.tar <<EOF\n$[[s]]\nEOF", "--to-command=touch${IFS}PWNED"),
    ("xargs tar -xf data.tar <<< $[[s]]", "--to-command=touch${IFS}PWNED"),
]


@pytest.mark.parametrize("dialect", ["flowserv", "native"])
@pytest.mark.parametrize(("command", "value"), XARGS)
def test_a_value_xargs_hands_to_a_command_as_options_is_refused(
    tmp_path: Path, dialect: str, command: str, value: str
) -> None:
    _archive(tmp_path)
    t = _template(command, dialect)
    with pytest.raises(RenderError, match="may reach the input of xargs"):
        _render(t, {"s": value})
    assert not _ran(tmp_path, t, {"s": value})
    # what xargs adds after the command's -- is data
    safe = _template(command.replace("data.tar", "data.tar --", 1), dialect)
    if "{}" not in command:
        _render(safe, {"s": value})
        assert not _ran(tmp_path, safe, {"s": value})
    _render(t, {"s": "member.txt other.txt"})  # no word begins with '-'


# -- found by the re-review -------------------------------------------------------------------

INLINE = [
    # a shell's inline program evaluates its $1 as arithmetic, code or a name: refused as
    # a value standing there directly is (at install for a string parameter)
    ("bash -c '[[ $1 -gt 0 ]] && echo big' _ $[[s]]", "a[$(touch PWNED)]"),
    ("bash -c 'echo $(( $1 + 1 ))' _ $[[s]]", "a[$(touch PWNED)]"),
    ("bash -c 'eval \"$1\"' _ $[[s]]", "touch PWNED"),
    ("bash -ec 'printf -v \"$1\" x' sh $[[s]]", "a[$(touch PWNED)]"),
]


@pytest.mark.parametrize(("command", "value"), INLINE)
def test_a_shells_inline_program_is_read_for_where_it_evaluates_its_arguments(
    tmp_path: Path, command: str, value: str
) -> None:
    from flowbatch.errors import TemplateError
    from flowbatch.render import check_template

    t = _template(command)
    with pytest.raises(TemplateError):
        check_template(t, VARIABLES)
    assert not _ran(tmp_path, t, {"s": value})


SPLIT = [
    # unquoted: bash splits the value, any of its words may be the option
    ("bash -c 'tar -xf data.tar $1' _ $[[s]]", "member.txt --to-command=touch${IFS}PWNED"),
    # $10 is ${1}0
    ("bash -c 'tar -xf data.tar \"$10\"' _ $[[s]]", "--to-command=touch PWNED;:"),
    # "--$@": its second and later words are whole words
    ("bash -c 'tar -xf data.tar \"--$@\" member.txt' _ verbose $[[s]]", "--to-command=touch PWNED"),
    # setarch's --, then its command (a wrapper it did not know)
    ("setarch x86_64 -R -- tar -xf data.tar $[[s]]", "--to-command=touch PWNED"),
    # xargs reads quotes and backslashes, and a -d delimiter
    ("echo $[[s]] | xargs tar -xf data.tar", '"--to-command=touch PWNED"'),
    ("echo $[[s]] | xargs -d, tar -xf data.tar", "member.txt,--to-command=touch PWNED"),
    ("echo $[[s]] | xargs --show-limits tar -xf data.tar", "--to-command=touch${IFS}PWNED"),
]


@pytest.mark.parametrize(("command", "value"), SPLIT)
def test_the_re_reviews_bypasses_are_refused_and_run_nothing(
    tmp_path: Path, command: str, value: str
) -> None:
    _archive(tmp_path)
    t = _template(command)
    with pytest.raises(RenderError, match="for an option of its own"):
        _render(t, {"s": value})
    assert not _ran(tmp_path, t, {"s": value})


def test_a_filter_does_not_make_the_participants_option_the_organisers(tmp_path: Path) -> None:
    """``{{ member|trim }}``: the value is no longer the request's text, but it holds the
    organiser's option name ``--checkpoint-action=``, which the participant wrote."""
    _archive(tmp_path)
    params = [Parameter("member", "string", 0, True), Parameter("act", "string", 1, True)]
    t = _template(
        "tar --checkpoint=1 {{ '--checkpoint-action=' ~ act }} -xf data.tar {{ member|trim }}",
        "native",
        params,
    )
    args = {"member": " --checkpoint-action=exec=touch PWNED", "act": "dot"}
    # the organiser's own '--checkpoint-action=' ~ act is no longer vouched for either:
    # the request is refused at its first such value
    with pytest.raises(RenderError, match="begins with '-'"):
        _render(t, args)
    assert not _ran(tmp_path, t, args)
    _render(t, {"member": "member.txt", "act": "dot"})


def test_select_options_in_a_list_and_a_record_stand_in_both_dialects() -> None:
    options = [SelectValue("--fast", "--fast"), SelectValue("--slow", "--slow")]
    element = Parameter("f", "select", 0, True, values=options)
    flags = [Parameter("flags", "list", 0, True, para=element)]
    t = _template("python3 run.py {% for f in flags %}{{ f }} {% endfor %}", "native", flags)
    assert "--fast" in _ran_text(t, {"flags": ["--fast"]})
    mode = Parameter("mode", "select", 0, True, values=options)
    record = [Parameter("r", "record", 0, True, fields=[mode])]
    t = _template("python3 run.py {{ r.mode }}", "native", record)
    assert "--slow" in _ran_text(t, {"r": {"mode": "--slow"}})
