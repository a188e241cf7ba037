"""Review (s23): the Jinja2 sandbox bounds range() but not `str * int`, `center(n)`,
`'%*s' % (n, '')`: a native template's `{{ "=" * width }}` with an int parameter (whose
range is at most +-2**63) lets a 40-byte request make the daemon build a value of any
size. Seen: `width: 300000000` cost the daemon 3.2 GB and 19 s and wrote a 300 MB run.sh;
3e9 would take ~32 GB. Expected: a rendered value (or command) over a bound, at least the
environment variable limit the arguments are held to, is a RenderError naming the field."""

from __future__ import annotations

import pytest

from flowbatch.errors import FlowbatchError, RenderError
from flowbatch.render import render_workflow
from flowbatch.spec.model import Parameter, Step, Template, Workflow


@pytest.mark.parametrize("expr", ['"=" * width', '"x" | center(width)', '"%*s" % (width, "")'])
def test_a_rendered_value_is_bounded(expr: str) -> None:
    t = Template(
        dialect="native",
        workflow=Workflow(steps=[Step("s", ["echo {{ " + expr + " }}"])]),
        parameters=[Parameter("width", "int", 0, True)],  # type: ignore[arg-type]
    )
    with pytest.raises(FlowbatchError):
        render_workflow(t, t.workflow, {"width": 2_000_000}, {})


def test_memory_error_is_a_render_error_not_an_internal_error() -> None:
    t = Template(
        dialect="native",
        workflow=Workflow(steps=[Step("s", ['echo {{ "=" * width }}'])]),
        parameters=[Parameter("width", "int", 0, True)],  # type: ignore[arg-type]
    )
    with pytest.raises(FlowbatchError):  # today: MemoryError (validate: a traceback)
        render_workflow(t, t.workflow, {"width": 2**42}, {})


@pytest.mark.parametrize(
    "expr",
    [
        '"x".ljust(width)',
        '"x".zfill(width)',
        '"{:>{w}}".format("", w=width)',
        '"=" | indent(width, true)',
        '("a" * 1000) | replace("a", "b" * 1000)',
        "[1] * width",
        "2 ** (width * 100)",
        '"%*s" | format(width, "")',
    ],
)
def test_more_ways_of_building_large_values_are_bounded(expr: str) -> None:
    t = Template(
        dialect="native",
        workflow=Workflow(steps=[Step("s", ["echo {{ " + expr + " }}"])]),
        parameters=[Parameter("width", "int", 0, True)],  # type: ignore[arg-type]
    )
    with pytest.raises(RenderError) as info:
        render_workflow(t, t.workflow, {"width": 2_000_000}, {})
    assert info.value.field == "workflow.steps[0].commands[0]"
    assert "too large" in str(info.value)


@pytest.mark.parametrize(
    "expr",
    ['"%d" % width', '"{}".format(width)', '"=" * 72', '"%5s" % "a"', "2 ** 10", "width * 3"],
)
def test_ordinary_formatting_of_large_numbers_is_fine(expr: str) -> None:
    t = Template(
        dialect="native",
        workflow=Workflow(steps=[Step("s", ["echo {{ " + expr + " }}"])]),
        parameters=[Parameter("width", "int", 0, True)],  # type: ignore[arg-type]
    )
    render_workflow(t, t.workflow, {"width": 2_000_000}, {})
