"""Template specifications: parsing, validation and the normalized model.

The public entry points are re-exported here; the data classes live in
:mod:`flowbatch.spec.model`.
"""

from __future__ import annotations

from .manifest import TemplateSource, find_source
from .params import cast_value, parse_parameters, parse_range, resolve_arguments
from .template import load_template, parse_template, placeholders

__all__ = [
    "TemplateSource",
    "cast_value",
    "find_source",
    "load_template",
    "parse_parameters",
    "parse_range",
    "parse_template",
    "placeholders",
    "resolve_arguments",
]
