"""Which commands of run.sh may run in a brace group instead of a subshell: checked
against real bash, which shows every change a command makes to the shell running it."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from flowbatch.render.grouping import needs_subshell

#: the shell's state, printed with builtins only (no fork): working folder, umask,
#: options, traps, variables (less those bash changes by itself), functions, aliases,
#: hashed programs and open descriptors
_SNAPSHOT = r"""fb_snapshot() {
  pwd; umask; set -o; shopt; trap -p; declare -f; alias; hash -l 2>/dev/null
  declare -p | while IFS= read -r fb_line; do
    case $fb_line in
      *" _="*|*" BASH_"*|*" FUNCNAME"*|*" PIPESTATUS"*|*" RANDOM"*|*" SRANDOM"*|*" SECONDS"*|*" EPOCH"*|*" LINENO"*|*" fb_line"*|*" BASHPID"*|*" OPTIND"*|*" HISTCMD"*) ;;
      *) printf '%s\n' "$fb_line" ;;
    esac
  done
  echo /proc/$$/fd/*
}
"""


def state_change(tmp_path: Path, command: str, *, group: bool) -> str | None:
    """Run ``command`` as run.sh does (a brace group or a subshell, its output to logs,
    stdin from /dev/null) between two snapshots; the lines that differ, or ``None``."""
    folder = tmp_path / "work"
    folder.mkdir(exist_ok=True)
    (folder / "in.txt").write_text("line\n")
    opener, closer = ("{", "}") if group else ("(", ")")
    script = (
        _SNAPSHOT
        + "fb_x=1\nexport FB_n='7'\n"
        + "fb_snapshot > before.txt\n"
        + f"{opener}\n{command}\n{closer} >>out.log 2>>err.log </dev/null\n"
        + "fb_snapshot > after.txt\n"
    )
    (folder / "script.sh").write_text(script)
    subprocess.run(["bash", "script.sh"], cwd=folder, capture_output=True, timeout=30, check=False)
    before = (folder / "before.txt").read_text().splitlines()
    after_path = folder / "after.txt"
    if not after_path.exists():
        return "the script ended inside the command"
    after = after_path.read_text().splitlines()
    after_path.unlink()
    if before == after:
        return None
    return "\n".join(sorted(set(before) ^ set(after)))


SAFE = [
    'echo "${FB_n}" > out.txt',
    'printf \'{"score":%d}\\n\' "${FB_n}" > results.json',
    "echo $FB_n >> a.txt && echo two >> a.txt || echo no",
    "echo a 2>&1 >/dev/null | printf x",
    "> empty.txt",
    "test -f in.txt; echo $? > rc.txt",
    "[ -d . ] && pwd > here.txt",
    "echo 'a; cd /' \"b; exit 3\" c\\;cd",
    "echo a # ; cd /; exit 3",
    "echo one\necho two\n\necho three",
    "echo a &&\n  echo b",
    "true; false; :",
    "echo -n \\\n  . > list.txt",
    "echo $? $# $1 $$ $@ > special.txt",
    "test -s in.txt < in.txt > sorted.txt",
    "echo x &>> both.txt",
    "printf '%s\\n' a b c | printf y > abc.txt",
]

#: programs: a fork either way, so they keep the subshell (nothing to gain)
PROGRAMS = [
    "python3 -c 'import os; os.chdir(\"/\"); print(1)' > py.txt",
    "env X=1 true",
    "cat in.txt | tr a-z A-Z > up.txt",
    "echo a 2>&1 >/dev/null | cat",
    "ls -la . > list.txt",
    "echo a && sort < in.txt",
]

UNSAFE = [
    "cd /",
    "x=1",
    "x=1 echo",
    "fb_x=2",
    "export A=1",
    "set -e",
    "exit 3",
    "echo ${x:=3}",
    "echo $((x=2))",
    "echo $(cd /)",
    "echo `cd /`",
    "echo {fd}>fd.txt",
    "exec 3>fd.txt",
    "printf -v x %s y",
    "printf $FB_f x",
    "read x < in.txt",
    "umask 077",
    "trap 'echo' USR1",
    "alias ll=ls",
    "shopt -s nullglob",
    "f() { cd /; }",
    "(cd /)",
    "echo hi &",
    "if true; then cd /; fi",
    "for x in 1; do :; done",
    "source /dev/null",
    ". /dev/null",
    "eval cd /",
    "command cd /",
    "builtin cd /",
    "hash -p /bin/true fake",
    "cat <<EOF\nx\nEOF",
    "fb_fail 01 3",
    "c? /",
    "$FB_cmd /",
    "'cd' /",
    "echo a &&",
    "echo a; ; echo b",
    "",
    "# only a comment",
    "echo 'open",
    "echo $'x'",
    "echo a \\\n",
    "time cd /",
    "! cd /",
    "[[ -d / ]]",
    "mapfile x < in.txt",
    "let x=1",
    "declare x=1",
    "local x",
    "unset FB_n",
    "pushd /",
    "echo ${#FB_n}",
]


@pytest.mark.parametrize("command", SAFE)
def test_a_safe_command_runs_in_a_brace_group_and_changes_nothing(
    tmp_path: Path, command: str
) -> None:
    assert needs_subshell(command) is False
    assert state_change(tmp_path, command, group=True) is None


@pytest.mark.parametrize("command", UNSAFE + PROGRAMS)
def test_anything_else_keeps_its_subshell(command: str) -> None:
    assert needs_subshell(command) is True


def test_the_unsafe_ones_would_change_the_shell(tmp_path: Path) -> None:
    """The list above is of real hazards: run in a brace group, most of them change the
    shell (those left are syntax the grammar refuses, or harmless but unproven)."""
    changed = [c for c in UNSAFE if state_change(tmp_path, c, group=True) is not None]
    assert len(changed) >= 30, changed
    # and in a subshell, none does
    assert [c for c in changed[:10] if state_change(tmp_path, c, group=False)] == []


_PIECES = [
    "echo a", "cd /", "x=1", "echo ${x:=1}", "exit 3", "set -e", "printf '%s' b",
    "printf -v y %s z", "echo $FB_n", "echo \"$FB_n\"", "echo '$(cd /)'", "echo \"$(cd /)\"",
    "true", "umask 0", "exec 4>f", "echo {fd}>g", "read q", "> h", "pwd", "trap '' USR2",
    "echo a\\;cd", "f() { :; }", "(cd /)", "echo `pwd`", "test -f in.txt", "cat in.txt",
    "echo 'a # b'", "echo a # cd /", "readonly r=1", "shopt -s extglob", "echo $((x+1))",
    "[ -d / ]", ": ${FB_n}", "echo x 2>&1", "tr a b < in.txt", "unset FB_n", "echo \\",
]  # fmt: skip
_JOINS = ["; ", " && ", " || ", " | ", "\n", " &&\n  "]


def test_random_commands_the_grammar_passes_change_nothing(tmp_path: Path) -> None:
    """Commands stitched at random from safe and unsafe pieces: each one the grammar
    lets into a brace group leaves the shell as it was, by bash's own account."""
    rng = random.Random(20261123)
    passed = 0
    for _ in range(150):
        pieces = rng.sample(_PIECES, rng.randint(1, 3))
        command = "".join(p + rng.choice(_JOINS) for p in pieces[:-1]) + pieces[-1]
        if needs_subshell(command):
            continue
        passed += 1
        assert state_change(tmp_path, command, group=True) is None, command
    assert passed >= 20  # the sample holds enough safe commands to mean something
