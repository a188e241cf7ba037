"""More programs whose program text a value may not stand in (planning, s24): csh, tcsh
and fish ``-c``, IPython's ``-c``, gdb's ``-ex`` commands (``shell``, ``python``), a
program's file given as standard input (``awk -f -``, ``sed -f /dev/stdin``), and
``systemd-run``'s command. Where the program is on this machine, the unsafe form is
rendered and run: nothing ran."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flowbatch.errors import TemplateError
from flowbatch.render import check_template
from flowbatch.render.shellctx import Ctx, command_places

from .test_render_review_code import _template, installed_and_ran

VARIABLES = {"python": "python3"}

REFUSED = [
    'tcsh -c "echo $[[s]]"',
    'csh -fc "echo $[[s]]"',
    'fish -c "echo $[[s]]"',
    "ipython3 -c \"print('$[[s]]')\"",
    'gdb -batch -ex "echo $[[s]]"',
    'gdb -batch --eval-command="echo $[[s]]"',
    'systemd-run --user --wait bash -c "echo $[[s]]"',
    'awk -f - data.txt <<EOF\n{ print "$[[s]]" }\nEOF',
    "sed -f /dev/stdin data.txt <<EOF\ns/a/$[[s]]/\nEOF",
    'awk --file=- data.txt <<EOF\n{ print "$[[s]]" }\nEOF',
]


@pytest.mark.parametrize("dialect", ["flowserv", "native"])
@pytest.mark.parametrize("command", REFUSED)
def test_program_text_of_more_programs_is_refused_at_install(dialect: str, command: str) -> None:
    with pytest.raises(TemplateError, match="program text"):
        check_template(_template(dialect, command), VARIABLES)


RUN = [
    ('awk -f - data.txt <<EOF\n{ print "$[[s]]" }\nEOF', '"; system("touch PWNED"); print "'),
    ("sed -f /dev/stdin data.txt <<EOF\ns/a/$[[s]]/\nEOF", "x/;1e touch PWNED\n#"),
    (
        "gdb -batch -nx -ex \"python print('$[[s]]')\"",
        "'); import os; os.system('touch PWNED'); print('",
    ),
    ("ipython3 --quick -c \"print('$[[s]]')\"", "'); open('PWNED', 'w'); print('"),
]


@pytest.mark.parametrize(("command", "value"), RUN)
def test_the_unsafe_form_runs_nothing(tmp_path: Path, command: str, value: str) -> None:
    program = command.split()[0]
    if shutil.which(program) is None:
        pytest.skip(f"{program} is not on this machine (the install check above holds)")
    (tmp_path / "data.txt").write_text("a\n")
    installed, ran = installed_and_ran(tmp_path, _template("flowserv", command), {"s": value}, {})
    assert not installed and not ran


def test_a_value_as_the_program_s_data_stands() -> None:
    """The safe forms stay: a value after the program on stdin, a file given by name."""
    for command in (
        "awk -f prog.awk $[[s]]",
        "ipython3 -c 'import sys' $[[s]]",
        "gdb --batch prog",
    ):
        check_template(_template("flowserv", command), VARIABLES)
    found, stdin, _ = command_places(["awk", "-f", "prog.awk", "x"], ["awk", "-f", "prog.awk", "x"])
    # awk's own name is program text (a value there would choose the program), not x
    assert stdin is None and all(ctx is not Ctx.CODE for k, ctx, _ in found if k)
