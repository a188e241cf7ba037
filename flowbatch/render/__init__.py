"""Rendering: template + arguments -> bash commands -> the run script.

Two dialects (DESIGN.md "Two dialects"): flowServ's placeholder layers
(:mod:`flowbatch.render.flowserv`) and sandboxed Jinja2 for native templates
(:mod:`flowbatch.render.native`). Both make values from users data, never shell code
(:mod:`flowbatch.render.values`, :mod:`flowbatch.render.shellctx`), and both feed the run
script (:mod:`flowbatch.render.script`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowbatch.errors import TemplateError
from flowbatch.render.flowserv import check_flowserv, render_flowserv
from flowbatch.render.script import (
    LOGS_DIR,
    SCRIPT_NAME,
    STATUS_DIR,
    Markers,
    StepMarker,
    build_script,
    read_markers,
    step_log_paths,
)
from flowbatch.render.values import RenderedStep, RenderedWorkflow, Trusted, format_value
from flowbatch.spec.model import Template, Workflow

__all__ = [
    "LOGS_DIR",
    "SCRIPT_NAME",
    "STATUS_DIR",
    "Markers",
    "RenderedStep",
    "RenderedWorkflow",
    "StepMarker",
    "Trusted",
    "build_script",
    "check_template",
    "format_value",
    "read_markers",
    "render_workflow",
    "step_log_paths",
]


def check_template(template: Template, variables: Mapping[str, str]) -> None:
    """Install-time checks beyond the parser's; raises :class:`~flowbatch.errors.TemplateError`.

    flowServ dialect: every name resolves, every command is complete shell text, and no
    placeholder of a string, file, list or record value stands inside single quotes (or
    right after a backslash). Native dialect: every command and context text compiles.
    """
    from flowbatch.spec.params import check_select_marks

    try:
        check_select_marks(template.parameters, file=None, field="parameters")
        if template.dialect == "native":
            from flowbatch.render.native import check_native  # Jinja2: only for its templates

            check_native(template, variables)
        else:
            check_flowserv(template, variables)
    except TemplateError as exc:
        raise exc.at(file=template.source or None) from None


def render_workflow(
    template: Template,
    workflow: Workflow,
    arguments: Mapping[str, Any],
    variables: Mapping[str, str],
) -> RenderedWorkflow:
    """Expand ``workflow`` (``template.workflow`` or ``template.postproc.workflow``) for
    one run; raises :class:`~flowbatch.errors.RenderError`.

    ``arguments``: cast values by parameter name (a file is a ``FileArg``; its target is
    used). ``variables``: trusted site variables (name -> shell text), pasted verbatim.
    """
    if template.dialect == "native":
        # imported here: Jinja2 is 30 ms of every start, and a flowServ template needs none
        from flowbatch.render.native import render_native

        return render_native(template, workflow, arguments, variables)
    return render_flowserv(template, workflow, arguments, variables)
