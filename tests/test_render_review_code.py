"""Review (s23): a value inside the program text of another program (python -c "...",
sed "s/../../", bash -c "...", eval, trap, ssh, --wrap) is code in that program's
language, whatever the shell's quotes: a string parameter there is refused at install
and at render; a token (int, float, bool, select) may stand there, and a value passed as
an argument or in the environment is data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flowbatch.errors import RenderError, TemplateError
from flowbatch.render import build_script, check_template, render_workflow
from flowbatch.render.shellctx import Ctx, scan
from flowbatch.spec.model import Parameter, Step, Template, Workflow

PY = sys.executable
CASES = [
    (f"{PY} -c \"print('$[[s]]')\"", "'); open('PWNED', 'w'); print('"),
    ('echo NAME | sed "s/NAME/$[[s]]/"', "x/;1e touch PWNED\n#"),
    ('bash -c "echo $[[s]]"', "$(touch PWNED)"),
    ('eval "echo $[[s]]"', "$(touch PWNED)"),
    ('trap "echo $[[s]]" EXIT', "$(touch PWNED)"),
    ('${python} - <<EOF\nprint("$[[s]]")\nEOF', '"); open("PWNED", "w"); print("'),
    ('echo "$[[s]]" | bash', "touch PWNED"),
    ('find . -maxdepth 0 -exec sh -c "echo $[[s]]" \\;', "$(touch PWNED)"),
]


def _template(dialect: str, command: str, dtype: str = "string") -> Template:
    if dialect == "native":
        command = command.replace("$[[s]]", "{{ s }}").replace("${python}", "{{ python }}")
    return Template(
        dialect=dialect,  # type: ignore[arg-type]
        workflow=Workflow(steps=[Step("s", [command])]),
        parameters=[Parameter("s", dtype, 0, True)],  # type: ignore[arg-type]
    )


def installed_and_ran(
    tmp_path: Path, t: Template, args: dict[str, Any], variables: dict[str, str]
) -> tuple[bool, bool]:
    """Whether ``t`` installs, and whether ``args`` rendered into it and run by bash made
    the file ``PWNED`` (the participant's value ran as code)."""
    installed = True
    try:
        check_template(t, variables)
    except TemplateError as exc:
        installed = False
        assert exc.field == "workflow.steps[0].commands[0]", exc
    try:
        rendered = render_workflow(t, t.workflow, args, variables)
    except RenderError:
        rendered = None
    if rendered is not None:
        (tmp_path / "run.sh").write_text(build_script(rendered, run_id="r1"))
        subprocess.run(["bash", "run.sh"], cwd=tmp_path, capture_output=True, timeout=60)
    return installed, (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("dialect", ["flowserv", "native"])
@pytest.mark.parametrize(("command", "value"), CASES)
def test_values_in_double_quoted_program_text_never_run(
    tmp_path: Path, dialect: str, command: str, value: str
) -> None:
    t = _template(dialect, command)
    with pytest.raises(TemplateError, match="program text"):
        check_template(t, {"python": PY})
    installed, ran = installed_and_ran(tmp_path, t, {"s": value}, {"python": PY})
    assert not ran, f"{command!r} ran the participant's {value!r}"
    assert not installed


def test_the_refusal_names_the_command_and_gives_the_safe_form() -> None:
    t = _template("flowserv", 'bash -c "echo $[[s]]"')
    with pytest.raises(TemplateError) as info:
        check_template(t, {})
    assert "program text of bash" in str(info.value)
    assert "bash -c '... \"$1\"' _" in (info.value.hint or "")


@pytest.mark.parametrize("dialect", ["flowserv", "native"])
def test_a_token_may_stand_in_program_text(dialect: str) -> None:
    t = _template(dialect, '${python} -c "print($[[s]] + 1)"', dtype="int")
    check_template(t, {"python": PY})
    rendered = render_workflow(t, t.workflow, {"s": 41}, {"python": PY})
    assert rendered.steps[0].commands[0] == f'{PY} -c "print(${{FB_s}} + 1)"'


SAFE = [
    "make -C X all",
    "find . -exec sh -c 'echo \"$1\"' _ X \\;",
    "find . -name X -print",
    "find . -exec grep X {} +",
    "bash -c 'echo \"$1\"' _ X",
    "python3 -c 'import sys; print(sys.argv[1])' X",
    "python3 score.py --name X",
    "python3 -m code.score X",
    "awk -v g=X '{ print g }' data.txt",
    "sed -e 's/a/b/' X",
    "srun --ntasks 1 python3 run.py X",
    "python3 score.py <<< X",
    "cat <<EOF > in.txt\nX\nEOF",
    "ssh host cat < X",
    "printf '%s\\n' X",
    "read -r line <<< X",
]


@pytest.mark.parametrize("text", SAFE)
def test_values_given_as_data_stay_data(text: str) -> None:
    ctx = scan(text).contexts[text.index("X")]
    assert ctx in (Ctx.UNQUOTED, Ctx.DOUBLE), ctx


CODE = [
    "make -s X",  # a value with `=` is an assignment, `$(shell ...)` and all
    "make all X",
    'find . -name "*.txt" -exec sh -c "echo X" \\;',
    "find . -execdir bash -c X \\;",
    "perl -ne 'print' -e X",
    "ssh -i key host echo X",
    "sbatch --wrap X",
    "sbatch --wrap=X",
    "awk X data.txt",
    "su -c X user",
    "node -e X",
    "Rscript -e X",
    "env A=1 python3 -c X",
    "bash -ec X",
    "readarray -C X arr",
    "compgen -W X",
    "ssh host <<EOF\nX\nEOF",
    # a program after wrappers and their options (s23 re-review: only there)
    "nice -n 5 python3 -c X",
    "timeout -s KILL 10 bash -c X",
    "mpirun -np 4 python3 -c X",
    "singularity exec --nv -B /a:/b img.sif python3 -c X",
    "docker run --rm -v a:b img python3 -c X",
    "sudo -u bob python3 -c X",
    "srun --an-unknown-flag python3 -c X",
    "xargs -n 1 python3 -c X",
    "${python} -c X",
]


@pytest.mark.parametrize("text", CODE)
def test_program_text_is_found(text: str) -> None:
    assert scan(text).contexts[text.index("X")] is Ctx.CODE
