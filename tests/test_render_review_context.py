"""Review (s23): `${python}` inside a flowServ `workflow.parameters` (context) value
reached bash unexpanded (an unset shell variable): every run failed. Site variables are
expanded in a context value's author text now, as in a command."""

from __future__ import annotations

import pytest

from flowbatch.errors import TemplateError
from flowbatch.render import check_template, render_workflow
from flowbatch.spec.template import parse_template

VARIABLES = {"python": "/usr/bin/python3"}


def _rendered(context: str, arguments: dict[str, object] | None = None) -> str:
    doc = {
        "workflow": {
            "parameters": {"run": context},
            "steps": [{"name": "a", "action": {"commands": ["${run} > out.txt"]}}],
        },
        "parameters": [{"name": "g", "dtype": "string", "defaultValue": "x"}],
    }
    t = parse_template(doc, file="t.yaml", known_variables=VARIABLES)
    check_template(t, VARIABLES)
    return render_workflow(t, t.workflow, arguments or {}, VARIABLES).steps[0].commands[0]


def test_a_site_variable_in_a_context_value_is_expanded() -> None:
    assert _rendered('${python} -c "print(42)"') == '/usr/bin/python3 -c "print(42)" > out.txt'
    assert _rendered("$python x.py") == "/usr/bin/python3 x.py > out.txt"


def test_other_names_and_double_dollars_stay_as_written() -> None:
    assert _rendered("echo ${HOME} $$ $pythonic") == "echo ${HOME} $$ $pythonic > out.txt"


def test_with_a_parameter_the_value_is_refused_as_a_command_s_name() -> None:
    """With a parameter in it the context value is a value (never shell text): as the
    command's name it would name the program that runs (a shell, eval, any file), so it
    is refused at install as program text (it rendered as one word, a program named
    "/usr/bin/python3 code/x.py ...", which no run could find)."""
    with pytest.raises(TemplateError, match="context variable 'run' stands as a command's name"):
        _rendered("${python} code/x.py $[[g]]", {"g": "$(touch P)"})
