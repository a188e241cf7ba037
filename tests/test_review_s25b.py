"""Review of today's options check through shell variables (flowbatch.render.taint,
shellvars): forms the check claims to follow where a participant's value beginning with
``-`` still reached ``tar``'s options (each proven with bash: rendered and run, tar ran
the value's ``--to-command``), and a common idiom it refused that was accepted before.

Commands are written with the shell's ``$`` and ``$[[s]]``, as in
tests/test_render_variables.py, whose helpers these use."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from flowbatch.errors import RenderError

from .test_render_variables import (
    DIALECTS,
    EVIL,
    _refused_and_fine,
    _render,
    _run,
    _template,
)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    "command",
    [
        'a=(x y $[[s]]); tar -xf data.tar "${a[@]:2}"',
        "a=(x y $[[s]]); tar -xf data.tar ${a[*]:2:1}",
        'set -- x y $[[s]]; tar -xf data.tar "${@:3}"',
        'set -- x y $[[s]]; tar -xf data.tar "${*: -1}"',
    ],
)
def test_a_slice_of_an_array_or_of_the_positional_parameters_keeps_its_elements_whole(
    tmp_path: Path, command: str, dialect: str
) -> None:
    """``${a[@]:2}`` and ``${@:3}`` are elements from the third on, each whole: the
    offset was worked out on the characters of the value (``--to-command=...`` from its
    third character on: no dash), and tar ran the value's command."""
    _refused_and_fine(tmp_path, command, dialect, EVIL, "member.txt")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_offset_with_a_leading_zero_is_octal_to_bash(tmp_path: Path, dialect: str) -> None:
    """``${m:010}`` is ``${m:8}`` to bash (arithmetic: a leading 0 is octal); read as
    10, what bash leaves (``--to-command=...``) was judged by what it does not."""
    command = 'm=$[[s]]; tar -xf data.tar "${m:010}"'
    _refused_and_fine(tmp_path, command, dialect, f"abcdefgh{EVIL}", "abcdefghmember.txt")


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("op", ["/#-/&", "/-/&", "//-/&"])
def test_an_ampersand_in_a_replacement_is_the_matched_text(
    tmp_path: Path, op: str, dialect: str
) -> None:
    """bash 5.2 (``patsub_replacement``, on by default) puts the matched text where a
    replacement has ``&``: ``${m/#-/&}`` leaves ``--to-command=...`` as it was, where it
    was taken to begin with ``&``."""
    _refused_and_fine(
        tmp_path, f'm=$[[s]]; tar -xf data.tar "${{m{op}}}"', dialect, EVIL, "member.txt"
    )


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    "command",
    [
        'declare -n r=m; r=$[[s]]; tar -xf data.tar "$m"',
        'f() { local -n r=m; r=$[[s]]; tar -xf data.tar "$m"; }; f',
        'declare -n r=m; read -r r <<< $[[s]]; tar -xf data.tar "$m"',
    ],
)
def test_a_value_assigned_through_a_name_reference_is_in_the_variable_it_names(
    tmp_path: Path, command: str, dialect: str
) -> None:
    """``declare -n r=m`` makes ``r`` another name for ``m``: what is assigned to ``r``
    is ``m``'s value (only the other way round was followed)."""
    _refused_and_fine(tmp_path, command, dialect, EVIL, "member.txt")


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    "command",
    [
        'while read -r m; do tar -xf data.tar "$m"; done <<< $[[s]]',
        'while IFS= read -r m; do tar -xf data.tar "$m"; done <<< "$[[s]]"',
        "while read -r m; do tar -xf data.tar \"$m\"; done < <(printf '%s\\n' $[[s]])",
        'until ! read -r m; do tar -xf data.tar "$m"; done <<< $[[s]]',
        '{ read -r m; tar -xf data.tar "$m"; } <<< $[[s]]',
        '( read -r m; tar -xf data.tar "$m" ) <<< $[[s]]',
        'if read -r m; then tar -xf data.tar "$m"; fi <<< $[[s]]',
        'while mapfile -t -n 1 a && [ -n "${a[0]}" ]; do tar -xf data.tar "${a[0]}"; '
        "done <<< $[[s]]",
    ],
)
def test_read_in_a_loop_or_group_given_a_here_string_or_process_substitution_is_followed(
    tmp_path: Path, command: str, dialect: str
) -> None:
    """The common form of ``read`` from a here-string or ``< <(...)`` (which the check
    claims to follow) gives the input to the loop or group around it: the ``read`` had
    no input of its own, so its variable was not followed, and tar ran the value's
    command."""
    _refused_and_fine(tmp_path, command, dialect, EVIL, "member.txt")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_match_s_capture_group_is_the_value(tmp_path: Path, dialect: str) -> None:
    """``[[ $x =~ (...) ]]`` copies the value's parts into ``BASH_REMATCH``: followed
    (tests/test_render_variables_forms.py has more)."""
    command = '[[ $[[s]] =~ ^(.*)$ ]] && tar -xf data.tar "${BASH_REMATCH[1]}"'
    _refused_and_fine(tmp_path, command, dialect, EVIL, "member.txt")


@pytest.mark.parametrize(
    "command",
    [
        'f=$[[s]]; n=${f//\\//_}; touch "$n"',
        'f=$[[s]]; touch "${f//\\//_}"',
        'f=$[[s]]; b=${f/\\//_}; touch "${b/\\//_}"',
    ],
)
def test_a_replacement_of_an_escaped_slash_is_worked_out(tmp_path: Path, command: str) -> None:
    """``${f//\\//_}`` (every ``/`` made ``_``, the usual way to flatten a path) was
    refused for every ``dir/run-1/my-data.csv`` (accepted before the variable check):
    a backslash in the operator made it one not worked out, so any ``-`` inside the
    value was taken to begin what is left. A hostile value is refused all the same."""
    t = _template(command)
    with pytest.raises(RenderError, match="may begin"):
        _render(t, {"s": "--to-command=x"})
    assert _run(tmp_path, t, {"s": "dir/run-1/my-data.csv"}) == 0
    assert (tmp_path / "dir_run-1_my-data.csv").exists()


ESCAPED_OPS = ["//\\//_", "/\\//_", "/#\\//_", "//\\-/_", "/\\-/", "//\\//\\-"]
VALUES = ["dir/run-1/my-data.csv", "/--x", "--x/y", "a-b", "", "-"]


def test_operators_with_escapes_are_worked_out_as_bash_does() -> None:
    """``trimmed`` of an operator with a backslash: what bash leaves, or None."""
    from flowbatch.render.taint import trimmed

    lines = []
    for op in ESCAPED_OPS:
        for value in VALUES:
            quoted = "'" + value.replace("'", "'\\''") + "'"
            lines.append(f"v={quoted}; printf '%s\\0' \"${{v{op}}}\"")
    out = subprocess.run(["bash", "-c", "\n".join(lines)], capture_output=True, check=True)
    said = out.stdout.decode().split("\0")[:-1]
    k = 0
    for op in ESCAPED_OPS:
        for value in VALUES:
            ours, theirs = trimmed(value, op), said[k]
            k += 1
            assert ours is None or ours == theirs, (op, value, ours, theirs)
    assert trimmed("dir/a-b", "//\\//_") == "dir_a-b"
