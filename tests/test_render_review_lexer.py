"""Review (s23): the lexer takes '#' after an escaped blank (`a\\ #`) or after a line
continuation (`a\\<newline>#`) for a comment. bash does not (the '#' is inside a word), so
what follows is read by bash as code: a `$((` there is arithmetic, and a string
parameter in it runs a participant's value ("a[$(touch PWNED)]")."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from flowbatch.errors import RenderError, TemplateError
from flowbatch.render import build_script, check_template, render_workflow
from flowbatch.render.shellctx import Ctx, context_at
from flowbatch.spec.model import Parameter, Step, Template, Workflow

TEXTS = ["echo Total\\ #$(( X + 1 ))", "echo Total\\\n#$(( X + 1 ))", "echo a\\\t#$(( X ))"]


@pytest.mark.parametrize("text", TEXTS)
def test_hash_inside_a_word_is_no_comment(text: str) -> None:
    assert context_at(text, text.index("X")) is Ctx.ARITH


@pytest.mark.parametrize("text", TEXTS)
def test_no_participant_value_runs(tmp_path: Path, text: str) -> None:
    command = text.replace("X", "$[[n]]") + " || true"
    t = Template(
        dialect="flowserv",
        workflow=Workflow(steps=[Step("s", [command])]),
        parameters=[Parameter("n", "string", 0, True)],  # type: ignore[arg-type]
    )
    with pytest.raises(TemplateError):  # a string in arithmetic is refused at install
        check_template(t, {"python": "python3"})
    try:
        rendered = render_workflow(t, t.workflow, {"n": "a[$(touch PWNED)]"}, {})
    except RenderError:
        return
    (tmp_path / "run.sh").write_text(build_script(rendered, run_id="r1"))
    subprocess.run(["bash", "run.sh"], cwd=tmp_path, capture_output=True, timeout=60)
    assert not (tmp_path / "PWNED").exists()


# substring of a special parameter: the offset is arithmetic as for ${name:offset}
SPECIAL = ['echo "${?:X}"', 'echo "${$:X}"', 'echo "${#:X}"', 'echo "${-:X}"']


@pytest.mark.parametrize("text", SPECIAL)
def test_offset_of_a_special_parameter_is_arithmetic(text: str) -> None:
    assert context_at(text, text.index("X")) is Ctx.ARITH
