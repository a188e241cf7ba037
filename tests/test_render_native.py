"""Native dialect: sandboxed Jinja2 with StrictUndefined, values as data."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from flowbatch.errors import MissingArgument, RenderError, TemplateError
from flowbatch.render import check_template, render_workflow
from flowbatch.spec.model import FileArg, Parameter, Step, Template, Workflow

from .test_render_flowserv import run_main  # check, render and run with bash

VARS = {"python": sys.executable, "java": "/usr/bin/java"}


def tpl(commands: list[str], context: dict[str, Any] | None = None, **dtypes: str) -> Template:
    parameters = [Parameter(n, d, i, False) for i, (n, d) in enumerate(dtypes.items())]  # type: ignore[arg-type]
    workflow = Workflow(steps=[Step("main", commands)], context=context or {})
    return Template(dialect="native", workflow=workflow, parameters=parameters)


def render(template: Template, **args: Any) -> tuple[list[str], dict[str, str]]:
    rendered = render_workflow(template, template.workflow, args, VARS)
    return rendered.steps[0].commands, rendered.env


def test_values_become_references() -> None:
    commands, env = render(
        tpl(['run {{ n }} "in {{ n }}" {{ f }}'], n="string", f="file"),
        n="a b",
        f=FileArg("x", "data/x"),
    )
    assert commands == ['run "${FB_n}" "in ${FB_n}" "${FB_f}"']
    assert env == {"FB_n": "a b", "FB_f": "data/x"}


def test_trusted_variables_and_author_context_are_verbatim() -> None:
    t = tpl(
        ["{{ python }} {{ variables.java }} {{ out }} {{ n }}"],
        {"out": "results/{{ 'g' }}.txt", "n": 3},
    )
    commands, env = render(t)
    # a constant expression is an output value too: data, not author text
    assert commands[0].startswith(f"{sys.executable} /usr/bin/java ")
    assert env["FB_out"] == "results/g.txt"


def test_author_context_without_outputs_is_pasted() -> None:
    t = tpl(
        ["cat {{ out }} {{ flags }}"],
        {"out": "results/greetings.txt", "flags": "{% if v %}-v{% endif %}"},
        v="bool",
    )
    commands, _ = render(t, v=True)
    assert commands == ["cat results/greetings.txt -v"]


def test_control_flow_is_code() -> None:
    t = tpl(
        ["run {% if fast %}--fast{% endif %}{% for i in range(n) %} -x{{ i }}{% endfor %}"],
        fast="bool",
        n="int",
    )
    commands, env = render(t, fast=True, n=2)
    assert commands == ['run --fast -x"${FB_v}" -x"${FB_v_2}"']
    assert env["FB_v"] == "0" and env["FB_v_2"] == "1"


def test_strict_undefined() -> None:
    with pytest.raises(RenderError, match="nope"):
        render(tpl(["echo {{ nope }}"]))
    with pytest.raises(MissingArgument, match="no value for parameter 'n'") as missing:
        render(tpl(["echo {{ n }}"], n="string"))
    assert missing.value.field == "arguments.n"  # the request's to give
    commands, _ = render(
        tpl(["echo {% if n is defined %}{{ n }}{% else %}none{% endif %}"], n="string")
    )
    assert commands == ["echo none"]


@pytest.mark.parametrize(
    "command",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ x.__class__ }}",
        "{{ x.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ variables.__class__.__subclasses__() }}",
    ],
)
def test_sandbox_escapes_are_refused(command: str) -> None:
    with pytest.raises(RenderError) as info:
        render(tpl([command], x="string"), x="v")
    assert info.value.field == "workflow.steps[0].commands[0]"


def test_user_template_text_is_data() -> None:
    commands, env = render(tpl(["echo {{ x }}"], x="string"), x="{{ ''.__class__ }}{% raw %}")
    assert commands == ['echo "${FB_x}"']
    assert env["FB_x"] == "{{ ''.__class__ }}{% raw %}"


@pytest.mark.parametrize(
    ("value", "pasted"), [(3, "3"), (2.5, "2.5"), (True, "True"), ("ab_c-1.2+x", "ab_c-1.2+x")]
)
def test_tokens_in_single_quotes(value: Any, pasted: str) -> None:
    commands, _ = render(tpl(["awk 'BEGIN { print {{ v }} }'"], v="string"), v=value)
    assert commands == [f"awk 'BEGIN {{ print {pasted} }}'"]


@pytest.mark.parametrize("value", ["a b", "x'", "$(id)", "a/b", [1]])
def test_other_values_in_single_quotes_are_refused(value: Any) -> None:
    with pytest.raises(RenderError, match="single quotes") as info:
        render(tpl(["awk 'BEGIN { print {{ v }} }'"], v="string"), v=value)
    assert "read $FB_" in (info.value.hint or "")


# (command, output for n=3): every construct bash evaluates as arithmetic
ARITH_COMMANDS = [
    ("echo $(( {P} + 1 ))", "4"),
    ('echo "total: $(( "{P}" * 2 ))"', "total: 6"),
    ("echo $[ {P} + 1 ]", "4"),
    ("(( {P} > 1 )) && echo big", "big"),
    ("for (( i = 1; i < {P}; i++ )); do echo $i; done", "1\n2"),
    ("[[ {P} -eq 3 ]] && echo three", "three"),
    ("let y={P}+1; echo $y", "4"),
    ("a=(x y z w); a[{P}]=v; echo ${a[3]}", "v"),
    ('a=(x y z w); echo "{% raw %}${a[{% endraw %}{P}]}"', "w"),
    ('v=abcdef; echo "{% raw %}${v:{% endraw %}{P}}"', "def"),
]


@pytest.mark.parametrize(("command", "output"), ARITH_COMMANDS)
@pytest.mark.parametrize(("dtype", "value"), [("string", "x"), ("file", FileArg("a", "d/3"))])
def test_user_values_in_arithmetic_are_refused(
    command: str, output: str, dtype: str, value: Any
) -> None:
    t = tpl(["true", command.replace("{P}", "{{ s }}")], s=dtype)
    with pytest.raises(TemplateError) as info:
        check_template(t, VARS)
    assert info.value.field == "workflow.steps[0].commands[1]"
    assert "parameter 's' stands in an arithmetic context" in info.value.reason
    assert "outside arithmetic" in (info.value.expected or "")
    assert '[ "$x" -eq 1 ]' in (info.value.hint or "")
    with pytest.raises(RenderError, match="arithmetic context") as rendered:
        render(t, s=value)
    assert rendered.value.field == "workflow.steps[0].commands[1]"


@pytest.mark.parametrize(
    "value",
    [
        "a[$(touch PWNED)]",
        "abc",  # a token in single quotes, but here the name of a variable...
        "FB_s",  # ...whose text bash would evaluate in turn
        "1+FB_s",
        "True",
        [1],
    ],
)
def test_values_in_arithmetic_are_refused_by_value(value: Any) -> None:
    """An expression's value is only known at render: strings other than numbers are
    refused there (the install check leaves expressions alone)."""
    t = tpl(["echo $(( {{ v | string if v is string else v }} + 1 ))"], v="string", s="string")
    check_template(t, VARS)
    with pytest.raises(RenderError, match="arithmetic context"):
        render(t, v=value, s="a[$(touch PWNED)]")


@pytest.mark.parametrize(("command", "output"), ARITH_COMMANDS)
@pytest.mark.parametrize("placeholder", ["{{ n }}", "{{ n + 0 }}", "{{ t | trim }}"])
def test_arithmetic_takes_numbers_only(
    tmp_path: Path, command: str, output: str, placeholder: str
) -> None:
    """An int (or a string that is a decimal number) stands in arithmetic and bash
    computes with it; a string parameter in its place is refused at install."""
    t = tpl([command.replace("{P}", placeholder)], n="int", t="string")
    assert run_main(t, tmp_path, n=3, t="3") == output + "\n"
    with pytest.raises(TemplateError, match="arithmetic"):
        check_template(tpl([command.replace("{P}", "{{ n }}")], n="string"), VARS)


def test_float_in_arithmetic(tmp_path: Path) -> None:
    """A float in a program's text inside $(( )) is pasted."""
    t = tpl(["echo $(( $(awk 'BEGIN { print int({{ x }} * 4) }') + 1 ))"], x="float")
    assert run_main(t, tmp_path, x=0.5) == "3\n"
    with pytest.raises(RenderError, match="arithmetic"):
        render(t, x="0.5; x")


def test_install_check_reads_parameters_not_expressions() -> None:
    """The install check refuses a string parameter's {{ p }} in arithmetic or inside
    single quotes, in any branch (single quotes were left to the render, which refused
    each request whose value was no token, with a hint for the template's author: found
    by review); names the template sets itself, context values and other expressions are
    left to the render."""
    for command in [
        "{% if b %}echo $(( {{ s }} )){% else %}true{% endif %}",
        "{% if b %}true{% elif s %}let x={{ s }}{% endif %}",
        "{% for i in [1] %}[[ {{ s }} -eq 1 ]]{% endfor %}",
    ]:
        with pytest.raises(TemplateError, match="arithmetic") as info:
            check_template(tpl(["true", command], s="string", b="bool"), VARS)
        assert info.value.field == "workflow.steps[0].commands[1]"
    for command in [
        "echo $(( {{ n }} )) '{{ n }}' {{ s }} \"{{ s }}\" $(( {{ b }} ))",
        "{% set s = 3 %}echo $(( {{ s }} ))",
        "{% for s in [1, 2] %}echo $(( {{ s }} )){% endfor %}",
        "echo $(( {{ s | int }} )) $(( {{ c }} ))",
        "echo {% if b %}'{% endif %}{{ s }}",  # not complete shell text as read
    ]:
        check_template(tpl([command], {"c": "{{ n }}"}, s="string", n="int", b="bool"), VARS)
    for command in ["awk 'BEGIN { print \"{{ s }}\" }'", "echo '{{ s }}'"]:
        with pytest.raises(TemplateError, match="inside single quotes"):
            check_template(tpl([command], s="string"), VARS)


@pytest.mark.parametrize(
    "command",
    [
        '{% filter replace("X", x) %}echo X{% endfilter %}',
        "{% macro m() %}echo {{ caller() }}{% endmacro %}{% call m() %}X{% endcall %}",
    ],
)
def test_blocks_that_skip_the_placeholder_rules_are_refused(command: str, tmp_path: Path) -> None:
    """Jinja writes a {% filter %} or {% call %} block's output as it is, without the
    hook that turns a value into a reference: `x` = `$(touch PWNED)` reached bash as a
    command. Refused at install and at render; an expression keeps the value data."""
    t = tpl([command], x="string")
    with pytest.raises(TemplateError, match="without the placeholder rules") as info:
        check_template(t, VARS)
    assert info.value.field == "workflow.steps[0].commands[0]"
    with pytest.raises(RenderError, match="without the placeholder rules"):
        render(t, x="$(touch PWNED)")
    commands, env = render(tpl(["echo {{ 'X' | replace('X', x) }}"], x="string"), x="$(id)")
    assert commands == ['echo "${FB_x}"'] and env == {"FB_x": "$(id)"}


def test_check_template_reports_syntax_errors_with_line() -> None:
    t = tpl(["echo ok", "echo {% if x %}\n{{ x }"], x="string")
    with pytest.raises(TemplateError) as info:
        check_template(t, VARS)
    assert info.value.field == "workflow.steps[0].commands[1]"
    assert "line 2" in info.value.reason
    check_template(tpl(["echo {{ x | upper }}"], x="string"), VARS)
    with pytest.raises(TemplateError, match=r"workflow\.parameters\.c"):
        check_template(tpl(["true"], {"c": "{{ oops"}), VARS)


def test_shell_syntax_that_jinja_would_eat_needs_raw() -> None:
    # '{#' opens a Jinja comment: native authors write shell like this inside raw blocks
    with pytest.raises(RenderError, match="comment"):
        render(tpl(["a=(1 2); echo ${#a[@]}"]))
    commands, _ = render(tpl(["a=(1 2); echo {% raw %}${#a[@]}{% endraw %} $[[x]]"]))
    assert commands == ["a=(1 2); echo ${#a[@]} $[[x]]"]


def test_unterminated_shell_quote_is_refused() -> None:
    with pytest.raises(RenderError, match="not complete"):
        render(tpl(['echo "{{ x }}'], x="string"), x="v")


@pytest.mark.parametrize(
    ("command", "said"),
    [
        ("echo {{ y }}", "{{ y }} names nothing a run has"),
        ("echo {{ n.__class__ }}", "the attribute '__class__' is outside the sandbox"),
        ("{% if flag %}echo {{ missing.attr }}{% endif %}", "{{ missing }} names nothing"),
    ],
)
def test_a_name_no_run_has_is_the_templates_error_at_install(command: str, said: str) -> None:
    """It passed validate and install, then every request was rejected for it, as if the
    request were wrong (found by review)."""
    with pytest.raises(TemplateError) as err:
        check_template(tpl([command], n="string", flag="bool"), VARS)
    assert said in err.value.summary()
    assert err.value.field == "workflow.steps[0].commands[0]"


def test_names_a_run_has_pass_the_install_check() -> None:
    t = tpl(
        [
            "{% for i in range(2) %}echo {{ i }} {{ n }}{% endfor %}",
            "{% set a = 1 %}{{ a }} {{ python }} {{ variables.java }} {{ out }}",
            "{% if opt is defined %}echo {{ opt }}{% endif %} {{ n | length }}",
        ],
        {"out": "results/x.txt"},
        n="string",
        opt="string",
    )
    check_template(t, VARS)


def test_optional_names_and_a_dicts_underscore_key_pass_the_install_check() -> None:
    """An optional site variable tested or given a default, and a dict's `_a` key, render
    fine: they were refused at install (found by review)."""
    t = tpl(
        [
            "{% if extra is defined %}{{ extra }}{% endif %} {{ other | default('x') }}",
            "echo {{ d._a }}",
        ],
        {"d": {"_a": 1}},
    )
    check_template(t, VARS)
    with pytest.raises(TemplateError):
        check_template(tpl(["{{ n.__class__ }}"], n="string"), VARS)


@pytest.mark.parametrize("variables", [VARS, None])  # `validate` with a site, and without
def test_the_flowserv_dialects_placeholders_are_refused_in_a_native_template(
    variables: dict[str, str] | None,
) -> None:
    """Found by review: a native template written with `${python}` or `$[[n]]` validated
    and installed, and every run failed: Jinja2 leaves both to bash, where `${python}` is
    unset ("code/score.py: Permission denied"). A shell variable of a name the template
    does not have, and `$${x}`, stay the author's."""
    for command, placeholder in [
        ("${python} code/score.py {{ n }}", "${python}"),
        ("run --n ${n}", "${n}"),
        ("run --out ${out}", "${out}"),
        ("run --n $[[ n ]]", "$[[ n ]]"),
    ]:
        with pytest.raises(TemplateError) as info:
            check_template(tpl(["true", command], {"out": "results/x"}, n="int"), variables)
        assert info.value.field == "workflow.steps[0].commands[1]"
        assert info.value.summary().split(": ", 1)[1].startswith(placeholder)
        assert "write {{ " in info.value.summary()
    for command in [
        "for f in *.txt; do wc -l ${f}; done",
        "echo ${HOME} $${n} {{ n }}",
        # the shell's own variable of a template's name (found by the re-review)
        'n={{ n }}; printf "%s" "${n}"',
        "for n in 1 2; do echo ${n}; done",
        "read -r a n < f; echo ${n}",
        "{% raw %}echo ${n} $[[n]]{% endraw %} {# ${n} #}",
    ]:
        check_template(tpl([command], n="int"), variables)
