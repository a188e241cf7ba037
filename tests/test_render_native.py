"""Native dialect: sandboxed Jinja2 with StrictUndefined, values as data."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from flowbatch.errors import RenderError, TemplateError
from flowbatch.render import check_template, render_workflow
from flowbatch.spec.model import FileArg, Parameter, Step, Template, Workflow

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
    with pytest.raises(RenderError, match="missing argument for parameter 'n'"):
        render(tpl(["echo {{ n }}"], n="string"))
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


def test_check_template_reports_syntax_errors_with_line() -> None:
    t = tpl(["echo ok", "echo {% if x %}\n{{ x }"], x="string")
    with pytest.raises(TemplateError) as info:
        check_template(t, VARS)
    assert info.value.field == "workflow.steps[0].commands[1]"
    assert "line 2" in info.value.reason
    check_template(tpl(["echo {{ x | upper }}"], x="string"), VARS)
    with pytest.raises(TemplateError, match=r"context\.c"):
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
