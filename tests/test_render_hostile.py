"""Hostile argument values in every quoting context, both dialects, run by real bash.

Each case renders a template with one parameter per hostile value (``x0``, ``x1``...)
and one command per value, builds the run script, runs it, and checks that each program
received its value literally and that no PWNED file appeared.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flowbatch.errors import RenderError, TemplateError
from flowbatch.render import build_script, check_template, render_workflow
from flowbatch.render.script import read_markers
from flowbatch.spec.model import FileArg, Parameter, Step, Template, Workflow

HOSTILE = [
    "$(touch PWNED)",
    "`touch PWNED`",
    ";  touch PWNED",
    "a; touch PWNED #",
    '" ; touch PWNED ; "',
    "' ; touch PWNED ; '",
    "'\"'\"",
    "{{ 7*7 }}",
    "{% raw %}",
    "{{ ''.__class__.__mro__ }}",
    "line one\nline two; touch PWNED",
    "two  spaces",
    "*",
    "$HOME",
    "${HOME}",
    "\\",
    "a\\",
    "-n",
    "",
    "|| touch PWNED",
    ")",
    "\x01",  # the sentinel's closing character
    "unicode: é ✓",
]
N = len(HOSTILE)
ARGS = {f"x{i}": value for i, value in enumerate(HOSTILE)}
PY = sys.executable
ARGV = f"{PY} -c 'import json, sys; print(json.dumps(sys.argv[1:]))'"
VARS = {"python": PY}


def run(template: Template, tmp_path: Path, args: dict[str, Any] | None = None) -> Path:
    """Check, render, build and run ``template``; the run must succeed harmlessly."""
    check_template(template, VARS)
    rendered = render_workflow(template, template.workflow, args or ARGS, VARS)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.sh").write_text(build_script(rendered, run_id="r1"))
    proc = subprocess.run(["bash", str(run_dir / "run.sh")], capture_output=True, timeout=60)
    err = (run_dir / "logs" / "step-01-s.err").read_text()
    assert proc.returncode == 0, (proc.returncode, err)
    markers = read_markers(run_dir)
    assert markers.exit is not None and markers.exit[0] == 0
    assert not list(tmp_path.rglob("PWNED")), "a value ran as code"
    return run_dir


def template(dialect: str, command: str, placeholder: str, dtype: str = "string", **ctx: Any):
    """One command per value: ``{P}`` becomes the placeholder (with ``{i}`` its index),
    ``{i}`` elsewhere the index; context values likewise get one entry per index."""
    commands = [command.replace("{P}", placeholder).replace("{i}", str(i)) for i in range(N)]
    context = {
        f"{name}{i}": value.replace("{i}", str(i)) for name, value in ctx.items() for i in range(N)
    }
    return Template(
        dialect=dialect,  # type: ignore[arg-type]
        workflow=Workflow(steps=[Step("s", commands)], context=context),
        parameters=[Parameter(f"x{i}", dtype, i, True) for i in range(N)],  # type: ignore[arg-type]
    )


def outputs(run_dir: Path, name: str = "out") -> list[str]:
    return [(run_dir / f"{name}{i}.txt").read_text() for i in range(N)]


def expect(pattern: str, values: list[str] = HOSTILE) -> list[str]:
    return [pattern.replace("{v}", value) for value in values]


# (command, expected output for value v): {P} is the placeholder, {i} the value's index
TEXT_CASES = [
    ("printf '%s' {P} > out{i}.txt", "{v}"),  # unquoted
    ("printf '%s' pre{P}post > out{i}.txt", "pre{v}post"),  # unquoted, inside a word
    ("printf '%s' \"pre {P} post\" > out{i}.txt", "pre {v} post"),  # double
    ("printf '%s' \"$(printf '%s' {P})\" > out{i}.txt", "{v}"),  # unquoted in $() in ""
    ("printf '%s' \"$(printf '%s' \"{P}\")\" > out{i}.txt", "{v}"),  # "" in $() in ""
    ("printf '%s' \"`printf '%s' {P}`\" > out{i}.txt", "{v}"),  # backticks in ""
    ("printf '%s' \"$(cat <<EOF\n{P}\nEOF\n)\" > out{i}.txt", "{v}"),  # heredoc in $()
    ("cat > out{i}.txt <<EOF\n{P}\nEOF", "{v}\n"),  # heredoc body
    ("printf '%s' {P} > out{i}.txt # and {P} in a comment", "{v}"),
]
FLOWSERV_PLACEHOLDERS = ["$[[x{i}]]", "${x{i}}", "$x{i}"]


@pytest.mark.parametrize(("command", "expected"), TEXT_CASES)
@pytest.mark.parametrize("placeholder", FLOWSERV_PLACEHOLDERS)
def test_flowserv_values_are_data(
    tmp_path: Path, command: str, expected: str, placeholder: str
) -> None:
    if placeholder == "$x{i}" and "{P}post" in command:
        placeholder = "${x{i}}"  # '$x0post' names another variable
    run_dir = run(template("flowserv", command, placeholder), tmp_path)
    assert outputs(run_dir) == expect(expected)


def test_flowserv_argv_is_one_word(tmp_path: Path) -> None:
    command = ARGV + " $[[x{i}]] --n ${x{i}} > out{i}.txt"
    run_dir = run(template("flowserv", command, ""), tmp_path)
    assert [json.loads(text) for text in outputs(run_dir)] == [[v, "--n", v] for v in HOSTILE]


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ("$[[x{i}]]", "{v}"),
        ("pre $[[x{i}]] post", "pre {v} post"),
        ("a/$[[x{i}]].txt", "a/{v}.txt"),
    ],
)
def test_flowserv_context_values_are_data(tmp_path: Path, context: str, expected: str) -> None:
    command = ARGV + ' ${c{i}} "${c{i}}" > out{i}.txt'
    run_dir = run(template("flowserv", command, "", c=context), tmp_path)
    got = [json.loads(text) for text in outputs(run_dir)]
    assert got == [[e, e] for e in expect(expected)]


@pytest.mark.parametrize(
    ("dtype", "value", "expected"),
    [("int", 42, "42"), ("float", 0.5, "0.5"), ("bool", True, "True"), ("select", "fast", "fast")],
)
def test_flowserv_tokens_in_single_quotes(
    tmp_path: Path, dtype: str, value: Any, expected: str
) -> None:
    command = "awk 'BEGIN { print \"$[[x{i}]]\" }' > out{i}.txt"
    args = {f"x{i}": value for i in range(N)}
    run_dir = run(template("flowserv", command, "", dtype), tmp_path, args)
    assert outputs(run_dir) == [expected + "\n"] * N


@pytest.mark.parametrize(("command", "expected"), TEXT_CASES)
def test_native_values_are_data(tmp_path: Path, command: str, expected: str) -> None:
    run_dir = run(template("native", command, "{{ x{i} }}"), tmp_path)
    assert outputs(run_dir) == expect(expected)


def test_native_values_are_data_in_expressions_and_context(tmp_path: Path) -> None:
    command = (
        "{{ python }} -c 'import json, sys; print(json.dumps(sys.argv[1:]))'"
        ' {{ x{i} }} {{ x{i} ~ "!" }} {{ c{i} }} "{{ c{i} }}" {{ x{i} | upper }} > out{i}.txt'
    )
    run_dir = run(template("native", command, "", c="<{{ x{i} }}>"), tmp_path)
    got = [json.loads(text) for text in outputs(run_dir)]
    assert got == [[v, v + "!", f"<{v}>", f"<{v}>", v.upper()] for v in HOSTILE]


def test_native_values_in_control_flow_are_data(tmp_path: Path) -> None:
    command = (
        ARGV + " {% for part in [x{i}, 'b'] %}{{ part }} {% endfor %}"
        "{% if x{i} %}--set{% else %}--empty{% endif %} > out{i}.txt"
    )
    run_dir = run(template("native", command, ""), tmp_path)
    got = [json.loads(text) for text in outputs(run_dir)]
    assert got == [[v, "b", "--set" if v else "--empty"] for v in HOSTILE]


# Values that run a command where bash evaluates them as arithmetic: bash expands the
# reference, then evaluates its text, and a subscript in it runs command substitution
ARITH_HOSTILE = [
    "a[$(touch PWNED)]",
    "a[`touch PWNED`]",
    "1 + a[$(touch PWNED)]",
    "b[$(touch PWNED)] = 1",
    "FB_x0",  # only a name, but of the variable holding a[$(touch PWNED)]
]
# every arithmetic construct; {P} is the placeholder
ARITH_CONSTRUCTS = [
    "echo $(( {P} + 1 ))",
    'echo "sum: $(( "{P}" + 1 ))"',
    "echo $(( $(printf %s {P}) ))",
    "echo $[ {P} ]",
    "(( {P} ))",
    "for (( i = {P}; i < 0; i++ )); do :; done",
    "[[ {P} -eq 0 ]]",
    '[[ 0 -lt "{P}" ]]',
    'let "y = {P}"',
    "declare -i y={P}",
    "a[{P}]=1",
    'a=(1); echo "${a[{P}]}"',
    "a=([{P}]=1)",
    'v=abc; echo "${v:{P}}"',
    # an expanding here-document's body: bash evaluates arithmetic there too
    "cat <<EOF\nv: $(( {P} + 1 ))\nEOF\ntrue",
    "a=(x y); cat <<EOF\n${a[{P}]}\nEOF\ntrue",
]
# (dialect, placeholder, refused at install): a native expression is judged by value
ARITH_PLACEHOLDERS = [
    ("flowserv", "$[[x{i}]]", True),
    ("flowserv", "${x{i}}", True),
    ("native", "{{ x{i} }}", True),
    ("native", "{{ x{i} | string }}", False),
]


def arith_arguments(dtype: str) -> dict[str, Any]:
    if dtype == "file":  # the user picks a file's target name
        return {f"x{i}": FileArg("in.txt", v) for i, v in enumerate(ARITH_HOSTILE)}
    return {f"x{i}": v for i, v in enumerate(ARITH_HOSTILE)}


@pytest.mark.parametrize("construct", ARITH_CONSTRUCTS)
@pytest.mark.parametrize(("dialect", "placeholder", "at_install"), ARITH_PLACEHOLDERS)
@pytest.mark.parametrize("dtype", ["string", "file"])
def test_values_in_arithmetic_never_run(
    tmp_path: Path, construct: str, dialect: str, placeholder: str, at_install: bool, dtype: str
) -> None:
    """Each value in each arithmetic construct: rendered (and run by real bash) only if
    the render lets it through, which it must not; and refused at install too when the
    placeholder names the parameter."""
    params = [Parameter(f"x{i}", dtype, i, True) for i in range(len(ARITH_HOSTILE))]  # type: ignore[arg-type]
    args = arith_arguments(dtype)
    for i, value in enumerate(ARITH_HOSTILE):
        command = construct.replace("{P}", placeholder).replace("{i}", str(i)) + " || true"
        t = Template(
            dialect=dialect,  # type: ignore[arg-type]
            workflow=Workflow(steps=[Step("s", [command])]),
            parameters=params,
        )
        try:
            rendered = render_workflow(t, t.workflow, args, VARS)
        except RenderError as exc:
            assert "arithmetic context" in exc.reason
            rendered = None
        else:
            run_dir = tmp_path / f"run{i}"
            run_dir.mkdir()
            (run_dir / "run.sh").write_text(build_script(rendered, run_id="r1"))
            subprocess.run(["bash", "run.sh"], cwd=run_dir, capture_output=True, timeout=60)
        assert not list(tmp_path.rglob("PWNED")), f"{command!r} ran {value!r}"
        assert rendered is None, f"{command!r} rendered with {value!r}"
        if at_install:
            with pytest.raises(TemplateError, match="arithmetic context"):
                check_template(t, VARS)


@pytest.mark.parametrize("dialect", ["flowserv", "native"])
def test_comparing_outside_arithmetic_takes_any_value(tmp_path: Path, dialect: str) -> None:
    """What the refusal's hint suggests: the test builtin wants an integer and
    evaluates nothing, so every hostile value is harmless there; [[ -eq ]] is refused."""
    placeholder = "$[[x{i}]]" if dialect == "flowserv" else "{{ x{i} }}"
    command = '[ "{P}" -eq 0 ] 2> /dev/null; echo "$?" > out{i}.txt'
    values = HOSTILE + ARITH_HOSTILE
    t = Template(
        dialect=dialect,  # type: ignore[arg-type]
        workflow=Workflow(
            steps=[
                Step(
                    "s",
                    [
                        command.replace("{P}", placeholder)
                        .replace("{i}", str(i))
                        .replace("$?", "$$?" if dialect == "flowserv" else "$?")
                        for i in range(len(values))
                    ],
                )
            ]
        ),
        parameters=[Parameter(f"x{i}", "string", i, True) for i in range(len(values))],
    )
    run_dir = run(t, tmp_path, {f"x{i}": v for i, v in enumerate(values)})
    assert [(run_dir / f"out{i}.txt").read_text() for i in range(len(values))] == ["2\n"] * len(
        values
    )
    refused = placeholder.replace("{i}", "0")
    t.workflow.steps[0].commands.append(f"[[ {refused} -eq 0 ]]")
    with pytest.raises(TemplateError, match="arithmetic context"):
        check_template(t, VARS)
