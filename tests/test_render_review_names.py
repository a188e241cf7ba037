"""Review (s23): bash evaluates a value assigned to RANDOM, SRANDOM, OPTIND or HISTCMD
as an arithmetic expression ("a[$(cmd)]" runs cmd), like a `declare -i` variable, and a
value read as a variable's name (printf -v, read, [[ -v ]], declare -n) has its subscript
evaluated. A string parameter there is refused at install and at render, in both
dialects."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowbatch.errors import TemplateError
from flowbatch.render import check_template, render_workflow
from flowbatch.render.shellctx import Ctx, scan
from flowbatch.spec.model import Parameter, Step, Template, Workflow

from .test_render_review_code import installed_and_ran

VARS = {"python": "python3"}
CONSTRUCTS = [
    "RANDOM={P}; echo $RANDOM",
    "OPTIND={P}",
    "export RANDOM={P}",
    "declare RANDOM={P}",
    "readonly HISTCMD={P}",
    "SRANDOM={P}",
    "RANDOM+={P}",
    "read RANDOM <<< {P}",
    "echo {P} | read RANDOM",
    "printf -v OPTIND %s {P}",
    "mapfile -t RANDOM <<< {P}",
    "for RANDOM in {P}; do :; done",
    "[[ -v {P} ]]",
    'test -v "{P}"',
    'printf -v "{P}" %s 1',
    'read "{P}" <<< 1',
    'declare -n r="{P}"; echo "$r"',
    'compgen -W "{P}"',
    'declare "{P}"=1',
    'a=(1 2); unset "{P}"',  # s23 re-review: unset evaluates a subscript too
    'a=(1 2); unset -v "{P}"',
]


@pytest.mark.parametrize("construct", CONSTRUCTS)
@pytest.mark.parametrize(
    ("dialect", "placeholder"), [("flowserv", "$[[x]]"), ("native", "{{ x }}")]
)
def test_special_integer_variables_and_names_take_no_string(
    tmp_path: Path, construct: str, dialect: str, placeholder: str
) -> None:
    command = construct.replace("{P}", placeholder)
    if dialect == "flowserv":
        command = command.replace("$RANDOM", "$$RANDOM").replace('"$r"', '"$$r"')
    t = Template(
        dialect=dialect,  # type: ignore[arg-type]
        workflow=Workflow(steps=[Step("s", [command + " || true"])]),
        parameters=[Parameter("x", "string", 0, True)],  # type: ignore[arg-type]
    )
    installed, ran = installed_and_ran(tmp_path, t, {"x": "a[$(touch PWNED)]"}, VARS)
    assert not ran, f"{command!r}: the participant's value ran as code"
    assert not installed, f"{command!r} installed with a string parameter evaluated"


def test_an_int_may_be_assigned_to_random() -> None:
    t = Template(
        dialect="flowserv",
        workflow=Workflow(steps=[Step("s", ["RANDOM=$[[seed]]; echo $$RANDOM"])]),
        parameters=[Parameter("seed", "int", 0, True)],  # type: ignore[arg-type]
    )
    check_template(t, VARS)
    rendered = render_workflow(t, t.workflow, {"seed": 7}, VARS)
    assert rendered.steps[0].commands[0] == 'RANDOM="${FB_seed}"; echo $RANDOM'


@pytest.mark.parametrize(
    "text",
    ['LINENO="X"', 'SECONDS="X"', 'read -r line <<< "X"', 'printf -v out %s "X"', 'local a="X"'],
)
def test_other_assignments_are_data(text: str) -> None:
    assert scan(text).contexts[text.index("X")] is Ctx.DOUBLE


def test_the_refusal_names_the_assignment() -> None:
    t = Template(
        dialect="flowserv",
        workflow=Workflow(steps=[Step("s", ["export RANDOM=$[[x]]"])]),
        parameters=[Parameter("x", "string", 0, True)],  # type: ignore[arg-type]
    )
    with pytest.raises(TemplateError, match="assigned by `export RANDOM=`"):
        check_template(t, VARS)
