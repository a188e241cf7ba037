"""Which shell variables a command text gives values to, and from which of its words
(:func:`flowbatch.render.shellvars.command_flows`, recorded by the lexer in
:attr:`flowbatch.render.shellctx.Scan.flows`)."""

from __future__ import annotations

import pytest

from flowbatch.render.shellctx import scan


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("m=X; a=(X y) b+=(z)", [("m", ["X"]), ("a", ["X", "y"]), ("b", ["z"])]),
        ("export M=X N; local -r l=X", [("M", ["X"]), ("l", ["X"])]),
        ("for m in X y; do :; done", [("m", ["X", "y"])]),
        ("set -o errexit -- X", [("@", ["X"])]),
        ("set -e", []),
        ("read -r a b <<< X", [("a", ["X"]), ("b", ["X"])]),
        ("read -r a b < file", []),  # a file: not followed
        ("printf -v out '%s' X", [("out", ["'%s'", "X"])]),
        ("m=X cmd", []),  # the command's environment only
        ("cat <<EOF\n$(m=X)\nEOF", [("m", ["X"])]),
    ],
)
def test_which_variables_a_text_gives_values_to(
    text: str, expected: list[tuple[str, list[str]]]
) -> None:
    flows = [
        (flow.name, [text[s:e] for s, e in flow.sources])
        for flow in scan(text).flows
        if flow.sources and any(e > s for s, e in flow.sources)
    ]
    assert flows == expected
