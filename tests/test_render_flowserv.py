"""flowServ dialect: placeholder layers, errors, install-time checks, the Hello World seed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowbatch.errors import MissingArgument, RenderError, TemplateError
from flowbatch.render import build_script, check_template, read_markers, render_workflow
from flowbatch.spec.model import FileArg, Parameter, PostProc, Step, Template, Workflow

VARS = {"python": sys.executable}


def params(**dtypes: str) -> list[Parameter]:
    return [Parameter(name, dtype, i, False) for i, (name, dtype) in enumerate(dtypes.items())]  # type: ignore[arg-type]


def tpl(commands: list[str], context: dict[str, Any] | None = None, **dtypes: str) -> Template:
    workflow = Workflow(steps=[Step("main", commands)], context=context or {})
    return Template(dialect="flowserv", workflow=workflow, parameters=params(**dtypes))


def render(template: Template, **args: Any) -> tuple[list[str], dict[str, str]]:
    rendered = render_workflow(template, template.workflow, args, VARS)
    return rendered.steps[0].commands, rendered.env


def test_parameter_mid_string_in_command_and_context() -> None:
    t = tpl(["run --in=data/$[[n]].csv ${out}"], {"out": "--out=res/$[[n]]/x.json"}, n="string")
    commands, env = render(t, n="a b")
    assert commands == ['run --in=data/"${FB_n}".csv "${FB_out}"']
    assert env == {"FB_n": "a b", "FB_out": "--out=res/a b/x.json"}


def test_author_literal_context_is_pasted() -> None:
    t = tpl(
        ['cat "${outputfile}" ${flags} ${n}'],
        {"outputfile": "results/g.txt", "flags": "-a -b", "n": 3},
    )
    commands, env = render(t)
    assert commands == ['cat "results/g.txt" -a -b 3']
    assert env == {}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "run --fast -v"),
        (False, "run --slow "),
        ("TRUE", "run --fast -v"),
        ("no", "run --slow "),
    ],
)
def test_conditionals(value: Any, expected: str) -> None:
    t = tpl(["run $[[f ? --fast : --slow]] ${v}"], {"v": "$[[f ? -v]]"}, f="bool")
    commands, env = render(t, f=value)
    assert commands == [expected]
    assert "FB_f" in env  # the parameter is still exported for programs to read


def test_dollar_escapes_and_shell_dollars_stay() -> None:
    t = tpl(["echo $$HOME $${HOME} $$ $1 $? $@ $(pwd) ${#a[@]} ${x:-y} $$[[p]]"])
    commands, _ = render(t)
    assert commands == ["echo $HOME ${HOME} $ $1 $? $@ $(pwd) ${#a[@]} ${x:-y} $[[p]]"]


def test_site_variables_are_pasted_and_win_over_context() -> None:
    t = tpl(["${python} x.py $java"], {"python": "nope"})
    rendered = render_workflow(t, t.workflow, {}, {"python": "/opt/py3", "java": "/usr/bin/java"})
    assert rendered.steps[0].commands == ["/opt/py3 x.py /usr/bin/java"]


def test_parameters_by_name_and_values_formatting() -> None:
    t = tpl(
        ["p ${b} $i ${f} ${l} ${r} ${file}"],
        b="bool",
        i="int",
        f="float",
        l="list",
        r="record",
        file="file",
    )
    args = {
        "b": False,
        "i": 7,
        "f": 1.5,
        "l": [1, "a"],
        "r": {"k": "v"},
        "file": FileArg("up/x.csv", "data/x.csv"),
    }
    commands, env = render(t, **args)
    assert commands == ['p "${FB_b}" "${FB_i}" "${FB_f}" "${FB_l}" "${FB_r}" "${FB_file}"']
    assert env == {
        "FB_b": "False",
        "FB_i": "7",
        "FB_f": "1.5",
        "FB_l": '[1, "a"]',
        "FB_r": '{"k": "v"}',
        "FB_file": "data/x.csv",
    }


def test_defaults_fill_missing_arguments() -> None:
    t = tpl(["sleep $[[s]]"], s="int")
    t.parameters[0].default, t.parameters[0].has_default = 0, True
    commands, env = render(t)
    assert commands == ['sleep "${FB_s}"']
    assert env == {"FB_s": "0"}


def test_context_sharing_a_parameters_name_shares_its_variable() -> None:
    t = tpl(['x "${sleeptime}" $[[sleeptime]]'], {"sleeptime": "$[[sleeptime]]"}, sleeptime="int")
    commands, env = render(t, sleeptime=5)
    assert commands == ['x "${FB_sleeptime}" "${FB_sleeptime}"']
    assert env == {"FB_sleeptime": "5"}


def test_variable_names_never_collide() -> None:
    t = tpl(
        ["x $[[a-b]] $[[a_b]] $[[a.b]] ${v}"],
        {"v": "$[[a_b]]!"},
        **{"a-b": "string", "a_b": "string", "a.b": "string"},
    )
    commands, env = render(t, **{"a-b": "1", "a_b": "2", "a.b": "3"})
    assert env == {"FB_a_b": "2", "FB_a_b_2": "1", "FB_a_b_3": "3", "FB_v": "2!"}
    assert commands == ['x "${FB_a_b_2}" "${FB_a_b}" "${FB_a_b_3}" "${FB_v}"']


def test_unknown_variable_is_an_error() -> None:
    t = tpl(["echo ${HOME}"])
    with pytest.raises(RenderError, match="HOME"):
        render(t)
    with pytest.raises(TemplateError) as info:
        check_template(t, VARS)
    assert info.value.field == "workflow.steps[0].commands[0]"
    assert "$${HOME}" in (info.value.hint or "")


def test_unknown_parameter_and_missing_argument() -> None:
    with pytest.raises(RenderError, match="names no parameter"):
        render(tpl(["echo $[[nope]]"]))
    with pytest.raises(MissingArgument, match="no value for parameter 'n'") as missing:
        render(tpl(["echo $[[n]]"], n="string"))
    assert missing.value.field == "arguments.n"  # the request's to give
    with pytest.raises(MissingArgument, match="no value for parameter 'n'"):
        render(tpl(["echo $[[n ? a : b]]"], n="bool"))


def test_unreferenced_context_with_missing_argument_is_fine() -> None:
    commands, _ = render(tpl(["echo hi"], {"c": "$[[n]]"}, n="string"))
    assert commands == ["echo hi"]


@pytest.mark.parametrize(
    "command",
    [
        "awk '{print \"$[[s]]\"}'",
        "python -c 'print(\"${s}\")'",
        "sh -c 'echo ${c}'",  # context derived from a string
        "awk 'BEGIN { print \"$[[f]]\" }'",  # file
        "cat <<'EOF'\n$[[s]]\nEOF",  # a literal heredoc body
        "echo \"$(echo '$[[s]]')\"",
        "echo $[[n ? ' : x]]$[[s]]'",  # the true branch opens a quote
    ],
)
def test_user_strings_in_single_quotes_are_refused(command: str) -> None:
    t = tpl(["true", command], {"c": "x$[[s]]"}, s="string", f="file", n="bool")
    with pytest.raises(TemplateError) as info:
        check_template(t, VARS)
    assert info.value.field == "workflow.steps[0].commands[1]"
    assert "read $FB_" in (info.value.hint or "") and "separate argument" in (info.value.hint or "")
    args = {"s": "x", "f": FileArg("a", "b"), "n": True}
    with pytest.raises(RenderError, match="single quotes"):
        render(t, **args)


def test_tokens_in_single_quotes_are_allowed() -> None:
    t = tpl(
        ["awk 'BEGIN { print $[[i]] + ${c} ; print \"$[[sel]] $[[b]]\" }'"],
        {"c": "1$[[i]]"},
        i="int",
        sel="select",
        b="bool",
    )
    check_template(t, VARS)
    commands, _ = render(t, i=2, sel="x-y", b=False)
    assert commands == ["awk 'BEGIN { print 2 + 12 ; print \"x-y False\" }'"]


def test_token_with_a_quote_is_refused_in_single_quotes() -> None:
    t = tpl(["echo '$[[sel]]'"], sel="select")
    with pytest.raises(RenderError, match="single quotes"):
        render(t, sel="it's")


# (command, output for n=3): '{P}' is the placeholder ('$$' is the shell's '$'); every construct bash evaluates as
# arithmetic, where a value's own subscript would run a command (a[$(touch PWNED)])
ARITH_COMMANDS = [
    ("echo $(( {P} + 1 ))", "4"),
    ('echo "total: $(( "{P}" * 2 ))"', "total: 6"),
    ("echo $(( $(echo {P}) - 1 ))", "2"),
    ("echo $[ {P} + 1 ]", "4"),
    ("(( {P} > 1 )) && echo big", "big"),
    ("for (( i = 1; i < {P}; i++ )); do echo $$i; done", "1\n2"),
    ("[[ {P} -eq 3 ]] && echo three", "three"),
    ('let "y = {P} + 1"; echo $$y', "4"),
    ("declare -i y={P}*2; echo $$y", "6"),
    ("a=(x y z w); a[{P}]=v; echo ${a[3]}", "v"),
    ('a=(x y z w); echo "${a[{P}]}"', "w"),
    ("a=([{P}]=v); echo ${a[3]}", "v"),
    ('v=abcdef; echo "${v:{P}}" ${v:1:{P}}', "def bcd"),
]


@pytest.mark.parametrize(("command", "output"), ARITH_COMMANDS)
@pytest.mark.parametrize("placeholder", ["$[[s]]", "${s}", "$s", "$[[f]]", "${c}"])
def test_user_values_in_arithmetic_are_refused(command: str, output: str, placeholder: str) -> None:
    t = tpl(
        ["true", command.replace("{P}", placeholder)],
        {"c": "1$[[s]]"},  # a context value with a user's text in it
        s="string",
        f="file",
    )
    with pytest.raises(TemplateError) as info:
        check_template(t, VARS)
    assert info.value.field == "workflow.steps[0].commands[1]"
    assert "arithmetic context, where bash evaluates its value as code" in info.value.reason
    assert "outside arithmetic" in (info.value.expected or "")
    assert '[ "$x" -eq 1 ]' in (info.value.hint or "")
    assert "int" in (info.value.hint or "")
    with pytest.raises(RenderError, match="arithmetic context") as rendered:
        render(t, s="3", f=FileArg("a", "3"))
    assert rendered.value.field == "workflow.steps[0].commands[1]"
    assert '[ "$x" -eq 1 ]' in (rendered.value.hint or "")


def run_main(template: Template, tmp_path: Path, **args: Any) -> str:
    """Check, render and run ``template`` with bash; the output of its step."""
    check_template(template, VARS)
    rendered = render_workflow(template, template.workflow, args, VARS)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.sh").write_text(build_script(rendered, run_id="r1"))
    proc = subprocess.run(["bash", "run.sh"], cwd=run_dir, capture_output=True, timeout=60)
    assert proc.returncode == 0, (run_dir / "logs" / "step-01-main.err").read_text()
    return (run_dir / "logs" / "step-01-main.out").read_text()


@pytest.mark.parametrize(("command", "output"), ARITH_COMMANDS)
@pytest.mark.parametrize("placeholder", ["$[[n]]", "${n}", "${c}"])
def test_arithmetic_takes_tokens_only(
    tmp_path: Path, command: str, output: str, placeholder: str
) -> None:
    """An int stands in arithmetic and bash computes with it; a string in its place is
    refused."""
    t = tpl([command.replace("{P}", placeholder)], {"c": "$[[n]]"}, n="int")
    assert run_main(t, tmp_path, n=3) == output + "\n"
    with pytest.raises(TemplateError, match="arithmetic"):
        check_template(tpl([command.replace("{P}", "$[[n]]")], n="string"), VARS)


def test_float_and_select_in_arithmetic(tmp_path: Path) -> None:
    """A float in a program's text inside $(( )) is pasted; a select is a token."""
    t = tpl(
        [
            "echo $(( $(awk 'BEGIN { print int($[[x]] * 4) }') + $[[k]] ))",
            "[[ $[[k]] -gt 1 ]] && echo more",
        ],
        x="float",
        k="select",
    )
    assert run_main(t, tmp_path, x=0.5, k="2") == "4\nmore\n"
    with pytest.raises(TemplateError, match="arithmetic"):
        check_template(tpl(["echo $(( $(awk 'BEGIN { print $[[x]] }') ))"], x="string"), VARS)


@pytest.mark.parametrize("command", ['echo "abc', "echo \\$[[s]]", "cat <<EOF\nno end"])
def test_broken_commands_are_refused(command: str) -> None:
    t = tpl([command], s="string")
    with pytest.raises(TemplateError):
        check_template(t, VARS)
    with pytest.raises(RenderError):
        render(t, s="x")


def test_postproc_runs_placeholder() -> None:
    post = Workflow(steps=[Step("plot", ["python plot.py $[[runs]] out"])])
    t = Template(
        dialect="flowserv", workflow=Workflow(steps=[]), postproc=PostProc(post, runs_target="runs")
    )
    check_template(t, VARS)
    rendered = render_workflow(t, post, {}, VARS)
    assert rendered.steps[0].commands == ["python plot.py runs out"]
    with pytest.raises(TemplateError, match="runs"):
        check_template(tpl(["x $[[runs]]"]), VARS)


HELLO_TEMPLATE = """
workflow:
  parameters:
    inputfile: $[[names]]
    outputfile: results/greetings.txt
    sleeptime: $[[sleeptime]]
    greeting: $[[greeting]]
  steps:
    - name: say_hello
      commands:
        - ${python} code/helloworld.py
            --inputfile "${inputfile}"
            --outputfile "${outputfile}"
            --sleeptime ${sleeptime}
            --greeting ${greeting}
        - |-
          ${python} code/analyze.py --inputfile "${outputfile}" \\
            --outputfile results/analytics.json  # a block keeps the newline
"""

HELLO_PY = """
import argparse, os, time
p = argparse.ArgumentParser()
p.add_argument('--inputfile'); p.add_argument('--outputfile')
p.add_argument('--sleeptime', type=float); p.add_argument('--greeting')
a = p.parse_args()
os.makedirs(os.path.dirname(a.outputfile), exist_ok=True)
with open(a.inputfile) as f, open(a.outputfile, 'w') as out:
    for name in f.read().splitlines():
        time.sleep(a.sleeptime)
        out.write(f'{a.greeting} {name}!\\n')
"""

ANALYZE_PY = """
import argparse, json
p = argparse.ArgumentParser(); p.add_argument('--inputfile'); p.add_argument('--outputfile')
a = p.parse_args()
lines = open(a.inputfile).read().splitlines()
json.dump({'lines': len(lines)}, open(a.outputfile, 'w'))
"""


def test_hello_world_seed_runs(tmp_path: Path) -> None:
    spec = yaml.safe_load(HELLO_TEMPLATE)["workflow"]
    steps = [Step(s["name"], s["commands"]) for s in spec["steps"]]
    t = Template(
        dialect="flowserv",
        workflow=Workflow(steps=steps, context=spec["parameters"]),
        parameters=params(names="file", sleeptime="float", greeting="string"),
    )
    check_template(t, VARS)
    args = {
        "names": FileArg("my names.txt", "data/names.txt"),
        "sleeptime": 0.01,
        "greeting": "Hi $(touch PWNED);",
    }
    rendered = render_workflow(t, t.workflow, args, VARS)
    run_dir = tmp_path / "run"
    (run_dir / "code").mkdir(parents=True)
    (run_dir / "data").mkdir()
    (run_dir / "code" / "helloworld.py").write_text(textwrap.dedent(HELLO_PY))
    (run_dir / "code" / "analyze.py").write_text(textwrap.dedent(ANALYZE_PY))
    (run_dir / "data" / "names.txt").write_text("Alice\nBob\n")
    (run_dir / "run.sh").write_text(build_script(rendered, run_id="hello"))
    proc = subprocess.run(["bash", "run.sh"], cwd=run_dir, capture_output=True, timeout=60)
    assert proc.returncode == 0, (run_dir / "logs" / "step-01-say_hello.err").read_text()
    greetings = (run_dir / "results" / "greetings.txt").read_text()
    assert greetings == "Hi $(touch PWNED); Alice!\nHi $(touch PWNED); Bob!\n"
    assert (run_dir / "results" / "analytics.json").read_text() == '{"lines": 2}'
    assert not (run_dir / "PWNED").exists()
    assert read_markers(run_dir).exit is not None
