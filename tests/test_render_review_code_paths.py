"""Re-review (s23) of the program-text (CODE) context.

Too strict: a program reading its code from standard input made all of its pipeline
program text (its own arguments, its environment, its ``<`` file), so the safe forms of
the hint were refused; a program was recognised in any word (``cp x results/python``), and
``--wrap`` after any command. Too lax: ``source``/``.``, ``bash <(...)``, ``/dev/stdin``,
``xargs -I`` into program text, ``make VAR=``, ``unset``, and interpreters reading stdin
(R, julia, lua, sqlite3...) let a participant's text run as code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flowbatch.errors import TemplateError
from flowbatch.render import check_template
from flowbatch.render.shellctx import Ctx, scan
from flowbatch.render.values import CODE_HINT
from flowbatch.spec.model import Parameter, Step, Template, Workflow

from .test_render_review_code import installed_and_ran

PY = sys.executable
VARS = {"python": PY}


def _t(command: str, dialect: str = "flowserv") -> Template:
    if dialect == "native":
        command = command.replace("$[[s]]", "{{ s }}").replace("${python}", "{{ python }}")
    return Template(
        dialect=dialect,  # type: ignore[arg-type]
        workflow=Workflow(steps=[Step("s", [command])]),
        parameters=[Parameter("s", "string", 0, True)],  # type: ignore[arg-type]
    )


def _ctx(text: str) -> Ctx:
    return scan(text).contexts[text.index("X")]


# -- A1: beside a program reading its code from standard input, a value is data -----
STDIN_SAFE = [
    # the hint's safe form: value as argv / in the environment, program in a quoted heredoc
    "${python} - \"$[[s]]\" <<'PY'\nimport sys\nprint(sys.argv[1])\nPY",
    "S=\"$[[s]]\" ${python} - <<'PY'\nimport os\nprint(os.environ['S'])\nPY",
    'bash -s -- "$[[s]]" <<\'EOF\'\necho "$1"\nEOF',
    'srun -n 1 ${python} - "$[[s]]" < code/run.py',
    '${python} - < code/run.py > "$[[s]].out"',
    "${python} - <<'PY' | tee \"$[[s]]\"\nprint(1)\nPY",
]


@pytest.mark.parametrize("dialect", ["flowserv", "native"])
@pytest.mark.parametrize("command", STDIN_SAFE)
def test_value_as_data_beside_a_stdin_program_is_accepted(
    tmp_path: Path, dialect: str, command: str
) -> None:
    t = _t(command, dialect)
    check_template(t, VARS)
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "run.py").write_text("print(1)\n")
    installed, ran = installed_and_ran(tmp_path, t, {"s": "x; touch PWNED"}, VARS)
    assert installed and not ran


def test_the_hint_gives_the_stdin_form() -> None:
    assert "<<'PY'" in CODE_HINT
    check_template(_t("${python} - $[[s]] <<'PY'\nimport sys\nprint(sys.argv[1])\nPY"), VARS)


# -- A2, A3, A4: only a command (after wrappers) is a program; --wrap is sbatch's ------
DATA = [
    'cp "X" results/python',  # a folder named like an interpreter
    'ln -s "X" python',
    'mv "X" bash',
    'echo python -c "X"',
    'python3 run.py --wrap "X"',  # a program's own --wrap option
    'mytool --wrap="X"',
    'RANDOM=42 python3 run.py "X"',  # only the special variable's value is arithmetic
    'export RANDOM=1 Y="X"',
    "python3 - \"X\" <<'PY'\nprint(1)\nPY",
    'python3 - < "X"',
    'bash -s -- "X" < job.sh',
    'env A="X" python3 -',
]


@pytest.mark.parametrize("text", DATA)
def test_words_that_only_look_like_program_text_are_data(text: str) -> None:
    assert _ctx(text) in (Ctx.UNQUOTED, Ctx.DOUBLE)


#: guards of the new rules (they pass on the old scan too, which had none of them)
GUARDS = [
    'xargs -I{} bash -c \'echo "$1"\' _ {} <<< "X"',  # {} replaced in a data argument
    'parallel echo ::: "X"',  # parallel quotes its arguments
    'R --no-save --args "X" < analysis.R',  # the program is the file, the value argv
    'singularity run img.sif "X"',  # arguments of the image's runscript
    'grep -r python "X"',
    "jq --arg x \"X\" '.name = $x' in.json",
    'psql -d db -f q.sql -v name="X"',
    '{ echo "X"; } | cat; echo | bash',
    '( echo "X" ); echo | bash',
]


@pytest.mark.parametrize("text", GUARDS)
def test_the_new_rules_leave_data_alone(text: str) -> None:
    assert _ctx(text) in (Ctx.UNQUOTED, Ctx.DOUBLE)


@pytest.mark.parametrize(
    "command",
    [
        'cp "$[[s]]" results/python',
        'ln -s "$[[s]]" python',
        'python3 run.py --wrap "$[[s]]"',
        'RANDOM=42 python3 run.py "$[[s]]"',
        'export RANDOM=1 X="$[[s]]"',
    ],
)
def test_a_word_that_only_names_a_program_makes_no_program_text(command: str) -> None:
    check_template(_t(command), VARS)


# -- B5-B9: code paths that were missed ------------------------------------------------
CODE = [
    # what becomes a stdin program's text: heredocs, here-strings, the pipeline before it
    'echo "X" |& bash',
    'echo "X" |\n  bash',
    'python3 - < <(echo "X")',
    "cat <<EOF |\nX\nEOF\npython3 -",
    '{ echo "X"; } | bash',  # a compound command's output
    '( echo "X" ) | bash',
    'for i in 1; do echo "X"; done | python3 -',
    # source / . / a script given as a process substitution or /dev/stdin
    'source <(echo "X")',
    '. <(echo "X")',
    '. /dev/stdin <<< "X"',
    'echo "X" | source /dev/stdin',
    'bash <(echo "X")',
    'python3 <(echo "X")',
    'echo "X" | bash /dev/stdin',
    'awk -f <(echo "X") data.txt',
    # xargs replacing text in program text
    "echo \"X\" | xargs -I{} sh -c 'echo {}'",
    "xargs -I % bash -c 'echo %' <<< \"X\"",
    "xargs --replace sh -c 'echo {}' <<< \"X\"",
    # make expands $(shell ...) in variables from its arguments and its environment
    'make -s N="X"',
    'N="X" make all',
    'env N="X" make',
    # interpreters reading their program from standard input, or given it by an option
    "R --vanilla --quiet <<EOF\nX\nEOF",
    'echo "X" | R --no-save',
    'Rscript - <<< "X"',
    "julia <<EOF\nX\nEOF",
    "lua <<EOF\nX\nEOF",
    "sqlite3 db.sqlite <<EOF\nX\nEOF",
    'sqlite3 db.sqlite "X"',
    'sqlite3 -cmd "X" db.sqlite',
    "psql -d db <<EOF\nselect 'X';\nEOF",  # psql's \\! runs a shell command
    'psql -d db -c "X"',
    "mysql -u me db <<EOF\nX\nEOF",
    'duckdb db.duckdb "X"',
    'jq ".name == \\"X\\"" in.json',  # a jq filter is a program ($ENV, input files)
    "tclsh <<EOF\nX\nEOF",
    'expect -c "X"',
    'gnuplot -e "X" plot.gp',
    'octave --eval "X"',
    'matlab -batch "X"',
    'parallel echo "X" ::: a b',
    'parallel ::: "X"',
    'echo "X" | parallel',
    # batch systems reading a job script from standard input
    'sbatch -p gpu <<EOF\n#!/bin/bash\necho "X"\nEOF',
    "qsub -l nodes=1 <<EOF\nX\nEOF",
    'bsub -n 4 "X"',
    "salloc -N 1 <<EOF\nX\nEOF",
    "singularity shell img.sif <<EOF\nX\nEOF",
    "ssh host bash <<EOF\nX\nEOF",  # the remote command reads its program from ssh's input
    'echo "X" | ssh host python3 -',
    # wrappers the old scan did not know, or whose options it misread
    'env -S "X"',
    'flock /tmp/lock -c "X"',
    'runuser -u bob -- bash -c "X"',
    'hyperfine "X"',
]


@pytest.mark.parametrize("text", CODE)
def test_more_program_text_is_found(text: str) -> None:
    assert _ctx(text) is Ctx.CODE


@pytest.mark.parametrize("text", ['unset "X"', 'unset -v "X"', "unset -f X"])
def test_unset_reads_names(text: str) -> None:
    assert _ctx(text) is Ctx.NAME


RUNS = [
    ("echo \"$[[s]]\" | xargs -I{} sh -c 'echo {}'", "x; touch PWNED"),
    ('make -s N="$[[s]]"', "$(shell touch PWNED)"),
    ('N="$[[s]]" make -s', "$(shell touch PWNED)"),
    ('source <(echo "echo $[[s]]")', "x; touch PWNED"),
    ('. /dev/stdin <<< "echo $[[s]]"', "x; touch PWNED"),
    ('bash <(echo "echo $[[s]]")', "x; touch PWNED"),
    ('bash /dev/stdin <<< "echo $[[s]]"', "x; touch PWNED"),
    ("${python} - < <(echo \"print('$[[s]]')\")", "'); open('PWNED', 'w'); print('"),
    ('a=(1 2); unset "$[[s]]"', "a[$(touch PWNED)]"),
    ("sqlite3 :memory: <<EOF\nselect '$[[s]]';\nEOF", "x';\n.shell touch PWNED\nselect '"),
]


@pytest.mark.parametrize(("command", "value"), RUNS)
def test_value_reaching_program_text_is_refused_and_never_runs(
    tmp_path: Path, command: str, value: str
) -> None:
    if command.startswith("sqlite3") and subprocess.run(["which", "sqlite3"]).returncode:
        pytest.skip("no sqlite3")
    (tmp_path / "Makefile").write_text("all:\n\t@echo N=$(N)\n")
    installed, ran = installed_and_ran(tmp_path, _t(command), {"s": value}, VARS)
    assert not ran, f"{command!r} ran the participant's {value!r}"
    assert not installed


@pytest.mark.parametrize(
    ("command", "reader"),
    [
        ('R --vanilla <<EOF\nx <- "$[[s]]"\nEOF', "program text of R"),
        ("echo \"x <- '$[[s]]'\" | R --no-save", "program text of R"),
        ('make N="$[[s]]"', "program text of make"),
        ("echo \"$[[s]]\" | xargs -I{} sh -c 'echo {}'", "program text of xargs"),
        ('source <(echo "echo $[[s]]")', "program text of source"),
    ],
)
def test_the_refusal_names_the_program(command: str, reader: str) -> None:
    with pytest.raises(TemplateError, match=reader):
        check_template(_t(command), VARS)
